"""Avatar deployment: portrait -> avatar_id; text -> frames + audio, chunk by chunk.

``render`` pulls audio from the TTS deployment through a streaming handle and renders each chunk as
it arrives, so the first sentence is on screen while later ones are still being synthesized.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.common import StageDeployment
from realtime_avatar.stages import Animation, RenderedChunk


@serve.deployment(name="Avatar")
class AvatarDeployment(StageDeployment):
    def __init__(self, config: dict[str, Any], tts: DeploymentHandle) -> None:
        self._start(config, Animation)
        self.tts = tts.options(stream=True)

    async def ready(self) -> dict[str, Any]:
        return {"engine": self.settings.avatar.name, "default_avatar_id": self.stage.default_avatar_id}

    async def prepare_avatar(self, image: bytes, request_id: str = "-") -> dict[str, Any]:
        return await self.health.call(request_id, self.stage.prepare_avatar, image)

    async def render(
        self, text: str, language: str, voice_id: str | None, avatar_id: str | None, request_id: str = "-"
    ) -> AsyncIterator[RenderedChunk]:
        portrait = await self.health.call(request_id, self.stage.portrait, avatar_id)  # 404 before any TTS
        animator, part_seconds = None, self.settings.render.part_seconds
        async for chunk in self.tts.stream.remote(text, language, voice_id, request_id=request_id):
            if animator is None:
                animator = self.stage.animator(portrait, chunk.sample_rate, part_seconds)
            async for part in self.health.iterate(request_id, animator.feed(chunk)):
                yield part
        if animator is not None:
            tail = await self.health.call(request_id, animator.finish)
            if tail is not None:
                yield tail
