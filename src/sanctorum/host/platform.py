"""Platforms: how a host runs an enclave. Mock runs it in this process."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from sanctorum.attestation.instance_info import EnclaveInstanceInfo
from sanctorum.attestation.mock import MockConfiguration, MockEvidenceProvider
from sanctorum.common.commands import HostCallback, MailCommand
from sanctorum.common.errors import EnclaveLoadError, EnclaveStateError, KdsError
from sanctorum.enclave.base import Enclave
from sanctorum.enclave.runtime import EnclaveRuntime
from sanctorum.enclave.sealing import MOCK_PLATFORM_SECRET, EnclaveIdentity, SecurityVersions
from sanctorum.host.mock_settings import MockSettings, mock_settings


class EnclavePlatform(Protocol):
    """What :class:`EnclaveHost` needs from a platform."""

    @property
    def enclave_instance_info(self) -> EnclaveInstanceInfo: ...

    def start(
        self,
        sealed_state: Sequence[bytes] | None,
        filesystem_file: Path | None,
        kds_fetch: Callable[[bytes], bytes] | None = None,
    ) -> tuple[int, list[MailCommand]]:
        """Start the enclave; the number of the commit it resumed from (0: none) and the mail
        commands its ``on_startup`` made. ``kds_fetch`` carries its key request to a KDS."""
        ...

    def call_enclave(
        self, data: bytes, callback: HostCallback | None
    ) -> tuple[bytes | None, list[MailCommand]]: ...

    def deliver_mail(
        self,
        mail: bytes,
        routing_hint: str | None,
        kds_answer: bytes | None = None,
        callback: HostCallback | None = None,
    ) -> list[MailCommand]:
        """``kds_answer``: the KDS's answer with the key of the mail's key spec, for an enclave
        that asked for it (:class:`KdsKeyRequiredError`); ``callback`` serves the enclave's
        ``call_untrusted_host`` meanwhile."""
        ...

    def update_attestation(self) -> EnclaveInstanceInfo: ...

    def close(self) -> None: ...


def require_kds(fetch: Callable[[bytes], bytes] | None) -> Callable[[bytes], bytes]:
    """``fetch``, or :class:`KdsError` saying how to give the enclave a KDS."""
    if fetch is None:
        raise KdsError(
            "this enclave's enclave.toml has a [kds] table: its persistent state is sealed "
            "with a key from a key derivation service; start it with "
            "kds=KdsConfiguration(url) (sanctorum host --kds-url URL)"
        )
    return fetch


def refuse_thread_safe_persistence(thread_safe: bool, persistence: bool) -> None:
    """Thread-safe enclaves cannot have a persistent map or filesystem (refused at load)."""
    if thread_safe and persistence:
        raise EnclaveLoadError(
            "a thread-safe enclave cannot have a persistent map or filesystem: changes are "
            "committed per call, and concurrent calls would commit each other's half-done "
            "changes; make the enclave single-threaded or drop them"
        )


class MockPlatform:
    """Runs the enclave object in the host's own process: plain calls, no protection.

    Its settings come from the ``enclave.toml`` that names the class, else from the class's
    attributes (:func:`~sanctorum.host.mock_settings.mock_settings`); ``settings`` gives them
    ready-made.
    """

    def __init__(
        self,
        enclave_class: type[Enclave],
        config: MockConfiguration | None,
        settings: MockSettings | None = None,
    ) -> None:
        self.settings = settings or mock_settings(enclave_class, config)
        refuse_thread_safe_persistence(
            self.settings.thread_safe,
            self.settings.persistent_map_size is not None or bool(self.settings.filesystem_size),
        )
        try:
            self.enclave = enclave_class()
        except Exception as error:
            raise EnclaveLoadError(
                f"could not create {enclave_class.__qualname__}: its __init__ raised "
                f"{type(error).__name__}: {error} (an enclave class must be constructible "
                "with no arguments)"
            ) from error
        self._provider = MockEvidenceProvider.for_class(
            f"{enclave_class.__module__}.{enclave_class.__qualname__}", self.settings.mock_config
        )
        self._runtime: EnclaveRuntime | None = None
        self.call_enclave: Callable[
            [bytes, HostCallback | None], tuple[bytes | None, list[MailCommand]]
        ] = self._not_started

    @staticmethod
    def _not_started(
        data: bytes, callback: HostCallback | None
    ) -> tuple[bytes | None, list[MailCommand]]:
        raise EnclaveStateError("the enclave has not been started")

    @property
    def runtime(self) -> EnclaveRuntime:
        assert self._runtime is not None
        return self._runtime

    @property
    def enclave_instance_info(self) -> EnclaveInstanceInfo:
        return self.runtime.instance_info

    def start(
        self,
        sealed_state: Sequence[bytes] | None,
        filesystem_file: Path | None,
        kds_fetch: Callable[[bytes], bytes] | None = None,
    ) -> tuple[int, list[MailCommand]]:
        provider = self._provider
        kds = None
        if self.settings.kds is not None:
            from sanctorum.kds.access import KdsAccess  # only with a [kds] table

            kds = KdsAccess(self.settings.kds, lambda body: require_kds(kds_fetch)(body))
        self._runtime = EnclaveRuntime(
            self.enclave,
            provider,
            identity=EnclaveIdentity(
                provider.code_hash,
                provider.signer_hash,
                provider.product_id,
                SecurityVersions(provider.revocation_level, provider.tcb_level),
            ),
            platform_secret=MOCK_PLATFORM_SECRET,
            thread_safe=self.settings.thread_safe,
            persistent_map_size=self.settings.persistent_map_size,
            sealed_state=sealed_state,
            filesystem_size=self.settings.filesystem_size,
            memory_filesystem_size=self.settings.memory_filesystem_size,
            filesystem_file=filesystem_file,
            kds=kds,
        )
        # Calls go straight to the runtime: mock mode's overhead over a method call is measured.
        self.call_enclave = self._runtime.call
        return self._runtime.restored_commit, self._runtime.start()

    def deliver_mail(
        self,
        mail: bytes,
        routing_hint: str | None,
        kds_answer: bytes | None = None,
        callback: HostCallback | None = None,
    ) -> list[MailCommand]:
        return self.runtime.deliver_mail(mail, routing_hint, kds_answer, callback)

    def update_attestation(self) -> EnclaveInstanceInfo:
        return self.runtime.update_attestation()

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()
