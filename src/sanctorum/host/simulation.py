"""Simulation mode: the enclave runs in a child process; only frames cross the boundary."""

from __future__ import annotations

import itertools
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sanctorum.attestation.instance_info import EnclaveInstanceInfo
from sanctorum.common.bundle import Bundle
from sanctorum.common.commands import HostCallback, MailCommand
from sanctorum.common.errors import (
    EnclaveCallError,
    EnclaveCrashedError,
    EnclaveLoadError,
    FrameError,
    InvalidEnclaveError,
    KdsError,
    SanctorumError,
)
from sanctorum.common.frame_socket import RECEIVE_SIZE, send_frame
from sanctorum.common.frames import (
    BadFrame,
    Frame,
    FrameDecoder,
    FrameType,
    decode_call_result,
    decode_commands,
    decode_error,
    decode_ready,
    encode_deliver_mail,
    encode_error,
    encode_load,
    encode_optional_bytes,
)
from sanctorum.host.platform import require_kds

START_TIMEOUT = 60.0
FILL_RATE = 32 << 20
"""Bytes per second a new persistent filesystem is at least filled at, for the start timeout
(a new filesystem file is written whole at the first start: measured ~350 MiB/s here)."""
SHUTDOWN_TIMEOUT = 10.0


class _Signal:
    """Tokens put in a waiting call's inbox besides frames."""

    def __init__(self, name: str) -> None:
        self.name = name


_CRASHED = _Signal("crashed")  # the child went away
_WAKE = _Signal("wake")  # the reader stopped: look again, and read if nobody does


class SimulationPlatform:
    """Runs a verified bundle in a child Python process and talks to it in frames."""

    def __init__(self, bundle: Bundle, bundle_bytes: bytes) -> None:
        self._kds_fetch: Callable[[bytes], bytes] | None = None
        self._load_failure: KdsError | None = None
        self._bundle = bundle
        self._bundle_bytes = bundle_bytes
        self._process: subprocess.Popen[bytes] | None = None
        self._connection: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, queue.SimpleQueue[Frame | _Signal]] = {}
        self._pending_lock = threading.Lock()
        # No reader thread: a waiting caller reads the socket itself (leader/follower), so the
        # answer to a lone call reaches its caller without a thread hand-off.
        self._reader_lock = threading.Lock()
        self._decoder = FrameDecoder()
        self._receive_buffer = bytearray(RECEIVE_SIZE)  # used only with the reader lock held
        self._receive_view = memoryview(self._receive_buffer)  # it is never resized
        self._crashed: str | None = None
        self._local = threading.local()
        self._instance_info: EnclaveInstanceInfo | None = None

    # -- process and connection --------------------------------------------------------------

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._process

    mode = "simulation"

    def start(
        self,
        sealed_state: Sequence[bytes] | None,
        filesystem_file: Path | None,
        kds_fetch: Callable[[bytes], bytes] | None = None,
    ) -> tuple[int, list[MailCommand]]:
        self._kds_fetch = kds_fetch
        self._load_failure = None
        self._connection = self._spawn()
        try:
            answer = self._request(
                Frame(
                    FrameType.LOAD,
                    0,
                    encode_load(
                        self.mode,
                        self._bundle_bytes,
                        sealed_state,
                        self._enclave_path(filesystem_file),
                    ),
                ),
                FrameType.READY,
                callback=self._serve_load_request,
                timeout=START_TIMEOUT + self._bundle.config.filesystem_size / FILL_RATE,
            )
            serialized, restored_commit, commands = decode_ready(answer.payload)
            info = EnclaveInstanceInfo.deserialize(serialized)
            self._check_attested(info)
        except BaseException as error:
            self._stop_process()
            if self._load_failure is not None and isinstance(error, SanctorumError):
                raise self._load_failure from None  # the host's own failure, not the echo
            raise
        self._instance_info = info
        return restored_commit, commands

    def _spawn(self) -> socket.socket:
        """Start the enclave process; the host's end of its connection."""
        host_end, child_end = socket.socketpair()
        try:
            # Isolated (-I: no current directory, PYTHONPATH or user site on sys.path) and in a
            # fixed directory: nothing of the host's working directory is importable.
            self._process = subprocess.Popen(  # noqa: S603  (our own module, no shell)
                [sys.executable, "-I", "-m", "sanctorum.enclave.child", str(child_end.fileno())],
                pass_fds=[child_end.fileno()],
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except OSError as error:
            host_end.close()
            raise EnclaveLoadError(f"could not start the enclave process: {error}") from None
        finally:
            child_end.close()
        return host_end

    def _enclave_path(self, filesystem_file: Path | None) -> Path | None:
        """Where the enclave finds the filesystem file (the same file, in simulation; the
        enclave process runs in another directory)."""
        return None if filesystem_file is None else Path(os.path.abspath(filesystem_file))

    def _serve_load_request(self, data: bytes) -> bytes | None:
        """What the enclave asks the host while it loads: its persistence key from the KDS
        (an enclave with a [kds] table), which the host carries without reading it."""
        from sanctorum.kds.access import KDS_REQUEST  # only enclaves with [kds] ask

        if not data.startswith(KDS_REQUEST):
            raise EnclaveLoadError("the enclave asked its host for something unknown")
        try:
            return require_kds(self._kds_fetch)(data[len(KDS_REQUEST) :])
        except KdsError as error:  # the enclave cannot start: start() raises this one
            self._load_failure = error
            raise

    def _check_attested(self, info: EnclaveInstanceInfo) -> None:
        if info.code_hash != self._bundle.code_hash:
            raise InvalidEnclaveError(
                f"the enclave attests code hash {info.code_hash}, but the bundle measures "
                f"{self._bundle.code_hash}"
            )

    def _read_until_answered(
        self, call_id: int, inbox: queue.SimpleQueue[Frame | _Signal], deadline: float | None
    ) -> Frame | None:
        """Read frames, handing each to its caller, until one for ``call_id`` comes (returned,
        not queued: the usual answer to a lone call costs no queue) or ``inbox`` has something.

        Called with the reader lock held; frames for ``call_id`` after the first one returned
        are queued in ``inbox``, in order.
        """
        connection = self._connection
        assert connection is not None
        buffer, view = self._receive_buffer, self._receive_view
        pending = self._pending
        while inbox.empty():
            if deadline is not None:
                # Only start-up and shutdown have deadlines; calls block without a syscall
                # to change the socket's timeout on every round trip.
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                connection.settimeout(remaining)
            try:
                received = connection.recv_into(buffer)
            except TimeoutError:
                raise
            except OSError:
                received = 0
            finally:
                if deadline is not None:
                    connection.settimeout(None)
            if not received:
                self._mark_crashed("the enclave process closed its connection")
                return None
            events = self._decoder.feed(view[:received])
            mine: Frame | None = None
            for event in events:
                if isinstance(event, BadFrame):
                    continue  # nothing waits for it; its caller times out or sees the crash
                if mine is None and event.call_id == call_id:
                    mine = event
                    continue
                target = pending.get(event.call_id)  # one dict read: atomic, no lock needed
                if target is not None:
                    target.put(event)
            if mine is not None:
                return mine
        return None

    def _next_event(
        self, call_id: int, inbox: queue.SimpleQueue[Frame | _Signal], timeout: float | None
    ) -> Frame | _Signal:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if not inbox.empty():
                event = inbox.get_nowait()
                if event is not _WAKE:
                    return event
                continue
            if self._reader_lock.acquire(blocking=False):
                try:
                    mine = self._read_until_answered(call_id, inbox, deadline)
                except TimeoutError:
                    raise EnclaveCrashedError(
                        f"the enclave did not answer within {timeout} s"
                    ) from None
                finally:
                    self._reader_lock.release()
                    self._wake_waiters(inbox)
                if mine is not None:
                    return mine
                continue
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                event = inbox.get(timeout=remaining)
            except queue.Empty:
                raise EnclaveCrashedError(
                    f"the enclave did not answer within {timeout} s"
                ) from None
            if event is not _WAKE:
                return event

    def _wake_waiters(self, mine: queue.SimpleQueue[Frame | _Signal]) -> None:
        """After reading, wake the other waiting callers: one of them takes over the socket.

        A caller registers before it tries the reader lock, and this runs after the lock is
        released: a caller it does not see will find the lock free.
        """
        with self._pending_lock:
            if len(self._pending) > 1:
                for inbox in self._pending.values():
                    if inbox is not mine:
                        inbox.put(_WAKE)

    def _mark_crashed(self, reason: str) -> None:
        process = self._process
        if process is not None:
            try:
                code = process.wait(timeout=1)
                reason = f"the enclave process exited with status {code}"
            except subprocess.TimeoutExpired:
                pass
        with self._pending_lock:
            if self._crashed is None:
                self._crashed = reason
            for inbox in self._pending.values():
                inbox.put(_CRASHED)

    def _send(self, frame: Frame) -> None:
        connection = self._connection
        if connection is None or self._crashed is not None:
            raise EnclaveCrashedError(f"the enclave has crashed: {self._crashed}")
        with self._send_lock:
            try:
                send_frame(connection, frame)
            except OSError as error:
                raise EnclaveCrashedError(f"the enclave has crashed: {error}") from None

    # -- requests ----------------------------------------------------------------------------

    def _request(
        self,
        frame: Frame,
        answer_type: FrameType,
        callback: HostCallback | None = None,
        timeout: float | None = None,
    ) -> Frame:
        """Send ``frame`` and wait for its answer, serving host callbacks meanwhile."""
        inbox: queue.SimpleQueue[Frame | _Signal] = queue.SimpleQueue()
        with self._pending_lock:
            if self._crashed is not None:
                raise EnclaveCrashedError(f"the enclave has crashed: {self._crashed}")
            self._pending[frame.call_id] = inbox
        try:
            self._send(frame)
            while True:
                event = self._next_event(frame.call_id, inbox, timeout)
                if isinstance(event, _Signal):
                    raise EnclaveCrashedError(f"the enclave has crashed: {self._crashed}")
                if event.type is answer_type:
                    return event
                if event.type is FrameType.ERROR:
                    raise decode_error(event.payload)
                if event.type is FrameType.HOST_CALLBACK:
                    self._serve_callback(frame.call_id, event, callback)
                else:
                    raise FrameError(
                        f"the enclave answered {frame.type.name} with {event.type.name}"
                    )
        finally:
            with self._pending_lock:
                del self._pending[frame.call_id]

    def _serve_callback(self, call_id: int, event: Frame, callback: HostCallback | None) -> None:
        stack: list[int] = self._local.__dict__.setdefault("calls", [])
        stack.append(call_id)  # calls the callback makes are nested under this one
        try:
            if callback is None:
                raise EnclaveCallError(
                    "call_untrusted_host needs a host callback: pass callback= to call_enclave or "
                    "deliver_mail (a web host: EnclaveService(host_callback=...); the sanctorum "
                    "host command has none)"
                )
            answer = callback(event.payload)
            if answer is not None and not isinstance(answer, (bytes, bytearray)):
                raise EnclaveCallError(
                    f"the host callback returned {type(answer).__name__}, not bytes or None"
                )
            reply = Frame(
                FrameType.HOST_CALLBACK_RESULT,
                call_id,
                encode_optional_bytes(bytes(answer) if answer is not None else None),
            )
        except Exception as error:
            reply = Frame(
                FrameType.ERROR,
                call_id,
                encode_error(EnclaveCallError(f"{type(error).__name__}: {error}")),
            )
        except BaseException as error:  # Ctrl-C, SystemExit: the enclave is told, then it goes on
            interrupted = EnclaveCallError(
                f"the host callback was interrupted ({type(error).__name__})"
            )
            self._send(Frame(FrameType.ERROR, call_id, encode_error(interrupted)))
            raise
        finally:
            stack.pop()
        self._send(reply)

    def _new_frame(self, frame_type: FrameType, payload: bytes = b"") -> Frame:
        stack: list[int] = self._local.__dict__.get("calls", [])
        return Frame(frame_type, next(self._ids), payload, stack[-1] if stack else 0)

    # -- the platform interface --------------------------------------------------------------

    @property
    def enclave_instance_info(self) -> EnclaveInstanceInfo:
        assert self._instance_info is not None
        return self._instance_info

    def call_enclave(
        self, data: bytes, callback: HostCallback | None
    ) -> tuple[bytes | None, list[MailCommand]]:
        answer = self._request(
            self._new_frame(FrameType.CALL, data), FrameType.CALL_RESULT, callback
        )
        return decode_call_result(answer.payload)

    def deliver_mail(
        self,
        mail: bytes,
        routing_hint: str | None,
        kds_answer: bytes | None = None,
        callback: HostCallback | None = None,
    ) -> list[MailCommand]:
        frame = self._new_frame(
            FrameType.DELIVER_MAIL, encode_deliver_mail(mail, routing_hint, kds_answer)
        )
        return decode_commands(self._request(frame, FrameType.MAIL_RESULT, callback).payload)

    def update_attestation(self) -> EnclaveInstanceInfo:
        answer = self._request(self._new_frame(FrameType.UPDATE_ATTESTATION), FrameType.ATTESTATION)
        info = EnclaveInstanceInfo.deserialize(answer.payload)
        self._instance_info = info
        return info

    def close(self) -> None:
        if self._process is None:
            return
        try:
            if self._crashed is None and self._instance_info is not None:
                self._request(
                    self._new_frame(FrameType.SHUTDOWN),
                    FrameType.SHUTDOWN_DONE,
                    timeout=SHUTDOWN_TIMEOUT,
                )
        except EnclaveCrashedError:
            pass  # it died before it could be told (killed from outside): closed all the same
        finally:
            self._stop_process()

    def _stop_process(self) -> None:
        """Close the connection (the enclave process exits on it) and reap the process."""
        process, connection = self._process, self._connection
        if connection is not None:
            connection.close()
        if process is not None:
            try:
                process.wait(timeout=SHUTDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
