"""The nginx fixture (tests/nginx.py) itself: a real nginx in front of two tiny HTTP servers that
record what reaches them."""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import tests.nginx
from tests.nginx import NginxProxy


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Upstream:
    """An HTTP/1.1 server on a loopback port, in threads, answering every request with its name
    and the body it was sent; it records the requests."""

    name: str
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        upstream = self
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn's web hosts

            def setup(self) -> None:
                super().setup()
                with upstream._lock:
                    upstream._connections.add(self.connection)

            def finish(self) -> None:
                with upstream._lock:
                    upstream._connections.discard(self.connection)
                super().finish()

            def answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with upstream._lock:
                    upstream.received.append(
                        Received(self.command, self.path, dict(self.headers.items()), body)
                    )
                reply = upstream.name.encode() + b"\n" + body
                self.send_response(200)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = answer  # noqa: N815
            do_POST = answer  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """As a host process that died: its port closed, its open connections too."""
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)


@pytest.fixture
def upstreams() -> Iterator[tuple[Upstream, Upstream]]:
    pair = (Upstream("one"), Upstream("two"))
    yield pair
    for upstream in pair:
        upstream.stop()


def send(
    proxy: NginxProxy, method: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        connection.request(method, "/mail/send?box=7", body=body or None, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_requests_reach_every_host_in_turn_with_their_headers_and_body(
    upstreams: tuple[Upstream, Upstream], tmp_path: Path
) -> None:
    # Larger than nginx's in-memory request buffer: the body goes through its temporary file.
    body = bytes(range(256)) * 400
    headers = {"Correlation-ID": "corr-42", "Acknowledge-Mail-ID": "mail-7"}
    with NginxProxy([upstream.url for upstream in upstreams], tmp_path / "nginx") as proxy:
        assert proxy.url == f"http://127.0.0.1:{proxy.port}"
        answers = [send(proxy, "POST", body, headers) for _ in range(6)]
    assert [status for status, _ in answers] == [200] * 6
    assert {reply.split(b"\n", 1)[1] for _, reply in answers} == {body}
    assert {reply.split(b"\n", 1)[0] for _, reply in answers} == {b"one", b"two"}
    one, two = upstreams
    assert one.received
    assert two.received
    assert len(one.received) + len(two.received) == 6
    for received in one.received + two.received:
        assert (received.method, received.path, received.body) == ("POST", "/mail/send?box=7", body)
        assert received.headers["Correlation-ID"] == "corr-42"
        assert received.headers["Acknowledge-Mail-ID"] == "mail-7"
        assert received.headers["Host"] == f"127.0.0.1:{proxy.port}"


def test_posts_go_to_the_live_host_when_one_is_down(
    upstreams: tuple[Upstream, Upstream], tmp_path: Path
) -> None:
    one, two = upstreams
    with NginxProxy([one.url, two.url], tmp_path / "nginx") as proxy:
        # Both hosts answer first, so nginx keeps connections to the one that then dies.
        assert [send(proxy, "GET")[0] for _ in range(4)] == [200] * 4
        one.stop()
        before = len(two.received)
        answers = [send(proxy, "POST", json.dumps({"n": n}).encode()) for n in range(10)]
    assert answers == [(200, b"two\n" + json.dumps({"n": n}).encode()) for n in range(10)]
    assert [received.body for received in two.received[before:]] == [
        json.dumps({"n": n}).encode() for n in range(10)
    ]


def test_a_missing_nginx_is_named_with_what_installs_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(tests.nginx, "_FALLBACK", tmp_path / "no-nginx")
    with pytest.raises(RuntimeError, match=r"nginx is not installed.*\.ci/ensure-nginx"):
        NginxProxy(["http://127.0.0.1:9"], tmp_path / "nginx")
    assert not (tmp_path / "nginx").exists()
