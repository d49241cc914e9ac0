"""TTS deployment: reference audio -> voice_id; text -> a stream of timed audio chunks."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, ClassVar

from ray import serve

from deployments.common import StageDeployment
from engines.tts.base import AudioChunk
from realtime_avatar.stages import SpeechSynthesis


@serve.deployment(name="TTS")
class TTSDeployment(StageDeployment):
    stage_name: ClassVar[str] = "tts"

    def __init__(self, config: dict[str, Any]) -> None:
        self._start(config, SpeechSynthesis)

    async def ready(self) -> dict[str, Any]:
        return self.status(engine=self.settings.tts.name, sample_rate=self.stage.sample_rate)

    async def max_chars(self, language: str) -> int:
        return self.stage.max_chars(language)

    async def prepare_voice(self, audio: bytes, request_id: str = "-") -> dict[str, Any]:
        return await self.health.call(request_id, self.stage.prepare_voice, audio,
                                      deadline=self.health.deadline())

    async def delete_voice(self, voice_id: str, request_id: str = "-") -> dict[str, Any]:
        return await self.health.call(request_id, self.stage.delete_voice, voice_id)

    async def stream(
        self, text: str, language: str, voice_id: str | None, request_id: str = "-"
    ) -> AsyncIterator[AudioChunk]:
        deadline = self.health.deadline()
        with self.health.admit(self.stage.text_cost(text, language)):
            started = time.perf_counter()  # the first chunk pays the text planning and the voice's load
            chunks = await self.health.call(request_id, self.stage.stream, text, language, voice_id,
                                            deadline=deadline)
            async for chunk in self.health.iterate(request_id, chunks, deadline):
                # Timed here, not by the consumer: a Serve stream runs ahead of its reader, so the reader's
                # wait is not the synthesis time. The time suspended at ``yield`` is not counted.
                yield replace(chunk, synthesis_ms=(time.perf_counter() - started) * 1000)
                started = time.perf_counter()
