"""The enclave-side runtime: keys, attestation, the entry lock, mail checks, mail commands.

It runs inside the enclave's trust boundary (in the host's process in mock mode, in the child
process in simulation), so the checks it makes hold whatever the host does.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from sanctorum.attestation.evidence import EvidenceProvider
from sanctorum.attestation.instance_info import EnclaveInstanceInfo, key_binding
from sanctorum.common.commands import HostCallback, MailCommand, PostMail, StoreSealedState
from sanctorum.common.errors import EnclaveCallError, EnclaveLoadError, EnclaveStateError
from sanctorum.common.keys import Curve25519PrivateKey, Curve25519PublicKey, Ed25519PrivateKey
from sanctorum.enclave.base import Enclave
from sanctorum.enclave.filesystem import EnclaveFileSystem, memory_volume, persistent_volume
from sanctorum.enclave.persistent_map import COMMIT_ID_SIZE, PersistentMap
from sanctorum.enclave.sealing import (
    EnclaveIdentity,
    SealingPolicy,
    derive_sealing_key,
    seal,
    unseal,
)
from sanctorum.mail.format import DEFAULT_MAX_MAIL_SIZE, open_mail
from sanctorum.mail.policy import MinSizePolicy
from sanctorum.mail.post_office import PostOffice
from sanctorum.mail.private_header import CommitHeader
from sanctorum.mail.sequence import SequenceTracker

_MAP_PURPOSE = b"sanctorum-persistent-map"
_FILESYSTEM_PURPOSE = b"sanctorum-filesystem"
_T = TypeVar("_T")


class _CallContext:
    """One entry into the enclave: where its callbacks go and what it posts."""

    __slots__ = ("commands", "commit_id", "host_callback", "sequence_marks", "told")

    def __init__(self, host_callback: HostCallback | None) -> None:
        self.host_callback = host_callback
        self.commands: list[MailCommand] = []
        self.sequence_marks: dict[PostOffice, int] = {}
        # Rollback detection: this call's commit id (made when first needed) and the clients
        # it told about it.
        self.commit_id: bytes | None = None
        self.told: dict[bytes, bytes] = {}


class _Entry:
    """Entering the enclave: takes the entry lock and opens a call context; a call that fails
    takes back the mail it posted. (A class, not a generator: it is on every call's path.)"""

    __slots__ = ("_context", "_lock", "_map", "_stack")

    def __init__(self, runtime: EnclaveRuntime, host_callback: HostCallback | None) -> None:
        self._map = runtime._map
        self._lock = runtime._entry_lock
        self._stack = runtime._call_stack()
        self._context = _CallContext(host_callback)

    def __enter__(self) -> _CallContext:
        self._lock.__enter__()
        self._stack.append(self._context)
        return self._context

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if exc_type is not None:
                context = self._context
                for post_office, sequence_number in context.sequence_marks.items():
                    if isinstance(post_office, _EnclavePostOffice):
                        post_office._rewind(sequence_number)
                context.commands.clear()
                if self._map is not None and len(self._stack) == 1:
                    self._map.discard()  # the outermost call failed: its changes go too
        finally:
            self._stack.pop()
            self._lock.__exit__(exc_type, exc, traceback)


class _EnclavePostOffice(PostOffice):
    """Reports each sealed mail to the current call, so a failed call can take it back."""

    def __init__(self, runtime: EnclaveRuntime, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._runtime = runtime

    def encrypt_mail(
        self, body: bytes, envelope: bytes = b"", *, private_header: bytes = b""
    ) -> bytes:
        runtime = self._runtime
        context = runtime._current_context()
        if context is not None:
            context.sequence_marks.setdefault(self, self.next_sequence_number)
            if runtime._map is not None and not private_header:
                private_header = runtime._commit_header(self.destination.encoded)
        return super().encrypt_mail(body, envelope, private_header=private_header)

    def _rewind(self, sequence_number: int) -> None:
        with self._lock:
            self._next_sequence_number = sequence_number


class EnclaveRuntime:
    """Runs one enclave instance: every entry from the host goes through here."""

    def __init__(
        self,
        enclave: Enclave,
        evidence_provider: EvidenceProvider,
        *,
        identity: EnclaveIdentity,
        platform_secret: bytes | Callable[[SealingPolicy], bytes],
        thread_safe: bool | None = None,
        persistent_map_size: int | None = None,
        sealed_state: bytes | None = None,
        filesystem_size: int = 0,
        memory_filesystem_size: int = 0,
        filesystem_file: Path | None = None,
        max_mail_size: int = DEFAULT_MAX_MAIL_SIZE,
    ) -> None:
        """``thread_safe`` overrides the class attribute (a bundle's configuration decides);
        ``persistent_map_size`` enables the persistent map with that maximum size, restored
        from ``sealed_state`` if given. ``platform_secret`` is one secret, or (SGX) a function
        giving the CPU's key for each sealing policy."""
        self.enclave = enclave
        self._evidence_provider = evidence_provider
        self._max_mail_size = max_mail_size
        # Fresh keys at every start: mail for an earlier instance cannot be replayed here.
        self._signing_key = Ed25519PrivateKey.generate()
        self._encryption_key = Curve25519PrivateKey.generate()
        self._instance_info = self._attest()
        if thread_safe is None:
            thread_safe = enclave.thread_safe
        self._entry_lock: contextlib.AbstractContextManager[object] = (
            contextlib.nullcontext() if thread_safe else threading.RLock()
        )
        self._incoming = SequenceTracker()
        self._post_offices: dict[tuple[Curve25519PublicKey, str], _EnclavePostOffice] = {}
        self._post_offices_lock = threading.Lock()
        self._local = threading.local()
        self.identity = identity
        self._platform_secret = platform_secret
        self._map: PersistentMap | None = None
        self._last_told: dict[bytes, bytes] = {}
        if persistent_map_size is not None:
            if thread_safe:
                raise EnclaveLoadError(
                    "a thread-safe enclave cannot have a persistent map: its changes are "
                    "committed per call, and concurrent calls would commit each other's "
                    "half-done changes; make the enclave single-threaded or drop the map"
                )
            self._map = PersistentMap(persistent_map_size)
            self._map_key = self.sealing_key(SealingPolicy.SIGNER, _MAP_PURPOSE)
            if sealed_state is not None:
                state = unseal(self._map_key, sealed_state, _MAP_PURPOSE, "the sealed state")
                self._last_told = self._map.load(state)
        elif sealed_state is not None:
            raise EnclaveStateError(
                "sealed state was given, but this enclave has no persistent map to restore"
            )
        self._filesystem = self._open_filesystem(
            filesystem_size, memory_filesystem_size, filesystem_file
        )
        self._started = False
        self._closed = False
        self._running = False  # started and not closed: the one check on the hot path

    # -- attestation -------------------------------------------------------------------------

    def _attest(self) -> EnclaveInstanceInfo:
        signing = self._signing_key.public_key
        encryption = self._encryption_key.public_key
        evidence = self._evidence_provider.produce(key_binding(signing, encryption))
        return EnclaveInstanceInfo(
            signing, encryption, self._evidence_provider.evidence_type, evidence
        )

    @property
    def instance_info(self) -> EnclaveInstanceInfo:
        return self._instance_info

    def update_attestation(self) -> EnclaveInstanceInfo:
        """Fresh evidence for the same keys."""
        self._instance_info = self._attest()
        return self._instance_info

    # -- entries from the host ---------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            raise EnclaveStateError("the enclave is already started")
        self.enclave._runtime = self
        with _Entry(self, None):
            self._run_user_code("on_startup", self.enclave.on_startup)
        self._started = True
        self._running = True

    def call(
        self, data: bytes, host_callback: HostCallback | None
    ) -> tuple[bytes | None, list[MailCommand]]:
        """``receive_from_untrusted_host``: its return value and the mail commands it made."""
        if not self._running:
            self._check_running()
        with _Entry(self, host_callback) as context:
            try:
                reply = self.enclave.receive_from_untrusted_host(data)
            except Exception as error:
                raise _user_code_error("receive_from_untrusted_host", error) from error
            if reply is not None and not isinstance(reply, (bytes, bytearray)):
                raise EnclaveCallError(
                    "receive_from_untrusted_host must return bytes or None, not "
                    f"{type(reply).__name__}"
                )
            self._finish(context)
            return (bytes(reply) if reply is not None else None), context.commands

    def deliver_mail(self, mail: bytes, routing_hint: str | None) -> list[MailCommand]:
        """Decrypt, check the sequence, then ``receive_mail``; the mail commands it made.

        A mail that does not decrypt or is out of sequence raises before the enclave sees it,
        and leaves every piece of enclave state as it was.
        """
        if not self._running:
            self._check_running()
        opened = open_mail(self._encryption_key, mail, self._max_mail_size)
        stream = (opened.authenticated_sender, opened.topic)
        with _Entry(self, None) as context:
            self._incoming.check_and_advance(stream, opened.sequence_number)
            self._run_user_code(
                "receive_mail", lambda: self.enclave.receive_mail(opened, routing_hint)
            )
            self._finish(context)
            return context.commands

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._running = False
        try:
            if self._started:
                with _Entry(self, None):
                    self._run_user_code("on_shutdown", self.enclave.on_shutdown)
        finally:
            if self._filesystem is not None:
                self._filesystem.close()

    # -- services for the enclave ------------------------------------------------------------

    def call_untrusted_host(self, data: bytes) -> bytes | None:
        context = self._current_context()
        if context is None or context.host_callback is None:
            raise EnclaveStateError(
                "call_untrusted_host needs a host callback: the host must pass callback= to "
                "call_enclave for the call that is running"
            )
        answer = context.host_callback(bytes(data))
        if answer is not None and not isinstance(answer, (bytes, bytearray)):
            raise EnclaveCallError(
                f"the host callback returned {type(answer).__name__}, not bytes or None"
            )
        return bytes(answer) if answer is not None else None

    def post_office(
        self,
        destination: Curve25519PublicKey,
        topic: str,
        min_size_policy: MinSizePolicy | None,
    ) -> PostOffice:
        key = (destination, topic)
        with self._post_offices_lock:
            post_office = self._post_offices.get(key)
            if post_office is None:
                post_office = _EnclavePostOffice(
                    self, self._encryption_key, destination, topic, min_size_policy
                )
                self._post_offices[key] = post_office
            return post_office

    def post_mail(self, encrypted_mail: bytes, routing_hint: str | None) -> None:
        context = self._current_context()
        if context is None:
            raise EnclaveStateError("post_mail can only be used while handling a call or mail")
        if not isinstance(encrypted_mail, (bytes, bytearray)):
            raise TypeError(f"post_mail takes encrypted mail bytes, not {type(encrypted_mail)}")
        context.commands.append(PostMail(bytes(encrypted_mail), routing_hint))

    def sign(self, data: bytes) -> bytes:
        return self._signing_key.sign(data)

    def sealing_key(self, policy: SealingPolicy, purpose: bytes) -> bytes:
        secret = self._platform_secret
        if callable(secret):
            secret = secret(policy)
        return derive_sealing_key(secret, self.identity, policy, purpose)

    def _open_filesystem(
        self, size: int, memory_size: int, path: Path | None
    ) -> EnclaveFileSystem | None:
        if size and path is None:
            raise EnclaveStateError(
                "this enclave has a persistent filesystem: start it with filesystem_file= "
                "naming the host file that holds it (created if missing)"
            )
        if not size and path is not None:
            raise EnclaveStateError(
                "filesystem_file was given, but this enclave has no persistent filesystem"
            )
        persistent = None
        if size:
            assert path is not None
            key = self.sealing_key(SealingPolicy.SIGNER, _FILESYSTEM_PURPOSE)
            persistent = persistent_volume(path, key, size)
        memory = memory_volume(memory_size) if memory_size else None
        if persistent is None and memory is None:
            return None
        return EnclaveFileSystem(persistent, memory)

    @property
    def filesystem(self) -> EnclaveFileSystem:
        if self._filesystem is None:
            raise EnclaveStateError(
                "this enclave has no filesystem: set filesystem_size and/or "
                "memory_filesystem_size in enclave.toml (class attributes in mock mode)"
            )
        return self._filesystem

    @property
    def persistent_map(self) -> PersistentMap:
        if self._map is None:
            raise EnclaveStateError(
                "this enclave has no persistent map: enable it with persistent_map = true in "
                "enclave.toml (the persistent_map_size class attribute in mock mode)"
            )
        return self._map

    # -- persistence -------------------------------------------------------------------------

    def _commit_header(self, client: bytes) -> bytes:
        """The rollback-detection header for a mail to ``client`` sealed in this call."""
        stack = self._call_stack()
        transaction = stack[0]
        if transaction.commit_id is None:
            transaction.commit_id = secrets.token_bytes(COMMIT_ID_SIZE)
        previous = None
        for context in reversed(stack):
            previous = context.told.get(client)
            if previous is not None:
                break
        if previous is None:
            previous = self._last_told.get(client)
        stack[-1].told[client] = transaction.commit_id
        return CommitHeader(transaction.commit_id, previous).encode()

    def _finish(self, context: _CallContext) -> None:
        """After a call succeeded: commit the persistent map, or pass to the enclosing call."""
        if self._map is None:
            return
        stack = self._call_stack()
        if len(stack) > 1:  # nested in a host callback: part of the enclosing transaction
            parent = stack[-2]
            parent.commands.extend(context.commands)
            parent.told.update(context.told)
            context.commands.clear()
            return
        if not self._map.changed and not context.told:
            return
        self._map.apply()
        commit_id = context.commit_id or secrets.token_bytes(COMMIT_ID_SIZE)
        last_told = {**self._last_told, **context.told}
        blob = seal(self._map_key, self._map.serialize(commit_id, last_told), _MAP_PURPOSE)
        self._last_told = last_told
        context.commands.append(StoreSealedState(blob))

    # -- internals ---------------------------------------------------------------------------

    def _check_running(self) -> None:
        if self._closed:
            raise EnclaveStateError("the enclave has been closed")
        if not self._started:
            raise EnclaveStateError("the enclave has not been started")

    def _call_stack(self) -> list[_CallContext]:
        try:
            stack: list[_CallContext] = self._local.stack
        except AttributeError:
            stack = self._local.stack = []
        return stack

    def _current_context(self) -> _CallContext | None:
        stack = self._call_stack()
        return stack[-1] if stack else None

    def _run_user_code(self, hook: str, function: Callable[[], _T]) -> _T:
        try:
            return function()
        except Exception as error:
            raise _user_code_error(hook, error) from error


def _user_code_error(hook: str, error: Exception) -> EnclaveCallError:
    return EnclaveCallError(f"the enclave's {hook} raised {type(error).__name__}: {error}")
