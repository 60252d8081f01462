"""Run every benchmark: ``make bench``. Prints figures beside their floors, as ratios."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import boundary_bench
import conversation_bench
import dcap_bench
import mail_bench
import persistence_bench
import web_bench


def main() -> int:
    results = [mail_bench.report()]
    print()
    results.append(mail_bench.padding_report())
    print()
    results.append(boundary_bench.report())
    print()
    results.append(persistence_bench.report())
    print()
    results.append(persistence_bench.filesystem_report())
    print()
    results.append(web_bench.report())
    print()
    results.append(dcap_bench.report())
    print()
    results.append(conversation_bench.report())
    print()
    print("all targets met" if all(results) else "some targets missed (see MISSED above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
