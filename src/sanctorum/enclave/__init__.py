"""The enclave side: the Enclave base class and the runtime that hosts it."""

from sanctorum.enclave.base import Enclave
from sanctorum.enclave.runtime import EnclaveRuntime

__all__ = ["Enclave", "EnclaveRuntime"]
