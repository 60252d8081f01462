"""The enclave side of simulation mode: ``python -m sanctorum.enclave.child FD``.

It serves one enclave over the socket ``FD``: the host sends the bundle, the child measures and
verifies it, imports the entry class from the measured bytes, and attests with simulated
evidence. Every frame is validated; a bad one gets an ERROR frame, never a crash.

An enclave that is not thread-safe is served on the one thread that reads the socket: calls run
one after another, in the order they arrive, and a call waiting for a host callback reads the
socket itself, running the calls nested in that callback and keeping others for later. (Handing
each call to a worker thread would cost more than the rest of a round trip.) A thread-safe
enclave's calls run on a pool of worker threads. Either way every call enters through the
runtime, whose entry lock holds whatever the host sends.
"""

from __future__ import annotations

import queue
import socket
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sanctorum.attestation.evidence import EvidenceProvider
from sanctorum.attestation.simulated import SimulatedEvidenceProvider
from sanctorum.common.bundle import Bundle, read_bundle
from sanctorum.common.errors import (
    EnclaveCallError,
    EnclaveCrashedError,
    EnclaveLoadError,
    FrameError,
    SanctorumError,
)
from sanctorum.common.frame_socket import RECEIVE_SIZE, send_frame
from sanctorum.common.frames import (
    BadFrame,
    Frame,
    FrameDecoder,
    FrameType,
    decode_deliver_mail,
    decode_error,
    decode_load,
    decode_optional_bytes,
    encode_call_result,
    encode_commands,
    encode_error,
    encode_ready,
)
from sanctorum.common.suggest import did_you_mean
from sanctorum.enclave.base import Enclave
from sanctorum.enclave.importer import BundleFinder, MeasuredOnlyFinder
from sanctorum.enclave.runtime import EnclaveRuntime
from sanctorum.enclave.sealing import (
    EnclaveIdentity,
    SealingPolicy,
    SecurityVersions,
    simulation_platform_secret,
)

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

_MAX_WORKERS = 64
_CALL_TYPES = (FrameType.CALL, FrameType.DELIVER_MAIL, FrameType.UPDATE_ATTESTATION)
_CLOSED = Frame(FrameType.ERROR, 0)  # sentinel: the host went away


class ChildPlatform(Protocol):
    """What differs between the enclave processes of simulation and of SGX."""

    modes: tuple[str, ...]

    def bundle_bytes(self, sent: bytes) -> bytes:
        """The bundle to run, given the one the host sent."""
        ...

    def attestation(
        self, bundle: Bundle, call_host: Callable[[bytes], bytes | None]
    ) -> tuple[EvidenceProvider, bytes | Callable[[SealingPolicy], bytes]]:
        """The evidence provider and platform secret for ``bundle``."""
        ...


class SimulationChildPlatform:
    """Runs the bundle the host sent, measured here, with simulated evidence."""

    modes: tuple[str, ...] = ("simulation",)

    def bundle_bytes(self, sent: bytes) -> bytes:
        return sent

    def attestation(
        self, bundle: Bundle, call_host: Callable[[bytes], bytes | None]
    ) -> tuple[EvidenceProvider, bytes | Callable[[SealingPolicy], bytes]]:
        provider = SimulatedEvidenceProvider(
            code_hash=bundle.code_hash,
            signer_hash=bundle.signer_hash,
            product_id=bundle.config.product_id,
            revocation_level=bundle.config.revocation_level,
        )
        return provider, simulation_platform_secret()


class EnclaveServer:
    """Serves one enclave over a connected socket until SHUTDOWN or end of stream."""

    def __init__(self, connection: socket.socket, platform: ChildPlatform | None = None) -> None:
        self._platform = platform or SimulationChildPlatform()
        self._connection = connection
        self._send_lock = threading.Lock()
        self._runtime: EnclaveRuntime | None = None
        self._workers: ThreadPoolExecutor | None = None  # made when a call needs a thread
        # Calls that wait for a host callback's answer, by call id.
        self._waiting: dict[int, queue.SimpleQueue[Frame]] = {}
        self._waiting_lock = threading.Lock()
        self._running = True
        self._inline = True  # serve calls on the reading thread (not thread-safe enclaves)
        self._reveal_errors = True  # not in release mode: messages may hold enclave data
        self._decoder = FrameDecoder()
        self._receive_buffer = bytearray(RECEIVE_SIZE)  # used by the reading thread only
        self._receive_view = memoryview(self._receive_buffer)  # it is never resized
        self._events: deque[Frame | BadFrame] = deque()  # decoded, not yet handled
        self._deferred: deque[Frame | BadFrame] = deque()  # arrived while a call was busy

    def _thread_pool(self) -> ThreadPoolExecutor:
        if self._workers is None:
            # Imported here: most enclaves never need it, and it costs ~2 ms of every start.
            from concurrent.futures import ThreadPoolExecutor

            self._workers = ThreadPoolExecutor(_MAX_WORKERS, thread_name_prefix="enclave-call")
        return self._workers

    # -- the receive loop --------------------------------------------------------------------

    def serve(self) -> None:
        try:
            while self._running:
                event = self._deferred.popleft() if self._deferred else self._read_event()
                if event is None:
                    break
                self._dispatch(event)
        finally:
            self._running = False
            with self._waiting_lock:
                for inbox in self._waiting.values():
                    inbox.put(_CLOSED)
            if self._workers is not None:
                self._workers.shutdown(wait=False, cancel_futures=True)

    def _read_event(self) -> Frame | BadFrame | None:
        """The next frame from the socket, or None at the end of the stream."""
        events = self._events
        if events:
            return events.popleft()
        buffer, view = self._receive_buffer, self._receive_view
        while True:
            try:
                received = self._connection.recv_into(buffer)
            except OSError:
                return None
            if not received:
                return None
            decoded = self._decoder.feed(view[:received])
            if decoded:
                if len(decoded) > 1:
                    events.extend(decoded[1:])
                return decoded[0]

    def _dispatch(self, event: Frame | BadFrame) -> None:
        if isinstance(event, BadFrame):
            self._send_error(event.call_id, FrameError(f"bad frame: {event.reason}"))
            return
        frame = event
        if frame.type is FrameType.LOAD:
            self._load(frame)
        elif self._runtime is None:
            self._send_error(
                frame.call_id,
                FrameError(f"{frame.type.name} before LOAD: the enclave is not loaded yet"),
            )
        elif frame.type in _CALL_TYPES:
            if frame.parent_id:
                self._route_to_waiting(frame.parent_id, frame, "a nested call")
            elif self._inline:
                self._serve_call(frame)
            else:
                self._thread_pool().submit(self._serve_call, frame)
        elif frame.type in (FrameType.HOST_CALLBACK_RESULT, FrameType.ERROR):
            self._route_to_waiting(frame.call_id, frame, "a host callback answer")
        elif frame.type is FrameType.SHUTDOWN:
            self._shutdown(frame)
        else:
            self._send_error(
                frame.call_id,
                FrameError(f"{frame.type.name} frames are sent by enclaves, not to them"),
            )

    def _route_to_waiting(self, call_id: int, frame: Frame, what: str) -> None:
        with self._waiting_lock:
            inbox = self._waiting.get(call_id)
        if inbox is None:
            self._send_error(
                frame.call_id,
                FrameError(
                    f"out of order: {what} for call {call_id}, which is not waiting for the host"
                ),
            )
        else:
            inbox.put(frame)

    # -- frames ------------------------------------------------------------------------------

    def _send(self, frame: Frame) -> None:
        with self._send_lock:
            try:
                send_frame(self._connection, frame)
            except OSError:
                self._running = False

    def _send_error(self, call_id: int, error: BaseException) -> None:
        self._send(Frame(FrameType.ERROR, call_id, encode_error(error)))

    def _load(self, frame: Frame) -> None:
        if self._runtime is not None:
            self._send_error(
                frame.call_id, FrameError("out of order: the enclave is already loaded")
            )
            return
        try:
            request = decode_load(frame.payload)
            if request.mode not in self._platform.modes:
                raise EnclaveLoadError(
                    f"this enclave process runs {' or '.join(self._platform.modes)} mode, "
                    f"not {request.mode!r}"
                )
            bundle = read_bundle(self._platform.bundle_bytes(request.bundle))
            BundleFinder(bundle.python_files()).install()
            MeasuredOnlyFinder().install()
            if bundle.native:
                from sanctorum.enclave.native import NativeFinder, check_installed

                NativeFinder(check_installed(bundle.native)).install()
            enclave_class = _import_entry(bundle.config.entry_module, bundle.config.entry_class)
            provider, platform_secret = self._platform.attestation(
                bundle, lambda data: self._call_host_inline(frame.call_id, data)
            )
            try:
                enclave = enclave_class()
            except Exception as error:
                raise EnclaveLoadError(
                    f"could not create {bundle.config.entry}: {type(error).__name__}: {error}"
                ) from error
            config = bundle.config
            kds = None
            if config.kds is not None:
                from sanctorum.kds.access import KDS_REQUEST, KdsAccess

                def ask_host(body: bytes) -> bytes:
                    return self._call_host_inline(frame.call_id, KDS_REQUEST + body) or b""

                kds = KdsAccess(config.kds, ask_host)
            runtime = EnclaveRuntime(
                enclave,
                provider,
                identity=EnclaveIdentity(
                    bundle.code_hash,
                    bundle.signer_hash,
                    config.product_id,
                    SecurityVersions(revocation_level=config.revocation_level),
                ),
                platform_secret=platform_secret,
                thread_safe=config.thread_safe,
                persistent_map_size=(
                    config.max_persistent_map_size if config.persistent_map else None
                ),
                sealed_state=request.sealed_state,
                filesystem_size=config.filesystem_size,
                memory_filesystem_size=config.memory_filesystem_size,
                filesystem_file=Path(request.filesystem_file) if request.filesystem_file else None,
                reveal_errors=request.mode != "release",
                kds=kds,
            )
            startup_commands = runtime.start()
        except SanctorumError as error:
            self._send_error(frame.call_id, error)
            return
        except Exception as error:  # anything else still becomes an answer, not a crash
            self._send_error(frame.call_id, EnclaveLoadError(f"{type(error).__name__}: {error}"))
            return
        self._runtime = runtime
        self._inline = not bundle.config.thread_safe
        self._reveal_errors = request.mode != "release"
        ready = encode_ready(
            runtime.instance_info.serialize(), runtime.restored_commit, startup_commands
        )
        self._send(Frame(FrameType.READY, frame.call_id, ready))

    def _serve_call(self, frame: Frame) -> None:
        """Run one CALL / DELIVER_MAIL / UPDATE_ATTESTATION and send its answer."""
        runtime = self._runtime
        assert runtime is not None
        try:
            if frame.type is FrameType.CALL:
                reply, commands = runtime.call(
                    frame.payload, lambda data: self._call_host(frame.call_id, data)
                )
                answer = Frame(
                    FrameType.CALL_RESULT, frame.call_id, encode_call_result(reply, commands)
                )
            elif frame.type is FrameType.DELIVER_MAIL:
                mail, routing_hint, kds_answer = decode_deliver_mail(frame.payload)
                commands = runtime.deliver_mail(
                    mail,
                    routing_hint,
                    kds_answer,
                    lambda data: self._call_host(frame.call_id, data),
                )
                answer = Frame(FrameType.MAIL_RESULT, frame.call_id, encode_commands(commands))
            else:
                info = runtime.update_attestation()
                answer = Frame(FrameType.ATTESTATION, frame.call_id, info.serialize())
        except SanctorumError as error:
            answer = Frame(FrameType.ERROR, frame.call_id, encode_error(error))
        except Exception as error:
            # Not the enclave's code (that raises EnclaveCallError): the runtime's own failure.
            detail = f": {error}" if self._reveal_errors else ""
            answer = Frame(
                FrameType.ERROR,
                frame.call_id,
                encode_error(EnclaveCallError(f"{type(error).__name__}{detail}")),
            )
        self._send(answer)

    def _call_host(self, call_id: int, data: bytes) -> bytes | None:
        """call_untrusted_host: ask the host and wait, running nested calls meanwhile."""
        if self._inline:
            return self._call_host_inline(call_id, data)
        inbox: queue.SimpleQueue[Frame] = queue.SimpleQueue()
        with self._waiting_lock:
            if call_id in self._waiting:
                raise EnclaveCallError("call_untrusted_host is already waiting for this call")
            self._waiting[call_id] = inbox
        try:
            self._send(Frame(FrameType.HOST_CALLBACK, call_id, data))
            while True:
                frame = inbox.get()
                if frame is _CLOSED:
                    raise EnclaveCrashedError("the host closed the connection")
                if frame.type is FrameType.HOST_CALLBACK_RESULT:
                    return decode_optional_bytes(frame.payload, "host callback answer")
                if frame.type is FrameType.ERROR:
                    raise EnclaveCallError(
                        f"the host callback failed: {decode_error(frame.payload)}"
                    )
                self._serve_call(frame)  # a nested call from inside the callback
        finally:
            with self._waiting_lock:
                del self._waiting[call_id]

    def _call_host_inline(self, call_id: int, data: bytes) -> bytes | None:
        """call_untrusted_host on the reading thread: read until the answer comes."""
        self._send(Frame(FrameType.HOST_CALLBACK, call_id, data))
        while True:
            event = self._read_event()
            if event is None:
                raise EnclaveCrashedError("the host closed the connection")
            if isinstance(event, BadFrame):
                self._send_error(event.call_id, FrameError(f"bad frame: {event.reason}"))
            elif event.call_id == call_id and event.type is FrameType.HOST_CALLBACK_RESULT:
                return decode_optional_bytes(event.payload, "host callback answer")
            elif event.call_id == call_id and event.type is FrameType.ERROR:
                raise EnclaveCallError(f"the host callback failed: {decode_error(event.payload)}")
            elif event.parent_id == call_id and event.type in _CALL_TYPES:
                self._serve_call(event)  # nested in the callback: runs now, on this thread
            else:
                self._deferred.append(event)  # the enclave is busy: handled after this call

    def _shutdown(self, frame: Frame) -> None:
        runtime = self._runtime
        try:
            if runtime is not None:
                runtime.close()
        except SanctorumError as error:
            self._send_error(frame.call_id, error)
        else:
            self._send(Frame(FrameType.SHUTDOWN_DONE, frame.call_id))
        self._running = False


def _import_entry(module_name: str, class_name: str) -> type[Enclave]:
    import importlib

    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise EnclaveLoadError(
            f"importing the entry module {module_name!r} from the bundle failed: "
            f"{type(error).__name__}: {error}"
        ) from error
    entry = f"{module_name}:{class_name}"
    if not hasattr(module, class_name):
        suggestion = did_you_mean(class_name, dir(module))
        raise EnclaveLoadError(
            f"entry {entry!r}: the module {module_name!r} has no attribute {class_name!r}"
            f"{suggestion}; fix entry in enclave.toml"
        )
    enclave_class = getattr(module, class_name)
    if not (isinstance(enclave_class, type) and issubclass(enclave_class, Enclave)):
        kind = "a class" if isinstance(enclave_class, type) else f"a {type(enclave_class).__name__}"
        raise EnclaveLoadError(
            f"entry {entry!r} is {kind}, not a subclass of sanctorum.Enclave; point entry at "
            "your enclave class"
        )
    return enclave_class


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m sanctorum.enclave.child FD", file=sys.stderr)
        return 2
    with socket.socket(fileno=int(argv[1])) as connection:
        EnclaveServer(connection).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
