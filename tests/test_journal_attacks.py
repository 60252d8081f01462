"""A hostile host against the sealed-state journal (issue 12): splicing, replaying and mixing
records, upgrades, an unbounded journal, the filesystem beside it, the host's commit-order
sequencer, the web store's table, and the child's LOAD frame.

Each test states what a safe design must do. A test that fails is a finding (see the report
that came with this file); none is skipped or marked as expected to fail.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanctorum import (
    Enclave,
    EnclaveClient,
    EnclaveCrashedError,
    EnclaveHost,
    EnclaveMail,
    EnclaveRollbackError,
    EnclaveStateError,
    FrameError,
    InProcessTransport,
    MailDecryptionError,
    MockConfiguration,
    NewerSealedStateError,
    PersistentMapFullError,
    SanctorumError,
    SealedStateJournalError,
)
from sanctorum.common.commands import HostCallback
from sanctorum.common.errors import FileSystemRollbackError
from sanctorum.common.frames import decode_load, encode_load
from sanctorum.enclave import runtime as runtime_module
from sanctorum.host import MailCommand, StoreSealedState
from sanctorum.web.store import SqliteMailboxStore
from tests.test_journal import HeldCall, Keeper

# -- enclaves ---------------------------------------------------------------------------------


class Ledger(Keeper):
    """Keeper's ``set K V``, ``delete K``, ``dump``; mail ``inc`` adds one to ``count`` and
    answers it."""

    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        count = int(self.persistent_map.get("count", b"0")) + 1
        self.persistent_map["count"] = str(count).encode()
        self.post_mail(self.post_office(mail).encrypt_mail(str(count).encode()), routing_hint)


class SmallLedger(Ledger):
    """A map of 4 KiB, to meet its limit."""

    persistent_map_size = 4096


class FilesAndMap(Enclave):
    """``write P=TEXT`` (a file), ``read P``, ``set K V`` (the map), ``dump`` (the map)."""

    persistent_map_size = 1 << 16
    filesystem_size = 1 << 20

    def receive_from_untrusted_host(self, data: bytes) -> bytes | None:
        command, _, argument = data.partition(b" ")
        if command == b"write":
            path, _, text = argument.decode().partition("=")
            self.filesystem.write_text(path, text)
        elif command == b"read":
            return self.filesystem.read_bytes(argument.decode())
        elif command == b"set":
            key, _, value = argument.partition(b" ")
            self.persistent_map[key.decode()] = value
        elif command == b"dump":
            return json.dumps(
                {key: value.decode() for key, value in sorted(self.persistent_map.items())}
            ).encode()
        return None


# -- helpers ----------------------------------------------------------------------------------


def _dump(host: EnclaveHost) -> dict[str, str]:
    answer = host.call_enclave(b"dump")
    assert answer is not None
    result: dict[str, str] = json.loads(answer)
    return result


def _blobs(host: EnclaveHost) -> tuple[bytes, ...]:
    state = host.sealed_state
    assert state is not None
    return state


@pytest.fixture
def small_journal() -> Iterator[None]:
    """Snapshots every few commits instead of every 64 KiB of records."""
    saved = runtime_module._MIN_JOURNAL_BYTES
    runtime_module._MIN_JOURNAL_BYTES = 4096
    yield
    runtime_module._MIN_JOURNAL_BYTES = saved


class Recorder:
    """An ``on_mail_commands`` that keeps every StoreSealedState, in the order it came."""

    def __init__(self) -> None:
        self.stored: list[StoreSealedState] = []

    def __call__(self, commands: list[MailCommand]) -> None:
        self.stored.extend(c for c in commands if isinstance(c, StoreSealedState))

    def chain_from(self, snapshot: StoreSealedState) -> tuple[bytes, ...]:
        """``snapshot`` and every record the host ever saw after it, snapshots left out."""
        after = [
            c.blob
            for c in self.stored
            if c.commit_number > snapshot.commit_number and not c.snapshot
        ]
        return (snapshot.blob, *after)


def _within(seconds: float, action: Callable[[], object]) -> bool:
    """Whether ``action`` returns (or raises) within ``seconds``, run on a daemon thread: a
    deadlocked action stays blocked there, and the test goes on."""
    done = threading.Event()

    def run() -> None:
        try:
            action()
        except BaseException:
            pass
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(seconds)


# == 1. the journal: splicing, replaying, mixing ==============================================


def test_a_forks_record_after_the_other_forks_snapshot_is_refused(small_journal: None) -> None:
    """Fork A runs until it writes a snapshot at commit n; fork B, from the same state, writes
    its own commit n+1 as a record. B's record after A's snapshot names B's commit n, not A's:
    refused, and A's journal still starts."""
    a = EnclaveHost.load(Ledger).start()
    a.call_enclave(b"set base 1")
    common = _blobs(a)
    keep_a = Recorder()
    a.close()
    a = EnclaveHost.load(Ledger).start(sealed_state=common, on_mail_commands=keep_a)
    index = 0
    while not any(c.snapshot for c in keep_a.stored):
        a.call_enclave(f"set a{index} {'x' * 500}".encode())
        index += 1
    snapshot_a = next(c for c in keep_a.stored if c.snapshot)
    b = EnclaveHost.load(Ledger).start(sealed_state=common)
    for number in range(index + 2):
        b.call_enclave(f"set b{number} y".encode())
    records_b = _blobs(b)[1:]
    # B's record numbered just after A's snapshot, and every other one of B's records.
    for record in records_b:
        with pytest.raises(SealedStateJournalError):
            EnclaveHost.load(Ledger).start(sealed_state=(snapshot_a.blob, record))
    assert "b0" not in _dump(EnclaveHost.load(Ledger).start(sealed_state=(snapshot_a.blob,)))
    a.close()
    b.close()


def test_an_old_snapshot_with_records_of_a_later_snapshot_is_refused(small_journal: None) -> None:
    """The host keeps every blob it ever got and passes the first snapshot with the records
    written after a later snapshot: the records follow that snapshot, not the old one's last
    record. Refused."""
    keep = Recorder()
    host = EnclaveHost.load(Ledger).start(on_mail_commands=keep)
    for index in range(40):
        host.call_enclave(f"set k{index % 5} {'v' * 400}{index}".encode())
    snapshots = [c for c in keep.stored if c.snapshot]
    assert len(snapshots) >= 3
    first, later = snapshots[0], snapshots[1]
    after_later = [
        c.blob for c in keep.stored if not c.snapshot and c.commit_number > later.commit_number
    ]
    with pytest.raises(SealedStateJournalError):
        EnclaveHost.load(Ledger).start(sealed_state=(first.blob, *after_later))
    # Every record ever seen after the first snapshot: refused where the later snapshot was.
    with pytest.raises(SealedStateJournalError, match="missing"):
        EnclaveHost.load(Ledger).start(sealed_state=keep.chain_from(first))
    host.close()


def test_the_longest_journal_a_host_can_replay_is_bounded() -> None:
    """DoS at start: the host cannot make a journal longer than the enclave's own snapshot
    policy allows (records hold at most max(snapshot, 64 KiB)), however many blobs it kept:
    from any snapshot, only the records before the next snapshot chain. And replaying the
    longest one is quick."""
    keep = Recorder()
    host = EnclaveHost.load(Ledger).start(on_mail_commands=keep)
    for index in range(400):
        host.call_enclave(f"set k{index % 3} {index}".encode())
    host.close()
    longest = 0
    for snapshot in (c for c in keep.stored if c.snapshot):
        chain = [snapshot.blob]
        for command in keep.stored:
            if command.commit_number <= snapshot.commit_number:
                continue
            if command.snapshot:
                break
            chain.append(command.blob)
        longest = max(longest, len(chain) - 1)
        began = time.perf_counter()
        EnclaveHost.load(Ledger).start(sealed_state=chain).close()
        assert time.perf_counter() - began < 1.0
        if len(chain) < len(keep.chain_from(snapshot)):
            with pytest.raises(SealedStateJournalError):
                EnclaveHost.load(Ledger).start(sealed_state=keep.chain_from(snapshot))
    assert 0 < longest <= runtime_module._MIN_JOURNAL_BYTES // 1024


def test_records_from_before_an_upgrade_do_not_mix_with_the_resealed_state() -> None:
    """v1 writes a journal; v2 (a raised revocation level) starts from it and reseals a
    snapshot at once. The host then runs the retired v1 from the old journal (commit 7 of
    another chain) and tries to mix: v1 records after v2's snapshot, v2 records after v1's
    journal, and v2's state to v1. All refused."""
    v1 = MockConfiguration(revocation_level=0)
    v2 = MockConfiguration(revocation_level=1)
    old = EnclaveHost.load(Ledger, mock_config=v1).start()
    for key in "abcde":
        old.call_enclave(f"set {key} 1".encode())
    journal_v1 = _blobs(old)
    assert len(journal_v1) == 5
    old.close()
    new = EnclaveHost.load(Ledger, mock_config=v2).start(sealed_state=journal_v1)
    assert len(_blobs(new)) == 1  # the reseal: a snapshot under v2's key
    new.call_enclave(b"set f 2")
    journal_v2 = _blobs(new)
    retired = EnclaveHost.load(Ledger, mock_config=v1).start(sealed_state=journal_v1)
    retired.call_enclave(b"set g 1")
    retired.call_enclave(b"set h 1")
    fork_v1 = _blobs(retired)[5:]
    for altered in (
        (journal_v2[0], *fork_v1),
        (*journal_v2, *fork_v1),
        (journal_v2[0], fork_v1[1]),
        (*journal_v1, journal_v2[1]),
        (*journal_v1, *fork_v1[:1], journal_v2[1]),
    ):
        with pytest.raises(SealedStateJournalError):
            EnclaveHost.load(Ledger, mock_config=v2).start(sealed_state=altered)
    with pytest.raises(NewerSealedStateError):
        EnclaveHost.load(Ledger, mock_config=v1).start(sealed_state=journal_v2)
    with pytest.raises(NewerSealedStateError):
        EnclaveHost.load(Ledger, mock_config=v1).start(sealed_state=(*journal_v1, journal_v2[1]))
    assert _dump(EnclaveHost.load(Ledger, mock_config=v2).start(sealed_state=journal_v2)) == {
        **{key: "1" for key in "abcde"},
        "f": "2",
    }
    new.close()
    retired.close()


def test_the_map_is_as_full_after_a_replay_as_before() -> None:
    """The host cannot forge map changes, but replayed records must count against the limit
    exactly as the commits did: a map filled to its limit by records is as full after a
    restart (the next byte is refused), and a deletion frees the same room."""
    host = EnclaveHost.load(SmallLedger).start()
    host.call_enclave(b"set pad " + b"p" * 100)  # the snapshot
    for index in range(6):  # records
        host.call_enclave(f"set k{index} {'v' * 400}".encode())
    runtime: Any = host.mock_enclave._runtime
    before = runtime._map.staged_size()
    host.restart()
    runtime = host.mock_enclave._runtime
    assert runtime._map.staged_size() == before
    room = SmallLedger.persistent_map_size - before - len("more") - 6  # an entry's overhead
    with pytest.raises(PersistentMapFullError):
        host.call_enclave(b"set more " + b"x" * (room + 1))
    host.call_enclave(b"set more " + b"x" * room)
    host.call_enclave(b"delete k0")
    host.call_enclave(b"set k9 " + b"v" * 400)
    with pytest.raises(PersistentMapFullError):
        host.call_enclave(b"set k10 v")
    host.close()


# == 2. rollback by a journal cut short, double application ===================================


def test_dropping_the_tail_cannot_make_the_enclave_apply_a_request_twice() -> None:
    """The host lets a request be applied (commit n+1), then drops that record and restarts
    the enclave from commit n. The request's mail was sealed to the old instance: the new one
    cannot open it, so the host cannot have it applied again; the client that heard of commit
    n+1 detects the rollback on its next mail. (As with the single blob before.)"""
    host = EnclaveHost.load(Ledger).start()
    delivered: list[bytes] = []
    deliver = host.deliver_mail

    def record(
        mail: bytes, routing_hint: str | None = None, callback: HostCallback | None = None
    ) -> None:
        delivered.append(mail)
        deliver(mail, routing_hint, callback)

    host.deliver_mail = record  # type: ignore[method-assign]
    client = EnclaveClient(f"C:{host.enclave_instance_info.code_hash} SEC:INSECURE")
    client.start(InProcessTransport(host))
    answer = client.send_mail(b"inc")
    assert answer is not None
    assert answer.body == b"1"
    before = _blobs(host)
    answer = client.send_mail(b"inc")
    assert answer is not None
    assert answer.body == b"2"
    host.sealed_state = before  # the host drops the record of the second request
    host.restart()
    with pytest.raises(MailDecryptionError):
        deliver(delivered[-1])
    assert _dump(host)["count"] == "1"
    with pytest.raises(EnclaveRollbackError):
        client.send_mail(b"inc")
    host.close()


# == 3. the filesystem beside the journal =====================================================


def test_the_filesystem_record_follows_the_replayed_journal(tmp_path: Path) -> None:
    """Records that change only the map carry the filesystem's record unchanged; a journal cut
    by one file commit meets a file one commit newer (accepted, by design: the host may not
    have stored the last state), by two is refused, and an older file is refused."""
    path = tmp_path / "files.bin"
    host = EnclaveHost.load(FilesAndMap).start(filesystem_file=path)
    host.call_enclave(b"write /a=1")
    host.call_enclave(b"set m 1")
    host.call_enclave(b"set m 2")
    after_maps = _blobs(host)
    old_file = tmp_path / "old.bin"
    shutil.copy(path, old_file)
    host.call_enclave(b"write /a=2")
    one_newer = _blobs(host)
    host.call_enclave(b"write /a=3")
    host.call_enclave(b"set m 3")
    latest = _blobs(host)
    host.close()
    assert len(latest) > 3
    again = EnclaveHost.load(FilesAndMap).start(sealed_state=latest, filesystem_file=path)
    assert again.call_enclave(b"read /a") == b"3"
    assert _dump(again) == {"m": "3"}
    again.close()
    again = EnclaveHost.load(FilesAndMap).start(sealed_state=one_newer, filesystem_file=path)
    assert again.call_enclave(b"read /a") == b"2"
    again.close()
    with pytest.raises(FileSystemRollbackError):
        EnclaveHost.load(FilesAndMap).start(sealed_state=after_maps, filesystem_file=path)
    shutil.copy(old_file, path)
    with pytest.raises(FileSystemRollbackError):
        EnclaveHost.load(FilesAndMap).start(sealed_state=latest, filesystem_file=path)


# == 4. the host's commit-order sequencer =====================================================


def test_commands_reach_the_host_once_each_in_commit_order_from_many_threads() -> None:
    order: list[int] = []
    lock = threading.Lock()

    def keep(commands: list[MailCommand]) -> None:
        for command in commands:
            if isinstance(command, StoreSealedState):
                with lock:
                    order.append(command.commit_number)
        time.sleep(0)

    host = EnclaveHost.load(Ledger).start(on_mail_commands=keep)

    def work(worker: int) -> None:
        for index in range(40):
            host.call_enclave(f"set w{worker} {index}".encode())

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert order == list(range(1, 8 * 40 + 1))
    host.restart()
    assert _dump(host) == {f"w{worker}": "39" for worker in range(8)}
    host.close()


def test_a_store_that_fails_once_leaves_a_journal_the_enclave_can_start_from(
    tmp_path: Path,
) -> None:
    """The web host's on_mail_commands (MailboxStore.apply) fails for commit 2 (disk full,
    database locked): the call raises, but the enclave has committed it in memory. The next
    call (which the host may refuse) must not store commit 3 after the hole: after the host
    process restarts, the store's journal must still start the enclave."""
    store = SqliteMailboxStore(tmp_path / "mailbox.sqlite3")
    failing = [False]

    def keep(commands: list[MailCommand]) -> None:
        if failing[0]:
            failing[0] = False
            raise sqlite3.OperationalError("database or disk is full")
        store.apply(commands)

    host = EnclaveHost.load(Ledger).start(on_mail_commands=keep)
    host.call_enclave(b"set a 1")
    failing[0] = True
    with pytest.raises(sqlite3.OperationalError):
        host.call_enclave(b"set b 2")
    with contextlib.suppress(EnclaveCrashedError):  # refusing to go on keeps the store whole
        host.call_enclave(b"set c 3")
    host.close()
    stored = store.sealed_state()
    store.close()
    restarted = EnclaveHost.load(Ledger).start(sealed_state=stored)  # the host process restarts
    assert _dump(restarted)["a"] == "1"
    restarted.close()


def test_after_a_failed_store_the_hosts_memory_and_its_store_agree(tmp_path: Path) -> None:
    """Same failure: what EnclaveHost.sealed_state holds (and restart() uses) must be what
    the callback stored, not a commit the callback refused."""
    kept: list[StoreSealedState] = []
    failing = [False]

    def keep(commands: list[MailCommand]) -> None:
        if failing[0]:
            failing[0] = False
            raise OSError("no space left on device")
        kept.extend(c for c in commands if isinstance(c, StoreSealedState))

    host = EnclaveHost.load(Ledger).start(on_mail_commands=keep)
    host.call_enclave(b"set a 1")
    failing[0] = True
    with pytest.raises(OSError, match="no space left"):
        host.call_enclave(b"set b 2")
    assert host.sealed_state == tuple(c.blob for c in kept)
    host.close()


def test_a_call_from_on_mail_commands_does_not_deadlock_the_host() -> None:
    """An on_mail_commands that calls the enclave again (routing mail back to it, a timer
    tick) from the thread it runs on: the inner commit would wait for the outer one, which
    waits for the callback. The inner call is refused at once, before it reaches the enclave,
    with what to do; the outer commit then counts as not stored, and a restart goes on."""
    host = EnclaveHost.load(Ledger)
    inner: list[BaseException] = []

    def route(commands: list[MailCommand]) -> None:
        if not inner and any(isinstance(c, StoreSealedState) for c in commands):
            try:
                host.call_enclave(b"set echoed 1")
            except EnclaveStateError as error:
                inner.append(error)
                raise

    host.start(on_mail_commands=route)
    outcome: list[BaseException] = []

    def outer() -> None:
        try:
            host.call_enclave(b"set a 1")
        except BaseException as error:
            outcome.append(error)

    assert _within(2, outer), "the host deadlocked"
    assert len(inner) == 1
    assert "from inside on_mail_commands" in str(inner[0])
    assert outcome == inner  # the callback's error is the call's
    host.restart()
    dump = host.call_enclave(b"dump")
    assert dump is not None
    assert json.loads(dump) == {}  # neither the outer commit (not stored) nor the inner call
    host.close()


def test_a_call_that_races_a_restart_does_not_wedge_the_host() -> None:
    """A call takes the running instance, is preempted while the host restarts the enclave
    (a web host does so in a background thread after a crash), then goes on: it reaches the
    instance it took, now closed, never the new one under the old one's name, so it fails
    and every later commit of the new instance still reaches the host."""
    host = EnclaveHost.load(Ledger).start()
    host.call_enclave(b"set a 1")
    old_platform: Any = host._platform
    original = old_platform.call_enclave

    def preempted(data: bytes, callback: object) -> object:
        host.restart()  # what another thread does while this one is preempted
        return original(data, callback)

    old_platform.call_enclave = preempted
    with pytest.raises(SanctorumError, match="closed"):
        host.call_enclave(b"set raced 1")
    assert _within(2, lambda: host.call_enclave(b"set b 2")), "the host is wedged"
    dump = host.call_enclave(b"dump")
    assert dump is not None
    assert "raced" not in json.loads(dump)
    host.close()


def test_a_commit_passed_on_while_the_enclave_restarts_is_one_the_new_instance_has() -> None:
    """A call of the running instance commits (commit 2) and, before its commands reach the
    host's sequencer, the host restarts the enclave: restart() reads the sealed state
    (commit 1), and while the new instance starts (a child process: 100 ms and more) the
    call's thread passes commit 2 on. Either the call fails with EnclaveCrashedError and
    nothing of it is passed on, or the new instance holds its change: never a call that
    returned, whose mail and state went to on_mail_commands, and that the new instance lost."""
    passed_on: list[StoreSealedState] = []

    def keep(commands: list[MailCommand]) -> None:
        passed_on.extend(c for c in commands if isinstance(c, StoreSealedState))

    host = EnclaveHost.load(Ledger).start(on_mail_commands=keep)
    host.call_enclave(b"set a 1")
    held = HeldCall(host, b"set lost 1")
    make_platform = host._make_platform

    def make() -> Any:
        platform: Any = make_platform()
        start = platform.start

        def slow_start(*args: Any) -> Any:
            started = start(*args)
            held.let_go()  # the waiting call's thread runs while the new instance starts
            assert held.done.wait(10)
            return started

        platform.start = slow_start
        return platform

    host._make_platform = make
    host.restart()
    failures = held.release()
    if not failures:
        assert [c.commit_number for c in passed_on] == [1, 2]
        assert _dump(host).get("lost") == "1", (
            "the call returned and commit 2 went to on_mail_commands, "
            "but the new instance resumed from commit 1 without it"
        )
    else:
        assert [type(error) for error in failures] == [EnclaveCrashedError]
        assert [c.commit_number for c in passed_on] == [1]
    host.close()


# == 5. the web store's table =================================================================


def _store_journal(directory: Path) -> tuple[Path, dict[str, str]]:
    """A store holding a snapshot and four records (commits 1 to 5)."""
    path = directory / "mailbox.sqlite3"
    store = SqliteMailboxStore(path)
    host = EnclaveHost.load(Ledger).start(on_mail_commands=store.apply)
    for key in "abcde":
        host.call_enclave(f"set {key} {key.upper()}".encode())
    content = _dump(host)
    host.close()
    store.close()
    return path, content


_TAMPERING = {
    "middle row deleted": ["DELETE FROM sealed_journal WHERE commit_number = 3"],
    "rows reordered": [
        "UPDATE sealed_journal SET commit_number = -commit_number WHERE commit_number IN (3, 4)",
        "UPDATE sealed_journal SET commit_number = 4 WHERE commit_number = -3",
        "UPDATE sealed_journal SET commit_number = 3 WHERE commit_number = -4",
    ],
    "row duplicated": [
        "UPDATE sealed_journal SET blob = (SELECT blob FROM sealed_journal "
        "WHERE commit_number = 3) WHERE commit_number = 4"
    ],
    "row moved to the end": ["UPDATE sealed_journal SET commit_number = 9 WHERE commit_number = 2"],
    "record flagged as the snapshot": [
        "UPDATE sealed_journal SET snapshot = 1 WHERE commit_number = 3"
    ],
    "snapshot repeated after a record": [
        "INSERT INTO sealed_journal SELECT 6, 0, blob FROM sealed_journal WHERE commit_number = 1"
    ],
}


@pytest.mark.parametrize("how", sorted(_TAMPERING))
def test_a_journal_the_host_altered_in_sqlite_is_refused(tmp_path: Path, how: str) -> None:
    path, content = _store_journal(tmp_path)
    honest = tmp_path / "honest.sqlite3"
    shutil.copy(path, honest)
    with sqlite3.connect(path) as connection:
        for statement in _TAMPERING[how]:
            connection.execute(statement)
    connection.close()
    store = SqliteMailboxStore(path)
    with pytest.raises(SealedStateJournalError):
        EnclaveHost.load(Ledger).start(sealed_state=store.sealed_state())
    store.close()
    store = SqliteMailboxStore(honest)
    assert _dump(EnclaveHost.load(Ledger).start(sealed_state=store.sealed_state())) == content
    store.close()


def test_a_cleared_snapshot_flag_is_losing_the_state(tmp_path: Path) -> None:
    """The snapshot column is the host's: clearing it hides every row, and the enclave starts
    empty. That is losing the state entirely (documented as a rollback clients detect), which
    the host can do anyway by deleting the file."""
    path, _ = _store_journal(tmp_path)
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE sealed_journal SET snapshot = 0")
    connection.close()
    store = SqliteMailboxStore(path)
    assert store.sealed_state() is None
    store.close()


# == 6. the child's LOAD frame =================================================================


def test_a_load_frame_with_a_huge_blob_count_is_refused_at_once() -> None:
    empty = encode_load("simulation", b"bundle", [])  # ... | 1 | count u32 | no file name
    payload = empty[:-5] + struct.pack(">I", 0xFFFFFFFF) + b"\x00" * 64
    began = time.perf_counter()
    with pytest.raises(FrameError, match="cannot fit"):
        decode_load(payload)
    assert time.perf_counter() - began < 0.1


def _load_payloads() -> st.SearchStrategy[bytes]:
    valid = st.builds(
        encode_load,
        st.sampled_from(["simulation", "debug", "release", ""]),
        st.binary(max_size=64),
        st.one_of(st.none(), st.lists(st.binary(max_size=32), max_size=6)),
        st.one_of(st.none(), st.text(max_size=20)),
    )

    def mutate(data: bytes, position: int, value: int, cut: int) -> bytes:
        if not data:
            return data
        changed = bytearray(data)
        changed[position % len(changed)] = value
        return bytes(changed[: len(changed) - cut % 4])

    mutated = st.builds(
        mutate, valid, st.integers(0, 1 << 16), st.integers(0, 255), st.integers(0, 3)
    )
    return st.one_of(st.binary(max_size=200), valid, mutated)


@settings(max_examples=400, deadline=None)
@given(payload=_load_payloads())
def test_decode_load_raises_only_frame_errors(payload: bytes) -> None:
    try:
        request = decode_load(payload)
    except FrameError:
        return
    assert isinstance(request.mode, str)
    assert isinstance(request.bundle, bytes)
    assert request.sealed_state is None or all(isinstance(b, bytes) for b in request.sealed_state)
