"""Hardening of the HTTP edge, against the real Serve graph on loopback (issue 15): body limits before
parsing, hostile text, one error model (language codes, malformed bodies, request ids)."""

import json
import re
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

JSON_ROUTES = ("/v1/render", "/v1/tts", "/v1/chat", "/v1/chat/sessions")
LIMIT = 65_536  # limits.max_json_bytes, the default


def _error(response: httpx.Response) -> dict:
    assert response.headers["content-type"].startswith("application/json"), response.text[:200]
    return response.json()["error"]


# --- body limits (item 2) -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_json_body_over_limit_refused_from_content_length(api_server, path):
    body = json.dumps({"text": "a" * (LIMIT + 10), "language": "en"}).encode()
    response = httpx.post(f"{api_server}{path}", content=body,
                          headers={"Content-Type": "application/json"}, timeout=60)
    assert response.status_code == 413
    assert _error(response)["code"] == "body_too_large"


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_chunked_json_body_refused_while_it_streams(api_server, path):
    """A chunked body is answered 413 as soon as it passes the limit, before the client finished sending."""
    url = urlsplit(api_server)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        piece = b'{"text": "' + b"a" * 16_000
        chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
        for _ in range(6):  # ~96 KB, and never the closing 0-length chunk
            sock.sendall(chunk)
            piece = b"a" * 16_000
            chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
        answer = b""
        deadline = time.monotonic() + 30
        while b"body_too_large" not in answer and time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    assert answer.split(b"\r\n", 1)[0].split()[1:2] == [b"413"], answer[:300]
    assert b"body_too_large" in answer


def test_json_body_under_limit_still_served(api_server):
    response = httpx.post(f"{api_server}/v1/tts", json={"text": "Hello there.", "language": "en"},
                          timeout=120)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"] == "audio/wav"


# --- hostile text (item 3) ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/tts", "/v1/render"])
def test_lone_surrogate_is_invalid_text_not_500(api_server, path):
    body = '{"text": "hi \\ud800", "language": "en"}'  # valid JSON, not valid Unicode
    response = httpx.post(f"{api_server}{path}", content=body, headers={"Content-Type": "application/json"},
                          timeout=60)
    assert response.status_code == 400, response.text[:300]
    assert _error(response)["code"] == "invalid_text"


def test_bidi_zero_width_and_controls_are_spoken_without_them(api_server):
    text = "\u202eHello\u202c\u200b\u200b there\x00,\u3000friend\u2028"
    response = httpx.post(f"{api_server}/v1/tts", json={"text": text, "language": "en"}, timeout=120)
    assert response.status_code == 200, response.text[:300]


def test_chat_message_with_surrogate_is_invalid_text(api_server):
    session = httpx.post(f"{api_server}/v1/chat/sessions", json={"language": "en"}, timeout=60).json()
    body = json.dumps({"session_id": session["session_id"], "text": "hello"}).replace("hello", "hi \\udfff")
    response = httpx.post(f"{api_server}/v1/chat", content=body, headers={"Content-Type": "application/json"},
                          timeout=60)
    assert response.status_code == 400, response.text[:300]
    assert _error(response)["code"] == "invalid_text"


# --- one error model (item 5, part) -------------------------------------------------------------------


@pytest.fixture(scope="module")
def speech_wav(data_dir) -> bytes:
    return (data_dir / "LJ001-0001.wav").read_bytes()


@pytest.mark.parametrize("language", ["ES", "es-419", "zh-CN", "auto", "EN", None])
def test_asr_accepts_what_tts_accepts(api_server, speech_wav, language):
    params = {} if language is None else {"language": language}
    response = httpx.post(f"{api_server}/v1/asr", params=params, content=speech_wav,
                          headers={"Content-Type": "audio/wav"}, timeout=120)
    assert response.status_code == 200, response.text[:300]


def test_asr_refuses_unknown_language_as_tts_does(api_server, speech_wav):
    response = httpx.post(f"{api_server}/v1/asr", params={"language": "klingon"}, content=speech_wav,
                          headers={"Content-Type": "audio/wav"}, timeout=60)
    assert response.status_code == 400
    assert _error(response)["code"] == "unsupported_language"


@pytest.mark.parametrize("path", ["/v1/tts", "/v1/chat/sessions"])
def test_null_language_is_auto(api_server, path):
    response = httpx.post(f"{api_server}{path}", json={"text": "Hello there.", "language": None}, timeout=120)
    assert response.status_code in (200, 201), response.text[:300]


@pytest.mark.parametrize("body", [b'{"text": "caf\xe9", "language": "en"}', b"[" * 5000 + b"]" * 5000,
                                  b'{"text": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}"])
def test_malformed_json_is_invalid_json(api_server, body):
    response = httpx.post(f"{api_server}/v1/tts", content=body, headers={"Content-Type": "application/json"},
                          timeout=60)
    assert response.status_code == 400, response.text[:300]
    assert _error(response)["code"] == "invalid_json"


def test_malformed_multipart_is_invalid_multipart(api_server):
    body = b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nabc"  # no end
    response = httpx.post(f"{api_server}/v1/voices", content=body,
                          headers={"Content-Type": "multipart/form-data"}, timeout=60)  # and no boundary
    assert response.status_code == 400, response.text[:300]
    assert _error(response)["code"] == "invalid_multipart"


@pytest.mark.parametrize("path", ["/v1/voices", "/v1/avatars", "/v1/asr"])
def test_error_messages_hold_no_object_reprs_or_errno(api_server, path):
    kind = "image/png" if path == "/v1/avatars" else "audio/wav"
    response = httpx.post(f"{api_server}{path}", content=b"not media at all" * 10,
                          headers={"Content-Type": kind}, timeout=60)
    assert response.status_code == 415, response.text[:300]
    message = _error(response)["message"]
    assert " at 0x" not in message and "Errno" not in message and "<_io" not in message, message


@pytest.mark.parametrize("given", ["x" * 65, "a b", "<script>", "ok\u00e9"])
def test_client_request_id_is_bounded(api_server, given):
    response = httpx.get(f"{api_server}/healthz", headers={"X-Request-ID": given.encode("utf-8")}, timeout=30)
    assert response.status_code == 200
    echoed = response.headers.get_list("x-request-id")
    assert echoed and all(len(e) <= 64 and e != given for e in echoed), echoed
    assert all(re.fullmatch(r"[A-Za-z0-9._-]{1,64}", e) for e in echoed), echoed


def test_good_request_id_is_kept(api_server):
    response = httpx.get(f"{api_server}/healthz", headers={"X-Request-ID": "client-42.a_b"}, timeout=30)
    assert response.headers.get_list("x-request-id") == ["client-42.a_b"]
