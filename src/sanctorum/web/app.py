"""The web host's HTTP API (FastAPI): attestation, mail delivery, polling, health.

Deliveries wait for the enclave on a few threads of their own (:class:`EnclaveCalls`), so a
slow enclave never blocks the event loop; polls touch only the store and run on the event loop,
or on those threads when the store is a database server (a round trip away). Well-formed mail
requests skip FastAPI's routing and validation (:class:`_MailFastPath`); FastAPI describes the
API and answers everything else.

Errors are JSON ``{"error": "MAIL_DECRYPTION" | "MAIL_REPLAY" | "MAIL_GAP" |
"ENCLAVE_EXCEPTION" | "BAD_REQUEST", "message": ...}`` with status 400 (``message`` is null in
release mode, so nothing leaks), 413 for bodies over the limit, 503 while the enclave restarts.
Each request is logged (method, path, status, duration, correlation id; never a body) to the
``sanctorum.web`` logger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from sanctorum._version import __version__
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
from sanctorum.common.headers import (
    ACKNOWLEDGE_HEADER,
    CORRELATION_HEADER,
    MAIL_ID_HEADER,
    MAX_MAIL_SIZE_HEADER,
)
from sanctorum.common.mode import EnclaveMode
from sanctorum.web.logs import AccessLog, ASGIApp, Receive, Scope, Send, log_event
from sanctorum.web.service import WebService

_T = TypeVar("_T")
DEFAULT_MAX_BODY_SIZE = 16 << 20
_THREADS = 2  # enclave calls in flight, more only while calls are slow (see EnclaveCalls)
_MAX_THREADS = 16
_IDLE = 10.0  # seconds a thread waits for a call before it ends
_SLOW = 0.05  # seconds in one call that make a call slow
_OCTETS = "application/octet-stream"
_MAIL_BODY = {
    "requestBody": {
        "required": True,
        "content": {_OCTETS: {"schema": {"type": "string", "format": "binary"}}},
    }
}
_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "string",
            "enum": [
                "MAIL_DECRYPTION",
                "MAIL_REPLAY",
                "MAIL_GAP",
                "ENCLAVE_EXCEPTION",
                "BAD_REQUEST",
                "MAIL_PENDING",
            ],
        },
        "message": {"type": ["string", "null"]},
    },
    "required": ["error", "message"],
}
_MAIL_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The next reply for this correlation id (empty if none); its id is in "
        "the Mail-ID header: send it back as Acknowledge-Mail-ID once the reply is stored.",
        "content": {_OCTETS: {"schema": {"type": "string", "format": "binary"}}},
    },
    400: {
        "description": "Bad mail or request",
        "content": {"application/json": {"schema": _ERROR_SCHEMA}},
    },
    413: {"description": "Body over the size limit"},
    503: {"description": "The enclave is restarting; retry"},
    504: {
        "description": "The mail was stored for the host serving its partition, which did not "
        "handle it in time: its outcome is unknown (send it again later)",
        "content": {"application/json": {"schema": _ERROR_SCHEMA}},
    },
}

CorrelationId = Annotated[
    str,
    Header(
        alias=CORRELATION_HEADER,
        min_length=1,
        max_length=256,
        pattern=r"^[\x21-\x7e]+$",
        description="Where replies go: the client's routing hint.",
    ),
]
OptionalCorrelationId = Annotated[
    str | None,
    Header(
        alias=CORRELATION_HEADER,
        min_length=1,
        max_length=256,
        pattern=r"^[\x21-\x7e]+$",
        description="The client whose enclave instance to attest (its routing hint).",
    ),
]
Acknowledge = Annotated[
    int | None,
    Header(
        alias=ACKNOWLEDGE_HEADER,
        ge=0,
        le=2**63 - 1,
        description="Replies up to this id were received and may be dropped.",
    ),
]


Instance = Annotated[
    str | None,
    Query(
        pattern=r"^[0-9a-fA-F]{64}$",
        description="An enclave instance's encryption key (hex): its attestation, not the "
        "current one.",
    ),
]


# What FastAPI's validation of the mail headers accepts, checked on the raw bytes: a request
# whose headers do not match (or repeat) goes to FastAPI, which answers it as it always did.
_CORRELATION_ID = re.compile(rb"[\x21-\x7e]{1,256}")
_ACKNOWLEDGE = re.compile(rb"[0-9]{1,19}")
_LARGEST_ACKNOWLEDGE = 2**63 - 1
_CORRELATION_NAME = CORRELATION_HEADER.lower().encode("latin-1")
_ACKNOWLEDGE_NAME = ACKNOWLEDGE_HEADER.lower().encode("latin-1")
_DELIVER, _POLL = "/deliver-mail", "/poll-mail"


class EnclaveCalls:
    """Runs calls that wait for the enclave (deliveries) on threads of their own, so that the
    event loop never waits for the enclave, and hands each result back to the loop.

    Two threads keep an enclave busy (it has the next mail while the host stores the reply to
    the last one) without the contention for the GIL of a large pool: with forty, a host spent
    more time switching threads than serving. Should every thread stay in one call for a while
    (a slow enclave, or a thread-safe one whose calls wait) while other calls queue, another
    thread is started, up to sixteen; the extra threads end as soon as calls are quick again
    (a stall of the disk must not leave them behind), and a thread idle for ten seconds ends."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._lock = threading.Lock()  # over _threads, which the threads lower as they end
        self._threads = 0
        self._busy_since: dict[int, float] = {}  # thread id -> when its current call began
        self._watching: asyncio.AbstractEventLoop | None = None  # whose timer runs _watch

    async def run(self, function: Callable[..., _T], *arguments: object) -> _T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._requests.put((loop, future, function, arguments))
        if self._threads < _THREADS:
            self._start(_THREADS)
        elif self._watching is None or self._watching.is_closed():
            self._watching = loop
            loop.call_later(_SLOW, self._watch, loop)
        return await future

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """While calls queue, add a thread each time all threads have been busy for long."""
        if self._requests.empty():
            self._watching = None
            return
        busy = list(self._busy_since.values())
        if len(busy) == self._threads and time.monotonic() - max(busy) > _SLOW:
            self._start(_MAX_THREADS)
        loop.call_later(_SLOW, self._watch, loop)

    def _start(self, limit: int) -> None:
        with self._lock:
            if self._threads >= limit:
                return
            self._threads += 1
        threading.Thread(target=self._serve, name="enclave-call", daemon=True).start()

    def _serve(self) -> None:
        me = threading.get_ident()
        while True:
            try:
                loop, future, function, arguments = self._requests.get(timeout=_IDLE)
            except queue.Empty:
                with self._lock:
                    # Under the lock: a call queued after this look finds _threads lowered
                    # and starts a thread.
                    if self._requests.empty():
                        self._threads -= 1
                        return
                continue
            began = self._busy_since[me] = time.monotonic()
            try:
                result, error = function(*arguments), None
            except BaseException as problem:  # for the request that waits, not this thread
                result, error = None, problem
            del self._busy_since[me]
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, future, result, error)
            if time.monotonic() - began < _SLOW and self._threads > _THREADS:
                with self._lock:
                    if self._threads > _THREADS:  # calls are quick again: back to two
                        self._threads -= 1
                        return


_Request = tuple[
    asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[object, ...]
]


def _settle(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class _Mailroom:
    """Serves the mail endpoints, for FastAPI's routes and the fast path alike."""

    def __init__(self, service: WebService, max_body_size: int) -> None:
        self.service = service
        self.max_body_size = max_body_size
        self._calls = EnclaveCalls()

    def error(self, status: int, code: str, message: str) -> JSONResponse:
        release = self.service.mode is EnclaveMode.RELEASE  # nothing about the failure leaks
        return JSONResponse(
            {"error": code, "message": None if release else message}, status_code=status
        )

    def failure(self, problem: SanctorumError) -> JSONResponse:
        if isinstance(problem, MailPendingError):  # stored for another host: outcome unknown
            return self.error(504, "MAIL_PENDING", str(problem))
        if isinstance(problem, (EnclaveCrashedError, EnclaveStateError)):
            response = self.error(503, "ENCLAVE_EXCEPTION", f"the enclave is restarting: {problem}")
            response.headers["Retry-After"] = "1"
            return response
        if isinstance(problem, MailDecryptionError):
            return self.error(400, "MAIL_DECRYPTION", str(problem))
        if isinstance(problem, MailReplayError):  # the enclave has this mail (or superseded it)
            return self.error(400, "MAIL_REPLAY", str(problem))
        if isinstance(problem, MailGapError):  # an earlier mail of the sender never arrived
            return self.error(400, "MAIL_GAP", str(problem))
        if isinstance(problem, EnclaveCallError):
            # The operator must tell an enclave bug from a bad request. (A release enclave's
            # error names the exception's type only: nothing of its data is logged.)
            log_event(
                logging.WARNING,
                "enclave_exception",
                f"the enclave raised while handling a request: {problem}",
                error=str(problem),
            )
            return self.error(400, "ENCLAVE_EXCEPTION", str(problem))
        if isinstance(problem, KdsError):  # the operator's to fix, most often: say so
            log_event(
                logging.WARNING,
                "kds_refused",
                f"a mail sealed to a KDS key could not be opened: {problem}",
                error=str(problem),
            )
        return self.error(400, "BAD_REQUEST", str(problem))

    async def deliver(
        self, request: Request, correlation_id: str, acknowledge: int | None
    ) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_size:
            return self._too_large()
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body_size:
                return self._too_large()
        if not body:
            return self.error(400, "BAD_REQUEST", "the body must be a mail, not empty")
        try:
            result = await self._calls.run(
                self.service.deliver, bytes(body), correlation_id, acknowledge
            )
        except SanctorumError as problem:
            return self.failure(problem)
        return _answer(result)

    async def read(self, function: Callable[..., _T], *arguments: object) -> _T:
        """Run a read of the store: on the event loop for SQLite, which answers in
        microseconds (less than a thread hop), on the call threads for a database server, a
        round trip away, so that a slow answer never stalls the other requests."""
        if self.service.remote:
            return await self._calls.run(function, *arguments)
        return function(*arguments)

    async def poll(self, correlation_id: str, acknowledge: int | None) -> Response:
        try:
            result = await self.read(self.service.poll, correlation_id, acknowledge)
        except SanctorumError as problem:
            return self.failure(problem)
        return _answer(result)

    def _too_large(self) -> JSONResponse:
        return self.error(
            413, "BAD_REQUEST", f"the body is over the limit of {self.max_body_size} bytes"
        )


def _answer(result: tuple[int, bytes] | None) -> Response:
    if result is None:
        return Response(b"", media_type=_OCTETS)
    mail_id, mail = result
    return Response(mail, media_type=_OCTETS, headers={MAIL_ID_HEADER: str(mail_id)})


class _MailFastPath:
    """ASGI middleware: serves well-formed mail requests without FastAPI's routing, validation
    and dependency resolution (about 50 µs of CPU a request, as much as a delivery's two SQLite
    transactions); everything else goes on to FastAPI. Added first, so an application's own
    middleware still wraps it."""

    def __init__(self, app: ASGIApp, mailroom: _Mailroom) -> None:
        self.app = app
        self.mailroom = mailroom

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if scope["type"] == "http" and path in (_DELIVER, _POLL):
            headers = _mail_headers(scope) if scope["method"] == "POST" else None
            if headers is not None:
                if path == _DELIVER:
                    response = await self.mailroom.deliver(Request(scope, receive), *headers)
                else:
                    response = await self.mailroom.poll(*headers)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _mail_headers(scope: Scope) -> tuple[str, int | None] | None:
    """The Correlation-ID and Acknowledge-Mail-ID of a mail request, if each is there at most
    once and FastAPI would accept it; None to let FastAPI answer."""
    correlation_id: str | None = None
    acknowledge: int | None = None
    for name, value in scope["headers"]:
        if name == _CORRELATION_NAME:
            if correlation_id is not None or not _CORRELATION_ID.fullmatch(value):
                return None
            correlation_id = value.decode("ascii")
        elif name == _ACKNOWLEDGE_NAME:
            if acknowledge is not None or not _ACKNOWLEDGE.fullmatch(value):
                return None
            acknowledge = int(value)
            if acknowledge > _LARGEST_ACKNOWLEDGE:
                return None
    return None if correlation_id is None else (correlation_id, acknowledge)


def create_app(service: WebService, max_body_size: int = DEFAULT_MAX_BODY_SIZE) -> FastAPI:
    """The ASGI app for ``service`` (already started)."""
    app = FastAPI(
        title="Sanctorum enclave host",
        version=__version__,
        description="Serves one enclave: its attestation, and Mail to and from it.",
    )
    mailroom = _Mailroom(service, max_body_size)
    app.add_middleware(_MailFastPath, mailroom=mailroom)
    app.add_middleware(AccessLog)  # outside the fast path: one "request" event per request

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, problem: RequestValidationError) -> JSONResponse:
        details = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in problem.errors()
        )
        return mailroom.error(400, "BAD_REQUEST", details)

    @app.get(
        "/attestation",
        response_class=Response,
        responses={
            200: {
                "content": {_OCTETS: {}},
                "description": "The EnclaveInstanceInfo",
                "headers": {MAX_MAIL_SIZE_HEADER: {"schema": {"type": "integer"}}},
            },
            404: {
                "description": "No instance with that key ran here",
                "content": {"application/json": {"schema": _ERROR_SCHEMA}},
            },
        },
    )
    async def attestation(
        instance: Instance = None, correlation_id: OptionalCorrelationId = None
    ) -> Response:
        """The enclave's serialized EnclaveInstanceInfo: verify it, do not trust it. The
        Max-Mail-Size header gives the largest mail this host accepts. With ``instance`` (an
        encryption key, hex), the attestation of that instance, current or replaced, so that
        mail it queued before a restart can still be verified. With a Correlation-ID, of the
        instance that serves that client (a service of several partitions has one each)."""
        key = bytes.fromhex(instance) if instance is not None else None
        try:
            data = await mailroom.read(service.attestation, key, correlation_id)
        except SanctorumError as problem:
            return mailroom.failure(problem)
        if data is None:
            return mailroom.error(
                404, "BAD_REQUEST", f"no enclave instance with key {instance} ran here"
            )
        return Response(
            data, media_type=_OCTETS, headers={MAX_MAIL_SIZE_HEADER: str(max_body_size)}
        )

    @app.post(
        _DELIVER,
        response_class=Response,
        responses=_MAIL_RESPONSES,
        openapi_extra=_MAIL_BODY,
    )
    async def deliver_mail(
        request: Request, correlation_id: CorrelationId, acknowledge: Acknowledge = None
    ) -> Response:
        """Deliver a mail to the enclave; the response holds its reply, if it made one."""
        return await mailroom.deliver(request, correlation_id, acknowledge)

    @app.post(_POLL, response_class=Response, responses=_MAIL_RESPONSES)
    async def poll_mail(correlation_id: CorrelationId, acknowledge: Acknowledge = None) -> Response:
        """The next reply queued for this correlation id, or an empty body."""
        return await mailroom.poll(correlation_id, acknowledge)

    @app.get("/health")
    async def health() -> dict[str, object]:
        """``ok``, or ``restarting`` while the enclave starts again; the mail size limit; on a
        host of a service in a database, its partition count and the leases it holds."""
        return {
            "status": "restarting" if service.restarting else "ok",
            "mode": service.mode.value,
            "max_mail_size": max_body_size,
            **service.health(),
        }

    return app
