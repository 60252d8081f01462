"""The sealed state's journal: commits sealed as records of their changes, snapshots now and
then, and a host that drops, reorders, replays or mixes records caught at start."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sanctorum import (
    Enclave,
    EnclaveCallError,
    EnclaveClient,
    EnclaveCrashedError,
    EnclaveHost,
    EnclaveRollbackError,
    InProcessTransport,
    MockConfiguration,
    SealedStateError,
    SealedStateJournalError,
)
from sanctorum.common import Curve25519PrivateKey
from sanctorum.enclave import runtime as runtime_module
from sanctorum.host import MailCommand, StoreSealedState
from tests.test_persistence import _dump

Load = Callable[[str], EnclaveHost]


def _blobs(host: EnclaveHost) -> tuple[bytes, ...]:
    state = host.sealed_state
    assert state is not None
    return state


class BigMap(Enclave):
    """A map of many entries, filled by the host: ``fill N`` writes N entries at once, ``set
    KEY=VALUE`` one."""

    persistent_map_size = 64 << 20

    def receive_from_untrusted_host(self, data: bytes) -> bytes | None:
        command, _, argument = data.partition(b" ")
        if command == b"fill":
            for index in range(int(argument)):
                self.persistent_map[f"entry {index}"] = b"v" * 20
        elif command == b"set":
            key, _, value = argument.partition(b"=")
            self.persistent_map[key.decode()] = value
        elif command == b"get":
            return self.persistent_map.get(argument.decode())
        elif command == b"len":
            return str(len(self.persistent_map)).encode()
        return None


def test_commits_after_the_first_are_journal_records_of_their_changes(load: Load) -> None:
    """The first commit has nothing to follow: a snapshot. Later ones are records that the
    host appends, and restarting from the snapshot and records gives exactly the content,
    deletions included."""
    batches: list[StoreSealedState] = []

    def keep(commands: list[MailCommand]) -> None:
        batches.extend(c for c in commands if isinstance(c, StoreSealedState))

    host = load("Counter").start(on_mail_commands=keep)
    host.call_enclave(b"set a=1")
    host.call_enclave(b"set b=2")
    host.call_enclave(b"delete a")
    host.call_enclave(b"set c=3")
    assert [c.snapshot for c in batches] == [True, False, False, False]
    assert [c.commit_number for c in batches] == [1, 2, 3, 4]
    assert _blobs(host) == tuple(c.blob for c in batches)
    host.restart()
    assert _dump(host) == {"b": "2", "c": "3"}
    host.call_enclave(b"set d=4")  # the new instance's commit follows the replayed ones
    host.restart()
    assert _dump(host) == {"b": "2", "c": "3", "d": "4"}


def test_a_record_costs_the_change_not_the_map() -> None:
    """A one-key change to a map of 50,000 entries is sealed in a record of the smallest size
    class, as it is for a map of one entry."""
    sizes = {}
    for entries in (1, 50_000):
        host = EnclaveHost.load(BigMap).start()
        host.call_enclave(f"fill {entries}".encode())
        host.call_enclave(b"set one=change")
        *_, record = _blobs(host)
        sizes[entries] = len(record)
        assert len(_blobs(host)[0]) > entries * 20  # the snapshot holds the whole map
        host.close()
    assert sizes[1] == sizes[50_000] < 1200


def test_the_journal_is_compacted_into_a_snapshot(load: Load) -> None:
    """Once the records since the last snapshot hold as many bytes as the minimum journal
    size, the next commit is a snapshot and the host drops the records before it; the state
    the host keeps stays bounded."""
    host = load("Counter").start()
    most = 0
    snapshots = 0
    for index in range(150):
        host.call_enclave(f"set k{index % 7}={index}".encode())
        blobs = _blobs(host)
        most = max(most, sum(map(len, blobs)))
        snapshots += len(blobs) == 1
    assert snapshots >= 2
    assert most < runtime_module._MIN_JOURNAL_BYTES + 4096
    host.restart()
    assert _dump(host) == {f"k{i % 7}": str(i) for i in range(150)}


@pytest.fixture
def journal(load: Load) -> tuple[Load, EnclaveHost, tuple[bytes, ...]]:
    """A host whose state is a snapshot and four records (commits 1 to 5)."""
    host = load("Counter").start()
    for key in "abcde":
        host.call_enclave(f"set {key}={key.upper()}".encode())
    blobs = _blobs(host)
    assert len(blobs) == 5
    return load, host, blobs


@pytest.mark.parametrize(
    ("altered", "error"),
    [
        pytest.param(
            lambda b: (b[0], b[1], b[3], b[4]), "a record between them is missing", id="dropped"
        ),
        pytest.param(lambda b: (b[0], b[2], b[1], b[3], b[4]), "missing", id="reordered"),
        pytest.param(lambda b: (b[0], b[1], b[1], b[2]), "was already applied", id="replayed"),
        pytest.param(lambda b: (b[0], b[0], b[1]), "a second snapshot", id="snapshot-again"),
        pytest.param(lambda b: b[1:], "starts with a journal record", id="no-snapshot"),
    ],
)
def test_a_journal_the_host_altered_is_refused(
    journal: tuple[Load, EnclaveHost, tuple[bytes, ...]],
    altered: Callable[[tuple[bytes, ...]], tuple[bytes, ...]],
    error: str,
) -> None:
    load, host, blobs = journal
    host.close()
    with pytest.raises(SealedStateJournalError, match=error):
        load("Counter").start(sealed_state=altered(blobs))
    # Nothing was spoiled by the attempt: the honest journal still starts, complete.
    again = load("Counter").start(sealed_state=blobs)
    assert _dump(again) == {key: key.upper() for key in "abcde"}


def test_records_of_two_chains_do_not_mix(load: Load) -> None:
    """Two instances started from one state (a fork) each write a commit 6: one's record
    never follows the other's commit 5... nor replaces it in the other's journal."""
    host = load("Counter").start()
    for key in "abcde":
        host.call_enclave(f"set {key}=1".encode())
    common = _blobs(host)
    host.call_enclave(b"set left=1")
    left = _blobs(host)
    fork = load("Counter").start(sealed_state=common)
    fork.call_enclave(b"set right=1")
    right = _blobs(fork)
    fork.call_enclave(b"set right=2")
    right_more = _blobs(fork)
    with pytest.raises(SealedStateJournalError, match="two chains"):
        load("Counter").start(sealed_state=(*left, right_more[-1]))
    with pytest.raises(SealedStateJournalError, match="already applied"):
        load("Counter").start(sealed_state=(*left, right[-1]))


def test_a_tampered_record_does_not_open(
    journal: tuple[Load, EnclaveHost, tuple[bytes, ...]],
) -> None:
    load, _, blobs = journal
    for position in (0, 10, 40, len(blobs[2]) // 2, len(blobs[2]) - 1):
        tampered = bytearray(blobs[2])
        tampered[position] ^= 1
        with pytest.raises(SealedStateError):
            load("Counter").start(sealed_state=(blobs[0], blobs[1], bytes(tampered)))
    with pytest.raises(SealedStateError, match="truncated"):
        load("Counter").start(sealed_state=(blobs[0], blobs[1][:20]))


def test_another_enclaves_record_does_not_open() -> None:
    """A record sealed by another product of the same signer (another key) is refused."""
    ours = EnclaveHost.load(BigMap).start()
    ours.call_enclave(b"set x=1")
    theirs = EnclaveHost.load(BigMap, mock_config=MockConfiguration(product_id=2)).start()
    theirs.call_enclave(b"set x=1")
    theirs.call_enclave(b"set x=2")
    with pytest.raises(SealedStateError, match="does not open"):
        EnclaveHost.load(BigMap).start(sealed_state=(*_blobs(ours), _blobs(theirs)[-1]))
    ours.close()
    theirs.close()


def test_a_journal_cut_short_is_an_older_state_that_clients_detect(load: Load) -> None:
    """Dropping the last records is a rollback to an older commit: the enclave starts from
    it, and a client that heard of a later commit raises EnclaveRollbackError."""
    host = load("Counter").start()
    client = EnclaveClient(f"C:{host.enclave_instance_info.code_hash} SEC:INSECURE")
    client.start(InProcessTransport(host))
    client.send_mail(b"inc")
    cut = _blobs(host)
    client.send_mail(b"inc")
    client.send_mail(b"inc")
    assert len(_blobs(host)) > len(cut) > 0
    host.sealed_state = cut  # the host "loses" the last records
    host.restart()
    with pytest.raises(EnclaveRollbackError):
        client.send_mail(b"inc")


class HeldCall:
    """``host.call_enclave(data)`` on a thread of its own, held after the enclave answered and
    before the host passes its commands on, until :meth:`release`; later calls are not held."""

    def __init__(self, host: EnclaveHost, data: bytes) -> None:
        dispatch = host._dispatch
        arrived, self._go, self.done = threading.Event(), threading.Event(), threading.Event()
        self.failures: list[BaseException] = []

        def late(commands: list[MailCommand], generation: int) -> None:
            host._dispatch = dispatch  # type: ignore[method-assign]
            arrived.set()
            assert self._go.wait(10)
            try:
                dispatch(commands, generation)
            finally:
                self.done.set()

        def call() -> None:
            try:
                host.call_enclave(data)
            except BaseException as error:
                self.failures.append(error)

        host._dispatch = late  # type: ignore[method-assign]
        self._thread = threading.Thread(target=call)
        self._thread.start()
        assert arrived.wait(10)

    def let_go(self) -> None:
        """Let the call go on (``done`` is set once its commands were passed on, or not)."""
        self._go.set()

    def release(self) -> list[BaseException]:
        """Let the call go on and end; what it raised."""
        self.let_go()
        self._thread.join(10)
        assert not self._thread.is_alive()
        return self.failures


def test_a_call_whose_commit_waits_when_the_enclave_restarts_is_dropped() -> None:
    """A call's commands wait for the commit before theirs; if the enclave restarts first
    (after a crash), they belong to an instance that is gone: the call raises
    EnclaveCrashedError and nothing of it is stored."""
    host = EnclaveHost.load(BigMap).start()
    host.call_enclave(b"set kept=1")
    held = HeldCall(host, b"set lost=1")
    before = host.sealed_state
    host.restart()
    assert [type(error) for error in held.release()] == [EnclaveCrashedError]
    assert host.sealed_state == before
    assert host.call_enclave(b"get lost") is None
    assert host.call_enclave(b"get kept") == b"1"
    host.call_enclave(b"set after=1")  # the new instance's commits are stored again
    host.restart()
    assert host.call_enclave(b"get after") == b"1"


class Keeper(Enclave):
    """A small map for the state machine: ``set K V``, ``delete K``, ``fail K`` (changes,
    then raises), ``dump``."""

    persistent_map_size = 1 << 20

    def receive_from_untrusted_host(self, data: bytes) -> bytes | None:
        command, _, argument = data.partition(b" ")
        if command == b"dump":
            return json.dumps(
                {key: value.decode() for key, value in sorted(self.persistent_map.items())}
            ).encode()
        key, _, value = argument.partition(b" ")
        if command == b"set":
            self.persistent_map[key.decode()] = value
        elif command == b"delete":
            self.persistent_map.pop(key.decode(), None)
        elif command == b"fail":
            self.persistent_map[key.decode()] = b"never"
            raise RuntimeError("fails after changing the map")
        return None


KEYS = st.sampled_from(["a", "b", "c", "d"])
VALUES = st.binary(min_size=0, max_size=300).map(lambda raw: raw.hex())


class JournalMachine(RuleBasedStateMachine):
    """Commits, failed calls and restarts — from the latest state or any state the host saw,
    or from a journal the host altered — against a model. Snapshots come every few commits
    (a small minimum journal size), so restarts meet every mix of snapshot and records. The
    enclave must always hold exactly the model of the state it started from, or refuse an
    altered journal and leave everything as it was."""

    def __init__(self) -> None:
        super().__init__()
        self._saved_minimum = runtime_module._MIN_JOURNAL_BYTES
        runtime_module._MIN_JOURNAL_BYTES = 4096
        self.host = EnclaveHost.load(Keeper).start()
        self.model: dict[str, str] = {}
        self.seen: list[tuple[tuple[bytes, ...], dict[str, str]]] = []

    def _remember(self) -> None:
        state = self.host.sealed_state
        if state is not None and (not self.seen or self.seen[-1][0] != state):
            self.seen.append((state, dict(self.model)))

    @rule(key=KEYS, value=VALUES)
    def set(self, key: str, value: str) -> None:
        self.host.call_enclave(f"set {key} {value}".encode())
        self.model[key] = value
        self._remember()

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        self.host.call_enclave(f"delete {key}".encode())
        self.model.pop(key, None)
        self._remember()

    @rule(key=KEYS)
    def fail(self, key: str) -> None:
        before = self.host.sealed_state
        with pytest.raises(EnclaveCallError):
            self.host.call_enclave(f"fail {key}".encode())
        assert self.host.sealed_state == before

    @rule()
    def restart_latest(self) -> None:
        self.host.restart()

    @precondition(lambda self: bool(self.seen))
    @rule(data=st.data())
    def restart_from_any_seen_state(self, data: st.DataObject) -> None:
        state, model = data.draw(st.sampled_from(self.seen))
        self.host.sealed_state = state
        self.host.restart()
        self.model = dict(model)

    @precondition(lambda self: len(self.host.sealed_state or ()) >= 3)
    @rule(data=st.data(), how=st.sampled_from(["drop", "repeat", "swap"]))
    def start_from_an_altered_journal(self, data: st.DataObject, how: str) -> None:
        blobs = list(self.host.sealed_state or ())
        index = data.draw(st.integers(1, len(blobs) - 2))  # never the last: that is a rollback
        if how == "drop":
            del blobs[index]
        elif how == "repeat":
            blobs.insert(index, blobs[index])
        else:
            blobs[index], blobs[index + 1] = blobs[index + 1], blobs[index]
        with pytest.raises(SealedStateJournalError):
            EnclaveHost.load(Keeper).start(sealed_state=blobs)

    @invariant()
    def holds_the_model(self) -> None:
        assert _dump(self.host) == self.model

    @invariant()
    def keeps_a_bounded_journal(self) -> None:
        state = self.host.sealed_state or ()
        assert sum(map(len, state[1:])) < 4096 + 2048

    def teardown(self) -> None:
        self.host.close()
        runtime_module._MIN_JOURNAL_BYTES = self._saved_minimum


JournalMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
test_journal_machine = JournalMachine.TestCase


def test_a_commit_the_host_could_not_store_is_forgotten_until_a_restart() -> None:
    """on_mail_commands raises (a full disk): the call raises that error, the host forgets
    the commit, later calls raise EnclaveCrashedError saying to restart, and restart()
    resumes from the last commit stored — the store and the host agree, and later commits
    chain onto what the store has."""
    stored: list[StoreSealedState] = []
    failing = {3}

    def store(commands: list[MailCommand]) -> None:
        for command in commands:
            if isinstance(command, StoreSealedState):
                if command.commit_number in failing:
                    failing.discard(command.commit_number)
                    raise OSError(28, "No space left on device")
                stored.append(command)

    host = EnclaveHost.load(BigMap).start(on_mail_commands=store)
    host.call_enclave(b"set a=1")
    host.call_enclave(b"set b=2")
    before = host.sealed_state
    with pytest.raises(OSError, match="No space left"):
        host.call_enclave(b"set c=3")
    assert host.sealed_state == before
    with pytest.raises(EnclaveCrashedError, match=r"commit 3 could not be stored.*restart\(\)"):
        host.call_enclave(b"set d=4")
    host.restart()
    assert host.call_enclave(b"get c") is None
    assert host.call_enclave(b"get b") == b"2"
    host.call_enclave(b"set e=5")
    assert [c.commit_number for c in stored] == [1, 2, 3]  # the new instance's commit 3
    blobs: list[bytes] = []
    for command in stored:
        blobs = [command.blob] if command.snapshot else [*blobs, command.blob]
    again = EnclaveHost.load(BigMap).start(sealed_state=blobs)
    assert again.call_enclave(b"get e") == b"5"
    assert again.call_enclave(b"get c") is None
    again.close()
    host.close()


def test_what_the_host_keeps_stays_within_one_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot and the records after it go back to the enclave in one frame at start: a
    snapshot comes early enough that they never hold more than the most one blob may."""
    monkeypatch.setattr(runtime_module, "_MIN_JOURNAL_BYTES", 1024)
    monkeypatch.setattr(runtime_module, "_MAX_KEPT_BYTES", 100_000)
    host = EnclaveHost.load(BigMap).start()
    host.call_enclave(b"fill 1000")  # a snapshot of 64 KiB: room for ~34 KB of records
    kept, snapshots = [], 0
    for index in range(100):
        host.call_enclave(f"set k={index}".encode())
        kept.append(sum(map(len, _blobs(host))))
        snapshots += len(_blobs(host)) == 1
    assert max(kept) <= 100_000
    assert snapshots >= 2  # without the bound, the records would grow to 64 KiB first
    host.restart()
    assert host.call_enclave(b"get k") == b"99"
    host.close()


def test_mail_of_a_stateless_call_the_host_could_not_store_fails_the_instance() -> None:
    """Without sealed state too: the instance took the mail whose answers were lost (a resend
    would be a replay), so later calls say to restart, and restart() gives a fresh instance."""
    from behaviour_enclave import Recorder

    from sanctorum.host import PostMail

    failing = [OSError(28, "No space left on device")]
    stored: list[MailCommand] = []

    def store(commands: list[MailCommand]) -> None:
        if failing:
            raise failing.pop()
        stored.extend(commands)

    host = EnclaveHost.load(Recorder).start(on_mail_commands=store)
    key = Curve25519PrivateKey.generate()
    office = host.enclave_instance_info.create_post_office(key, "t")
    first = host.enclave_instance_info.encryption_key
    with pytest.raises(OSError, match="No space left"):
        host.deliver_mail(office.encrypt_mail(b"one"), "me")
    with pytest.raises(EnclaveCrashedError, match=r"answers were lost.*restart\(\)"):
        host.deliver_mail(office.encrypt_mail(b"two"), "me")
    host.restart()
    assert host.enclave_instance_info.encryption_key != first
    fresh = host.enclave_instance_info.create_post_office(key, "t")
    host.deliver_mail(fresh.encrypt_mail(b"one again"), "me")
    assert [type(command) for command in stored] == [PostMail]
    host.close()
