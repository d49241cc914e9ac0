"""HTTP ingress (FastAPI via ``@serve.ingress``): the versioned API in front of the stage deployments.

It owns no model and encodes no video: uploads and JSON go to the stages through handles; the avatar
stage sends encoded MP4 / fMP4 bytes, the conversation sends reply events, and this relays them
(WAV for /v1/tts is the one thing muxed here).
"""

# No `from __future__ import annotations` here: Serve's class-based ingress rewrites the route methods'
# signatures and FastAPI would then see string annotations it cannot resolve.
import asyncio
import json
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import Depends, FastAPI, Query, Request, WebSocket
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, BeforeValidator, Field, StrictBool
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.common import cancel_stream, settings_from
from deployments.http import (
    ApiError,
    install_error_handlers,
    read_upload,
    read_uploads,
    require_json,
    to_api_error,
)
from deployments.socket_relay import relay as relay_socket_call
from engines.errors import EmptyTextError
from engines.media.audio import wav_bytes
from realtime_avatar import logs
from realtime_avatar.encoding import FMP4_MIME, MediaPart
from realtime_avatar.logs import event
from realtime_avatar.pipeline import SpokenSegment, extend_segments
from realtime_avatar.server_timing import HEADER as SERVER_TIMING
from realtime_avatar.server_timing import format_server_timing

log = logging.getLogger("realtime_avatar.api")
T = TypeVar("T")

AUDIO_TYPES = ("audio/*", "video/webm", "video/mp4", "video/ogg")
IMAGE_TYPES = ("image/*",)
VIDEO_TYPES = ("video/*",)
MOTION_VIDEO_FIELD = "motion_video"  # POST /v1/avatars: the owner's own 10-60 s video, optional
LANGUAGE_HELP = "en, zh, es, or auto (detected per sentence); null is auto"


def _auto_if_null(value: Any) -> Any:
    return "auto" if value is None else value


# A request's language: null means auto (engines.tts.text.normalize_language reads the rest, everywhere).
Language = Annotated[str, BeforeValidator(_auto_if_null)]

app = FastAPI(
    title="Realtime Avatar API",
    version="1",
    description="Talking-head avatar: voices, avatars, text -> MP4 / WAV, speech -> text. "
    'Errors are JSON: {"error": {"code", "message"}}.',
)
install_error_handlers(app)


class SpeakRequest(BaseModel):
    text: str = Field(description="what the avatar says", examples=["Hello! Nice to meet you."])
    language: Language = Field("auto", description=LANGUAGE_HELP)
    voice_id: str | None = Field(None, description="from POST /v1/voices; default: the bundled voice")


class RenderRequest(SpeakRequest):
    avatar_id: str | None = Field(None, description="from POST /v1/avatars; default: the bundled portrait")
    # Strict: JSON true/false only ("true" or 1 is a 422 invalid_request, never read as a boolean).
    stream: StrictBool = Field(False, description="fragmented MP4, sent fragment by fragment as it renders")


class SessionRequest(BaseModel):
    language: Language = Field("auto", description="fix the reply language (en, zh, es), or auto: each "
                               "reply follows the language of its message")
    voice_id: str | None = Field(None, description="from POST /v1/voices; default: the bundled voice")
    avatar_id: str | None = Field(None, description="from POST /v1/avatars; default: the bundled portrait")
    persona: dict[str, Any] | None = Field(
        None, description="a persona (persona.yaml fields) for this session; 403 unless the owner allows")


class SessionInfo(BaseModel):
    session_id: str
    language: str
    turns: int
    voice_id: str | None
    avatar_id: str | None
    expires_in_s: float


class SessionCreated(SessionInfo):
    greeting: str = Field(description="the persona's greeting; GET .../greeting streams it as a clip")


class ChatRequest(BaseModel):
    session_id: str = Field(description="from POST /v1/chat/sessions")
    text: str = Field(description="the visitor's message", examples=["¿Qué haces en tu trabajo?"])
    language: Language = Field("auto", description="en, zh, es, or auto (the message's language)")


class OfferRequest(BaseModel):
    session_id: str = Field(description="from POST /v1/chat/sessions: the call continues that conversation")
    sdp: str = Field(description="the browser's SDP offer, ICE candidates included (no trickle)")
    type: str = Field("offer", description='"offer"')
    language: Language = Field("auto", description="en, zh, es, or auto (each turn's spoken language)")


NDJSON = "application/x-ndjson"
CHAT_STREAM_DOC = f"""The reply streams as **NDJSON**: one JSON object per line, in this order:

- `start`: `{{"type": "start", "session_id", "turn", "language"}}`, once the model has begun to answer;
- `text`: `{{"type": "text", "delta"}}`, the reply's text as the model writes it;
- `clip`: `{{"type": "clip", "index", "text", "language", "start_s", "duration_s", "mime", "data"}}`,
  one per sentence as soon as it is rendered: `data` is a base64 **fragmented MP4** (H.264 + AAC,
  `{FMP4_MIME}`), playable on its own or appended in order to one Media Source Extensions
  SourceBuffer in `sequence` mode, which plays the clips of a reply back to back;
- `done`: `{{"type": "done", "text", "clips", "cut", "timings_ms"}}`: `text` is what was spoken;
  `cut` is true when the model stopped mid-sentence (speech ends at its last whole clause);
- or `cancelled` (`{{"type": "cancelled", "reason": "new_turn"}}`) when a newer message in the same
  session replaced this reply, or `error` (`{{"type": "error", "error": {{"code", "message"}}}}`) when it
  failed after it began; either ends the stream.

A second message while a reply is streaming **cancels** the first (its stream ends with `cancelled`).
Errors before the first line are ordinary JSON errors: 404 unknown session, 410 ended or expired,
400 empty message or unsupported language, 413 message too long, 503 LLM unavailable or overloaded
(with Retry-After).
"""
CHAT_EXAMPLE = "\n".join(json.dumps(e, ensure_ascii=False) for e in (
    {"type": "start", "session_id": "3f2c…", "turn": 1, "language": "es"},
    {"type": "text", "delta": "¡Hola!"},
    {"type": "text", "delta": " Trabajo en"},
    {"type": "clip", "index": 0, "text": "¡Hola!", "language": "es", "start_s": 0.0, "duration_s": 0.96,
     "mime": FMP4_MIME, "data": "AAAAHGZ0eXBpc281…"},
    {"type": "done", "text": "¡Hola! Trabajo en vídeo en tiempo real.", "clips": 2, "cut": False,
     "timings_ms": {"first_text": 180.0, "first_clip": 820.0, "total": 1900.0}},
))


class VoiceCreated(BaseModel):
    voice_id: str
    engine: str
    seconds: float


class AvatarCreated(BaseModel):
    avatar_id: str
    size: int
    motion: dict[str, Any] | None = Field(
        None, description="with a motion_video: the statistics its renders and idle loop now follow "
        "(head sway std per axis in degrees, its frequency band, blink rate / interval / duration, nods)")


class Deleted(BaseModel):
    voice_id: str | None = None
    avatar_id: str | None = None
    deleted: bool


class Transcription(BaseModel):
    text: str
    language: str
    language_probability: float
    duration: float
    segments: list[dict[str, Any]]


BINARY = {"schema": {"type": "string", "format": "binary"}}
MEDIA = {"video/mp4": BINARY}


def _upload_body(*media_types: str, extras: tuple[str, ...] = ()) -> dict[str, Any]:
    """OpenAPI for a route that reads its upload itself: a raw body, or a multipart ``file`` part (and
    the optional ``extras`` file parts)."""
    parts = {name: BINARY["schema"] for name in ("file", *extras)}
    form = {"type": "object", "properties": parts, "required": ["file"]}
    content = {t: BINARY for t in media_types} | {"multipart/form-data": {"schema": form}}
    return {"requestBody": {"required": True, "content": content}}


def _ndjson(item: dict[str, Any]) -> bytes:
    return json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


# Serve's class-based ingress snapshots the module's names when the class is decorated: everything the
# routes use must be defined above it.
def _request_id(request: Request) -> str:
    return request.state.request_id  # set by the error middleware (deployments.http)


SEGMENTS_HEADER = "X-Spoken-Segments"
# Server-Timing metrics of a whole-MP4 render: (metric name, key in the avatar stage's totals, description).
RENDER_STAGES = (
    ("tts", "tts_ms", "speech synthesis, TTS stage"),
    ("avatar", "avatar_render_ms", "motion and frames, avatar stage"),
    ("encode", "encode_ms", "H.264 + AAC muxing, avatar stage"),
)


def _render_timing(stage_ms: dict[str, float], total_ms: float) -> str:
    # The stages overlap (TTS synthesizes the next clause while the avatar draws this one), so they may
    # sum to more than the total.
    metrics = {name: (stage_ms[key], desc) for name, key, desc in RENDER_STAGES if key in stage_ms}
    metrics["total"] = (total_ms, "the request in the ingress until the whole MP4 was in hand")
    return format_server_timing(metrics)


def _segments_header(segments: list[SpokenSegment]) -> str:
    # ASCII JSON (non-ASCII text as \u escapes): a header value may hold only visible ASCII.
    return json.dumps([{"language": s.language, "text": s.text, "start_s": round(s.start_s, 3),
                        "end_s": round(s.end_s, 3)} for s in segments], separators=(",", ":"))


@serve.deployment(name="Ingress")
@serve.ingress(app)
class Ingress:
    def __init__(self, config: dict[str, Any], handles: dict[str, DeploymentHandle]) -> None:
        """``handles``: every model stage of ``settings.stages`` and the conversation, by name."""
        self.settings = settings_from(config)
        self.handles = handles
        self.asr, self.tts, self.avatar = handles["asr"], handles["tts"], handles["avatar"]
        self.conversation = handles["conversation"]
        self.realtime = handles["realtime"]
        app.state.retry_after_s = self.settings.serve.retry_after_s
        app.state.settings = self.settings  # the API key and allowed origins (deployments.edge)
        app.state.max_json_bytes = self.settings.limits.max_json_bytes

    def check_health(self) -> None:
        # Whole-MP4 renders are muxed into a temp file: a full or read-only temp dir breaks every render.
        with tempfile.NamedTemporaryFile(prefix="health-", suffix=".part") as probe:
            probe.write(b"ok")
            probe.flush()

    @app.get("/healthz", summary="the ingress process is up (and which ingress replica answered)")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok", "replica": serve.get_replica_context().replica_id.unique_id}

    @app.get("/readyz", summary="every stage answers", responses={503: {"description": "a stage is down"}})
    async def readyz(self) -> Response:
        names = list(self.handles)
        timeout = self.settings.serve.ready_timeout_s
        answers = await asyncio.gather(
            *(asyncio.wait_for(self.handles[n].ready.remote(), timeout) for n in names),
            return_exceptions=True,
        )
        stages = {
            n: a if not isinstance(a, BaseException) else {"error": to_api_error(a, 0).code}
            for n, a in zip(names, answers, strict=True)
        }
        ready = not any(isinstance(a, BaseException) for a in answers)
        body = {"ready": ready, "profile": self.settings.profile, "stages": stages}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.post("/v1/voices", response_model=VoiceCreated, status_code=201,
              summary="upload reference audio (>= 2 s): raw audio/* body or multipart 'file'",
              openapi_extra=_upload_body(*AUDIO_TYPES))
    async def create_voice(self, request: Request) -> dict[str, Any]:
        rid = _request_id(request)
        data = await read_upload(request, AUDIO_TYPES, self.settings.limits.max_upload_bytes, "voice")
        return await self._guard(self.tts.prepare_voice.remote(data, request_id=rid))

    @app.post("/v1/avatars", response_model=AvatarCreated, status_code=201, response_model_exclude_none=True,
              summary="upload a portrait: raw image/* body or multipart 'file' (+ optional 'motion_video': "
                      "10-60 s of the owner, whose head sway and blinks the avatar then follows)",
              openapi_extra=_upload_body(*IMAGE_TYPES, extras=(MOTION_VIDEO_FIELD,)))
    async def create_avatar(self, request: Request) -> dict[str, Any]:
        rid = _request_id(request)
        limits = self.settings.limits
        extras = {MOTION_VIDEO_FIELD: (VIDEO_TYPES, limits.max_motion_video_bytes, "motion video")}
        data, found = await read_uploads(request, IMAGE_TYPES, limits.max_upload_bytes, "image", extras)
        return await self._guard(self.avatar.prepare_avatar.remote(
            data, request_id=rid, motion_video=found.get(MOTION_VIDEO_FIELD)))

    @app.delete("/v1/voices/{voice_id}", response_model=Deleted, response_model_exclude_none=True,
                summary="delete a stored voice (its features, from every node's store)")
    async def delete_voice(self, voice_id: str, request: Request) -> dict[str, Any]:
        return await self._guard(self.tts.delete_voice.remote(voice_id, request_id=_request_id(request)))

    @app.delete("/v1/avatars/{avatar_id}", response_model=Deleted, response_model_exclude_none=True,
                summary="delete a stored avatar (face crop, landmarks, features, from every node's store)")
    async def delete_avatar(self, avatar_id: str, request: Request) -> dict[str, Any]:
        rid = _request_id(request)
        return await self._guard(self.avatar.delete_avatar.remote(avatar_id, request_id=rid))

    @app.post("/v1/asr", response_model=Transcription, summary="speech (any audio container) -> text",
              openapi_extra=_upload_body(*AUDIO_TYPES))
    async def transcribe(
        self, request: Request,
        language: str | None = Query(None, description="force a language (en, zh, es; es-419, zh-CN...); "
                                     "auto or none: detected"),
    ) -> dict[str, Any]:
        rid = _request_id(request)
        data = await read_upload(request, AUDIO_TYPES, self.settings.limits.max_upload_bytes, "audio")
        return await self._guard(self.asr.transcribe.remote(data, language, request_id=rid))

    @app.post("/v1/tts", dependencies=[Depends(require_json)], summary="text -> 16-bit WAV",
              response_class=Response, responses={200: {"content": {"audio/wav": {}}}})
    async def speak(self, body: SpeakRequest, request: Request) -> Response:
        rid = _request_id(request)
        chunks = self._guarded(self.tts.options(stream=True).stream.remote(
            body.text, body.language, body.voice_id, request_id=rid
        ))
        parts, sample_rate = [], 0
        async for chunk in chunks:
            parts.append(chunk.pcm)
            sample_rate = chunk.sample_rate
        if not parts:
            raise EmptyTextError("the text has nothing to speak")
        pcm = np.concatenate(parts)
        headers = {"X-Audio-Seconds": f"{pcm.size / sample_rate:.3f}"}
        return Response(wav_bytes(pcm, sample_rate), media_type="audio/wav", headers=headers)

    @app.post("/v1/render", dependencies=[Depends(require_json)], response_class=Response,
              summary="text -> talking-head MP4 (H.264 + AAC); stream=true: fragmented MP4",
              responses={200: {"content": MEDIA}})
    async def render(self, body: RenderRequest, request: Request) -> Response:
        rid = _request_id(request)
        started = time.perf_counter()
        parts = self._guarded(self.avatar.options(stream=True).render.remote(
            body.text, body.language, body.voice_id, body.avatar_id, request_id=rid,
            container="fmp4" if body.stream else "mp4",
        ))
        first = await anext(parts, None)  # bad text, language or ids fail here, before any byte
        if first is None:
            raise EmptyTextError("the text has nothing to speak")
        if body.stream:
            # The stage totals exist only once the last fragment has left, after the headers. HTTP trailers
            # would carry them, but Starlette's StreamingResponse and uvicorn's HTTP/1.1 (Serve's proxy)
            # send none and neither fetch() nor httpx reads them: a stream tells only its time to the first
            # part. A whole MP4 (below) is buffered here anyway, so its headers have every figure.
            first_ms = (time.perf_counter() - started) * 1000
            timing = format_server_timing({"first-part": (first_ms, "until the first part was encoded")})
            return StreamingResponse(self._fragments(first, parts, rid, started), media_type="video/mp4",
                                     headers={SERVER_TIMING: timing})
        data, audio_seconds = bytearray(first.data), first.audio_offset_s + first.audio_seconds
        stage_ms, segments = first.timings_ms, extend_segments([], first)
        async for part in parts:
            data += part.data
            audio_seconds = max(audio_seconds, part.audio_offset_s + part.audio_seconds)
            stage_ms = part.timings_ms or stage_ms  # the utterance's last part carries its totals
            segments = extend_segments(segments, part)
        total_ms = (time.perf_counter() - started) * 1000
        event(log, "render_done", audio_s=round(audio_seconds, 2), bytes=len(data), total_ms=round(total_ms),
              **{key: round(value) for key, value in stage_ms.items()})
        headers = {"X-Audio-Seconds": f"{audio_seconds:.3f}", SEGMENTS_HEADER: _segments_header(segments),
                   SERVER_TIMING: _render_timing(stage_ms, total_ms)}
        return Response(bytes(data), media_type="video/mp4", headers=headers)

    # --- chat ----------------------------------------------------------------------------------------

    @app.post("/v1/chat/sessions", response_model=SessionCreated, status_code=201,
              dependencies=[Depends(require_json)], summary="start a conversation with the avatar",
              responses={503: {"description": "too many conversations open (Retry-After)"}})
    async def create_session(self, body: SessionRequest, request: Request) -> dict[str, Any]:
        rid = _request_id(request)
        if body.persona is not None and not self.settings.chat.allow_persona_override:
            raise ApiError(403, "persona_override_disabled",
                           "this server speaks as its owner's persona only (chat.allow_persona_override)")
        return await self._guard(self.conversation.create_session.remote(
            body.language, body.voice_id, body.avatar_id, persona=body.persona, request_id=rid))

    @app.get("/v1/chat/sessions/{session_id}", response_model=SessionInfo, summary="a conversation's state")
    async def session_info(self, session_id: str) -> dict[str, Any]:
        return await self._guard(self.conversation.session_info.remote(session_id))

    @app.delete("/v1/chat/sessions/{session_id}", summary="end a conversation (a reply in flight stops)")
    async def end_session(self, session_id: str, request: Request) -> dict[str, Any]:
        return await self._guard(self.conversation.end_session.remote(session_id,
                                                                      request_id=_request_id(request)))

    @app.post("/v1/chat", dependencies=[Depends(require_json)], response_class=StreamingResponse,
              summary="send a message; the reply streams as NDJSON (text deltas, a clip per sentence)",
              description=CHAT_STREAM_DOC, responses={200: {"content": {NDJSON: {"example": CHAT_EXAMPLE}}}})
    async def chat(self, body: ChatRequest, request: Request) -> Response:
        rid = _request_id(request)
        events = self._guarded(self.conversation.options(stream=True).chat.remote(
            body.session_id, body.text, body.language, request_id=rid))
        return await self._event_stream(events, rid)

    @app.get("/v1/chat/sessions/{session_id}/greeting", response_class=StreamingResponse,
             summary="the persona's greeting in the session's language, as a chat event stream (cached)",
             responses={200: {"content": {NDJSON: {"example": CHAT_EXAMPLE}}}})
    async def greeting(self, session_id: str, request: Request) -> Response:
        rid = _request_id(request)
        events = self._guarded(self.conversation.options(stream=True).greeting.remote(session_id,
                                                                                      request_id=rid))
        return await self._event_stream(events, rid)

    # --- realtime calls (WebRTC) ---------------------------------------------------------------------

    @app.get("/v1/rtc/config", summary="ICE servers for a call's RTCPeerConnection, and the call cap",
             description="With ?session_id= the TURN relay's short-lived credential is minted for that "
                         "session (404/410 when it is not open); without it none is handed out.")
    async def rtc_config(self, session_id: str | None = None) -> dict[str, Any]:
        return await self._guard(self.realtime.rtc_config.remote(session_id))

    @app.post("/v1/rtc/offer", dependencies=[Depends(require_json)],
              summary="start a voice call: SDP offer in, SDP answer out (events on the data channel)",
              responses={400: {"description": "invalid_sdp or no_audio"},
                         503: {"description": "too_many_calls (Retry-After)"}})
    async def rtc_offer(self, body: OfferRequest, request: Request) -> dict[str, Any]:
        return await self._guard(self.realtime.offer.remote(
            body.session_id, body.sdp, body.type, body.language, request_id=_request_id(request)))

    @app.get("/v1/rtc/calls/{call_id}", summary="a call's state")
    async def rtc_call(self, call_id: str) -> dict[str, Any]:
        return await self._guard(self.realtime.call_info.remote(call_id))

    @app.delete("/v1/rtc/calls/{call_id}", summary="hang up a call")
    async def rtc_hang_up(self, call_id: str, request: Request) -> dict[str, Any]:
        return await self._guard(self.realtime.hang_up.remote(call_id, request_id=_request_id(request)))

    @app.websocket("/v1/rtc/ws")
    async def rtc_websocket(self, websocket: WebSocket) -> None:
        """A call over one WebSocket (the fallback when ICE fails): ``?session_id=&language=``; the
        framing is ``realtime_avatar.rtc.wire``'s."""
        await relay_socket_call(websocket, self.realtime, self.settings.serve.retry_after_s)

    async def _event_stream(self, events: AsyncIterator[dict[str, Any]], rid: str) -> Response:
        first = await anext(events, None)  # unknown session, bad message, LLM down: a status, not a stream
        if first is None:
            raise ApiError(500, "internal_error", f"the reply ended before it began (request {rid})")

        async def lines() -> AsyncIterator[bytes]:
            logs.request_id.set(rid)
            yield _ndjson(first)
            try:
                async for item in events:
                    yield _ndjson(item)
            except ApiError as exc:  # headers are gone: the failure goes in band, and the stream ends
                yield _ndjson({"type": "error", "error": {"code": exc.code, "message": exc.message}})
            finally:
                await events.aclose()  # a client that left: cancel the reply behind the stream now

        return StreamingResponse(lines(), media_type=NDJSON, headers={"Cache-Control": "no-store"})

    # Serve installs its own plain-text handler for BackPressureError on the app, so failures of stage
    # calls are turned into ApiError (JSON, Retry-After) right where they surface.
    async def _guard(self, response: Awaitable[T]) -> T:
        try:
            return await response
        except Exception as exc:
            raise to_api_error(exc, self.settings.serve.retry_after_s) from None

    async def _guarded(self, items: Any) -> AsyncIterator[Any]:
        try:
            async for item in items:
                yield item
        except Exception as exc:
            raise to_api_error(exc, self.settings.serve.retry_after_s) from None
        finally:
            cancel_stream(items)  # this request is over (done, failed or abandoned): so is the work behind it

    async def _fragments(
        self, first: MediaPart, parts: AsyncIterator[MediaPart], rid: str, started: float
    ) -> AsyncIterator[bytes]:
        logs.request_id.set(rid)
        sent = 0
        try:
            part: MediaPart | None = first
            while part is not None:
                if part.data:
                    if not sent:
                        event(log, "first_fragment", ms=round((time.perf_counter() - started) * 1000))
                    sent += len(part.data)
                    yield part.data
                part = await anext(parts, None)
        except Exception as exc:
            # The headers are gone, so the status can't change: the stream stops here, without the
            # closing mfra box that tells a client the video is whole.
            event(log, "stream_failed", level=logging.WARNING, error=to_api_error(exc, 0).code, sent=sent)
            raise
        finally:
            await parts.aclose()  # type: ignore[attr-defined]
        event(log, "render_done", streamed=True, bytes=sent,
              total_ms=round((time.perf_counter() - started) * 1000))
