"""The optional API key and the Origin check (issue 15, item 8), against the real Serve graph on loopback
with ``serve.api_key`` and ``serve.allowed_origins`` set; and the signaling service passing the key on."""

import asyncio
from urllib.parse import urlsplit

import httpx
import pytest

KEY = "test-key-0123456789"
OWNER = "https://owner.example"
SERVER_ENV = {"AVATAR_SERVE__API_KEY": KEY, "AVATAR_SERVE__ALLOWED_ORIGINS": f'["{OWNER}"]'}
SPEAK = {"text": "Hi.", "language": "en"}


def _code(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/json"), response.text[:200]
    return response.json()["error"]["code"]


def test_routes_need_the_key(api_server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"X-API-Key": "x"}):
        refused = httpx.post(f"{api_server}/v1/tts", json=SPEAK, headers=headers, timeout=60)
        assert refused.status_code == 401 and _code(refused) == "unauthorized", headers
        assert refused.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{api_server}/docs", timeout=30).status_code == 401
    assert httpx.delete(f"{api_server}/v1/voices/{'0' * 32}", timeout=30).status_code == 401
    for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}):
        spoken = httpx.post(f"{api_server}/v1/tts", json=SPEAK, headers=headers, timeout=120)
        assert spoken.status_code == 200, spoken.text[:300]


def test_health_needs_no_key(api_server):
    assert httpx.get(f"{api_server}/healthz", timeout=30).status_code == 200
    assert httpx.get(f"{api_server}/readyz", timeout=30).status_code == 200


def test_browser_requests_only_from_allowed_origins(api_server):
    key = {"X-API-Key": KEY}
    foreign = httpx.post(f"{api_server}/v1/tts", json=SPEAK, headers={**key, "Origin": "http://evil.example"},
                         timeout=60)
    assert foreign.status_code == 403 and _code(foreign) == "origin_not_allowed"
    owner = httpx.post(f"{api_server}/v1/tts", json=SPEAK, headers={**key, "Origin": OWNER}, timeout=120)
    assert owner.status_code == 200 and owner.headers["access-control-allow-origin"] == OWNER
    preflight = httpx.options(f"{api_server}/v1/tts", headers={"Origin": OWNER,
                                                               "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204 and "x-api-key" in preflight.headers["access-control-allow-headers"]
    own = urlsplit(api_server).netloc  # the API's own /docs page, on loopback
    docs = httpx.post(f"{api_server}/v1/tts", json=SPEAK, headers={**key, "Origin": f"http://{own}"},
                      timeout=120)
    assert docs.status_code == 200, docs.text[:300]
    port = urlsplit(api_server).port  # a DNS-rebinding page: its name resolves to 127.0.0.1
    rebound = httpx.post(f"{api_server}/v1/tts", json=SPEAK, timeout=60, headers={
        **key, "Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"})
    assert rebound.status_code == 403


@pytest.mark.parametrize("api_key", [KEY, None])
def test_signaling_passes_the_key_on(api_server, api_key):
    from signaling.runtime import Runtime

    async def create() -> int:
        runtime = Runtime(api_server, wake_timeout_s=30, stream_idle_timeout_s=30, api_key=api_key)
        try:
            response = await runtime.http.post("/v1/chat/sessions", json={"language": "en"})
            return response.status_code
        finally:
            await runtime.close()

    assert asyncio.run(create()) == (201 if api_key else 401)
