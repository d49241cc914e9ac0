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
from realtime_avatar.encoding import Container, MediaPart
from realtime_avatar.stages import Animation


@serve.deployment(name="Avatar")
class AvatarDeployment(StageDeployment):
    needs: ClassVar[tuple[str, ...]] = ("tts",)

    def __init__(self, config: dict[str, Any], tts: DeploymentHandle) -> None:
        self._start(config, Animation)
        self.tts = tts.options(stream=True)

    async def ready(self) -> dict[str, Any]:
        return self.status(engine=self.settings.avatar.name, default_avatar_id=self.stage.default_avatar_id)

    async def prepare_avatar(self, image: bytes, request_id: str = "-") -> dict[str, Any]:
        return await self.health.call(request_id, self.stage.prepare_avatar, image)

    async def render(
        self, text: str, language: str, voice_id: str | None, avatar_id: str | None, request_id: str = "-",
        container: Container = "fmp4", cache: bool = False,
    ) -> AsyncIterator[MediaPart]:
        """Encoded parts of ``text`` spoken and animated. ``container="mp4"``: one whole MP4 at the end.

        ``cache``: look the clip up by its content key first, and store it when complete (the persona's
        fixed lines only; the conversation decides).
        """
        portrait = await self.health.call(request_id, self.stage.portrait, avatar_id)  # 404 before any TTS
        key = self.stage.clip_key(text, language, voice_id, avatar_id) if cache else None
        if key is not None and (stored := await self.health.call(request_id, self.stage.clips.get, key)):
            yield MediaPart(stored, text, language, 0.0, 0.0, 0, 0)
            return
        with self.health.busy(), tempfile.TemporaryDirectory(prefix="render-") as tmp:
            path = Path(tmp) / "render.mp4" if container == "mp4" else None
            clip = bytearray()
            async for part in self._render(text, language, voice_id, portrait, container, path, request_id):
                clip += part.data
                yield part
            if path is not None:  # a whole MP4: its bytes exist once the file is complete
                data = await asyncio.to_thread(path.read_bytes)
                clip = bytearray(data)
                yield MediaPart(data, "", language, 0.0, 0.0, 0, 0)
            if key is not None:
                await self.health.call(request_id, self.stage.clips.put, key, bytes(clip))

    async def _render(
        self, text: str, language: str, voice_id: str | None, portrait: Any, container: Container,
        path: Path | None, request_id: str,
    ) -> AsyncIterator[MediaPart]:
        chunks = self.tts.stream.remote(text, language, voice_id, request_id=request_id)
        utterance = None
        try:
            async for chunk in chunks:
                if utterance is None:
                    utterance = self.stage.utterance(portrait, chunk.sample_rate, container, path,
                                                     part_seconds=self.settings.render.part_seconds)
                async for part in self.health.iterate(request_id, utterance.feed(chunk)):
                    yield part
            if utterance is not None:
                yield await self.health.call(request_id, utterance.finish)
                utterance = None
        finally:
            cancel_stream(chunks)  # a consumer that left, or a failure: TTS stops too
            if utterance is not None:  # cut short: no half-written container passes for whole
                with contextlib.suppress(Exception):
                    utterance.abort()
