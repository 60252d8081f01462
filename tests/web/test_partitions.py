"""Which partition a client belongs to, and how hosts share partitions out (pure logic)."""

from __future__ import annotations

import collections
import hashlib

import pytest

from sanctorum.web.partitions import fair_share, lease_plan, partition_of


def test_a_clients_partition_is_the_same_everywhere() -> None:
    # Fixed values: every host, every Python version, every release must agree on them.
    assert [partition_of(hint, 6) for hint in ("alice", "bob", "client-0", "")] == [
        int.from_bytes(hashlib.sha256(hint.encode()).digest()[:8], "big") % 6
        for hint in ("alice", "bob", "client-0", "")
    ]
    assert partition_of("anything", 1) == 0


def test_clients_spread_over_the_partitions() -> None:
    counts = collections.Counter(partition_of(f"client-{n}", 8) for n in range(8000))
    assert set(counts) == set(range(8))
    assert max(counts.values()) < 1.15 * min(counts.values())


@pytest.mark.parametrize(
    ("partitions", "hosts", "share"), [(6, 3, 2), (6, 4, 2), (7, 3, 3), (2, 3, 1), (5, 0, 5)]
)
def test_a_fair_share_covers_every_partition(partitions: int, hosts: int, share: int) -> None:
    assert fair_share(partitions, hosts) == share
    assert share * max(hosts, 1) >= partitions


def test_a_host_below_its_share_takes_free_partitions_up_to_it() -> None:
    assert lease_plan(held=0, free=[1, 4, 5], partitions=6, live_hosts=3, patience=4) == ([1, 4], 0)
    assert lease_plan(held=2, free=[1], partitions=6, live_hosts=3, patience=4) == ([], 0)


def test_a_host_above_its_share_gives_one_up_only_once_out_of_patience() -> None:
    assert lease_plan(held=6, free=[], partitions=6, live_hosts=3, patience=2) == ([], 0)
    assert lease_plan(held=6, free=[], partitions=6, live_hosts=3, patience=0) == ([], 1)
    # A dead host's partitions: the survivors' share grows, they take them.
    assert lease_plan(held=2, free=[0, 3], partitions=6, live_hosts=2, patience=4) == ([0], 0)
