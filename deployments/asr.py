"""ASR deployment: audio bytes -> transcript dict."""

from __future__ import annotations

from typing import Any

from ray import serve

from deployments.common import StageHealth, settings_from
from realtime_avatar.stages import SpeechRecognition


@serve.deployment(name="ASR")
class ASRDeployment:
    def __init__(self, config: dict[str, Any]) -> None:
        settings = settings_from(config)
        self.stage = SpeechRecognition(settings)
        self.stage.load()
        self.health = StageHealth(settings.serve.unhealthy_after_failures)

    async def ready(self) -> dict[str, str]:
        return {"engine": self.stage.settings.asr.name}

    async def transcribe(self, audio: bytes, language: str | None, request_id: str = "-") -> dict[str, Any]:
        return await self.health.call(request_id, self.stage.transcribe, audio, language)

    def check_health(self) -> None:
        self.health.check()
