"""One enclave service on several web hosts that share a PostgreSQL database.

The service's state is split into partitions: a client's partition follows from its
Correlation-ID (:func:`~sanctorum.web.partitions.partition_of`), and each partition is an enclave
instance of its own, with its own sealed journal in the database. A host serves the partitions
it holds a lease on (:class:`~sanctorum.web.postgres_store.PostgresDatabase`), each with a local
instance started from the partition's journal; the hosts share the partitions out evenly.

Mail may reach any host (behind a load balancer). The holder of its partition delivers it at
once; any other host puts it in the database's inbox, wakes the holder (``NOTIFY``), and answers
the client once the holder has handled it, as if it had delivered the mail itself: 200 only
after the answer was stored. Replies are read from the database, by any host. When a host dies,
its leases are taken over (at once when its database session ends, else when they run out) and
its partitions restart elsewhere from their journals; a host that lost a lease cannot commit.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sanctorum.common.commands import HostCallback
from sanctorum.common.errors import (
    EnclaveCallError,
    EnclaveCrashedError,
    EnclaveStateError,
    KdsError,
    MailDecryptionError,
    MailGapError,
    MailPendingError,
    MailReplayError,
    SanctorumError,
)
from sanctorum.common.keys import Curve25519PublicKey
from sanctorum.common.mode import EnclaveMode
from sanctorum.host.importing import EnclaveClass
from sanctorum.host.kds import KdsConfiguration
from sanctorum.web.logs import log_event
from sanctorum.web.partitions import fair_share, lease_plan, partition_of
from sanctorum.web.postgres_store import (
    DEFAULT_LEASE_TIME,
    PostgresDatabase,
    PostgresMailboxStore,
)
from sanctorum.web.service import EnclaveService, enclave_settings, lock_state_dir

DEFAULT_FORWARD_TIMEOUT = 30.0
"""Seconds a host waits for the holder of a mail's partition to handle it before it answers
504 (the mail may still be handled: the client sends it again later and learns its fate)."""
_ROUND = 0.5  # seconds between looks at the leases: how soon a dead host's partitions move
_PATIENCE = 4  # rounds above its share before a host gives a partition up
_CRASHES = 3  # an inbox mail the enclave crashed on this often is refused, not tried again
# What an enclave's refusal of an inbox mail is called in the database, and back.
_REFUSALS: dict[str, type[SanctorumError]] = {
    "MAIL_DECRYPTION": MailDecryptionError,
    "MAIL_REPLAY": MailReplayError,
    "MAIL_GAP": MailGapError,
    "ENCLAVE_EXCEPTION": EnclaveCallError,
    "KDS": KdsError,
    "BAD_REQUEST": SanctorumError,
}


def _refusal_code(problem: SanctorumError) -> str:
    for code, kind in _REFUSALS.items():
        if kind is not SanctorumError and isinstance(problem, kind):
            return code
    return "BAD_REQUEST"


@dataclass
class _Partition:
    """A partition this host holds: its lease's token, its store and enclave instance."""

    number: int
    token: int
    state: str = "starting"  # then "serving"; "stopped" once given up or lost
    store: PostgresMailboxStore | None = None
    service: EnclaveService | None = None
    wake: threading.Event = field(default_factory=threading.Event)
    drain_lock: threading.Lock = field(default_factory=threading.Lock)
    crashes: dict[int, int] = field(default_factory=dict)  # inbox id -> crashes on it


class ClusterService:
    """The web host's service when its state is in a PostgreSQL database: one or more
    partitions, shared with the other hosts serving the same database. The same interface as
    :class:`EnclaveService` to the web app. ``partitions`` is fixed when the database is made
    (None: the database's count, or 1); ``lease_time`` is how long a hung host keeps its
    partitions; ``forward_timeout`` how long a mail received here waits for the host that
    serves its partition."""

    remote = True
    restarting = False  # partitions restart on their own; /health lists each one's state

    def __init__(
        self,
        enclave: Path | EnclaveClass,
        mode: EnclaveMode,
        state_dir: Path,
        *,
        database: str,
        partitions: int | None = None,
        lease_time: float = DEFAULT_LEASE_TIME,
        forward_timeout: float = DEFAULT_FORWARD_TIMEOUT,
        pccs_url: str | None = None,
        kds: KdsConfiguration | None = None,
        host_callback: HostCallback | None = None,
    ) -> None:
        self.mode = mode
        self.name, filesystem_size = enclave_settings(enclave)
        if filesystem_size:
            raise EnclaveStateError(
                f"enclave {self.name} keeps a persistent filesystem in a file on its host, "
                "which no other host can open: it cannot be served from a database. Keep its "
                "state in the persistent map, or serve it without --database"
            )
        self._enclave = enclave
        self._pccs_url = pccs_url
        self._kds = kds
        self._host_callback = host_callback
        self._forward_timeout = forward_timeout
        state_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = lock_state_dir(state_dir)
        try:
            self._database = PostgresDatabase(
                database, partitions=partitions, lease_time=lease_time
            )
        except BaseException:
            self._lock_file.close()
            raise
        self.partitions = self._database.partitions
        log_event(
            logging.INFO,
            "store_opened",
            f"mailbox and sealed state in the {self._database.description} "
            f"({self.partitions} partition{'' if self.partitions == 1 else 's'}, leases of "
            f"{lease_time:g} s)",
            store=self._database.description,
            partitions=self.partitions,
        )
        self._parts: dict[int, _Partition] = {}
        self._parts_lock = threading.Lock()
        self._waiters: dict[int, threading.Event] = {}
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._running = False
        self._startup_error: Exception | None = None

    # -- leases --------------------------------------------------------------------------------

    def start(self) -> None:
        """Take this host's share of the partitions and start their instances, then keep
        looking after the leases and the inbox in the background."""
        self._balance(patience=_PATIENCE)
        self._join_starting()
        if self._startup_error is not None:  # the operator sees it now, not in a retry loop
            raise self._startup_error
        self._running = True
        for target, name in ((self._keep_leases, "leases"), (self._listen, "inbox-listener")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _keep_leases(self) -> None:
        patience = _PATIENCE
        failing = False
        while not self._closed.wait(_ROUND):
            try:
                patience = self._balance(patience)
            except Exception as error:  # the database is away, or answered nonsense: next round
                if not failing:  # once an outage, not every round
                    log_event(
                        logging.WARNING,
                        "lease_check_failed",
                        f"cannot look at the leases: {error}",
                        error=str(error),
                    )
                failing = True
            else:
                failing = False

    def _balance(self, patience: int) -> int:
        """One round: take free partitions up to this host's share, or give one up after
        ``patience`` rounds above it; the patience left."""
        live, takeable = self._database.survey()
        with self._parts_lock:
            held = len(self._parts)
            free = [number for number in takeable if number not in self._parts]
        take, give_up = lease_plan(held, free, self.partitions, live, patience)
        for number in take:
            self._take(number)
        if give_up:
            with self._parts_lock:
                serving = [part for part in self._parts.values() if part.state == "serving"]
            if serving:
                self._stop(max(serving, key=lambda part: part.number), "gave_up")
            return _PATIENCE
        above = held > fair_share(self.partitions, live)
        return patience - 1 if above else _PATIENCE

    def _take(self, number: int) -> None:
        token = self._database.take(number, on_lost=self._lost)
        if token is None:
            return  # another host was quicker
        part = _Partition(number, token)
        with self._parts_lock:
            self._parts[number] = part
        thread = threading.Thread(target=self._open, args=(part,), name=f"partition-{number}")
        thread.daemon = True
        thread.start()
        self._threads = [old for old in self._threads if old.is_alive()] + [thread]

    def _open(self, part: _Partition) -> None:
        """Start the partition's instance from its journal, then hand it the inbox's mail
        until the partition is given up."""
        began = time.monotonic()
        try:
            part.store = PostgresMailboxStore(
                self._database, partition=part.number, token=part.token
            )
            part.service = EnclaveService(
                self._enclave,
                self.mode,
                None,
                pccs_url=self._pccs_url,
                kds=self._kds,
                host_callback=self._host_callback,
                store=part.store,
                on_started=lambda: self._announce(part),
            )
            part.service.start()
        except Exception as error:
            if not self._running:
                self._startup_error = error
            log_event(
                logging.ERROR,
                "partition_failed",
                f"partition {part.number} did not start: {type(error).__name__}: {error}; "
                "another host, or this one, tries again",
                partition=part.number,
                error=str(error),
            )
            self._stop(part, None)
            return
        with self._parts_lock:
            stopped = self._parts.get(part.number) is not part  # lost while it started
            if not stopped:
                part.state = "serving"
        if stopped:
            part.service.close()
            return
        log_event(
            logging.INFO,
            "lease_taken",
            f"serving partition {part.number} (lease token {part.token}), started in "
            f"{(time.monotonic() - began) * 1000:.0f} ms",
            partition=part.number,
            token=part.token,
            start_ms=round((time.monotonic() - began) * 1000),
        )
        while part.state == "serving" and not self._closed.is_set():
            try:
                self._drain(part)
            except Exception as error:  # never the end of the thread: it tries again
                log_event(
                    logging.ERROR,
                    "inbox_failed",
                    f"partition {part.number}: the inbox could not be handed over: {error!r}",
                    partition=part.number,
                    error=repr(error),
                )
            part.wake.wait(1.0)  # woken by NOTIFY; once a second anyway, for a lost one
            part.wake.clear()

    def _join_starting(self) -> None:
        """Wait until the partitions this host took have started (or failed to)."""
        while True:
            with self._parts_lock:
                starting = any(part.state == "starting" for part in self._parts.values())
            if not starting:
                return
            time.sleep(0.02)

    def _announce(self, part: _Partition) -> None:
        assert part.service is not None
        info = part.service.host.enclave_instance_info
        self._database.announce(
            part.number, part.token, info.encryption_key.encoded, info.serialize()
        )

    def _lost(self, number: int) -> None:
        with self._parts_lock:
            part = self._parts.get(number)
        if part is not None:
            # Not on this thread, which may be inside the instance's own call.
            threading.Thread(target=self._stop, args=(part, "lost"), daemon=True).start()

    def _stop(self, part: _Partition, why: str | None) -> None:
        """Stop serving ``part``: ``gave_up`` (its lease is released for another host),
        ``lost`` (another host has it), None (it failed to start; released)."""
        with self._parts_lock:
            if self._parts.get(part.number) is part:
                del self._parts[part.number]
        part.state = "stopped"
        part.wake.set()
        if part.service is not None:
            part.service.close()  # in-flight calls fail (503): their commits were not stored
        elif part.store is not None:
            part.store.close()
        if why != "lost":
            with contextlib.suppress(EnclaveStateError):
                self._database.release(part.number, part.token)
        if why is not None:
            log_event(
                logging.WARNING if why == "lost" else logging.INFO,
                "lease_" + why,
                f"partition {part.number} "
                + ("was taken over by another host" if why == "lost" else "given up")
                + f" (lease token {part.token})",
                partition=part.number,
                token=part.token,
            )

    # -- the inbox -----------------------------------------------------------------------------

    def _listen(self) -> None:
        while not self._closed.is_set():
            try:
                self._listen_once()
            except Exception as error:  # never the end of the thread: polls stand in
                log_event(
                    logging.ERROR,
                    "listener_failed",
                    f"the inbox listener failed: {error!r}; listening again",
                    error=repr(error),
                )
                time.sleep(1.0)

    def _listen_once(self) -> None:
        for _ in range(60):
            notices = self._database.notices(1.0)
            if notices is None:  # (re)connected: what was sent meanwhile is lost
                self._wake_everything()
                continue
            for channel, payload in notices:
                if not (payload.isascii() and payload.isdigit() and len(payload) <= 18):
                    continue  # not one of ours: anyone on the database may NOTIFY
                if channel == "sanctorum_inbox":
                    with self._parts_lock:
                        part = self._parts.get(int(payload))
                    if part is not None:
                        part.wake.set()
                else:
                    waiter = self._waiters.get(int(payload))
                    if waiter is not None:
                        waiter.set()

    def _wake_everything(self) -> None:
        for waiter in list(self._waiters.values()):
            waiter.set()
        with self._parts_lock:
            for part in self._parts.values():
                part.wake.set()

    def _drain(self, part: _Partition) -> None:
        """Deliver the mail waiting in ``part``'s inbox, oldest first: each is dropped from the
        inbox in the transaction that stores what the enclave made of it, or marked refused."""
        with part.drain_lock:
            try:
                queued = self._database.queued(part.number)
            except EnclaveStateError:
                return  # the database is away: tried again in a moment
            for inbox_id, routing_hint, mail in queued:
                if part.state != "serving" or part.service is None or part.store is None:
                    return
                if routing_hint is None or mail is None:  # altered in the database
                    self._refuse(part, inbox_id, "BAD_REQUEST", "the database altered this mail")
                    continue
                try:
                    with part.store.consuming(inbox_id):
                        part.service.process(mail, routing_hint)
                        consumed = part.store.consumed()
                    if not consumed:  # nothing was stored: drop it on its own
                        self._database.consume(inbox_id, part.number, part.token)
                except EnclaveCrashedError:
                    crashes = part.crashes[inbox_id] = part.crashes.get(inbox_id, 0) + 1
                    if crashes >= _CRASHES:
                        self._refuse(
                            part,
                            inbox_id,
                            "ENCLAVE_EXCEPTION",
                            f"the enclave crashed {crashes} times on this mail: not tried again",
                        )
                    return  # the instance restarts; the mail stays queued
                except EnclaveStateError:
                    return  # restarting, the lease is gone or the database away: stays queued
                except SanctorumError as problem:
                    self._refuse(part, inbox_id, _refusal_code(problem), str(problem))
            if len(queued) == 64:
                part.wake.set()  # more waits

    def _refuse(self, part: _Partition, inbox_id: int, code: str, message: str) -> None:
        with contextlib.suppress(EnclaveStateError):  # else handled again: same refusal
            self._database.refuse(inbox_id, part.number, part.token, code, message)

    def _await(self, inbox_id: int) -> None:
        """Wait until the holder has handled inbox mail ``inbox_id``; its refusal is raised,
        and :class:`MailPendingError` if it is not handled in time."""
        waiter = self._waiters[inbox_id] = threading.Event()
        deadline = time.monotonic() + self._forward_timeout
        try:
            while (outcome := self._database.outcome(inbox_id)) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise MailPendingError(
                        f"the mail was put in the database for the host that serves its "
                        f"partition, and was not handled within {self._forward_timeout:g} s: it "
                        "may still be. Send it again later (a client does: an enclave refuses "
                        "it as a replay if it had it, and its answer comes by polling)"
                    )
                waiter.wait(min(left, 1.0))
                waiter.clear()
        finally:
            del self._waiters[inbox_id]
        code, message = outcome
        self._database.forget(inbox_id)
        if code:
            raise _REFUSALS.get(code, SanctorumError)(message or f"refused: {code}")

    # -- what the web app calls ------------------------------------------------------------------

    def _serving(self, number: int) -> _Partition | None:
        with self._parts_lock:
            part = self._parts.get(number)
        if (
            part is None
            or part.state != "serving"
            or part.service is None
            or not self._database.holds(number, part.token)
        ):
            return None
        return part

    def deliver(
        self, mail: bytes, routing_hint: str, acknowledged: int | None
    ) -> tuple[int, bytes] | None:
        """Deliver a mail, here or through the inbox; the client's oldest unacknowledged mail.
        The acknowledgement is handled first, so it can never name this delivery's answer."""
        number = partition_of(routing_hint, self.partitions)
        part = self._serving(number)
        if part is None:
            inbox_id = self._database.enqueue(number, routing_hint, mail, acknowledged)
            self._await(inbox_id)
        else:
            try:
                stored, answer = self._deliver_here(part, mail, routing_hint, acknowledged)
            except MailGapError:
                # The sender's previous mail may wait in the inbox (it reached another host):
                # deliver that first. The enclave refused this one, not taking it.
                self._drain(part)
                stored, answer = self._deliver_here(part, mail, routing_hint, acknowledged)
            if stored:  # the commit read the answer too
                return answer
            if acknowledged is not None:  # nothing was committed: no mail, no state
                self._database.acknowledge(routing_hint, acknowledged)
        return self._database.next_mail(routing_hint, None)

    @staticmethod
    def _deliver_here(
        part: _Partition, mail: bytes, routing_hint: str, acknowledged: int | None
    ) -> tuple[bool, tuple[int, bytes] | None]:
        """Deliver to this host's instance: whether a commit was stored, and the answer it
        read (one transaction acknowledges, stores, and reads the answer)."""
        assert part.service is not None
        assert part.store is not None
        with part.store.delivering(routing_hint, acknowledged):
            part.service.process(mail, routing_hint)
            return part.store.delivered()

    def poll(self, routing_hint: str, acknowledged: int | None) -> tuple[int, bytes] | None:
        return self._database.next_mail(routing_hint, acknowledged)

    def attestation(
        self, instance: bytes | None = None, routing_hint: str | None = None
    ) -> bytes | None:
        """The attestation of the instance serving ``routing_hint``'s partition (without one:
        of any partition), or of the instance with encryption key ``instance``."""
        with self._parts_lock:
            parts = list(self._parts.values())
        if instance is not None:
            # The instances running here know their own; the database, every other (one
            # query, not one per partition).
            key = Curve25519PublicKey(instance)
            for part in parts:
                if part.service is not None:
                    info = part.service.host.instance_info_of(key)
                    if info is not None:
                        return info.serialize()
            return self._database.attestation_of(instance)
        number = None if routing_hint is None else partition_of(routing_hint, self.partitions)
        for part in sorted(parts, key=lambda part: part.number):
            if part.service is None or part.state != "serving":
                continue
            if number is None or number == part.number:
                return part.service.attestation()
        found = self._database.partition_attestation(number)
        if found is None:
            raise EnclaveStateError(
                "no host serves "
                + ("any partition" if number is None else f"partition {number}")
                + " at the moment (one is starting, or taking it over); try again in a moment"
            )
        return found

    def health(self) -> dict[str, object]:
        """What /health adds: the partitions and the leases this host holds."""
        with self._parts_lock:
            parts = sorted(self._parts.values(), key=lambda part: part.number)
        return {
            "partitions": self.partitions,
            "leases": [
                {
                    "partition": part.number,
                    "token": part.token,
                    "state": "restarting"
                    if part.service is not None and part.service.restarting
                    else part.state,
                }
                for part in parts
            ],
        }

    def close(self) -> None:
        """Give every partition up (other hosts take them at once) and disconnect."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._parts_lock:
            parts = list(self._parts.values())
        for part in parts:
            self._stop(part, "gave_up")
        self._database.close()
        self._lock_file.close()
