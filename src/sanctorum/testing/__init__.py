"""Tools for testing enclaves and their clients.

:mod:`sanctorum.testing.hostile` plays a malicious host around a real :class:`EnclaveHost`:
it drops, duplicates, delays, reorders and replays mail, restarts the enclave from any sealed
state it has seen, and lies to clients. Nothing here is meant for production hosts.
"""

from sanctorum.testing.hostile import (
    LATEST,
    Delivery,
    DeliveryPlan,
    HeldMail,
    HostileHost,
    HostileTransport,
    PostedMail,
    QueuedMail,
    Restart,
)

__all__ = [
    "LATEST",
    "Delivery",
    "DeliveryPlan",
    "HeldMail",
    "HostileHost",
    "HostileTransport",
    "PostedMail",
    "QueuedMail",
    "Restart",
]
