"""Several web hosts serving one service from one PostgreSQL database (``web.cluster``), in
this process: partitions shared out, mail through any host, leases, fencing and takeover."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from counting_enclave import Counter

from sanctorum import (
    EnclaveClient,
    EnclaveInstanceInfo,
    EnclaveMode,
    EnclaveStateError,
    LeaseLostError,
    WebTransport,
)
from sanctorum.common.commands import PostMail, StoreSealedState
from sanctorum.web.app import create_app
from sanctorum.web.cluster import ClusterService
from sanctorum.web.partitions import partition_of
from sanctorum.web.postgres_store import PostgresDatabase, PostgresMailboxStore
from tests.postgres import PostgresServer
from tests.web.conftest import ClusterHost, serve_app


def _until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _held(host: ClusterHost) -> set[int]:
    leases = host.service.health()["leases"]
    assert isinstance(leases, list)
    return {lease["partition"] for lease in leases}


def _client(url: str, hint: str) -> EnclaveClient:
    transport = WebTransport(url, retry_for=30)
    info = EnclaveInstanceInfo.deserialize(transport.get_attestation())
    client = EnclaveClient(f"C:{info.code_hash} SEC:INSECURE")
    client.correlation_id = hint
    client.start(transport)
    return client


def test_two_hosts_share_the_partitions_and_answer_any_clients_mail(
    cluster: Callable[..., ClusterHost],
) -> None:
    first, second = cluster(), cluster()
    _until(lambda: len(_held(first)) == 2 and len(_held(second)) == 2)
    assert _held(first) | _held(second) == {0, 1, 2, 3}
    for number in range(16):
        hint = f"client-{number}"
        holder = first if partition_of(hint, 4) in _held(first) else second
        # Half the clients through the holder, half through the other host (the inbox).
        via = holder if number % 2 else (second if holder is first else first)
        client = _client(via.url, hint)
        for round_ in range(1, 4):  # each with the acknowledgement of the last answer
            answer = client.send_mail(b"m")
            assert answer is not None
            assert answer.body == b"m #%d" % round_
        assert client.poll_mail() is None  # every answer was acknowledged and dropped


def test_a_refusal_by_the_holder_reaches_the_client_through_the_other_host(
    cluster: Callable[..., ClusterHost],
) -> None:
    first, second = cluster(partitions=2), cluster(partitions=2)
    _until(lambda: len(_held(first)) == 1 and len(_held(second)) == 1)
    hint = next(f"c{n}" for n in range(100) if partition_of(f"c{n}", 2) in _held(first))
    answers = [
        httpx.post(
            f"{host.url}/deliver-mail",
            content=b"\x00" * 64,
            headers={"Correlation-ID": hint, "Content-Type": "application/octet-stream"},
        )
        for host in (first, second)
    ]
    # The same refusal as the holder's own: the enclave's, passed on by the other host.
    assert answers[1].status_code == answers[0].status_code == 400
    assert answers[1].json() == answers[0].json()
    assert answers[1].json()["error"] == "BAD_REQUEST"
    assert "mail" in answers[1].json()["message"]
    # The refusal was passed on and dropped: nothing is left in the inbox.
    with psycopg.connect(first.service._database.url) as operator:
        assert operator.execute("SELECT count(*) FROM inbox").fetchone() == (0,)


def test_a_host_answers_504_when_no_host_handles_the_mail_in_time(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.new_database()
    squatter = PostgresDatabase(url, partitions=1)  # holds the lease, never delivers
    assert squatter.take(0) is not None
    service = ClusterService(
        Counter, EnclaveMode.MOCK, tmp_path / "host", database=url, forward_timeout=1.0
    )
    try:
        service.start()
        host = ClusterHost(service, *serve_app(create_app(service)))
        began = time.monotonic()
        answer = httpx.post(
            f"{host.url}/deliver-mail",
            content=b"mail",
            headers={"Correlation-ID": "alice", "Content-Type": "application/octet-stream"},
        )
        assert answer.status_code == 504
        assert answer.json()["error"] == "MAIL_PENDING"
        assert 1.0 <= time.monotonic() - began < 5
        # The mail stays for the holder: a client learns its fate by sending it again.
        assert squatter.queued(0) == [(squatter.queued(0)[0][0], "alice", b"mail")]
        host.stop()
    finally:
        service.close()
        squatter.close()


# -- leases and fencing --------------------------------------------------------------------------


def _operator(url: str, statement: str, parameters: tuple[object, ...] = ()) -> list[Any]:
    with psycopg.connect(url, autocommit=True) as operator:
        cursor = operator.execute(statement, parameters)
        return cursor.fetchall() if cursor.description else []


def test_a_host_whose_lease_expired_cannot_commit(database_url: str) -> None:
    store = PostgresMailboxStore(database_url)
    store.apply([PostMail(b"before", "alice")])
    store.database._closed.set()  # its renewals stop, as in a hung host
    _operator(database_url, "UPDATE leases SET expires_at = clock_timestamp() - interval '1 s'")
    with pytest.raises(LeaseLostError, match="ran out or was taken over"):
        store.apply([PostMail(b"after", "alice"), StoreSealedState(b"s", 1)])
    assert _operator(database_url, "SELECT mail FROM mailbox") == [(b"before",)]
    assert _operator(database_url, "SELECT count(*) FROM sealed_journal") == [(0,)]
    with pytest.raises(LeaseLostError):  # and never again: its token is done
        store.apply([PostMail(b"later", "alice")])
    store.close()


def test_a_host_whose_lease_was_taken_over_cannot_commit(database_url: str) -> None:
    lost: list[int] = []
    first = PostgresDatabase(database_url)
    token = first.take(0, on_lost=lost.append)
    assert token is not None
    store = PostgresMailboxStore(first, partition=0, token=token)
    second = PostgresDatabase(database_url)
    assert second.take(0) is None  # held, and its host alive
    _terminate(database_url, first._lease_session.connection.info.backend_pid)
    _until(lambda: second.take(0) is not None)  # its host lock went with the session
    with pytest.raises(LeaseLostError):
        store.apply([PostMail(b"stale", "alice")])
    assert lost == [0]
    assert _operator(database_url, "SELECT count(*) FROM mailbox") == [(0,)]
    first.close()
    second.close()


def test_a_takeover_waits_for_the_commit_in_flight_and_restores_it(database_url: str) -> None:
    """The commit's transaction locks the lease row: a host taking the partition over waits
    until the commit is done, then reads the journal with it."""
    first = PostgresDatabase(database_url)
    token = first.take(0)
    assert token is not None
    second = PostgresDatabase(database_url)
    taken: list[int | None] = []
    taker = threading.Thread(target=lambda: taken.append(second.take(0)))

    class Paused(PostgresMailboxStore):
        def execute(
            self,
            cursor: object,
            statement: str,
            parameters: tuple[object, ...] | dict[str, object] = (),
        ) -> None:
            if statement == "COMMIT":  # the lease was checked; its host dies now
                _terminate(database_url, first._lease_session.connection.info.backend_pid)
                _until(lambda: not _host_lock_held(database_url, first.host_lock))
                taker.start()
                time.sleep(0.5)
                assert taker.is_alive(), "the takeover did not wait for the commit"
            super().execute(cursor, statement, parameters)

    store = Paused(first, partition=0, token=token)
    store.apply([PostMail(b"in flight", "alice"), StoreSealedState(b"snapshot", 1)])
    taker.join(timeout=20)
    assert taken[0] is not None
    again = PostgresMailboxStore(second, partition=0, token=taken[0])
    assert again.sealed_state() == (b"snapshot",)
    first.close()
    second.close()


def test_a_hung_hosts_partition_moves_when_its_lease_runs_out(database_url: str) -> None:
    first = PostgresDatabase(database_url, lease_time=1.0)
    assert first.take(0) is not None
    first._closed.set()  # hung: alive (its session and host lock stay), but no renewals
    second = PostgresDatabase(database_url, lease_time=1.0)
    began = time.monotonic()
    assert second.take(0) is None
    _until(lambda: second.take(0) is not None, timeout=10)
    assert 0.5 < time.monotonic() - began < 5
    first.close()
    second.close()


def test_a_closed_host_gives_its_partitions_up_at_once(database_url: str) -> None:
    first = PostgresDatabase(database_url, partitions=3)
    assert [first.take(number) for number in range(3)] == [1, 1, 1]
    second = PostgresDatabase(database_url)
    assert second.partitions == 3  # the database's count
    assert second.survey() == (2, [])
    first.close()
    assert second.survey()[1] == [0, 1, 2]
    assert second.take(1) == 2  # a new token: the old holder's is fenced off
    second.close()


def test_the_partition_count_cannot_change(database_url: str) -> None:
    PostgresDatabase(database_url, partitions=4).close()
    with pytest.raises(EnclaveStateError, match=r"service of 4 partitions, not 2.*new database"):
        PostgresDatabase(database_url, partitions=2)
    with pytest.raises(EnclaveStateError, match=r"1 to 1024 partitions"):
        PostgresDatabase(database_url, partitions=0)


def test_a_version_1_database_is_upgraded_with_its_state(database_url: str) -> None:
    _operator(
        database_url,
        """
        CREATE TABLE sanctorum_schema (
            only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row), version INTEGER NOT NULL
        );
        INSERT INTO sanctorum_schema (version) VALUES (1);
        CREATE TABLE mailbox (id BIGSERIAL PRIMARY KEY, routing_hint TEXT, mail BYTEA NOT NULL);
        CREATE TABLE instances (encryption_key BYTEA PRIMARY KEY, attestation BYTEA NOT NULL);
        CREATE TABLE sealed_journal (
            commit_number BIGINT PRIMARY KEY, snapshot BOOLEAN NOT NULL, blob BYTEA NOT NULL
        );
        INSERT INTO mailbox (routing_hint, mail) VALUES ('alice', 'reply');
        INSERT INTO sealed_journal VALUES (4, TRUE, 'snap'), (5, FALSE, 'next');
        """,
    )
    store = PostgresMailboxStore(database_url)
    assert store.sealed_state() == (b"snap", b"next")
    mail = store.next_mail("alice", None)
    assert mail is not None
    assert mail[1] == b"reply"
    store.apply([StoreSealedState(b"after", 6, snapshot=False)])
    assert store.sealed_state() == (b"snap", b"next", b"after")
    store.close()
    assert _operator(database_url, "SELECT version, partitions FROM sanctorum_schema") == [(2, 1)]
    PostgresMailboxStore(database_url).close()  # idempotent: the upgraded schema opens again


def _host_lock_held(url: str, key: int) -> bool:
    """Whether the server still lists a host's lock (it ends a killed session's locks a
    moment after the kill)."""
    rows = _operator(
        url,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND classid::bigint = %s >> 32 AND objid::bigint = %s & 4294967295",
        (key, key),
    )
    return bool(rows[0][0])


def _terminate(url: str, pid: int) -> None:
    _operator(url, "SELECT pg_terminate_backend(%s)", (pid,))


def test_a_hung_hosts_partitions_are_served_by_the_others(
    cluster: Callable[..., ClusterHost],
) -> None:
    """A host that hangs keeps its database session (and host lock) but stops renewing: the
    others must not count it, and take its partitions once its leases run out."""
    first, second = cluster(partitions=2, lease_time=1.5), cluster(partitions=2, lease_time=1.5)
    _until(lambda: len(_held(first)) == 1 and len(_held(second)) == 1)
    (stranded,) = _held(second)
    second.service._closed.set()  # hung: no lease rounds, no listening ...
    second.service._database._closed.set()  # ... no renewals, no heartbeat
    began = time.monotonic()
    _until(lambda: _held(first) == {0, 1}, timeout=15)
    assert time.monotonic() - began < 1.5 + 8  # its lease, then a round or two (a busy CI)
    hint = next(f"c{n}" for n in range(100) if partition_of(f"c{n}", 2) == stranded)
    answer = _client(first.url, hint).send_mail(b"m")
    assert answer is not None
    assert answer.body == b"m #1"


# -- a call that made one reply: one statement -------------------------------------------------


def test_a_reply_commit_applies_the_acknowledgement_and_reads_the_oldest_mail(
    database_url: str,
) -> None:
    store = PostgresMailboxStore(database_url)
    store.apply([PostMail(b"first", "alice"), PostMail(b"other", "bob")])  # two: not one reply
    first = store.next_mail("alice", None)
    assert first is not None
    with store.delivering("alice", first[0]):  # the client opened "first"
        store.apply([PostMail(b"second", "alice")])
        stored, answer = store.delivered()
    assert stored
    assert answer is not None
    assert answer[1] == b"second"  # "first" dropped, in the same transaction
    assert answer[0] > first[0]
    assert _operator(database_url, "SELECT mail FROM mailbox ORDER BY id") == [
        (b"other",),
        (b"second",),
    ]
    with store.delivering("alice", None):  # no acknowledgement: the oldest is still "second"
        store.apply([PostMail(b"third", "alice")])
        assert store.delivered() == (True, answer)
    store.close()


def test_an_acknowledgement_never_names_the_reply_made_with_it(database_url: str) -> None:
    store = PostgresMailboxStore(database_url)
    ((next_id,),) = _operator(database_url, "SELECT last_value + 1 FROM mailbox_id_seq")
    with store.delivering("alice", next_id):  # a guess at the id the reply will get
        store.apply([PostMail(b"reply", "alice")])
        stored, answer = store.delivered()
    assert stored
    assert answer == (next_id, b"reply")
    assert _operator(database_url, "SELECT count(*) FROM mailbox") == [(1,)]
    store.close()


def test_a_reply_is_refused_when_the_id_sequence_was_set_back(database_url: str) -> None:
    store = PostgresMailboxStore(database_url)
    store.apply([PostMail(b"kept", "alice")])
    _operator(database_url, "SELECT setval('mailbox_id_seq', 1)")  # restored from an old copy
    with pytest.raises(EnclaveStateError, match="set back"):
        store.apply([PostMail(b"refused", "alice")])
    assert _operator(database_url, "SELECT mail FROM mailbox") == [(b"kept",)]
    store.close()


def test_any_host_hands_out_any_instances_attestation_by_its_key(
    cluster: Callable[..., ClusterHost],
) -> None:
    first, second = cluster(partitions=2), cluster(partitions=2)
    _until(lambda: len(_held(first)) == 1 and len(_held(second)) == 1)
    for holder, other in ((first, second), (second, first)):
        own = httpx.get(f"{holder.url}/attestation").content
        key = EnclaveInstanceInfo.deserialize(own).encryption_key.encoded.hex()
        assert httpx.get(f"{holder.url}/attestation", params={"instance": key}).content == own
        assert httpx.get(f"{other.url}/attestation", params={"instance": key}).content == own
    unknown = httpx.get(f"{first.url}/attestation", params={"instance": "ab" * 32})
    assert unknown.status_code == 404
