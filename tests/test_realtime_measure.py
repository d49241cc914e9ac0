"""The realtime harness's measurements on synthetic signals whose answer is known by construction.

Each test builds media with a known onset, lag or stop and checks that the measure recovers it; the
negative controls shift one stream and check that the measured value moves by the shift.
"""

import numpy as np
import pytest

from realtime_avatar.rtc import measure as m

SR = 48000


def syllables(seconds: float, seed: int = 0, rate_hz: float = 4.0) -> np.ndarray:
    """Speech-like: noise under an irregular syllabic envelope (no two syllables alike)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    env = np.zeros(n)
    t = 0.05
    while t < seconds - 0.3:
        length = rng.uniform(0.08, 0.25)
        start = int(t * SR)
        seg = np.sin(np.linspace(0, np.pi, int(length * SR))) * rng.uniform(0.3, 1.0)
        env[start : start + len(seg)] = seg[: n - start]
        t += length + rng.uniform(0.02, 1 / rate_hz)
    return (0.2 * env * rng.standard_normal(n)).astype(np.float32)


def stream(pcm: np.ndarray, start_at: float = 0.0, frame: int = 960, jitter_s: float = 0.0,
           seed: int = 1) -> m.AudioStream:
    """A received stream of ``pcm`` in 20 ms frames, the first arriving at ``start_at``; with jitter,
    frames arrive late by up to ``jitter_s`` (never before an earlier one)."""
    starts = np.arange(0, len(pcm), frame)
    times = start_at + starts / SR
    if jitter_s:
        times = np.maximum.accumulate(times + np.random.default_rng(seed).uniform(0, jitter_s, len(times)))
    return m.AudioStream(pcm, SR, starts, times)


def mouth_for(pcm: np.ndarray, frame_times: np.ndarray, audio_start_at: float) -> np.ndarray:
    """What a renderer draws: openness follows the speech level over each frame's 40 ms."""
    out = []
    for t in frame_times:
        a = int((t - audio_start_at) * SR)
        seg = pcm[max(a, 0) : max(a + int(0.04 * SR), 0)]
        level = float(np.sqrt(np.mean(seg.astype(np.float64) ** 2))) if len(seg) else 0.0
        out.append(0.14 + 1.2 * level)
    return np.array(out)


def test_speech_span_finds_the_burst():
    pcm = np.zeros(SR, np.float32)
    pcm[12000:30000] = 0.3 * np.sin(np.arange(18000) * 0.05)
    first, last = m.speech_span(pcm, SR)
    assert abs(first - 12000) <= 5 and abs(last - 29999) <= 60
    assert m.speech_span(np.zeros(SR, np.float32), SR) is None


def test_threshold_rises_with_the_noise_floor_but_not_below_the_absolute_floor():
    assert m.silence_threshold(0.0) == pytest.approx(10 ** (-50 / 20))
    assert m.silence_threshold(0.01) == pytest.approx(0.1)  # -40 dBFS floor + 20 dB


def test_onset_ignores_a_click_and_needs_sustained_sound():
    times = np.arange(200) * 0.01
    rms = np.zeros(200)
    rms[30] = 1.0  # a click
    rms[100:150] = 0.5
    assert m.first_above(times, rms, 0.1, 0.0, hold=5, share=0.6) == pytest.approx(1.0)
    assert m.first_above(times, rms, 0.1, 0.0) == pytest.approx(0.3)  # without hold it is the click
    assert m.last_above(times, rms, 0.1, 1.0, 2.0, 0.01) == pytest.approx(1.5)
    assert m.first_above(times, rms, 0.1, 1.6) is None


def test_sample_times_follow_frame_arrivals():
    s = m.AudioStream(np.zeros(2880, np.float32), SR, np.array([0, 960, 1920]), np.array([1.0, 1.5, 1.5]))
    times = s.sample_time(np.array([0, 480, 960, 2400]))
    assert times == pytest.approx([1.0, 1.01, 1.5, 1.51])


@pytest.mark.parametrize("video_late_s", [0.0, 0.2, -0.2, 0.12])
def test_av_lag_recovers_the_shift_between_audio_and_mouth(video_late_s):
    """Negative control: the mouth drawn for audio that started at 1.0 s, delivered ``video_late_s``
    later (or earlier) than the audio; the lag must move by exactly that shift."""
    pcm = syllables(6.0)
    audio = stream(pcm, start_at=1.0, jitter_s=0.01)
    drawn_at = 1.0 + np.arange(150) * 0.04  # frame i shows the audio from 1.0 + i * 40 ms on
    mouth = mouth_for(pcm, drawn_at, 1.0)
    lag, corr = m.av_lag(m.envelope(audio), drawn_at + video_late_s, mouth)
    assert corr > 0.7
    assert lag == pytest.approx(video_late_s, abs=0.012)


def test_av_lag_is_none_for_a_mouth_that_never_moves():
    audio = stream(syllables(3.0), start_at=0.0)
    assert m.av_lag(m.envelope(audio), np.arange(75) * 0.04, np.full(75, 0.15)) == (None, 0.0)


def test_av_lag_of_unrelated_media_is_not_a_confident_match():
    audio = stream(syllables(6.0, seed=3), start_at=0.0)
    mouth = mouth_for(syllables(6.0, seed=4), np.arange(150) * 0.04, 0.0)
    _, corr = m.av_lag(m.envelope(audio), np.arange(150) * 0.04, mouth)
    assert corr < 0.5


def test_mouth_threshold_sits_above_the_idle_spread():
    rng = np.random.default_rng(0)
    idle = 0.15 + 0.004 * rng.standard_normal(500)
    threshold = m.mouth_threshold(idle)
    assert np.mean(idle > threshold) < 0.005
    assert threshold < 0.2
    assert m.mouth_threshold(np.full(50, 0.15)) == pytest.approx(0.18)  # a still loop: the minimum delta
    with pytest.raises(ValueError):
        m.mouth_threshold(np.zeros(0))


def test_frame_pacing_shows_a_stall():
    steady = np.arange(251) * 0.04
    assert m.frame_pacing(steady)["fps"] == pytest.approx(25.0)
    assert m.frame_pacing(steady)["interval_p95_ms"] == pytest.approx(40.0)
    stalled = np.concatenate([steady[:100], steady[100:] + 0.3])
    pacing = m.frame_pacing(stalled)
    assert pacing["interval_max_ms"] == pytest.approx(340.0)
    assert pacing["fps"] < 24.8
    assert pacing["jitter_ms"] > 0.5


def test_idle_frames_exclude_the_reply():
    env = m.Envelope(np.arange(1000) * 0.01, np.where((np.arange(1000) >= 300) & (np.arange(1000) < 500),
                                                       0.2, 0.0), 0.01)
    frames = np.arange(250) * 0.04
    idle = m.idle_frames(frames, env, 0.01)
    assert idle[frames < 2.6].all() and idle[frames > 5.4].all()
    assert not idle[(frames > 2.8) & (frames < 5.2)].any()


def _call(reply_starts: list[float], reply_ends: list[float], utterances: list[m.SentUtterance],
          events: list[m.TimedEvent], mouth_late_s: float = 0.04, end: float = 20.0) -> m.CallMedia:
    """A call on a 10 ms grid: avatar audio in each [start, end); 25 fps frames whose mouth follows
    the audio in the middle of the frame's span, arriving ``mouth_late_s`` late."""
    times = np.arange(int(end / 0.01)) * 0.01
    rms = np.full(len(times), 1e-4)
    frames = np.arange(int(end / 0.04)) * 0.04
    mouth = np.full(len(frames), 0.15)
    for a, b in zip(reply_starts, reply_ends, strict=True):
        on = (times >= a) & (times < b)
        rms[on] = 0.05 + 0.04 * np.sin(times[on] * 25)
        shown = frames + 0.02 - mouth_late_s  # the audio instant each frame stands for
        speak = (shown >= a) & (shown < b)
        mouth[speak] = 0.25 + 0.08 * np.sin(shown[speak] * 25)
    env = m.Envelope(times, rms, 0.01)
    threshold = m.silence_threshold(m.noise_floor(rms))
    idle = m.idle_frames(frames, env, threshold)
    return m.CallMedia(env, threshold, frames, mouth, m.mouth_threshold(mouth[idle]), utterances, events, end)


def _utterance(start: float, end: float, barge_in: bool = False) -> m.SentUtterance:
    return m.SentUtterance("u", "en", "hello", start - 0.1, start, end, end + 0.05, barge_in)


def _ev(at: float, kind: str, **fields) -> m.TimedEvent:
    return m.TimedEvent(at, {"type": kind, **fields})


def test_measure_turns_latency_and_server_breakdown():
    events = [_ev(1.3, "user_speaking"),
              _ev(2.2, "transcript", text="hello", language="en", final=True, turn=1),
              _ev(2.5, "speaking", turn=1, text="Hi."), _ev(4.0, "reply_done", turn=1, text="Hi there."),
              _ev(4.1, "turn_timings", turn=1, timings_ms={"vad_end": 600, "asr_final": 900})]
    media = _call([3.0], [6.0], [_utterance(1.0, 2.0)], events, mouth_late_s=0.04)
    (row,) = m.measure_turns(media)
    assert row["turn"] == 1
    assert row["first_audio_ms"] == pytest.approx(1000, abs=11)
    assert row["first_frame_ms"] == pytest.approx(1020, abs=41)
    assert row["transcript_event_ms"] == pytest.approx(200, abs=1)
    assert row["server_timings_ms"] == {"vad_end": 600, "asr_final": 900}
    assert row["reply_text"] == "Hi there."
    assert row["av_lag_ms"] == pytest.approx(40, abs=25)
    assert row["reply_audio_s"] == pytest.approx(3.0, abs=0.02)


def test_measure_turns_barge_in_stop_and_its_negative_control():
    base = [_ev(2.2, "transcript", final=True, turn=1, text="a", language="en"),
            _ev(9.5, "transcript", final=True, turn=2, text="b", language="en")]
    utterances = [_utterance(1.0, 2.0), _utterance(5.0, 7.5, barge_in=True)]
    # Honoured: the reply (3.0 on) stops 250 ms after the interrupting speech began; the new reply at 11.
    honoured = _call([3.0, 11.0], [5.25, 13.0], utterances,
                     [*base, _ev(5.3, "user_speaking"), _ev(5.32, "interrupted", turn=1)])
    rows = m.measure_turns(honoured)
    barge = rows[1]["barge_in_result"]
    assert barge["avatar_was_speaking"]
    assert barge["stop_ms"] == pytest.approx(250, abs=11)
    assert barge["stop_after_interrupted_ms"] == pytest.approx(-70, abs=11)
    assert barge["interrupted_turn"] == 1
    assert rows[1]["first_audio_ms"] == pytest.approx(3500, abs=11)  # from the barge-in's own end
    # Ignored: the reply plays on to 10.0: the stop time runs to the new transcript, not to a pause.
    ignored = _call([3.0, 11.0], [10.0, 13.0], utterances, base)
    barge = m.measure_turns(ignored)[1]["barge_in_result"]
    assert barge["stop_ms"] == pytest.approx(4500, abs=11)
    assert barge["interrupted_event_ms"] is None


def test_percentiles():
    assert m.percentiles([1.0, None, 3.0]) == {"p50": 2.0, "p95": 2.9, "n": 2}
    assert m.percentiles([None]) == {"p50": None, "p95": None, "n": 0}
