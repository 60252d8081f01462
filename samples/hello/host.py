"""The hello host: loads the enclave and serves it to in-process clients."""

from __future__ import annotations

from hello_enclave import ReverseEnclave

from sanctorum import EnclaveHost


def start_host() -> EnclaveHost:
    """A started host running :class:`ReverseEnclave` in mock mode."""
    return EnclaveHost.load(ReverseEnclave, mode="mock").start()
