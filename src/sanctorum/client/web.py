"""The web transport: EnclaveClient over HTTP to a Sanctorum web host (``httpx``).

With every request it sends the id of the last mail its client opened, so the host drops mail
only once it has been opened (none lost when the host or the client dies, none delivered
twice); the client keeps that id, so a fresh transport in a fresh process works the same. A
request the host never saw (connection refused) or refused for a restart (503) is retried for
a while; one whose answer was lost is not, since the mail may have been delivered.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from sanctorum.attestation.instance_info import MAX_SERIALIZED_SIZE
from sanctorum.client.transport import ReceivedMail
from sanctorum.common.errors import (
    EnclaveCallError,
    MailDecryptionError,
    MailGapError,
    MailRefusedError,
    MailReplayError,
    MailTooLargeError,
    SanctorumError,
    TransportError,
)
from sanctorum.common.headers import (
    ACKNOWLEDGE_HEADER,
    CORRELATION_HEADER,
    MAIL_ID_HEADER,
    MAX_MAIL_SIZE_HEADER,
)
from sanctorum.common.keys import Curve25519PublicKey
from sanctorum.mail.format import DEFAULT_MAX_MAIL_SIZE

_RETRYABLE_STATUS = 503
_RETRY_PAUSE = 0.05


def _error_for(response: httpx.Response) -> SanctorumError:
    try:
        document = response.json()
        code, message = document.get("error"), document.get("message")
    except (ValueError, AttributeError, RecursionError):
        code, message = None, None
    if not isinstance(message, str):
        message = None
    status = response.status_code
    detail = message or f"HTTP {status}"
    if code == "MAIL_DECRYPTION":
        return MailDecryptionError(f"the enclave could not decrypt the mail: {detail}")
    if code == "MAIL_REPLAY":
        return MailReplayError(f"the enclave refused the mail as already received: {detail}")
    if code == "MAIL_GAP":
        return MailGapError(f"the enclave refused the mail: an earlier one is missing: {detail}")
    if code == "ENCLAVE_EXCEPTION" and status < 500:
        return EnclaveCallError(f"the enclave failed: {detail}")
    if status == httpx.codes.REQUEST_ENTITY_TOO_LARGE:
        return MailTooLargeError(f"the host refused the mail as too large (413): {detail}")
    if 400 <= status < 500 or status == _RETRYABLE_STATUS:
        # A definite refusal: the enclave never saw the mail.
        return MailRefusedError(f"the host refused the request ({status}): {detail}")
    return TransportError(f"the host failed the request ({status}): {detail}")


Request = tuple[str, str, dict[str, Any]]


def _number(header: str | None) -> int | None:
    """A header holding a non-negative 63-bit decimal number, else None."""
    if header is None or not (0 < len(header) <= 19 and header.isascii() and header.isdigit()):
        return None
    value = int(header)
    return value if value < 2**63 else None


class _Exchange:
    """The web transport's requests and answers, without I/O (shared by both transports).

    It knows how much of each answer to read, and the host's mail size limit once learnt
    with the attestation.
    """

    def __init__(self, max_attestation_size: int, max_response_size: int) -> None:
        self.max_mail_size: int | None = None
        self._max_attestation_size = max_attestation_size
        self._max_response_size = max_response_size
        self._correlation_id: str | None = None  # of the client that last sent or polled

    def read_limit(self, path: str) -> int:
        """The most of an answer to ``path`` a transport reads."""
        if path == "/attestation":
            return self._max_attestation_size
        return self._max_response_size

    def _headers(self, correlation_id: str, acknowledge: int | None) -> dict[str, str]:
        self._correlation_id = correlation_id
        headers = {CORRELATION_HEADER: correlation_id}
        if acknowledge is not None:
            headers[ACKNOWLEDGE_HEADER] = str(acknowledge)
        return headers

    def attestation_request(self, instance: Curve25519PublicKey | None) -> Request:
        if instance is not None:
            return "GET", "/attestation", {"params": {"instance": instance.encoded.hex()}}
        # A service of several partitions has an instance per client: name the client it
        # last carried mail for, if any.
        if self._correlation_id is None:
            return "GET", "/attestation", {}
        return "GET", "/attestation", {"headers": {CORRELATION_HEADER: self._correlation_id}}

    def deliver_request(self, mail: bytes, correlation_id: str, acknowledge: int | None) -> Request:
        headers = {
            **self._headers(correlation_id, acknowledge),
            "Content-Type": "application/octet-stream",
        }
        return "POST", "/deliver-mail", {"content": mail, "headers": headers}

    def poll_request(self, correlation_id: str, acknowledge: int | None) -> Request:
        return "POST", "/poll-mail", {"headers": self._headers(correlation_id, acknowledge)}

    def attestation_from(self, response: httpx.Response) -> bytes:
        if response.status_code != httpx.codes.OK:
            raise _error_for(response)
        limit = _number(response.headers.get(MAX_MAIL_SIZE_HEADER))
        if limit is not None:
            self.max_mail_size = limit
        return response.content

    @staticmethod
    def mail_from(response: httpx.Response) -> ReceivedMail | None:
        if response.status_code != httpx.codes.OK:
            raise _error_for(response)
        if not response.content:
            return None
        mail_id = _number(response.headers.get(MAIL_ID_HEADER))
        if mail_id is None:
            raise TransportError("the host sent a mail without a valid Mail-ID header")
        return ReceivedMail(mail_id, response.content)


def _retry(outcome: httpx.Response | httpx.HTTPError, deadline: float, request: Request) -> bool:
    """Whether to send ``request`` again: only if the host never got it, or answered 503, and
    there is time left. A request whose answer was lost is never resent (its mail may have been
    delivered)."""
    late = time.monotonic() > deadline
    if isinstance(outcome, httpx.Response):
        return outcome.status_code == _RETRYABLE_STATUS and not late  # late 503: refused
    if isinstance(outcome, httpx.ConnectError):
        if late:
            # A mail that never reached the host was refused: sending it again is safe.
            error = MailRefusedError if request[1] == "/deliver-mail" else TransportError
            raise error(f"cannot reach the host at {outcome.request.url}: {outcome}") from None
        return True
    raise TransportError(f"{request[0]} {request[1]} failed: {outcome}") from None


DEFAULT_MAX_ATTESTATION_SIZE = MAX_SERIALIZED_SIZE
"""The largest attestation a transport reads: the largest an EnclaveInstanceInfo can be (1 MiB
of evidence and its keys); anything longer could never be verified."""


class _CappedBody:
    """Collects a response body, refusing one over ``cap`` before it is all in memory: a
    hostile host must not be able to exhaust a client's memory with one answer."""

    def __init__(self, response: httpx.Response, cap: int) -> None:
        declared = _number(response.headers.get("content-length"))
        if declared is not None and declared > cap:
            raise self._too_large(response, cap)
        self._response = response
        self._cap = cap
        self._body = bytearray()

    def add(self, chunk: bytes) -> None:
        self._body += chunk
        if len(self._body) > self._cap:
            raise self._too_large(self._response, self._cap)

    def response(self) -> httpx.Response:
        response = self._response
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=bytes(self._body),
            request=response.request,
        )

    @staticmethod
    def _too_large(response: httpx.Response, cap: int) -> TransportError:
        return TransportError(
            f"the host's answer to {response.request.method} {response.request.url.path} is "
            f"over {cap} bytes; refused unread (raise the transport's limit if it is expected)"
        )


class WebTransport:
    """Blocking transport to ``base_url`` (for example ``http://localhost:8080``).

    Answers are read up to a limit: ``max_attestation_size`` for attestations, and
    ``max_response_size`` for mail (the largest mail a client opens by default)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        retry_for: float = 15.0,
        max_attestation_size: int = DEFAULT_MAX_ATTESTATION_SIZE,
        max_response_size: int = DEFAULT_MAX_MAIL_SIZE,
        **options: Any,
    ) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout, **options)
        self._retry_for = retry_for
        self._exchange = _Exchange(max_attestation_size, max_response_size)

    def _fetch(self, method: str, path: str, arguments: dict[str, Any]) -> httpx.Response:
        with self._http.stream(method, path, **arguments) as response:
            body = _CappedBody(response, self._exchange.read_limit(path))
            for chunk in response.iter_bytes():
                body.add(chunk)
            return body.response()

    def _send(self, request: Request) -> httpx.Response:
        deadline = time.monotonic() + self._retry_for
        method, path, arguments = request
        while True:
            outcome: httpx.Response | httpx.HTTPError
            try:
                outcome = self._fetch(method, path, arguments)
            except httpx.HTTPError as error:
                outcome = error
            if not _retry(outcome, deadline, request):
                assert isinstance(outcome, httpx.Response)
                return outcome
            time.sleep(_RETRY_PAUSE)

    @property
    def max_mail_size(self) -> int | None:
        """The host's limit on a mail, learnt with the attestation."""
        return self._exchange.max_mail_size

    def get_attestation(self, instance: Curve25519PublicKey | None = None) -> bytes:
        request = self._exchange.attestation_request(instance)
        return self._exchange.attestation_from(self._send(request))

    def deliver_mail(
        self, mail: bytes, correlation_id: str, acknowledge: int | None
    ) -> ReceivedMail | None:
        request = self._exchange.deliver_request(mail, correlation_id, acknowledge)
        return self._exchange.mail_from(self._send(request))

    def poll_mail(self, correlation_id: str, acknowledge: int | None) -> ReceivedMail | None:
        request = self._exchange.poll_request(correlation_id, acknowledge)
        return self._exchange.mail_from(self._send(request))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> WebTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncWebTransport:
    """:class:`WebTransport` for asyncio."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        retry_for: float = 15.0,
        max_attestation_size: int = DEFAULT_MAX_ATTESTATION_SIZE,
        max_response_size: int = DEFAULT_MAX_MAIL_SIZE,
        **options: Any,
    ) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, **options)
        self._retry_for = retry_for
        self._exchange = _Exchange(max_attestation_size, max_response_size)

    async def _fetch(self, method: str, path: str, arguments: dict[str, Any]) -> httpx.Response:
        async with self._http.stream(method, path, **arguments) as response:
            body = _CappedBody(response, self._exchange.read_limit(path))
            async for chunk in response.aiter_bytes():
                body.add(chunk)
            return body.response()

    async def _send(self, request: Request) -> httpx.Response:
        deadline = time.monotonic() + self._retry_for
        method, path, arguments = request
        while True:
            outcome: httpx.Response | httpx.HTTPError
            try:
                outcome = await self._fetch(method, path, arguments)
            except httpx.HTTPError as error:
                outcome = error
            if not _retry(outcome, deadline, request):
                assert isinstance(outcome, httpx.Response)
                return outcome
            await asyncio.sleep(_RETRY_PAUSE)

    @property
    def max_mail_size(self) -> int | None:
        """The host's limit on a mail, learnt with the attestation."""
        return self._exchange.max_mail_size

    async def get_attestation(self, instance: Curve25519PublicKey | None = None) -> bytes:
        request = self._exchange.attestation_request(instance)
        return self._exchange.attestation_from(await self._send(request))

    async def deliver_mail(
        self, mail: bytes, correlation_id: str, acknowledge: int | None
    ) -> ReceivedMail | None:
        request = self._exchange.deliver_request(mail, correlation_id, acknowledge)
        return self._exchange.mail_from(await self._send(request))

    async def poll_mail(self, correlation_id: str, acknowledge: int | None) -> ReceivedMail | None:
        request = self._exchange.poll_request(correlation_id, acknowledge)
        return self._exchange.mail_from(await self._send(request))

    async def aclose(self) -> None:
        await self._http.aclose()
