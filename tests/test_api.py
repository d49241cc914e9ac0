"""The HTTP API on the real Serve graph (cpu profile, bundled models), judged on what a client receives.

MP4s are decoded and measured (streams, durations, whisper on the audio, dlib on the frames); errors
must be JSON with the right status and no traceback. The replica-crash test runs last: it kills a
replica and waits for Serve to replace it.
"""

import concurrent.futures
import io
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from engines.media.audio import load_audio
from engines.media.mp4 import fragment_boxes, probe_mp4, read_frames
from evaluator.metrics.lipsync import frame_envelope, lip_sync_coherence, mouth_openness
from graphs.launch import wait_ready

FPS = 25
HELLO = "Hello! I am a realtime avatar, and I am glad to meet you."
THREE_SENTENCES = ("Hello, welcome to my page, and thank you for stopping by today. I build realtime "
                   "avatars that listen to you, think for a moment and answer in your language. Ask me "
                   "anything about my work, my projects or the way this avatar was made.")


@pytest.fixture(scope="module")
def client(api_server):
    with httpx.Client(base_url=api_server, timeout=120) as http:
        yield http


def _error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"] and "Traceback" not in error["message"]
    return error


def _mp4(tmp_path, content: bytes, name: str = "out.mp4"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_health_readiness_and_openapi(client):
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert set(ready.json()["stages"]) == {"asr", "llm", "tts", "avatar", "conversation", "realtime"}
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/healthz", "/readyz", "/v1/voices", "/v1/avatars", "/v1/render", "/v1/tts", "/v1/asr"):
        assert path in paths
    upload = paths["/v1/voices"]["post"]["requestBody"]["content"]
    assert "audio/*" in upload and "multipart/form-data" in upload
    assert client.get("/docs").status_code == 200


def test_render_returns_a_correct_mp4(client, asr, tmp_path):
    response = client.post("/v1/render", json={"text": HELLO, "language": "en"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4" and response.headers["x-request-id"]
    path = _mp4(tmp_path, response.content)
    info = probe_mp4(path)
    assert [s.codec for s in info.video] == ["h264"] and [s.codec for s in info.audio] == ["aac"]
    assert info.width == info.height == 256 and info.fps == FPS
    assert abs(info.video[0].duration_s - info.audio[0].duration_s) <= 1 / FPS
    assert abs(info.audio[0].duration_s - float(response.headers["x-audio-seconds"])) <= 0.1
    pcm, rate = load_audio(path)
    transcript = asr.transcribe(pcm, rate)
    assert transcript.language == "en" and "avatar" in transcript.text.lower()
    frames = read_frames(path)
    envelope = frame_envelope(pcm, rate, FPS, len(frames))
    assert lip_sync_coherence(mouth_openness(frames), envelope) > 0.4


def test_streamed_render_sends_its_first_fragment_before_the_render_ends(client, tmp_path):
    started = time.perf_counter()
    received, first_fragment_s = bytearray(), None
    with client.stream("POST", "/v1/render", json={"text": THREE_SENTENCES, "language": "en",
                                                   "stream": True}) as response:
        assert response.status_code == 200
        for block in response.iter_bytes():
            received += block
            if first_fragment_s is None and "moof" in fragment_boxes(bytes(received)):
                first_fragment_s = time.perf_counter() - started
    total_s = time.perf_counter() - started
    boxes = fragment_boxes(bytes(received))
    assert boxes[:2] == ["ftyp", "moov"] and boxes.count("moof") >= 3
    assert boxes[-1] == "mfra"  # the closing box: how a client knows the stream is whole
    # The first fragment is here well before the last byte: rendering continued after it was sent.
    assert first_fragment_s is not None and first_fragment_s < 0.5 * total_s, (first_fragment_s, total_s)
    info = probe_mp4(_mp4(tmp_path, bytes(received)))
    assert info.video[0].codec == "h264" and info.audio[0].codec == "aac"
    assert abs(info.video[0].duration_s - info.audio[0].duration_s) <= 1 / FPS
    assert info.video[0].duration_s > 5  # three sentences, nothing dropped


def test_voice_upload_tts_and_asr_round_trip(client, asr, data_dir):
    wav = (data_dir / "LJ001-0001.wav").read_bytes()
    created = client.post("/v1/voices", content=wav, headers={"Content-Type": "audio/wav"})
    assert created.status_code == 201, created.text
    voice_id = created.json()["voice_id"]
    assert created.json()["seconds"] > 9
    # The same audio as a multipart form is the same voice (content-addressed).
    again = client.post("/v1/voices", files={"file": ("ref.wav", wav, "audio/wav")})
    assert again.status_code == 201 and again.json()["voice_id"] == voice_id

    speech = client.post("/v1/tts", json={"text": "Good morning, how are you today?", "language": "en",
                                          "voice_id": voice_id})
    assert speech.status_code == 200 and speech.headers["content-type"] == "audio/wav"
    pcm, rate = load_audio(speech.content)
    assert "morning" in asr.transcribe(pcm, rate).text.lower()

    heard = client.post("/v1/asr", content=speech.content, headers={"Content-Type": "audio/wav"})
    assert heard.status_code == 200, heard.text
    assert heard.json()["language"] == "en" and "morning" in heard.json()["text"].lower()


def test_uploaded_avatar_is_the_one_rendered(client, data_dir, tmp_path):
    created = client.post("/v1/avatars", files={"file": ("biden.jpg", (data_dir / "biden.jpg").read_bytes(),
                                                          "image/jpeg")})
    assert created.status_code == 201, created.text
    avatar_id = created.json()["avatar_id"]
    default_id = client.get("/readyz").json()["stages"]["avatar"]["default_avatar_id"]
    assert avatar_id != default_id
    frames = {}
    for name, chosen in (("uploaded", avatar_id), ("default", None)):
        response = client.post("/v1/render", json={"text": "Hi there.", "language": "en",
                                                   "avatar_id": chosen})
        assert response.status_code == 200, response.text
        frames[name] = read_frames(_mp4(tmp_path, response.content, f"{name}.mp4"))[0].astype(float)
    # Different portraits, visibly: the mean pixel difference of the first frames is large.
    assert np.abs(frames["uploaded"] - frames["default"]).mean() > 20


def test_avatar_with_its_owner_motion_video(client, data_dir, tmp_path):
    """POST /v1/avatars with a motion_video: its statistics come back, renders follow them, DELETE takes
    them; unusable videos are refused with JSON errors (issue 14, item 5)."""
    from tests.motion_videos import MotionScript, faceless_video, scripted_video

    image = ("biden.jpg", (data_dir / "biden.jpg").read_bytes(), "image/jpeg")
    video = scripted_video(MotionScript(seconds=11, yaw_deg=6.0, blink_every_s=2.0))
    own_video = ("me.mp4", video, "video/mp4")
    created = client.post("/v1/avatars", files={"file": image, "motion_video": own_video})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["motion"]["blink_interval_median_s"] == pytest.approx(2.0, abs=0.1)
    assert body["motion"]["head_std_deg"]["yaw"] > 1.0
    plain = client.post("/v1/avatars", files={"file": image}).json()
    assert "motion" not in plain and plain["avatar_id"] != body["avatar_id"]
    frames = {}
    for name, avatar_id in (("own", body["avatar_id"]), ("generic", plain["avatar_id"])):
        response = client.post("/v1/render", json={"text": "Hello there, nice to meet you.", "language": "en",
                                                   "avatar_id": avatar_id})
        assert response.status_code == 200, response.text
        frames[name] = read_frames(_mp4(tmp_path, response.content, f"{name}.mp4")).astype(float)
    n = min(len(frames["own"]), len(frames["generic"]))  # the voice's timing varies a little run to run
    assert np.abs(frames["own"][:n] - frames["generic"][:n]).mean() > 1.0  # same face, other motion

    def refused(part: tuple, status: int, code: str) -> None:
        _error(client.post("/v1/avatars", files={"file": image, "motion_video": part}), status, code)

    refused(("none.mp4", faceless_video(11.0), "video/mp4"), 422, "no_face")
    refused(("short.mp4", scripted_video(MotionScript(seconds=4.0)), "video/mp4"), 422, "video_too_short")
    refused(("junk.mp4", b"\x00\x00\x00\x18ftypmp42 junk" * 20, "video/mp4"), 415, "invalid_video")
    refused(("text.txt", video, "text/plain"), 415, "unsupported_media_type")
    refused(("big.mp4", b"\0" * 30_000_001, "video/mp4"), 413, "upload_too_large")

    assert client.delete(f"/v1/avatars/{body['avatar_id']}").json()["deleted"]
    _error(client.post("/v1/render", json={"text": "Hi.", "language": "en", "avatar_id": body["avatar_id"]}),
           404, "avatar_not_found")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"text": "   ", "language": "en"}, 400, "empty_text"),
        ({"text": "word " * 400, "language": "en"}, 413, "text_too_long"),
        ({"text": "Bonjour", "language": "fr"}, 400, "unsupported_language"),
        ({"text": "Hi", "language": "en", "voice_id": "0" * 32}, 404, "voice_not_found"),
        ({"text": "Hi", "language": "en", "voice_id": "../../etc/passwd"}, 404, "voice_not_found"),
        ({"text": "Hi", "language": "en", "avatar_id": "f" * 32}, 404, "avatar_not_found"),
        ({"language": "en"}, 422, "invalid_request"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_bad_render_requests(client, body, status, code, stream):
    _error(client.post("/v1/render", json={**body, "stream": stream}), status, code)


def test_bad_tts_requests(client):
    _error(client.post("/v1/tts", json={"text": "", "language": "en"}), 400, "empty_text")
    _error(client.post("/v1/tts", json={"text": "Hola", "language": "xx"}), 400, "unsupported_language")
    _error(client.post("/v1/tts", content=b"text=hi", headers={"Content-Type": "text/plain"}), 415,
           "unsupported_media_type")
    _error(client.post("/v1/tts", content=b"{not json", headers={"Content-Type": "application/json"}), 400,
           "invalid_json")


def test_bad_uploads(client, data_dir):
    wav = (data_dir / "LJ001-0001.wav").read_bytes()
    pcm, rate = load_audio(wav)
    import soundfile as sf

    short = io.BytesIO()
    sf.write(short, pcm[: rate // 2], rate, format="WAV")
    _error(client.post("/v1/voices", content=short.getvalue(), headers={"Content-Type": "audio/wav"}), 422,
           "audio_too_short")
    _error(client.post("/v1/voices", content=b"RIFF not really audio" * 100,
                       headers={"Content-Type": "audio/wav"}), 415, "invalid_audio")
    _error(client.post("/v1/voices", content=wav, headers={"Content-Type": "text/plain"}), 415,
           "unsupported_media_type")
    _error(client.post("/v1/voices", content=b"", headers={"Content-Type": "audio/wav"}), 400, "empty_upload")
    _error(client.post("/v1/voices", files={"other": ("a.wav", wav, "audio/wav")}), 400, "missing_file")
    huge = b"\0" * 21_000_000  # over the 20 MB default limit
    _error(client.post("/v1/voices", content=huge, headers={"Content-Type": "audio/wav"}), 413,
           "upload_too_large")
    _error(client.post("/v1/avatars", content=huge, headers={"Content-Type": "image/png"}), 413,
           "upload_too_large")

    _error(client.post("/v1/avatars", content=b"\x89PNG broken", headers={"Content-Type": "image/png"}), 415,
           "invalid_image")
    no_face = _png(np.full((256, 256, 3), 128, np.uint8))
    _error(client.post("/v1/avatars", content=no_face, headers={"Content-Type": "image/png"}), 422, "no_face")
    _error(client.post("/v1/avatars", content=wav, headers={"Content-Type": "audio/wav"}), 415,
           "unsupported_media_type")
    _error(client.post("/v1/asr", content=b"garbage" * 50, headers={"Content-Type": "audio/ogg"}), 415,
           "invalid_audio")
    _error(client.get("/v1/nothing-here"), 404, "not_found")
    _error(client.get("/v1/render"), 405, "method_not_allowed")


def test_overload_answers_503_with_retry_after_and_never_hangs(client):
    """More concurrent requests than TTS accepts (2 running + 4 queued): the rest are refused at once."""
    text = "This sentence is long enough to keep the speech engine busy for a little while. " * 3

    def speak(_: int) -> httpx.Response:
        return client.post("/v1/tts", json={"text": text, "language": "en"}, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(speak, range(16)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 2 and statuses.count(503) >= 1, statuses
    for response in responses:
        if response.status_code == 503:
            _error(response, 503, "overloaded")
            assert int(response.headers["retry-after"]) >= 1
    # Once the burst is over the server serves again.
    assert speak(0).status_code == 200


def _replica_actor(deployment: str):
    import ray

    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["name"].startswith(f"SERVE_REPLICA::avatar#{deployment}#"):
            return ray.get_actor(entry["name"], namespace=entry["namespace"])
    raise AssertionError(f"no {deployment} replica")


def _kill_avatar_replica_during(request: Callable[[], Any], after_s: float = 1.5) -> Any:
    import ray

    result: dict[str, Any] = {}

    def call() -> None:
        try:
            result["value"] = request()
        except BaseException as error:  # re-raised in the test's thread below
            result["error"] = error

    worker = threading.Thread(target=call)
    worker.start()
    time.sleep(after_s)  # the render is under way (it takes several seconds on 2 cores)
    assert worker.is_alive(), result
    ray.kill(_replica_actor("Avatar"), no_restart=False)
    worker.join(120)
    if "error" in result:
        raise result["error"]
    return result["value"]


def _wait_serving(client: httpx.Client, api_server: str, timeout_s: float = 120) -> None:
    """Until a replacement replica renders: /readyz first, then a short render. Serve may still be
    swapping replicas just after /readyz first answers, and the API says so with 503 + Retry-After;
    a client that honours Retry-After gets its render, and so does this wait."""
    wait_ready(api_server, timeout_s)
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.post("/v1/render", json={"text": "I am back.", "language": "en"})
        if response.status_code == 200:
            assert response.content[4:8] == b"ftyp"
            return
        _error(response, 503, "stage_unavailable")
        assert time.monotonic() < deadline, "the restarted replica never rendered"
        time.sleep(float(response.headers["retry-after"]))


LONG_TEXT = ("The avatar keeps talking for a long time so that the replica is still busy rendering when it "
             "is killed. ") * 8


def test_a_crashed_replica_fails_its_request_cleanly_and_is_restarted(client, api_server):
    response = _kill_avatar_replica_during(
        lambda: client.post("/v1/render", json={"text": LONG_TEXT, "language": "en"})
    )
    _error(response, 503, "stage_unavailable")
    assert int(response.headers["retry-after"]) >= 1
    _wait_serving(client, api_server)

    def streamed() -> bytes:
        with client.stream("POST", "/v1/render", json={"text": LONG_TEXT, "language": "en",
                                                       "stream": True}) as response:
            assert response.status_code == 200, (response.status_code, response.read())
            return b"".join(response.iter_bytes())

    # Headers went out before the crash, so the stream is cut short: it never gets its closing box.
    boxes = fragment_boxes(_kill_avatar_replica_during(streamed, after_s=2.0))
    assert "moof" in boxes and boxes[-1] != "mfra"

    _wait_serving(client, api_server)
