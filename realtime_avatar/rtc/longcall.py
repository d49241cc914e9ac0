"""Long and concurrent calls, measured on what the client received (shared by the soak test, the soak
benchmark and the concurrency benchmark).

Definitions:

- *A/V offset* (delivery): per window of the call, the median of (arrival - pts) of the video frames
  minus that of the audio packets. Both tracks' pts start together on the sender's one media clock
  (frame ``j`` is drawn for audio sample ``j * 1920``), so 0 means a frame arrives with the sound it was
  drawn for; positive: the video arrives later. This is what drifts in a long call if anything does
  (a queue growing on one track); the mouth-on-sound check of the harness (``measure.av_lag``) is the
  content's side and is run per reply by the harness test.
- *delivered fps*: video frames that arrived per second, while the avatar spoke (the ``speaking`` event
  to the next ``idle`` / ``interrupted`` / ``listening``) and while it listened (the idle loop goes out
  at ``render.fps / realtime.idle_frame_stride``).
- *stall*: a gap between two consecutive video arrivals, or two audio arrivals, longer than 200 ms.
- *first word*: from the end of the user's speech (its last non-silent sample sent) to the first reply
  audio above the call's silence threshold (``measure.first_above``, as the harness measures it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from realtime_avatar.rtc import measure, protocol
from realtime_avatar.rtc.client import RealtimeCall, Recording
from realtime_avatar.rtc.harness import Utterance

STALL_S = 0.2
SPEECH_ENDS = (protocol.IDLE, protocol.INTERRUPTED, protocol.LISTENING, protocol.CALL_ENDED)


@dataclass
class RssSampler:
    """The realtime replica's resident memory (``/readyz`` stages.realtime.rss_mb) every ``every_s``."""

    base_url: str
    every_s: float = 60.0
    samples: list[tuple[float, float]] = field(default_factory=list)  # (perf_counter time, MB)
    _task: asyncio.Task[None] | None = None

    async def sample(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=30) as http:
            stages = (await http.get(f"{self.base_url}/readyz")).json()["stages"]
        self.samples.append((time.perf_counter(), float(stages["realtime"]["rss_mb"])))
        return stages

    def start(self) -> None:
        async def loop() -> None:
            while True:
                with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                    await self.sample()
                await asyncio.sleep(self.every_s)
        self._task = asyncio.ensure_future(loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _pts_seconds(pts: Sequence[int | None], time_base: float) -> np.ndarray:
    return np.array([np.nan if p is None else p * time_base for p in pts], np.float64)


def _arrivals(arrived: Sequence[float | None], received: Sequence[float]) -> np.ndarray:
    return np.array([r if a is None else a for a, r in zip(arrived, received, strict=True)], np.float64)


def speaking_spans(recording: Recording) -> list[tuple[float, float]]:
    """(start, end) arrival times of each stretch the server said the avatar spoke."""
    spans, start = [], None
    for e in recording.events:
        if e.type == protocol.SPEAKING and start is None:
            start = e.at
        elif e.type in SPEECH_ENDS and start is not None:
            spans.append((start, e.at))
            start = None
    if start is not None:
        spans.append((start, recording.ended_at or time.perf_counter()))
    return spans


def _in_spans(times: np.ndarray, spans: Sequence[tuple[float, float]]) -> np.ndarray:
    inside = np.zeros(len(times), bool)
    for a, b in spans:
        inside |= (times >= a) & (times < b)
    return inside


def _fps(times: np.ndarray, mask: np.ndarray) -> float | None:
    """Frames per second over the intervals whose both ends are in ``mask``."""
    both = mask[1:] & mask[:-1]
    gaps = np.diff(times)[both]
    return round(float(len(gaps) / gaps.sum()), 2) if len(gaps) and gaps.sum() > 0 else None


def timeline(recording: Recording, window_s: float = 60.0) -> list[dict[str, Any]]:
    """Per window of the call (from its first received frame): delivered fps (speaking / listening),
    the A/V offset, the longest gap in each track, and the stalls."""
    video, audio = recording.video, recording.audio
    v_at = _arrivals(video.arrived_at, video.received_at)
    a_at = _arrivals(audio.arrived_at, audio.received_at)
    if len(v_at) < 2 or len(a_at) < 2:
        return []
    v_delay = v_at - _pts_seconds(video.pts, video.time_base)
    a_delay = a_at - _pts_seconds(audio.pts, 1 / audio.sample_rate)
    spans = speaking_spans(recording)
    speaking = _in_spans(v_at, spans)
    origin = min(v_at[0], a_at[0])
    rows = []
    for start in np.arange(origin, max(v_at[-1], a_at[-1]), window_s):
        end = start + window_s
        v, a = (v_at >= start) & (v_at < end), (a_at >= start) & (a_at < end)
        if v.sum() < 2 or a.sum() < 2:
            continue
        vt, at = v_at[v], a_at[a]
        offset = np.nanmedian(v_delay[v]) - np.nanmedian(a_delay[a])
        v_gaps, a_gaps = np.diff(vt), np.diff(at)
        rows.append({
            "t_s": round(float(start - origin), 1),
            "frames": int(v.sum()),
            "fps": round(float((v.sum() - 1) / (vt[-1] - vt[0])), 2) if vt[-1] > vt[0] else None,
            "fps_speaking": _fps(v_at[v], speaking[v]),
            "fps_listening": _fps(v_at[v], ~speaking[v]),
            "av_offset_ms": None if np.isnan(offset) else round(float(offset) * 1000, 1),
            "video_gap_max_ms": round(float(v_gaps.max()) * 1000, 1),
            "audio_gap_max_ms": round(float(a_gaps.max()) * 1000, 1),
            "stalls": int((v_gaps > STALL_S).sum() + (a_gaps > STALL_S).sum()),
        })
    return rows


def summary(recording: Recording, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The whole call: fps while speaking / listening, |A/V offset| p50/p95/max, stalls, longest gaps."""
    video, audio = recording.video, recording.audio
    v_at = _arrivals(video.arrived_at, video.received_at)
    a_at = _arrivals(audio.arrived_at, audio.received_at)
    speaking = _in_spans(v_at, speaking_spans(recording))
    offsets = np.array([r["av_offset_ms"] for r in rows if r["av_offset_ms"] is not None], np.float64)
    v_gaps, a_gaps = np.diff(v_at) if len(v_at) > 1 else np.zeros(0), np.diff(a_at) if len(a_at) > 1 else (
        np.zeros(0))
    return {
        "seconds": round(float(v_at[-1] - v_at[0]), 1) if len(v_at) > 1 else 0.0,
        "frames": len(v_at),
        "fps_speaking": _fps(v_at, speaking),
        "fps_listening": _fps(v_at, ~speaking),
        "av_offset_abs_ms": {
            "p50": round(float(np.percentile(np.abs(offsets), 50)), 1) if len(offsets) else None,
            "p95": round(float(np.percentile(np.abs(offsets), 95)), 1) if len(offsets) else None,
            "max": round(float(np.abs(offsets).max()), 1) if len(offsets) else None},
        "stalls_over_200ms": int((v_gaps > STALL_S).sum() + (a_gaps > STALL_S).sum()),
        "video_gap_max_ms": round(float(v_gaps.max()) * 1000, 1) if len(v_gaps) else None,
        "audio_gap_max_ms": round(float(a_gaps.max()) * 1000, 1) if len(a_gaps) else None,
    }


def first_words(recording: Recording) -> list[float | None]:
    """Per sent utterance: seconds from the end of its speech to the first reply audio above silence
    (before the next utterance starts), None if none came."""
    env = measure.envelope(recording.audio.stream())
    threshold = measure.silence_threshold(measure.noise_floor(env.rms))
    sent = recording.utterances
    ends = [u.speech_start_at for u in sent[1:]] + [recording.ended_at or np.inf]
    out: list[float | None] = []
    for u, end in zip(sent, ends, strict=True):
        onset = measure.first_above(env.times, env.rms, threshold, u.speech_end_at, end,
                                    hold=round(measure.ONSET_HOLD_S / env.window_s), share=0.6)
        out.append(None if onset is None else round(onset - u.speech_end_at, 3))
    return out


def rss_drift(samples: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """RSS at the first sample, at the last, the range, and the growth from the first to the last."""
    if not samples:
        return {"samples": 0}
    values = [mb for _, mb in samples]
    return {"samples": len(values), "first_mb": values[0], "last_mb": values[-1], "min_mb": min(values),
            "max_mb": max(values), "growth_pct": round(100 * (values[-1] - values[0]) / values[0], 2),
            "spread_pct": round(100 * (max(values) - min(values)) / values[0], 2)}


async def talk_for(call: RealtimeCall, utterances: Sequence[Utterance], seconds: float, *,
                   gap_s: float = 4.0, reply_timeout_s: float = 90.0) -> int:
    """Say the utterances in turn (round and round) for ``seconds``: each waits for the reply to end,
    then ``gap_s`` of silence; returns how many turns were said."""
    deadline = time.perf_counter() + seconds
    said = 0
    while time.perf_counter() < deadline:
        u = utterances[said % len(utterances)]
        sent = await call.say(u.pcm, u.sample_rate, label=str(said + 1), language=u.line.language,
                              text=u.line.text)
        said += 1
        await call.wait_event(protocol.IDLE, after=sent.speech_end_at, timeout_s=reply_timeout_s)
        await asyncio.sleep(min(gap_s, max(0.0, deadline - time.perf_counter())))
    return said
