"""ASR deployment: audio bytes -> transcript dict."""

from __future__ import annotations

from typing import Any

from ray import serve

from deployments.common import StageDeployment
from realtime_avatar.stages import SpeechRecognition


@serve.deployment(name="ASR")
class ASRDeployment(StageDeployment):
    def __init__(self, config: dict[str, Any]) -> None:
        self._start(config, SpeechRecognition)

    async def ready(self) -> dict[str, str]:
        return self.status(engine=self.settings.asr.name)

    async def transcribe(self, audio: bytes, language: str | None, request_id: str = "-") -> dict[str, Any]:
        return await self.health.call(request_id, self.stage.transcribe, audio, language)
