"""The enclave-side runtime: keys, attestation, the entry lock, mail checks, mail commands.

It runs inside the enclave's trust boundary (in the host's process in mock mode, in the child
process in simulation), so the checks it makes hold whatever the host does.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from sanctorum.attestation.evidence import EvidenceProvider
from sanctorum.attestation.instance_info import EnclaveInstanceInfo, key_binding
from sanctorum.common.commands import HostCallback, MailCommand, PostMail, StoreSealedState
from sanctorum.common.errors import (
    TRACEBACK_HEADING,
    EnclaveCallError,
    EnclaveLoadError,
    EnclaveStateError,
    KdsError,
    KdsKeyRequiredError,
    MailReplayError,
    NewerSealedStateError,
    SealedStateError,
    SealedStateJournalError,
)
from sanctorum.common.frames import MAX_DATA_SIZE
from sanctorum.common.keys import Curve25519PrivateKey, Curve25519PublicKey, Ed25519PrivateKey
from sanctorum.enclave.base import Enclave
from sanctorum.enclave.filesystem import (
    EnclaveFileSystem,
    FileSystemRecord,
    PersistentVolume,
    memory_volume,
    persistent_volume,
)
from sanctorum.enclave.persistent_map import PersistentMap
from sanctorum.enclave.sealing import (
    EnclaveIdentity,
    SealingPolicy,
    SecurityVersions,
    derive_sealing_key,
    seal,
    sealed_versions,
    unseal,
)
from sanctorum.enclave.state import (
    JournalRecord,
    RuntimeState,
    check_follows,
    decode_state,
    encode_state,
)
from sanctorum.mail.format import (
    DEFAULT_MAX_MAIL_SIZE,
    KEY_SPEC_FLAG,
    EnclaveMail,
    open_mail,
    read_mail_header,
)
from sanctorum.mail.policy import MinSizePolicy
from sanctorum.mail.post_office import PostOffice
from sanctorum.mail.private_header import COMMIT_ID_SIZE, NONCE_SIZE, ConversationHeader, RequestId
from sanctorum.mail.sequence import SequenceTracker

_STATE_PURPOSE = b"sanctorum-sealed-state"
# A commit is sealed as a snapshot of the whole state once the journal records since the last
# snapshot hold as many bytes as it does (so the host keeps at most about twice the state, and
# a commit costs O(its changes) amortised), and at least this many,
_MIN_JOURNAL_BYTES = 64 << 10
# or once the snapshot and the records would hold more than this: all of it goes back to the
# enclave in one frame at start (simulation and SGX).
_MAX_KEPT_BYTES = 2 * MAX_DATA_SIZE
_MAIL_KEYS = 256  # KDS mail keys an instance keeps; older ones are asked for again
_T = TypeVar("_T")

if TYPE_CHECKING:  # the enclave package does not import the KDS's (docs/decisions.md)
    from sanctorum.kds.access import KdsAccess


class _Request:
    """The client request a call is handling, and the answer it has sealed so far."""

    __slots__ = ("answer", "id", "sender", "topic")

    def __init__(self, sender: Curve25519PublicKey, topic: str, request: RequestId) -> None:
        self.sender = sender
        self.topic = topic
        self.id = request
        self.answer: tuple[bytes, bytes, bytes] | None = None  # private header, envelope, body


class _CallContext:
    """One entry into the enclave: where its callbacks go, what it posts, what it answers."""

    __slots__ = ("commands", "commit_id", "depth", "host_callback", "request")

    def __init__(self, host_callback: HostCallback | None) -> None:
        self.host_callback = host_callback
        self.commands: list[MailCommand] = []
        self.commit_id: bytes | None = None  # rollback detection: made when first needed
        self.depth = 0  # this call's layer in the persistent map
        self.request: _Request | None = None


class _Entry:
    """Entering the enclave: takes the entry lock and opens a call context (and a layer of the
    persistent map); a call that raises takes back the mail it posted and drops its changes, at
    any depth. (A class, not a generator: it is on every call's path.)"""

    __slots__ = ("_context", "_lock", "_map", "_sealed", "_stack")

    def __init__(self, runtime: EnclaveRuntime, host_callback: HostCallback | None) -> None:
        self._map = runtime._map
        self._sealed = runtime._sealed
        self._lock = runtime._entry_lock
        self._stack = runtime._call_stack()
        self._context = _CallContext(host_callback)

    def __enter__(self) -> _CallContext:
        self._lock.__enter__()
        self._stack.append(self._context)
        if self._map is not None:
            self._context.depth = self._map.begin()
        return self._context

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if exc_type is not None:
                # Sequence numbers already used are never rewound: nested or concurrent calls
                # may have handed later numbers to the host. The client accepts the gap.
                self._context.commands.clear()
                if self._map is not None:
                    self._map.abort(self._context.depth)
                    if self._context.depth == 0:
                        self._sealed.clear()
        finally:
            self._stack.pop()
            self._lock.__exit__(exc_type, exc, traceback)


class _EnclavePostOffice(PostOffice):
    """Adds the runtime's hidden fields to each mail: the answer binding and the commit."""

    def __init__(self, runtime: EnclaveRuntime, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._runtime = runtime

    def encrypt_mail(
        self, body: bytes, envelope: bytes = b"", *, private_header: bytes = b""
    ) -> bytes:
        runtime = self._runtime
        context = runtime._current_context()
        if context is not None and not private_header:
            answers = None
            request = context.request
            if (
                request is not None
                and request.answer is None
                and request.topic == self.topic
                and request.sender == self.destination
            ):
                answers = request.id
            commit_id = last_told = lineage = None
            if runtime._map is not None:
                commit_id, last_told, lineage = runtime._tell(self.destination.encoded)
            if answers is not None or commit_id is not None:
                private_header = ConversationHeader(
                    answers=answers, commit_id=commit_id, last_told=last_told, lineage=lineage
                ).encode()
            if answers is not None:
                assert request is not None
                request.answer = (private_header, bytes(envelope), bytes(body))
            mail = super().encrypt_mail(body, envelope, private_header=private_header)
            if commit_id is not None:
                runtime._sealed[mail] = (self.destination.encoded, commit_id)
            return mail
        return super().encrypt_mail(body, envelope, private_header=private_header)


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
        sealed_state: Sequence[bytes] | None = None,
        filesystem_size: int = 0,
        memory_filesystem_size: int = 0,
        filesystem_file: Path | None = None,
        max_mail_size: int = DEFAULT_MAX_MAIL_SIZE,
        reveal_errors: bool = True,
        kds: KdsAccess | None = None,
    ) -> None:
        """``thread_safe`` overrides the class attribute (a bundle's configuration decides);
        ``persistent_map_size`` enables the persistent map with that maximum size, restored
        from ``sealed_state`` if given. ``platform_secret`` is one secret, or (SGX) a function
        giving the CPU's key for each sealing policy. ``sealed_state`` is the latest snapshot
        followed by the journal records stored after it, in order. Without ``reveal_errors``
        (release enclaves) an exception of the enclave's code reaches the host as its type
        only: its message may hold the enclave's data. With ``kds`` (an ``enclave.toml`` with
        ``[kds]``) the sealed state is sealed with keys derived from the persistence key the
        KDS gives this instance, instead of the platform's (the state moves between machines),
        and mail sealed to a KDS key spec opens with the key the host hands in with it."""
        self.enclave = enclave
        self._reveal_errors = reveal_errors
        self._evidence_provider = evidence_provider
        self._max_mail_size = max_mail_size
        # Fresh keys at every start: mail for an earlier instance cannot be replayed here.
        self._signing_key = Ed25519PrivateKey.generate()
        self._encryption_key = Curve25519PrivateKey.generate()
        self._instance_info = self._attest()
        self._kds = kds
        self._kds_info: EnclaveInstanceInfo | None = None  # the KDS of the last key taken
        self._kds_key: bytes | None = None
        if kds is not None and (persistent_map_size is not None or filesystem_size):
            # Asked before the sealed state opens: it is sealed with keys derived from this one.
            self._kds_key, self._kds_info = kds.persistence_key(
                self._instance_info, self._encryption_key
            )
        self._mail_keys: OrderedDict[bytes, Curve25519PrivateKey] = OrderedDict()
        self._mail_keys_lock = threading.Lock()
        if thread_safe is None:
            thread_safe = enclave.thread_safe
        self._entry_lock: contextlib.AbstractContextManager[object] = (
            contextlib.nullcontext() if thread_safe else threading.RLock()
        )
        self._incoming = SequenceTracker()
        # Mail to a KDS key: the client's numbers are spread over the instances that share the
        # key, so each sees gaps; replays and reorderings are still refused.
        self._incoming_shared = SequenceTracker(gaps_allowed=True)
        self._post_offices: dict[tuple[Curve25519PublicKey, str], _EnclavePostOffice] = {}
        self._post_offices_lock = threading.Lock()
        self._local = threading.local()
        self.identity = identity
        self._platform_secret = platform_secret
        if thread_safe and (persistent_map_size is not None or filesystem_size):
            raise EnclaveLoadError(
                "a thread-safe enclave cannot have a persistent map or filesystem: their "
                "changes are committed per call, and concurrent calls would commit each other's "
                "half-done changes; make the enclave single-threaded or drop them"
            )
        if sealed_state is not None and persistent_map_size is None and not filesystem_size:
            raise EnclaveStateError(
                "sealed state was given, but this enclave has no persistent map or filesystem "
                "to restore"
            )
        self._reseal = False
        self._commit_number = 0  # of the last commit
        self._commit_id: bytes | None = None  # of the last commit; None: no state yet
        self._snapshot_bytes = self._journal_bytes = 0  # what the host keeps
        self._state_key: bytes | None = None
        self._map: PersistentMap | None = None
        if persistent_map_size is not None:
            self._map = PersistentMap(persistent_map_size)
        filesystem = None
        if sealed_state is not None:
            filesystem = self._replay(sealed_state)
        self._persistent_volume: PersistentVolume | None = None
        self._filesystem = self._open_filesystem(
            filesystem_size, memory_filesystem_size, filesystem_file, filesystem
        )
        self.restored_commit = self._commit_number
        """The number of the commit the sealed state left (0: none): the host's commit
        order resumes after it."""
        if self._reseal and self._persistent_volume is not None:
            # What this version writes, the versions it retires must not read: a new key.
            self._persistent_volume.storage.add_key()
        self._started = False
        # Mail sealed to a client in the current transaction and not posted yet: which client
        # and commit it tells of (rollback detection records it when it is posted).
        self._sealed: dict[bytes, tuple[bytes, bytes]] = {}
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

    @property
    def kds_instance_info(self) -> EnclaveInstanceInfo | None:
        """The KDS that gave this instance its last key (verified against ``[kds]``)."""
        return self._kds_info

    def create_attestation_quote(self, report_data: bytes) -> bytes:
        """A serialized :class:`~sanctorum.attestation.quote.AttestationQuote` over 64 bytes
        the enclave chose."""
        from sanctorum.attestation.quote import encode_quote, quote_report_data  # when used

        if not isinstance(report_data, (bytes, bytearray, memoryview)):
            raise TypeError(f"report data is 64 bytes, not {type(report_data).__name__}")
        report_data = bytes(report_data)
        evidence = self._evidence_provider.produce(quote_report_data(report_data))
        return encode_quote(report_data, self._evidence_provider.evidence_type, evidence)

    def update_attestation(self) -> EnclaveInstanceInfo:
        """Fresh evidence for the same keys."""
        self._instance_info = self._attest()
        return self._instance_info

    # -- entries from the host ---------------------------------------------------------------

    def start(self) -> list[MailCommand]:
        """Run ``on_startup``; the mail commands it made (and the first commit of new state)."""
        if self._started:
            raise EnclaveStateError("the enclave is already started")
        self.enclave._runtime = self
        with _Entry(self, None) as context:
            self._run_user_code("on_startup", self.enclave.on_startup)
            self._finish(context)
        self._started = True
        self._running = True
        return context.commands

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
                raise self._user_code_error("receive_from_untrusted_host", error) from error
            if reply is not None and not isinstance(reply, (bytes, bytearray)):
                raise EnclaveCallError(
                    "receive_from_untrusted_host must return bytes or None, not "
                    f"{type(reply).__name__}"
                )
            self._finish(context)
            return (bytes(reply) if reply is not None else None), context.commands

    def deliver_mail(
        self,
        mail: bytes,
        routing_hint: str | None,
        kds_answer: bytes | None = None,
        host_callback: HostCallback | None = None,
    ) -> list[MailCommand]:
        """Decrypt, check the sequence, then ``receive_mail``; the mail commands it made.

        A mail that does not decrypt or is out of sequence raises before the enclave sees it,
        and leaves every piece of enclave state as it was. With a persistent map, a request the
        enclave already applied (a resend, possibly to a restarted instance) is answered with
        the answer it got then, and ``receive_mail`` is not called again.

        A mail sealed to a KDS key spec opens with the spec's key: one this instance took
        before, or one in ``kds_answer`` (the KDS's answer to the host's ``/private`` request
        for this instance); :class:`KdsKeyRequiredError` if it has neither. ``host_callback``
        serves ``call_untrusted_host`` while ``receive_mail`` runs.
        """
        if not self._running:
            self._check_running()
        tracker = self._incoming
        if len(mail) > 5 and mail[5] & KEY_SPEC_FLAG:
            opened = self._open_with_mail_key(mail, kds_answer)
            tracker = self._incoming_shared
        else:
            opened = open_mail(self._encryption_key, mail, self._max_mail_size)
        request_id = ConversationHeader.decode(opened.private_header).request
        sender = opened.authenticated_sender
        stream: tuple[object, ...] = (sender, opened.topic)
        if opened.key_spec is not None:
            # Numbered apart from mail to this instance's key; by digest, for a spec may be
            # 64 KiB and the streams last as long as the instance.
            stream += (hashlib.sha256(opened.key_spec).digest(),)
        with _Entry(self, host_callback) as context:
            record_key = None
            if request_id is not None and self._map is not None:
                tracker.check(stream, opened.sequence_number)
                record_key = _request_key(sender, opened.topic)
                record = self._map.record(record_key)
                if record is not None and request_id.number <= _AppliedRequest.number_in(record):
                    self._answer_again(
                        _AppliedRequest.decode(record), request_id, opened, routing_hint
                    )
                    tracker.advance(stream, opened.sequence_number)
                    self._finish(context)
                    return context.commands
                tracker.advance(stream, opened.sequence_number)
            else:
                tracker.check_and_advance(stream, opened.sequence_number)
            if request_id is not None:
                context.request = _Request(sender, opened.topic, request_id)
            self._run_user_code(
                "receive_mail", lambda: self.enclave.receive_mail(opened, routing_hint)
            )
            request = context.request
            if record_key is not None and request is not None:
                applied = _AppliedRequest(request.id, request.answer)
                assert self._map is not None
                self._map.set_record(record_key, applied.encode())
            self._finish(context)
            return context.commands

    def _open_with_mail_key(self, mail: bytes, kds_answer: bytes | None) -> EnclaveMail:
        """Open ``mail`` with the key of the KDS key spec it is sealed to: one kept, or one
        taken from ``kds_answer``, which is kept only once the mail opened with it (a key that
        opens nothing changes nothing)."""
        key_spec = read_mail_header(mail, self._max_mail_size).key_spec
        assert key_spec is not None
        with self._mail_keys_lock:
            key = self._mail_keys.get(key_spec)
            if key is not None:
                self._mail_keys.move_to_end(key_spec)
        if key is not None:
            return open_mail(key, mail, self._max_mail_size)
        if self._kds is None:
            raise KdsError(
                "the mail is sealed to a key from a KDS, but this enclave has no [kds] table in "
                "its enclave.toml naming a KDS it trusts, so it takes no keys from one: to serve "
                "a cluster, add [kds] (constraint, cluster_key) and rebuild (a new code hash)"
            )
        if kds_answer is None:
            self._kds.check_spec(key_spec)  # a malformed spec costs its host no KDS request
            raise KdsKeyRequiredError(
                "the mail is sealed to a KDS key this enclave instance does not hold yet: its "
                "host must ask the KDS for it (EnclaveHost does, with kds=KdsConfiguration)"
            )
        taken, cluster_key = self._kds.mail_key(key_spec, kds_answer, self._encryption_key)
        key = Curve25519PrivateKey(taken.key)
        opened = open_mail(key, mail, self._max_mail_size)
        self._kds.pin(cluster_key)  # the cluster of a key that opened a mail
        with self._mail_keys_lock:
            self._mail_keys[key_spec] = key
            while len(self._mail_keys) > _MAIL_KEYS:
                self._mail_keys.popitem(last=False)
            self._kds_info = taken.kds
        return opened

    def _answer_again(
        self,
        applied: _AppliedRequest,
        request_id: RequestId,
        opened: EnclaveMail,
        routing_hint: str | None,
    ) -> None:
        """A request that was applied before: send its answer again, apply nothing."""
        if request_id != applied.id:
            raise MailReplayError(
                f"request {request_id.number} on topic {opened.topic!r} is not newer than "
                f"request {applied.id.number}, the last one this enclave applied for this "
                "sender: it was superseded and is not applied (the client's saved state may be "
                "older than what it sent)"
            )
        if applied.answer is not None:
            header, envelope, body = applied.answer
            office = self.post_office(opened.authenticated_sender, opened.topic, None)
            self.post_mail(office.encrypt_mail(body, envelope, private_header=header), routing_hint)

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
                "call_enclave or deliver_mail for the call that is running (a web host: "
                "EnclaveService(host_callback=...); the sanctorum host command has none)"
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

    def seal_once(
        self, destination: Curve25519PublicKey, topic: str, body: bytes, envelope: bytes
    ) -> bytes:
        """One mail from this instance to ``destination``, from a post office that is not
        kept: for answers to parties that never write again (a KDS's requesters), whose post
        offices would otherwise pile up for the instance's life."""
        return PostOffice(self._encryption_key, destination, topic).encrypt_mail(body, envelope)

    def post_mail(self, encrypted_mail: bytes, routing_hint: str | None) -> None:
        context = self._current_context()
        if context is None:
            raise EnclaveStateError("post_mail can only be used while handling a call or mail")
        if not isinstance(encrypted_mail, (bytes, bytearray)):
            raise TypeError(f"post_mail takes encrypted mail bytes, not {type(encrypted_mail)}")
        mail = bytes(encrypted_mail)
        if self._sealed:
            self._posted(mail)
        context.commands.append(PostMail(mail, routing_hint))

    def sign(self, data: bytes) -> bytes:
        return self._signing_key.sign(data)

    def sealing_key(
        self, policy: SealingPolicy, purpose: bytes, versions: SecurityVersions | None = None
    ) -> bytes:
        """The key for ``purpose`` under ``policy``, for ``versions`` (default: the enclave's
        own; older ones may be asked for, newer ones never)."""
        secret = self._platform_secret
        if callable(secret):
            if versions is not None and versions != self.identity.versions:
                raise SealedStateError(
                    f"a sealing key for {versions} was asked for, but under SGX Gramine gives an "
                    f"enclave the keys of its current versions only ({self.identity.versions}): "
                    "data sealed before an SGX upgrade cannot be opened after it "
                    "(docs/persistence.md, 'Upgrades')"
                )
            secret = secret(policy)
        return derive_sealing_key(secret, self.identity, policy, purpose, versions)

    def _state_sealing_key(self, versions: SecurityVersions) -> bytes:
        """The key that seals the runtime's state: from the KDS's key if there is one (the
        same on every machine), else from the platform's."""
        if self._kds_key is not None:
            return derive_sealing_key(
                self._kds_key, self.identity, SealingPolicy.SIGNER, _STATE_PURPOSE, versions
            )
        return self.sealing_key(SealingPolicy.SIGNER, _STATE_PURPOSE, versions)

    def _replay(self, blobs: Sequence[bytes]) -> FileSystemRecord | None:
        """Restore the state a snapshot and the journal records after it leave; the
        filesystem's record as the last of them left it."""
        if isinstance(blobs, (bytes, bytearray)) or not blobs:
            raise EnclaveStateError(
                "sealed_state is a sequence of blobs, the latest snapshot first: "
                + ("it is empty" if not blobs else "wrap a single blob in a list")
            )
        keys: dict[SecurityVersions, bytes] = {}
        for index, blob in enumerate(blobs):
            what = "the sealed state" + (
                f" (blob {index + 1} of {len(blobs)}, a journal record)" if index else ""
            )
            versions = sealed_versions(blob, what)
            if not self.identity.versions.covers(versions):
                raise NewerSealedStateError(
                    f"the sealed state was written at {versions}, but this enclave is at "
                    f"{self.identity.versions}: an enclave never reads state a newer version "
                    "wrote (the newer version may have sealed data this one's flaws would "
                    "expose); run the newer version"
                )
            # State sealed under older security versions is sealed again under ours at once.
            self._reseal |= versions != self.identity.versions
            if versions not in keys:
                keys[versions] = self._state_sealing_key(versions)
            try:
                opened = decode_state(unseal(keys[versions], blob, _STATE_PURPOSE, what))
            except SealedStateError as error:
                if self._kds_key is None:
                    raise
                raise SealedStateError(
                    f"{error} (with the key of a KDS: it was sealed with the key of another "
                    "KDS, or of a KDS whose master keys were replaced, e.g. a KDS state dir "
                    "started afresh)"
                ) from None
            if index == 0:
                if isinstance(opened, JournalRecord):
                    raise SealedStateJournalError(
                        "the sealed state starts with a journal record, not a snapshot: pass "
                        "the latest snapshot first, then the records stored after it"
                    )
                self._snapshot_bytes, filesystem = len(blob), opened.filesystem
                map_part = opened.map_state
            else:
                assert self._commit_id is not None
                check_follows(opened, self._commit_number, self._commit_id)
                assert isinstance(opened, JournalRecord)
                self._journal_bytes += len(blob)
                filesystem, map_part = opened.filesystem, opened.map_changes
            self._commit_number, self._commit_id = opened.commit_number, opened.commit_id
            if map_part is not None:
                if self._map is None:
                    raise EnclaveStateError(
                        "the sealed state holds a persistent map, but this enclave has none: "
                        "enable persistent_map in enclave.toml, or start without this sealed "
                        "state"
                    )
                if index == 0:
                    self._map.load(map_part)
                else:
                    self._map.replay(map_part)
        return filesystem

    def _seal_commit(
        self, commit_id: bytes, changes: bytes | None, filesystem: FileSystemRecord | None
    ) -> StoreSealedState:
        """Seal the commit just made under the enclave's own versions: a journal record of
        ``changes`` (the map's, None if it has none), or a snapshot of the whole state when one
        is due."""
        versions = self.identity.versions
        if self._state_key is None:  # derived once: under SGX it is a read of Gramine's file
            self._state_key = self._state_sealing_key(versions)
        key = self._state_key
        previous, self._commit_id = self._commit_id, commit_id
        if previous is not None and not self._reseal:
            plaintext = encode_state(
                JournalRecord(self._commit_number, commit_id, previous, changes, filesystem)
            )
            room = min(self._snapshot_bytes, _MAX_KEPT_BYTES - self._snapshot_bytes)
            if self._journal_bytes + len(plaintext) < max(room, _MIN_JOURNAL_BYTES):
                blob = seal(key, plaintext, _STATE_PURPOSE, versions)
                self._journal_bytes += len(blob)
                return StoreSealedState(blob, self._commit_number, snapshot=False)
        map_state = None if self._map is None else self._map.serialize()
        plaintext = encode_state(
            RuntimeState(self._commit_number, commit_id, map_state, filesystem)
        )
        self._reseal = False
        blob = seal(key, plaintext, _STATE_PURPOSE, versions)
        self._snapshot_bytes, self._journal_bytes = len(blob), 0
        return StoreSealedState(blob, self._commit_number, snapshot=True)

    def _open_filesystem(
        self, size: int, memory_size: int, path: Path | None, record: FileSystemRecord | None
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
        if record is not None and not size:
            raise EnclaveStateError(
                "the sealed state records a persistent filesystem, but this enclave has none: "
                "set filesystem_size in enclave.toml as it was, or start without this state"
            )
        persistent = None
        if size:
            assert path is not None
            persistent = self._persistent_volume = persistent_volume(path, size, record)
        memory = memory_volume(memory_size) if memory_size else None
        if persistent is None and memory is None:
            return None
        return EnclaveFileSystem(persistent, memory)

    @property
    def filesystem(self) -> EnclaveFileSystem:
        if self._filesystem is None:
            raise EnclaveStateError(
                "this enclave has no filesystem: set filesystem_size and/or "
                "memory_filesystem_size in enclave.toml (or as class attributes of an enclave "
                "class no enclave.toml names)"
            )
        return self._filesystem

    @property
    def persistent_map(self) -> PersistentMap:
        if self._map is None:
            raise EnclaveStateError(
                "this enclave has no persistent map: enable it with persistent_map = true in "
                "enclave.toml (or the persistent_map_size class attribute of an enclave class no "
                "enclave.toml names)"
            )
        return self._map

    # -- persistence -------------------------------------------------------------------------

    def _tell(self, client: bytes) -> tuple[bytes, bytes | None, bytes]:
        """Rollback detection for a mail to ``client`` sealed in this call: the id of the
        commit that will record it, the last commit the enclave told ``client`` about before
        this one, and the state's lineage. Every mail of one commit carries the same triple,
        so the client may read them in any order; what the client is told is recorded when a
        mail is posted."""
        stack = self._call_stack()
        transaction = stack[0]
        if transaction.commit_id is None:
            transaction.commit_id = secrets.token_bytes(COMMIT_ID_SIZE)
        assert self._map is not None
        lineage = self._map.record(_LINEAGE)
        if lineage is None:  # the state's first commit (see _finish)
            lineage = secrets.token_bytes(COMMIT_ID_SIZE)
            self._map.set_record(_LINEAGE, lineage)
        return transaction.commit_id, self._map.committed_record(_TOLD + client), lineage

    def _posted(self, mail: bytes) -> None:
        """A mail was posted: if it tells a client of a commit, record that the client was
        told (in the current call's layer, so a call that raises records nothing)."""
        told = self._sealed.pop(mail, None)
        if told is not None and self._map is not None:
            client, commit_id = told
            self._map.set_record(_TOLD + client, commit_id)

    def _finish(self, context: _CallContext) -> None:
        """After a call succeeded: commit the persistent map, or pass to the enclosing call."""
        stack = self._call_stack()
        if len(stack) > 1:
            if self._map is not None:  # nested in a host callback: part of the transaction
                self._map.end(context.depth)
                stack[-2].commands.extend(context.commands)
                context.commands.clear()
            return
        self._sealed.clear()  # mail sealed and never posted tells nobody anything
        volume = self._persistent_volume
        map_changed = self._map is not None and self._map.changed
        if not (map_changed or self._reseal or (volume is not None and volume.dirty)):
            if self._map is not None:
                self._map.abort(0)  # close the call's (empty) layer
            return
        if self._map is not None and self._map.record(_LINEAGE) is None:
            # Names this state's line of commits, from its first commit on: clients of a
            # cluster, whose instances each have their own state, check each line apart
            # (docs/kds.md). (_tell makes it first if this commit tells a client of itself.)
            self._map.set_record(_LINEAGE, secrets.token_bytes(COMMIT_ID_SIZE))
            map_changed = True
        if map_changed:
            assert self._map is not None
            self._map.check_size()  # before the filesystem commits: nothing fails after it
        # If the filesystem cannot commit (full), the call fails and the map's changes go.
        try:
            filesystem = None if volume is None else volume.commit()
        except OSError as error:
            raise EnclaveCallError(
                f"the enclave's files could not be committed ({error}); this call's other "
                "changes and its mail were dropped"
            ) from error
        changes = None
        if map_changed:
            assert self._map is not None
            changes = self._map.apply()
        elif self._map is not None:
            self._map.abort(0)
        commit_id = context.commit_id or secrets.token_bytes(COMMIT_ID_SIZE)
        self._commit_number += 1
        context.commands.append(self._seal_commit(commit_id, changes, filesystem))

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
            raise self._user_code_error(hook, error) from error

    def _user_code_error(self, hook: str, error: Exception) -> EnclaveCallError:
        name = type(error).__name__
        if not self._reveal_errors:
            return EnclaveCallError(
                f"the enclave's {hook} raised {name} (a release enclave keeps the message "
                "inside: it may hold the enclave's data)"
            )
        return EnclaveCallError(
            f"the enclave's {hook} raised {name}: {error}\n\n{TRACEBACK_HEADING}\n"
            + _enclave_traceback(error)
        )


def _enclave_traceback(error: BaseException) -> str:
    """The traceback of the enclave's own code: the runtime's frames above it are left out."""
    import traceback  # only for errors: kept out of the enclave process's start

    frames = traceback.extract_tb(error.__traceback__)
    while frames and frames[0].filename == __file__:
        frames.pop(0)
    lines = traceback.format_list(frames) + traceback.format_exception_only(error)
    return "".join(lines).rstrip("\n")


_TOLD = b"T"
_APPLIED = b"R"
_U64 = struct.Struct(">Q")


_LINEAGE = b"L"


def _request_key(sender: Curve25519PublicKey, topic: str) -> bytes:
    return _APPLIED + sender.encoded + topic.encode("utf-8")


class _AppliedRequest:
    """The runtime's record of the last request applied for one (client, topic)::

    number u64 | nonce (16) | answer flag u8 | [header u16-len | envelope u32-len | body]
    """

    __slots__ = ("answer", "id")
    _HEAD = struct.Struct(f">Q{NONCE_SIZE}sB")

    def __init__(self, request_id: RequestId, answer: tuple[bytes, bytes, bytes] | None) -> None:
        self.id = request_id
        self.answer = answer

    def encode(self) -> bytes:
        head = self._HEAD.pack(self.id.number, self.id.nonce, self.answer is not None)
        if self.answer is None:
            return head
        header, envelope, body = self.answer
        return b"".join(
            (head, struct.pack(">HI", len(header), len(envelope)), header, envelope, body)
        )

    @staticmethod
    def number_in(data: bytes) -> int:
        number: int = _U64.unpack_from(data)[0]
        return number

    @classmethod
    def decode(cls, data: bytes) -> _AppliedRequest:
        number, nonce, has_answer = cls._HEAD.unpack_from(data)
        if not has_answer:
            return cls(RequestId(number, nonce), None)
        offset = cls._HEAD.size
        header_size, envelope_size = struct.unpack_from(">HI", data, offset)
        offset += 6
        header = data[offset : offset + header_size]
        offset += header_size
        envelope = data[offset : offset + envelope_size]
        return cls(RequestId(number, nonce), (header, envelope, data[offset + envelope_size :]))
