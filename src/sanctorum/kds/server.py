"""The KDS's REST front (FastAPI): carries ``/public`` and ``/private`` to the KDS enclave and
its answers back; it decides nothing itself (sanctorum.kds.protocol).

Errors are JSON ``{"reason": ...}``: 400 for a body that is not a JSON object, 413 over the size
limit, and the KDS enclave's own 400 and 403; 503 while the enclave restarts.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from sanctorum._version import __version__
from sanctorum.common.errors import EnclaveCrashedError, EnclaveStateError, SanctorumError
from sanctorum.common.mode import EnclaveMode
from sanctorum.kds.protocol import front_request, split_front_answer
from sanctorum.web.app import EnclaveCalls
from sanctorum.web.logs import AccessLog, ASGIApp, Receive, Scope, Send
from sanctorum.web.service import EnclaveService

DEFAULT_MAX_BODY_SIZE = 1 << 20
_PATHS = ("/public", "/private")
_SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "masterKeyType", "policyConstraint"],
    "properties": {
        "name": {"type": "string"},
        "masterKeyType": {"type": "string", "enum": ["development", "cluster"]},
        "policyConstraint": {"type": "string"},
    },
}
_PRIVATE_SCHEMA: dict[str, Any] = {
    **_SPEC_SCHEMA,
    "required": [*_SPEC_SCHEMA["required"], "appAttestationReport"],
    "properties": {
        **_SPEC_SCHEMA["properties"],
        "appAttestationReport": {"type": "string", "format": "byte"},
    },
}
_ERROR = {"content": {"application/json": {"schema": {"type": "object"}}}}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    }


def kds_project() -> Path:
    """The KDS enclave's project directory (its enclave.toml and source), in the package."""
    return Path(str(resources.files("sanctorum.kds") / "templates" / "kds"))


def kds_identity(service: EnclaveService) -> tuple[str, str]:
    """What enclaves and clients pin a started KDS by: the constraint its attestation meets
    (its code hash, and ``SEC:INSECURE`` unless it runs in release mode) and its cluster key
    (hex), read from its own answer to a ``/public`` request."""
    info = service.host.enclave_instance_info
    spec = {"name": "sanctorum-kds-identity", "masterKeyType": "development"}
    spec["policyConstraint"] = f"C:{info.code_hash}"
    answer = service.call(front_request("/public", json.dumps(spec).encode()))
    _, body = split_front_answer(answer or b"")
    insecure = "" if info.enclave_mode is EnclaveMode.RELEASE else " SEC:INSECURE"
    return f"C:{info.code_hash}{insecure}", str(json.loads(body)["clusterKey"])


def create_kds_app(service: EnclaveService, max_body_size: int = DEFAULT_MAX_BODY_SIZE) -> FastAPI:
    """The ASGI app for a started ``service`` running the KDS enclave."""
    app = FastAPI(
        title="Sanctorum key derivation service",
        version=__version__,
        description="Derives keys for key specs; gives private keys to entitled enclaves only.",
    )

    calls = EnclaveCalls()  # the web host's threads for enclave calls: no pool hop per request

    def reason(status: int, text: str) -> JSONResponse:
        return JSONResponse({"reason": text}, status_code=status)

    async def forward(request: Request, path: str) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_size:
            return reason(413, f"the body is over the limit of {max_body_size} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_size:
                return reason(413, f"the body is over the limit of {max_body_size} bytes")
        try:  # the body goes in as it came: the enclave parses it and decides the answer
            answer = await calls.run(service.call, front_request(path, bytes(body)))
        except (EnclaveCrashedError, EnclaveStateError) as problem:
            response = reason(503, f"the KDS enclave is restarting: {problem}")
            response.headers["Retry-After"] = "1"
            return response
        except SanctorumError as problem:  # the enclave failed, not the request
            return reason(500, f"the KDS enclave failed: {type(problem).__name__}")
        status, content = split_front_answer(answer or b"500{}")
        return Response(content, status_code=status, media_type="application/json")

    class FastPath:
        """Serves ``POST /public`` and ``/private`` without FastAPI's routing (the routes
        below describe them; this answers them, ~0.1 ms sooner a request)."""

        def __init__(self, inner: ASGIApp) -> None:
            self.inner = inner

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            path = scope.get("path")
            if scope["type"] == "http" and scope["method"] == "POST" and path in _PATHS:
                response = await forward(Request(scope, receive), path)
                await response(scope, receive, send)
                return
            await self.inner(scope, receive, send)

    app.add_middleware(FastPath)
    app.add_middleware(AccessLog)  # outside the fast path: one line per request

    @app.post(
        "/public",
        openapi_extra=_body(_SPEC_SCHEMA),
        responses={400: _ERROR, 413: _ERROR, 503: _ERROR},
    )
    async def public(request: Request) -> Response:
        """The public key of a key spec, signed by the KDS, and the KDS's attestation."""
        return await forward(request, "/public")

    @app.post(
        "/private",
        openapi_extra=_body(_PRIVATE_SCHEMA),
        responses={400: _ERROR, 403: _ERROR, 413: _ERROR, 503: _ERROR},
    )
    async def private(request: Request) -> Response:
        """A key spec's key, sealed to the requesting enclave if its attestation meets the
        spec's policy."""
        return await forward(request, "/private")

    @app.get("/health")
    async def health() -> JSONResponse:
        """Whether the KDS enclave is up (503 while it restarts)."""
        if service.restarting:
            return reason(503, "the KDS enclave is restarting")
        return JSONResponse({"status": "ok"})

    return app
