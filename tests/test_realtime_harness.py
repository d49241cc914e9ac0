"""The latency harness as a short test: voice calls to the real Serve graph on loopback (cpu profile,
bundled models), measured on what the client received.

Three ``auto`` calls (the runtime's ASR names the language): a question in Mandarin, one in Spanish,
and a request for a long story in English that the caller talks over. Checked: each language is heard
as itself and answered in it (whisper, language identified, on the received reply audio), the barge-in
is honoured (an ``interrupted`` event; the avatar's audio and mouth stop), and the received audio and
mouth stay in sync. The bounds are correctness bounds, not the speed targets (``make bench-realtime``
measures those). One call per question keeps each reply free of the others' history, and the LLM is
greedy (as in test_chat_api.py), so the tiny bundled model answers the same question the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from realtime_avatar.rtc import measure
from realtime_avatar.rtc.harness import Line, analyse, call_summary, hear_replies, record_call, speak_lines

# Greedy replies of at most two sentences: the same answers every run, and a shorter test (replies play
# in real time).
SERVER_ENV = {"AVATAR_CHAT__TEMPERATURE": "0", "AVATAR_CHAT__REPLY_MAX_SENTENCES": "2"}
REPORT = Path("out/test_realtime_harness.json")  # what was measured, for a reader of a failure
# The bundled LLM (SmolLM2-135M) often answers Mandarin and Spanish in English (BENCHMARKS.md): these
# questions are ones whose whisper transcript it answers, greedily, in the question's language. A
# failure prints the reply text: an English reply to them means the LLM or its prompt changed.
CALLS = [
    [Line("你周末一般做什么？", "zh")],
    [Line("¿Cuál es tu lenguaje de programación favorito?", "es")],
    [Line("Tell me a long story about your work and your city.", "en"),
     Line("Wait, stop. Where do you live?", "en", barge_in=True)],
]
LINES = [line for call in CALLS for line in call]
ANSWERED = (0, 1, 3)  # the rows whose reply plays to the end (row 2's is talked over)
STOP_BOUND_S = 1.0  # from the first sound of the interruption to the avatar's last sound
AV_BOUND_MS = 120.0


@pytest.fixture(scope="module")
def conversation(api_server, asr):
    """(recording, media, rows) per call, and every row in line order."""
    spoken = speak_lines(api_server, LINES)
    calls, rows, k = [], [], 0
    for lines in CALLS:
        recording = record_call(api_server, "auto", spoken[k : k + len(lines)], reply_timeout_s=120)
        k += len(lines)
        media = analyse(recording)
        call_rows = measure.measure_turns(media)
        hear_replies(asr, recording, call_rows)
        calls.append((recording, media, call_rows))
        rows += call_rows
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps({"rows": rows, "calls": [call_summary(m, r) for _, m, r in calls]},
                                 ensure_ascii=False, indent=1, default=float))
    return calls, rows


def _explain(rows) -> str:
    keep = ("text", "turn", "heard_text", "heard_language", "first_audio_ms", "reply_heard", "reply_text",
            "av_lag_ms", "av_lag_pts_ms", "av_corr", "barge_in_result")
    return "\n".join(str({k: row.get(k) for k in keep}) for row in rows)


def test_each_language_is_heard_and_answered_in_it(conversation):
    calls, rows = conversation
    assert len(rows) == len(LINES)
    for i in ANSWERED:
        row, line = rows[i], LINES[i]
        assert row["heard_language"] == line.language, _explain(rows)  # the server's transcript
        assert row["first_audio_ms"] is not None and row["first_frame_ms"] is not None, _explain(rows)
        assert row["reply_audio_s"] > 0.5, _explain(rows)
        assert row["reply_heard"]["language"] == line.language, _explain(rows)  # whisper, on what arrived
    for _, _, call_rows in calls:
        turns = [row["turn"] for row in call_rows]
        assert None not in turns and turns == sorted(set(turns)), _explain(rows)


def test_each_answered_turn_reports_its_breakdown_in_order(conversation):
    calls, rows = conversation
    events = {id(row): recording.events for recording, _, call_rows in calls for row in call_rows}
    for i in ANSWERED:
        timings = rows[i]["server_timings_ms"]
        assert timings, _explain(rows)
        steps = [timings.get(k) for k in ("vad_end", "asr_final", "llm_first_token", "first_audio_sent")]
        assert None not in steps and steps == sorted(steps), timings
        assert "first_frame_sent" in timings
        # The client saw what the server says it did, in the same order.
        turn = rows[i]["turn"]
        kinds = [e.type for e in events[id(rows[i])] if e.event.get("turn") == turn
                 and e.type in ("transcript", "thinking", "speaking", "turn_timings")]
        firsts = [k for j, k in enumerate(kinds) if k not in kinds[:j]]
        assert firsts == ["transcript", "thinking", "speaking", "turn_timings"], kinds


def test_the_barge_in_is_honoured(conversation):
    calls, rows = conversation
    recording, media, (story, interruption) = calls[2]
    barge = interruption["barge_in_result"]
    assert barge["avatar_was_speaking"], _explain(rows)  # else this checked nothing
    assert barge["interrupted_turn"] == story["turn"], _explain(rows)
    assert barge["stop_ms"] is not None and barge["stop_ms"] <= STOP_BOUND_S * 1000, _explain(rows)
    # The mouth stops too: no speaking frame long after the interruption began.
    start = recording.utterances[1].speech_start_at
    final = next(e.at for e in recording.events if e.type == "transcript" and e.event.get("final")
                 and e.event.get("turn") == interruption["turn"])
    window = (media.frame_times >= start) & (media.frame_times < final)
    open_at = media.frame_times[window & (media.mouth > media.mouth_threshold)]
    assert not len(open_at) or open_at[-1] - start <= STOP_BOUND_S + 0.2, (open_at - start)


def test_audio_and_mouth_stay_in_sync(conversation):
    calls, rows = conversation
    answered = [rows[i] for i in ANSWERED if rows[i]["av_lag_ms"] is not None and rows[i]["av_corr"] > 0.3]
    assert len(answered) >= 2, _explain(rows)
    lags = [row["av_lag_ms"] for row in answered]
    assert float(np.median(np.abs(lags))) <= AV_BOUND_MS, _explain(rows)
    stamped = [row["av_lag_pts_ms"] for row in answered if row.get("av_lag_pts_ms") is not None]
    assert stamped and float(np.median(np.abs(stamped))) <= AV_BOUND_MS, _explain(rows)
    # Speech goes out at 25 fps: the typical interval between speaking frames is one frame.
    for _, media, call_rows in calls:
        speaking = call_summary(media, call_rows)["speaking"]
        assert speaking["interval_p50_ms"] == pytest.approx(40, abs=8), speaking


def test_the_evaluator_asks_a_scenario_by_voice(api_server, asr, tmp_path, data_dir):
    """The evaluator's realtime mode on one scenario: the spec's document, measured on the call."""
    from evaluator.realtime import RealtimeEvaluator
    from evaluator.schema import check_schema
    from realtime_avatar.scenarios import load_scenarios

    scenario = next(s for s in load_scenarios() if s.name == "EN_short")
    document = RealtimeEvaluator(api_server, tmp_path, data_dir / "LJ001-0001.wav", asr=asr).run(scenario)
    check_schema(document)
    assert (tmp_path / f"{document['run_id']}.json").exists()
    metrics, realtime = document["metrics"], document["realtime"]
    assert metrics["answered"] == 1, realtime
    assert metrics["language_detected"] == "EN" and metrics["language_correctness_1_1"] == 1, metrics
    assert metrics["total_generation_ms"] == realtime["first_audio_ms"] > 0
    assert realtime["heard_text"] and realtime["server_timings_ms"]
