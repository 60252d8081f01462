"""The web transport: EnclaveClient over HTTP to a Sanctorum web host (``httpx``).

It sends the id of the last reply it received with every request, so the host drops replies
only once they have arrived (none lost when the host dies, none delivered twice). A request the
host never saw (connection refused) or refused for a restart (503) is retried for a while; one
whose answer was lost is not, since the mail may have been delivered.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from sanctorum.common.errors import (
    EnclaveCallError,
    MailDecryptionError,
    SanctorumError,
    TransportError,
)

MAIL_ID_HEADER = "Mail-ID"
ACKNOWLEDGE_HEADER = "Acknowledge-Mail-ID"
CORRELATION_HEADER = "Correlation-ID"
_RETRYABLE_STATUS = 503


def _error_for(response: httpx.Response) -> SanctorumError:
    try:
        document = response.json()
        code, message = document.get("error"), document.get("message")
    except (ValueError, AttributeError):
        code, message = None, None
    detail = message or f"HTTP {response.status_code}"
    if code == "MAIL_DECRYPTION":
        return MailDecryptionError(f"the enclave could not decrypt the mail: {detail}")
    if code == "ENCLAVE_EXCEPTION":
        return EnclaveCallError(f"the enclave failed: {detail}")
    return TransportError(f"the host refused the request ({response.status_code}): {detail}")


class _Acknowledgements:
    """The last reply id received per correlation id."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def headers(self, correlation_id: str) -> dict[str, str]:
        headers = {CORRELATION_HEADER: correlation_id}
        last = self._last.get(correlation_id)
        if last is not None:
            headers[ACKNOWLEDGE_HEADER] = str(last)
        return headers

    def mail_from(self, response: httpx.Response, correlation_id: str) -> bytes | None:
        if response.status_code != httpx.codes.OK:
            raise _error_for(response)
        if not response.content:
            return None
        mail_id = response.headers.get(MAIL_ID_HEADER, "")
        if not mail_id.isdigit():
            raise TransportError("the host sent a reply without a valid Mail-ID header")
        self._last[correlation_id] = int(mail_id)
        return response.content


class WebTransport:
    """Blocking transport to ``base_url`` (for example ``http://localhost:8080``)."""

    def __init__(
        self, base_url: str, *, timeout: float = 30.0, retry_for: float = 15.0, **options: Any
    ) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout, **options)
        self._retry_for = retry_for
        self._acks = _Acknowledgements()

    def _send(self, method: str, path: str, **arguments: Any) -> httpx.Response:
        deadline = time.monotonic() + self._retry_for
        while True:
            try:
                response = self._http.request(method, path, **arguments)
            except httpx.ConnectError as error:
                if time.monotonic() > deadline:
                    raise TransportError(f"cannot reach the host: {error}") from None
            except httpx.HTTPError as error:
                raise TransportError(f"{method} {path} failed: {error}") from None
            else:
                if response.status_code != _RETRYABLE_STATUS or time.monotonic() > deadline:
                    return response
            time.sleep(0.05)

    def get_attestation(self) -> bytes:
        response = self._send("GET", "/attestation")
        if response.status_code != httpx.codes.OK:
            raise _error_for(response)
        return response.content

    def deliver_mail(self, mail: bytes, correlation_id: str) -> bytes | None:
        response = self._send(
            "POST",
            "/deliver-mail",
            content=mail,
            headers={
                **self._acks.headers(correlation_id),
                "Content-Type": "application/octet-stream",
            },
        )
        return self._acks.mail_from(response, correlation_id)

    def poll_mail(self, correlation_id: str) -> bytes | None:
        response = self._send("POST", "/poll-mail", headers=self._acks.headers(correlation_id))
        return self._acks.mail_from(response, correlation_id)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> WebTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncWebTransport:
    """:class:`WebTransport` for asyncio."""

    def __init__(
        self, base_url: str, *, timeout: float = 30.0, retry_for: float = 15.0, **options: Any
    ) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, **options)
        self._retry_for = retry_for
        self._acks = _Acknowledgements()

    async def _send(self, method: str, path: str, **arguments: Any) -> httpx.Response:
        deadline = time.monotonic() + self._retry_for
        while True:
            try:
                response = await self._http.request(method, path, **arguments)
            except httpx.ConnectError as error:
                if time.monotonic() > deadline:
                    raise TransportError(f"cannot reach the host: {error}") from None
            except httpx.HTTPError as error:
                raise TransportError(f"{method} {path} failed: {error}") from None
            else:
                if response.status_code != _RETRYABLE_STATUS or time.monotonic() > deadline:
                    return response
            await asyncio.sleep(0.05)

    async def get_attestation(self) -> bytes:
        response = await self._send("GET", "/attestation")
        if response.status_code != httpx.codes.OK:
            raise _error_for(response)
        return response.content

    async def deliver_mail(self, mail: bytes, correlation_id: str) -> bytes | None:
        response = await self._send(
            "POST",
            "/deliver-mail",
            content=mail,
            headers={
                **self._acks.headers(correlation_id),
                "Content-Type": "application/octet-stream",
            },
        )
        return self._acks.mail_from(response, correlation_id)

    async def poll_mail(self, correlation_id: str) -> bytes | None:
        response = await self._send(
            "POST", "/poll-mail", headers=self._acks.headers(correlation_id)
        )
        return self._acks.mail_from(response, correlation_id)

    async def aclose(self) -> None:
        await self._http.aclose()
