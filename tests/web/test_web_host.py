"""The web host's endpoints: answers, errors, and clients over HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from sanctorum import (
    AsyncEnclaveClient,
    AsyncWebTransport,
    EnclaveCallError,
    EnclaveClient,
    EnclaveCrashedError,
    EnclaveInstanceInfo,
    EnclaveMode,
    WebTransport,
)
from tests.web.conftest import RunningHost

Start = Callable[[str], RunningHost]


def _client(host: RunningHost) -> tuple[EnclaveClient, WebTransport]:
    transport = WebTransport(host.url)
    info = EnclaveInstanceInfo.deserialize(transport.get_attestation())
    client = EnclaveClient(f"C:{info.code_hash} SEC:INSECURE")
    client.start(transport)
    return client, transport


def test_attestation_health_and_openapi(web_host: Start) -> None:
    host = web_host("Recorder")
    with httpx.Client(base_url=host.url) as http:
        info = EnclaveInstanceInfo.deserialize(http.get("/attestation").content)
        assert info.enclave_mode.value == "simulation"
        assert http.get("/health").json() == {
            "status": "ok",
            "mode": "simulation",
            "max_mail_size": 1 << 20,
        }
        paths = http.get("/openapi.json").json()["paths"]
        assert set(paths) == {"/attestation", "/deliver-mail", "/poll-mail", "/health"}


def test_mail_round_trip_with_synchronous_reply_and_polling(web_host: Start) -> None:
    client, transport = _client(web_host("Recorder"))
    reply = client.send_mail(b"hello", envelope=b"e", topic="t")
    assert reply is not None
    assert (reply.body, reply.topic) == (b"HELLO", "t")
    assert client.send_mail(b"silent") is None
    assert client.poll_mail() is None
    transport.close()


def test_enclave_exceptions_are_reported(web_host: Start) -> None:
    client, transport = _client(web_host("Recorder"))
    with pytest.raises(EnclaveCallError, match="RuntimeError: handler failed"):
        client.send_mail(b"fail")
    reply = client.send_mail(b"after")  # still serving, numbering intact
    assert reply is not None
    assert reply.body == b"AFTER"
    transport.close()


def test_client_resends_after_the_enclave_restarts(web_host: Start) -> None:
    host = web_host("Recorder")
    client, transport = _client(host)
    assert client.send_mail(b"one") is not None
    old_key = client.enclave_instance_info.encryption_key
    host.service.host.restart()  # new instance, new key: the next mail cannot be decrypted
    reply = client.send_mail(b"two")
    assert reply is not None
    assert reply.body == b"TWO"
    assert client.enclave_instance_info.encryption_key != old_key
    transport.close()


def test_async_client(web_host: Start) -> None:
    host = web_host("Recorder")

    async def talk() -> list[bytes]:
        transport = AsyncWebTransport(host.url)
        info = EnclaveInstanceInfo.deserialize(await transport.get_attestation())
        client = AsyncEnclaveClient(f"C:{info.code_hash} SEC:INSECURE")
        await client.start(transport)
        replies = [await client.send_mail(text) for text in (b"a", b"b")]
        await transport.aclose()
        return [reply.body for reply in replies if reply is not None]

    assert asyncio.run(talk()) == [b"A", b"B"]


def _post(host: RunningHost, path: str, **arguments: object) -> httpx.Response:
    with httpx.Client(base_url=host.url) as http:
        return http.post(path, **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "arguments", "status", "message"),
    [
        ("/deliver-mail", {"content": b"x"}, 400, "Correlation-ID: Field required"),
        ("/deliver-mail", {"content": b"", "headers": {"Correlation-ID": "c"}}, 400, "not empty"),
        (
            "/deliver-mail",
            {"content": b"junk", "headers": {"Correlation-ID": "c"}},
            400,
            "malformed mail",
        ),
        (
            "/deliver-mail",
            {"content": b"x", "headers": {"Correlation-ID": "c" * 300}},
            400,
            "at most 256",
        ),
        (
            "/deliver-mail",
            {"content": b"x", "headers": {"Correlation-ID": "c", "Acknowledge-Mail-ID": "abc"}},
            400,
            "Acknowledge-Mail-ID",
        ),
        (
            "/deliver-mail",
            {"content": bytes(2 << 20), "headers": {"Correlation-ID": "c"}},
            413,
            "over the limit",
        ),
        ("/poll-mail", {}, 400, "Correlation-ID"),
        ("/poll-mail", {"headers": {"Correlation-ID": "bad id"}}, 400, "pattern"),
    ],
)
def test_bad_requests_get_json_errors_and_the_host_keeps_serving(
    web_host: Start, path: str, arguments: dict[str, object], status: int, message: str
) -> None:
    host = web_host("Recorder")
    response = _post(host, path, **arguments)
    assert response.status_code == status
    document = response.json()
    assert document["error"] == "BAD_REQUEST"
    assert message in document["message"]
    assert _post(host, "/poll-mail", headers={"Correlation-ID": "fine"}).status_code == 200


def test_mail_for_an_old_key_is_mail_decryption(web_host: Start) -> None:
    host = web_host("Recorder")
    client, transport = _client(host)
    mail = client.seal(b"sealed for the first instance").mail
    host.service.host.restart()
    response = _post(host, "/deliver-mail", content=mail, headers={"Correlation-ID": "c"})
    assert response.status_code == 400
    assert response.json()["error"] == "MAIL_DECRYPTION"
    transport.close()


def test_wrong_methods_and_paths(web_host: Start) -> None:
    host = web_host("Recorder")
    with httpx.Client(base_url=host.url) as http:
        assert http.get("/deliver-mail").status_code == 405
        assert http.get("/nowhere").status_code == 404
        assert http.post("/attestation").status_code == 405


def test_replies_are_kept_until_acknowledged(web_host: Start) -> None:
    host = web_host("Recorder")
    client, transport = _client(host)
    mail = client.seal(b"twice").mail
    first = _post(host, "/deliver-mail", content=mail, headers={"Correlation-ID": "r"})
    again = _post(host, "/poll-mail", headers={"Correlation-ID": "r"})
    assert first.content == again.content  # not acknowledged yet: offered again
    mail_id = first.headers["Mail-ID"]
    done = _post(
        host, "/poll-mail", headers={"Correlation-ID": "r", "Acknowledge-Mail-ID": mail_id}
    )
    assert done.content == b""
    assert json.loads(host.service.host.call_enclave(b"state") or b"{}")["mails"][0][0] == "twice"
    transport.close()


def test_503_while_the_enclave_restarts_then_service_resumes(web_host: Start) -> None:
    host = web_host("Recorder")
    client, transport = _client(host)
    with pytest.raises(EnclaveCrashedError):
        host.service.host.call_enclave(b"crash")  # the enclave process dies
    mail = client.seal(b"during the restart").mail
    response = _post(host, "/deliver-mail", content=mail, headers={"Correlation-ID": "c"})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    reply = client.send_mail(b"after")  # the transport waits out the 503s, then re-attests
    assert reply is not None
    assert reply.body == b"AFTER"
    transport.close()


def test_release_mode_hides_error_messages(web_host: Start) -> None:
    host = web_host("Recorder")
    host.service.mode = EnclaveMode.RELEASE  # what a release host would answer
    response = _post(host, "/deliver-mail", content=b"junk", headers={"Correlation-ID": "c"})
    assert response.status_code == 400
    assert response.json() == {"error": "BAD_REQUEST", "message": None}


def test_a_slow_enclave_does_not_block_the_event_loop(web_host: Start) -> None:
    host = web_host("Recorder")
    client, transport = _client(host)
    slow = threading.Thread(target=client.send_mail, args=(b"slow",))
    slow.start()
    time.sleep(0.2)  # the enclave is now inside its one-second receive_mail
    started = time.monotonic()
    with httpx.Client(base_url=host.url) as http:
        assert http.get("/health").status_code == 200
        assert http.get("/attestation").status_code == 200
    assert time.monotonic() - started < 0.5
    assert slow.is_alive()
    slow.join()
    transport.close()


def test_client_command(web_host: Start) -> None:
    from typer.testing import CliRunner

    from sanctorum.cli import app

    host = web_host("Recorder")
    info = EnclaveInstanceInfo.deserialize(httpx.get(f"{host.url}/attestation").content)
    runner = CliRunner()
    shown = runner.invoke(app, ["client", host.url])
    assert shown.exit_code == 0
    assert str(info.code_hash) in shown.output
    sent = runner.invoke(
        app,
        ["client", host.url, "--constraint", f"C:{info.code_hash} SEC:INSECURE", "--send", "hi"],
    )
    assert sent.exit_code == 0, sent.output
    assert "reply:            HI" in sent.output
    refused = runner.invoke(app, ["client", host.url, "--constraint", f"C:{info.code_hash}"])
    assert refused.exit_code == 1
    assert "SEC:SECURE" in refused.output
    unchecked = runner.invoke(app, ["client", host.url, "--send", "hi"])
    assert unchecked.exit_code == 1
    assert "--send needs --constraint" in unchecked.output


def test_an_enclave_process_killed_from_outside_is_restarted(web_host: Start) -> None:
    host = web_host("Recorder")
    client, transport = _client(host)
    host.service.host._platform.process.kill()  # type: ignore[attr-defined]
    reply = client.send_mail(b"after the kill")  # 503s while it restarts, then re-attests
    assert reply is not None
    assert reply.body == b"AFTER THE KILL"
    with httpx.Client(base_url=host.url) as http:
        assert http.get("/health").json()["status"] == "ok"
    transport.close()
