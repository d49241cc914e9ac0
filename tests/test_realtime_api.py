"""Voice calls against the real Serve graph on loopback: offers that cannot be a call, the call cap, a
peer that vanishes mid-reply (everything it ran is freed), and a microphone that only sends silence
(the call ends at its idle limit). The harness test (test_realtime_harness.py) measures real turns."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from realtime_avatar.rtc.client import RealtimeCall

# One call at a time and a short idle limit, so the cap and the idle end are quick to reach.
SERVER_ENV = {"AVATAR_REALTIME__MAX_CALLS": "1", "AVATAR_REALTIME__IDLE_TIMEOUT_S": "4"}

WEBRTC_SDP_WITHOUT_AUDIO = (
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n"
    "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\na=rtpmap:96 VP8/90000\r\n"
)


@pytest.fixture(scope="module")
def base(api_server: str) -> str:
    return api_server


def _session(base: str) -> str:
    return httpx.post(f"{base}/v1/chat/sessions", json={"language": "en"}, timeout=30).json()["session_id"]


def _realtime(base: str) -> dict:
    return httpx.get(f"{base}/readyz", timeout=30).json()["stages"]


@pytest.mark.parametrize("body, status, code", [
    ({"sdp": "hello", "type": "offer"}, 400, "invalid_sdp"),
    ({"sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\n", "type": "offer"}, 400, "invalid_sdp"),
    ({"sdp": WEBRTC_SDP_WITHOUT_AUDIO, "type": "offer"}, 400, "no_audio"),
    ({"sdp": WEBRTC_SDP_WITHOUT_AUDIO, "type": "answer"}, 400, "invalid_sdp"),
    ({"sdp": 5, "type": "offer"}, 422, "invalid_request"),
])
def test_an_offer_that_cannot_be_a_call_is_refused_clearly(base: str, body: dict, status: int,
                                                          code: str) -> None:
    r = httpx.post(f"{base}/v1/rtc/offer", json={"session_id": _session(base), **body}, timeout=30)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_an_offer_for_an_unknown_session_is_404(base: str) -> None:
    async def real_offer() -> str:
        from aiortc import RTCPeerConnection

        pc = RTCPeerConnection()
        pc.addTransceiver("audio", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp
    r = httpx.post(f"{base}/v1/rtc/offer", json={"session_id": "0" * 32, "sdp": asyncio.run(real_offer()),
                                                 "type": "offer"}, timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "session_not_found", r.text
    r = httpx.get(f"{base}/v1/rtc/calls/{'0' * 32}", timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "call_not_found"


def test_config_lists_the_ice_servers_and_the_cap(base: str) -> None:
    config = httpx.get(f"{base}/v1/rtc/config", timeout=30).json()
    assert config == {"ice_servers": [], "ice_transport_policy": "all", "max_calls": 1}


def test_one_call_more_than_the_cap_is_503_and_a_vanished_peer_frees_everything(base: str) -> None:
    async def run() -> tuple[dict, dict, dict]:
        async with RealtimeCall(base, "en", keep_video=False) as warm:  # first calls pay one-off costs
            warm.send("text", text="Hello!")
            await warm.wait_event("idle", timeout_s=120)
        await _until_no_calls(base)
        before = _realtime(base)
        call = RealtimeCall(base, "en", keep_video=False)
        await call.start()
        # The cap: a second call is refused at once, with a hint when to retry.
        second = httpx.post(f"{base}/v1/rtc/offer", json={
            "session_id": _session(base), "sdp": call.pc.localDescription.sdp, "type": "offer"}, timeout=30)
        assert second.status_code == 503, second.text
        assert second.json()["error"]["code"] == "too_many_calls" and second.headers["Retry-After"]
        call.send("text", text="Tell me about your work, in three sentences.")
        speaking = await call.wait_event("speaking", timeout_s=120)
        assert speaking is not None, [e.type for e in call.recording.events]
        during = _realtime(base)
        # Vanish: no hang-up message, the transport just goes away.
        call.mic.stop()
        await call.pc.close()
        await _until_no_calls(base)
        await asyncio.sleep(1.0)  # cancelled streams wind down in the stages
        return before, during, _realtime(base)
    before, during, after = asyncio.run(run())
    assert during["realtime"]["calls"] == 1
    assert after["realtime"]["calls"] == 0 and after["realtime"]["in_flight"] == 0
    for stage in ("llm", "tts", "avatar", "asr", "conversation"):
        assert after[stage]["in_flight"] == 0, (stage, after[stage])
    grown = after["realtime"]["rss_mb"] - before["realtime"]["rss_mb"]
    assert grown < 40, f"the realtime replica kept {grown:.0f} MB after the call ended"


def test_a_microphone_that_sends_only_silence_ends_the_call_at_its_idle_limit(base: str) -> None:
    async def run() -> list[str]:
        async with RealtimeCall(base, "en", keep_video=False) as call:
            # The scripted microphone sends its noise floor (-70 dBFS) when it has nothing to say.
            ended = await call.wait_event("call_ended", timeout_s=30)
            assert ended is not None and ended.event["reason"] == "idle"
            return [e.type for e in call.recording.events]
    kinds = asyncio.run(run())
    assert "user_speaking" not in kinds and "transcript" not in kinds
    assert _realtime(base)["realtime"]["calls"] == 0


async def _until_no_calls(base: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _realtime(base)["realtime"]["calls"] and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
