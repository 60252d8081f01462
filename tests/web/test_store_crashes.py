"""The web store's journal survives its process being killed at every step.

A child process runs an enclave whose commits go to a :class:`MailboxStore`, snapshots every
few commits, and kills itself (SIGKILL) just before the N-th SQL statement: mid-append,
mid-compaction, mid-commit, for every N in turn. Each time, an enclave started from what the
store kept must hold exactly the state of the last commit the store accepted — every commit
whose call returned, and nothing torn — and must go on committing from there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sanctorum import Enclave, EnclaveHost
from sanctorum.web.postgres_store import PostgresMailboxStore
from sanctorum.web.store import MailboxStore, SqliteMailboxStore

COMMITS = 12
_CHILD = textwrap.dedent(
    """
    import itertools, os, signal, sys
    from pathlib import Path
    from sanctorum.enclave import runtime
    from sanctorum.host import EnclaveHost
    from sanctorum.web.postgres_store import PostgresMailboxStore
    from sanctorum.web.store import SqliteMailboxStore
    from tests.web.test_store_crashes import Tally

    runtime._MIN_JOURNAL_BYTES = 3000  # a snapshot every three or four commits
    engine, location = sys.argv[1], sys.argv[2]
    kill_at, commits = int(sys.argv[3]), int(sys.argv[4])
    statements = itertools.count(1)

    def trace(*_: object) -> None:
        if next(statements) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    if engine == "sqlite":
        store = SqliteMailboxStore(Path(location))
        store._connection.set_trace_callback(trace)
    else:
        store = PostgresMailboxStore(location)
        execute = store.execute

        def traced(cursor, statement, parameters=()):
            trace()
            execute(cursor, statement, parameters)

        store.execute = traced
    host = EnclaveHost.load(Tally).start(
        sealed_state=store.sealed_state(),
        on_mail_commands=lambda commands: store.apply(commands, (b"key", b"attestation")),
    )
    for index in range(commits):
        host.call_enclave(str(index).encode())
        print(index, flush=True)  # this commit's call returned: the store has it
    """
)


class Tally(Enclave):
    """Commit ``i`` sets key ``k{i % 3}`` to ``i``, each in a record of one change."""

    persistent_map_size = 1 << 16

    def receive_from_untrusted_host(self, data: bytes) -> bytes | None:
        if data == b"dump":
            return json.dumps(
                {k: v.decode() for k, v in sorted(self.persistent_map.items())}
            ).encode()
        self.persistent_map[f"k{int(data) % 3}"] = data
        return None


def _model(commits: int) -> dict[str, str]:
    return {f"k{index % 3}": str(index) for index in range(commits)}


def _run(engine: str, location: str, kill_at: int, commits: int) -> tuple[int, int]:
    """Run the child until it is killed; (calls that returned, its exit status)."""
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, engine, location, str(kill_at), str(commits)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        timeout=60,
        check=False,
    )
    return len(child.stdout.split()), child.returncode


def test_every_kill_point_leaves_the_last_accepted_commit(
    store_engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    killed = 0
    for kill_at in range(1, 300):
        if store_engine == "sqlite":
            location = str(tmp_path / f"kill-{kill_at}.sqlite3")

            def reopen(location: str = location) -> MailboxStore:
                return SqliteMailboxStore(Path(location))
        else:
            location = request.getfixturevalue("postgres_server").new_database()

            def reopen(location: str = location) -> MailboxStore:
                return PostgresMailboxStore(location)

        returned, status = _run(store_engine, location, kill_at, COMMITS)
        if status == 0:  # every statement ran: the kill points are exhausted
            assert returned == COMMITS
            break
        assert status == -signal.SIGKILL
        killed += 1
        store = reopen()
        host = EnclaveHost.load(Tally).start(
            sealed_state=store.sealed_state(), on_mail_commands=store.apply
        )
        answer = host.call_enclave(b"dump")
        assert answer is not None
        held = json.loads(answer)
        # The store has every commit whose call returned, and at most the one in flight.
        assert held in (_model(returned), _model(returned + 1)), (kill_at, returned, held)
        # And the enclave goes on from there: a new commit, stored, survives another start.
        host.call_enclave(b"100")
        host.close()
        again = EnclaveHost.load(Tally).start(sealed_state=store.sealed_state())
        after = again.call_enclave(b"dump")
        assert after is not None
        assert json.loads(after)[f"k{100 % 3}"] == "100"
        again.close()
        store.close()
    else:
        pytest.fail("the child never ran to the end")
    assert killed > COMMITS * 3  # several kill points per commit, snapshots among them
