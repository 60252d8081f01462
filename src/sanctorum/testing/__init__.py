"""Tools for testing enclaves and their clients.

:mod:`sanctorum.testing.hostile` plays a malicious host around a real :class:`EnclaveHost`:
it drops, duplicates, delays, reorders and replays mail, restarts the enclave from any sealed
state it has seen, and lies to clients. :mod:`sanctorum.testing.pytest_plugin` is the pytest
plugin (registered as ``sanctorum``) that builds the enclave project under test and hands tests
a host and clients in each ``--enclave-mode``. Nothing here is meant for production hosts.

Names are imported lazily, so loading the pytest plugin does not load the host's code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below are imported lazily by __getattr__
    from sanctorum.testing.hostile import (
        LATEST as LATEST,
    )
    from sanctorum.testing.hostile import (
        Delivery as Delivery,
    )
    from sanctorum.testing.hostile import (
        DeliveryPlan as DeliveryPlan,
    )
    from sanctorum.testing.hostile import (
        HeldMail as HeldMail,
    )
    from sanctorum.testing.hostile import (
        HostileHost as HostileHost,
    )
    from sanctorum.testing.hostile import (
        HostileTransport as HostileTransport,
    )
    from sanctorum.testing.hostile import (
        PostedMail as PostedMail,
    )
    from sanctorum.testing.hostile import (
        QueuedMail as QueuedMail,
    )
    from sanctorum.testing.hostile import (
        Restart as Restart,
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


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'sanctorum.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module("sanctorum.testing.hostile"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
