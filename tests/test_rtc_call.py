"""The call's turn-taking with stand-in stages (no Ray, no network): what the page is told, what is
cancelled on a barge-in, and when a call ends by itself. The real stages are in test_realtime_harness."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import soxr

from realtime_avatar.config import RealtimeSettings
from realtime_avatar.rtc.call import Call
from realtime_avatar.rtc.listener import SAMPLE_RATE
from tests.conftest import DATA


class Part:
    def __init__(self, seconds: float) -> None:
        self.sample_rate = 24000
        self.pcm = np.full(round(seconds * 24000), 0.3, np.float32)
        self.frames = np.zeros((round(seconds * 25), 4, 4, 3), np.uint8)


class StandInStages:
    """Answers after a delay and remembers which of its streams were closed before they finished."""

    def __init__(self) -> None:
        self.heard: list[str] = []
        self.cancelled: list[str] = []
        self.transcript = "hello there"

    async def transcribe(self, wav: bytes, language: str | None) -> dict[str, Any]:
        await asyncio.sleep(0.05)
        return {"text": self.transcript, "language": "en"}

    async def talk(self, text: str, language: str):  # type: ignore[no-untyped-def]
        self.heard.append(text)
        finished = False
        try:
            yield {"type": "start"}
            for word in ("Nice", " to", " meet", " you."):
                await asyncio.sleep(0.02)
                yield {"type": "text", "delta": word}
            yield {"type": "sentence", "text": "Nice to meet you.", "language": language}
            yield {"type": "done", "text": "Nice to meet you.", "cut": False}
            finished = True
        finally:
            if not finished:
                self.cancelled.append("talk")

    async def speak(self, text: str, language: str, start_frame: int):  # type: ignore[no-untyped-def]
        finished = False
        try:
            for _ in range(4):
                await asyncio.sleep(0.05)
                yield Part(0.5)
            finished = True
        finally:
            if not finished:
                self.cancelled.append("speak")


def _call(stages: StandInStages, **settings: Any) -> tuple[Call, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []
    from engines.vad.silero import SileroVAD

    idle = np.zeros((50, 4, 4, 3), np.uint8)
    call = Call("c1", "s1", "en", RealtimeSettings(**settings), stages, SileroVAD(), idle, 25,
                lambda text: sent.append(json.loads(text)))
    return call, sent


async def _play(call: Call, seconds: float) -> None:
    """Run the output like the tracks would (in fast motion) for ``seconds`` of call time."""
    for _ in range(round(seconds * 50)):
        call.output.audio_packet()
        if call.output.audio_position % 1920 < 960:
            call.output.video_frame()
        await asyncio.sleep(0.002)


def _speech() -> np.ndarray:
    pcm, rate = sf.read(DATA / "LJ001-0001.wav", dtype="float32")
    return soxr.resample(pcm, rate, SAMPLE_RATE)[:int(2.5 * SAMPLE_RATE)].astype(np.float32)


async def _say(call: Call, audio: np.ndarray, then_silence_s: float = 0.8) -> None:
    audio = np.concatenate([audio, np.zeros(int(then_silence_s * SAMPLE_RATE), np.float32)])
    for start in range(0, len(audio), 320):
        call.feed(audio[start:start + 320], 0.0)
        await asyncio.sleep(0)


def kinds(sent: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in sent]


def test_a_typed_message_is_answered_and_the_call_returns_to_listening() -> None:
    async def run() -> list[dict[str, Any]]:
        stages = StandInStages()
        call, sent = _call(stages)
        call.on_message(json.dumps({"type": "text", "text": "hi"}))
        await _play(call, 5.0)
        await call.close("hangup")
        return sent
    sent = asyncio.run(run())
    order = kinds(sent)
    assert order[:2] == ["thinking", "reply_text"], order
    assert order.index("speaking") < order.index("turn_timings") < order.index("listening")
    timings = next(m for m in sent if m["type"] == "turn_timings")["timings_ms"]
    assert {"llm_first_token", "first_sentence", "first_part", "first_audio_sent"} <= set(timings)
    assert order[-1] == "call_ended"


def test_speech_is_transcribed_answered_and_a_barge_in_cancels_the_reply() -> None:
    async def run() -> tuple[StandInStages, Call, list[dict[str, Any]]]:
        stages = StandInStages()
        call, sent = _call(stages)
        await _say(call, _speech())
        for _ in range(100):  # until the avatar speaks
            await _play(call, 0.1)
            if call.state == "speaking":
                break
        assert call.state == "speaking" and call.output.speaking
        stages.transcript = "wait a moment"
        await _say(call, _speech()[:SAMPLE_RATE], then_silence_s=0.0)  # talks over the avatar
        assert not call.output.speaking  # the media queue is gone at once
        await asyncio.sleep(0.05)
        await _say(call, np.zeros(0, np.float32), then_silence_s=0.8)
        await _play(call, 5.0)
        await call.close("hangup")
        return stages, call, sent
    stages, _, sent = asyncio.run(run())
    order = kinds(sent)
    assert "interrupted" in order
    assert order.index("interrupted") < order.index("user_speaking", order.index("speaking"))
    assert "speak" in stages.cancelled or "talk" in stages.cancelled
    assert stages.heard == ["hello there", "wait a moment"]
    finals = [m["text"] for m in sent if m["type"] == "transcript" and m["final"]]
    assert finals == ["hello there", "wait a moment"]


def test_a_reply_cut_before_it_spoke_is_answered_with_the_next_turn() -> None:
    async def run() -> StandInStages:
        stages = StandInStages()
        call, _ = _call(stages)
        call.on_message(json.dumps({"type": "text", "text": "my name is Ana"}))
        await asyncio.sleep(0.01)  # still thinking: nothing said yet
        call.on_message(json.dumps({"type": "text", "text": "what is yours?"}))
        await _play(call, 2.0)
        await call.close("hangup")
        return stages
    stages = asyncio.run(run())
    assert stages.heard[-1] == "my name is Ana what is yours?"


def test_silence_for_too_long_ends_the_call_and_close_frees_everything() -> None:
    async def run() -> tuple[Call, list[dict[str, Any]]]:
        call, sent = _call(StandInStages(), idle_timeout_s=0.2)
        await _say(call, np.zeros(SAMPLE_RATE, np.float32), then_silence_s=0.0)
        assert call.expired(call.last_activity + 0.1) is None
        reason = call.expired(call.last_activity + 0.3)
        assert reason == "idle"
        await call.close(reason)
        return call, sent
    call, sent = asyncio.run(run())
    assert sent[-1] == {"type": "call_ended", "reason": "idle"}
    assert call.in_flight == 0


@pytest.mark.parametrize("message", ["not json", "[1,2]", '{"type": 3}', "x" * 10000,
                                     '{"type": "text", "text": 5}', b"\xff\xfe"])
def test_junk_on_the_data_channel_is_ignored(message: str | bytes) -> None:
    async def run() -> list[dict[str, Any]]:
        call, sent = _call(StandInStages())
        call.on_message(message)
        await asyncio.sleep(0.05)
        return sent
    assert asyncio.run(run()) == []


def test_a_reply_begun_at_a_pause_is_dropped_unseen_when_the_user_goes_on() -> None:
    async def run() -> tuple[StandInStages, list[dict[str, Any]]]:
        stages = StandInStages()
        call, sent = _call(stages, early_asr_s=0.1, end_of_turn_s=0.6)
        speech = _speech()
        await _say(call, speech[:int(1.6 * SAMPLE_RATE)], then_silence_s=0.35)  # a pause, not an end
        await asyncio.sleep(0.3)  # the speculative reply gets going (ASR, LLM, media) meanwhile
        assert stages.heard, "the reply should have started during the pause"
        assert not [m for m in sent if m["type"] in ("thinking", "reply_text", "transcript")]
        stages.transcript = "hello there and more"
        await _say(call, speech[int(1.6 * SAMPLE_RATE):], then_silence_s=0.8)
        await _play(call, 4.0)
        await call.close("hangup")
        return stages, sent
    stages, sent = asyncio.run(run())
    finals = [m["text"] for m in sent if m["type"] == "transcript" and m["final"]]
    assert finals == ["hello there and more"]  # the dropped one never reached the page
    assert "talk" in stages.cancelled or "speak" in stages.cancelled
    assert [m["type"] for m in sent].count("thinking") == 1


def test_a_turn_cut_while_it_was_transcribed_leads_the_next_one() -> None:
    class SlowEars(StandInStages):
        async def transcribe(self, wav: bytes, language: str | None) -> dict[str, Any]:
            self.asked = [*getattr(self, "asked", []), len(wav)]
            await asyncio.sleep(0.6)  # slower than the user's next words
            return {"text": self.transcript, "language": "en"}

    async def run() -> tuple[SlowEars, list[dict[str, Any]]]:
        stages = SlowEars()
        call, sent = _call(stages, early_asr_s=0.5, end_of_turn_s=0.5)
        speech = _speech()
        await _say(call, speech[:int(1.5 * SAMPLE_RATE)], then_silence_s=0.6)  # a turn ends...
        await _say(call, speech[int(1.5 * SAMPLE_RATE):], then_silence_s=0.8)  # ...and they go on at once
        await asyncio.sleep(1.5)
        await call.close("hangup")
        return stages, sent
    stages, sent = asyncio.run(run())
    assert "interrupted" not in kinds(sent)  # the page never saw a reply to interrupt
    first, last = stages.asked[0], stages.asked[-1]
    assert last > first  # the second transcription heard both parts
