"""The client side: EnclaveClient and its transports. Imports no host or server code.

``WebTransport`` / ``AsyncWebTransport`` (``sanctorum.client.web``) load ``httpx`` when used.
"""

from sanctorum.client.client import AsyncEnclaveClient, ClientCore, EnclaveClient
from sanctorum.client.transport import AsyncEnclaveTransport, EnclaveTransport, InProcessTransport

__all__ = [
    "AsyncEnclaveClient",
    "AsyncEnclaveTransport",
    "ClientCore",
    "EnclaveClient",
    "EnclaveTransport",
    "InProcessTransport",
]
