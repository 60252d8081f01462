"""The client side: EnclaveClient and its transports. Imports no host or server code."""

from sanctorum.client.client import EnclaveClient
from sanctorum.client.transport import EnclaveTransport, InProcessTransport

__all__ = ["EnclaveClient", "EnclaveTransport", "InProcessTransport"]
