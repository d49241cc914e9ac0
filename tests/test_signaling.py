"""The signaling service (signaling/) on real sockets: tokens, the cost guard, CORS, the page's static
files, the chat stream relayed unbuffered, and a cold runtime, against a runtime double that speaks the
chat API's wire format (the real runtime is in tests/test_web_browser.py)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

import signaling.app as signaling_app
from signaling import Settings, create_app
from signaling.config import PREFIX
from signaling.limits import RateLimiter, SessionTable
from signaling.tokens import TokenError, issue, verify

SECRET = "test-secret-0123456789"
REPO = Path(__file__).resolve().parent.parent
NDJSON = "application/x-ndjson"
CHAT = "/avatar/api/chat"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThreadServer:
    """An ASGI app under uvicorn on a loopback port, in a thread of the test process."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, access_log=False,
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(10)


# --- the runtime double ----------------------------------------------------------------------------------

CLIP = base64.b64encode(b"\x00\x00\x00\x08ftyp" * 4).decode()


class FakeRuntime:
    """The runtime's chat API as the wire sees it: sessions, NDJSON replies, JSON errors, readiness.

    ``ready_at``: /readyz answers 503 before it (``hold_readyz``: it holds the request until then, as a
    scale-to-zero front does). ``mode``: ``ok``, ``die`` (the connection drops mid-reply), ``html``
    (a front end's HTML 502), ``overloaded`` (503 with Retry-After)."""

    def __init__(self, ready_after_s: float = 0.0, hold_readyz: bool = False) -> None:
        self.ready_at = time.monotonic() + ready_after_s
        # Voice calls (realtime_avatar/rtc/protocol.py): live call id -> session id, and what happened.
        self.calls: dict[str, str] = {}
        self.call_log: list[tuple[str, str]] = []  # ("offer" | "hangup", call id), in order
        self.offers: list[dict[str, Any]] = []
        self.offer_mode = "ok"  # ok, too_many_calls, invalid_sdp
        self.offer_delay_s = 0.0
        self.expires_in_s = 600.0
        self.hold_readyz = hold_readyz
        self.mode = "ok"
        self.first_line_delay_s = 0.0
        self.gap_s = 0.02
        self.pause_after_first_s = 0.0
        self.sessions: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []
        self.chats: list[dict[str, Any]] = []
        self.request_ids: list[str] = []
        self.disconnected = threading.Event()
        self.config_sessions: list[str | None] = []
        self.relays: list[dict[str, Any]] = []  # TURN entries the runtime would mint itself

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/readyz", self.readyz),
            Route("/v1/chat/sessions", self.create, methods=["POST"]),
            Route("/v1/chat/sessions/{sid}", self.delete, methods=["DELETE"]),
            Route("/v1/chat/sessions/{sid}/greeting", self.greeting),
            Route("/v1/chat", self.chat, methods=["POST"]),
            Route("/v1/rtc/config", self.rtc_config),
            Route("/v1/rtc/offer", self.rtc_offer, methods=["POST"]),
            Route("/v1/rtc/calls/{cid}", self.rtc_call, methods=["GET", "DELETE"]),
        ])

    async def rtc_config(self, request: Request) -> Response:
        self.config_sessions.append(request.query_params.get("session_id"))
        servers = [{"urls": ["stun:stun.example:3478"]}, *self.relays]
        return JSONResponse({"ice_servers": servers, "max_calls": 2})

    async def rtc_offer(self, request: Request) -> Response:
        body = await request.json()
        self.offers.append(body)
        if body.get("session_id") not in self.sessions:
            return _error(404, "session_not_found", "no such conversation")
        await asyncio.sleep(self.offer_delay_s)  # building the peer connection, gathering candidates
        if self.offer_mode == "too_many_calls":
            return _error(503, "too_many_calls", "the avatar is on too many calls", {"Retry-After": "5"})
        if self.offer_mode == "invalid_sdp" or not body.get("sdp", "").startswith("v=0"):
            return _error(400, "invalid_sdp", "that is not an SDP offer")
        cid = uuid.uuid4().hex[:12]
        self.calls[cid] = body["session_id"]
        self.call_log.append(("offer", cid))
        return JSONResponse({"call_id": cid, "session_id": body["session_id"], "sdp": "v=0\r\nanswer\r\n",
                             "type": "answer", "language": body.get("language", "auto")})

    async def rtc_call(self, request: Request) -> Response:
        cid = request.path_params["cid"]
        if cid not in self.calls:
            return _error(404, "call_not_found", "no such call")
        if request.method == "GET":
            return JSONResponse({"call_id": cid, "session_id": self.calls[cid], "state": "listening"})
        sid = self.calls.pop(cid)
        self.call_log.append(("hangup", cid))
        return JSONResponse({"call_id": cid, "session_id": sid, "ended": True})

    async def readyz(self, request: Request) -> Response:
        if self.hold_readyz:
            await asyncio.sleep(max(0.0, self.ready_at - time.monotonic()))
        ready = time.monotonic() >= self.ready_at
        return JSONResponse({"ready": ready}, 200 if ready else 503)

    async def create(self, request: Request) -> Response:
        body = await request.json()
        sid = uuid.uuid4().hex
        self.sessions[sid] = {"language": body.get("language", "auto")}
        return JSONResponse({"session_id": sid, "language": body.get("language", "auto"), "turns": 0,
                             "voice_id": None, "avatar_id": None, "expires_in_s": self.expires_in_s,
                             "greeting": "Hi! I'm Alex."}, 201)

    async def delete(self, request: Request) -> Response:
        sid = request.path_params["sid"]
        if self.sessions.pop(sid, None) is None:
            return _error(410, "session_expired", "gone")
        self.deleted.append(sid)
        return JSONResponse({"session_id": sid, "ended": True, "turns": 0})

    async def greeting(self, request: Request) -> Any:
        if request.path_params["sid"] not in self.sessions:
            return _error(404, "session_not_found", "no such conversation")
        return FakeStream(self, ["Hi! I'm Alex."], "en")

    async def chat(self, request: Request) -> Any:
        body = await request.json()
        self.chats.append(body)
        self.request_ids.append(request.headers.get("x-request-id", ""))
        if body["session_id"] not in self.sessions:
            return _error(404, "session_not_found", "no such conversation")
        if len(body["text"]) > 50:
            size = len(body["text"])
            return _error(413, "message_too_long", f"the message has {size} characters; the limit is 50")
        if self.mode == "overloaded":
            return _error(503, "overloaded", "busy", {"Retry-After": "3"})
        if self.mode == "html":
            return Response("<html><body>502 Bad Gateway</body></html>", 502, media_type="text/html")
        await asyncio.sleep(self.first_line_delay_s)
        return FakeStream(self, ["¡Hola!", " Trabajo", " en", " vídeo."], "es")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


class FakeStream:
    """An NDJSON reply that notices the client leaving (as the runtime does, to cancel the reply)."""

    def __init__(self, runtime: FakeRuntime, deltas: list[str], language: str) -> None:
        self.runtime, self.deltas, self.language = runtime, deltas, language

    def lines(self) -> list[dict[str, Any]]:
        text = "".join(self.deltas)
        return [{"type": "start", "session_id": "x", "turn": 1, "language": self.language},
                *({"type": "text", "delta": d} for d in self.deltas),
                {"type": "clip", "index": 0, "text": text, "language": self.language, "start_s": 0.0,
                 "duration_s": 1.0, "mime": "video/mp4", "data": CLIP},
                {"type": "done", "text": text, "clips": 1, "cut": False, "timings_ms": {}}]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self.runtime
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", NDJSON.encode())]})

        async def body() -> None:
            for i, line in enumerate(self.lines()):
                if i == 1 and runtime.pause_after_first_s:
                    await asyncio.sleep(runtime.pause_after_first_s)
                if i == 2 and runtime.mode == "die":
                    raise ConnectionAbortedError("the runtime died")
                await send({"type": "http.response.body", "more_body": True,
                            "body": json.dumps(line, ensure_ascii=False).encode() + b"\n"})
                await asyncio.sleep(runtime.gap_s)
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async with anyio.create_task_group() as group:
            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                if group.cancel_scope.cancel_called:
                    return
                runtime.disconnected.set()
                group.cancel_scope.cancel()

            group.start_soon(watch)
            await body()
            group.cancel_scope.cancel()


# --- fixtures --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def running_runtime(runtime: FakeRuntime, start_after_s: float = 0.0,
                    port: int | None = None) -> Iterator[str]:
    server = ThreadServer(runtime.app(), port)
    timer = threading.Timer(start_after_s, server.start) if start_after_s else None
    if timer:
        timer.start()
    else:
        server.start()
    try:
        yield server.url
    finally:
        if timer:
            timer.cancel()
            timer.join()
        server.stop()


@contextlib.contextmanager
def running_signaling(runtime_url: str, **overrides: Any) -> Iterator[httpx.Client]:
    values: dict[str, Any] = {"runtime_url": runtime_url, "secret": SECRET, "web_dir": REPO / "web" / "dist"}
    values.update(overrides)
    server = ThreadServer(create_app(Settings(**values))).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10, trust_env=False) as client:
            yield client
    finally:
        server.stop()


@pytest.fixture
def runtime() -> Iterator[FakeRuntime]:
    fake = FakeRuntime()
    with running_runtime(fake) as url:
        fake.url = url  # type: ignore[attr-defined]
        yield fake


@pytest.fixture
def client(runtime: FakeRuntime) -> Iterator[httpx.Client]:
    with running_signaling(runtime.url) as http:  # type: ignore[attr-defined]
        yield http


def _json_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] == code and body["error"]["message"]
    return body


def _session(client: httpx.Client) -> dict[str, Any]:
    response = client.post("/avatar/api/session", json={"language": "auto"})
    assert response.status_code == 201, response.text
    return response.json()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _events(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


# --- tokens, limits, config (no sockets) -----------------------------------------------------------------


def test_a_token_verifies_until_it_expires_and_never_past_the_conversations_end():
    key = SECRET.encode()
    token, claims = issue(key, "sid-1", ttl_s=60, end=1000.0 + 3600, now=1000.0)
    assert verify(key, token, now=1030.0) == claims and claims.sid == "sid-1"
    with pytest.raises(TokenError) as expired:
        verify(key, token, now=1060.0)
    assert (expired.value.status, expired.value.code) == (401, "token_expired")
    # A token is capped by the conversation's end; past the end the answer says why (403, not 401).
    capped, claims = issue(key, "sid-1", ttl_s=600, end=1100.0, now=1000.0)
    assert claims.exp == 1100.0
    with pytest.raises(TokenError) as over:
        verify(key, capped, now=1100.0)
    assert (over.value.status, over.value.code) == (403, "session_time_limit")


@pytest.mark.parametrize("mangle", [
    lambda t: t.replace("v1.", "v2.", 1),  # unknown version
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # signature changed
    lambda t: "v1." + base64.urlsafe_b64encode(json.dumps(  # claims swapped for another session
        {"sid": "someone-else", "iat": 0, "exp": 9e12, "end": 9e12}).encode()).decode().rstrip("=")
        + "." + t.split(".")[2],
    lambda t: t.split(".", 1)[1],  # a part missing
    lambda t: "",
])
def test_a_tampered_or_malformed_token_is_refused(mangle):
    key = SECRET.encode()
    token, _ = issue(key, "sid-1", ttl_s=60, end=time.time() + 600)
    with pytest.raises(TokenError) as refused:
        verify(key, mangle(token))
    assert (refused.value.status, refused.value.code) == (401, "invalid_token")
    with pytest.raises(TokenError):
        verify(b"another-key", token)  # a token from another deployment


def test_the_rate_limiter_allows_a_burst_then_refills_evenly():
    now = [0.0]
    limiter = RateLimiter(per_minute=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0, 0, 0]
    wait = limiter.take("a")
    assert wait == pytest.approx(20.0)  # one request per 20 s
    assert limiter.take("b") == 0  # per key
    now[0] = 19.0
    assert limiter.take("a") > 0
    now[0] = 20.5
    assert limiter.take("a") == 0


def test_the_rate_limiter_forgets_idle_keys_past_its_size():
    now = [0.0]
    limiter = RateLimiter(per_minute=2, clock=lambda: now[0], max_keys=10)
    for i in range(50):
        now[0] += 1.0
        assert limiter.take(f"ip-{i}") == 0
    assert len(limiter._buckets) <= 10


def test_the_session_table_caps_open_conversations_and_ends_them_on_time():
    now = [1000.0]
    table = SessionTable(max_sessions=2, clock=lambda: now[0])
    assert table.reserve() and table.reserve()
    assert not table.reserve()  # two creations in flight already fill it
    table.commit("a", end=1100.0, idle_ttl_s=30)
    table.release()  # the second creation failed
    assert table.reserve()
    table.commit("b", end=2000.0, idle_ttl_s=30)
    assert not table.reserve()
    now[0] = 1050.0
    table.get("b", 2000.0, 30).last_seen = now[0]  # "b" is active, "a" idles past its 30 s
    over, idle = table.sweep()
    assert ([s.sid for s in over], [s.sid for s in idle]) == ([], ["a"])
    assert table.get("a", 1100.0, 30) is None  # an ended conversation's token stays refused
    now[0] = 2000.0
    over, idle = table.sweep()
    assert [s.sid for s in over] == ["b"] and len(table) == 0


def test_settings_come_from_signaling_env_vars_and_bad_values_are_named():
    env = {f"{PREFIX}RUNTIME_URL": "http://10.0.0.5:8000", f"{PREFIX}MAX_SESSIONS": "3",
           f"{PREFIX}ALLOWED_ORIGINS": "https://owner.example, https://www.owner.example/",
           f"{PREFIX}TOKEN_TTL_S": "120", f"{PREFIX}SECRET": "s3cret"}
    settings = Settings.from_env(env, port=9001)
    assert settings.runtime_url == "http://10.0.0.5:8000" and settings.max_sessions == 3
    assert settings.allowed_origins == ("https://owner.example", "https://www.owner.example")
    assert settings.token_ttl_s == 120.0 and settings.port == 9001 and not settings.secret_generated
    generated = Settings.from_env({})
    assert generated.secret_generated and len(generated.secret) >= 32
    assert Settings.from_env({}).secret != generated.secret  # random per process
    with pytest.raises(ValueError, match="SIGNALING_MAX_SESSIONS"):
        Settings.from_env({f"{PREFIX}MAX_SESSIONS": "many"})
    with pytest.raises(ValueError, match="SIGNALING_WAKE_TIMEOUT_S"):
        Settings.from_env({f"{PREFIX}WAKE_TIMEOUT_S": "0"})
    with pytest.raises(ValueError, match="ALLOWED_ORIGINS"):
        Settings.from_env({f"{PREFIX}ALLOWED_ORIGINS": "owner.example"})


# --- the service on sockets ------------------------------------------------------------------------------


def test_a_conversation_token_unlocks_the_relayed_chat_stream(client, runtime):
    created = _session(client)
    assert created["greeting"] == "Hi! I'm Alex." and created["session_id"] in runtime.sessions
    assert created["token_expires_in_s"] == 600 and created["ends_in_s"] == 900
    headers = {**_auth(created["token"]), "X-Request-ID": "rid-42"}
    with client.stream("POST", CHAT, headers=headers, json={"text": "Hola", "language": "es"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == NDJSON
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-request-id"] == "rid-42"
        events = [json.loads(line) for line in response.iter_lines() if line]
    assert [e["type"] for e in events] == ["start", "text", "text", "text", "text", "clip", "done"]
    assert events[-2]["data"] == CLIP and events[-1]["text"] == "¡Hola! Trabajo en vídeo."
    # The runtime got the session from the token (the page never names it) and the same request id.
    assert runtime.chats[-1] == {"session_id": created["session_id"], "text": "Hola", "language": "es"}
    assert runtime.request_ids[-1] == "rid-42"
    greeting = client.get("/avatar/api/greeting", headers=_auth(created["token"]))
    kinds = [e["type"] for e in _events(greeting)]
    assert kinds[0] == "start" and kinds[-1] == "done"


def test_refresh_renews_the_token_and_ending_frees_the_conversation(client, runtime):
    created = _session(client)
    refreshed = client.post("/avatar/api/session/refresh", headers=_auth(created["token"]))
    assert refreshed.status_code == 200 and refreshed.json()["token"] != created["token"]
    ended = client.delete("/avatar/api/session", headers=_auth(refreshed.json()["token"]))
    assert ended.status_code == 200 and ended.json()["ended"] is True
    assert runtime.deleted == [created["session_id"]]
    # Both tokens of the ended conversation are refused from now on.
    for token in (created["token"], refreshed.json()["token"]):
        _json_error(client.post("/avatar/api/chat", headers=_auth(token), json={"text": "hi"}), 410,
                    "session_ended")


def test_missing_forged_and_expired_tokens_get_401_and_an_overrun_conversation_403(client, runtime):
    created = _session(client)
    chat = {"text": "hola", "language": "es"}
    _json_error(client.post("/avatar/api/chat", json=chat), 401, "missing_token")
    forged, _ = issue(b"not-the-secret", created["session_id"], 60, time.time() + 600)
    _json_error(client.post("/avatar/api/chat", headers=_auth(forged), json=chat), 401, "invalid_token")
    tampered = created["token"][:-3] + ("xyz" if not created["token"].endswith("xyz") else "abc")
    _json_error(client.post("/avatar/api/chat", headers=_auth(tampered), json=chat), 401, "invalid_token")
    expired, _ = issue(SECRET.encode(), created["session_id"], 60, time.time() + 600, now=time.time() - 120)
    _json_error(client.post("/avatar/api/chat", headers=_auth(expired), json=chat), 401, "token_expired")
    _json_error(client.post("/avatar/api/session/refresh", headers=_auth(expired)), 401, "token_expired")
    overrun, _ = issue(SECRET.encode(), created["session_id"], 600, time.time() - 1, now=time.time() - 60)
    _json_error(client.post("/avatar/api/chat", headers=_auth(overrun), json=chat), 403, "session_time_limit")
    assert runtime.chats == []  # none of them reached the runtime


def test_over_the_rate_limit_answers_429_with_retry_after(runtime):
    with running_signaling(runtime.url, sessions_per_minute=2, messages_per_minute=3) as client:
        first = _session(client)
        _session(client)
        refused = client.post("/avatar/api/session", json={})
        _json_error(refused, 429, "rate_limited")
        assert 1 <= int(refused.headers["retry-after"]) <= 30
        headers = _auth(first["token"])
        for _ in range(3):
            assert client.post("/avatar/api/chat", headers=headers, json={"text": "hola"}).status_code == 200
        _json_error(client.post(CHAT, headers=headers, json={"text": "hola"}), 429, "rate_limited")


def test_the_concurrent_session_cap_answers_503_until_one_ends(runtime):
    with running_signaling(runtime.url, max_sessions=2) as client:
        first, _ = _session(client), _session(client)
        full = client.post("/avatar/api/session", json={"language": "auto"})
        _json_error(full, 503, "too_many_sessions")
        assert int(full.headers["retry-after"]) > 0
        assert len(runtime.sessions) == 2  # the runtime was not asked for a third
        client.delete("/avatar/api/session", headers=_auth(first["token"]))
        _session(client)


def test_a_conversation_ends_after_its_minutes_on_both_sides(runtime, monkeypatch):
    monkeypatch.setattr(signaling_app, "SWEEP_INTERVAL_S", 0.2)
    with running_signaling(runtime.url, max_session_minutes=1.5 / 60, max_sessions=1) as client:
        created = _session(client)
        assert client.post(CHAT, headers=_auth(created["token"]), json={"text": "hi"}).status_code == 200
        time.sleep(1.8)
        _json_error(client.post(CHAT, headers=_auth(created["token"]), json={"text": "hi"}), 403,
                    "session_time_limit")
        assert runtime.deleted == [created["session_id"]]  # the sweeper ended it on the runtime
        _session(client)  # and its slot is free again


def test_cors_is_locked_to_the_configured_origin(runtime):
    site = "https://owner.example"
    with running_signaling(runtime.url, allowed_origins=(site,)) as client:
        preflight = client.options("/avatar/api/session", headers={
            "Origin": site, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == site
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        allowed = client.post("/avatar/api/session", json={}, headers={"Origin": site})
        assert allowed.status_code == 201 and allowed.headers["access-control-allow-origin"] == site
        for method in ("OPTIONS", "POST"):
            refused = client.request(method, "/avatar/api/session", json={}, headers={
                "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
            _json_error(refused, 403, "origin_not_allowed")
            assert "access-control-allow-origin" not in refused.headers
        # The page this service serves is same-origin: allowed without being listed.
        own = str(client.base_url).rstrip("/")
        same = client.post("/avatar/api/session", json={}, headers={"Origin": own})
        assert same.status_code == 201
    assert len(runtime.sessions) == 2


def test_bad_requests_get_clear_json_errors(client, runtime):
    created = _session(client)
    headers = _auth(created["token"])
    _json_error(client.post("/avatar/api/session", json={"language": "fr"}), 400, "unsupported_language")
    _json_error(client.post(CHAT, headers=headers, content=b"text=hi"), 415, "unsupported_media_type")
    _json_error(client.post("/avatar/api/chat", headers={**headers, "Content-Type": "application/json"},
                            content=b"{not json"), 400, "invalid_json")
    _json_error(client.post("/avatar/api/chat", headers=headers, json={"text": 5}), 400, "invalid_request")
    _json_error(client.post("/avatar/api/chat", headers=headers, json={"text": "x" * 20000}), 413,
                "request_too_large")
    # The runtime's own refusals come through with their status and code: a message over its limit.
    body = _json_error(client.post("/avatar/api/chat", headers=headers, json={"text": "x" * 60}), 413,
                       "message_too_long")
    assert "limit is 50" in body["error"]["message"]
    _json_error(client.get("/avatar/api/nothing-here"), 404, "not_found")
    _json_error(client.get("/avatar/api/chat"), 405, "method_not_allowed")


def test_runtime_failures_become_json_503s_never_a_proxy_page(client, runtime):
    created = _session(client)
    headers = _auth(created["token"])
    runtime.mode = "overloaded"
    refused = client.post("/avatar/api/chat", headers=headers, json={"text": "hola"})
    _json_error(refused, 503, "overloaded")
    assert refused.headers["retry-after"] == "3"
    runtime.mode = "html"  # a front end's error page
    refused = client.post("/avatar/api/chat", headers=headers, json={"text": "hola"})
    _json_error(refused, 503, "runtime_unavailable")
    assert "<html" not in refused.text
    # A conversation the runtime no longer knows is ended here too.
    runtime.mode = "ok"
    runtime.sessions.clear()
    _json_error(client.post(CHAT, headers=headers, json={"text": "hola"}), 404, "session_not_found")
    _json_error(client.post("/avatar/api/chat", headers=headers, json={"text": "hola"}), 410, "session_ended")


def test_a_runtime_that_dies_mid_reply_ends_the_stream_with_an_error_line(client, runtime):
    created = _session(client)
    runtime.mode = "die"
    response = client.post("/avatar/api/chat", headers=_auth(created["token"]), json={"text": "hola"})
    assert response.status_code == 200
    events = _events(response)  # every line whole JSON, the last one saying what happened
    assert [e["type"] for e in events[:2]] == ["start", "text"]
    assert events[-1] == {"type": "error", "error": {"code": "runtime_unavailable",
                                                     "message": "the avatar's runtime stopped answering"}}


def test_the_stream_is_relayed_as_it_is_written_not_buffered(client, runtime):
    created = _session(client)
    runtime.pause_after_first_s = 1.5  # the model "thinks" after the first line
    started = time.perf_counter()
    arrivals = []
    with client.stream("POST", CHAT, headers=_auth(created["token"]), json={"text": "hola"}) as reply:
        for line in reply.iter_lines():
            if line:
                arrivals.append((time.perf_counter() - started, json.loads(line)["type"]))
    assert arrivals[0][1] == "start" and arrivals[0][0] < 0.5, arrivals
    assert arrivals[1][0] >= 1.5 and arrivals[-1][1] == "done"


def test_a_visitor_who_leaves_mid_reply_cancels_it_on_the_runtime(client, runtime):
    created = _session(client)
    runtime.pause_after_first_s = 10  # a long reply
    with client.stream("POST", CHAT, headers=_auth(created["token"]), json={"text": "hola"}) as reply:
        assert json.loads(next(reply.iter_lines()))["type"] == "start"
        left = time.monotonic()
    # The page's stop button is exactly this: the request is aborted; the runtime sees its reply's
    # connection close (and cancels the reply) right away, not when the next chunk would have come.
    assert runtime.disconnected.wait(2), "the runtime never saw the client leave"
    assert time.monotonic() - left < 1.0


def test_a_cold_runtime_that_refuses_connections_reports_waking_progress(monkeypatch):
    port = _free_port()
    with running_signaling(f"http://127.0.0.1:{port}", wake_timeout_s=30) as client, \
            running_runtime(FakeRuntime(), start_after_s=2.5, port=port):
        started = time.monotonic()
        answers = []
        while True:
            asked = time.monotonic()
            response = client.post("/avatar/api/session", json={"language": "es"})
            assert time.monotonic() - asked < 1.5, "a cold runtime must not hold the page's request"
            if response.status_code == 201:
                break
            assert response.status_code == 202, response.text
            assert response.headers["retry-after"] == "1"
            body = response.json()
            assert body["state"] == "waking" and body["timeout_s"] == 30
            answers.append(body["waited_s"])
            assert time.monotonic() - started < 10
            time.sleep(0.3)
        assert len(answers) >= 3 and answers == sorted(answers) and answers[-1] >= 1.5
        assert response.json()["language"] == "es" and response.json()["token"]


def test_a_cold_runtime_that_holds_requests_is_polled_in_the_background():
    fake = FakeRuntime(ready_after_s=3.0, hold_readyz=True)  # like a scale-to-zero front, not refusing
    with running_runtime(fake) as url, running_signaling(url, wake_timeout_s=30) as client:
        asked = time.monotonic()
        first = client.post("/avatar/api/session", json={})
        assert first.status_code == 202 and time.monotonic() - asked < 2.0
        while (response := client.post("/avatar/api/session", json={})).status_code == 202:
            assert time.monotonic() - asked < 8
            time.sleep(0.2)
        assert response.status_code == 201
        assert time.monotonic() - asked >= 2.5


def test_a_runtime_that_never_wakes_is_reported_down_to_each_visitor_and_retry_wakes_it_again():
    dead = f"http://127.0.0.1:{_free_port()}"
    with running_signaling(dead, wake_timeout_s=1.0, trusted_proxies=1) as client:
        visitor = [{"X-Forwarded-For": "203.0.113.7"}, {"X-Forwarded-For": "198.51.100.9"}]
        assert client.post("/avatar/api/session", json={}, headers=visitor[0]).status_code == 202
        assert client.post("/avatar/api/session", json={}, headers=visitor[1]).json()["state"] == "waking"
        time.sleep(1.5)
        for headers in visitor:  # everyone who was waiting hears it
            down = client.post("/avatar/api/session", json={}, headers=headers)
            body = _json_error(down, 503, "runtime_unavailable")
            assert body["state"] == "down" and body["waited_s"] >= 1.0
            assert int(down.headers["retry-after"]) >= 1
        # The page's retry: a new wake-up, with its own progress.
        again = client.post("/avatar/api/session", json={}, headers=visitor[0])
        assert again.status_code == 202 and again.json()["waited_s"] < 1.0
        # A valid token whose runtime is gone: a JSON 503 to retry, not a 502.
        token, _ = issue(SECRET.encode(), "sid", 60, time.time() + 600)
        _json_error(client.post("/avatar/api/chat", headers=_auth(token), json={"text": "hola"}), 503,
                    "runtime_unavailable")


def test_the_page_is_served_with_cache_headers_gzip_and_a_strict_csp(runtime, tmp_path):
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html><title>Avatar</title>" + "<p>x</p>" * 200)
    (tmp_path / "assets" / "index-abc123.js").write_text("console.log('avatar');\n" * 100)
    with running_signaling(runtime.url, web_dir=tmp_path) as client:
        redirect = client.get("/avatar")
        assert redirect.status_code == 308 and redirect.headers["location"] == "/avatar/"
        page = client.get("/avatar/", headers={"Accept-Encoding": "gzip"})
        assert page.status_code == 200 and page.headers["content-encoding"] == "gzip"
        assert page.headers["cache-control"] == "no-cache"
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "media-src 'self' blob:" in page.headers["content-security-policy"]
        assert "<title>Avatar</title>" in page.text
        asset = client.get("/avatar/assets/index-abc123.js", headers={"Accept-Encoding": "gzip"})
        assert asset.status_code == 200 and "immutable" in asset.headers["cache-control"]
        assert asset.headers["content-encoding"] == "gzip"
        raw = client.get("/avatar/assets/index-abc123.js", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in raw.headers and raw.text.startswith("console.log")
        _json_error(client.get("/avatar/assets/missing.js"), 404, "not_found")
        assert client.get("/healthz").json() == {"status": "ok"}
    with running_signaling(runtime.url, web_dir=tmp_path / "not-built") as client:
        _json_error(client.get("/avatar/"), 503, "web_not_built")


def test_the_chat_stream_is_never_gzipped(client, runtime):
    created = _session(client)
    reply = client.post("/avatar/api/chat", headers={**_auth(created["token"]), "Accept-Encoding": "gzip"},
                        json={"text": "hola"})
    assert reply.status_code == 200 and "content-encoding" not in reply.headers
    with pytest.raises(gzip.BadGzipFile):
        gzip.decompress(reply.content)


def test_logs_are_json_with_the_session_id_and_never_the_message(client, runtime, caplog):
    from signaling.logs import JsonFormatter

    secret_words = "mi contraseña es pez espada"
    with caplog.at_level(logging.INFO, logger="signaling"):
        created = _session(client)
        client.post("/avatar/api/chat", headers=_auth(created["token"]), json={"text": secret_words[:40]})
        time.sleep(0.2)  # the stream's last log line is written as it closes
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name.startswith("signaling")]
    assert lines and all({"ts", "level", "event", "request_id", "session_id"} <= set(line) for line in lines)
    ended = [line for line in lines if line["event"] == "stream_end"]
    assert ended and ended[0]["session_id"] == created["session_id"] and ended[0]["bytes"] > 0
    assert any(line["event"] == "session_created" and line["session_id"] == created["session_id"]
               for line in lines)
    dump = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert "contraseña" not in dump and created["token"] not in dump and "127.0.0.1\"" not in dump


# --- the CLI and the first-byte overhead (the service in its own process) ---------------------------------


def _first_byte_s(http: httpx.Client, url: str, headers: dict[str, str], body: dict[str, Any]) -> float:
    started = time.perf_counter()
    with http.stream("POST", url, headers=headers, json=body) as response:
        assert response.status_code == 200
        next(response.iter_raw())
        return time.perf_counter() - started


def test_the_cli_serves_and_adds_at_most_20ms_to_the_first_byte(runtime):
    port = _free_port()
    env = {**os.environ, f"{PREFIX}SECRET": SECRET, f"{PREFIX}LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "signaling", "--runtime-url", runtime.url, "--port", str(port)]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == (f"avatar page: http://127.0.0.1:{port}/avatar/ "
                                                     f"(runtime {runtime.url})")
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=10, trust_env=False) as http:
            deadline = time.monotonic() + 15
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if http.get(f"{base}/healthz").status_code == 200:
                        break
                assert time.monotonic() < deadline, "the service did not start"
                time.sleep(0.1)
            created = http.post(f"{base}/avatar/api/session", json={}).json()
            runtime.first_line_delay_s = 0.03  # the runtime's own time to a first line
            direct, proxied = [], []
            for i in range(14):  # alternating, so load on the machine hits both alike
                d = _first_byte_s(http, f"{runtime.url}/v1/chat", {},
                                  {"session_id": created["session_id"], "text": "hola"})
                p = _first_byte_s(http, f"{base}/avatar/api/chat", _auth(created["token"]), {"text": "hola"})
                if i >= 2:  # the first ones open connections
                    direct.append(d)
                    proxied.append(p)
        overhead_ms = (statistics.median(proxied) - statistics.median(direct)) * 1000
        print(f"first byte: direct {statistics.median(direct) * 1000:.1f} ms, through signaling "
              f"{statistics.median(proxied) * 1000:.1f} ms, overhead {overhead_ms:.1f} ms")
        assert overhead_ms <= 20
    finally:
        process.terminate()
        process.wait(10)


# --- voice calls: the WebRTC offer/answer relay ----------------------------------------------------------

RTC = "/avatar/api/rtc"
OFFER_SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


def _offer(client: httpx.Client, token: str, **body: Any) -> httpx.Response:
    return client.post(f"{RTC}/offer", headers=_auth(token),
                       json={"sdp": OFFER_SDP, "type": "offer", "language": "en", **body})


def test_the_browser_gets_its_own_short_lived_turn_credential_bound_to_its_conversation(runtime):
    import base64
    import hashlib
    import hmac

    runtime.relays = [{"urls": ["turn:runtime-relay:3478"], "username": "1:x", "credential": "runtime's"}]
    urls = ("turn:relay.example:3478?transport=udp", "turn:relay.example:3478?transport=tcp")
    with running_signaling(runtime.url, turn_urls=urls, turn_secret="shared", turn_ttl_s=300,
                           ice_transport_policy="relay") as http:
        created = _session(http)
        before = time.time()
        config = http.get(f"{RTC}/config", headers=_auth(created["token"])).json()
    assert runtime.config_sessions[-1] == created["session_id"]  # the runtime's list is for this session
    stun, relay = config["ice_servers"]  # the runtime's relay entry is replaced by ours
    assert stun == {"urls": ["stun:stun.example:3478"]} and relay["urls"] == list(urls)
    expiry, _, who = relay["username"].partition(":")
    assert who == created["session_id"] and before + 299 <= int(expiry) <= time.time() + 301
    expected = base64.b64encode(hmac.new(b"shared", relay["username"].encode(), hashlib.sha1).digest())
    assert relay["credential"] == expected.decode()
    assert config["ice_transport_policy"] == "relay"

    # Without a relay of its own the service passes on what the runtime minted for the session.
    with running_signaling(runtime.url) as http:
        created = _session(http)
        config = http.get(f"{RTC}/config", headers=_auth(created["token"])).json()
    assert config["ice_servers"][1] == runtime.relays[0] and "ice_transport_policy" not in config


@pytest.mark.parametrize(("env", "problem"), [
    ({"SIGNALING_TURN_URLS": "turn:relay.example:3478"}, "TURN_SECRET"),
    ({"SIGNALING_TURN_URLS": "stun:relay.example:3478", "SIGNALING_TURN_SECRET": "s"}, "not a turn"),
    ({"SIGNALING_ICE_TRANSPORT_POLICY": "relay"}, "needs SIGNALING_TURN_URLS"),
    ({"SIGNALING_ICE_TRANSPORT_POLICY": "direct"}, "all or relay"),
    ({"SIGNALING_TURN_URLS": "turn:r:3478", "SIGNALING_TURN_SECRET": "s", "SIGNALING_TURN_TTL_S": "5"},
     "TTL"),
])
def test_a_turn_setting_that_cannot_work_is_refused_at_start(env, problem):
    with pytest.raises(ValueError, match=problem):
        Settings.from_env(env)


def test_a_call_is_signalled_through_the_token_and_hung_up_by_its_own_conversation(client, runtime):
    created = _session(client)
    _json_error(client.get(f"{RTC}/config"), 401, "missing_token")
    config = client.get(f"{RTC}/config", headers=_auth(created["token"]))
    assert config.status_code == 200 and config.headers["cache-control"] == "no-store"
    assert config.json() == {"ice_servers": [{"urls": ["stun:stun.example:3478"]}], "max_calls": 2}
    _json_error(client.post(f"{RTC}/offer", json={"sdp": OFFER_SDP, "type": "offer"}), 401, "missing_token")

    answer = _offer(client, created["token"], language="es")
    assert answer.status_code == 200, answer.text
    call = answer.json()
    assert call["type"] == "answer" and call["sdp"].startswith("v=0") and call["language"] == "es"
    # The runtime got the session from the token; the page never names it.
    assert runtime.offers[-1] == {"session_id": created["session_id"], "sdp": OFFER_SDP, "type": "offer",
                                  "language": "es"}
    assert runtime.calls == {call["call_id"]: created["session_id"]}

    # Another visitor cannot hang up this call, not even knowing its id.
    other = _session(client)
    _json_error(client.delete(f"{RTC}/call/{call['call_id']}", headers=_auth(other["token"])), 404,
                "call_not_found")
    for odd in ("..", "a%2F..%2Fb", "x%20y"):  # never a path of its own on the runtime
        assert client.delete(f"{RTC}/call/{odd}", headers=_auth(created["token"])).status_code == 404
    assert call["call_id"] in runtime.calls
    hung = client.delete(f"{RTC}/call/{call['call_id']}", headers=_auth(created["token"]))
    assert hung.status_code == 200 and hung.json()["ended"] is True
    assert runtime.calls == {} and runtime.call_log[-1] == ("hangup", call["call_id"])
    # Hanging up twice: the runtime's 404, relayed.
    _json_error(client.delete(f"{RTC}/call/{call['call_id']}", headers=_auth(created["token"])), 404,
                "call_not_found")


def test_bad_offers_get_clear_errors_and_an_sdp_may_be_larger_than_a_chat_message(client, runtime):
    token = _session(client)["token"]
    offer = f"{RTC}/offer"
    _json_error(client.post(offer, headers=_auth(token), json={"type": "offer"}), 400, "invalid_request")
    _json_error(_offer(client, token, type="answer"), 400, "invalid_request")
    _json_error(_offer(client, token, sdp=5), 400, "invalid_request")
    _json_error(_offer(client, token, language="fr"), 400, "unsupported_language")
    _json_error(client.post(offer, headers=_auth(token), content=b"sdp"), 415, "unsupported_media_type")
    assert runtime.offers == []  # none of those reached the runtime
    # The runtime's own refusal, with its status and body.
    body = _json_error(_offer(client, token, sdp="hello"), 400, "invalid_sdp")
    assert body["error"]["message"] == "that is not an SDP offer"
    # Every ICE candidate rides in the offer (no trickle): 20 KB passes where a chat body stops at 16 KB.
    big = OFFER_SDP + "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host\r\n" * 350
    assert 16384 < len(big) < 65536
    assert _offer(client, token, sdp=big).status_code == 200
    _json_error(_offer(client, token, sdp=big * 4), 413, "request_too_large")


def test_an_offer_the_runtime_refuses_keeps_its_status_and_retry_after(client, runtime):
    created = _session(client)
    runtime.offer_mode = "too_many_calls"
    full = _offer(client, created["token"])
    body = _json_error(full, 503, "too_many_calls")
    assert full.headers["retry-after"] == "5"
    assert body["error"]["message"] == "the avatar is on too many calls"
    runtime.offer_mode = "ok"
    runtime.sessions.clear()  # the runtime forgot the conversation: it is ended here too
    _json_error(_offer(client, created["token"]), 404, "session_not_found")
    _json_error(_offer(client, created["token"]), 410, "session_ended")


def test_offers_are_rate_limited_per_address(runtime):
    with running_signaling(runtime.url, offers_per_minute=2) as client:
        token = _session(client)["token"]
        assert _offer(client, token).status_code == 200
        assert _offer(client, token).status_code == 200
        refused = _offer(client, token)
        _json_error(refused, 429, "rate_limited")
        assert int(refused.headers["retry-after"]) >= 1
        assert len(runtime.offers) == 2


def test_a_new_offer_hangs_up_the_conversations_call_first(client, runtime):
    created = _session(client)
    first = _offer(client, created["token"]).json()["call_id"]
    second = _offer(client, created["token"]).json()["call_id"]
    assert runtime.call_log == [("offer", first), ("hangup", first), ("offer", second)]
    assert runtime.calls == {second: created["session_id"]}
    # Two offers at once from one conversation (a double click) still leave one call.
    runtime.offer_delay_s = 0.3
    with concurrent_requests(2) as pool:
        answers = list(pool.map(lambda _: _offer(client, created["token"]), range(2)))
    assert [a.status_code for a in answers] == [200, 200]
    assert len(runtime.calls) == 1 and set(runtime.calls) <= {a.json()["call_id"] for a in answers}


@contextlib.contextmanager
def concurrent_requests(workers: int) -> Iterator[Any]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        yield pool


def test_ending_the_conversation_hangs_up_its_call_even_one_still_being_answered(client, runtime):
    created = _session(client)
    call = _offer(client, created["token"]).json()["call_id"]
    assert client.delete("/avatar/api/session", headers=_auth(created["token"])).status_code == 200
    assert runtime.call_log[-1] == ("hangup", call) and runtime.calls == {}
    # The page leaves while the runtime is still answering its offer: the call it answered is hung up.
    created = _session(client)
    runtime.offer_delay_s = 0.5
    with concurrent_requests(1) as pool:
        pending = pool.submit(_offer, client, created["token"])
        time.sleep(0.2)
        assert client.delete("/avatar/api/session", headers=_auth(created["token"])).status_code == 200
        _json_error(pending.result(), 410, "session_ended")
    assert runtime.calls == {} and runtime.call_log[-1][0] == "hangup"


def test_a_call_ends_with_the_conversations_minutes_and_keeps_it_from_idling_out(runtime, monkeypatch):
    monkeypatch.setattr(signaling_app, "SWEEP_INTERVAL_S", 0.2)
    runtime.expires_in_s = 0.8  # the runtime forgets a conversation idle this long
    with running_signaling(runtime.url, max_session_minutes=2.5 / 60) as client:
        talking, typing = _session(client), _session(client)
        call = _offer(client, talking["token"]).json()["call_id"]
        # A visitor talking by voice sends no HTTP requests: the call, not the requests, keeps it open.
        time.sleep(1.5)
        _json_error(client.post(CHAT, headers=_auth(typing["token"]), json={"text": "hi"}), 410,
                    "session_ended")
        assert client.post("/avatar/api/session/refresh", headers=_auth(talking["token"])).status_code == 200
        assert runtime.calls == {call: talking["session_id"]}
        time.sleep(1.5)  # past its 2.5 s: the sweeper hangs up the call, then ends the conversation
        assert runtime.call_log[-1] == ("hangup", call) and runtime.calls == {}
        assert runtime.deleted == [talking["session_id"]]
        _json_error(_offer(client, talking["token"]), 403, "session_time_limit")


def test_a_call_this_instance_did_not_see_start_is_hung_up_if_the_runtime_says_it_is_ours(client, runtime):
    mine, theirs = _session(client), _session(client)
    runtime.calls["c-mine"] = mine["session_id"]  # e.g. begun before this service restarted
    runtime.calls["c-theirs"] = theirs["session_id"]
    _json_error(client.delete(f"{RTC}/call/c-theirs", headers=_auth(mine["token"])), 404, "call_not_found")
    assert client.delete(f"{RTC}/call/c-mine", headers=_auth(mine["token"])).status_code == 200
    assert runtime.calls == {"c-theirs": theirs["session_id"]}
