"""What a realtime call delivered, measured on the received media (pure functions, numpy only).

Every time here is a wall time on one clock (``time.perf_counter`` in the harness), in seconds:
when the client handed a microphone frame to its sender, when a frame of the avatar's audio or video
arrived. Nothing is read from the server's own claims except the per-turn breakdown it reports.

Definitions (per turn):

- *end of user speech*: when the microphone frame holding the utterance's last non-silent sample was
  handed to the sender (at most one 20 ms frame after a real microphone would have captured it).
- *first audio*: the first received avatar audio above silence after that: a 10 ms window whose RMS
  exceeds the threshold (``silence_threshold``: the call's noise floor + a margin, never below an
  absolute floor) and stays above it for most of the next few windows (a click is not speech).
- *first speaking frame*: the first received frame whose mouth openness exceeds the idle frames'
  distribution (``mouth_threshold``) for two frames in a row.
- *A/V offset*: ``av_lag``: the lag that maximises the correlation between the received audio envelope
  and the mouth-openness curve, both on the arrival timeline; 0 = every frame shows the sound that
  arrives while it is on screen, **positive = the video arrives later than the audio it shows** (lips
  trail the sound). The onset offset (first speaking frame minus first audio) has the same sign, but
  also holds how long the drawn mouth takes to open past its threshold.
- *barge-in stop*: from when the client began sending the interrupting speech (its first non-silent
  sample) to the end of the last received avatar audio above silence before the new turn's transcript.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

WINDOW_S = 0.010  # audio analysis window: fine enough for onsets, coarse enough to be cheap
MIN_LEVEL_DBFS = -50.0  # below this nothing counts as sound, whatever the floor (decoded digital silence)
MARGIN_DB = 20.0  # "above silence": this far over the call's noise floor
ONSET_HOLD_S = 0.05  # an onset must be followed by this much mostly-loud audio
MOUTH_HOLD_FRAMES = 2
IDLE_GUARD_S = 0.3  # frames this close to avatar audio are not idle (the mouth is closing or opening)


@dataclass(frozen=True)
class AudioStream:
    """Mono PCM as received, frame after frame, with the wall time each frame arrived."""

    pcm: np.ndarray  # float32 in [-1, 1], every received frame back to back
    sample_rate: int
    frame_starts: np.ndarray  # index in ``pcm`` of each frame's first sample (increasing)
    frame_times: np.ndarray  # arrival time of each frame (s)

    def sample_time(self, index: np.ndarray) -> np.ndarray:
        """Arrival time of samples: their frame's arrival plus their place in the frame."""
        index = np.asarray(index)
        k = np.clip(np.searchsorted(self.frame_starts, index, side="right") - 1, 0, None)
        return self.frame_times[k] + (index - self.frame_starts[k]) / self.sample_rate


@dataclass(frozen=True)
class Envelope:
    """RMS per analysis window and the arrival time of each window's first sample (non-decreasing)."""

    times: np.ndarray
    rms: np.ndarray
    window_s: float


@dataclass(frozen=True)
class SentUtterance:
    """One scripted utterance as the microphone track sent it."""

    label: str
    language: str
    text: str
    started_at: float  # the first frame carrying any of it
    speech_start_at: float  # the frame with its first non-silent sample
    speech_end_at: float  # the frame with its last non-silent sample ("end of user speech")
    ended_at: float  # the frame with its last sample
    barge_in: bool = False


@dataclass(frozen=True)
class TimedEvent:
    at: float
    event: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.event.get("type", ""))


@dataclass
class CallMedia:
    """Everything a measured call needs: the received media (already reduced) and what was sent."""

    envelope: Envelope
    threshold: float
    frame_times: np.ndarray  # arrival time of every received video frame
    mouth: np.ndarray  # mouth openness of every received video frame
    mouth_threshold: float
    utterances: list[SentUtterance]
    events: list[TimedEvent]
    ended_at: float
    # The same media on the sender's timestamps (each track's pts anchored at its least-delayed frame):
    # A/V sync as stamped, apart from how late each track went out or arrived.
    pts_envelope: Envelope | None = None
    pts_frame_times: np.ndarray | None = None


def rms_windows(pcm: np.ndarray, sample_rate: int, window_s: float = WINDOW_S) -> np.ndarray:
    size = max(1, round(window_s * sample_rate))
    n = len(pcm) // size
    if n == 0:
        return np.zeros(0, np.float32)
    blocks = np.asarray(pcm[: n * size], np.float32).reshape(n, size)
    return np.sqrt(np.mean(blocks.astype(np.float64) ** 2, axis=1)).astype(np.float32)


def envelope(stream: AudioStream, window_s: float = WINDOW_S) -> Envelope:
    rms = rms_windows(stream.pcm, stream.sample_rate, window_s)
    size = max(1, round(window_s * stream.sample_rate))
    times = stream.sample_time(np.arange(len(rms)) * size) if len(rms) else np.zeros(0)
    # Frames that arrive in a burst would map later windows before earlier ones; keep time monotone.
    return Envelope(np.maximum.accumulate(times) if len(times) else times, rms, window_s)


def speech_span(pcm: np.ndarray, sample_rate: int, rel_db: float = -40.0,
                window_s: float = WINDOW_S) -> tuple[int, int] | None:
    """First and last sample of the speech in a clean clip: windows within ``rel_db`` of the loudest
    window, refined to the first/last sample in them that reaches that level. None if all silent."""
    rms = rms_windows(pcm, sample_rate, window_s)
    if rms.size == 0 or float(rms.max()) <= 0.0:
        return None
    level = float(rms.max()) * 10 ** (rel_db / 20)
    loud = np.flatnonzero(rms >= level)
    size = max(1, round(window_s * sample_rate))
    first_block = np.abs(pcm[loud[0] * size : (loud[0] + 1) * size])
    last_block = np.abs(pcm[loud[-1] * size : (loud[-1] + 1) * size])
    first = loud[0] * size + int(np.argmax(first_block >= level))
    last = loud[-1] * size + len(last_block) - 1 - int(np.argmax(last_block[::-1] >= level))
    return first, last


def noise_floor(rms: np.ndarray, percentile: float = 10.0) -> float:
    """The quiet level of a call: most of a call is silence (listening, idle), so a low percentile."""
    return float(np.percentile(rms, percentile)) if len(rms) else 0.0


def silence_threshold(floor: float, margin_db: float = MARGIN_DB, min_dbfs: float = MIN_LEVEL_DBFS) -> float:
    return max(floor * 10 ** (margin_db / 20), 10 ** (min_dbfs / 20))


def first_above(times: np.ndarray, values: np.ndarray, threshold: float, start: float,
                end: float = np.inf, hold: int = 1, share: float = 1.0) -> float | None:
    """Time of the first element in [start, end) above ``threshold`` whose ``hold`` elements from it
    on are at least ``share`` above it too (so one loud window in silence is not an onset)."""
    above = np.asarray(values) > threshold
    candidates = np.flatnonzero(above & (times >= start) & (times < end))
    need = max(1, int(np.ceil(share * hold)))
    for i in candidates:
        if int(above[i : i + hold].sum()) >= need:
            return float(times[i])
    return None


def last_above(times: np.ndarray, values: np.ndarray, threshold: float, start: float, end: float,
               duration_s: float) -> float | None:
    """End time (element time + its duration) of the last element in [start, end) above threshold."""
    hits = np.flatnonzero((np.asarray(values) > threshold) & (times >= start) & (times < end))
    return float(times[hits[-1]] + duration_s) if len(hits) else None


def robust_std(values: np.ndarray) -> float:
    values = np.asarray(values, np.float64)
    return float(1.4826 * np.median(np.abs(values - np.median(values)))) if len(values) else 0.0


def mouth_threshold(idle: np.ndarray, k: float = 5.0, min_delta: float = 0.03) -> float:
    """Openness above the idle mouth: its median plus ``k`` robust deviations (at least ``min_delta``:
    a still idle loop has almost no spread, and a breath must not count as speech)."""
    idle = np.asarray(idle, np.float64)
    if idle.size == 0:
        raise ValueError("no idle frames to calibrate the mouth threshold on")
    return float(np.median(idle) + max(k * robust_std(idle), min_delta))


def idle_frames(frame_times: np.ndarray, env: Envelope, threshold: float,
                guard_s: float = IDLE_GUARD_S) -> np.ndarray:
    """Mask of the frames that arrived with no avatar audio above silence within ``guard_s``."""
    loud_times = env.times[env.rms > threshold]
    if loud_times.size == 0:
        return np.ones(len(frame_times), bool)
    k = np.searchsorted(loud_times, frame_times)
    before = np.abs(frame_times - loud_times[np.clip(k - 1, 0, len(loud_times) - 1)])
    after = np.abs(loud_times[np.clip(k, 0, len(loud_times) - 1)] - frame_times)
    return np.minimum(before, after) > guard_s


def smooth(values: np.ndarray, width: int) -> np.ndarray:
    if width <= 1 or len(values) < width:
        return np.asarray(values, np.float64)
    return np.convolve(np.asarray(values, np.float64), np.ones(width) / width, mode="same")


def av_lag(env: Envelope, frame_times: np.ndarray, mouth: np.ndarray, *, max_lag_s: float = 0.4,
           step_s: float = 0.005, frame_s: float = 0.04) -> tuple[float | None, float]:
    """(lag, correlation) maximising corr(mouth[frame at t], audio envelope at t - lag).

    The envelope at ``t`` is the audio level over ``[t, t + frame_s)``: what plays while a frame that
    arrived at ``t`` is on screen. So 0 means every frame shows the sound heard while it is shown, and
    a positive lag means the video arrives later than the audio it matches. The peak is refined by a
    parabola through its neighbours (sub-step precision). None when either series is flat or there
    are too few frames.
    """
    mouth = np.asarray(mouth, np.float64)
    if len(frame_times) < 10 or np.std(mouth) < 1e-6 or len(env.rms) < 10:
        return None, 0.0
    width = max(1, round(frame_s / env.window_s))
    level = smooth(env.rms, width)  # centred one-frame average...
    centres = env.times + env.window_s / 2 - frame_s / 2  # ...read at the start of that frame's span
    lags = np.arange(-max_lag_s, max_lag_s + step_s / 2, step_s)
    scores = np.full(len(lags), -1.0)
    for i, lag in enumerate(lags):
        sampled = np.interp(frame_times - lag, centres, level)
        if np.std(sampled) > 1e-9:
            scores[i] = float(np.corrcoef(sampled, mouth)[0, 1])
    best = int(np.argmax(scores))
    if scores[best] <= 0:
        return None, float(scores[best])
    lag = float(lags[best])
    if 0 < best < len(lags) - 1:
        a, b, c = scores[best - 1], scores[best], scores[best + 1]
        denominator = a - 2 * b + c
        if denominator < 0:
            lag += float(0.5 * (a - c) / denominator) * step_s
    return lag, float(scores[best])


def frame_pacing(times: np.ndarray, nominal_fps: float = 25.0) -> dict[str, float | int | None]:
    """Delivered frame rate and the spread of the intervals between arrivals."""
    times = np.asarray(times, np.float64)
    if len(times) < 3:
        return {"frames": len(times), "fps": None, "interval_p50_ms": None, "interval_p95_ms": None,
                "interval_max_ms": None, "jitter_ms": None}
    intervals = np.diff(times) * 1000
    return {
        "frames": len(times),
        "fps": round(float((len(times) - 1) / (times[-1] - times[0])), 2),
        "interval_p50_ms": round(float(np.percentile(intervals, 50)), 1),
        "interval_p95_ms": round(float(np.percentile(intervals, 95)), 1),
        "interval_max_ms": round(float(intervals.max()), 1),
        # Mean deviation from the nominal interval (a steady but slow stream also shows here).
        "jitter_ms": round(float(np.mean(np.abs(intervals - 1000 / nominal_fps))), 1),
        "interval_std_ms": round(float(np.std(intervals)), 1),
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def _first(events: Sequence[TimedEvent], kind: str, start: float, end: float = np.inf,
           turn: int | None = None, **match: Any) -> TimedEvent | None:
    for e in events:
        if e.type != kind or not start <= e.at < end:
            continue
        if turn is not None and e.event.get("turn") != turn:
            continue
        if all(e.event.get(k) == v for k, v in match.items()):
            return e
    return None


def _by_turn(events: Sequence[TimedEvent], kind: str, turn: int | None) -> TimedEvent | None:
    if turn is None:
        return None
    return next((e for e in events if e.type == kind and e.event.get("turn") == turn), None)


def measure_turns(media: CallMedia, *, av_window_s: float = 0.5) -> list[dict[str, Any]]:
    """One row per sent utterance: latencies, A/V offset, pacing, barge-in, the server's breakdown."""
    env, thr = media.envelope, media.threshold
    rows: list[dict[str, Any]] = []
    spans = [u.speech_start_at for u in media.utterances[1:]] + [media.ended_at]
    for u, window_end in zip(media.utterances, spans, strict=True):
        events = media.events
        final = _first(events, "transcript", u.speech_start_at, window_end, final=True)
        turn = final.event.get("turn") if final else None
        if turn is None:
            thinking = _first(events, "thinking", u.speech_start_at, window_end)
            turn = thinking.event.get("turn") if thinking else None
        row: dict[str, Any] = {"label": u.label, "language": u.language, "text": u.text, "turn": turn,
                               "barge_in": u.barge_in,
                               "speech_s": round(u.speech_end_at - u.speech_start_at, 3)}
        search_from = u.speech_end_at
        if u.barge_in:
            # The interrupted reply's audio ends before this turn's transcript can exist; after that,
            # what sounds is this turn's own reply.
            cut_end = final.at if final else u.speech_end_at + 1.0
            stop = last_above(env.times, env.rms, thr, u.speech_start_at, cut_end, env.window_s)
            stopped_at = stop if stop is not None else u.speech_start_at
            speaking_before = last_above(env.times, env.rms, thr, u.speech_start_at - 0.3,
                                         u.speech_start_at, env.window_s)
            heard = _first(events, "user_speaking", u.speech_start_at, window_end)
            interrupted = _first(events, "interrupted", u.speech_start_at, window_end)
            row["barge_in_result"] = {
                "avatar_was_speaking": speaking_before is not None,
                "stop_ms": _ms(stopped_at - u.speech_start_at),
                "user_speaking_event_ms": _ms(heard.at - u.speech_start_at) if heard else None,
                "interrupted_event_ms": _ms(interrupted.at - u.speech_start_at) if interrupted else None,
                "stop_after_user_speaking_ms": _ms(stopped_at - heard.at) if heard else None,
                "stop_after_interrupted_ms": _ms(stopped_at - interrupted.at) if interrupted else None,
                "interrupted_turn": interrupted.event.get("turn") if interrupted else None,
                "window_end_ms": _ms(cut_end - u.speech_start_at),
            }
            search_from = max(search_from, stopped_at)
        onset = first_above(env.times, env.rms, thr, search_from, window_end,
                            hold=round(ONSET_HOLD_S / env.window_s), share=0.6)
        reply_end = last_above(env.times, env.rms, thr, onset, window_end, env.window_s) if onset else None
        frame_at = first_above(media.frame_times, media.mouth, media.mouth_threshold, search_from,
                               window_end, hold=MOUTH_HOLD_FRAMES)
        row["first_audio_ms"] = _ms(onset - u.speech_end_at) if onset else None
        row["first_frame_ms"] = _ms(frame_at - u.speech_end_at) if frame_at else None
        row["reply_audio_s"] = round(reply_end - onset, 3) if onset and reply_end else None
        row["av_onset_offset_ms"] = _ms(frame_at - onset) if onset and frame_at else None
        lag, corr = None, 0.0
        if onset and reply_end:
            pick = (media.frame_times >= onset - av_window_s) & (media.frame_times < reply_end + av_window_s)
            a = (env.times >= onset - av_window_s - 0.5) & (env.times < reply_end + av_window_s + 0.5)
            lag, corr = av_lag(Envelope(env.times[a], env.rms[a], env.window_s), media.frame_times[pick],
                               media.mouth[pick])
            if media.pts_envelope is not None and media.pts_frame_times is not None:
                pts_lag, _ = av_lag(media.pts_envelope, media.pts_frame_times[pick], media.mouth[pick])
                row["av_lag_pts_ms"] = _ms(pts_lag)
            row["pacing"] = frame_pacing(media.frame_times[(media.frame_times >= onset)
                                                           & (media.frame_times < reply_end)])
        row["av_lag_ms"] = _ms(lag)
        row["av_corr"] = round(corr, 3)
        for kind in ("transcript", "thinking", "speaking"):
            hit = (_by_turn(events, kind, turn) if kind != "transcript" else final)
            row[f"{kind}_event_ms"] = _ms(hit.at - u.speech_end_at) if hit else None
        done = _by_turn(events, "reply_done", turn)
        row["reply_text"] = done.event.get("text") if done else None
        row["heard_text"] = final.event.get("text") if final else None
        row["heard_language"] = final.event.get("language") if final else None
        timings = _by_turn(events, "turn_timings", turn)
        row["server_timings_ms"] = timings.event.get("timings_ms") if timings else None
        row["reply_window"] = [onset, reply_end] if onset and reply_end else None
        rows.append(row)
    return rows


def percentiles(values: Sequence[float | None], qs: Sequence[int] = (50, 95)) -> dict[str, float | None]:
    found = [float(v) for v in values if v is not None]
    return {f"p{q}": (round(float(np.percentile(found, q)), 1) if found else None) for q in qs} | {
        "n": len(found)}
