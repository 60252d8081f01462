"""Runs the web host: uvicorn serving the app of an (already started) EnclaveService, logging
the URL it really listens on (with ``--port 0``, the port the system chose) once it does."""

from __future__ import annotations

import logging
import socket

import uvicorn

from sanctorum.web.app import DEFAULT_MAX_BODY_SIZE, create_app
from sanctorum.web.logs import ASGIApp, log_event
from sanctorum.web.service import WebService


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service: WebService) -> None:
        super().__init__(config)
        self.service = service
        self.urls: list[str] = []

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        self.urls = [
            _url(listener.getsockname())
            for server in self.servers
            for listener in server.sockets
            if listener.family in (socket.AF_INET, socket.AF_INET6)
        ]
        if not self.urls:
            return
        log_event(
            logging.INFO,
            "serving",
            f"serving {self.service.name} ({self.service.mode.value}) on "
            + " and ".join(self.urls),
            enclave=self.service.name,
            mode=self.service.mode.value,
            url=self.urls[0],
            urls=self.urls,
        )

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        # Now, not after run() returns: uvicorn re-raises a SIGTERM once it has shut down,
        # which ends the process before the caller's cleanup runs.
        self.service.close()


def _url(address: tuple[object, ...] | str) -> str:
    if isinstance(address, str):  # not an IP socket
        return address
    host, port = str(address[0]), address[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run_web_host(
    service: WebService,
    *,
    bind: str = "127.0.0.1",
    port: int = 8080,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    app: ASGIApp | None = None,
) -> None:
    """Serve ``service`` until the process is told to stop (SIGINT, SIGTERM), then close it:
    the web host's app, or ``app`` (the KDS's). Requests are logged by the app's access log,
    not uvicorn's; OSError if it cannot listen."""
    config = uvicorn.Config(
        app or create_app(service, max_body_size),
        host=bind,
        port=port,
        log_config=None,  # the caller configured logging (sanctorum.web.logs)
        log_level="warning",
        access_log=False,
    )
    server = _Server(config, service)
    try:
        server.run()
    except SystemExit as stop:  # uvicorn exits when it cannot listen, after logging why
        if stop.code not in (None, 0):
            raise OSError(
                f"could not listen on {bind} port {port} (the reason is logged above): stop "
                "what uses that port, or choose another --port or --bind"
            ) from None
        raise
    finally:
        service.close()
