"""The long-call measures on a synthetic recording whose answers are known: the delivery A/V offset, fps
while speaking and listening, stalls, first word and RSS drift (realtime_avatar/rtc/longcall.py)."""

from __future__ import annotations

import numpy as np
import pytest

from realtime_avatar.rtc import longcall
from realtime_avatar.rtc.client import Recording
from realtime_avatar.rtc.measure import SentUtterance, TimedEvent


def _recording(video_late_s: float, gap_at_s: float | None = None) -> Recording:
    rec = Recording()
    t0 = 100.0
    for k in range(30 * 50):  # 30 s of 20 ms audio packets, on time; loud from 10 s to 14 s
        at = t0 + k * 0.02
        if gap_at_s is not None and gap_at_s <= k * 0.02 < gap_at_s + 0.3:
            at = t0 + gap_at_s + 0.3  # held back, then all at once
        loud = 10.0 <= k * 0.02 < 14.0
        rec.audio.chunks.append(np.full(960, 0.3 if loud else 0.0, np.float32))
        rec.audio.pts.append(k * 960)
        rec.audio.received_at.append(at)
        rec.audio.arrived_at.append(at)
    index = 0
    while index * 0.04 < 30.0:  # 25 fps while speaking (10-14 s), every 2nd frame otherwise
        t = index * 0.04
        rec.video.pts.append(index * 3600)
        rec.video.received_at.append(t0 + t + video_late_s)
        rec.video.arrived_at.append(t0 + t + video_late_s)
        rec.video.frames.append(np.zeros(0))
        index += 1 if 10.0 <= t < 14.0 else 2
    rec.events = [TimedEvent(t0 + 10.0, {"type": "speaking", "turn": 1}),
                  TimedEvent(t0 + 14.0, {"type": "idle"})]
    rec.utterances = [SentUtterance("1", "en", "hi", t0 + 7.0, t0 + 7.2, t0 + 8.5, t0 + 8.6)]
    rec.ended_at = t0 + 30.0
    return rec


def test_the_offset_fps_and_first_word_are_read_off_the_received_media():
    rec = _recording(video_late_s=0.03)
    rows = longcall.timeline(rec, window_s=10.0)
    assert len(rows) == 3
    assert all(r["av_offset_ms"] == pytest.approx(30.0, abs=1.0) for r in rows), rows
    assert all(r["stalls"] == 0 for r in rows)
    summary = longcall.summary(rec, rows)
    assert summary["fps_speaking"] == pytest.approx(25.0, abs=0.5)
    assert summary["fps_listening"] == pytest.approx(12.5, abs=0.5)
    assert summary["av_offset_abs_ms"]["max"] == pytest.approx(30.0, abs=1.0)
    assert summary["stalls_over_200ms"] == 0
    assert longcall.first_words(rec) == [pytest.approx(1.5, abs=0.03)]  # 8.5 s -> 10.0 s


def test_a_held_back_track_shows_as_a_stall_and_as_offset():
    rec = _recording(video_late_s=0.0, gap_at_s=22.0)
    rows = longcall.timeline(rec, window_s=10.0)
    summary = longcall.summary(rec, rows)
    assert summary["stalls_over_200ms"] >= 1 and summary["audio_gap_max_ms"] >= 290
    assert rows[2]["stalls"] >= 1 and rows[0]["stalls"] == 0


def test_rss_drift_is_growth_and_spread_from_the_first_sample():
    drift = longcall.rss_drift([(0, 400.0), (60, 404.0), (120, 410.0), (180, 402.0)])
    assert drift["growth_pct"] == 0.5 and drift["spread_pct"] == 2.5 and drift["samples"] == 4
    assert longcall.rss_drift([]) == {"samples": 0}
