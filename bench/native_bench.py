"""Native dependencies: what checking numpy's installed files against the bundle's record
costs, beside the least work any check must do, and what it adds to an enclave's start.

- check: ``check_installed`` of numpy's record vs the floor, reading and hashing the same files
  with ``hashlib.file_digest`` (nothing else: no metadata lookup, no size or type checks).
- start: ``EnclaveHost.start`` of a simulation enclave that imports numpy vs the floor, a bare
  ``python -I`` process that hashes the same files and imports numpy, both from a cold process.

Interleaved rounds after a warm-up; min and median; the ratio is the median of per-round ratios.
For information: no goal was set. Of a start's ~310 ms, ~70 ms is any simulation enclave's start,
~50 ms the check, and ~135 ms importing numpy, which the enclave compiles from the source it has
just hashed instead of loading the host's unmeasured .pyc files (~35 ms).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from results import Figure, Report
from timing import interleaved, paired_ratio

from sanctorum.build import build
from sanctorum.build.native import record_distribution
from sanctorum.enclave.native import check_installed
from sanctorum.host import EnclaveHost

ROUNDS = 7
START_ROUNDS = 5
ENCLAVE = """
import numpy as np
from sanctorum import Enclave

class NumpyEnclave(Enclave):
    def receive_from_untrusted_host(self, data: bytes) -> bytes:
        return str(np.frombuffer(data, dtype=np.float64).sum()).encode()
"""
TOML = """[enclave]
name = "numpy-bench"
entry = "numpy_bench_enclave:NumpyEnclave"
product_id = 1
revocation_level = 0
sources = ["numpy_bench_enclave.py"]
dependencies = ["numpy"]
"""
FLOOR_PROCESS = """
import hashlib, sys
for path in sys.argv[1:]:
    with open(path, "rb") as file:
        hashlib.file_digest(file, "sha256")
import numpy
"""


def report() -> Report:
    distribution = importlib.metadata.distribution("numpy")
    record = record_distribution(distribution)
    root = Path(str(distribution.locate_file("")))
    paths = [str(root / recorded.path) for recorded in record.files]
    size = sum(recorded.size for recorded in record.files)

    def ours() -> object:
        return check_installed([record])

    def floor() -> object:
        for path in paths:
            with open(path, "rb") as file:
                hashlib.file_digest(file, "sha256")
        return None

    times = interleaved({"ours": ours, "floor": floor}, rounds=ROUNDS, batch=1)
    check, check_floor = times["ours"][0], times["floor"][0]
    check_ratio = paired_ratio(check, check_floor)
    print(
        f"Native dependencies: numpy {record.version}, {len(paths)} files, {size / 1e6:.0f} MB; "
        f"{ROUNDS} interleaved rounds, ms min / median"
    )
    print(
        f"  check      {min(check) * 1e3:7.1f} / {statistics.median(check) * 1e3:7.1f}   hashing "
        f"alone {min(check_floor) * 1e3:7.1f} / {statistics.median(check_floor) * 1e3:7.1f}   "
        f"{check_ratio:5.2f}x"
    )
    with tempfile.TemporaryDirectory(prefix="sanctorum-native-bench-") as scratch:
        project = Path(scratch)
        (project / "numpy_bench_enclave.py").write_text(ENCLAVE)
        (project / "enclave.toml").write_text(TOML)
        bundle = build(project).path

        def start() -> object:
            host = EnclaveHost.load(bundle, mode="simulation")
            host.start()
            host.close()
            return None

        def bare() -> object:
            command = [sys.executable, "-I", "-c", FLOOR_PROCESS, *paths]
            return subprocess.run(command, check=True)

        starts = interleaved({"start": start, "bare": bare}, rounds=START_ROUNDS, batch=1)
    start_times, bare_times = starts["start"][0], starts["bare"][0]
    start_ratio = paired_ratio(start_times, bare_times)
    print(
        f"  start      {min(start_times) * 1e3:7.1f} / {statistics.median(start_times) * 1e3:7.1f}"
        f"   hash + import {min(bare_times) * 1e3:7.1f} / "
        f"{statistics.median(bare_times) * 1e3:7.1f}   {start_ratio:5.2f}x"
    )
    result = Report()
    result.add(
        Figure(
            "native",
            "native/check-numpy",
            statistics.median(check),
            floor=statistics.median(check_floor),
            ratio=check_ratio,
            ratio_of="value/floor",
            min=min(check),
            rounds=ROUNDS,
        )
    )
    result.add(
        Figure(
            "native",
            "native/start-numpy-enclave",
            statistics.median(start_times),
            floor=statistics.median(bare_times),
            ratio=start_ratio,
            ratio_of="value/floor",
            min=min(start_times),
            rounds=START_ROUNDS,
        )
    )
    return result


if __name__ == "__main__":
    report()
