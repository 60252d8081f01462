"""What the web host tells its operator: the URL it serves, one line per request, and the
enclave's lifecycle (started, crashed, restarted, restart failing, stopped).

Everything goes to the standard :mod:`logging` logger ``sanctorum.web``. Each record carries
``record.event`` (a stable name such as ``request`` or ``enclave_restarted``) and
``record.fields`` (a dict with stable keys: ``method``, ``path``, ``status``, ``duration_ms``,
``correlation_id``, ``mode``, ``code_hash``, ``instance_key``, ``pid``, ...), so an embedding
application can route and format them itself. ``sanctorum host`` attaches one handler to
stderr, in the human format or, with ``--log-format json``, one JSON object per line.

Nothing here ever sees a mail's contents or attestation bytes: only the request line, the
status, the timing, the client's correlation id and facts about the enclave instance.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import IO, Any

from sanctorum.common.headers import CORRELATION_HEADER

LOGGER = logging.getLogger("sanctorum.web")
LOG_FORMATS = ("human", "json")

_CORRELATION = CORRELATION_HEADER.lower().encode("latin-1")
_MAX_LOGGED = 256  # characters of a client-chosen value (path, correlation id) in a log line

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def log_event(level: int, event: str, message: str, **fields: object) -> None:
    """Log ``message`` for people and ``event`` with ``fields`` for machines."""
    if LOGGER.isEnabledFor(level):
        # The record is made here rather than by LOGGER.log, whose search of the stack for its
        # caller (always this function) took a third of the cost of a request's line.
        extra = {"event": event, "fields": fields}
        record = LOGGER.makeRecord(
            LOGGER.name, level, __file__, 0, "%s", (message,), None, "log_event", extra
        )
        LOGGER.handle(record)


def client_text(value: str) -> str:
    """A value a client chose, safe for one log line: control and non-ASCII characters
    escaped (no forged lines, no terminal escapes), at most 256 characters kept."""
    if len(value) <= _MAX_LOGGED and value.isascii() and value.isprintable() and "\\" not in value:
        return value  # nothing to escape: the usual case, kept cheap
    escaped = value[:_MAX_LOGGED].encode("unicode_escape").decode("ascii")
    return escaped + ("..." if len(value) > _MAX_LOGGED else "")


class AccessLog:
    """ASGI middleware: one ``request`` event per HTTP request, logged when its answer has been
    sent, with method, path (no query), status, duration and the client's ``Correlation-ID``;
    never a body. It replaces uvicorn's access log, which knows no correlation id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status: int | None = None

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            status = status or 500  # the server answers 500 after this middleware
            raise
        finally:
            _log_request(scope, status, time.perf_counter() - began)


def _log_request(scope: Scope, status: int | None, seconds: float) -> None:
    if not LOGGER.isEnabledFor(logging.INFO):
        return
    method = client_text(str(scope.get("method", "")))
    path = client_text(str(scope.get("path", "")))
    correlation_id = None
    for name, value in scope.get("headers", ()):
        if name == _CORRELATION:
            correlation_id = client_text(bytes(value).decode("latin-1"))
            break
    duration_ms = round(seconds * 1000, 1)
    shown = "-" if status is None else str(status)  # None: the client left before an answer
    message = f"{method} {path} {shown} {duration_ms} ms"
    if correlation_id is not None:
        message += f" correlation-id {correlation_id}"
    log_event(
        logging.INFO,
        "request",
        message,
        method=method,
        path=path,
        status=status,
        duration_ms=duration_ms,
        correlation_id=correlation_id,
    )


@functools.lru_cache(maxsize=4)
def _second(second: int, *, utc: bool) -> str:
    """A second, formatted once for all the lines logged in it: local time for people, UTC in
    ISO 8601 for machines."""
    if utc:
        return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return datetime.fromtimestamp(second).strftime("%Y-%m-%d %H:%M:%S")


class HumanFormatter(logging.Formatter):
    """``2025-06-01 12:00:00.123 INFO    serving hello (simulation) on http://...``"""

    def format(self, record: logging.LogRecord) -> str:
        moment = _second(int(record.created), utc=False)
        line = f"{moment}.{int(record.msecs):03d} {record.levelname:<7} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``event``, the event's
    fields, then ``message``. Records of other loggers (uvicorn's) are event ``server``."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "time": f"{_second(int(record.created), utc=True)}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": getattr(record, "event", "server"),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            document.update({k: v for k, v in fields.items() if k not in document})
        else:
            document["logger"] = record.name
        document["message"] = record.getMessage()
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


def configure_logging(log_format: str = "human", stream: IO[str] | None = None) -> None:
    """Send the web host's logs (and uvicorn's warnings and errors) to ``stream`` (stderr) in
    ``log_format``: ``human`` or ``json``. For ``sanctorum host``; an application embedding
    the web host configures the ``sanctorum.web`` logger as it likes instead."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r}: use human or json")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else HumanFormatter())
    for name, level in (("sanctorum.web", logging.INFO), ("uvicorn", logging.WARNING)):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    logging.getLogger("uvicorn.access").disabled = True  # requests are logged by AccessLog
