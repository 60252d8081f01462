"""The web host's HTTP API (FastAPI): attestation, mail delivery, polling, health.

Every enclave call runs in a worker thread, so a slow enclave never blocks the event loop.
Errors are JSON ``{"error": "MAIL_DECRYPTION" | "MAIL_REPLAY" | "MAIL_GAP" |
"ENCLAVE_EXCEPTION" | "BAD_REQUEST", "message": ...}`` with status 400 (``message`` is null in
release mode, so nothing leaks), 413 for bodies over the limit, 503 while the enclave restarts.
Each request is logged (method, path, status, duration, correlation id; never a body) to the
``sanctorum.web`` logger.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from sanctorum._version import __version__
from sanctorum.common.errors import (
    EnclaveCallError,
    EnclaveCrashedError,
    EnclaveStateError,
    MailDecryptionError,
    MailGapError,
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
from sanctorum.web.logs import AccessLog, log_event
from sanctorum.web.service import EnclaveService

DEFAULT_MAX_BODY_SIZE = 16 << 20
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


class _BodyTooLargeError(Exception):
    pass


def create_app(service: EnclaveService, max_body_size: int = DEFAULT_MAX_BODY_SIZE) -> FastAPI:
    """The ASGI app for ``service`` (already started)."""
    app = FastAPI(
        title="Sanctorum enclave host",
        version=__version__,
        description="Serves one enclave: its attestation, and Mail to and from it.",
    )
    app.add_middleware(AccessLog)  # one "request" event per request on sanctorum.web

    def error(status: int, code: str, message: str) -> JSONResponse:
        release = service.mode is EnclaveMode.RELEASE  # nothing about the failure leaks
        return JSONResponse(
            {"error": code, "message": None if release else message}, status_code=status
        )

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, problem: RequestValidationError) -> JSONResponse:
        details = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in problem.errors()
        )
        return error(400, "BAD_REQUEST", details)

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_size:
            raise _BodyTooLargeError
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_size:
                raise _BodyTooLargeError
        return bytes(body)

    @app.exception_handler(_BodyTooLargeError)
    async def too_large(request: Request, problem: _BodyTooLargeError) -> JSONResponse:
        return error(413, "BAD_REQUEST", f"the body is over the limit of {max_body_size} bytes")

    def answer(result: tuple[int, bytes] | None) -> Response:
        if result is None:
            return Response(b"", media_type=_OCTETS)
        mail_id, mail = result
        return Response(mail, media_type=_OCTETS, headers={MAIL_ID_HEADER: str(mail_id)})

    def failure(problem: SanctorumError) -> JSONResponse:
        if isinstance(problem, (EnclaveCrashedError, EnclaveStateError)):
            response = error(503, "ENCLAVE_EXCEPTION", f"the enclave is restarting: {problem}")
            response.headers["Retry-After"] = "1"
            return response
        if isinstance(problem, MailDecryptionError):
            return error(400, "MAIL_DECRYPTION", str(problem))
        if isinstance(problem, MailReplayError):  # the enclave has this mail (or superseded it)
            return error(400, "MAIL_REPLAY", str(problem))
        if isinstance(problem, MailGapError):  # an earlier mail of the sender never arrived
            return error(400, "MAIL_GAP", str(problem))
        if isinstance(problem, EnclaveCallError):
            # The operator must tell an enclave bug from a bad request. (A release enclave's
            # error names the exception's type only: nothing of its data is logged.)
            log_event(
                logging.WARNING,
                "enclave_exception",
                f"the enclave raised while handling a request: {problem}",
                error=str(problem),
            )
            return error(400, "ENCLAVE_EXCEPTION", str(problem))
        return error(400, "BAD_REQUEST", str(problem))

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
    async def attestation(instance: Instance = None) -> Response:
        """The enclave's serialized EnclaveInstanceInfo: verify it, do not trust it. The
        Max-Mail-Size header gives the largest mail this host accepts. With ``instance`` (an
        encryption key, hex), the attestation of that instance, current or replaced, so that
        mail it queued before a restart can still be verified."""
        key = bytes.fromhex(instance) if instance is not None else None
        try:
            data = await run_in_threadpool(service.attestation, key)
        except SanctorumError as problem:
            return failure(problem)
        if data is None:
            return error(404, "BAD_REQUEST", f"no enclave instance with key {instance} ran here")
        return Response(
            data, media_type=_OCTETS, headers={MAX_MAIL_SIZE_HEADER: str(max_body_size)}
        )

    @app.post(
        "/deliver-mail",
        response_class=Response,
        responses=_MAIL_RESPONSES,
        openapi_extra=_MAIL_BODY,
    )
    async def deliver_mail(
        request: Request, correlation_id: CorrelationId, acknowledge: Acknowledge = None
    ) -> Response:
        """Deliver a mail to the enclave; the response holds its reply, if it made one."""
        body = await read_body(request)
        if not body:
            return error(400, "BAD_REQUEST", "the body must be a mail, not empty")
        try:
            result = await run_in_threadpool(service.deliver, body, correlation_id, acknowledge)
        except SanctorumError as problem:
            return failure(problem)
        return answer(result)

    @app.post("/poll-mail", response_class=Response, responses=_MAIL_RESPONSES)
    async def poll_mail(correlation_id: CorrelationId, acknowledge: Acknowledge = None) -> Response:
        """The next reply queued for this correlation id, or an empty body."""
        try:
            result = await run_in_threadpool(service.poll, correlation_id, acknowledge)
        except SanctorumError as problem:
            return failure(problem)
        return answer(result)

    @app.get("/health")
    async def health() -> dict[str, str | int]:
        """``ok``, or ``restarting`` while the enclave starts again; the mail size limit."""
        return {
            "status": "restarting" if service.restarting else "ok",
            "mode": service.mode.value,
            "max_mail_size": max_body_size,
        }

    return app
