"""Attacks on the multi-host service (``web.cluster``): a hostile client, a hostile database
operator, hostile NOTIFY payloads. Each test asserts the safe behaviour, so it fails when the
attack succeeds. Nothing a remote party or the database sends may crash a host (a background
thread that dies counts as a crash) or hang a request, apply a mail twice, or let a host that
lost its lease commit."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from counting_enclave import Counter

from sanctorum import EnclaveMode, LeaseLostError
from sanctorum.common.commands import PostMail
from sanctorum.common.errors import EnclaveStateError
from sanctorum.web.app import create_app
from sanctorum.web.cluster import ClusterService
from sanctorum.web.partitions import partition_of
from sanctorum.web.postgres_store import PostgresDatabase
from tests.web.conftest import ClusterHost, serve_app
from tests.web.test_cluster import _client, _held, _operator, _until

_BOUND = 15.0  # seconds within which every request must be answered
_OCTETS = {"Content-Type": "application/octet-stream"}


def _assert_alive(service: ClusterService) -> None:
    """No background thread of the host died: the lease and listener threads, the lease
    renewal, and the drain thread of every partition it serves."""
    for thread in service._threads:
        if thread.name in ("leases", "inbox-listener"):
            assert thread.is_alive(), f"thread {thread.name} died"
    assert service._database._renewer.is_alive(), "the lease renewal thread died"
    with service._parts_lock:
        serving = {part.number for part in service._parts.values() if part.state == "serving"}
    for number in serving:
        threads = [t for t in service._threads if t.name == f"partition-{number}"]
        assert threads, f"no thread for partition {number}"
        assert threads[-1].is_alive(), f"the drain thread of partition {number} died"


def _post(host: ClusterHost, hint: str, body: bytes, **headers: str) -> httpx.Response:
    began = time.monotonic()
    answer = httpx.post(
        f"{host.url}/deliver-mail",
        content=body,
        headers={"Correlation-ID": hint, **_OCTETS, **headers},
        timeout=_BOUND + 5,
    )
    assert time.monotonic() - began < _BOUND, "the request hung"
    return answer


def _hint_in(partitions: set[int], count: int, avoid: str = "") -> str:
    return next(
        f"c{avoid}{n}" for n in range(10_000) if partition_of(f"c{avoid}{n}", count) in partitions
    )


# -- hostile NOTIFY payloads ------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        "9" * 5000,  # digits, but more than int() parses (ValueError since Python 3.11)
        "\u00b2",  # SUPERSCRIPT TWO: str.isdigit() is True, int() refuses it
        "not a number",
        "-1",
        "",
        "0" * 7999,
    ],
)
@pytest.mark.parametrize("channel", ["sanctorum_inbox", "sanctorum_outcome"])
def test_a_hostile_notify_payload_does_not_kill_the_listener(
    cluster: Callable[..., ClusterHost], database_url: str, channel: str, payload: str
) -> None:
    # Found: for "9" * 5000, "0" * 7999 and "\u00b2" on both channels: ClusterService._listen
    # guards with str.isdigit() then calls int(payload), which raises ValueError (over the
    # limit for integer string conversion / invalid literal): the inbox-listener thread dies
    # for good (wake-ups then come only from the 1 s polls).
    host = cluster()
    _until(lambda: len(_held(host)) == 4)
    _operator(database_url, "SELECT pg_notify(%s, %s)", (channel, payload))
    time.sleep(1.5)
    _assert_alive(host.service)
    # and the host still serves a client, through the same path
    client = _client(host.url, "alice")
    answer = client.send_mail(b"m")
    assert answer is not None
    assert answer.body == b"m #1"


# -- the inbox, under a hostile operator ----------------------------------------------------


def test_an_inbox_row_deleted_while_its_host_waits_is_not_answered_as_delivered(
    database_url: str, tmp_path: Path
) -> None:
    # Found: PostgresDatabase.outcome() read a missing row as "handled", so the host answered
    # 200 (empty: no reply yet) for a mail no enclave ever saw: the client believes it was
    # delivered and waits for a reply that never comes.
    squatter = PostgresDatabase(database_url, partitions=1)  # holds the lease, never delivers
    assert squatter.take(0) is not None
    service = ClusterService(
        Counter, EnclaveMode.MOCK, tmp_path / "host", database=database_url, forward_timeout=6.0
    )
    host: ClusterHost | None = None
    try:
        service.start()
        host = ClusterHost(service, *serve_app(create_app(service)))
        answers: list[httpx.Response] = []

        sender = threading.Thread(target=lambda: answers.append(_post(host, "alice", b"mail")))
        sender.start()
        _until(lambda: bool(_operator(database_url, "SELECT id FROM inbox")), timeout=5)
        _operator(database_url, "DELETE FROM inbox")  # a second operator drops it
        sender.join(timeout=_BOUND + 5)
        assert answers, "the request hung"
        assert answers[0].status_code != 200, (
            "the host answered 200 for a mail that was dropped from the inbox, never handled"
        )
        _assert_alive(service)
    finally:
        if host is not None:
            host.stop()
        service.close()
        squatter.close()


def test_a_replayed_inbox_row_is_refused_and_never_applied_twice(
    cluster: Callable[..., ClusterHost], database_url: str
) -> None:
    first, second = cluster(partitions=2), cluster(partitions=2)
    _until(lambda: len(_held(first)) == 1 and len(_held(second)) == 1)
    holder_partition = next(iter(_held(first)))
    hint = _hint_in({holder_partition}, 2)
    # The operator keeps a copy of every mail put in the inbox.
    _operator(
        database_url,
        """
        CREATE TABLE spy (n BIGSERIAL, partition INTEGER, routing_hint TEXT, mail BYTEA);
        CREATE FUNCTION spy_on_inbox() RETURNS trigger AS $$
        BEGIN
            INSERT INTO spy (partition, routing_hint, mail)
            VALUES (NEW.partition, NEW.routing_hint, NEW.mail);
            RETURN NEW;
        END $$ LANGUAGE plpgsql;
        CREATE TRIGGER spy AFTER INSERT ON inbox FOR EACH ROW EXECUTE FUNCTION spy_on_inbox();
        """,
    )
    client = _client(second.url, hint)  # through the host that does not hold the partition
    answer = client.send_mail(b"m")
    assert answer is not None
    assert answer.body == b"m #1"
    # The last mail the client sent (its start may have sent others before).
    ((partition, routing_hint, mail),) = _operator(
        database_url, "SELECT partition, routing_hint, mail FROM spy ORDER BY n DESC LIMIT 1"
    )
    # The operator puts the handled mail back in the inbox, and wakes the holder.
    _operator(
        database_url,
        "INSERT INTO inbox (partition, routing_hint, mail) VALUES (%s, %s, %s)",
        (partition, routing_hint, mail),
    )
    _operator(database_url, "SELECT pg_notify('sanctorum_inbox', %s::text)", (str(partition),))
    _until(lambda: _operator(database_url, "SELECT error FROM inbox") != [(None,)], timeout=10)
    assert _operator(database_url, "SELECT error FROM inbox") == [("MAIL_REPLAY",)]
    # A hostile client replays it too, through both hosts: refused as a replay each time.
    for via in (first, second):
        replayed = _post(via, hint, bytes(mail))
        assert replayed.status_code == 400
        assert replayed.json()["error"] == "MAIL_REPLAY"
    # The enclave applied it once: the client's next mail is its second.
    answer = client.send_mail(b"m")
    assert answer is not None
    assert answer.body == b"m #2"
    _assert_alive(first.service)
    _assert_alive(second.service)


def test_a_poison_inbox_row_does_not_block_the_partitions_other_mail(
    cluster: Callable[..., ClusterHost], database_url: str
) -> None:
    # Found: PostgresDatabase.queued() converted all 64 rows at once and raised
    # EnclaveStateError on the first bad one; ClusterService._drain returns on it, so a single
    # altered row (NULL mail) stops every later mail of the partition for good (504s).
    first = cluster(partitions=1)
    second = cluster(partitions=1)  # holds nothing: its mail goes through the inbox
    _until(lambda: _held(first) == {0})
    _operator(database_url, "ALTER TABLE inbox ALTER COLUMN mail DROP NOT NULL")
    _operator(
        database_url, "INSERT INTO inbox (partition, routing_hint, mail) VALUES (0, 'x', NULL)"
    )
    client = _client(second.url, "alice")
    answer = client.send_mail(b"m")
    assert answer is not None
    assert answer.body == b"m #1"
    _assert_alive(first.service)
    _assert_alive(second.service)


@pytest.mark.parametrize(
    ("hint", "mail"),
    [
        ("repeat('\u00e9', 100000)", "''::bytea"),
        ("'alice'", "''::bytea"),
        ("'alice'", "decode(repeat('00', 1000000), 'hex')"),
        ("'alice'", "decode('ff', 'hex')"),
        ("' '", "'\\x0100'::bytea"),
    ],
)
def test_hostile_inbox_rows_are_refused_without_killing_the_drain(
    cluster: Callable[..., ClusterHost], database_url: str, hint: str, mail: str
) -> None:
    host = cluster(partitions=1)
    _until(lambda: _held(host) == {0})
    _operator(
        database_url,
        f"INSERT INTO inbox (partition, routing_hint, mail) VALUES (0, {hint}, {mail})",
    )
    _operator(database_url, "SELECT pg_notify('sanctorum_inbox', '0')")
    _until(
        lambda: _operator(database_url, "SELECT error IS NOT NULL FROM inbox") == [(True,)],
        timeout=10,
    )
    _assert_alive(host.service)
    client = _client(host.url, "bob")
    answer = client.send_mail(b"m")
    assert answer is not None
    assert answer.body == b"m #1"


def test_an_unknown_or_huge_refusal_from_the_database_is_an_answer_not_a_crash(
    database_url: str, tmp_path: Path
) -> None:
    squatter = PostgresDatabase(database_url, partitions=1)
    assert squatter.take(0) is not None
    service = ClusterService(
        Counter, EnclaveMode.MOCK, tmp_path / "host", database=database_url, forward_timeout=8.0
    )
    host: ClusterHost | None = None
    try:
        service.start()
        host = ClusterHost(service, *serve_app(create_app(service)))

        answers: list[httpx.Response] = []
        sender = threading.Thread(target=lambda: answers.append(_post(host, "alice", b"mail")))
        sender.start()
        _until(lambda: bool(_operator(database_url, "SELECT id FROM inbox")), timeout=5)
        _operator(
            database_url,
            "UPDATE inbox SET error = 'NOT_A_CODE', message = repeat('A', 1000000), "
            "handled_at = clock_timestamp(); SELECT pg_notify('sanctorum_outcome', id::text) "
            "FROM inbox",
        )
        sender.join(timeout=_BOUND + 5)
        assert answers, "the request hung"
        assert answers[0].status_code == 400
        assert answers[0].json()["error"] == "BAD_REQUEST"
        _assert_alive(service)
    finally:
        if host is not None:
            host.stop()
        service.close()
        squatter.close()


# -- leases, under a hostile operator --------------------------------------------------------


def test_a_host_whose_lease_was_stolen_stops_serving_and_cannot_commit(
    cluster: Callable[..., ClusterHost], database_url: str
) -> None:
    host = cluster(partitions=1, lease_time=2.0)
    _until(lambda: _held(host) == {0})
    client = _client(host.url, "alice")
    answer = client.send_mail(b"m")
    assert answer is not None
    assert answer.body == b"m #1"
    part = host.service._parts[0]
    store = part.store
    assert store is not None
    journal = _operator(database_url, "SELECT count(*) FROM sealed_journal")
    _operator(database_url, "UPDATE leases SET token = token + 1")  # the operator steals the lease
    with pytest.raises(LeaseLostError):
        store.apply([PostMail(b"stale", "alice")])
    assert _operator(database_url, "SELECT count(*) FROM mailbox WHERE mail = 'stale'") == [(0,)]
    assert _operator(database_url, "SELECT count(*) FROM sealed_journal") == journal
    _until(lambda: part.state == "stopped", timeout=10)
    # It takes the partition again once the stolen lease runs out, with a new token, and its
    # client's count goes on: nothing was applied twice or lost.
    _until(lambda: _held(host) == {0}, timeout=15)
    assert host.service._parts[0].token > part.token
    answer = client.send_mail(b"m")
    assert answer is not None
    assert answer.body == b"m #2"
    _assert_alive(host.service)


def test_bogus_lease_rows_do_not_take_a_real_partitions_place(
    database_url: str, cluster: Callable[..., ClusterHost]
) -> None:
    # Found: PostgresDatabase.survey() returned every takeable row of `leases`, including
    # partitions outside 0..N-1 the operator added; lease_plan() takes the lowest first, so the
    # host serves phantom partition -1 and its fair share leaves real partition 3 unserved:
    # its clients get 504 for ever.
    PostgresDatabase(database_url, partitions=4).close()
    _operator(database_url, "INSERT INTO leases (partition) VALUES (-1), (4), (1000000000)")
    host = cluster(partitions=4)
    time.sleep(1.5)  # a few lease rounds
    assert _held(host) == {0, 1, 2, 3}
    _assert_alive(host.service)


@pytest.mark.parametrize("count", ["0", "-1", "1000000000", "NULL"])
def test_a_bad_partition_count_in_the_schema_is_refused_cleanly(
    database_url: str, tmp_path: Path, count: str
) -> None:
    PostgresDatabase(database_url, partitions=4).close()
    _operator(database_url, f"UPDATE sanctorum_schema SET partitions = {count}")
    with pytest.raises(EnclaveStateError, match="partitions"):
        ClusterService(Counter, EnclaveMode.MOCK, tmp_path / "host", database=database_url)
    # the state dir's lock was let go: a host with a good database starts there
    _operator(database_url, "UPDATE sanctorum_schema SET partitions = 4")
    service = ClusterService(Counter, EnclaveMode.MOCK, tmp_path / "host", database=database_url)
    service.close()


def test_a_hostile_holder_row_with_a_far_expiry_does_not_keep_a_partition(
    cluster: Callable[..., ClusterHost], database_url: str
) -> None:
    """An operator's row claims partition 0 for ever, for a host that does not exist."""
    PostgresDatabase(database_url, partitions=2).close()
    _operator(
        database_url,
        "UPDATE leases SET holder = 'ghost', host_lock = 12345, token = 7, "
        "expires_at = 'infinity' WHERE partition = 0",
    )
    host = cluster(partitions=2)
    _until(lambda: _held(host) == {0, 1}, timeout=10)
    assert host.service._parts[0].token == 8
    _assert_alive(host.service)


# -- a hostile client, through the inbox ------------------------------------------------------


@pytest.mark.parametrize(
    "acknowledge",
    ["0", "-1", str(2**63 - 1), str(2**63), str(10**40), "abc", "1e3", "+7"],
)
def test_hostile_acknowledgements_through_the_inbox_are_answered(
    cluster: Callable[..., ClusterHost], acknowledge: str
) -> None:
    first, second = cluster(partitions=2), cluster(partitions=2)
    _until(lambda: len(_held(first)) == 1 and len(_held(second)) == 1)
    hint = _hint_in(_held(first), 2)
    answer = _post(second, hint, b"\x01" * 100, **{"Acknowledge-Mail-ID": acknowledge})
    assert answer.status_code in (400, 422), answer.text
    _assert_alive(first.service)
    _assert_alive(second.service)


def test_a_huge_mail_through_the_inbox_is_answered(
    cluster: Callable[..., ClusterHost], database_url: str
) -> None:
    first, second = cluster(partitions=2), cluster(partitions=2)
    _until(lambda: len(_held(first)) == 1 and len(_held(second)) == 1)
    hint = _hint_in(_held(first), 2)
    answer = _post(second, hint, b"\x02" * (16 << 20))  # the body limit, exactly
    assert answer.status_code == 400, answer.text
    answer = _post(second, hint, b"\x02" * ((16 << 20) + 1))
    assert answer.status_code == 413
    assert _operator(database_url, "SELECT count(*) FROM inbox") == [(0,)]
    _assert_alive(first.service)
    _assert_alive(second.service)
