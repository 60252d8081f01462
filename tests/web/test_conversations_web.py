"""Conversation guarantees over the real web host (issue 9, observations 5 to 9)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sanctorum import (
    EnclaveClient,
    EnclaveInstanceInfo,
    EnclaveMode,
    EnclaveRollbackError,
    MailRefusedError,
    MailTooLargeError,
    WebTransport,
)
from sanctorum.common import Curve25519PrivateKey
from sanctorum.common.errors import StateDirInUseError
from sanctorum.web.service import EnclaveService
from tests.web.conftest import RunningHost, free_port, serve, web_client

Start = Callable[[str], RunningHost]


def _client(url: str) -> tuple[EnclaveClient, WebTransport]:
    return web_client(url, retry_for=20)


# -- 5. a saved client, restored in fresh processes with fresh transports ----------------------

_ONE_SEND = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from sanctorum import EnclaveClient, WebTransport

    path = Path(sys.argv[2])
    client = EnclaveClient.restore(path.read_bytes())
    with WebTransport(sys.argv[1]) as transport:
        client.start(transport)
        reply = client.send_mail(b"+1")
        path.write_bytes(client.save())
    print(reply.body.decode() if reply else "none")
    """
)


def test_a_saved_client_works_from_a_new_process_each_time(web_host: Start, tmp_path: Path) -> None:
    host = web_host("Counter")
    client, transport = _client(host.url)
    identity = tmp_path / "identity.json"
    identity.write_bytes(client.save())
    transport.close()
    outputs = []
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", _ONE_SEND, host.url, str(identity)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.strip())
    assert outputs == ["1", "2", "3"]


# -- 6. mail from a restarted enclave, acknowledged only once opened ---------------------------


def test_after_a_restart_the_enclave_can_mail_a_client_that_did_not_write(web_host: Start) -> None:
    host = web_host("Counter")
    client, transport = _client(host.url)
    assert client.send_mail(b"+1") is not None
    saved = client.save()
    transport.close()
    host.service.host.restart()
    key = client.public_key.encoded.hex()
    notice = f"notify {key} default {client.correlation_id} the auction closed".encode()
    host.service.host.call_enclave(notice)
    restored = EnclaveClient.restore(saved)
    with WebTransport(host.url) as fresh:
        restored.start(fresh)  # attests the new instance
        mail = restored.poll_mail()
        assert mail is not None
        assert mail.body == b"the auction closed"
        assert restored.poll_mail() is None


def test_mail_the_client_cannot_verify_stays_on_the_host(web_host: Start) -> None:
    from sanctorum import UnattestedSenderError
    from sanctorum.common import Curve25519PrivateKey
    from sanctorum.common.commands import PostMail

    host = web_host("Recorder")
    client, transport = _client(host.url)
    impostor = client.enclave_instance_info.create_post_office(Curve25519PrivateKey.generate())
    impostor.destination = client.public_key
    host.service.store.apply([PostMail(impostor.encrypt_mail(b"trust me"), client.correlation_id)])
    for _ in range(2):
        with pytest.raises(UnattestedSenderError):
            client.poll_mail()
    assert host.service.store.next_mail(client.correlation_id, None) is not None
    transport.close()


# -- 7. a refused mail spends nothing --------------------------------------------------------


def test_the_client_knows_the_hosts_limit_and_refuses_oversized_mail_itself(
    web_host: Start,
) -> None:
    host = web_host("Recorder")  # body limit 1 MiB
    client, transport = _client(host.url)
    assert transport.max_mail_size == 1 << 20
    with pytest.raises(MailTooLargeError, match=f"limit of {1 << 20} bytes"):
        client.send_mail(bytes(1 << 20))
    reply = client.send_mail(b"next")
    assert reply is not None
    assert reply.body == b"NEXT"
    transport.close()


def test_a_413_from_the_host_spends_no_sequence_number(web_host: Start) -> None:
    host = web_host("Recorder")
    client, transport = _client(host.url)
    transport._exchange.max_mail_size = None  # a client that did not learn the limit
    with pytest.raises(MailRefusedError, match="413"):
        client.send_mail(bytes(1 << 20))
    for body in (b"one", b"two"):
        reply = client.send_mail(body)
        assert reply is not None
        assert reply.body == body.upper()
    transport.close()


# -- 8. one host per state dir ---------------------------------------------------------------


def test_a_second_host_on_the_same_state_dir_is_refused(
    bundle_for: Callable[[str], Path], tmp_path: Path
) -> None:
    first = EnclaveService(bundle_for("Recorder"), EnclaveMode.SIMULATION, tmp_path)
    try:
        with pytest.raises(StateDirInUseError, match=f"pid {os.getpid()}"):
            EnclaveService(bundle_for("Recorder"), EnclaveMode.SIMULATION, tmp_path)
    finally:
        first.close()
    EnclaveService(bundle_for("Recorder"), EnclaveMode.SIMULATION, tmp_path).close()  # free again


def test_the_host_command_exits_at_once_when_the_state_dir_is_taken(
    bundle_for: Callable[[str], Path], tmp_path: Path
) -> None:
    bundle = bundle_for("Recorder")
    command = [sys.executable, "-m", "sanctorum", "host", str(bundle), "--state-dir"]
    first = subprocess.Popen(
        [*command, str(tmp_path), "--port", str(free_port())],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert first.stdout is not None
        assert any(" on http://" in line for line in first.stdout)  # it logged its URL
        started = time.monotonic()
        second = subprocess.run(
            [*command, str(tmp_path), "--port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode != 0
        assert f"in use by sanctorum host pid {first.pid}" in second.stdout + second.stderr
        assert time.monotonic() - started < 20
    finally:
        first.kill()
        first.wait()


# -- 9. a restored copy of the state dir is a rollback ---------------------------------------


def test_restoring_an_old_copy_of_the_state_dir_is_a_rollback(
    bundle_for: Callable[[str], Path], tmp_path: Path
) -> None:
    bundle = bundle_for("Counter")
    state = tmp_path / "state"

    def start() -> RunningHost:
        service = EnclaveService(bundle, EnclaveMode.SIMULATION, state)
        service.start()
        return serve(service)

    host = start()
    client, transport = _client(host.url)
    assert client.send_mail(b"+1") is not None
    transport.close()
    host.stop()
    shutil.copytree(state, tmp_path / "old copy")
    host = start()  # on another port: the client starts afresh on a new transport
    with WebTransport(host.url) as transport:
        client.start(transport)
        for _ in range(2):
            assert client.send_mail(b"+1") is not None
    host.stop()
    shutil.rmtree(state)
    shutil.copytree(tmp_path / "old copy", state)
    host = start()
    try:
        with WebTransport(host.url) as transport:
            client.start(transport)
            with pytest.raises(EnclaveRollbackError, match="rolled back"):
                client.send_mail(b"+1")
        assert json.loads(host.service.host.call_enclave(b"dump") or b"") == {"count": "2"}
    finally:
        host.stop()


def test_mail_from_an_instance_replaced_before_it_was_read_is_still_verified(
    web_host: Start,
) -> None:
    host = web_host("Counter")
    client, transport = _client(host.url)
    assert client.send_mail(b"+1") is not None
    host.service.host.restart()  # instance B seals a notice ...
    key = client.public_key.encoded.hex()
    host.service.host.call_enclave(f"notify {key} default {client.correlation_id} from B".encode())
    host.service.host.restart()  # ... and is replaced by C before the client looks
    notice = client.poll_mail()
    assert notice is not None
    assert notice.body == b"from B"
    reply = client.send_mail(b"+1")  # and the client talks to C
    assert reply is not None
    assert reply.body == b"2"
    transport.close()


def test_the_attestation_of_an_unknown_instance_is_404(web_host: Start) -> None:
    import httpx

    host = web_host("Recorder")
    with httpx.Client(base_url=host.url) as http:
        missing = http.get("/attestation", params={"instance": "00" * 32})
        assert missing.status_code == 404
        assert missing.json()["error"] == "BAD_REQUEST"
        assert http.get("/attestation", params={"instance": "xyz"}).status_code == 400
        current = http.get("/attestation").content
        key = EnclaveInstanceInfo.deserialize(current).encryption_key.encoded.hex()
        assert http.get("/attestation", params={"instance": key}).content == current


def test_the_attestation_of_an_instance_that_stored_mail_outlives_the_host(
    bundle_for: Callable[[str], Path], tmp_path: Path
) -> None:
    service = EnclaveService(bundle_for("Recorder"), EnclaveMode.SIMULATION, tmp_path)
    service.start()
    office = service.host.enclave_instance_info.create_post_office(Curve25519PrivateKey.generate())
    service.deliver(office.encrypt_mail(b"hello"), "c", None)
    first = service.host.enclave_instance_info
    service.close()
    again = EnclaveService(bundle_for("Recorder"), EnclaveMode.SIMULATION, tmp_path)
    again.start()
    try:
        assert again.attestation(first.encryption_key.encoded) == first.serialize()
        assert again.attestation(bytes(32)) is None
    finally:
        again.close()


def test_sequence_refusals_have_codes_of_their_own(web_host: Start) -> None:
    import httpx

    host = web_host("Recorder")
    client, transport = _client(host.url)
    first, second = client.seal(b"first").mail, client.seal(b"second").mail
    headers = {"Correlation-ID": "c"}
    with httpx.Client(base_url=host.url) as http:
        gap = http.post("/deliver-mail", content=second, headers=headers)
        assert (gap.status_code, gap.json()["error"]) == (400, "MAIL_GAP")
        assert http.post("/deliver-mail", content=first, headers=headers).status_code == 200
        replay = http.post("/deliver-mail", content=first, headers=headers)
        assert (replay.status_code, replay.json()["error"]) == (400, "MAIL_REPLAY")
    transport.close()


@pytest.mark.parametrize(
    "value", ["", "12a", "\u00b9", "\u00b2", "9" * 20, str(2**63), "-1", "1" * 5000]
)
def test_malformed_numbers_from_the_host_are_refused(value: str) -> None:
    from sanctorum.client.web import _number

    assert _number(value) is None


def test_a_hostile_error_body_cannot_crash_the_client() -> None:
    import httpx

    from sanctorum.client.web import _error_for

    nested = "[" * 100_000 + "]" * 100_000
    error = _error_for(httpx.Response(400, content=nested.encode()))
    assert isinstance(error, MailRefusedError)


def test_a_store_restored_from_an_older_copy_hands_out_new_ids(tmp_path: Path) -> None:
    from sanctorum.common.commands import PostMail
    from sanctorum.web.store import SqliteMailboxStore

    store = SqliteMailboxStore(tmp_path / "live" / "mailbox.sqlite3")
    store.apply([PostMail(b"one", "c")])
    store.close()
    shutil.copytree(tmp_path / "live", tmp_path / "copy")
    seen = []
    for directory in ("live", "copy"):  # the newer timeline, then a restored older copy
        again = SqliteMailboxStore(tmp_path / directory / "mailbox.sqlite3")
        again.apply([PostMail(b"two", "c")])
        first = again.next_mail("c", None)
        assert first is not None
        later = again.next_mail("c", first[0])
        assert later is not None
        seen.append(later[0])
        again.close()
    assert seen[0] != seen[1]  # an acknowledgement of one never drops the other
