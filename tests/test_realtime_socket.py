"""The WebSocket fallback end to end against the real Serve graph on loopback (cpu profile): a spoken
question answered with audio and frames on one clock, the same events as the data channel in the same
order, hang-up and a vanished client freeing the call, calls that cannot start refused with a clear
close code and error, a bad frame answered in band, and the signaling service's relay (token first,
one call per conversation)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from realtime_avatar.rtc import protocol, wire
from realtime_avatar.rtc.client import RealtimeApiError, RealtimeCall
from realtime_avatar.rtc.harness import Line, speak_lines
from realtime_avatar.rtc.socket_client import SocketCall

# Greedy, short replies; one call at a time, so the cap is quick to reach.
SERVER_ENV = {"AVATAR_CHAT__TEMPERATURE": "0", "AVATAR_CHAT__REPLY_MAX_SENTENCES": "2",
              "AVATAR_REALTIME__MAX_CALLS": "1"}
STATES = ("call_started", "listening", "thinking", "speaking", "turn_timings", "idle")
QUESTION = Line("What do you do for a living?", "en")


@contextlib.contextmanager
def signaling(runtime_url: str) -> Iterator[str]:
    """``python -m signaling`` in its own process, in front of ``runtime_url``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "signaling", "--runtime-url", runtime_url, "--port", str(port)]
    process = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[1],
                               env={**os.environ, "SIGNALING_SECRET": "socket-test-secret"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/healthz", timeout=1, trust_env=False).status_code == 200:
                    break
            assert process.poll() is None and time.monotonic() < deadline, "signaling did not start"
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(10)


def _stages(base: str) -> dict:
    return httpx.get(f"{base}/readyz", timeout=30).json()["stages"]


async def _until_no_calls(base: str, timeout_s: float = 10.0) -> float:
    """Seconds until the runtime has no call (and nothing in flight); fails past ``timeout_s``."""
    started = time.monotonic()
    while True:
        realtime = _stages(base)["realtime"]
        if realtime["calls"] == 0 and realtime["in_flight"] == 0:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout_s, realtime
        await asyncio.sleep(0.1)


def _kinds(events: list) -> list[str]:
    """Event types in order, runs of one type (reply_text deltas) collapsed."""
    out: list[str] = []
    for e in events:
        if not out or out[-1] != e.type:
            out.append(e.type)
    return out


@pytest.fixture(scope="module")
def spoken(api_server: str):
    return speak_lines(api_server, [QUESTION])[0]


@pytest.fixture(scope="module")
def spoken_call(api_server: str, spoken) -> SocketCall:
    """One call over the fallback: idle media, the spoken question, its reply, hang-up."""
    async def run() -> SocketCall:
        async with SocketCall(api_server, "en") as call:
            await asyncio.sleep(1.0)
            sent = await call.say(spoken.pcm, spoken.sample_rate)
            idle = await call.wait_event(protocol.IDLE, after=sent.speech_end_at, timeout_s=150)
            assert idle is not None, _kinds(call.recording.events)
        return call
    return asyncio.run(run())


def test_a_spoken_question_is_answered_with_audio_and_frames_on_one_clock(spoken_call: SocketCall) -> None:
    rec = spoken_call.recording
    kinds = _kinds(rec.events)
    for kind in ("call_started", "user_speaking", "transcript", "thinking", "reply_text", "speaking",
                 "reply_done", "turn_timings", "idle"):
        assert kind in kinds, kinds
    transcript = next(e.event for e in rec.events if e.type == "transcript" and e.event["final"])
    assert "living" in transcript["text"].lower(), transcript
    # The reply's audio: loud where the avatar spoke, between 'speaking' and 'idle'.
    speaking = next(e.at for e in rec.events if e.type == "speaking")
    idle = next(e.at for e in rec.events if e.type == "idle")
    reply = [c for c, t in zip(rec.audio.chunks, rec.audio.arrived_at, strict=True) if speaking <= t <= idle]
    assert reply and float(np.sqrt(np.mean(np.concatenate(reply) ** 2))) > 0.01
    # Audio positions are contiguous 20 ms packets; every frame sits on the same clock, on a frame grid.
    positions = np.array(rec.audio.pts)
    assert (np.diff(positions) == 960).all() and positions[0] == 0
    frames = np.array(rec.video.pts)
    assert (np.diff(frames) > 0).all() and (frames % 1920 == 0).all()
    assert frames[-1] <= positions[-1] + 1920
    assert rec.video.frames[0].shape == (256, 256, 3)
    # While it spoke, video went out at the full rate (25 fps: one frame per 1920 samples).
    during = frames[(np.array(rec.video.arrived_at) > speaking) & (np.array(rec.video.arrived_at) < idle)]
    assert len(during) > 10 and np.median(np.diff(during)) == 1920
    timings = next(e.event for e in rec.events if e.type == "turn_timings")["timings_ms"]
    assert "first_audio_sent" in timings and "first_frame_sent" in timings, timings
    assert spoken_call.close_code == 1000 and spoken_call.close_reason == "hangup"


def test_the_events_are_the_data_channels(api_server: str) -> None:
    """The same typed message in a WebRTC call and in a fallback call: the same kinds of event with the
    same fields, the call's states in the same order (how reply_text interleaves with the states is
    timing, not transport)."""
    async def one(kind: type) -> tuple[list[str], dict[str, set[str]]]:
        async with kind(api_server, "en", keep_video=False) as call:
            call.send("text", text="Hello! Who are you?")
            idle = await call.wait_event("idle", timeout_s=150)
            assert idle is not None
            assert await call.wait_event("listening", after=idle.at, timeout_s=10) is not None
            events = list(call.recording.events)
        await _until_no_calls(api_server)
        fields: dict[str, set[str]] = {}
        for e in events:
            fields.setdefault(e.type, set()).update(e.event)
        return [k for k in _kinds(events) if k in STATES], fields
    states_rtc, fields_rtc = asyncio.run(one(RealtimeCall))
    states_ws, fields_ws = asyncio.run(one(SocketCall))
    assert states_ws == states_rtc == ["call_started", "listening", "thinking", "speaking", "turn_timings",
                                       "idle", "listening"], (states_ws, states_rtc)
    assert fields_ws == fields_rtc


def test_hang_up_frees_the_call(api_server: str) -> None:
    async def run() -> tuple[int, SocketCall]:
        await _until_no_calls(api_server)
        call = SocketCall(api_server, "en", keep_video=False)
        await call.start()
        calls = _stages(api_server)["realtime"]["calls"]
        await call.close()
        await _until_no_calls(api_server, timeout_s=3)
        return calls, call
    calls, call = asyncio.run(run())
    assert calls == 1
    assert (call.close_code, call.close_reason) == (1000, "hangup")
    assert call.recording.events[-1].type == "call_ended"


def test_a_vanished_client_frees_everything_mid_reply(api_server: str) -> None:
    async def run() -> tuple[dict, float]:
        await _until_no_calls(api_server)
        before = _stages(api_server)
        call = SocketCall(api_server, "en", keep_video=False)
        await call.start()
        call.send("text", text="Tell me about your work, in three sentences.")
        assert await call.wait_event("speaking", timeout_s=150) is not None
        await call.vanish()  # no hang-up, no close handshake
        freed = await _until_no_calls(api_server, timeout_s=5)
        await asyncio.sleep(1.0)  # cancelled streams wind down in the stages
        return before, freed
    before, freed = asyncio.run(run())
    assert freed < 2.0, f"the call was freed {freed:.1f} s after its client vanished"
    after = _stages(api_server)
    for stage in ("llm", "tts", "avatar", "asr", "conversation"):
        assert after[stage]["in_flight"] == 0, (stage, after[stage])
    grown = after["realtime"]["rss_mb"] - before["realtime"]["rss_mb"]
    assert grown < 40, f"the realtime replica kept {grown:.0f} MB after the call ended"


def test_a_client_whose_microphone_goes_quiet_is_gone(api_server: str) -> None:
    """Its socket still open (a frozen tab, a link that died without a FIN): no microphone frame for
    realtime.peer_timeout_s (5 s) ends the call, as for a WebRTC call."""
    async def run() -> tuple[float, dict]:
        await _until_no_calls(api_server)
        async with SocketCall(api_server, "en", keep_video=False) as call:
            await asyncio.sleep(1.0)
            call._tasks[1].cancel()  # the microphone stops; the socket stays open
            quiet = time.monotonic()
            ended = await call.wait_event("call_ended", timeout_s=15)
            waited = time.monotonic() - quiet
            assert ended is not None, _kinds(call.recording.events)
            return waited, ended.event
    waited, ended = asyncio.run(run())
    assert ended["reason"] == "peer_gone" and 4.5 < waited < 10, (waited, ended)


def test_calls_that_cannot_start_are_refused_clearly(api_server: str) -> None:
    async def refused(**kwargs: object) -> RealtimeApiError:
        with pytest.raises(RealtimeApiError) as caught:
            async with SocketCall(api_server, **kwargs):  # type: ignore[arg-type]
                pass
        return caught.value

    async def run() -> tuple[RealtimeApiError, RealtimeApiError, RealtimeApiError]:
        await _until_no_calls(api_server)
        unknown = await refused(language="en", session_id="0" * 32)
        language = await refused(language="fr")
        async with SocketCall(api_server, "en", keep_video=False):  # the one call the cap allows
            over = await refused(language="en")
        return unknown, language, over
    unknown, language, over = asyncio.run(run())
    assert (unknown.status, unknown.code) == (404, "session_not_found"), unknown
    assert (language.status, language.code) == (400, "unsupported_language"), language
    assert (over.status, over.code) == (503, "too_many_calls"), over


def test_a_bad_frame_is_answered_in_band_and_the_call_goes_on(api_server: str) -> None:
    async def run() -> list:
        await _until_no_calls(api_server)
        async with SocketCall(api_server, "en", keep_video=False) as call:
            await call.socket.send(b"\x07garbage")
            await call.socket.send(wire.mic_frame(np.zeros(320, np.int16), 22050))
            error = await call.wait_event("error", timeout_s=10)
            assert error is not None and error.event["error"]["code"] == "invalid_request", error
            call.send("text", text="Hello!")
            assert await call.wait_event("reply_done", timeout_s=150) is not None
            return [e.event for e in call.recording.events if e.type == "error"]
    errors = asyncio.run(run())
    assert len(errors) == 1  # once per call, not once per frame


def test_the_signaling_relay_checks_the_token_and_keeps_one_call_per_conversation(api_server: str) -> None:
    with signaling(api_server) as base:
        session = httpx.post(f"{base}/avatar/api/session", json={"language": "en"}, timeout=60)
        assert session.status_code == 201, session.text
        token = session.json()["token"]

        async def run() -> tuple[RealtimeApiError, SocketCall, SocketCall]:
            await _until_no_calls(api_server)
            with pytest.raises(RealtimeApiError) as forged:
                async with SocketCall(base, "en", token=token[:-4] + "AAAA"):
                    pass
            first = SocketCall(base, "en", token=token, keep_video=False)
            await first.start()
            first.send("text", text="Hello!")
            assert await first.wait_event("reply_done", timeout_s=150) is not None
            second = SocketCall(base, "en", token=token, keep_video=False)  # replaces the first
            await second.start()
            assert await first.wait_event("call_ended", timeout_s=10) is not None
            await second.close()
            await first.close()
            await _until_no_calls(api_server, timeout_s=5)
            return forged.value, first, second
        forged, first, second = asyncio.run(run())
    assert forged.status == 401, forged
    rec = first.recording
    assert rec.audio.chunks and rec.video.frames, "media came through the relay"
    assert first.recording.events[-1].event.get("reason") == "hangup"
    assert (second.close_code, second.close_reason) == (1000, "hangup")
