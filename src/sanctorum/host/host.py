"""EnclaveHost: loads an enclave, starts it, and passes calls and mail to it."""

from __future__ import annotations

import enum
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from sanctorum.attestation.collateral import INTEL_PCS_URL, CollateralFetcher
from sanctorum.attestation.instance_info import EnclaveInstanceInfo
from sanctorum.attestation.mock import MockConfiguration
from sanctorum.common.bundle import DUMMY_SIGNING_KEY, read_bundle
from sanctorum.common.commands import HostCallback, MailCommand, StoreSealedState
from sanctorum.common.errors import (
    BundleError,
    EnclaveCrashedError,
    EnclaveLoadError,
    EnclaveStateError,
    KdsError,
    KdsKeyRequiredError,
)
from sanctorum.common.keys import Curve25519PublicKey
from sanctorum.common.mode import EnclaveMode
from sanctorum.common.progress import ProgressCallback
from sanctorum.enclave.base import Enclave
from sanctorum.host.gramine import GraminePlatform
from sanctorum.host.kds import KdsConfiguration, kds_fetcher
from sanctorum.host.mailbox import InMemoryMailbox
from sanctorum.host.mock_settings import mock_settings
from sanctorum.host.platform import (
    EnclavePlatform,
    MockPlatform,
    refuse_thread_safe_persistence,
)
from sanctorum.host.simulation import SimulationPlatform
from sanctorum.mail.format import read_mail_header

MailCommandsCallback = Callable[[list[MailCommand]], None]
_REMEMBERED_INSTANCES = 4096  # about 1 KiB each
_COMMIT_WAIT = 120.0  # seconds a commit waits for the one before it to be passed on


@dataclass(frozen=True)
class ModeSupport:
    """Whether this machine can run a mode, and if not, why."""

    mode: EnclaveMode
    supported: bool
    reason: str


_DCAP_LIBRARIES = ("libsgx_dcap_ql.so.1", "libsgx_dcap_default_qpl.so.1")
_LIBRARY_DIRS = ("usr/lib/x86_64-linux-gnu", "usr/lib", "usr/lib64", "usr/local/lib")


def sgx_problems(
    root: Path = Path("/"), which: Callable[[str], str | None] = shutil.which
) -> list[str]:
    """What this machine lacks to run SGX enclaves (empty when nothing is missing)."""
    problems = []
    if not (root / "dev/sgx_enclave").exists():
        problems.append("no SGX device (/dev/sgx_enclave): the CPU or VM does not expose SGX")
    if which("gramine-sgx") is None:
        problems.append("gramine-sgx is not on PATH (install Gramine)")
    if not (root / "var/run/aesmd/aesm.socket").exists():
        problems.append("the AESM service is not running (/var/run/aesmd/aesm.socket)")
    for library in _DCAP_LIBRARIES:
        if not any((root / directory / library).exists() for directory in _LIBRARY_DIRS):
            problems.append(f"the DCAP library {library} is not installed")
    return problems


class _State(enum.Enum):
    LOADED = "loaded"
    STARTED = "started"
    FAILED = "failed"  # a commit's commands could not be stored: restart() to go on
    CLOSED = "closed"


class EnclaveHost:
    """The untrusted side of an enclave: loads it, starts it, and talks to it.

    Use as a context manager, or call :meth:`close`::

        with EnclaveHost.load(MyEnclave) as host:
            host.start()
            host.call_enclave(b"hello")
    """

    def __init__(self, make_platform: Callable[[], EnclavePlatform], mode: EnclaveMode) -> None:
        """Use :meth:`load`."""
        self._make_platform = make_platform
        self._platform = make_platform()
        self._mode = mode
        self._state = _State.LOADED
        self._state_lock = threading.Lock()
        self._on_mail_commands: MailCommandsCallback | None = None
        self.mailbox: InMemoryMailbox | None = None
        """Where posted mail goes when :meth:`start` was given no ``on_mail_commands``."""
        self._filesystem_file: Path | None = None
        self._kds_fetch: Callable[[bytes], bytes] | None = None
        self._sealed_blobs: list[bytes] = []  # the latest snapshot, then the records after it
        # Calls from several threads can return out of commit order, but a journal must be
        # stored in order: a call's commands wait for those of the commit before.
        self._commit_order = threading.Condition()
        self._next_commit = 1  # the commit whose commands go to on_mail_commands next
        self._generation = 0  # counts starts and closes: what a replaced instance made is dropped
        # The running platform and its generation, read together by calls: a call made on an
        # instance since replaced can never pass as one of the new instance's.
        self._instance: tuple[EnclavePlatform, int] = (self._platform, 0)
        self._storing: int | None = None  # the thread inside on_mail_commands with a commit
        self._failure = ""  # why the host is FAILED
        # Attestations of the instances this host ran, newest last: clients verify mail that an
        # instance queued before it was replaced.
        self._instances: dict[Curve25519PublicKey, EnclaveInstanceInfo] = {}

    @classmethod
    def supported_modes(cls) -> list[ModeSupport]:
        """Which modes this machine can run, and why not the others."""
        problems = sgx_problems()
        support = [
            ModeSupport(EnclaveMode.MOCK, True, "runs the enclave class in this process"),
            ModeSupport(
                EnclaveMode.SIMULATION, True, "runs a signed bundle in a child Python process"
            ),
        ]
        for mode in (EnclaveMode.DEBUG, EnclaveMode.RELEASE):
            reason = "; ".join(problems) or "runs a bundle in SGX under gramine-sgx"
            support.append(ModeSupport(mode, not problems, reason))
        return support

    @classmethod
    def load(
        cls,
        enclave: type[Enclave] | str | os.PathLike[str] | None = None,
        mode: EnclaveMode | str | None = None,
        mock_config: MockConfiguration | None = None,
        pccs_url: str | None = None,
        *,
        progress: ProgressCallback | None = None,
    ) -> EnclaveHost:
        """Load an enclave; :meth:`start` runs it.

        ``enclave`` is an :class:`Enclave` subclass (mock mode, the default for a class) or the
        path of a ``.enclave`` bundle (simulation mode, the default for a bundle). With no
        argument, the single bundle in the current directory or its ``build/``, or else the
        single Enclave subclass imported so far, is loaded. In mock mode the settings (thread
        safety, persistent map, filesystems, product id, revocation level) come from the
        ``enclave.toml`` whose ``entry`` names the class, if there is one beside its module
        (see :mod:`sanctorum.host.mock_settings`), else from the class's attributes; a class
        attribute that contradicts that file is refused. ``mock_config`` sets what a mock
        enclave claims to be (code hash, signer, product id, revocation level, TCB level); its
        explicit values win over ``enclave.toml``.
        ``pccs_url`` is where debug and release enclaves get their DCAP collateral (default:
        Intel's PCS). ``progress`` is told each long step of the host as it begins: the
        collateral requests, at start and whenever the collateral is fetched again (see
        :mod:`sanctorum.common.progress`).
        """
        if enclave is None:
            enclave = _discover()
        try:
            parsed_mode = None if mode is None else EnclaveMode.parse(mode)
        except ValueError as error:
            raise EnclaveLoadError(str(error)) from None
        if mock_config is not None and not isinstance(mock_config, MockConfiguration):
            raise EnclaveLoadError("mock_config must be a MockConfiguration")
        if isinstance(enclave, (str, os.PathLike)):
            return cls._load_bundle(
                Path(enclave), parsed_mode or EnclaveMode.SIMULATION, pccs_url, progress
            )
        if not (isinstance(enclave, type) and issubclass(enclave, Enclave)):
            raise EnclaveLoadError(
                f"{enclave!r} is not an Enclave subclass or a bundle path: pass the class "
                "(not an instance) or the path of a .enclave file"
            )
        parsed_mode = parsed_mode or EnclaveMode.MOCK
        if parsed_mode is not EnclaveMode.MOCK:
            raise EnclaveLoadError(
                f"{parsed_mode.value} mode runs an enclave from a signed bundle: build one with "
                "`sanctorum build` and pass its path; a class runs in mock mode only"
            )
        # Read once: a restart runs with the settings the enclave was loaded with.
        settings = mock_settings(enclave, mock_config)
        return cls(lambda: MockPlatform(enclave, mock_config, settings), parsed_mode)

    @classmethod
    def _load_bundle(
        cls,
        path: Path,
        mode: EnclaveMode,
        pccs_url: str | None,
        progress: ProgressCallback | None = None,
    ) -> EnclaveHost:
        if mode is EnclaveMode.MOCK:
            raise EnclaveLoadError("mock mode runs an Enclave class; pass the class, not a bundle")
        if mode is not EnclaveMode.SIMULATION:
            problems = sgx_problems()
            if problems:
                raise EnclaveLoadError(
                    f"{mode.value} mode is not available here: {'; '.join(problems)}"
                )
        try:
            data = path.read_bytes()
        except OSError as error:
            raise BundleError(f"cannot read the enclave bundle {path}: {error}") from None
        bundle = read_bundle(data, str(path))
        config = bundle.config
        refuse_thread_safe_persistence(
            config.thread_safe, config.persistent_map or bool(config.filesystem_size)
        )
        if mode is EnclaveMode.SIMULATION:
            return cls(lambda: SimulationPlatform(bundle, data), mode)
        if mode is EnclaveMode.RELEASE and bundle.signer == DUMMY_SIGNING_KEY.public_key:
            raise BundleError(f"{path} is signed with the public dummy key; sign it for release")
        manifest = path.with_name(f"{bundle.config.name}.manifest.sgx")
        if not manifest.exists():
            raise EnclaveLoadError(
                f"{manifest} is missing: build with `sanctorum build --mode {mode.value}` on a "
                "machine with Gramine, which signs the manifest"
            )
        fetcher = CollateralFetcher(pccs_url or INTEL_PCS_URL, progress=progress)
        launcher = ["gramine-sgx", bundle.config.name]
        return cls(
            lambda: GraminePlatform(bundle, data, mode, fetcher, launcher, path.parent), mode
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def enclave_mode(self) -> EnclaveMode:
        return self._mode

    @property
    def process_id(self) -> int | None:
        """The id of the enclave's process (simulation, debug and release modes), for logs and
        monitoring; None in mock mode, where the enclave runs in this process."""
        process = getattr(self._platform, "process", None)
        return process.pid if isinstance(process, subprocess.Popen) else None

    @property
    def exit_status(self) -> int | None:
        """How the enclave's process ended (negative: killed by that signal); None while it
        runs, before it was started, and in mock mode. Tells a crash from a kill after
        :class:`EnclaveCrashedError`."""
        process = getattr(self._platform, "process", None)
        return process.poll() if isinstance(process, subprocess.Popen) else None

    @property
    def sealed_state(self) -> tuple[bytes, ...] | None:
        """What the enclave handed over to keep: its latest snapshot, then the journal records
        it stored after it (None before the first). :meth:`restart` starts from it; persist it
        and pass it to :meth:`start` after the host process restarts."""
        with self._commit_order:
            return tuple(self._sealed_blobs) if self._sealed_blobs else None

    @sealed_state.setter
    def sealed_state(self, blobs: Sequence[bytes] | bytes | None) -> None:
        with self._commit_order:
            self._sealed_blobs = list(_as_blobs(blobs) or ())

    def start(
        self,
        sealed_state: Sequence[bytes] | bytes | None = None,
        filesystem_file: str | os.PathLike[str] | None = None,
        on_mail_commands: MailCommandsCallback | None = None,
        kds: KdsConfiguration | None = None,
    ) -> EnclaveHost:
        """Start the enclave (its ``on_startup`` runs now).

        ``sealed_state`` is what the enclave asked the host to keep (:class:`StoreSealedState`
        mail commands): its latest snapshot, then the journal records stored after it, in order
        (:attr:`sealed_state`; a single blob is read as a snapshot alone). The enclave's
        persistent map and filesystem resume from it, and it refuses to start
        (:class:`SealedStateError`) if a blob is not its own or was altered,
        (:class:`SealedStateJournalError`) if the records do not follow one another, or
        (:class:`FileSystemRollbackError`) if the filesystem file is not the one the state
        records.
        ``filesystem_file`` is the host file that holds the enclave's persistent encrypted
        filesystem, for enclaves that have one: created when the sealed state records none (a
        missing or empty file), and otherwise the file that goes with ``sealed_state``.
        ``on_mail_commands`` receives the list of mail commands the enclave made: those of
        ``on_startup`` before ``start`` returns, then those of each call; persist and route
        them. It runs on the calling thread before the call returns, so a call that returned
        is stored. Lists that store sealed state come in commit order, one at a time. If it
        raises, the call raises that error, the commit is forgotten (not in
        :attr:`sealed_state`) and later calls raise :class:`EnclaveCrashedError` until
        :meth:`restart` resumes from the last commit stored; so too for a call that commits
        nothing, since the instance took mail whose answers are lost. Without it, posted mail
        is queued in :attr:`mailbox`.
        ``kds`` is where an enclave whose ``enclave.toml`` has a ``[kds]`` table gets the key
        its persistent state is sealed with (docs/kds.md); :class:`KdsError` if it cannot.
        """
        with self._state_lock:
            if self._state is not _State.LOADED:
                raise EnclaveStateError(
                    f"start() needs a freshly loaded host; it is {self._state.value}"
                )
            if on_mail_commands is None:
                self.mailbox = InMemoryMailbox()
                on_mail_commands = self.mailbox.handle
            self._on_mail_commands = on_mail_commands
            self._filesystem_file = Path(filesystem_file) if filesystem_file else None
            self._kds_fetch = None if kds is None else kds_fetcher(kds)
            blobs = _as_blobs(sealed_state)
            restored, commands = self._platform.start(blobs, self._filesystem_file, self._kds_fetch)
            generation = self._resume(self._platform, blobs, restored)
            self._state = _State.STARTED
            self._remember(self._platform.enclave_instance_info)
        self._dispatch(commands, generation)
        return self

    def restart(self) -> EnclaveHost:
        """Close the enclave if it still runs and start a fresh instance (new keys) from the
        latest sealed state.

        Use it after :class:`EnclaveCrashedError`. Mail commands keep going where they went.
        """
        callback = self._on_mail_commands
        self.close()
        with self._state_lock:
            self._platform = self._make_platform()
            blobs = self.sealed_state  # after close(): no commit of the old instance comes now
            restored, commands = self._platform.start(blobs, self._filesystem_file, self._kds_fetch)
            generation = self._resume(self._platform, blobs, restored)
            self._state = _State.STARTED
            self._remember(self._platform.enclave_instance_info)
        self._on_mail_commands = callback
        self._dispatch(commands, generation)
        return self

    def _resume(
        self, platform: EnclavePlatform, blobs: tuple[bytes, ...] | None, restored_commit: int
    ) -> int:
        """A new instance resumed from ``blobs`` at commit ``restored_commit``: its commits
        follow that one. Commands of the instance it replaced that still wait are dropped."""
        with self._commit_order:
            self._sealed_blobs = list(blobs or ())
            self._next_commit = restored_commit + 1
            self._generation += 1
            self._instance = (platform, self._generation)
            self._commit_order.notify_all()
            return self._generation

    def close(self) -> None:
        """Shut the enclave down (its ``on_shutdown`` runs). Closing twice is harmless."""
        with self._state_lock:
            if self._state is _State.CLOSED:
                return
            self._state = _State.CLOSED
        with self._commit_order:  # calls still waiting to pass their commit on are dropped
            self._generation += 1
            self._commit_order.notify_all()
        self._platform.close()

    def __enter__(self) -> EnclaveHost:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- talking to the enclave --------------------------------------------------------------

    @property
    def enclave_instance_info(self) -> EnclaveInstanceInfo:
        """The enclave's attestation: serialize it for clients."""
        self._require_started()
        return self._platform.enclave_instance_info

    def update_attestation(self) -> EnclaveInstanceInfo:
        """Refresh the attestation evidence; the enclave keeps its keys."""
        self._require_started()
        info = self._platform.update_attestation()
        self._remember(info)
        return info

    def instance_info_of(self, encryption_key: Curve25519PublicKey) -> EnclaveInstanceInfo | None:
        """The attestation of an instance this host ran (the current one or one it replaced),
        found by its encryption key; None if unknown. Clients check mail an earlier instance
        queued against it."""
        return self._instances.get(encryption_key)

    def _remember(self, info: EnclaveInstanceInfo) -> None:
        self._instances.pop(info.encryption_key, None)
        self._instances[info.encryption_key] = info
        while len(self._instances) > _REMEMBERED_INSTANCES:
            del self._instances[next(iter(self._instances))]

    def call_enclave(self, data: bytes, callback: HostCallback | None = None) -> bytes | None:
        """Pass ``data`` to the enclave's ``receive_from_untrusted_host``; returns its answer.

        ``callback`` answers the enclave's ``call_untrusted_host`` during this call. Raises
        :class:`EnclaveCallError` if the enclave's code raised.
        """
        if self._state is not _State.STARTED:
            self._require_started()
        if type(data) is not bytes:
            data = _as_bytes(data, "data")
        if self._storing is not None:
            self._refuse_from_on_mail_commands()
        platform, generation = self._instance
        reply, commands = platform.call_enclave(data, callback)
        if commands:
            self._dispatch(commands, generation)
        return reply

    def deliver_mail(
        self,
        mail: bytes,
        routing_hint: str | None = None,
        callback: HostCallback | None = None,
    ) -> None:
        """Deliver a client's encrypted mail; ``routing_hint`` says where replies go, and
        ``callback`` answers the enclave's ``call_untrusted_host`` while ``receive_mail`` runs
        (as for :meth:`call_enclave`).

        Raises :class:`MailDecryptionError`, :class:`MailFormatError` or
        :class:`MailSequenceError` if the enclave rejects the mail (its state is unchanged),
        or :class:`EnclaveCallError` if its ``receive_mail`` raised.
        """
        self._require_started()
        if routing_hint is not None and not isinstance(routing_hint, str):
            raise TypeError("routing_hint must be a string or None")
        if self._storing is not None:
            self._refuse_from_on_mail_commands()
        platform, generation = self._instance
        mail = _as_bytes(mail, "mail")
        try:
            commands = platform.deliver_mail(mail, routing_hint, None, callback)
        except KdsKeyRequiredError:
            answer = self._fetch_mail_key(mail, platform.enclave_instance_info)
            commands = platform.deliver_mail(mail, routing_hint, answer, callback)
        self._dispatch(commands, generation)

    def _fetch_mail_key(self, mail: bytes, instance: EnclaveInstanceInfo) -> bytes:
        """Ask the KDS for the key of the spec ``mail`` is sealed to, for ``instance``: the
        KDS answers only an enclave that meets the spec's policy, sealed to its key."""
        from sanctorum.kds.access import private_request  # only for mail to a KDS key
        from sanctorum.kds.spec import KeySpec

        if self._kds_fetch is None:
            raise KdsError(
                "the mail is sealed to a key from a key derivation service (a client of a "
                "cluster): start the host with kds=KdsConfiguration(url) (sanctorum host "
                "--kds-url URL) so it can fetch the key for its enclave"
            )
        key_spec = read_mail_header(mail).key_spec
        assert key_spec is not None  # the enclave asked for its key
        return self._kds_fetch(private_request(KeySpec.decode(key_spec), instance))

    @property
    def mock_enclave(self) -> Enclave:
        """The enclave object itself (mock mode only), for tests to inspect."""
        if not isinstance(self._platform, MockPlatform):
            raise EnclaveStateError("mock_enclave exists only in mock mode")
        return self._platform.enclave

    def _refuse_from_on_mail_commands(self) -> None:
        if self._storing == threading.get_ident():
            raise EnclaveStateError(
                "the enclave was called from inside on_mail_commands while a commit was being "
                "stored: its commit would have to be stored before the one in progress, so it "
                "would wait for ever; queue the work and call the enclave after "
                "on_mail_commands returns"
            )

    def _dispatch(self, commands: list[MailCommand], generation: int) -> None:
        """Keep the sealed state and pass ``commands`` on; those of a commit wait until the
        commit before it was passed on, so a journal is always stored in order."""
        stored = next((c for c in commands if isinstance(c, StoreSealedState)), None)
        if stored is None:
            if commands and self._on_mail_commands is not None:
                try:
                    self._on_mail_commands(commands)
                except BaseException as error:
                    # The instance took the mail these answer (its sequence numbers moved on),
                    # but the answers are lost: a resend would be refused as a replay, so the
                    # instance is done, and a new one makes its senders start afresh.
                    with self._commit_order:
                        self._failure = (
                            "the mail the enclave posted could not be stored (on_mail_commands "
                            f"raised {type(error).__name__}: {error}), so its answers were "
                            "lost: call restart() for an instance that its senders can reach "
                            "again"
                        )
                        self._state = _State.FAILED
                    raise
            return
        with self._commit_order:
            deadline = time.monotonic() + _COMMIT_WAIT
            while generation == self._generation and stored.commit_number > self._next_commit:
                if not self._commit_order.wait(deadline - time.monotonic()):
                    # Its predecessor never came (a caller died between the enclave's answer
                    # and here): nothing after it can be stored.
                    self._failure = (
                        f"commit {self._next_commit} never reached on_mail_commands, so the "
                        f"commits after it cannot be stored: call restart() to resume from the "
                        "last commit stored"
                    )
                    self._state = _State.FAILED
                    self._generation += 1
                    self._commit_order.notify_all()
            if generation != self._generation or stored.commit_number != self._next_commit:
                raise EnclaveCrashedError(
                    self._failure
                    if self._state is _State.FAILED
                    else "the enclave was restarted or closed before this call's mail and state "
                    "were stored; they were dropped (a new instance resumes from the state "
                    "before them): send the request again"
                )
            try:
                if self._state is _State.FAILED:  # it would follow a commit that was not stored
                    raise EnclaveCrashedError(self._failure)
                blobs, kept = self._sealed_blobs, len(self._sealed_blobs)
                if stored.snapshot:
                    self._sealed_blobs = [stored.blob]
                else:
                    blobs.append(stored.blob)
                if self._on_mail_commands is not None:
                    self._storing = threading.get_ident()
                    try:
                        self._on_mail_commands(commands)
                    except BaseException as error:
                        # Not stored, so it never happened for the outside world: the host
                        # forgets it, and the instance that made it (and builds on it) is done.
                        del blobs[kept:]
                        self._sealed_blobs = blobs
                        self._failure = (
                            f"the mail commands of commit {stored.commit_number} could not be "
                            f"stored (on_mail_commands raised {type(error).__name__}: {error}), "
                            "so that commit and the calls after it were dropped: call restart() "
                            "to resume from the last commit that was stored"
                        )
                        self._state = _State.FAILED
                        raise
                    finally:
                        self._storing = None
            finally:
                self._next_commit += 1
                self._commit_order.notify_all()

    def _require_started(self) -> None:
        if self._state is _State.FAILED:
            raise EnclaveCrashedError(self._failure)
        if self._state is not _State.STARTED:
            raise EnclaveStateError(
                "the enclave host is "
                + ("closed" if self._state is _State.CLOSED else "not started: call start() first")
            )


def _as_blobs(sealed_state: Sequence[bytes] | bytes | None) -> tuple[bytes, ...] | None:
    """``start``'s sealed state as a tuple of blobs; None if there is none."""
    if sealed_state is None:
        return None
    if isinstance(sealed_state, (bytes, bytearray, memoryview)):
        return (bytes(sealed_state),)
    blobs = tuple(_as_bytes(blob, "each blob of sealed_state") for blob in sealed_state)
    return blobs or None


def _as_bytes(data: object, what: str) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{what} must be bytes, not {type(data).__name__}")
    return bytes(data)


def _discover() -> type[Enclave] | Path:
    """The single bundle near the current directory, or the single Enclave subclass loaded."""
    here = Path.cwd()
    bundles = sorted({*here.glob("*.enclave"), *(here / "build").glob("*.enclave")})
    if len(bundles) == 1:
        return bundles[0]
    if len(bundles) > 1:
        raise EnclaveLoadError(
            "several enclave bundles found; pass one to EnclaveHost.load(): "
            + ", ".join(str(path) for path in bundles)
        )
    classes: list[type[Enclave]] = []
    pending = list(Enclave.__subclasses__())
    while pending:
        candidate = pending.pop()
        pending.extend(candidate.__subclasses__())
        if not candidate.__module__.startswith("sanctorum."):
            classes.append(candidate)
    if len(classes) == 1:
        return classes[0]
    if not classes:
        raise EnclaveLoadError(
            "no enclave found: no .enclave bundle in the current directory or build/, and no "
            "Enclave subclass imported; pass a bundle path or a class to EnclaveHost.load()"
        )
    names = sorted(f"{c.__module__}.{c.__qualname__}" for c in classes)
    raise EnclaveLoadError(
        "several Enclave subclasses found; pass one to EnclaveHost.load(): " + ", ".join(names)
    )
