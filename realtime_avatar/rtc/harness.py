"""The realtime harness: scripted voice conversations through ``RealtimeCall``, measured per turn.

Shared by ``benchmarks/realtime.py``, the harness test and the evaluator's realtime mode, so all three
ask and measure the same way: a line is spoken (the bundled TTS in a voice that is not the avatar's),
the caller waits for the reply to finish and then leaves real silence before the next line; a
barge-in line is spoken while the avatar answers the previous one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf

from realtime_avatar.rtc import measure, protocol
from realtime_avatar.rtc.client import RealtimeCall, Recording
from realtime_avatar.rtc.socket_client import SocketCall

# The caller's voice: a female reference, so the lines are not in the avatar's (male default) voice.
USER_VOICE = Path(__file__).resolve().parents[2] / "tests" / "data" / "LJ001-0001.wav"
REPLY_TIMEOUT_S = 60.0


@contextlib.contextmanager
def serve_cpu() -> Iterator[str]:
    """The cpu profile of serve_config.yaml on a free loopback port (AVATAR_* overrides apply)."""
    from graphs.launch import free_port, resolve, running, wait_ready

    config = resolve("cpu")
    config["http_options"]["port"] = free_port()
    config["applications"][0]["args"]["log_level"] = "WARNING"
    with running(config) as base:
        wait_ready(base)
        yield base


@dataclass(frozen=True)
class Line:
    text: str
    language: str
    barge_in: bool = False  # spoken while the avatar answers the line before


@dataclass(frozen=True)
class Utterance:
    line: Line
    pcm: np.ndarray
    sample_rate: int


def upload_voice(base_url: str, voice: Path) -> str:
    with httpx.Client(base_url=base_url, timeout=120) as http:
        created = http.post("/v1/voices", content=voice.read_bytes(), headers={"Content-Type": "audio/wav"})
        created.raise_for_status()
        return str(created.json()["voice_id"])


def speak_lines(base_url: str, lines: Sequence[Line], voice: Path | None = USER_VOICE) -> list[Utterance]:
    """The lines as audio from the runtime's own TTS (``/v1/tts``), in a reference voice's presets
    (LJSpeech: the female ones; the avatar speaks with the male default), so no model loads here."""
    out = []
    voice_id = upload_voice(base_url, voice) if voice is not None else None
    with httpx.Client(base_url=base_url, timeout=120) as http:
        for line in lines:
            response = http.post("/v1/tts", json={"text": line.text, "language": line.language,
                                                  "voice_id": voice_id})
            response.raise_for_status()
            pcm, sample_rate = sf.read(io.BytesIO(response.content), dtype="float32")
            out.append(Utterance(line, pcm, sample_rate))
    return out


async def _reply_over(call: RealtimeCall | SocketCall, after: float, timeout_s: float) -> None:
    """Until the avatar is back to listening after ``after`` (its ``idle``), or the time-out."""
    await call.wait_event(protocol.IDLE, after=after, timeout_s=timeout_s)


async def converse(call: RealtimeCall | SocketCall, utterances: Sequence[Utterance], *, gap_s: float = 1.0,
                   barge_after_s: float = 0.8, reply_timeout_s: float = REPLY_TIMEOUT_S) -> None:
    """Say each utterance; wait for the reply (or, for a barge-in, for the avatar to start speaking
    and ``barge_after_s`` more), leave ``gap_s`` of silence, go on; end after the last reply."""
    previous: measure.SentUtterance | None = None
    for u in utterances:
        if previous is not None:
            if u.line.barge_in:
                spoke = await call.wait_event(protocol.SPEAKING, after=previous.speech_end_at,
                                              timeout_s=reply_timeout_s)
                if spoke is not None:
                    await asyncio.sleep(barge_after_s)
            else:
                await _reply_over(call, previous.speech_end_at, reply_timeout_s)
                await asyncio.sleep(gap_s)
        previous = await call.say(u.pcm, u.sample_rate, label=f"{len(call.recording.utterances) + 1}",
                                  language=u.line.language, text=u.line.text, barge_in=u.line.barge_in)
    if previous is not None:
        await _reply_over(call, previous.speech_end_at, reply_timeout_s)
        await asyncio.sleep(gap_s)


async def call_and_record(base_url: str, language: str, utterances: Sequence[Utterance],
                          session: dict[str, Any] | None = None, transport: str = "webrtc",
                          **options: Any) -> Recording:
    """``transport``: "webrtc" (``RealtimeCall``), "relay" (WebRTC with relayed candidates only on this
    side: the runtime must have a TURN relay, ``realtime.turn``) or "websocket" (the fallback)."""
    kinds: dict[str, Callable[..., Any]] = {
        "webrtc": RealtimeCall, "relay": functools.partial(RealtimeCall, ice_transport_policy="relay"),
        "websocket": SocketCall}
    async with kinds[transport](base_url, language, session=session) as call:
        await call.wait_event(protocol.CALL_STARTED, timeout_s=30)
        await asyncio.sleep(1.0)  # some idle media first: the noise floor and the idle mouth
        await converse(call, utterances, **options)
    return call.recording


def record_call(base_url: str, language: str, utterances: Sequence[Utterance],
                session: dict[str, Any] | None = None, transport: str = "webrtc",
                **options: Any) -> Recording:
    """One call (a new session, ``session`` adding e.g. its voice_id): the utterances, recorded."""
    return asyncio.run(call_and_record(base_url, language, utterances, session, transport, **options))


def analyse(recording: Recording, timeline: str = "arrived") -> measure.CallMedia:
    """The received media reduced to what the measures read: audio envelope + silence threshold, and
    the mouth openness of every frame (dlib landmarks) + the threshold from the idle frames."""
    from engines.avatar.measure import FaceMeter

    env = measure.envelope(recording.audio.stream(timeline))
    threshold = measure.silence_threshold(measure.noise_floor(env.rms))
    frame_times = recording.video.times(timeline)
    mouth = FaceMeter().measure_video(recording.video.frames).mouth_open if recording.video.frames else (
        np.zeros(0))
    idle = measure.idle_frames(frame_times, env, threshold)
    mouth_threshold = measure.mouth_threshold(mouth[idle] if idle.any() else mouth)
    pts_env, pts_frames = pts_timeline(recording)
    return measure.CallMedia(env, threshold, frame_times, mouth, mouth_threshold, list(recording.utterances),
                             list(recording.events), recording.ended_at, pts_env, pts_frames)


def pts_timeline(recording: Recording) -> tuple[measure.Envelope | None, np.ndarray | None]:
    """Audio envelope and frame times on the sender's stamps: pts plus, per track, the smallest
    arrival-minus-pts seen (its least-delayed frame). None where a track lacks pts."""
    audio, video = recording.audio, recording.video
    if not audio.chunks or not video.pts or None in audio.pts or None in video.pts:
        return None, None
    stream = audio.stream()
    audio_pts = np.array(audio.pts, np.float64) / stream.sample_rate
    video_pts = video.pts_seconds()
    audio_at = audio_pts + float(np.min(stream.frame_times - audio_pts))
    video_at = video_pts + float(np.min(video.times() - video_pts))
    anchored = measure.AudioStream(stream.pcm, stream.sample_rate, stream.frame_starts, audio_at)
    return measure.envelope(anchored), video_at


def reply_audio(recording: Recording, window: Sequence[float]) -> tuple[np.ndarray, int]:
    """The received audio between two arrival times (a reply), mono float32."""
    stream = recording.audio.stream()
    k = (stream.frame_times >= window[0] - 0.02) & (stream.frame_times <= window[1] + 0.02)
    frames = np.flatnonzero(k)
    if not len(frames):
        return np.zeros(0, np.float32), stream.sample_rate
    start = stream.frame_starts[frames[0]]
    end = stream.frame_starts[frames[-1]] + len(recording.audio.chunks[frames[-1]])
    return stream.pcm[start:end], stream.sample_rate


def hear_replies(asr: Any, recording: Recording, rows: list[dict[str, Any]]) -> None:
    """Whisper (language identified, not given) on each reply's received audio, into its row."""
    for row in rows:
        if not row.get("reply_window"):
            row["reply_heard"] = None
            continue
        pcm, sample_rate = reply_audio(recording, row["reply_window"])
        transcript = asr.transcribe(pcm, sample_rate)
        probability = float(getattr(transcript, "language_probability", 0.0))
        row["reply_heard"] = {"language": transcript.language, "text": transcript.text,
                              "probability": round(probability, 3)}


def call_summary(media: measure.CallMedia, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Frame intervals while the avatar spoke (both frames inside a reply) and while it listened (both
    outside every reply): speech goes out at render.fps, the idle loop may go out at a lower rate."""
    times = media.frame_times
    speaking = np.zeros(len(times), bool)
    for row in rows:
        if row.get("reply_window"):
            a, b = row["reply_window"]
            speaking |= (times >= a) & (times < b)
    gaps = np.diff(times) * 1000
    both_speaking, both_idle = speaking[1:] & speaking[:-1], ~speaking[1:] & ~speaking[:-1]

    def stats(intervals: np.ndarray) -> dict[str, float | None]:
        if not len(intervals):
            return {"fps": None, "interval_p50_ms": None, "interval_p95_ms": None, "interval_max_ms": None}
        return {"fps": round(1000 / float(np.mean(intervals)), 2),
                "interval_p50_ms": round(float(np.percentile(intervals, 50)), 1),
                "interval_p95_ms": round(float(np.percentile(intervals, 95)), 1),
                "interval_max_ms": round(float(intervals.max()), 1),
                "jitter_ms": round(float(np.std(intervals)), 1)}

    return {"frames": len(times), "speaking": stats(gaps[both_speaking]),
            "listening": stats(gaps[both_idle]), "silence_threshold": round(media.threshold, 5),
            "mouth_threshold": round(media.mouth_threshold, 4)}
