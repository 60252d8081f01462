"""The key derivation service's enclave (its logic: sanctorum.kds.enclave)."""

from sanctorum.kds.enclave import KdsEnclave


class Kds(KdsEnclave):
    """Derives keys for key specs from master keys that never leave it."""
