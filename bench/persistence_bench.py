"""Persistence next to honest floors, measured in the same rounds (issue 12).

:func:`report`, the persistent map. For maps of 1k, 10k, 100k and 1M entries (100-byte values):
one ``call_enclave`` in mock mode (so the figure is the commit, not the process boundary) that
changes one key, against the floor *sealing the changed bytes*: one AES-GCM over a record that
holds the changed key, its new value and a fresh commit id — what a store that writes only
what changed must do at least. Both draw the new value from ``os.urandom``. Such a commit is a
journal record; every so often (once the records since the last snapshot hold as many bytes as
it does) a commit is a snapshot of the whole map instead, timed apart ("snapshot": the latency
of that one commit) and spread over the commits between snapshots ("amortised"). The goal,
"flat in map size: at 1M within 2x of at 1k", is judged on the amortised figure. Restart
(``EnclaveHost.restart``: the snapshot and the records after it replayed, mock mode) is timed
in the same rounds, for information. The 1M map is filled by one call that writes every key.

:func:`filesystem_report`, the persistent filesystem: a 64 MiB file written (1 MiB at a time)
and read back, against the floor any correct sealed, sector-addressable store must pay: per
64 KiB sector, AES-GCM with a fresh random nonce and the sector number as associated data, and
a positional write (``os.pwritev`` of nonce and ciphertext) or read (``os.pread``) of one host
file. The write figure includes the commit that makes it durable (directory tree, superblock,
``fdatasync``), so the floor ends its write with an ``fdatasync`` of its file too; the commit
alone is printed beside. Goal: at least 50% of the floor's speed (ratio = floor time / ours).

Every candidate runs with its floor in the same rounds, the order rotating from round to round,
after a warm-up (the calibration of the batch sizes); figures are wall-clock seconds, min and
median of the rounds, and ratios are medians of the per-round ratios (noise common to a round
cancels). Each report prints its figures and returns them as data (:mod:`results`).
"""

from __future__ import annotations

import os
import statistics
import struct
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from results import Figure, Report
from timing import paired_ratio

from sanctorum import Enclave, EnclaveHost
from sanctorum.enclave import runtime as runtime_module
from sanctorum.enclave.filesystem import (
    SECTOR_SIZE,
    SLOT_SIZE,
    EnclaveFileSystem,
    persistent_volume,
)
from sanctorum.mail.private_header import COMMIT_ID_SIZE

BENCH = "persistence"
SIZES = (1_000, 10_000, 100_000, 1_000_000)
VALUE_SIZE = 100
ROUNDS = 7
BATCH_SECONDS = 0.02  # each candidate's batch in a round lasts about this long (at least 1 call)
FLAT_TARGET = 2.0  # commit at the largest map within 2x of at the smallest
CHANGED_KEY = "key-0000000"


def _label(size: int) -> str:
    return f"{size // 1_000_000}M" if size >= 1_000_000 else f"{size // 1_000}k"


class _Store(Enclave):
    persistent_map_size = 1 << 30

    def receive_from_untrusted_host(self, data: bytes) -> bytes | None:
        count = int(data)
        persistent_map = self.persistent_map
        if count:  # fill the map in one call
            for index in range(count):
                persistent_map[f"key-{index:07d}"] = os.urandom(VALUE_SIZE)
        else:  # change one key
            persistent_map[CHANGED_KEY] = os.urandom(VALUE_SIZE)
        return None


def _batch(function: Callable[[], object], seconds: float = BATCH_SECONDS) -> int:
    """How many calls make a batch of about ``seconds``; the calls it times warm up."""
    number, elapsed = 1, 0.0
    while True:
        started = time.perf_counter()
        for _ in range(number):
            function()
        elapsed = time.perf_counter() - started
        if elapsed >= min(seconds, 0.005) or number >= 1 << 20:
            return max(1, round(seconds * number / elapsed))
        number *= 2


def _rounds(
    candidates: Mapping[str, tuple[Callable[[], object], int]], rounds: int
) -> dict[str, list[float]]:
    """Wall seconds per call of each candidate (function, batch), one figure per round; in each
    round every candidate runs its batch, in an order that rotates from round to round. (Like
    ``timing.interleaved``, with a batch per candidate: a floor of microseconds beside a commit
    of a second.)"""
    names = list(candidates)
    times: dict[str, list[float]] = {name: [] for name in names}
    for number in range(rounds):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            function, batch = candidates[name]
            started = time.perf_counter()
            for _ in range(batch):
                function()
            times[name].append((time.perf_counter() - started) / batch)
    return times


def _seal_changed_bytes() -> Callable[[], bytes]:
    """The map's floor: seal one record holding the changed key and value and a commit id."""
    aead = AESGCM(os.urandom(32))
    key = CHANGED_KEY.encode()
    prefix = struct.pack(">H", len(key)) + key + struct.pack(">I", VALUE_SIZE)

    def seal() -> bytes:
        record = os.urandom(COMMIT_ID_SIZE) + prefix + os.urandom(VALUE_SIZE)
        return aead.encrypt(os.urandom(12), record, None)

    return seal


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}" if seconds < 0.01 else f"{seconds * 1e3:.1f}"


def report() -> Report:
    """Print and return the map's commit after changing one key, its floor, and restart."""
    print(
        f"Persistent map: commit after changing one key (mock mode) vs sealing the changed bytes, "
        f"snapshots and restart; {ROUNDS} interleaved rounds, ms min / median, ratio = median "
        "per-round commit / floor"
    )
    result = Report()
    amortised: dict[int, float] = {}
    for size in SIZES:
        label = _label(size)
        with EnclaveHost.load(_Store).start(on_mail_commands=lambda commands: None) as host:
            host.call_enclave(str(size).encode())  # fill: the first commit, a snapshot

            def commit(host: EnclaveHost = host) -> None:
                host.call_enclave(b"0")

            def snapshot(host: EnclaveHost = host) -> None:
                # The commit that compacts the journal (a sharp tool: the bench makes it due).
                host._platform.runtime._journal_bytes = 1 << 62  # type: ignore[attr-defined]
                host.call_enclave(b"0")

            def restart(host: EnclaveHost = host) -> None:
                host.restart()

            floor = _seal_changed_bytes()
            candidates = {
                name: (function, _batch(function))
                for name, function in (
                    ("commit", commit),
                    ("floor", floor),
                    ("snapshot", snapshot),
                    ("restart", restart),
                )
            }
            times = _rounds(candidates, ROUNDS)
            commit()
            state = host.sealed_state
            assert state is not None
            assert len(state) > 1
            snapshot_bytes, record_bytes = len(state[0]), len(state[-1])
        ours, sealed = times["commit"], times["floor"]
        snapshots, restarted = times["snapshot"], times["restart"]
        ratio = paired_ratio(ours, sealed)
        # A snapshot comes once the records since the last one hold as many bytes as it does.
        every = max(snapshot_bytes, runtime_module._MIN_JOURNAL_BYTES) / record_bytes
        amortised[size] = statistics.median(ours) + statistics.median(snapshots) / every
        result.add(
            Figure(
                BENCH,
                f"persistence/map/commit/{label}",
                statistics.median(ours),
                floor=statistics.median(sealed),
                ratio=ratio,
                ratio_of="value/floor",
                min=min(ours),
                rounds=ROUNDS,
            )
        )
        result.add(
            Figure(
                BENCH,
                f"persistence/map/commit-amortised/{label}",
                amortised[size],
                floor=statistics.median(sealed),
                ratio=amortised[size] / statistics.median(sealed),
                ratio_of="value/floor",
                rounds=ROUNDS,
            )
        )
        for name, figures in (("snapshot", snapshots), ("restart", restarted)):
            result.add(
                Figure(
                    BENCH,
                    f"persistence/map/{name}/{label}",
                    statistics.median(figures),
                    min=min(figures),
                    rounds=ROUNDS,
                )
            )
        amortised_ratio = amortised[size] / statistics.median(sealed)
        print(
            f"  {size:>9,} entries  commit {_ms(min(ours)):>7} / {_ms(statistics.median(ours)):>7}"
            f"   floor {min(sealed) * 1e3:.4f} / {statistics.median(sealed) * 1e3:.4f}"
            f"   {ratio:5.1f}x   restart {_ms(min(restarted)):>7} / "
            f"{_ms(statistics.median(restarted)):>7}\n"
            f"{'':20}snapshot {_ms(min(snapshots)):>7} / {_ms(statistics.median(snapshots)):>7}"
            f" every {every:,.0f} commits: amortised {_ms(amortised[size])} "
            f"({amortised_ratio:.1f}x the floor)"
        )
    smallest, largest = SIZES[0], SIZES[-1]
    growth = amortised[largest] / amortised[smallest]
    met = growth <= FLAT_TARGET
    goal = (
        f"flat in map size: commit (snapshots amortised) at {_label(largest)} within "
        f"{FLAT_TARGET:g}x of at {_label(smallest)}"
    )
    result.add(
        Figure(
            BENCH,
            "persistence/map/commit-flatness",
            amortised[largest],
            floor=amortised[smallest],
            ratio=growth,
            ratio_of="value/floor",
            goal=goal,
            met=met,
            rounds=ROUNDS,
        )
    )
    print(f"  {goal}: {growth:.2f}x  {'met' if met else 'MISSED'}")
    return result


FILE_SIZE = 64 << 20
CHUNK = 1 << 20
FS_ROUNDS = 9
FS_TARGET = 0.5
SECTORS = FILE_SIZE // SECTOR_SIZE


def filesystem_report() -> Report:
    """Print and return a 64 MiB write (with its commit) and read, against the floor."""
    data = memoryview(os.urandom(FILE_SIZE))
    aead = AESGCM(os.urandom(32))
    commits: list[float] = []
    with tempfile.TemporaryDirectory() as directory:
        # Room for two copies of the file: the committed one stays until the next commit.
        volume = persistent_volume(Path(directory) / "fs", 2 * FILE_SIZE + (1 << 20), None)
        volume.commit()
        fs = EnclaveFileSystem(volume, None)
        fd = os.open(Path(directory) / "floor", os.O_RDWR | os.O_CREAT, 0o600)
        try:

            def ours_write() -> None:
                with fs.open("/big", "wb") as file:
                    for start in range(0, FILE_SIZE, CHUNK):
                        file.write(data[start : start + CHUNK])
                started = time.perf_counter()
                volume.commit()  # as the end of the call does: the tree, the superblock, a flush
                commits.append(time.perf_counter() - started)

            def ours_read() -> None:
                with fs.open("/big", "rb") as file:
                    while file.read(CHUNK):
                        pass

            def floor_write() -> None:
                for sector in range(SECTORS):
                    nonce = os.urandom(12)
                    plain = data[sector * SECTOR_SIZE : (sector + 1) * SECTOR_SIZE]
                    sealed = aead.encrypt(nonce, plain, sector.to_bytes(8, "big"))
                    os.pwritev(fd, [nonce, sealed], sector * SLOT_SIZE)
                os.fdatasync(fd)

            def floor_read() -> None:
                for sector in range(SECTORS):
                    slot = memoryview(os.pread(fd, SLOT_SIZE, sector * SLOT_SIZE))
                    aead.decrypt(slot[:12], slot[12:], sector.to_bytes(8, "big"))

            # warm-up (writes come first: the reads need the files)
            candidates = {
                name: (function, 1)
                for name, function in (
                    ("ours write", ours_write),
                    ("floor write", floor_write),
                    ("ours read", ours_read),
                    ("floor read", floor_read),
                )
            }
            for function, _ in candidates.values():
                function()
            times = _rounds(candidates, FS_ROUNDS)
        finally:
            os.close(fd)
            fs.close()
    commits = commits[-FS_ROUNDS:]
    result = Report()
    mib = FILE_SIZE / (1 << 20)
    print(
        f"Persistent filesystem: 64 MiB sequential, 1 MiB at a time, vs per-sector AES-GCM and "
        f"pwritev/pread of one file; {FS_ROUNDS} interleaved rounds, ms min / median, "
        "ratio = median per-round floor time / ours"
    )
    goal = f"at least {FS_TARGET:.0%} of the floor's speed"
    for name, ours, floor in (
        ("write", times["ours write"], times["floor write"]),
        ("read", times["ours read"], times["floor read"]),
    ):
        share = paired_ratio(floor, ours)
        met = share >= FS_TARGET
        result.add(
            Figure(
                BENCH,
                f"persistence/filesystem/{name}-64MiB",
                statistics.median(ours),
                floor=statistics.median(floor),
                ratio=share,
                ratio_of="floor/value",
                goal=goal + (" (the write includes the commit)" if name == "write" else ""),
                met=met,
                min=min(ours),
                rounds=FS_ROUNDS,
            )
        )
        print(
            f"  {name:5}  ours {min(ours) * 1e3:6.1f} / {statistics.median(ours) * 1e3:6.1f} "
            f"({mib / statistics.median(ours):5.0f} MiB/s)   floor {min(floor) * 1e3:6.1f} / "
            f"{statistics.median(floor) * 1e3:6.1f} ({mib / statistics.median(floor):5.0f} MiB/s)"
            f"   {share:5.0%} of the floor  {'met' if met else 'MISSED'} (≥{FS_TARGET:.0%})"
        )
    result.add(
        Figure(
            BENCH,
            "persistence/filesystem/commit-after-64MiB-write",
            statistics.median(commits),
            min=min(commits),
            rounds=FS_ROUNDS,
        )
    )
    print(
        f"  of the write: the commit (tree, superblock, fdatasync of the host file) "
        f"{min(commits) * 1e3:.1f} / {statistics.median(commits) * 1e3:.1f} ms"
    )
    return result
