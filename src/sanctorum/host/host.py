"""EnclaveHost: loads an enclave, starts it, and passes calls and mail to it."""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from types import TracebackType

from sanctorum.attestation.instance_info import EnclaveInstanceInfo
from sanctorum.attestation.mock import MockConfiguration
from sanctorum.common.commands import MailCommand
from sanctorum.common.errors import EnclaveLoadError, EnclaveStateError
from sanctorum.common.mode import EnclaveMode
from sanctorum.enclave.base import Enclave
from sanctorum.host.mailbox import InMemoryMailbox
from sanctorum.host.platform import EnclavePlatform, MockPlatform

MailCommandsCallback = Callable[[list[MailCommand]], None]
HostCallback = Callable[[bytes], bytes | None]


class _State(enum.Enum):
    LOADED = "loaded"
    STARTED = "started"
    CLOSED = "closed"


class EnclaveHost:
    """The untrusted side of an enclave: loads it, starts it, and talks to it.

    Use as a context manager, or call :meth:`close`::

        with EnclaveHost.load(MyEnclave) as host:
            host.start()
            host.call_enclave(b"hello")
    """

    def __init__(self, platform: EnclavePlatform, mode: EnclaveMode) -> None:
        """Use :meth:`load`."""
        self._platform = platform
        self._mode = mode
        self._state = _State.LOADED
        self._state_lock = threading.Lock()
        self._on_mail_commands: MailCommandsCallback | None = None
        self.mailbox: InMemoryMailbox | None = None
        """Where posted mail goes when :meth:`start` was given no ``on_mail_commands``."""

    @classmethod
    def load(
        cls,
        enclave: type[Enclave],
        mode: EnclaveMode | str = EnclaveMode.MOCK,
        mock_config: MockConfiguration | None = None,
    ) -> EnclaveHost:
        """Load ``enclave`` (an :class:`Enclave` subclass) in ``mode``; :meth:`start` runs it.

        ``mock_config`` sets what a mock enclave claims to be (code hash, signer, product id,
        revocation level, TCB level).
        """
        try:
            mode = EnclaveMode.parse(mode)
        except ValueError as error:
            raise EnclaveLoadError(str(error)) from None
        if not (isinstance(enclave, type) and issubclass(enclave, Enclave)):
            raise EnclaveLoadError(
                f"{enclave!r} is not an Enclave subclass: pass the class (not an instance)"
            )
        if mode is not EnclaveMode.MOCK:
            raise EnclaveLoadError(
                f"{mode.value} mode runs an enclave from a signed bundle, which this version "
                "cannot load yet; use mode='mock' to run the class in this process"
            )
        if mock_config is not None and not isinstance(mock_config, MockConfiguration):
            raise EnclaveLoadError("mock_config must be a MockConfiguration")
        return cls(MockPlatform(enclave, mock_config), mode)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def enclave_mode(self) -> EnclaveMode:
        return self._mode

    def start(self, on_mail_commands: MailCommandsCallback | None = None) -> EnclaveHost:
        """Start the enclave (its ``on_startup`` runs now).

        ``on_mail_commands`` receives, after each call, the list of mail commands the enclave
        made; persist and route them. Without it, posted mail is queued in :attr:`mailbox`.
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
            self._platform.start()
            self._state = _State.STARTED
        return self

    def close(self) -> None:
        """Shut the enclave down (its ``on_shutdown`` runs). Closing twice is harmless."""
        with self._state_lock:
            if self._state is _State.CLOSED:
                return
            self._state = _State.CLOSED
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
        return self._platform.update_attestation()

    def call_enclave(self, data: bytes, callback: HostCallback | None = None) -> bytes | None:
        """Pass ``data`` to the enclave's ``receive_from_untrusted_host``; returns its answer.

        ``callback`` answers the enclave's ``call_untrusted_host`` during this call. Raises
        :class:`EnclaveCallError` if the enclave's code raised.
        """
        self._require_started()
        reply, commands = self._platform.call_enclave(_as_bytes(data, "data"), callback)
        self._dispatch(commands)
        return reply

    def deliver_mail(self, mail: bytes, routing_hint: str | None = None) -> None:
        """Deliver a client's encrypted mail; ``routing_hint`` says where replies go.

        Raises :class:`MailDecryptionError`, :class:`MailFormatError` or
        :class:`MailSequenceError` if the enclave rejects the mail (its state is unchanged),
        or :class:`EnclaveCallError` if its ``receive_mail`` raised.
        """
        self._require_started()
        if routing_hint is not None and not isinstance(routing_hint, str):
            raise TypeError("routing_hint must be a string or None")
        self._dispatch(self._platform.deliver_mail(_as_bytes(mail, "mail"), routing_hint))

    @property
    def mock_enclave(self) -> Enclave:
        """The enclave object itself (mock mode only), for tests to inspect."""
        if not isinstance(self._platform, MockPlatform):
            raise EnclaveStateError("mock_enclave exists only in mock mode")
        return self._platform.enclave

    def _dispatch(self, commands: list[MailCommand]) -> None:
        if commands and self._on_mail_commands is not None:
            self._on_mail_commands(commands)

    def _require_started(self) -> None:
        if self._state is not _State.STARTED:
            raise EnclaveStateError(
                "the enclave host is "
                + ("closed" if self._state is _State.CLOSED else "not started: call start() first")
            )


def _as_bytes(data: object, what: str) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{what} must be bytes, not {type(data).__name__}")
    return bytes(data)
