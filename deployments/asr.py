"""ASR deployment: audio bytes -> transcript dict."""

from __future__ import annotations

from typing import Any, ClassVar

from ray import serve

from deployments.common import StageDeployment
from realtime_avatar.stages import SpeechRecognition


@serve.deployment(name="ASR")
class ASRDeployment(StageDeployment):
    stage_name: ClassVar[str] = "asr"

    def __init__(self, config: dict[str, Any]) -> None:
        self._start(config, SpeechRecognition)

    async def ready(self) -> dict[str, str]:
        return self.status(engine=self.settings.asr.name)

    async def transcribe(
        self, audio: bytes, language: str | None, request_id: str = "-", fast: bool = False
    ) -> dict[str, Any]:
        """Decode, admit by the audio's length, then transcribe a segment at a time (a deadline stops it
        between segments). ``fast``: a realtime turn (greedy, no word timestamps)."""
        deadline = self.health.deadline()
        pcm, sample_rate, language = await self.health.call(request_id, self.stage.decode, audio, language,
                                                            deadline=deadline)
        with self.health.admit(self.stage.audio_cost(pcm, sample_rate)):
            steps = await self.health.call(request_id, self.stage.transcribe_steps, pcm, sample_rate,
                                           language, fast, deadline=deadline)
            transcript: dict[str, Any] | None = None
            async for step in self.health.iterate(request_id, steps, deadline):
                transcript = step  # None for each decoded segment; the last step is the whole transcript
            assert transcript is not None
            return transcript
