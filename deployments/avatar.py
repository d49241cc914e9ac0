"""Avatar deployment: portrait -> avatar_id; text -> encoded media, part by part.

``render`` pulls audio from the TTS deployment through a streaming handle, draws and encodes each
chunk as it arrives (``realtime_avatar.encoding``), and yields encoded parts: the first sentence is on
its way while later ones are still being synthesized, and raw frames never leave this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.common import StageDeployment, cancel_stream
from engines.motion.reference import ReferenceMotion
from realtime_avatar.encoding import Container, MediaPart
from realtime_avatar.stages import Animation, RenderedChunk


@serve.deployment(name="Avatar")
class AvatarDeployment(StageDeployment):
    needs: ClassVar[tuple[str, ...]] = ("tts",)
    stage_name: ClassVar[str] = "avatar"

    def __init__(self, config: dict[str, Any], tts: DeploymentHandle) -> None:
        self._start(config, Animation)
        self.tts = tts.options(stream=True)

    async def ready(self) -> dict[str, Any]:
        return self.status(engine=self.settings.avatar.name, default_avatar_id=self.stage.default_avatar_id)

    async def prepare_avatar(
        self, image: bytes, request_id: str = "-", motion_video: bytes | None = None
    ) -> dict[str, Any]:
        return await self.health.call(request_id, self.stage.prepare_avatar, image, motion_video,
                                      deadline=self.health.deadline())

    async def delete_avatar(self, avatar_id: str, request_id: str = "-") -> dict[str, Any]:
        return await self.health.call(request_id, self.stage.delete_avatar, avatar_id)

    async def render(
        self, text: str, language: str, voice_id: str | None, avatar_id: str | None, request_id: str = "-",
        container: Container = "fmp4", cache: bool = False,
    ) -> AsyncIterator[MediaPart]:
        """Encoded parts of ``text`` spoken and animated. ``container="mp4"``: one whole MP4 at the end.

        ``cache``: look the clip up by its content key first, and store it when complete (the persona's
        fixed lines only; the conversation decides).
        """
        deadline = self.health.deadline()
        portrait = await self.health.call(request_id, self.stage.portrait, avatar_id)  # 404 before any TTS
        reference = await self.health.call(request_id, self.stage.reference_motion, avatar_id)
        key = self.stage.clip_key(text, language, voice_id, avatar_id) if cache else None
        if key is not None and (stored := await self.health.call(request_id, self.stage.clips.get, key)):
            yield MediaPart(stored, text, language, 0.0, 0.0, 0, 0)
            return
        admitted = self.health.admit(self.stage.text_cost(text, language))
        with admitted, self.health.busy(), tempfile.TemporaryDirectory(prefix="render-") as tmp:
            path = Path(tmp) / "render.mp4" if container == "mp4" else None
            clip = bytearray()
            async for part in self._render(text, language, voice_id, portrait, container, path, request_id,
                                           deadline, reference):
                clip += part.data
                yield part
            if path is not None:  # a whole MP4: its bytes exist once the file is complete
                data = await asyncio.to_thread(path.read_bytes)
                clip = bytearray(data)
                yield MediaPart(data, "", language, 0.0, 0.0, 0, 0)
            if key is not None:
                await self.health.call(request_id, self.stage.clips.put, key, bytes(clip))

    async def idle_loop(self, avatar_id: str | None, request_id: str = "-") -> dict[str, Any]:
        """The avatar's cached idle animation for realtime calls: ``frames`` [N, size, size, 3] uint8."""
        portrait = await self.health.call(request_id, self.stage.portrait, avatar_id)
        reference = await self.health.call(request_id, self.stage.reference_motion, avatar_id)
        frames = await self.health.call(request_id, self.stage.idle_frames, portrait, reference)
        return {"frames": frames, "fps": self.settings.render.fps}

    async def speak(
        self, text: str, language: str, voice_id: str | None, avatar_id: str | None, start_frame: int,
        request_id: str = "-",
    ) -> AsyncIterator[RenderedChunk]:
        """Raw parts (audio + frames) of ``text`` for a realtime call, the motion laid on the idle loop
        from loop frame ``start_frame``; the realtime deployment encodes them for WebRTC itself."""
        portrait = await self.health.call(request_id, self.stage.portrait, avatar_id)
        reference = await self.health.call(request_id, self.stage.reference_motion, avatar_id)
        chunks = self.tts.stream.remote(text, language, voice_id, request_id=request_id)
        animator = None
        try:
            with self.health.busy():
                async for chunk in chunks:
                    if animator is None:
                        animator = self.stage.speech_animator(portrait, chunk.sample_rate, start_frame,
                                                              reference)
                    async for part in self.health.iterate(request_id, animator.feed(chunk)):
                        yield part
                if animator is not None and (tail := await self.health.call(request_id, animator.finish)):
                    yield tail
        finally:
            cancel_stream(chunks)

    async def _render(
        self, text: str, language: str, voice_id: str | None, portrait: Any, container: Container,
        path: Path | None, request_id: str, deadline: float | None = None,
        reference: ReferenceMotion | None = None,
    ) -> AsyncIterator[MediaPart]:
        chunks = self.tts.stream.remote(text, language, voice_id, request_id=request_id)
        utterance = None
        tts_ms = 0.0
        try:
            async for chunk in self.health.within(deadline, chunks):
                tts_ms += chunk.synthesis_ms
                if utterance is None:
                    utterance = self.stage.utterance(portrait, chunk.sample_rate, container, path,
                                                     part_seconds=self.settings.render.part_seconds,
                                                     reference=reference)
                async for part in self.health.iterate(request_id, utterance.feed(chunk), deadline):
                    yield part
            if utterance is not None:
                last = await self.health.call(request_id, utterance.finish, deadline=deadline)
                last.timings_ms = {"tts_ms": tts_ms, **utterance.timings_ms}
                utterance = None
                yield last
        finally:
            cancel_stream(chunks)  # a consumer that left, or a failure: TTS stops too
            if utterance is not None:  # cut short: no half-written container passes for whole
                with contextlib.suppress(Exception):
                    utterance.abort()
