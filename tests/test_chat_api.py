"""Chat on the real Serve graph (cpu profile: the bundled LLM, TTS and renderer), judged as a client
sees it: the event stream, the clips decoded and listened to, cancellation freeing every stage, and
each bad request answered with its JSON error."""

import contextlib
import itertools
import json
import threading
import time

import httpx
import numpy as np
import pytest

from engines.asr.metrics import error_rate
from engines.media.mp4 import fragment_boxes, probe_mp4, read_audio, read_frames
from realtime_avatar.chat_client import ChatApiError, ChatClient

MAX_SESSIONS = 6
# Greedy decoding (the same reply every run), a small session cap to reach it in a test, and two ingress
# replicas: every test's calls land on either, so sessions are seen to live in one place.
SERVER_ENV = {"AVATAR_CHAT__TEMPERATURE": "0", "AVATAR_CHAT__MAX_SESSIONS": str(MAX_SESSIONS),
              "AVATAR_SERVE__DEPLOYMENTS__INGRESS__NUM_REPLICAS": "2"}
FPS = 25


@pytest.fixture(scope="module")
def chat(api_server):
    with ChatClient(api_server) as client:
        yield client


@pytest.fixture(scope="module")
def http(api_server):
    with httpx.Client(base_url=api_server, timeout=120) as client:
        yield client


@pytest.fixture
def session(chat):
    created = chat.create_session("en")
    yield created["session_id"]
    with contextlib.suppress(ChatApiError):  # unless the test ended it
        chat.end_session(created["session_id"])


def _error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and "Traceback" not in error["message"]
    return error


def _check_clip(tmp_path, data: bytes, expected_s: float, name: str):
    """A clip is a whole fragmented MP4: H.264 + AAC, 256 px at 25 fps, audio and video agreeing."""
    assert fragment_boxes(data)[:2] == ["ftyp", "moov"] and fragment_boxes(data)[-1] == "mfra"
    path = tmp_path / name
    path.write_bytes(data)
    info = probe_mp4(path)
    assert [s.codec for s in info.video] == ["h264"] and [s.codec for s in info.audio] == ["aac"]
    assert info.width == info.height == 256
    assert abs(info.audio[0].duration_s - expected_s) <= 0.1
    assert abs(info.video[0].duration_s - info.audio[0].duration_s) <= 2 / FPS
    return path


def _heard(asr, paths, language: str) -> tuple[str, str]:
    pcm = np.concatenate([read_audio(p)[0] for p in paths])
    sample_rate = read_audio(paths[0])[1]
    result = asr.transcribe(pcm, sample_rate, None)
    return result.text, result.language


def _conversation(chat, asr, tmp_path, language: str, questions: list[str]) -> list:
    session = chat.create_session(language)
    assert session["language"] == language and session["greeting"]
    replies = []
    for turn, question in enumerate(questions, 1):
        reply = chat.send(session["session_id"], question)
        kinds = [e["type"] for e in reply.events]
        assert kinds[0] == "start" and kinds[-1] == "done" and "error" not in kinds, kinds
        assert reply.events[0]["turn"] == turn and reply.events[0]["language"] == language
        clips = reply.clip_events
        assert clips and [c["index"] for c in clips] == list(range(len(clips)))
        # The clips tile the reply's clock in order: each starts where the one before ended.
        for before, after in itertools.pairwise(clips):
            assert after["start_s"] == pytest.approx(before["start_s"] + before["duration_s"], abs=0.002)
        # Text deltas came before the end, and what was spoken is the clips' text.
        assert kinds.index("text") < kinds.index("clip")
        joiner = "" if language == "zh" else " "
        assert reply.text == joiner.join(c["text"] for c in clips)
        paths = [_check_clip(tmp_path, data, c["duration_s"], f"{language}{turn}_{c['index']}.mp4")
                 for data, c in zip(reply.clips, clips, strict=True)]
        heard, heard_language = _heard(asr, paths, language)
        assert heard_language == language, (reply.text, heard)
        assert error_rate(reply.text, heard, language) <= 0.5, (reply.text, heard)
        frames = read_frames(paths[0])
        assert np.abs(frames.astype(np.int16) - frames[0]).max() > 30  # the face moves
        replies.append(reply)
    info = chat.http.get(f"/v1/chat/sessions/{session['session_id']}").json()
    assert info["turns"] == len(questions)
    chat.end_session(session["session_id"])
    return replies


def test_a_two_turn_conversation_in_spanish(chat, asr, tmp_path):
    _conversation(chat, asr, tmp_path, "es", ["Hola, ¿qué haces en tu trabajo?", "¿Dónde vives?"])


def test_a_two_turn_conversation_in_mandarin(chat, asr, tmp_path):
    _conversation(chat, asr, tmp_path, "zh", ["你好，你做什么工作？", "你住在哪里？"])


def test_an_auto_session_answers_in_each_messages_language(chat, session):
    auto = chat.create_session("auto")
    reply = chat.send(auto["session_id"], "¿Qué te gusta hacer los fines de semana?")
    assert reply.events[0]["language"] == "es"
    reply = chat.send(auto["session_id"], "What do you like to do on weekends?")
    assert reply.events[0]["language"] == "en"
    chat.end_session(auto["session_id"])


def _in_flight(http) -> dict:
    stages = http.get("/readyz").json()["stages"]
    return {name: stage.get("in_flight", 0) for name, stage in stages.items()}


def test_a_client_that_leaves_mid_reply_frees_every_stage(chat, http, session):
    freed_after = []
    for _ in range(3):
        with chat.http.stream("POST", "/v1/chat", json={"session_id": session, "text": "Tell me a long story "
                              "about your work, your city and your friends."}) as response:
            lines = response.iter_lines()
            assert json.loads(next(lines))["type"] == "start"
            assert json.loads(next(lines))["type"] == "text"
            busy = _in_flight(http)
            assert busy["llm"] + busy["avatar"] + busy["tts"] >= 1, busy
        left = time.monotonic()  # the connection is closed here
        while any(_in_flight(http).values()):
            assert time.monotonic() - left < 5, _in_flight(http)
            time.sleep(0.02)
        freed_after.append(time.monotonic() - left)
    # The session takes the next message at once, and the reply is whole.
    assert chat.send(session, "Hello!").end["type"] == "done"
    print(f"stages free {', '.join(f'{s * 1000:.0f}' for s in freed_after)} ms after the client left")


def test_a_new_message_cancels_the_reply_in_flight(chat, session):
    first_events: list[dict] = []
    started = threading.Event()

    def first_reply() -> None:
        for item in chat.events(session, "Tell me everything about your work, please."):
            first_events.append(item)
            started.set()

    worker = threading.Thread(target=first_reply)
    worker.start()
    assert started.wait(60)
    second = chat.send(session, "Actually, just say hello.")
    worker.join(30)
    assert not worker.is_alive()
    assert first_events[-1] == {"type": "cancelled", "reason": "new_turn"}
    assert second.end["type"] == "done" and second.clips


def test_the_greeting_is_a_fixed_line_served_from_the_clip_cache(chat, serve_cache, tmp_path):
    clips_dir = serve_cache / "assets" / "clips"
    before = {p.name for p in clips_dir.glob("*/*")} if clips_dir.exists() else set()
    first = chat.create_session("es")
    greeting = chat.greeting(first["session_id"])
    assert greeting.end["type"] == "done" and greeting.text == first["greeting"] and greeting.clips
    stored = {p.name for p in clips_dir.glob("*/*")} - before
    assert len(stored) == len(greeting.clips)  # one cached clip per sentence of the greeting
    second = chat.create_session("es")
    again = chat.greeting(second["session_id"])
    assert again.clips == greeting.clips and {p.name for p in clips_dir.glob("*/*")} - before == stored
    assert fragment_boxes(again.clips[0])[-1] == "mfra"  # a whole clip, straight from the store
    # What a visitor's conversation says is never cached.
    chat.send(second["session_id"], "Gracias.")
    assert {p.name for p in clips_dir.glob("*/*")} - before == stored
    for s in (first, second):
        chat.end_session(s["session_id"])


def test_unknown_ended_and_malformed_sessions(http, chat):
    _error(http.post("/v1/chat", json={"session_id": "0" * 32, "text": "hi"}), 404, "session_not_found")
    _error(http.get("/v1/chat/sessions/nope"), 404, "session_not_found")
    ended = chat.create_session("en")["session_id"]
    assert http.delete(f"/v1/chat/sessions/{ended}").json()["ended"] is True
    _error(http.post("/v1/chat", json={"session_id": ended, "text": "hi"}), 410, "session_expired")
    _error(http.delete(f"/v1/chat/sessions/{ended}"), 410, "session_expired")


def test_bad_messages_get_their_errors_before_any_byte(http, session):
    _error(http.post("/v1/chat", json={"session_id": session, "text": "   "}), 400, "empty_message")
    _error(http.post("/v1/chat", json={"session_id": session, "text": "a" * 501}), 413, "message_too_long")
    _error(http.post("/v1/chat", json={"session_id": session, "text": "hi", "language": "fr"}), 400,
           "unsupported_language")
    _error(http.post("/v1/chat", json={"session_id": session}), 422, "invalid_request")
    _error(http.post("/v1/chat", content=b"{not json", headers={"content-type": "application/json"}), 400,
           "invalid_json")
    _error(http.post("/v1/chat", content=b"hi", headers={"content-type": "text/plain"}), 415,
           "unsupported_media_type")
    _error(http.post("/v1/chat/sessions", json={"language": "de"}), 400, "unsupported_language")
    _error(http.post("/v1/chat/sessions", json={"persona": {"name": "Mallory"}}), 403,
           "persona_override_disabled")


def test_too_many_sessions_is_503_with_retry_after_and_ending_one_frees_a_place(http, chat):
    opened = []
    try:
        while True:
            response = http.post("/v1/chat/sessions", json={})
            if response.status_code != 201:
                break
            opened.append(response.json()["session_id"])
            assert len(opened) <= MAX_SESSIONS
        _error(response, 503, "too_many_sessions")
        assert int(response.headers["retry-after"]) >= 1
        chat.end_session(opened.pop())
        opened.append(chat.create_session("en")["session_id"])
    finally:
        for session_id in opened:
            chat.end_session(session_id)


def test_a_session_is_the_same_whichever_ingress_replica_answers(http, chat, session):
    replicas = {http.get("/healthz").json()["replica"] for _ in range(40)}
    assert len(replicas) == 2  # the proxy spreads requests over both
    for _ in range(10):
        assert http.get(f"/v1/chat/sessions/{session}").json()["session_id"] == session
    first, second = chat.send(session, "Hi!"), chat.send(session, "Bye!")
    assert first.events[0]["turn"] + 1 == second.events[0]["turn"]


def test_openapi_documents_the_chat_stream(http):
    paths = http.get("/openapi.json").json()["paths"]
    for path in ("/v1/chat/sessions", "/v1/chat", "/v1/chat/sessions/{session_id}",
                 "/v1/chat/sessions/{session_id}/greeting"):
        assert path in paths
    chat = paths["/v1/chat"]["post"]
    assert "NDJSON" in chat["description"] and "cancelled" in chat["description"]
    example = chat["responses"]["200"]["content"]["application/x-ndjson"]["example"]
    assert [json.loads(line)["type"] for line in example.splitlines()][-1] == "done"
