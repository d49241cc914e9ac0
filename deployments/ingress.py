"""HTTP ingress (FastAPI via ``@serve.ingress``): the versioned API in front of the stage deployments.

It owns no model: uploads and JSON go to the stages through handles, and what comes back is muxed
here (WAV, MP4, or fragmented MP4 streamed fragment by fragment while later chunks still render).
"""

# No `from __future__ import annotations` here: Serve's class-based ingress rewrites the route methods'
# signatures and FastAPI would then see string annotations it cannot resolve.
import asyncio
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.common import settings_from
from deployments.http import install_error_handlers, read_upload, require_json, to_api_error
from engines.errors import EmptyTextError
from engines.media.audio import wav_bytes
from engines.media.mp4 import FragmentedMp4Writer, Mp4Writer
from realtime_avatar import logs
from realtime_avatar.logs import event
from realtime_avatar.stages import RenderedChunk

log = logging.getLogger("realtime_avatar.api")
T = TypeVar("T")

AUDIO_TYPES = ("audio/*", "video/webm", "video/mp4", "video/ogg")
IMAGE_TYPES = ("image/*",)
LANGUAGE_HELP = "en, zh, es, or auto (detected per sentence)"

app = FastAPI(
    title="Realtime Avatar API",
    version="1",
    description="Talking-head avatar: voices, avatars, text -> MP4 / WAV, speech -> text. "
    'Errors are JSON: {"error": {"code", "message"}}.',
)
install_error_handlers(app)


class SpeakRequest(BaseModel):
    text: str = Field(description="what the avatar says", examples=["Hello! Nice to meet you."])
    language: str = Field("auto", description=LANGUAGE_HELP)
    voice_id: str | None = Field(None, description="from POST /v1/voices; default: the bundled voice")


class RenderRequest(SpeakRequest):
    avatar_id: str | None = Field(None, description="from POST /v1/avatars; default: the bundled portrait")
    stream: bool = Field(False, description="fragmented MP4, sent fragment by fragment as it renders")


class VoiceCreated(BaseModel):
    voice_id: str
    engine: str
    seconds: float


class AvatarCreated(BaseModel):
    avatar_id: str
    size: int


class Transcription(BaseModel):
    text: str
    language: str
    language_probability: float
    duration: float
    segments: list[dict[str, Any]]


BINARY = {"schema": {"type": "string", "format": "binary"}}
MEDIA = {"video/mp4": BINARY}


def _upload_body(*media_types: str) -> dict[str, Any]:
    """OpenAPI for a route that reads its upload itself: a raw body, or a multipart ``file`` part."""
    form = {"type": "object", "properties": {"file": BINARY["schema"]}, "required": ["file"]}
    content = {t: BINARY for t in media_types} | {"multipart/form-data": {"schema": form}}
    return {"requestBody": {"required": True, "content": content}}


def _request_id(request: Request) -> str:
    return request.state.request_id  # set by the error middleware (deployments.http)


@serve.deployment(name="Ingress")
@serve.ingress(app)
class Ingress:
    def __init__(
        self, config: dict[str, Any], asr: DeploymentHandle, tts: DeploymentHandle, avatar: DeploymentHandle
    ) -> None:
        self.settings = settings_from(config)
        self.asr, self.tts, self.avatar = asr, tts, avatar
        app.state.retry_after_s = self.settings.serve.retry_after_s

    def check_health(self) -> None:
        # Whole-MP4 renders are muxed into a temp file: a full or read-only temp dir breaks every render.
        with tempfile.NamedTemporaryFile(prefix="health-", suffix=".part") as probe:
            probe.write(b"ok")
            probe.flush()

    @app.get("/healthz", summary="the ingress process is up")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="every stage answers", responses={503: {"description": "a stage is down"}})
    async def readyz(self) -> Response:
        names = ("asr", "tts", "avatar")
        timeout = self.settings.serve.ready_timeout_s
        answers = await asyncio.gather(
            *(asyncio.wait_for(getattr(self, n).ready.remote(), timeout) for n in names),
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

    @app.post("/v1/avatars", response_model=AvatarCreated, status_code=201,
              summary="upload a portrait: raw image/* body or multipart 'file'",
              openapi_extra=_upload_body(*IMAGE_TYPES))
    async def create_avatar(self, request: Request) -> dict[str, Any]:
        rid = _request_id(request)
        data = await read_upload(request, IMAGE_TYPES, self.settings.limits.max_upload_bytes, "image")
        return await self._guard(self.avatar.prepare_avatar.remote(data, request_id=rid))

    @app.post("/v1/asr", response_model=Transcription, summary="speech (any audio container) -> text",
              openapi_extra=_upload_body(*AUDIO_TYPES))
    async def transcribe(
        self, request: Request, language: str | None = Query(None, description="force a language")
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
        chunks = self._guarded(self.avatar.options(stream=True).render.remote(
            body.text, body.language, body.voice_id, body.avatar_id, request_id=rid
        ))
        first = await anext(chunks, None)  # bad text, language or ids fail here, before any byte
        if first is None:
            raise EmptyTextError("the text has nothing to speak")
        headers: dict[str, str] = {}
        if body.stream:
            return StreamingResponse(self._fragments(first, chunks, rid, started), media_type="video/mp4",
                                     headers=headers)
        data, audio_seconds = await self._mp4(first, chunks)
        event(log, "render_done", audio_s=round(audio_seconds, 2), bytes=len(data),
              total_ms=round((time.perf_counter() - started) * 1000))
        headers["X-Audio-Seconds"] = f"{audio_seconds:.3f}"
        return Response(data, media_type="video/mp4", headers=headers)

    # Serve installs its own plain-text handler for BackPressureError on the app, so failures of stage
    # calls are turned into ApiError (JSON, Retry-After) right where they surface.
    async def _guard(self, response: Awaitable[T]) -> T:
        try:
            return await response
        except Exception as exc:
            raise to_api_error(exc, self.settings.serve.retry_after_s) from None

    async def _guarded(self, items: AsyncIterator[T]) -> AsyncIterator[T]:
        try:
            async for item in items:
                yield item
        except Exception as exc:
            raise to_api_error(exc, self.settings.serve.retry_after_s) from None

    @staticmethod
    def _write(writer: Mp4Writer | FragmentedMp4Writer, chunk: RenderedChunk) -> None:
        writer.write_audio(chunk.pcm)  # audio first: the muxer holds video until its audio has arrived
        writer.write_frames(chunk.frames)

    def _writer_args(self, first: RenderedChunk) -> dict[str, Any]:
        size = first.frames.shape[1]
        render = self.settings.render
        return {"width": size, "height": size, "sample_rate": first.sample_rate, "fps": render.fps,
                "crf": render.crf}

    async def _mp4(self, first: RenderedChunk, chunks: AsyncIterator[RenderedChunk]) -> tuple[bytes, float]:
        """The whole MP4, written to a temp file (renamed into place only when complete), then read."""
        samples = 0
        with tempfile.TemporaryDirectory(prefix="render-") as tmp:
            path = Path(tmp) / "render.mp4"
            writer = Mp4Writer(path, **self._writer_args(first))
            try:
                chunk: RenderedChunk | None = first
                while chunk is not None:
                    await asyncio.to_thread(self._write, writer, chunk)
                    samples += chunk.pcm.size
                    chunk = await anext(chunks, None)
                await asyncio.to_thread(writer.close)
            except BaseException:
                writer.abort()
                raise
            return path.read_bytes(), samples / first.sample_rate

    async def _fragments(
        self, first: RenderedChunk, chunks: AsyncIterator[RenderedChunk], rid: str, started: float
    ) -> AsyncIterator[bytes]:
        logs.request_id.set(rid)
        sent = 0
        # Leaving the block by an exception (or a client that went away) ends the muxer unpadded.
        with FragmentedMp4Writer(**self._writer_args(first),
                                 keyframe_seconds=self.settings.render.fragment_seconds) as writer:
            try:
                chunk: RenderedChunk | None = first
                while chunk is not None:
                    await asyncio.to_thread(self._write, writer, chunk)
                    if data := writer.drain():
                        if not sent:
                            event(log, "first_fragment", ms=round((time.perf_counter() - started) * 1000))
                        sent += len(data)
                        yield data
                    chunk = await anext(chunks, None)
                tail = await asyncio.to_thread(writer.close)
            except Exception as exc:
                # The headers are gone, so the status can't change: the stream stops here, without the
                # closing mfra box that tells a client the video is whole.
                event(log, "stream_failed", level=logging.WARNING, error=to_api_error(exc, 0).code,
                      sent=sent)
                raise
        yield tail
        event(log, "render_done", streamed=True, bytes=sent + len(tail),
              total_ms=round((time.perf_counter() - started) * 1000))
