"""A real nginx reverse proxy for the tests, on loopback, in front of several web hosts.

Deployments put the web hosts (``sanctorum host``, HTTP/1.1 servers run by uvicorn) behind a
reverse proxy that spreads requests over them and routes around one that died; the tests that
check a client sees nothing of that need the real thing, as tests/postgres.py gives them a real
PostgreSQL. The ``nginx`` binary comes from the distribution's package (.ci/ensure-nginx installs
it when it is missing); everything it writes (configuration, pid file, logs, temporary files)
stays in the directory it is given, so it needs nothing else on the machine and never touches
the package's own configuration or port 80.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

# Debian installs nginx in /usr/sbin, which an ordinary user's PATH often leaves out.
_FALLBACK = Path("/usr/sbin/nginx")
_START_TIMEOUT = 10.0


def _binary() -> str:
    found = shutil.which("nginx")
    if found is not None:
        return found
    if os.access(_FALLBACK, os.X_OK):
        return str(_FALLBACK)
    raise RuntimeError(
        "nginx is not installed: the reverse-proxy tests start a real nginx. Install it "
        "(as root: apt-get install nginx), as .ci/ensure-nginx does"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _server(upstream: str) -> str:
    """``host:port`` of an upstream base URL such as ``http://127.0.0.1:8080``."""
    parts = urlsplit(upstream)
    if parts.scheme != "http" or parts.port is None or parts.path not in ("", "/"):
        raise ValueError(f"an upstream is a base URL http://HOST:PORT, not {upstream!r}")
    return parts.netloc


def _quoted(path: Path) -> str:
    text = str(path)
    if any(character in text for character in '"\\$'):
        raise ValueError(f"nginx's configuration cannot name the path {text!r}")
    return f'"{text}"'


def _config(servers: Sequence[str], directory: Path, port: int, as_root: bool) -> str:
    """The configuration: one upstream of ``servers`` behind a server on loopback ``port``."""

    def path(name: str) -> str:
        return _quoted(directory / name)

    upstream = "".join(
        f"        server {server} max_fails=1 fail_timeout=2s;\n" for server in servers
    )
    # Under root the workers would otherwise run as nobody, who cannot enter a private temporary
    # directory (pytest's are 0700) to write request bodies; `user` is ignored otherwise.
    user = "user root;\n" if as_root else ""
    return f"""\
# Written by tests/nginx.py: a reverse proxy for the tests, everything it writes in this directory.
{user}worker_processes 1;
pid {path("nginx.pid")};
error_log {path("error.log")} warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log {path("access.log")};
    client_body_temp_path {path("client_body_temp")};
    proxy_temp_path {path("proxy_temp")};
    fastcgi_temp_path {path("fastcgi_temp")};
    uwsgi_temp_path {path("uwsgi_temp")};
    scgi_temp_path {path("scgi_temp")};

    upstream hosts {{
{upstream}        keepalive 32;
        # Shorter than uvicorn's keep-alive (5 s): nginx closes an idle connection before the
        # host does, so a POST is never sent on one the host is closing (nginx would not retry it).
        keepalive_timeout 4s;
    }}

    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 32m;

        location = /nginx-health {{
            access_log off;
            default_type text/plain;
            return 200 "ok\\n";
        }}

        location / {{
            proxy_pass http://hosts;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Connection "";
            # A request whose connection to a host failed goes to the next one; a POST only when
            # it was never sent (nginx's default for requests that are not idempotent).
            proxy_next_upstream error timeout;
            proxy_connect_timeout 1s;
            proxy_read_timeout 120s;
            proxy_send_timeout 120s;
            proxy_request_buffering on;
            proxy_buffering on;
        }}
    }}
}}
"""


class NginxProxy:
    """Starts with the object; :meth:`stop` ends it (or leave the ``with`` block). :attr:`url`
    is the proxy's base URL: it spreads requests over ``upstreams`` (base URLs such as
    ``http://127.0.0.1:8080``) in turn, passing the next one a request whose connection to a host
    failed. Its configuration, logs and temporary files are in ``directory``."""

    def __init__(self, upstreams: Sequence[str], directory: Path) -> None:
        if not upstreams:
            raise ValueError("the proxy needs at least one upstream")
        servers = [_server(upstream) for upstream in upstreams]
        binary = _binary()
        self.directory = directory.resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = self.directory / "nginx.conf"
        self.config.write_text(
            _config(servers, self.directory, self.port, as_root=os.geteuid() == 0)
        )
        self._log = (self.directory / "nginx.out").open("ab")
        self._process = subprocess.Popen(
            [binary, "-p", f"{self.directory}/", "-c", str(self.config), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_until_answering()
        except BaseException:
            self.stop()
            raise

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"nginx exited ({self._process.returncode}) on start:\n{self._errors()}"
                )
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                try:
                    connection.request("GET", "/nginx-health")
                    if connection.getresponse().status == 200:
                        return
                finally:
                    connection.close()
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"nginx did not answer on {self.url} within {_START_TIMEOUT:.0f} s:\n"
                    f"{self._errors()}"
                )
            time.sleep(0.02)

    def _errors(self) -> str:
        """The tail of what nginx said: its error log, then its own output."""
        lines: list[str] = []
        for name in ("error.log", "nginx.out"):
            with contextlib.suppress(OSError):
                lines += (self.directory / name).read_text(errors="replace").splitlines()[-20:]
        return "\n".join(lines) or "(nginx logged nothing)"

    def stop(self) -> None:
        """Ends nginx (its master and worker) and waits for it; doing it again does nothing."""
        if self._process.poll() is None:
            self._process.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        self._log.close()

    def __enter__(self) -> NginxProxy:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
