"""The host's side of a key derivation service: where it is, and carrying an enclave's key
request to it (the enclave checks the answer; the host can neither read nor forge it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from sanctorum.common.errors import KdsError


@dataclass(frozen=True)
class KdsConfiguration:
    """The KDS an enclave with a ``[kds]`` table gets its keys from: the key of its persistent
    state, and the keys of mail sealed to a key spec (clients of a cluster)."""

    url: str
    """Where ``sanctorum kds serve`` listens, e.g. ``http://127.0.0.1:8090``."""
    timeout: float = 30.0
    """Seconds to keep trying (with backoff) while the KDS is down or answers 5xx."""


MAX_ANSWER_SIZE = 4 << 20
"""A KDS answer holds a key and an attestation (a DCAP one ~20 KB): more is not a KDS's."""


def _read_at_most(response: httpx.Response, url: str) -> bytes:
    answer = bytearray()
    for chunk in response.iter_bytes():
        answer += chunk
        if len(answer) > MAX_ANSWER_SIZE:
            raise KdsError(f"the KDS at {url} answered over {MAX_ANSWER_SIZE} bytes: not a KDS")
    return bytes(answer)


def kds_fetcher(config: KdsConfiguration) -> Callable[[bytes], bytes]:
    """Posts an enclave's ``/private`` request to the KDS and returns its answer's body; a 4xx
    answer is returned too (the enclave reports its reason). :class:`KdsError` if the KDS
    does not answer within the timeout."""
    url = config.url.rstrip("/") + "/private"

    def fetch(body: bytes) -> bytes:
        deadline = time.monotonic() + config.timeout
        pause = 0.1
        while True:
            remaining = deadline - time.monotonic()
            try:
                with httpx.stream(
                    "POST",
                    url,
                    content=body,
                    headers={"Content-Type": "application/json"},
                    timeout=max(0.1, remaining),
                ) as response:
                    if response.status_code < 500:
                        return _read_at_most(response, config.url)
                    problem = f"it answered {response.status_code}"
            except httpx.HTTPError as error:
                problem = f"{type(error).__name__}: {error}"
            if time.monotonic() + pause >= deadline:
                raise KdsError(
                    f"the KDS at {config.url} did not give the enclave its key "
                    f"within {config.timeout:g} s ({problem}); check that it runs there"
                )
            time.sleep(pause)
            pause = min(pause * 2, 2.0)

    return fetch
