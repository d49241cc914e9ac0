"""Calls to a private Cloud Run runtime: each request carries a Google ID token of this service's account.

Cloud Run lets a request through to a service that is not public only with an ID token whose audience is
that service's URL, from an account holding ``run.invoker`` on it (infra/iam.tf gives it to the web
service's account alone). On Cloud Run the metadata server mints the token; it lives an hour and is
reused until shortly before then. Enabled by ``SIGNALING_RUNTIME_AUTH=google-id-token``; anything else
(the default, local runs, docker compose) sends no token.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncGenerator, Callable

import httpx

ENV = "SIGNALING_RUNTIME_AUTH"
MODE = "google-id-token"
METADATA_URL = "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/identity"
TOKEN_REUSE_S = 50 * 60  # Google ID tokens expire after 60 min


class GoogleIdToken(httpx.Auth):
    """``Authorization: Bearer <ID token for audience>`` on every request, the token cached."""

    def __init__(self, audience: str, metadata: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.audience = audience
        self.clock = clock
        self._metadata = httpx.AsyncClient(transport=metadata, trust_env=False, timeout=5.0)
        self._token = ""
        self._until = 0.0

    async def token(self) -> str:
        if not self._token or self.clock() >= self._until:
            response = await self._metadata.get(METADATA_URL, params={"audience": self.audience},
                                                headers={"Metadata-Flavor": "Google"})
            response.raise_for_status()
            self._token, self._until = response.text.strip(), self.clock() + TOKEN_REUSE_S
        return self._token

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = f"Bearer {await self.token()}"
        yield request

    async def aclose(self) -> None:
        await self._metadata.aclose()


def from_env(audience: str, environ: dict[str, str] | None = None) -> GoogleIdToken | None:
    mode = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not mode or mode == "none":
        return None
    if mode != MODE:
        raise ValueError(f"{ENV}={mode!r}: expected {MODE!r} or none")
    return GoogleIdToken(audience)
