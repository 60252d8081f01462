"""Which partition a client's mail belongs to, and how many partitions a host should hold.

Pure functions, no I/O: the web hosts of one service (:mod:`sanctorum.web.cluster`) each call
them with what the database told them, and agree because the functions are the same.
"""

from __future__ import annotations

import hashlib
import math

MAX_PARTITIONS = 1024
"""The most partitions a service may have: each held partition is an enclave instance."""


def partition_of(routing_hint: str, partitions: int) -> int:
    """The partition of the client with ``routing_hint`` (its Correlation-ID): the same on every
    host, for every version of Python (a hash of the hint's UTF-8 bytes, not ``hash()``)."""
    digest = hashlib.sha256(routing_hint.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % partitions


def fair_share(partitions: int, live_hosts: int) -> int:
    """How many partitions one of ``live_hosts`` hosts should hold, so that together they hold
    them all and none holds more than one above another."""
    return math.ceil(partitions / max(live_hosts, 1))


def lease_plan(
    held: int, free: list[int], partitions: int, live_hosts: int, patience: int
) -> tuple[list[int], int]:
    """What a host that holds ``held`` partitions does this round: the ``free`` partitions to
    take (no holder, or one whose lease ran out or whose host is gone), and how many of its own
    to give up. It gives up partitions only after ``patience`` rounds above its share in a
    row (the caller counts them): hosts starting together see each other a round apart, and a
    partition that moves is an enclave restarted elsewhere."""
    share = fair_share(partitions, live_hosts)
    if held < share:
        return free[: share - held], 0
    if held > share and patience <= 0:
        return [], 1
    return [], 0
