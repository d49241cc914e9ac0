"""LLM deployment (llama.cpp or an OpenAI-compatible server behind the engine): chat -> text deltas.

The l4 profile serves vLLM through ``ray.serve.llm`` instead (``graphs/vllm_stage.py``), behind an
adapter with these same three methods, so the conversation never knows which one it talks to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

from ray import serve

from deployments.common import StageDeployment
from realtime_avatar.stages import LanguageModel


@serve.deployment(name="LLM")
class LLMDeployment(StageDeployment):
    stage_name: ClassVar[str] = "llm"

    def __init__(self, config: dict[str, Any]) -> None:
        self._start(config, LanguageModel)

    async def ready(self) -> dict[str, Any]:
        return self.status(engine=self.settings.llm.name, context_tokens=self.stage.context_tokens)

    async def count_tokens(self, text: str) -> int:
        return self.stage.count_tokens(text)

    async def stream_chat(
        self, messages: list[dict[str, str]], params: dict[str, Any], request_id: str = "-"
    ) -> AsyncIterator[str | dict[str, Any]]:
        """Text deltas, then one ``{"finish_reason": ...}`` ("stop", "length", or None if unknown)."""
        deadline = self.health.deadline()
        stream = await self.health.call(request_id, self.stage.stream_chat, messages, params,
                                        deadline=deadline)
        async for delta in self.health.iterate(request_id, stream, deadline):
            yield delta
        yield {"finish_reason": getattr(stream, "finish_reason", None)}
