"""The signaling service's WebSocket relay (/avatar/api/rtc/ws) refusing what cannot be a call, against
the runtime double of tests/test_signaling.py (no Serve): each refusal is an ``error`` event then a close
code of 4000 + the HTTP status with the error code as its reason. tests/test_realtime_socket.py holds
real calls through it."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from realtime_avatar.rtc.client import RealtimeApiError
from realtime_avatar.rtc.socket_client import SocketCall, ws_url
from tests.test_signaling import FakeRuntime, running_runtime, running_signaling


@pytest.fixture(scope="module")
def service():
    fake = FakeRuntime()
    with running_runtime(fake) as url, running_signaling(url) as http:
        session = http.post("/avatar/api/session", json={"language": "en"})
        assert session.status_code == 201, session.text
        yield str(http.base_url).rstrip("/"), session.json()["token"]


def _refused(base: str, token: str, language: str = "en") -> RealtimeApiError:
    async def run() -> RealtimeApiError:
        with pytest.raises(RealtimeApiError) as caught:
            async with SocketCall(base, language, token=token):
                pass
        return caught.value
    return asyncio.run(run())


def test_a_bad_token_is_refused(service) -> None:
    base, token = service
    error = _refused(base, token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))
    assert error.status == 401 and error.code == "invalid_token", error
    assert _refused(base, "").status == 401


def test_a_language_it_cannot_speak_is_refused(service) -> None:
    base, token = service
    error = _refused(base, token, language="fr")
    assert (error.status, error.code) == (400, "unsupported_language"), error


def test_a_first_message_that_is_not_the_start_is_refused(service) -> None:
    base, _ = service

    async def run() -> tuple[dict, int | None, str]:
        async with websockets.connect(ws_url(base, "/avatar/api/rtc/ws")) as socket:
            await socket.send("hello")
            error = json.loads(await socket.recv())
            await socket.wait_closed()
            return error, socket.close_code, socket.close_reason
    error, code, reason = asyncio.run(run())
    assert error["type"] == "error" and error["error"]["code"] == "invalid_request", error
    assert (code, reason) == (4400, "invalid_request")


def test_a_runtime_without_the_fallback_is_unavailable_not_an_error_page(service) -> None:
    base, token = service  # the double has no /v1/rtc/ws: the upgrade is refused there
    error = _refused(base, token)
    assert (error.status, error.code) == (503, "runtime_unavailable"), error


def test_a_page_on_another_site_cannot_open_it(service) -> None:
    base, _ = service

    async def run() -> None:
        async with websockets.connect(ws_url(base, "/avatar/api/rtc/ws"), origin="https://evil.example"):
            pass
    with pytest.raises(websockets.InvalidStatus) as caught:
        asyncio.run(run())
    assert caught.value.response.status_code == 403
