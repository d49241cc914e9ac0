"""The evaluator through the HTTP API (``python -m evaluator run --target URL``, issue 14 item 3): the
Server-Timing header both ends use, the client's error paths against a small HTTP double, and one
scenario rendered by the real Serve graph on loopback (with an API key) and measured here."""

import json
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from evaluator.__main__ import main as evaluator_main
from evaluator.schema import METRIC_KEYS, check_schema
from evaluator.target import ApiTarget, TargetError, parse_segments, retry_after_s
from graphs.launch import free_port
from realtime_avatar.server_timing import ServerTimingError, format_server_timing, parse_server_timing

KEY = "evaluator-key-0123456789"
SERVER_ENV = {"AVATAR_SERVE__API_KEY": KEY}  # the module's real server (conftest's api_server) wants it
TIMING = 'tts;dur=812.3;desc="speech synthesis, TTS", avatar;dur=402.5, encode;dur=120, total;dur=1300.5'
SEGMENTS = json.dumps([{"language": "en", "text": "Hi.", "start_s": 0.0, "end_s": 0.8}])
FAKE_MP4 = b"\x00\x00\x00\x18ftypisom" + bytes(16)
READY = {"ready": True, "stages": {"tts": {"engine": "bundled"}, "avatar": {"engine": "lite"},
                                   "asr": {"engine": "whisper"}}}

# --- Server-Timing ---------------------------------------------------------------------------------------


def test_server_timing_round_trips_and_reads_the_spec_syntax():
    header = format_server_timing({"tts": (812.34, 'speech, "quoted"'), "total": (1000, "all")})
    assert parse_server_timing(header) == {"tts": 812.3, "total": 1000.0}
    # From the W3C spec's examples: a metric without dur, spaces, a quoted desc with a comma, a repeat.
    assert parse_server_timing('miss, db;dur=53, app;dur=47.2;desc="a, b", db;dur=1') == {"db": 53.0,
                                                                                          "app": 47.2}
    assert parse_server_timing(' cache ; desc = "x" ;dur = 2 ') == {"cache": 2.0}
    assert parse_server_timing("") == {}


@pytest.mark.parametrize("bad", ['tts;dur=fast', 'tts;dur=nan', 'a b;dur=1', 'tts;desc="open'])
def test_server_timing_refuses_what_is_not_its_syntax(bad):
    with pytest.raises(ServerTimingError):
        parse_server_timing(bad)


def test_retry_after_reads_seconds_and_dates():
    assert retry_after_s("2") == 2.0
    assert 50 < retry_after_s(formatdate(time.time() + 60, usegmt=True)) <= 60
    assert retry_after_s(formatdate(time.time() - 60, usegmt=True)) == 0.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None


def test_segments_header_is_read_or_refused():
    (segment,) = parse_segments(SEGMENTS)
    assert (segment.language, segment.text, segment.end_s) == ("en", "Hi.", 0.8)
    for bad in (None, "[{", '[{"language": "en"}]'):
        with pytest.raises(TargetError):
            parse_segments(bad)


# --- the client against a double -------------------------------------------------------------------------

Answer = tuple[int, dict[str, str], bytes]


@pytest.fixture
def double() -> Iterator[tuple[str, dict[str, Callable[[], Answer]], list[str]]]:
    """A loopback HTTP server answering each "METHOD /path" with its route's (status, headers, body);
    yields (base URL, routes to fill in, requests seen)."""
    routes: dict[str, Callable[[], Answer]] = {"GET /readyz": lambda: (200, {}, json.dumps(READY).encode())}
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            key = f"{self.command} {self.path}"
            seen.append(key)
            status, headers, body = routes.get(key, lambda: (404, {}, b'{"error": {"code": "not_found", '
                                                                  b'"message": "no route"}}'))()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", routes, seen
    finally:
        server.shutdown()
        server.server_close()


def _mp4(timing: str = TIMING) -> Answer:
    return 200, {"Content-Type": "video/mp4", "Server-Timing": timing, "X-Spoken-Segments": SEGMENTS,
                 "X-Audio-Seconds": "0.800"}, FAKE_MP4


def _cli_error(args: list[str], capsys) -> str:
    assert evaluator_main(["run", "--scenarios", "EN_short", "--repeats", "1", *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err  # one line, no traceback
    return err


def test_unreachable_target_is_one_line_and_exit_1(tmp_path, capsys):
    err = _cli_error(["--target", f"http://127.0.0.1:{free_port()}", "--output", str(tmp_path)], capsys)
    assert err.startswith("error: --target http://127.0.0.1:") and "cannot connect" in err, err
    assert not list(tmp_path.iterdir())


def test_missing_key_is_one_line_naming_the_option(double, tmp_path, capsys):
    base, routes, _ = double
    routes["POST /v1/voices"] = lambda: (401, {"WWW-Authenticate": "Bearer"},
                                         b'{"error": {"code": "unauthorized", "message": "API key needed"}}')
    err = _cli_error(["--target", base, "--output", str(tmp_path)], capsys)
    assert "answered 401 unauthorized: API key needed" in err and "--api-key" in err, err


def test_an_unreadable_voice_file_is_one_line(double, tmp_path, capsys):
    base, _, _ = double
    err = _cli_error(["--target", base, "--voice", str(tmp_path / "none.wav"), "--output", str(tmp_path)],
                     capsys)
    assert "cannot read" in err and "none.wav" in err, err


def test_a_body_that_is_not_an_mp4_is_refused(double, tmp_path, capsys):
    base, routes, _ = double
    routes["POST /v1/voices"] = lambda: (201, {}, b'{"voice_id": "v1"}')
    routes["POST /v1/render"] = lambda: (200, {"Content-Type": "text/html"}, b"<html>proxy login</html>")
    err = _cli_error(["--target", base, "--output", str(tmp_path)], capsys)
    assert "text/html (24 bytes), not an MP4" in err, err


def test_a_render_without_the_stage_timings_is_refused(double):
    base, routes, _ = double
    routes["POST /v1/render"] = lambda: _mp4(timing="total;dur=5")
    with pytest.raises(TargetError, match="lacks tts, avatar, encode"):
        ApiTarget(base).render("Hi.", "en")


def test_503_with_retry_after_is_retried_a_bounded_number_of_times(double):
    base, routes, seen = double
    busy = b'{"error": {"code": "overloaded", "message": "busy"}}'
    answers = iter([(503, {"Retry-After": "3600"}, busy)] * 2)
    routes["POST /v1/render"] = lambda: next(answers, None) or _mp4()
    started = time.monotonic()
    done = ApiTarget(base, max_wait_s=0.05).render("Hi.", "en")  # an hour asked: the cap is waited
    assert time.monotonic() - started < 5
    assert done.retries == 2 and seen.count("POST /v1/render") == 3
    assert done.server_ms == {"tts": 812.3, "avatar": 402.5, "encode": 120.0, "total": 1300.5}
    assert done.mp4 == FAKE_MP4 and done.audio_seconds == 0.8 and done.segments[0].text == "Hi."
    assert 0 < done.first_byte_ms <= done.total_ms

    routes["POST /v1/render"] = lambda: (503, {"Retry-After": "0"}, busy)
    with pytest.raises(TargetError, match=r"503 overloaded: busy \(still refused after 2 retries\)"):
        ApiTarget(base, max_retries=2).render("Hi.", "en")
    routes["POST /v1/render"] = lambda: (503, {}, b'{"error": {"code": "stage_unavailable", "message": "x"}}')
    seen.clear()
    with pytest.raises(TargetError, match="503 stage_unavailable"):  # no Retry-After: no retry
        ApiTarget(base).render("Hi.", "en")
    assert seen == ["POST /v1/render"]


# --- against the real Serve graph ------------------------------------------------------------------------


def test_render_answers_carry_the_servers_stage_times(api_server):
    key = {"Authorization": f"Bearer {KEY}"}
    body = {"text": "Hello there. 你好！", "language": "auto"}
    whole = httpx.post(f"{api_server}/v1/render", json=body, headers=key, timeout=300)
    assert whole.status_code == 200, whole.text[:200]
    timing = parse_server_timing(whole.headers["server-timing"])
    assert set(timing) == {"tts", "avatar", "encode", "total"} and all(v > 0 for v in timing.values())
    assert timing["tts"] < timing["total"] and timing["avatar"] < timing["total"]
    segments = parse_segments(whole.headers["x-spoken-segments"])
    assert [s.language for s in segments] == ["en", "zh"] and segments[1].text == "你好！"
    assert segments[-1].end_s == pytest.approx(float(whole.headers["x-audio-seconds"]), abs=1e-3)
    # A stream's headers leave before its totals exist: only the time to its first part.
    with httpx.stream("POST", f"{api_server}/v1/render", json={**body, "stream": True}, headers=key,
                      timeout=300) as streamed:
        assert set(parse_server_timing(streamed.headers["server-timing"])) == {"first-part"}
        streamed.read()


def test_target_run_has_the_servers_timings_and_the_metrics(api_server, tmp_path, capsys):
    out = tmp_path / "api"
    # No key (an empty --api-key sends none; the default would read the server's env var): refused.
    err = _cli_error(["--target", api_server, "--api-key", "", "--output", str(out)], capsys)
    assert "401 unauthorized" in err, err

    args = ["run", "--target", api_server, "--api-key", KEY, "--scenarios", "EN_ZH_ES_switch",
            "--repeats", "1", "--output", str(out)]
    assert evaluator_main(args) == 0
    (path,) = out.glob("*.json")
    document = json.loads(path.read_text())
    check_schema(document)
    m = document["metrics"]
    assert set(METRIC_KEYS) <= set(m) and document["mode"] == "api" and document["target"] == api_server
    # The stage times are the server's (its Server-Timing), the client's wall time is apart and longer.
    assert 0 < m["tts_ms"] < m["client_total_ms"] and 0 < m["avatar_render_ms"] < m["client_total_ms"]
    assert m["encode_ms"] > 0 and m["tts_ms"] < m["total_generation_ms"] <= m["client_total_ms"]
    assert 0 < m["client_first_byte_ms"] <= m["client_total_ms"]
    rtf = m["total_generation_ms"] / 1000 / m["audio_seconds"]
    assert m["real_time_factor"] == pytest.approx(rtf, rel=0.01)
    # Measured here like an in-process run: per-language segments from the server's X-Spoken-Segments.
    assert m["language_detected"] == "EN/ZH/ES" and m["language_correctness_1_1"] == 1, m
    assert m["lip_sync_words_0_1"] is not None and m["lip_sync_words_matched_share"] > 0.5, m
    assert m["f0_median_st_vs_reference"] is not None and m["f0_median_st_vs_golden"] is None
    assert (out / document["media"]).read_bytes()[4:8] == b"ftyp"
    assert "| EN_ZH_ES_switch | 1 |" in (out / "summary.md").read_text()
    assert "client_total_ms" in (out / "summary.md").read_text()


def test_chat_run_has_the_servers_llm_and_stage_timings(api_server, tmp_path):
    out = tmp_path / "chat"
    args = ["run", "--target", api_server, "--api-key", KEY, "--chat", "--scenarios", "EN_short",
            "--repeats", "1", "--output", str(out)]
    assert evaluator_main(args) == 0
    (path,) = out.glob("*.json")
    document = json.loads(path.read_text())
    check_schema(document)
    m = document["metrics"]
    assert document["mode"] == "chat" and m["reply_clips"] >= 1 and m["reply_text"], m
    # The reply's stage times are the server's (the done event's stages_ms), each within its whole.
    assert 0 < m["llm_ms"] < m["total_generation_ms"] <= m["client_total_ms"], m
    assert 0 < m["tts_ms"] < m["total_generation_ms"] and 0 < m["avatar_render_ms"] < m["total_generation_ms"]
    assert 0 < m["first_clip_ms"] <= m["total_generation_ms"]
    # One segment per clip, each heard on the joined MP4; no run-to-run pitch drift for changing words.
    assert len(m["language_detected"].split("/")) == m["reply_clips"] and m["asr_wer"] is not None, m
    assert m["f0_rmse_hz"] is None and not list(out.glob("baselines/*"))
    assert (out / document["media"]).read_bytes()[4:8] == b"ftyp"
