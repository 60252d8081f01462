"""A cluster under a host that duplicates and replays: a Hypothesis state machine.

One client talks to a two-instance cluster (mock mode, a KDS over HTTP) through whichever host
a rule picks, while the host also delivers copies of any mail the client ever sealed to either
instance, and restarts instances from their latest state. Whatever the order:

- no instance applies a request twice (its own state records what it applied);
- every answer the client gets is to the request it sent;
- the client never reports a rollback (none happened: the host only sent copies), which it
  would if it mixed up the two instances' lines of state.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from sanctorum import EnclaveMode, InProcessTransport, MailSequenceError
from sanctorum.kds.enclave import KdsEnclave
from tests.kds.test_cluster_mail import Cluster
from tests.kds.test_kds_server import Kds

RECORDER = """
from sanctorum import Enclave


class Member(Enclave):
    \"\"\"Records each request body it applies; a second application is marked.\"\"\"

    def receive_mail(self, mail, routing_hint):
        key = "applied:" + mail.body.decode()
        if key in self.persistent_map:
            self.persistent_map["twice"] = mail.body
        self.persistent_map[key] = b"1"
        self.post_mail(self.post_office(mail).encrypt_mail(b"re:" + mail.body), routing_hint)
"""


@pytest.fixture(scope="module")
def kds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kds]:
    running = Kds(KdsEnclave, tmp_path_factory.mktemp("kds"), EnclaveMode.MOCK)
    yield running
    running.stop()


def test_a_cluster_under_a_duplicating_host(kds: Kds, tmp_path: Path) -> None:
    runs = itertools.count()

    class ClusterMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.cluster = Cluster(kds, tmp_path / f"run-{next(runs)}", RECORDER)
            self.client = self.cluster.client(0)
            self.sealed: list[bytes] = []
            self.requests = itertools.count()

        def teardown(self) -> None:
            self.cluster.close()

        def _through(self, host: int) -> None:
            self.client.start(InProcessTransport(self.cluster.hosts[host]))

        @rule(host=st.integers(0, 1))
        def send(self, host: int) -> None:
            self._through(host)
            body = f"r{next(self.requests)}".encode()
            answer = self.client.send_mail(body)
            assert answer is not None
            assert answer.body == b"re:" + body
            doubt = self.client.in_doubt("default")
            assert doubt is None
            self.sealed.append(self.client.seal(body + b"-unsent").mail)  # the host may keep it

        @rule(host=st.integers(0, 1), data=st.data())
        def copy(self, host: int, data: st.DataObject) -> None:
            """The host delivers a copy of a mail the client sealed, to either instance."""
            if not self.sealed:
                return
            mail = data.draw(st.sampled_from(self.sealed))
            # Refused if that instance had it, or a later one: then nothing is applied.
            with contextlib.suppress(MailSequenceError):
                self.cluster.hosts[host].deliver_mail(mail, self.client.correlation_id)

        @rule(host=st.integers(0, 1))
        def poll(self, host: int) -> None:
            self._through(host)
            while (mail := self.client.poll_mail()) is not None:
                assert mail.body.startswith(b"re:")

        @rule(host=st.integers(0, 1))
        def restart(self, host: int) -> None:
            self.cluster.hosts[host].restart()  # from its latest state: no rollback

        @invariant()
        def applied_at_most_once_per_instance(self) -> None:
            for host in self.cluster.hosts:
                enclave: Any = host.mock_enclave
                assert "twice" not in enclave.persistent_map

    run_state_machine_as_test(
        ClusterMachine,
        settings=settings(
            max_examples=15,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
