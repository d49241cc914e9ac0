"""Realtime building blocks offline: VAD + listener on recorded speech, the call's media clock, the idle
loop and speech laid on it."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import soxr

from engines.motion.generator import MotionGenerator
from engines.motion.idle import IdleLoop
from engines.vad.silero import SileroVAD
from realtime_avatar.config import RealtimeSettings
from realtime_avatar.rtc.listener import SAMPLE_RATE, Listener
from realtime_avatar.rtc.media import AUDIO_PACKET, AvatarOutput, Utterance
from realtime_avatar.rtc.peer import InvalidOfferError, check_offer
from tests.conftest import DATA

SPEECH = DATA / "LJ001-0001.wav"


@pytest.fixture(scope="module")
def speech16k() -> np.ndarray:
    pcm, rate = sf.read(SPEECH, dtype="float32")
    return soxr.resample(pcm, rate, SAMPLE_RATE).astype(np.float32)


def _listen(listener: Listener, audio: np.ndarray, step: int = 320) -> list[tuple[str, float, float]]:
    events = []
    for start in range(0, len(audio), step):
        for item in listener.push(audio[start:start + step]):
            events.append((item.kind, item.at_s, len(item.audio) / SAMPLE_RATE))
    return events


def test_vad_tells_speech_from_silence_and_noise(speech16k: np.ndarray) -> None:
    vad = SileroVAD()
    assert max(vad.probabilities(np.zeros(SAMPLE_RATE, np.float32))) < 0.2
    noise = np.random.default_rng(0).normal(0, 0.05, SAMPLE_RATE).astype(np.float32)
    assert max(vad.probabilities(noise)) < 0.5
    vad.reset()
    probabilities = vad.probabilities(speech16k[:3 * SAMPLE_RATE])
    assert np.mean(np.array(probabilities) > 0.5) > 0.6


def test_listener_ends_a_turn_after_the_hangover_and_carries_the_utterance(speech16k: np.ndarray) -> None:
    settings = RealtimeSettings()
    speech = speech16k[:int(2.5 * SAMPLE_RATE)]
    audio = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), speech, np.zeros(SAMPLE_RATE, np.float32)])
    events = _listen(Listener(SileroVAD(), settings), audio)
    kinds = [kind for kind, *_ in events]
    assert kinds[0] == "speech_started" and kinds[-1] == "turn_ended", kinds
    assert kinds.count("turn_ended") == 1
    start = events[0][1]
    assert 1.0 <= start <= 1.0 + 0.5, start  # detected within half a second of the onset
    _, speech_end, seconds = events[-1]
    assert 3.0 <= speech_end <= 3.6, speech_end  # it ends at 3.5 s (a trailing breath may end earlier)
    # The utterance runs from before the detected onset (pre-roll) to the end of the speech.
    assert seconds == pytest.approx(speech_end - start + settings.pre_roll_s, abs=0.15)
    assert "paused" in kinds  # the final transcription could start early


def test_a_short_pause_does_not_end_the_turn(speech16k: np.ndarray) -> None:
    piece = speech16k[:int(1.5 * SAMPLE_RATE)]
    gap = np.zeros(int(0.3 * SAMPLE_RATE), np.float32)  # shorter than the 0.5 s hang-over
    audio = np.concatenate([np.zeros(8000, np.float32), piece, gap, piece, np.zeros(SAMPLE_RATE, np.float32)])
    kinds = [k for k, *_ in _listen(Listener(SileroVAD(), RealtimeSettings()), audio)]
    assert kinds.count("speech_started") == 1 and kinds.count("turn_ended") == 1, kinds


def test_barge_in_needs_longer_speech_than_a_turn(speech16k: np.ndarray) -> None:
    settings = RealtimeSettings(min_speech_s=0.1, barge_in_s=0.6)
    audio = np.concatenate([np.zeros(8000, np.float32), speech16k[:3 * SAMPLE_RATE]])
    calm = Listener(SileroVAD(), settings)
    busy = Listener(SileroVAD(), settings)
    busy.avatar_speaking = True
    calm_start = next(at for kind, at, _ in _listen(calm, audio) if kind == "speech_started")
    busy_start = next(at for kind, at, _ in _listen(busy, audio) if kind == "speech_started")
    assert busy_start - calm_start >= 0.45, (calm_start, busy_start)


def test_idle_loop_is_seamless_at_its_wrap() -> None:
    loop = IdleLoop(seed=3, fps=25, loop_s=8)
    values = loop.track(0, loop.frames + 2).as_array()
    step = np.abs(np.diff(values, axis=0))[:, 3:6].max(axis=0)  # head angles frame to frame
    assert np.abs(values[loop.frames] - values[0]).max() < 1e-6
    wrap = np.abs(values[loop.frames] - values[loop.frames - 1])[3:6]
    assert np.all(wrap <= step + 1e-6)
    assert values[:, 2].max() > 0.9  # at least one full blink in the loop


def test_speech_on_the_loop_starts_and_ends_on_it() -> None:
    loop = IdleLoop(seed=1, fps=25, loop_s=8)
    start = 137
    motion = MotionGenerator(seed=1, base=loop, start_frame=start)
    rng = np.random.default_rng(0)
    silence, voice = np.zeros(2400, np.float32), (0.2 * rng.standard_normal(24000)).astype(np.float32)
    track = motion.from_audio(np.concatenate([silence, voice]), 24000)
    tail = motion.settle(8)
    on_loop = loop.track(start, 1).as_array()[0]
    first = track.as_array()[0]
    assert np.abs(first[2:] - on_loop[2:]).max() < 0.01  # blink, head, breath: the loop's own frame
    assert track.as_array()[:, 0].max() > 0.2  # the voice opened the mouth
    end = loop.track(start + len(track) + len(tail) - 1, 1).as_array()[0]
    assert np.abs(tail.as_array()[-1] - end).max() < 1e-4  # and it settled back onto the loop exactly


def _output(frames: int = 50) -> AvatarOutput:
    idle = np.zeros((frames, 4, 4, 3), np.uint8)
    idle[:, 0, 0, 0] = np.arange(frames)  # frame k of the loop is tagged k
    return AvatarOutput(idle, fps=25)


def _speech(seconds: float, tag: int, rate: int = 24000) -> tuple[np.ndarray, np.ndarray]:
    n = round(seconds * 25)
    frames = np.full((n, 4, 4, 3), 0, np.uint8)
    frames[:, 0, 0, 1] = tag
    frames[:, 0, 0, 2] = np.arange(n)
    pcm = np.full(round(seconds * rate), 0.5, np.float32)
    return pcm, frames


def test_output_keeps_every_frame_on_its_audio() -> None:
    out = _output()
    for _ in range(3):
        out.audio_packet(), out.video_frame()
    u = Utterance(turn=1, text="hi", phase=out.phase_now(2))
    out.enqueue(u)
    pcm, frames = _speech(1.0, tag=7)
    u.add(pcm[:12000], 24000, frames[:12])
    audio, video = [], []
    for i in range(80):  # 1.6 s of audio packets; a video frame every second packet
        audio.append(out.audio_packet())
        if i == 20:
            u.add(pcm[12000:], 24000, frames[12:])
            u.end()
        if i % 2 == 1:
            video.append(out.video_frame())
    assert u.start is not None and u.start % 1920 == 0  # starts on a frame boundary
    loud = np.flatnonzero(np.concatenate(audio) > 1000)
    spoken = [i for i, f in enumerate(video) if f[0, 0, 1] == 7]
    first_video_sample = (3 + spoken[0]) * 1920
    assert first_video_sample == u.start
    assert abs(loud[0] + 3 * AUDIO_PACKET - u.start) <= 64  # the resampler's delay only
    shown = [int(video[i][0, 0, 2]) for i in spoken]
    assert shown == list(range(len(shown)))  # no frame skipped or repeated while data kept up
    assert len(spoken) >= 24  # ~1 s of speech shown in the 1.6 s played (the rest is before/after)


def test_an_underrun_delays_voice_and_face_together() -> None:
    out = _output()
    u = Utterance(turn=1, text="hi", phase=0)
    out.enqueue(u)
    pcm, frames = _speech(1.0, tag=5)
    u.add(pcm[:4800], 24000, frames[:5])  # 0.2 s, then the renderer falls behind
    for _ in range(30):
        out.audio_packet()
    assert out.stalls > 0
    u.add(pcm[4800:], 24000, frames[5:])
    u.end()
    assert u.start is not None
    # However long it stalled, frame j still belongs to audio sample j * 1920 of the utterance.
    out.video_index = (u.start + 10 * 1920) // 1920
    assert int(out.video_frame()[0, 0, 2]) == 10


def test_barge_in_drops_the_queue_and_resumes_the_loop_at_the_speech_pose() -> None:
    out = _output()
    u = Utterance(turn=1, text="hi", phase=20)
    out.enqueue(u)
    pcm, frames = _speech(2.0, tag=9)
    u.add(pcm, 24000, frames)
    u.end()
    for i in range(40):
        out.audio_packet()
        if i % 2:
            out.video_frame()
    shown = out.video_frame()
    assert shown[0, 0, 1] == 9
    out.clear()
    assert not out.speaking
    assert not out.audio_packet().any()  # silence at once
    after = out.video_frame()
    assert after[0, 0, 1] == 0  # the idle loop again...
    # ... at the loop frame the speech had reached (phase 20 + frames shown), not where it left off.
    assert int(after[0, 0, 0]) == (20 + int(shown[0, 0, 2]) + 1) % 50


@pytest.mark.parametrize("sdp, kind, code", [
    ("hello", "offer", "invalid_sdp"),
    ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n", "offer", "invalid_sdp"),
    ("v=0\r\na=ice-ufrag:x\r\na=fingerprint:sha-256 AA\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", "offer",
     "no_audio"),
    ("v=0\r\na=ice-ufrag:x\r\na=fingerprint:sha-256 AA\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\n",
     "offer", "no_audio"),
    ("v=0\r\n", "answer", "invalid_sdp"),
])
def test_offers_that_cannot_be_a_call_are_refused(sdp: str, kind: str, code: str) -> None:
    with pytest.raises(InvalidOfferError) as caught:
        check_offer(sdp, kind)
    assert caught.value.code == code and caught.value.status == 400


def test_a_stall_neither_repeats_nor_skips_audio() -> None:
    out = _output()
    u = Utterance(turn=1, text="hi", phase=0)
    out.enqueue(u)
    ramp = np.linspace(-0.9, 0.9, 48000).astype(np.float32)  # at 48 kHz: no resampling of the values
    u.add(ramp[:10000], 48000, np.zeros((5, 4, 4, 3), np.uint8))
    sent = [out.audio_packet() for _ in range(20)]
    u.add(ramp[10000:], 48000, np.zeros((20, 4, 4, 3), np.uint8))
    u.end()
    sent += [out.audio_packet() for _ in range(60)]
    played = np.concatenate(sent)
    played = played[played != 0]
    expected = (np.clip(ramp, -1, 1) * 32767).astype(np.int16)
    expected = expected[expected != 0]
    assert out.stalls > 0
    assert len(played) == pytest.approx(len(expected), abs=400)  # the resampler's edges only
    assert np.all(np.diff(played.astype(np.int32)) >= 0)  # a ramp stays a ramp: nothing replayed
