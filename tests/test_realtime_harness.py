"""The latency harness as a short test: one voice call to the real Serve graph on loopback (cpu profile,
bundled models), measured on what the client received.

The caller (an ``auto`` session) asks in Mandarin, then Spanish, then asks for a long story in English
and talks over its answer. Checked: each language is heard as itself and answered in it (whisper,
language identified, on the received reply audio), the barge-in is honoured (an ``interrupted`` event;
the avatar's audio stops), and the received audio and mouth stay in sync. The bounds are correctness
bounds, not the speed targets (those are measured by ``make bench-realtime``).
"""

from __future__ import annotations

import numpy as np
import pytest

from realtime_avatar.rtc import measure
from realtime_avatar.rtc.harness import Line, analyse, call_summary, hear_replies, record_call, speak_lines

LINES = [
    Line("你好，你住在哪里？", "zh"),
    Line("Hola, ¿qué haces en tu trabajo?", "es"),
    Line("Tell me a long story about your work and your city.", "en"),
    Line("Wait, stop. Where do you live?", "en", barge_in=True),
]
ANSWERED = (0, 1, 3)  # the rows whose reply plays to the end (row 2's is talked over)
STOP_BOUND_S = 1.0  # from the first sound of the interruption to the avatar's last sound
AV_BOUND_MS = 120.0


@pytest.fixture(scope="module")
def conversation(api_server, asr):
    recording = record_call(api_server, "auto", speak_lines(api_server, LINES), reply_timeout_s=120)
    media = analyse(recording)
    rows = measure.measure_turns(media)
    hear_replies(asr, recording, [rows[i] for i in ANSWERED])
    return recording, media, rows


def _explain(rows) -> str:
    keep = ("text", "turn", "heard_text", "heard_language", "first_audio_ms", "reply_heard", "reply_text",
            "av_lag_ms", "av_lag_pts_ms", "av_corr", "barge_in_result")
    return "\n".join(str({k: row.get(k) for k in keep}) for row in rows)


def test_each_language_is_heard_and_answered_in_it(conversation):
    _, _, rows = conversation
    assert len(rows) == len(LINES)
    for i in ANSWERED:
        row, line = rows[i], LINES[i]
        assert row["heard_language"] == line.language, _explain(rows)  # the server's transcript
        assert row["first_audio_ms"] is not None and row["first_frame_ms"] is not None, _explain(rows)
        assert row["reply_audio_s"] > 0.5, _explain(rows)
        assert row["reply_heard"]["language"] == line.language, _explain(rows)  # whisper, on what arrived
    turns = [rows[i]["turn"] for i in range(len(rows))]
    assert None not in turns and turns == sorted(set(turns)), _explain(rows)


def test_each_answered_turn_reports_its_breakdown_in_order(conversation):
    recording, _, rows = conversation
    for i in ANSWERED:
        timings = rows[i]["server_timings_ms"]
        assert timings, _explain(rows)
        steps = [timings.get(k) for k in ("vad_end", "asr_final", "llm_first_token", "first_audio_sent")]
        assert None not in steps and steps == sorted(steps), timings
        assert "first_frame_sent" in timings
        # The client saw what the server says it did, in the same order.
        turn = rows[i]["turn"]
        kinds = [e.type for e in recording.events if e.event.get("turn") == turn
                 and e.type in ("transcript", "thinking", "speaking", "turn_timings")]
        firsts = [k for j, k in enumerate(kinds) if k not in kinds[:j]]
        assert firsts == ["transcript", "thinking", "speaking", "turn_timings"], kinds


def test_the_barge_in_is_honoured(conversation):
    recording, media, rows = conversation
    barge = rows[3]["barge_in_result"]
    assert barge["avatar_was_speaking"], _explain(rows)  # else this checked nothing
    assert barge["interrupted_turn"] == rows[2]["turn"], _explain(rows)
    assert barge["stop_ms"] is not None and barge["stop_ms"] <= STOP_BOUND_S * 1000, _explain(rows)
    # The mouth stops too: no speaking frame long after the interruption began.
    start = recording.utterances[3].speech_start_at
    final = next(e.at for e in recording.events if e.type == "transcript" and e.event.get("final")
                 and e.event.get("turn") == rows[3]["turn"])
    window = (media.frame_times >= start) & (media.frame_times < final)
    open_at = media.frame_times[window & (media.mouth > media.mouth_threshold)]
    assert not len(open_at) or open_at[-1] - start <= STOP_BOUND_S + 0.2, (open_at - start)


def test_audio_and_mouth_stay_in_sync(conversation):
    _, media, rows = conversation
    answered = [rows[i] for i in ANSWERED if rows[i]["av_lag_ms"] is not None and rows[i]["av_corr"] > 0.3]
    assert len(answered) >= 2, _explain(rows)
    lags = [row["av_lag_ms"] for row in answered]
    assert float(np.median(np.abs(lags))) <= AV_BOUND_MS, _explain(rows)
    stamped = [row["av_lag_pts_ms"] for row in answered if row.get("av_lag_pts_ms") is not None]
    assert stamped and float(np.median(np.abs(stamped))) <= AV_BOUND_MS, _explain(rows)
    # Speech goes out at 25 fps: the typical interval between speaking frames is one frame.
    speaking = call_summary(media, rows)["speaking"]
    assert speaking["interval_p50_ms"] == pytest.approx(40, abs=8), speaking
