"""Platforms: how a host runs an enclave. Mock runs it in this process."""

from __future__ import annotations

from typing import Protocol

from sanctorum.attestation.instance_info import EnclaveInstanceInfo
from sanctorum.attestation.mock import MockConfiguration, MockEvidenceProvider
from sanctorum.common.commands import MailCommand
from sanctorum.common.errors import EnclaveLoadError
from sanctorum.enclave.base import Enclave
from sanctorum.enclave.runtime import EnclaveRuntime, HostCallback


class EnclavePlatform(Protocol):
    """What :class:`EnclaveHost` needs from a platform."""

    @property
    def enclave_instance_info(self) -> EnclaveInstanceInfo: ...

    def start(self) -> None: ...

    def call_enclave(
        self, data: bytes, callback: HostCallback | None
    ) -> tuple[bytes | None, list[MailCommand]]: ...

    def deliver_mail(self, mail: bytes, routing_hint: str | None) -> list[MailCommand]: ...

    def update_attestation(self) -> EnclaveInstanceInfo: ...

    def close(self) -> None: ...


class MockPlatform:
    """Runs the enclave object in the host's own process: plain calls, no protection."""

    def __init__(self, enclave_class: type[Enclave], config: MockConfiguration | None) -> None:
        try:
            self.enclave = enclave_class()
        except Exception as error:
            raise EnclaveLoadError(
                f"could not create {enclave_class.__qualname__}: its __init__ raised "
                f"{type(error).__name__}: {error} (an enclave class must be constructible "
                "with no arguments)"
            ) from error
        provider = MockEvidenceProvider.for_class(
            f"{enclave_class.__module__}.{enclave_class.__qualname__}", config
        )
        self.runtime = EnclaveRuntime(self.enclave, provider)
        # Calls go straight to the runtime: mock mode's overhead over a method call is measured.
        self.call_enclave = self.runtime.call

    @property
    def enclave_instance_info(self) -> EnclaveInstanceInfo:
        return self.runtime.instance_info

    def start(self) -> None:
        self.runtime.start()

    def deliver_mail(self, mail: bytes, routing_hint: str | None) -> list[MailCommand]:
        return self.runtime.deliver_mail(mail, routing_hint)

    def update_attestation(self) -> EnclaveInstanceInfo:
        return self.runtime.update_attestation()

    def close(self) -> None:
        self.runtime.close()
