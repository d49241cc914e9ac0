"""Engine lookup by config name: a new model is a new module plus one entry here or a dotted path.

Config names an engine either by alias (below) or directly as ``package.module:ClassName``; the class
is built with the config's ``options`` as keyword arguments. Modules import lazily, so a profile
never imports the heavy libraries of engines it does not use.
"""

from __future__ import annotations

import importlib
from typing import Any

ALIASES: dict[str, dict[str, str]] = {
    "asr": {"faster-whisper": "engines.asr.whisper:WhisperASR"},
    "tts": {"bundled": "engines.tts.bundled:BundledTTS", "xtts-v2": "engines.tts.xtts:XTTSEngine"},
    "motion": {
        "audio-driven": "engines.motion.generator:MotionGenerator",
        "visemes": "engines.motion.visemes:VisemeMotionGenerator",
    },
    "vad": {"silero": "engines.vad.silero:SileroVAD"},
    "avatar": {
        "lite": "engines.avatar.lite:LiteRenderer",
        "liveportrait": "engines.avatar.liveportrait.engine:LivePortraitRenderer",
    },
    "llm": {
        "llama-cpp": "engines.llm.llama_cpp:LlamaCppLLM",
        "openai-compatible": "engines.llm.openai_compatible:OpenAICompatibleLLM",
    },
}


def resolve(kind: str, name: str) -> type:
    target = ALIASES.get(kind, {}).get(name, name)
    if ":" not in target:
        known = ", ".join(sorted(ALIASES.get(kind, {}))) or "none"
        raise ValueError(f"unknown {kind} engine {name!r}; known: {known}, or give 'module:Class'")
    module_name, class_name = target.split(":", 1)
    return getattr(importlib.import_module(module_name), class_name)


def build(kind: str, name: str, options: dict[str, Any] | None = None) -> Any:
    return resolve(kind, name)(**(options or {}))
