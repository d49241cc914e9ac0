"""TTS deployment: reference audio -> voice_id; text -> a stream of audio chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from deployments.common import StageHealth, settings_from
from engines.tts.base import AudioChunk
from realtime_avatar.stages import SpeechSynthesis
from realtime_avatar.store import build_store


@serve.deployment(name="TTS")
class TTSDeployment:
    def __init__(self, config: dict[str, Any]) -> None:
        settings = settings_from(config)
        self.stage = SpeechSynthesis(settings, build_store(settings.store, settings.cache_path))
        self.stage.load()
        self.health = StageHealth(settings.serve.unhealthy_after_failures)

    async def ready(self) -> dict[str, Any]:
        return {"engine": self.stage.settings.tts.name, "sample_rate": self.stage.sample_rate}

    async def prepare_voice(self, audio: bytes, request_id: str = "-") -> dict[str, Any]:
        return await self.health.call(request_id, self.stage.prepare_voice, audio)

    async def stream(
        self, text: str, language: str, voice_id: str | None, request_id: str = "-"
    ) -> AsyncIterator[AudioChunk]:
        chunks = await self.health.call(request_id, self.stage.stream, text, language, voice_id)
        async for chunk in self.health.iterate(request_id, chunks):
            yield chunk

    def check_health(self) -> None:
        self.health.check()
