"""What a call keeps is bounded, however long it runs and however the peer behaves (no Ray, no network):
a microphone backlog is cut, a peer that stops sending ends the call, repeated cuts do not pile up audio
or text for the next turn, unused received tracks are drained, and late video is skipped (audio never)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import av
import numpy as np
from aiortc.rtcrtpreceiver import RemoteStreamTrack

from realtime_avatar.rtc.call import MAX_MIC_BACKLOG, MAX_UNANSWERED_CHARS, drain
from realtime_avatar.rtc.listener import SAMPLE_RATE
from realtime_avatar.rtc.media import AUDIO_PACKET, AvatarOutput, MediaClock, Utterance, make_tracks
from tests.test_rtc_call import StandInStages, _call, _say, _speech


def _mic_frame(pts: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.int16), format="s16", layout="mono")
    frame.sample_rate, frame.pts = 48000, pts
    return frame


def test_a_peer_that_stops_sending_ends_the_call_within_its_timeout() -> None:
    async def run() -> tuple[str | None, float, Any]:
        call, _ = _call(StandInStages(), peer_timeout_s=0.3)
        track = RemoteStreamTrack("audio")
        for i in range(5):  # a few frames, then nothing: the tab closed without a word
            track._queue.put_nowait(_mic_frame(i * 960))
        started = time.monotonic()
        await asyncio.wait_for(call.consume(track), 5)
        took = time.monotonic() - started
        reason = call.expired(time.monotonic())
        await call.close(reason or "?")
        return reason, took, call
    reason, took, call = asyncio.run(run())
    assert reason == "peer_gone"
    assert 0.3 <= took < 1.5, took
    assert call.mic_frames == 5 and call.in_flight == 0


def test_a_microphone_backlog_is_cut_to_its_bound_not_kept() -> None:
    async def run() -> tuple[int, int, int]:
        call, _ = _call(StandInStages(), peer_timeout_s=0.2)
        track = RemoteStreamTrack("audio")
        for i in range(400):  # 8 s of audio queued while the loop was busy elsewhere
            track._queue.put_nowait(_mic_frame(i * 960))
        reader = asyncio.ensure_future(call.consume(track))
        await asyncio.sleep(0)
        for _ in range(200):
            await asyncio.sleep(0)
            if track._queue.qsize() <= MAX_MIC_BACKLOG:
                break
        left = track._queue.qsize()
        await asyncio.wait_for(reader, 5)
        await call.close("hangup")
        return left, call.mic_frames, call.mic_dropped
    left, heard, dropped = asyncio.run(run())
    assert left <= MAX_MIC_BACKLOG
    assert dropped >= 400 - MAX_MIC_BACKLOG - 5 and heard + dropped == 400, (heard, dropped)


def test_turns_cut_again_and_again_while_transcribed_keep_at_most_max_utterance_s_for_the_next() -> None:
    class DeafEars(StandInStages):
        async def transcribe(self, wav: bytes, language: str | None) -> dict[str, Any]:
            self.asked = [*getattr(self, "asked", []), (len(wav) - 44) // 2]
            await asyncio.sleep(30)  # never done before the user speaks again
            return {"text": self.transcript, "language": "en"}

    async def run() -> list[int]:
        stages = DeafEars()
        call, _ = _call(stages, early_asr_s=0.5, end_of_turn_s=0.5, max_utterance_s=2.0)
        speech = _speech()[: int(1.5 * SAMPLE_RATE)]
        for _ in range(5):  # each new turn cuts the transcription of the last one
            await _say(call, speech, then_silence_s=0.6)
            await asyncio.sleep(0.02)
        await call.close("hangup")
        return stages.asked
    asked = asyncio.run(run())
    assert len(asked) >= 4, asked
    # Unbounded, the fifth would carry all five turns (>= 7.5 s); bounded: 2 s + gap + its own turn.
    limit = (2.0 + 0.2 + 1.5 + 0.3 + 0.6) * SAMPLE_RATE
    assert max(asked) <= limit, [round(a / SAMPLE_RATE, 2) for a in asked]
    assert asked[1] > asked[0]  # the cut turn does lead the next one


def test_typed_turns_cut_before_a_sound_merge_into_a_bounded_text() -> None:
    async def run() -> list[str]:
        stages = StandInStages()
        call, _ = _call(stages)
        for i in range(12):  # each cuts the one before while it still thinks
            call.on_message(json.dumps({"type": "text", "text": f"message {i:02d} " + "word " * 18}))
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.3)
        await call.close("hangup")
        return stages.heard
    heard = asyncio.run(run())
    assert "message 11" in heard[-1] and "message 10" in heard[-1]  # still merged...
    assert len(heard[-1]) <= MAX_UNANSWERED_CHARS + 120, len(heard[-1])  # ...but not all twelve
    assert "message 00" not in heard[-1]


def test_a_received_track_nobody_uses_is_drained_until_it_ends() -> None:
    async def run() -> int:
        track = RemoteStreamTrack("video")
        for i in range(300):
            track._queue.put_nowait(_mic_frame(i))
        track._queue.put_nowait(None)
        await asyncio.wait_for(drain(track), 5)
        return track._queue.qsize()
    assert asyncio.run(run()) == 0


def test_late_video_is_skipped_and_late_silence_too_but_never_speech() -> None:
    async def run() -> tuple[list[int], list[int], list[int], int, int]:
        output = AvatarOutput(np.zeros((50, 8, 8, 3), np.uint8), 25, idle_stride=1)
        clock = MediaClock()
        audio, video = make_tracks(output, clock)
        clock.origin = time.monotonic() - 1.0  # the process was starved for a second
        video_pts = [(await video.recv()).pts for _ in range(3)]
        silent_pts = [(await audio.recv()).pts for _ in range(3)]
        # Speech playing when the process is starved again: every sample of it still goes out.
        utterance = Utterance(1, "hi", 0)
        utterance.add(np.full(24000, 0.3, np.float32), 24000, np.zeros((25, 8, 8, 3), np.uint8))
        utterance.end()
        output.enqueue(utterance)
        await audio.recv()  # it starts
        clock.origin -= 1.0
        speech_pts = [(await audio.recv()).pts for _ in range(40)]
        audio.stop()
        video.stop()
        return video_pts, silent_pts, speech_pts, output.skipped, output.audio_skipped
    video_pts, silent_pts, speech_pts, skipped, audio_skipped = asyncio.run(run())
    assert video_pts[0] >= 24 * 3600 and skipped >= 20  # it jumped to the frame due now...
    assert np.diff(video_pts).tolist() == [3600, 3600]  # ...and goes on from there
    assert silent_pts[0] >= 45 * AUDIO_PACKET and audio_skipped >= 45 * AUDIO_PACKET  # silence owed: skipped
    assert np.diff(silent_pts).tolist() == [AUDIO_PACKET, AUDIO_PACKET]
    assert np.diff(speech_pts).tolist() == [AUDIO_PACKET] * 39  # speech late: sent in full, none skipped
