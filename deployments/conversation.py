"""Conversation deployment: the sessions, and one reply at a time per session, streamed as events.

It is the only stateful deployment (one replica: sessions live in its memory, so any number of
ingress replicas see the same ones; it only orchestrates, the stages do the work). A reply runs as a
task: LLM deltas -> sentences (``ReplyPlanner``) -> one avatar render per sentence, so the first
sentence is drawn while the LLM still writes the next. A new message in the session cancels the
reply in flight; a client that goes away cancels it too; either way the LLM, TTS and avatar streams
are cancelled in ``finally`` and their replicas freed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from pydantic import ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.common import cancel_stream, settings_from
from engines.errors import InputError
from engines.llm.base import LLMUnavailableError
from engines.tts.text import LanguageDetector, normalize_language
from realtime_avatar import logs
from realtime_avatar.conversation import (
    MessageTooLongError,
    ReplyPlanner,
    Session,
    SessionTable,
    TranscriptLog,
    Turn,
    build_messages,
    check_message,
)
from realtime_avatar.encoding import FMP4_MIME
from realtime_avatar.logs import event
from realtime_avatar.persona import Persona, load_persona

log = logging.getLogger("realtime_avatar.conversation")
_END = object()


@serve.deployment(name="Conversation")
class ConversationDeployment:
    needs: ClassVar[tuple[str, ...]] = ("llm", "tts", "avatar")

    def __init__(
        self, config: dict[str, Any], llm: DeploymentHandle, tts: DeploymentHandle, avatar: DeploymentHandle
    ) -> None:
        self.settings = settings_from(config)
        self.chat_settings = self.settings.chat
        self.persona: Persona = load_persona(self.chat_settings.persona)
        self.sessions = SessionTable(self.chat_settings)
        self.transcripts = TranscriptLog(self.chat_settings)
        self.detector = LanguageDetector()
        self.llm, self.tts, self.avatar = llm, tts, avatar.options(stream=True)
        self._system_tokens: dict[str, int] = {}

    async def ready(self) -> dict[str, Any]:
        replying = sum(1 for s in self.sessions.live() if _running(s.replying))
        return {"sessions": len(self.sessions), "max_sessions": self.chat_settings.max_sessions,
                "in_flight": replying, "persona": self.persona.name}

    def check_health(self) -> None:
        for session in self.sessions.sweep():  # expired sessions: their replies stop too
            _cancel(session.replying)

    # --- sessions ----------------------------------------------------------------------------------------

    async def create_session(
        self, language: str | None, voice_id: str | None, avatar_id: str | None,
        persona: dict[str, Any] | None = None, request_id: str = "-",
    ) -> dict[str, Any]:
        logs.request_id.set(request_id)
        for gone in self.sessions.sweep():
            _cancel(gone.replying)
        own = None
        if persona is not None:  # the ingress refuses this unless the owner allows overrides
            try:
                own = Persona.model_validate(persona)
            except ValidationError as exc:
                raise InputError(f"invalid persona: {exc}", code="invalid_persona") from None
        session = self.sessions.create(language, voice_id, avatar_id)
        session.persona = own
        info = session.public(self.chat_settings, time.monotonic())
        info["greeting"] = self._persona(session).greeting(session.language or "en")
        event(log, "session_started", session_id=session.session_id, language=info["language"])
        return info

    async def session_info(self, session_id: str) -> dict[str, Any]:
        session = self.sessions.get(session_id)
        return session.public(self.chat_settings, time.monotonic())

    async def end_session(self, session_id: str, request_id: str = "-") -> dict[str, Any]:
        logs.request_id.set(request_id)
        session = self.sessions.get(session_id)
        _cancel(session.replying)
        self.sessions.end(session_id)
        event(log, "session_ended", session_id=session_id, turns=len(session.turns))
        return {"session_id": session_id, "ended": True, "turns": len(session.turns)}

    # --- replies -----------------------------------------------------------------------------------------

    async def chat(
        self, session_id: str, text: str, language: str | None = "auto", request_id: str = "-"
    ) -> AsyncIterator[dict[str, Any]]:
        """Events of one reply (see the API docs). Errors before the first event are raised (the API
        answers with their status); later ones arrive as an ``error`` event that ends the stream."""
        logs.request_id.set(request_id)
        session = self.sessions.get(session_id)
        message = check_message(text, self.chat_settings)
        reply_language = self._reply_language(session, message, language)
        async for item in self._run(session, self._reply(session, message, reply_language, request_id)):
            yield item

    async def talk(
        self, session_id: str, text: str, language: str | None = "auto", request_id: str = "-"
    ) -> AsyncIterator[dict[str, Any]]:
        """A reply for a realtime call: the events of ``chat`` with a ``sentence`` event for each sentence
        in place of its clip (the realtime deployment renders and streams the media itself)."""
        logs.request_id.set(request_id)
        session = self.sessions.get(session_id)
        message = check_message(text, self.chat_settings)
        reply_language = self._reply_language(session, message, language)
        producer = self._reply(session, message, reply_language, request_id, render=False)
        async for item in self._run(session, producer):
            yield item

    async def greeting(self, session_id: str, request_id: str = "-") -> AsyncIterator[dict[str, Any]]:
        """The persona's greeting in the session's language: a fixed line, so its clip is cached."""
        logs.request_id.set(request_id)
        session = self.sessions.get(session_id)
        language = session.language or "en"
        text = self._persona(session).greeting(language)
        async for item in self._run(session, self._fixed_line(session, text, language, request_id)):
            yield item

    async def _run(self, session: Session, producer: Any) -> AsyncIterator[dict[str, Any]]:
        """Run ``producer(queue)`` as the session's reply task (replacing any in flight) and relay it."""
        _cancel(session.replying)  # a new turn replaces the reply in flight
        queue: asyncio.Queue[Any] = asyncio.Queue()
        task = asyncio.create_task(producer(queue))
        session.replying = task
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            _cancel(task)  # the client went away (or the stream ended): stop the work it asked for

    def _reply_language(self, session: Session, message: str, language: str | None) -> str:
        code = normalize_language(language)  # an unsupported code is a 400 even in a fixed session
        if session.language:
            return session.language
        if code != "auto":
            return code
        detected, confidence = self.detector.detect(message)
        return detected if detected and confidence >= 0.5 else "en"

    def _reply(
        self, session: Session, message: str, language: str, request_id: str, render: bool = True
    ) -> Any:
        async def produce(queue: asyncio.Queue[Any]) -> None:
            await self._produce(queue, session, message, language, request_id, render)
        return produce

    def _fixed_line(self, session: Session, text: str, language: str, request_id: str) -> Any:
        async def produce(queue: asyncio.Queue[Any]) -> None:
            started = time.perf_counter()
            try:
                queue.put_nowait(_start_event(session, language, cached_line=True))
                queue.put_nowait({"type": "text", "delta": text})
                clips = asyncio.Queue[Any]()
                planner = ReplyPlanner(language, max_sentences=len(text), max_chars=len(text))
                for sentence in [*planner.feed(text), *planner.flush(cut=False)]:
                    clips.put_nowait(sentence)  # a clip per sentence, each cached on its own
                clips.put_nowait(None)
                count, _ = await self._speak(clips, queue, session, language, request_id, cache=True)
                queue.put_nowait({"type": "done", "text": text, "clips": count, "cut": False,
                                  "timings_ms": {"total": _ms(started)}})
            except asyncio.CancelledError:
                queue.put_nowait({"type": "cancelled", "reason": "new_turn"})
                raise
            except Exception as exc:
                queue.put_nowait(exc)
            finally:
                queue.put_nowait(_END)
        return produce

    async def _produce(
        self, queue: asyncio.Queue[Any], session: Session, message: str, language: str, request_id: str,
        render: bool = True,
    ) -> None:
        logs.request_id.set(request_id)
        started = time.perf_counter()
        timings: dict[str, float] = {}
        planner = ReplyPlanner(language, self.chat_settings.reply_max_sentences,
                               await self._max_chars(language), self.chat_settings.first_clause_chars)
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        speaking: asyncio.Task[tuple[int, float]] | None = None
        stream = None
        stages: dict[str, float] = {}  # server time per stage, summed over the reply's clips
        try:
            messages, user_tokens, dropped = await self._messages(session, message, language)
            params = {"max_tokens": self.chat_settings.reply_max_tokens,
                      "temperature": self.chat_settings.temperature, "top_p": self.chat_settings.top_p}
            llm_started = time.perf_counter()
            stream = self.llm.options(stream=True).stream_chat.remote(messages, params, request_id=request_id)
            speaking = asyncio.create_task(
                self._speak(sentences, queue, session, language, request_id, timings=timings, started=started,
                            stages=stages)
                if render else _forward(sentences, queue, language))
            finish, failure = await self._drain_llm(stream, planner, sentences, queue, session, language,
                                                    timings, started)
            # The LLM stream from the call to its last delta (or to the cut once the reply is full).
            stages["llm"] = _ms(llm_started)
            for sentence in planner.flush(cut=finish == "length" or failure is not None):
                sentences.put_nowait(sentence)
            sentences.put_nowait(None)
            clips, _ = await speaking
            reply = planner.text()
            # The turn is history before the client hears "done": its next message may come at once.
            tokens = user_tokens + (await self.llm.count_tokens.remote(reply) if reply else 0)
            session.turns.append(Turn(message, reply, tokens))
            self.transcripts.write(session.session_id, message, reply, language)
            if failure is not None:
                queue.put_nowait(_error_event(failure))
            queue.put_nowait({"type": "done", "text": reply, "clips": clips,
                              "cut": finish == "length" or failure is not None,
                              "dropped_turns": dropped, "timings_ms": {**timings, "total": _ms(started)},
                              "stages_ms": {key: round(value, 1) for key, value in stages.items()}})
            event(log, "reply_done", session_id=session.session_id, language=language, clips=clips,
                  finish=finish, **{k: round(v) for k, v in timings.items()})
        except asyncio.CancelledError:
            queue.put_nowait({"type": "cancelled", "reason": "new_turn"})
            raise
        except Exception as exc:
            # Before the first event the API can still answer with a status; after it, in band.
            queue.put_nowait(_error_event(exc) if "first_text" in timings else exc)
        finally:
            cancel_stream(stream)
            if speaking is not None and not speaking.done():
                speaking.cancel()
                with contextlib.suppress(BaseException):
                    await speaking
            queue.put_nowait(_END)

    async def _drain_llm(
        self, stream: Any, planner: ReplyPlanner, sentences: asyncio.Queue[str | None],
        queue: asyncio.Queue[Any], session: Session, language: str, timings: dict[str, float], started: float,
    ) -> tuple[str | None, BaseException | None]:
        """Relay deltas and feed the planner. Returns (finish reason, a failure after the first delta).

        A failure or timeout before the first delta is raised: the client gets a 503, not a hang.
        """
        timeout = self.chat_settings.llm_timeout_s
        iterator = stream.__aiter__()
        finish: str | None = None
        while True:
            try:
                item = await asyncio.wait_for(anext(iterator), timeout)
            except StopAsyncIteration:
                return finish, None
            except Exception as exc:
                failure = (LLMUnavailableError(f"the language model sent nothing for {timeout:g} s")
                           if isinstance(exc, TimeoutError) else exc)
                if "first_text" not in timings:
                    raise failure from None
                return "error", failure
            if isinstance(item, dict):
                finish = item.get("finish_reason")
                continue
            if "first_text" not in timings:
                timings["first_text"] = _ms(started)
                queue.put_nowait(_start_event(session, language))
            queue.put_nowait({"type": "text", "delta": item})
            for sentence in planner.feed(item):
                timings.setdefault("first_sentence", _ms(started))
                sentences.put_nowait(sentence)
            if planner.full:
                return "stop", None  # all it may say is said: stop the LLM (finally cancels the stream)

    async def _speak(
        self, sentences: asyncio.Queue[str | None], queue: asyncio.Queue[Any], session: Session,
        language: str, request_id: str, *, cache: bool = False, timings: dict[str, float] | None = None,
        started: float = 0.0, stages: dict[str, float] | None = None,
    ) -> tuple[int, float]:
        """One clip per sentence, in order; returns (clips sent, seconds of speech). Each clip's stage times
        (the avatar stage's totals; none for a cached clip) are added to ``stages``."""
        index, offset_s = 0, 0.0
        while (sentence := await sentences.get()) is not None:
            parts = self.avatar.render.remote(sentence, language, session.voice_id, session.avatar_id,
                                              request_id=request_id, container="fmp4", cache=cache)
            data, seconds, clip_ms = bytearray(), 0.0, {}
            try:
                async for part in parts:
                    data += part.data
                    seconds = max(seconds, part.audio_offset_s + part.audio_seconds)
                    clip_ms = part.timings_ms or clip_ms  # the clip's last part carries its totals
            finally:
                cancel_stream(parts)
            if timings is not None and "first_clip" not in timings:
                timings["first_clip"] = _ms(started)
            clip_stages = {key.removesuffix("_ms"): round(value, 1) for key, value in clip_ms.items()}
            if stages is not None:
                for key, value in clip_stages.items():
                    stages[key] = stages.get(key, 0.0) + value
            queue.put_nowait({"type": "clip", "index": index, "text": sentence, "language": language,
                              "start_s": round(offset_s, 3), "duration_s": round(seconds, 3),
                              "mime": FMP4_MIME, "data": base64.b64encode(bytes(data)).decode(),
                              "stages_ms": clip_stages})
            index += 1
            offset_s += seconds
        return index, offset_s

    async def _messages(self, session: Session, message: str, language: str) -> tuple[list[Any], int, int]:
        system = self._persona(session).system_prompt(language, self.chat_settings.reply_max_sentences)
        if system not in self._system_tokens:
            self._system_tokens[system] = await self.llm.count_tokens.remote(system)
        user_tokens = await self.llm.count_tokens.remote(message)
        context = (await self.llm.ready.remote()).get("context_tokens") or self.chat_settings.history_tokens
        budget = min(self.chat_settings.history_tokens, int(context) - self.chat_settings.reply_max_tokens)
        if self._system_tokens[system] + user_tokens > budget:
            raise MessageTooLongError("the message is too long for the model's context")
        messages, dropped = build_messages(system, self._system_tokens[system], session.turns, message,
                                           user_tokens, budget)
        return messages, user_tokens, dropped

    def _persona(self, session: Session) -> Persona:
        return session.persona or self.persona

    async def _max_chars(self, language: str) -> int:
        return int(await self.tts.max_chars.remote(language))


async def _forward(
    sentences: asyncio.Queue[str | None], queue: asyncio.Queue[Any], language: str
) -> tuple[int, float]:
    """Sentences as events, for a caller that renders them itself (a realtime call)."""
    index = 0
    while (sentence := await sentences.get()) is not None:
        queue.put_nowait({"type": "sentence", "index": index, "text": sentence, "language": language})
        index += 1
    return index, 0.0


def _running(task: Any) -> bool:
    return task is not None and not task.done()


def _cancel(task: Any) -> None:
    if _running(task):
        task.cancel()


def _start_event(session: Session, language: str, cached_line: bool = False) -> dict[str, Any]:
    return {"type": "start", "session_id": session.session_id, "turn": len(session.turns) + 1,
            "language": language, **({"fixed_line": True} if cached_line else {})}


def _error_event(exc: BaseException) -> dict[str, Any]:
    code = getattr(exc, "code", "internal_error")
    message = str(exc) if isinstance(exc, InputError | LLMUnavailableError) else "the reply failed"
    return {"type": "error", "error": {"code": code, "message": message}}


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
