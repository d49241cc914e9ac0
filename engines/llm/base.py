"""The LLM engine contract: chat messages in, a stream of text deltas out, and a token counter.

``stream_chat`` returns a plain (blocking) iterator; a caller that stops early calls ``close()`` on it,
which must stop generation promptly (a Serve deployment drives it off the event loop, one delta at a
time, and closes it in ``finally`` when the client goes away or a new user turn arrives).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import TypedDict

from engines.errors import ModelUnavailableError, TextTooLongError


class Message(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


class LLMUnavailableError(ModelUnavailableError):
    """The model cannot answer now: not installed, server down or refusing, timed out, or busy."""

    code = "llm_unavailable"


class ContextTooLongError(TextTooLongError):
    """The prompt does not fit the model's context window (trim the conversation and retry)."""

    code = "context_too_long"


class Finish:
    """Where a stream's generator notes why the reply ended: "stop", "length", or None (cut, unknown)."""

    reason: str | None = None


class ChatStream(Iterator[str]):
    """What ``stream_chat`` returns: the deltas, ``close()``, and ``finish_reason`` once the reply ended.

    The generator gets a :class:`Finish`, not the stream itself: no reference cycle, so a stream that
    is dropped unclosed is finalized at once (and frees what it holds, e.g. the engine's lock).
    """

    def __init__(self, generate: Callable[[Finish], Iterator[str]]) -> None:
        self._finish = Finish()
        self._deltas = generate(self._finish)

    @property
    def finish_reason(self) -> str | None:
        return self._finish.reason

    def __next__(self) -> str:
        return next(self._deltas)

    def close(self) -> None:
        close = getattr(self._deltas, "close", None)
        if close is not None:
            close()


class LLMEngine(ABC):
    name: str = "llm"
    context_tokens: int = 2048  # the model's context window as configured (the session budget's ceiling)

    @abstractmethod
    def load(self) -> None:
        """Load the model now (a deployment's constructor), not on the first request."""

    @abstractmethod
    def stream_chat(self, messages: Sequence[Message], **params: object) -> Iterator[str]:
        """Text deltas of the assistant's reply. ``params``: max_tokens, temperature, top_p, stop, seed.

        The engines here return a :class:`ChatStream` (its ``finish_reason`` says whether the reply
        ended or hit ``max_tokens``).

        Raises :class:`engines.errors.ModelUnavailableError` (or a subclass) when the model or the
        server behind it cannot answer, before the first delta where possible.
        """

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in this model's vocabulary (for the conversation's context budget)."""

    def check_health(self) -> None:
        """Raise :class:`LLMUnavailableError` when the engine could not answer now (a health check)."""
        return None  # an in-process model that loaded can always answer

    def count_messages(self, messages: Sequence[Message]) -> int:
        """Tokens a prompt of ``messages`` takes, with a few per message for the chat template."""
        return sum(self.count_tokens(m["content"]) + 4 for m in messages) + 2
