"""Conversation sessions as plain Python: the session table, the prompt's token budget, and the reply
planner that turns LLM deltas into sentences to speak. The Serve deployment
(``deployments/conversation.py``) drives these; nothing here touches Ray or a model.

Sessions live in memory only. Nothing of a conversation is written anywhere unless the owner sets
``chat.record_transcripts`` (then one JSON line per turn goes to ``chat.transcripts_dir``).
"""

from __future__ import annotations

import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engines.errors import InputError
from engines.llm.base import Message
from engines.tts.text import (
    DEFAULT_CLAUSE_CHARS,
    ClauseAggregator,
    is_speakable,
    normalize_language,
    normalize_text,
)
from realtime_avatar.config import ChatSettings

SESSION_ID_BYTES = 16
_FORGOTTEN_IDS = 4096  # ended/expired ids remembered for a 410 (beyond that they read as unknown: 404)


class SessionNotFoundError(InputError):
    code = "session_not_found"
    status = 404


class SessionExpiredError(InputError):
    code = "session_expired"
    status = 410


class MessageTooLongError(InputError):
    code = "message_too_long"
    status = 413


class CapacityError(RuntimeError):
    """The server is at a configured cap (sessions); the API answers 503 with Retry-After."""

    code = "too_many_sessions"
    status = 503


@dataclass
class Turn:
    user: str
    assistant: str
    tokens: int  # both messages, as the LLM counts them


@dataclass
class Session:
    session_id: str
    language: str | None  # fixed for the session, or None: each reply follows its message's language
    voice_id: str | None
    avatar_id: str | None
    created: float
    last_active: float
    turns: list[Turn] = field(default_factory=list)
    persona: Any = None  # a session's own persona, where the owner allows it; else the server's
    replying: Any = None  # the reply in flight (an asyncio.Task in the deployment), cancelled by a new turn

    def public(self, settings: ChatSettings, now: float) -> dict[str, Any]:
        return {
            "session_id": self.session_id, "language": self.language or "auto", "turns": len(self.turns),
            "voice_id": self.voice_id, "avatar_id": self.avatar_id,
            "expires_in_s": round(min(settings.idle_ttl_s - (now - self.last_active),
                                      settings.max_session_minutes * 60 - (now - self.created)), 1),
        }


class SessionTable:
    """Sessions by id, with the idle TTL, the session-length cap and the concurrent-session cap."""

    def __init__(self, settings: ChatSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings, self.clock = settings, clock
        self._sessions: dict[str, Session] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def live(self) -> list[Session]:
        return list(self._sessions.values())

    def create(self, language: str | None, voice_id: str | None, avatar_id: str | None) -> Session:
        self.sweep()
        if len(self._sessions) >= self.settings.max_sessions:
            raise CapacityError(f"{len(self._sessions)} conversations are open, the most this server holds; "
                                "retry later")
        code = normalize_language(language)
        now = self.clock()
        session = Session(secrets.token_hex(SESSION_ID_BYTES), None if code == "auto" else code,
                          voice_id, avatar_id, now, now)
        self._sessions[session.session_id] = session
        return session

    def get(self, session_id: str) -> Session:
        """The live session (its idle clock restarts), or 404 (never existed) / 410 (expired or ended)."""
        self.sweep()
        session = self._sessions.get(session_id) if isinstance(session_id, str) else None
        if session is None:
            if isinstance(session_id, str) and session_id in self._ended:
                raise SessionExpiredError(f"conversation {session_id} has ended; start a new one")
            raise SessionNotFoundError(f"no conversation with id {str(session_id)[:64]!r}")
        if len(session.turns) >= self.settings.max_turns:
            self.end(session_id)
            raise SessionExpiredError(
                f"conversation {session_id} reached its {self.settings.max_turns} turns; start a new one")
        session.last_active = self.clock()
        return session

    def end(self, session_id: str) -> Session | None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            self._ended[session_id] = None
            while len(self._ended) > _FORGOTTEN_IDS:
                self._ended.popitem(last=False)
        return session

    def sweep(self) -> list[Session]:
        """End the sessions past their idle TTL or their length cap; return them (to cancel replies)."""
        now = self.clock()
        cap_s = self.settings.max_session_minutes * 60
        gone = [s for s in self._sessions.values()
                if now - s.last_active > self.settings.idle_ttl_s or now - s.created > cap_s]
        for session in gone:
            self.end(session.session_id)
        return gone


def check_message(text: Any, settings: ChatSettings) -> str:
    text = normalize_text(text)  # hostile text (surrogates, controls, bidi, zero-width): as TTS takes it
    if not isinstance(text, str) or not text.strip() or not is_speakable(text):
        raise InputError("the message is empty", code="empty_message")
    text = text.strip()
    if len(text) > settings.max_message_chars:
        raise MessageTooLongError(f"the message has {len(text)} characters; the limit is "
                                  f"{settings.max_message_chars}")
    return text


def build_messages(
    system: str, system_tokens: int, turns: Sequence[Turn], user: str, user_tokens: int, budget: int
) -> tuple[list[Message], int]:
    """System prompt + as many of the latest turns as fit in ``budget`` tokens + the new message.

    Token counts come from the LLM's own tokenizer. Returns the messages and how many old turns were
    left out (the oldest go first).
    """
    used = system_tokens + user_tokens + 12  # a few tokens per message for the chat template
    kept: list[Turn] = []
    for turn in reversed(turns):
        if used + turn.tokens > budget:
            break
        kept.append(turn)
        used += turn.tokens
    messages: list[Message] = [{"role": "system", "content": system}]
    for turn in reversed(kept):
        messages += [{"role": "user", "content": turn.user}, {"role": "assistant", "content": turn.assistant}]
    messages.append({"role": "user", "content": user})
    return messages, len(turns) - len(kept)


class ReplyPlanner:
    """LLM deltas -> the sentences to speak, at most ``max_sentences`` and ``max_chars`` in all.

    ``full`` says when the reply has all it may say (the LLM can be stopped then). What the LLM wrote
    past that is not spoken, and the reply text returned to the client is what was spoken.
    """

    def __init__(
        self, language: str, max_sentences: int, max_chars: int, first_clause_chars: int = 0
    ) -> None:
        self.language, self.max_sentences, self.max_chars = language, max_sentences, max_chars
        self._clause_chars = DEFAULT_CLAUSE_CHARS.get(language, DEFAULT_CLAUSE_CHARS["en"])
        # The first clip is what the visitor waits for: let the reply's first clause go on its own as
        # soon as a comma closes it (the rest are cut at commas only when a sentence runs long).
        self._aggregator = ClauseAggregator(first_clause_chars or self._clause_chars)
        self.spoken: list[str] = []
        self._sentence_ends = 0

    @property
    def full(self) -> bool:
        return self._sentence_ends >= self.max_sentences or self._chars >= self.max_chars

    @property
    def _chars(self) -> int:
        return sum(len(s) for s in self.spoken)

    def feed(self, delta: str) -> list[str]:
        return self._accept(self._aggregator.feed(delta)) if not self.full else []

    def flush(self, cut: bool) -> list[str]:
        """The rest: all of it after a normal end; up to the last whole clause after a cut-off reply."""
        return self._accept(self._aggregator.flush(cut=cut)) if not self.full else []

    def _accept(self, segments: list[str]) -> list[str]:
        accepted = []
        for segment in segments:
            if self.full or self._chars + len(segment) > self.max_chars:
                break
            accepted.append(segment)
            self.spoken.append(segment)
            self._aggregator.max_clause_chars = self._clause_chars
            if segment.rstrip()[-1:] in ".!?…。！？" or segment.rstrip().endswith(("?\"", "!\"")):
                self._sentence_ends += 1
        return accepted

    def text(self) -> str:
        joiner = "" if self.language == "zh" else " "
        return joiner.join(self.spoken)


class TranscriptLog:
    """One JSON line per turn in ``<dir>/<session id>.jsonl``, only when the owner turned it on."""

    def __init__(self, settings: ChatSettings) -> None:
        self.enabled = settings.record_transcripts
        self.directory = Path(settings.transcripts_dir).expanduser()

    def write(self, session_id: str, user: str, assistant: str, language: str) -> None:
        if not self.enabled:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"time": time.time(), "language": language, "user": user, "assistant": assistant},
                          ensure_ascii=False)
        with (self.directory / f"{session_id}.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
