"""The evaluator through the HTTP API (``python -m evaluator run --target URL``).

Each scenario is rendered by the runtime at URL with ``POST /v1/render`` (a whole MP4, not streamed: the
stage totals only exist once the render is over, and a whole MP4 carries them in its headers), saved,
and measured here exactly like an in-process run (``evaluator.run.measure``). What the render took comes
from the server: ``tts_ms``, ``avatar_render_ms``, ``encode_ms`` and ``total_generation_ms`` are the
``tts``, ``avatar``, ``encode`` and ``total`` metrics of its ``Server-Timing`` header (measured in the TTS
and avatar deployments and the ingress); where each language's text lies in the audio comes from its
``X-Spoken-Segments`` header. The client's own wall time is kept apart: ``client_first_byte_ms`` (until
the status and headers arrived) and ``client_total_ms`` (until the last byte).

Failures end the run with one line (``TargetError``): the target unreachable or silent, a refused key
(401), a 503 (or 429) whose ``Retry-After`` is honoured a bounded number of times, a body that is not an
MP4.
"""

from __future__ import annotations

import base64
import contextlib
import json
import mimetypes
import tempfile
import time
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np

from engines.media.audio import load_audio
from engines.media.mp4 import Mp4Writer, probe_mp4, read_frames
from evaluator.run import Evaluator, Reference
from realtime_avatar.cache import content_hash
from realtime_avatar.config import get_settings
from realtime_avatar.pipeline import RenderReport, SpokenSegment
from realtime_avatar.scenarios import Scenario
from realtime_avatar.server_timing import HEADER as SERVER_TIMING
from realtime_avatar.server_timing import ServerTimingError, parse_server_timing
from realtime_avatar.stages import SpeechRecognition

SEGMENTS_HEADER = "X-Spoken-Segments"
API_KEY_ENV = "AVATAR_SERVE__API_KEY"  # the runtime's own setting (serve.api_key), which make run passes on
TIMEOUT_S = 300.0  # a long scenario on a loaded 2-core runtime takes tens of seconds
MAX_RETRIES = 3  # "later" refusals honoured per request before giving up
# Refusals that say "later" (overloaded stages, too many uploads from this client): retried on Retry-After.
RETRIED_STATUSES = (429, 503)
MAX_RETRY_WAIT_S = 30.0  # the longest Retry-After waited; a longer one is waited this long
# The chat reply's done event's stages_ms -> the run document's metric.
CHAT_STAGES = {"tts": "tts_ms", "avatar_render": "avatar_render_ms", "encode": "encode_ms", "llm": "llm_ms"}
# Server-Timing metric -> the run document's metric.
SERVER_METRICS = {"tts": "tts_ms", "avatar": "avatar_render_ms", "encode": "encode_ms",
                  "total": "total_generation_ms"}
WARM_UP = {"text": "Warming up.", "language": "en"}  # first calls pay one-off costs (dictionaries, sessions)


class TargetError(RuntimeError):
    """The target could not be used; the message is one line, for the user."""


@dataclass(frozen=True)
class Exchange:
    """One answered request: the response, its body and the client's wall times (ms)."""

    response: httpx.Response
    body: bytes
    first_byte_ms: float
    total_ms: float
    retries: int


@dataclass(frozen=True)
class ApiReply:
    """A chat reply as received: its events and decoded clips (fMP4 bytes), and the client's times."""

    events: list[dict[str, Any]]
    clips: list[bytes]
    first_byte_ms: float
    total_ms: float
    retries: int

    @property
    def done(self) -> dict[str, Any]:
        return self.events[-1]

    @property
    def clip_events(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "clip"]


@dataclass(frozen=True)
class ApiRender:
    mp4: bytes
    server_ms: dict[str, float]  # Server-Timing durations by metric name
    segments: list[SpokenSegment]
    audio_seconds: float
    first_byte_ms: float
    total_ms: float
    retries: int


def retry_after_s(value: str | None) -> float | None:
    """A ``Retry-After`` value (delay seconds or an HTTP date) in seconds from now; None if absent or bad."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _error_line(method: str, path: str, response: httpx.Response, body: bytes) -> str:
    try:
        error = json.loads(body)["error"]
        said = f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        said = body[:120].decode("utf-8", "replace").strip() or "(no body)"
    said = " ".join(said.split())  # one line, whatever the server wrote
    line = f"{method} {path} answered {response.status_code} {said}"
    if response.status_code == 401:
        line += f" (give the runtime's key with --api-key or {API_KEY_ENV})"
    return line


def parse_segments(header: str | None) -> list[SpokenSegment]:
    if header is None:
        raise TargetError(f"the render came without {SEGMENTS_HEADER} (is the target an older build?)")
    try:
        return [SpokenSegment(str(s["language"]), str(s["text"]), float(s["start_s"]), float(s["end_s"]))
                for s in json.loads(header)]
    except (ValueError, KeyError, TypeError):
        raise TargetError(f"unreadable {SEGMENTS_HEADER} header: {header[:80]!r}") from None


class ApiTarget:
    """A runtime's HTTP API, with the key, the retries and the error messages the evaluator needs."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = TIMEOUT_S,
                 max_retries: int = MAX_RETRIES, max_wait_s: float = MAX_RETRY_WAIT_S) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)
        self.timeout_s, self.max_retries, self.max_wait_s = timeout_s, max_retries, max_wait_s

    def close(self) -> None:
        self.http.close()

    def exchange(self, method: str, path: str, **kwargs: Any) -> Exchange:
        """The answered request (a 503 or 429 with Retry-After is retried); any failure is a TargetError."""
        for attempt in range(self.max_retries + 1):
            started = time.perf_counter()
            try:
                with self.http.stream(method, path, **kwargs) as response:
                    first_byte_ms = (time.perf_counter() - started) * 1000
                    body = response.read()
            except httpx.ConnectError as exc:
                raise TargetError(f"cannot connect ({exc}): is the runtime running there?") from None
            except httpx.TimeoutException:
                raise TargetError(f"{method} {path}: no answer within {self.timeout_s:g} s") from None
            except httpx.HTTPError as exc:
                raise TargetError(f"{method} {path} failed: {type(exc).__name__}: {exc}") from None
            total_ms = (time.perf_counter() - started) * 1000
            wait = retry_after_s(response.headers.get("retry-after"))
            busy = response.status_code in RETRIED_STATUSES and wait is not None
            if busy and attempt < self.max_retries:
                time.sleep(min(wait, self.max_wait_s))
                continue
            if response.status_code >= 400:
                line = _error_line(method, path, response, body)
                if busy:
                    line += f" (still refused after {attempt} retries)"
                raise TargetError(line)
            return Exchange(response, body, first_byte_ms, total_ms, attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def engines(self) -> dict[str, str]:
        """The runtime's engine per stage, from ``/readyz`` (which needs no key)."""
        ready = self.exchange("GET", "/readyz").body
        try:
            stages = json.loads(ready)["stages"]
            return {name: str(stages[name]["engine"]) for name in ("tts", "avatar", "asr")}
        except (ValueError, KeyError, TypeError):
            raise TargetError("GET /readyz did not answer like this API (is it the runtime's URL?)") from None

    def upload(self, kind: str, path: Path, fallback_type: str) -> str:
        """A voice or portrait file -> its id (``kind``: voices or avatars)."""
        content_type = mimetypes.guess_type(path.name)[0] or fallback_type
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise TargetError(f"cannot read {path}: {exc.strerror}") from None
        answer = self.exchange("POST", f"/v1/{kind}", content=data, headers={"Content-Type": content_type})
        try:
            return str(json.loads(answer.body)[f"{kind[:-1]}_id"])
        except (ValueError, KeyError, TypeError):
            raise TargetError(f"POST /v1/{kind} answered without an id") from None

    def render(self, text: str, language: str, voice_id: str | None = None,
               avatar_id: str | None = None) -> ApiRender:
        body = {"text": text, "language": language, "voice_id": voice_id, "avatar_id": avatar_id}
        answer = self.exchange("POST", "/v1/render", json=body)
        content_type = answer.response.headers.get("content-type", "")
        if not content_type.startswith("video/mp4") or answer.body[4:8] != b"ftyp":
            raise TargetError(f"POST /v1/render answered {answer.response.status_code} with "
                              f"{content_type or 'no Content-Type'} ({len(answer.body)} bytes), not an MP4")
        header = answer.response.headers.get(SERVER_TIMING)
        try:
            server_ms = parse_server_timing(header or "")
        except ServerTimingError as exc:
            raise TargetError(str(exc)) from None
        missing = [name for name in SERVER_METRICS if name not in server_ms]
        if missing:
            raise TargetError(f"the render's {SERVER_TIMING} lacks {', '.join(missing)} "
                              f"(got {header!r}: is the target an older build?)")
        try:
            audio_seconds = float(answer.response.headers["x-audio-seconds"])
        except (KeyError, ValueError):
            raise TargetError("the render came without a readable X-Audio-Seconds header") from None
        return ApiRender(answer.body, server_ms, parse_segments(answer.response.headers.get(SEGMENTS_HEADER)),
                         audio_seconds, answer.first_byte_ms, answer.total_ms, answer.retries)

    def chat(self, text: str, language: str, voice_id: str | None = None,
             avatar_id: str | None = None) -> ApiReply:
        """``text`` asked in a fresh session fixed to ``language``; the session is ended afterwards."""
        body = {"language": language, "voice_id": voice_id, "avatar_id": avatar_id}
        created = self.exchange("POST", "/v1/chat/sessions", json=body)
        try:
            session_id = str(json.loads(created.body)["session_id"])
        except (ValueError, KeyError, TypeError):
            raise TargetError("POST /v1/chat/sessions answered without a session_id") from None
        try:
            answer = self.exchange("POST", "/v1/chat", json={"session_id": session_id, "text": text})
        finally:
            with contextlib.suppress(TargetError):  # it expires by itself; the reply is what matters
                self.exchange("DELETE", f"/v1/chat/sessions/{session_id}")
        try:
            events = [json.loads(line) for line in answer.body.splitlines() if line.strip()]
            clips = [base64.b64decode(e["data"]) for e in events if e["type"] == "clip"]
        except (ValueError, KeyError, TypeError):
            raise TargetError("POST /v1/chat answered with something other than its NDJSON events") from None
        failed = next((e for e in events if e.get("type") in ("error", "cancelled")), None)
        if failed is not None or not events or events[-1].get("type") != "done":
            raise TargetError(f"the reply did not complete: {json.dumps(failed or events[-1:])[:200]}")
        if not clips or any(clip[4:8] != b"ftyp" for clip in clips):
            raise TargetError(f"the reply had {len(clips)} clips, not all of them MP4")
        return ApiReply(events, clips, answer.first_byte_ms, answer.total_ms, answer.retries)


def join_clips(clips: list[bytes], path: Path, crf: int) -> list[tuple[float, float]]:
    """A reply's clips, decoded and written back to back as one MP4 (encoded once more at ``crf``): what a
    player of the clips shows. Each clip's audio is cut or padded to its frames' span, so the lips stay on
    the voice across the joins. Returns each clip's (start, end) in the joined file, in seconds."""
    pcm_parts, frame_parts, spans, sample_rate, fps = [], [], [], 0, 0.0
    with tempfile.TemporaryDirectory(prefix="clips-") as tmp:
        for i, clip in enumerate(clips):
            clip_path = Path(tmp) / f"clip{i}.mp4"
            clip_path.write_bytes(clip)
            pcm, sample_rate = load_audio(clip_path)
            frames, fps = read_frames(clip_path), probe_mp4(clip_path).fps
            span = round(len(frames) / fps * sample_rate)
            pcm_parts.append(np.pad(pcm[:span], (0, max(0, span - pcm.size))))
            frame_parts.append(frames)
            start = spans[-1][1] if spans else 0.0
            spans.append((start, start + span / sample_rate))
    frames = np.concatenate(frame_parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = Mp4Writer(path, width=frames.shape[2], height=frames.shape[1], sample_rate=sample_rate,
                       fps=round(fps), crf=crf)
    with writer:
        writer.write_audio(np.concatenate(pcm_parts))
        writer.write_frames(frames)
    return spans


class ApiEvaluator(Evaluator):
    """The in-process evaluator's runs and measures, with the render done by the runtime at a URL.

    The voice and portrait are uploaded once. Pitch baselines are kept apart from in-process ones (the
    config key names the target's engines); the golden run is not compared (``*_vs_golden`` null): the
    server's engine options, seed and render settings cannot be seen from here.
    """

    def __init__(self, target: ApiTarget, output_dir: Path, reference: Path,
                 image: Path | None = None) -> None:
        self.output_dir, self.target = output_dir, target
        # Whatever stops the run (unreachable, a key refused) shows before anything slow is loaded here.
        self.engines = target.engines()
        self.voice_id = target.upload("voices", reference, "audio/wav")
        self.avatar_id = target.upload("avatars", image, "image/png") if image is not None else None
        target.render(**WARM_UP)
        self.reference = Reference.load(reference)
        self.config_key = content_hash("api", json.dumps(self.engines, sort_keys=True),
                                       self.reference.digest)[:12]
        self.golden: dict[str, Any] = {}
        self.asr = SpeechRecognition(get_settings()).engine
        self.document_extras = {"mode": "api", "target": target.base_url}

    def render(self, scenario: Scenario, mp4: Path) -> tuple[RenderReport, dict[str, Any]]:
        done = self.target.render(scenario.text, scenario.language, self.voice_id, self.avatar_id)
        mp4.parent.mkdir(parents=True, exist_ok=True)
        mp4.write_bytes(done.mp4)
        timings = {metric: done.server_ms[name] for name, metric in SERVER_METRICS.items()}
        report = RenderReport(mp4, done.segments, done.audio_seconds, probe_mp4(mp4).frame_count, timings)
        client = {"encode_ms": round(timings["encode_ms"], 1),
                  "client_first_byte_ms": round(done.first_byte_ms, 1),
                  "client_total_ms": round(done.total_ms, 1), "client_retries": done.retries}
        return report, client


class ChatEvaluator(ApiEvaluator):
    """``--target URL --chat``: each scenario's line is *asked* through ``/v1/chat`` (a fresh session fixed
    to the scenario's first language, with the reference voice) and the reply is measured: its clips joined
    into one MP4 (``join_clips``), one segment per clip with the clip's text, judged against the session's
    language. Stage times are the server's sums over the reply's clips (the ``done`` event's ``stages_ms``:
    ``llm``, ``tts``, ``avatar_render``, ``encode``); ``total_generation_ms`` is the server's whole reply
    and ``first_clip_ms`` its first clip; ``f0_rmse_hz`` is null (the words differ from run to run).
    """

    same_words_each_run: ClassVar[bool] = False

    def __init__(self, target: ApiTarget, output_dir: Path, reference: Path,
                 image: Path | None = None) -> None:
        super().__init__(target, output_dir, reference, image)
        self.config_key = f"chat_{self.config_key}"
        self.document_extras["mode"] = "chat"
        self.crf = get_settings().render.crf

    def render(self, scenario: Scenario, mp4: Path) -> tuple[RenderReport, dict[str, Any]]:
        reply = self.target.chat(scenario.text, scenario.languages[0], self.voice_id, self.avatar_id)
        spans = join_clips(reply.clips, mp4, self.crf)
        segments = [SpokenSegment(e["language"], e["text"], start, end)
                    for e, (start, end) in zip(reply.clip_events, spans, strict=True)]
        stages, server = reply.done.get("stages_ms", {}), reply.done.get("timings_ms", {})
        missing = [key for key in CHAT_STAGES if key not in stages]
        if missing or "total" not in server:
            raise TargetError(f"the reply's done event lacks the stage times {missing or ['total']} "
                              "(is the target an older build?)")
        timings = {metric: stages[key] for key, metric in CHAT_STAGES.items()}
        timings["total_generation_ms"] = server["total"]
        audio_seconds = segments[-1].end_s
        report = RenderReport(mp4, segments, audio_seconds, probe_mp4(mp4).frame_count, timings)
        extra = {"encode_ms": round(timings["encode_ms"], 1), "llm_ms": round(timings["llm_ms"], 1),
                 "first_clip_ms": server.get("first_clip"), "reply_clips": len(reply.clips),
                 "reply_text": reply.done.get("text", ""),
                 "client_first_byte_ms": round(reply.first_byte_ms, 1),
                 "client_total_ms": round(reply.total_ms, 1), "client_retries": reply.retries}
        return report, extra

    def judged_as(self, scenario: Scenario, report: RenderReport) -> Scenario:
        return replace(scenario, languages=(scenario.languages[0],) * len(report.segments))
