"""The owner's persona (``persona.yaml``): who the avatar is, and the system prompt built from it."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from engines.errors import InputError
from engines.tts.text import LANGUAGES

LANGUAGE_NAMES = {"en": "English", "zh": "Mandarin Chinese (simplified characters)", "es": "Spanish"}
# Said in the reply language itself: small models follow an instruction in the language they should use.
IN_LANGUAGE = {
    "en": "Always answer in English.",
    "zh": "请始终用简体中文回答。",
    "es": "Responde siempre en español.",
}


class Decline(BaseModel):
    topics: list[str] = Field(default_factory=list)
    reply: dict[str, str] = Field(default_factory=dict)


class Persona(BaseModel):
    name: str = Field(min_length=1, max_length=80)
    bio: str = Field(default="", max_length=2000)
    facts: list[str] = Field(default_factory=list, max_length=40)
    style: str = Field(default="", max_length=500)
    languages: list[str] = Field(default_factory=lambda: list(LANGUAGES))
    greetings: dict[str, str] = Field(default_factory=dict)
    decline: Decline = Field(default_factory=Decline)

    @model_validator(mode="after")
    def _known_languages(self) -> Persona:
        unknown = sorted({*self.languages, *self.greetings} - set(LANGUAGES))
        if unknown:
            raise ValueError(f"unsupported languages {unknown}; supported: {', '.join(LANGUAGES)}")
        return self

    def greeting(self, language: str) -> str:
        return self.greetings.get(language) or self.greetings.get("en") or f"Hi, I'm {self.name}."

    def system_prompt(self, language: str, max_sentences: int) -> str:
        """Short on purpose: on a 2-core CPU every prompt token is paid for (once: its KV cache is kept)."""
        lines = [f"You are {self.name}. {self.bio}".strip()]
        lines += [f"- {fact}" for fact in self.facts]
        if self.style:
            lines.append(f"Style: {self.style}")
        if self.decline.topics:
            lines.append(f"Politely decline to discuss: {', '.join(self.decline.topics)}.")
        lines.append(f"Reply in {LANGUAGE_NAMES[language]}, in at most {max_sentences} short spoken "
                     f"sentences. {IN_LANGUAGE[language]}")
        return "\n".join(lines)


def load_persona(path: str | Path) -> Persona:
    path = Path(path).expanduser()
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return Persona.model_validate(document)
    except FileNotFoundError:
        raise InputError(f"persona file not found: {path}", code="persona_not_found") from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise InputError(f"persona file {path} is invalid: {exc}", code="invalid_persona") from None
