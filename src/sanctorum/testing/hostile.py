"""A hostile host: a test harness that plays every trick a malicious host can play.

DESIGN §7a assumes the host is the attacker: it sees every mail, may drop, duplicate, delay,
reorder and replay it, may restart the enclave from any copy of its sealed state, and may lie
about what happened to a mail. :class:`HostileHost` runs a real :class:`EnclaveHost` (mock or
simulation mode) and gives a test each of those moves as a method; :class:`HostileTransport`
is a client transport through it, whose next deliveries misbehave as the test scheduled::

    hostile = HostileHost(MyEnclave)
    transport = HostileTransport(hostile)
    client = EnclaveClient(constraint)
    client.start(transport)
    transport.schedule(DeliveryPlan.RESTART_THEN_LIE)  # the double-application attack
    client.send_mail(b"+1")

Everything the host saw is recorded, so tests can check what happened: every sealed state
(:attr:`HostileHost.sealed_states`, with the state each one grew from), every delivery and its
outcome, every mail the enclave posted, every acknowledgement a client sent.

While nobody misbehaves, the hostile host behaves as :class:`InMemoryMailbox` and
:class:`InProcessTransport` do: mail is queued per routing hint with ids, a reader acknowledges
by the id of the last mail it opened (honoured only while that mail is still queued), and a
transport applies the acknowledgement before it delivers.
"""

from __future__ import annotations

import enum
import itertools
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal

from sanctorum.attestation.instance_info import EnclaveInstanceInfo
from sanctorum.attestation.mock import MockConfiguration
from sanctorum.client.transport import ReceivedMail
from sanctorum.common.commands import HostCallback, MailCommand, PostMail, StoreSealedState
from sanctorum.common.errors import (
    EnclaveStateError,
    MailDecryptionError,
    MailFormatError,
    MailRefusedError,
    SanctorumError,
    TransportError,
)
from sanctorum.common.keys import Curve25519PublicKey
from sanctorum.common.mode import EnclaveMode
from sanctorum.enclave.base import Enclave
from sanctorum.host.host import EnclaveHost
from sanctorum.mail.format import DEFAULT_MAX_MAIL_SIZE

LATEST: Final = "latest"
"""For :meth:`HostileHost.restart`: the newest state of the running instance (no rollback)."""

StateChoice = int | None | Literal["latest"] | tuple[bytes, ...]
"""Which sealed state a restart starts from: an index into :attr:`HostileHost.sealed_states`,
None (no state at all: the enclave starts empty), :data:`LATEST`, or a tuple of blobs of the
test's own making (say, a journal with a record dropped, repeated or moved)."""

CallbackAnswer = bytes | None | BaseException | Callable[[bytes], bytes | None]
"""What a host callback made by :meth:`HostileHost.callback` does: answer these bytes (or
None), raise this exception, or call this function."""


class DeliveryPlan(enum.Enum):
    """What :class:`HostileTransport` does with one mail a client asks it to deliver.

    Plans that deliver first and then lie do not lie if the enclave itself refused the mail:
    the client then sees the enclave's real error, as from an honest host.
    """

    HONEST = "honest"
    """Deliver it and hand over the oldest mail waiting for the client."""
    DROP = "drop"
    """Do not deliver it, and answer as if it was delivered (the client's sequence number is
    spent: its next mail on the topic meets a gap)."""
    HOLD = "hold"
    """Keep it (:attr:`HostileHost.held`) to deliver later with :meth:`HostileHost.release`;
    answer as if it was delivered."""
    DUPLICATE = "duplicate"
    """Deliver it twice (the second outcome is recorded, not reported)."""
    HIDE_REPLY = "hide-reply"
    """Deliver it, but hand over nothing: the reply stays queued for a later poll."""
    LIE_BEFORE = "lie-before"
    """Answer ``MAIL_DECRYPTION`` (:class:`MailDecryptionError`) without delivering it."""
    LIE_AFTER = "lie-after"
    """Deliver it, then answer ``MAIL_DECRYPTION``."""
    RESTART_THEN_LIE = "restart-then-lie"
    """Deliver it, restart the enclave from its latest state, then answer ``MAIL_DECRYPTION``
    (issue 9's double-application attack: the client resends to the new instance)."""
    REFUSE = "refuse"
    """Refuse it (:class:`MailRefusedError`) without delivering it: an honest refusal."""
    REFUSE_AFTER = "refuse-after"
    """Deliver it, then claim it was refused."""
    BREAK_BEFORE = "break-before"
    """Fail with :class:`TransportError` (outcome unknown) without delivering it."""
    BREAK_AFTER = "break-after"
    """Deliver it, then fail with :class:`TransportError`."""


@dataclass(frozen=True)
class Delivery:
    """One delivery of a client's mail to the enclave, made by the hostile host."""

    index: int
    """Its place in :attr:`HostileHost.deliveries`."""
    mail: bytes
    routing_hint: str | None
    instance: int
    """The enclave instance it went to (:attr:`HostileHost.instance` at the time)."""
    error: SanctorumError | None
    """What the enclave raised (None: it accepted the mail)."""
    nested: bool
    """Made inside a host callback, so part of the enclosing call's transaction."""


@dataclass(frozen=True)
class PostedMail:
    """A mail the enclave asked the host to post (a :class:`PostMail` command)."""

    index: int
    """Its place in :attr:`HostileHost.posts`."""
    mail_id: int
    """The id it was first queued under."""
    routing_hint: str | None
    mail: bytes
    state: int | None
    """The sealed state committed in the same call (an index into
    :attr:`HostileHost.sealed_states`), or None if that call committed none."""
    instance: int


@dataclass(frozen=True)
class QueuedMail:
    """A mail waiting for a reader, as a transport hands it over."""

    mail_id: int
    mail: bytes
    post: int | None
    """The :class:`PostedMail` it is (a copy of), or None for bytes the host made up."""


@dataclass(frozen=True)
class HeldMail:
    """A client's mail the host kept instead of delivering (:attr:`DeliveryPlan.HOLD`)."""

    mail: bytes
    routing_hint: str | None


@dataclass(frozen=True)
class Restart:
    """One restart of the enclave by the hostile host."""

    state: int | None
    """The sealed state it started from (None: none)."""
    rollback: bool
    """Whether that was not the newest state of the instance it replaced."""
    fresh_host: bool
    """Whether a fresh :class:`EnclaveHost` was loaded (else :meth:`EnclaveHost.restart`)."""


class HostileHost:
    """A malicious host around a real :class:`EnclaveHost`, for tests.

    ``enclave`` and ``mode`` (and ``mock_config``) are as for :meth:`EnclaveHost.load`; the
    enclave is started at once, from ``sealed_state`` if given, with the hostile host's own
    ``on_mail_commands``. Use as a context manager or call :meth:`close`.

    The honest moves are :meth:`deliver`, :meth:`next_mail` and :meth:`call_enclave`; the
    others are attacks. Nothing it does is hidden from the test: see :attr:`sealed_states`,
    :attr:`state_parents`, :attr:`head`, :attr:`deliveries`, :attr:`posts`, :attr:`held`,
    :attr:`restarts` and :attr:`acknowledgements`.
    """

    def __init__(
        self,
        enclave: type[Enclave] | str | os.PathLike[str],
        mode: EnclaveMode | str | None = None,
        *,
        mock_config: MockConfiguration | None = None,
        sealed_state: tuple[bytes, ...] | None = None,
    ) -> None:
        self._enclave = enclave
        self._mode = mode
        self._mock_config = mock_config
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._queues: dict[str | None, list[QueuedMail]] = {}
        self._mail_by_id: dict[int, QueuedMail] = {}
        self._depth = 0  # calls into the enclave in progress (nested deliveries)
        self.sealed_states: list[tuple[bytes, ...]] = []
        """Every sealed state the enclave left, oldest first (a state given to the constructor
        is the first), each as the blobs that restore it: the snapshot it grew from and the
        journal records after it, up to its commit's."""
        self.state_parents: list[int | None] = []
        """For each of :attr:`sealed_states`, the state it grew from (None: an empty start)."""
        self.head: int | None = None
        """The newest state of the running instance (where it started, or the last it
        stored); None while it has none."""
        self.instance = 0
        """Counts enclave instances: 0 for the first, one more at each restart."""
        self.deliveries: list[Delivery] = []
        """Every delivery of a client's mail to the enclave, in order, with its outcome."""
        self.posts: list[PostedMail] = []
        """Every mail the enclave posted, in order, whatever became of it afterwards."""
        self.held: list[HeldMail] = []
        """Mail kept by :attr:`DeliveryPlan.HOLD` (or :meth:`hold`), not yet released."""
        self.restarts: list[Restart] = []
        """Every restart, in order."""
        self.acknowledgements: dict[str | None, list[int]] = {}
        """Per routing hint, every acknowledgement id a reader sent (the ids of mail it
        opened), in order."""
        self.instance_infos: list[EnclaveInstanceInfo] = []
        """The attestation of each instance, by :attr:`instance`."""
        self.serve_old_attestations = True
        """Whether :meth:`attestation` serves the attestations of instances it replaced (an
        honest host does, so clients can check mail those instances queued)."""
        if sealed_state is not None:
            self._record_state(sealed_state)
        self.host = self._load()
        """The :class:`EnclaveHost` running the current instance (replaced by a restart with
        ``fresh_host``)."""
        self.host.start(sealed_state=sealed_state, on_mail_commands=self._on_mail_commands)
        self.instance_infos.append(self.host.enclave_instance_info)

    # -- the enclave -------------------------------------------------------------------------

    def _load(self) -> EnclaveHost:
        if isinstance(self._enclave, type):
            return EnclaveHost.load(self._enclave, self._mode, mock_config=self._mock_config)
        return EnclaveHost.load(self._enclave, self._mode)

    def attestation(self, instance: Curve25519PublicKey | None = None) -> bytes:
        """The serialized attestation of the running instance, or of the instance with
        encryption key ``instance`` (one that ran before); :class:`TransportError` if the host
        has none (or :attr:`serve_old_attestations` is off)."""
        if instance is None:
            return self.host.enclave_instance_info.serialize()
        with self._lock:
            for info in self.instance_infos:
                if info.encryption_key == instance and (
                    self.serve_old_attestations or info is self.instance_infos[-1]
                ):
                    return info.serialize()
        raise TransportError(f"the host has no attestation of enclave key {instance}")

    def _on_mail_commands(self, commands: list[MailCommand]) -> None:
        with self._lock:
            state: int | None = None
            for command in commands:
                if isinstance(command, StoreSealedState):
                    grown = () if command.snapshot or self.head is None else self.current
                    state = self._record_state((*grown, command.blob))
            for command in commands:
                if isinstance(command, PostMail):
                    post = PostedMail(
                        len(self.posts),
                        next(self._ids),
                        command.routing_hint,
                        command.mail,
                        state,
                        self.instance,
                    )
                    self.posts.append(post)
                    self._enqueue(command.routing_hint, post.mail_id, post.mail, post.index)

    @property
    def current(self) -> tuple[bytes, ...]:
        """The blobs that restore the running instance's newest state (empty: none)."""
        with self._lock:
            return () if self.head is None else self.sealed_states[self.head]

    def _record_state(self, blobs: tuple[bytes, ...]) -> int:
        self.sealed_states.append(blobs)
        self.state_parents.append(self.head)
        self.head = len(self.sealed_states) - 1
        return self.head

    def call_enclave(self, data: bytes, callback: HostCallback | None = None) -> bytes | None:
        """:meth:`EnclaveHost.call_enclave` (see :meth:`callback` for answers of your
        choice); the mail it posts is queued."""
        self._depth += 1
        try:
            return self.host.call_enclave(data, callback)
        finally:
            self._depth -= 1

    @staticmethod
    def callback(*answers: CallbackAnswer) -> HostCallback:
        """A host callback that gives ``answers`` in turn, the last one for ever after: bytes or
        None are answered, an exception is raised, a function is called with the request
        (it may call back into the enclave, e.g. :meth:`release` a held mail)."""
        if not answers:
            raise ValueError("give at least one answer")
        pending = deque(answers)

        def answer(request: bytes) -> bytes | None:
            item = pending.popleft() if len(pending) > 1 else pending[0]
            if isinstance(item, BaseException):
                raise item
            if callable(item):
                return item(request)
            return item

        return answer

    # -- delivering client mail --------------------------------------------------------------

    def deliver(self, mail: bytes, routing_hint: str | None = None) -> None:
        """Deliver ``mail`` to the running instance, honestly; raises what the enclave
        raised. Posted mail is queued; the delivery is recorded in :attr:`deliveries`."""
        error = self.try_deliver(mail, routing_hint)
        if error is not None:
            raise error

    def try_deliver(self, mail: bytes, routing_hint: str | None = None) -> SanctorumError | None:
        """:meth:`deliver`, returning the enclave's error (or None) instead of raising it."""
        nested = self._depth > 0
        self._depth += 1
        try:
            self.host.deliver_mail(mail, routing_hint)
        except SanctorumError as error:
            failure: SanctorumError | None = error
        else:
            failure = None
        finally:
            self._depth -= 1
        with self._lock:
            self.deliveries.append(
                Delivery(len(self.deliveries), mail, routing_hint, self.instance, failure, nested)
            )
        return failure

    def replay(self, index: int) -> SanctorumError | None:
        """Deliver again the mail of ``deliveries[index]``, to the same routing hint (for
        another, :meth:`try_deliver` its mail); returns the enclave's error or None. The
        outcome is recorded in :attr:`deliveries` too."""
        delivery = self.deliveries[index]
        return self.try_deliver(delivery.mail, delivery.routing_hint)

    def hold(self, mail: bytes, routing_hint: str | None) -> None:
        """Keep ``mail`` to deliver later (:meth:`release`)."""
        with self._lock:
            self.held.append(HeldMail(mail, routing_hint))

    def release(
        self, index: int = 0, *, routing_hint: str | Literal["same"] | None = "same"
    ) -> SanctorumError | None:
        """Deliver the held mail at ``index`` now (late, perhaps to another instance or out of
        order), with its own routing hint or another one (misrouted: replies go elsewhere);
        returns the enclave's error or None."""
        with self._lock:
            held = self.held.pop(index)
        hint = held.routing_hint if routing_hint == "same" else routing_hint
        return self.try_deliver(held.mail, hint)

    # -- restarting the enclave --------------------------------------------------------------

    def restart(self, state: StateChoice = LATEST, *, fresh_host: bool = False) -> int | None:
        """Close the running instance and start a new one (new keys) from ``state``: an index
        into :attr:`sealed_states` (an older one is a rollback), None (no state: the enclave
        starts empty), :data:`LATEST`, or blobs of the test's making (recorded as a new state
        if the enclave starts from them). With ``fresh_host`` a new :class:`EnclaveHost` is
        loaded, else :meth:`EnclaveHost.restart` is used. Returns the state started from."""
        if isinstance(state, tuple):
            blob: tuple[bytes, ...] | None = state
            chosen: int | None = len(self.sealed_states)  # recorded once the enclave starts
        else:
            chosen = self.head if state == LATEST else state
            if chosen is not None and not 0 <= chosen < len(self.sealed_states):
                raise IndexError(
                    f"no sealed state {chosen}: the host has seen {self.sealed_states}"
                )
            blob = None if chosen is None else self.sealed_states[chosen]
        with self._lock:
            record = Restart(chosen, chosen != self.head, fresh_host)
        if fresh_host:
            self.host.close()
            self.host = self._load()
            self.host.start(sealed_state=blob, on_mail_commands=self._on_mail_commands)
        else:
            self.host.sealed_state = blob
            self.host.restart()
        with self._lock:
            if isinstance(state, tuple):
                self.sealed_states.append(state)
                self.state_parents.append(None)
            self.restarts.append(record)
            self.instance += 1
            self.head = chosen
            self.instance_infos.append(self.host.enclave_instance_info)
        return chosen

    def close(self) -> None:
        """Shut the enclave down."""
        self.host.close()

    def __enter__(self) -> HostileHost:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- mail for readers --------------------------------------------------------------------

    def _enqueue(
        self, routing_hint: str | None, mail_id: int, mail: bytes, post: int | None
    ) -> QueuedMail:
        queued = QueuedMail(mail_id, mail, post)
        self._queues.setdefault(routing_hint, []).append(queued)
        self._mail_by_id[mail_id] = queued
        return queued

    def queued(self, routing_hint: str | None) -> list[QueuedMail]:
        """The mail waiting for ``routing_hint``, oldest first (a copy)."""
        with self._lock:
            return list(self._queues.get(routing_hint, ()))

    def mail_by_id(self, mail_id: int) -> QueuedMail:
        """The mail once queued under ``mail_id`` (also after it left the queue)."""
        with self._lock:
            return self._mail_by_id[mail_id]

    def acknowledge(self, routing_hint: str | None, acknowledged: int) -> None:
        """A reader opened mail ``acknowledged``: drop it and every mail before it, if it is
        still queued (as :class:`InMemoryMailbox` does)."""
        with self._lock:
            self.acknowledgements.setdefault(routing_hint, []).append(acknowledged)
            queue = self._queues.get(routing_hint, [])
            for position, queued in enumerate(queue):
                if queued.mail_id == acknowledged:
                    del queue[: position + 1]
                    break

    def next_mail(
        self, routing_hint: str | None, acknowledged: int | None = None
    ) -> QueuedMail | None:
        """Drop mail up to ``acknowledged`` (see :meth:`acknowledge`); the oldest mail left for
        ``routing_hint``, or None. The mail stays queued until it is acknowledged."""
        with self._lock:
            if acknowledged is not None:
                self.acknowledge(routing_hint, acknowledged)
            queue = self._queues.get(routing_hint)
            return queue[0] if queue else None

    def drop_queued(self, routing_hint: str | None, position: int = 0) -> QueuedMail:
        """Delete the mail at ``position`` in the queue of ``routing_hint`` unread."""
        with self._lock:
            return self._queues[routing_hint].pop(position)

    def duplicate_queued(self, routing_hint: str | None, position: int = 0) -> QueuedMail:
        """Queue a second copy (a new id) of the mail at ``position``, right behind it."""
        with self._lock:
            queue = self._queues[routing_hint]
            original = queue[position]
            copy = QueuedMail(next(self._ids), original.mail, original.post)
            queue.insert(position + 1, copy)
            self._mail_by_id[copy.mail_id] = copy
            return copy

    def move_queued(self, routing_hint: str | None, source: int, destination: int) -> None:
        """Reorder: move the mail at ``source`` to ``destination`` in the queue."""
        with self._lock:
            queue = self._queues[routing_hint]
            queue.insert(destination, queue.pop(source))

    def inject(
        self, routing_hint: str | None, mail: bytes | PostedMail, position: int | None = None
    ) -> QueuedMail:
        """Queue ``mail`` for ``routing_hint`` under a new id, at ``position`` (default: last):
        a replay of any mail ever posted, or bytes the host made up."""
        with self._lock:
            post = mail.index if isinstance(mail, PostedMail) else None
            data = mail.mail if isinstance(mail, PostedMail) else bytes(mail)
            queued = QueuedMail(next(self._ids), data, post)
            queue = self._queues.setdefault(routing_hint, [])
            queue.insert(len(queue) if position is None else position, queued)
            self._mail_by_id[queued.mail_id] = queued
            return queued

    def routing_hints(self) -> Iterable[str | None]:
        """Every routing hint mail was ever queued for."""
        with self._lock:
            return list(self._queues)


class HostileTransport:
    """A client transport (:class:`EnclaveTransport`) through a :class:`HostileHost`.

    Each :meth:`deliver_mail` follows the next plan from :meth:`schedule` (honest when none is
    left), whatever the mail: a client's resend (after ``MAIL_DECRYPTION``, or of a mail whose
    delivery had an unknown outcome) is a delivery of its own. Errors are those of
    :class:`InProcessTransport`: a malformed mail or an oversized one is
    :class:`MailRefusedError`; the enclave's :class:`MailDecryptionError`,
    :class:`MailSequenceError` and :class:`EnclaveCallError` reach the client as they are.
    Records what the client sent (:attr:`sent`) and which plan each delivery followed
    (:attr:`followed`).
    """

    def __init__(self, hostile: HostileHost, *, max_mail_size: int = DEFAULT_MAX_MAIL_SIZE) -> None:
        self.hostile = hostile
        self._max_mail_size = max_mail_size
        self.plans: deque[DeliveryPlan] = deque()
        """Plans for the next deliveries, first first."""
        self.sent: list[bytes] = []
        """Every mail a client asked this transport to deliver, in order."""
        self.followed: list[DeliveryPlan] = []
        """The plan each of :attr:`sent` followed."""

    def schedule(self, *plans: DeliveryPlan) -> None:
        """Follow ``plans`` for the next deliveries, in order, after those already scheduled."""
        self.plans.extend(plans)

    @property
    def max_mail_size(self) -> int:
        return self._max_mail_size

    def get_attestation(self, instance: Curve25519PublicKey | None = None) -> bytes:
        return self.hostile.attestation(instance)

    def poll_mail(self, correlation_id: str, acknowledge: int | None) -> ReceivedMail | None:
        found = self.hostile.next_mail(correlation_id, acknowledge)
        return None if found is None else ReceivedMail(found.mail_id, found.mail)

    def deliver_mail(
        self, mail: bytes, correlation_id: str, acknowledge: int | None
    ) -> ReceivedMail | None:
        plan = self.plans.popleft() if self.plans else DeliveryPlan.HONEST
        self.sent.append(mail)
        self.followed.append(plan)
        if len(mail) > self._max_mail_size:
            raise MailRefusedError(
                f"the host refused a mail of {len(mail)} bytes: its limit is "
                f"{self._max_mail_size} bytes"
            )
        if acknowledge is not None:  # first, so it can never name mail this delivery made
            self.hostile.acknowledge(correlation_id, acknowledge)
        hostile = self.hostile
        if plan is DeliveryPlan.DROP:
            return self.poll_mail(correlation_id, None)
        if plan is DeliveryPlan.HOLD:
            hostile.hold(mail, correlation_id)
            return self.poll_mail(correlation_id, None)
        if plan is DeliveryPlan.LIE_BEFORE:
            raise _lie()
        if plan is DeliveryPlan.REFUSE:
            raise MailRefusedError("the host refused the mail (a hostile host's refusal)")
        if plan is DeliveryPlan.BREAK_BEFORE:
            raise TransportError("the connection broke (a hostile host's doing)")
        self._deliver(mail, correlation_id)
        if plan is DeliveryPlan.DUPLICATE:
            hostile.try_deliver(mail, correlation_id)
        elif plan is DeliveryPlan.HIDE_REPLY:
            return None
        elif plan is DeliveryPlan.LIE_AFTER:
            raise _lie()
        elif plan is DeliveryPlan.RESTART_THEN_LIE:
            hostile.restart(LATEST)
            raise _lie()
        elif plan is DeliveryPlan.REFUSE_AFTER:
            raise MailRefusedError("the host refused the mail (it lies: it delivered it)")
        elif plan is DeliveryPlan.BREAK_AFTER:
            raise TransportError("the connection broke after the mail was delivered")
        return self.poll_mail(correlation_id, None)

    def _deliver(self, mail: bytes, correlation_id: str) -> None:
        try:
            self.hostile.deliver(mail, correlation_id)
        except MailFormatError as error:
            raise MailRefusedError(f"the enclave refused the mail: {error}") from error
        except EnclaveStateError as error:
            raise MailRefusedError(f"the enclave is not running: {error}") from error


def _lie() -> MailDecryptionError:
    return MailDecryptionError(
        "the enclave could not decrypt the mail (a hostile host's answer: it may be a lie)"
    )
