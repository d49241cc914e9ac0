"""The conversation deployment's orchestration, driven directly (no Ray) with test-double handles:
event order, pipelining, LLM timeouts and failures, and cancellation reaching every stream."""

import asyncio
from typing import Any

import pytest

from deployments.conversation import ConversationDeployment
from engines.llm.base import LLMUnavailableError
from realtime_avatar.config import Settings
from realtime_avatar.encoding import MediaPart


class _Stream:
    """What ``handle.options(stream=True).method.remote(...)`` returns: async iterable + cancel()."""

    def __init__(self, items: Any) -> None:
        self._items, self.cancelled = items, False

    def __aiter__(self) -> Any:
        return self._items.__aiter__()

    def cancel(self) -> None:
        self.cancelled = True


class _Value:
    def __init__(self, value: Any, delay: float = 0.0) -> None:
        self.value, self.delay = value, delay

    def __await__(self) -> Any:
        async def get() -> Any:
            await asyncio.sleep(self.delay)
            return self.value
        return get().__await__()


class _Method:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


class FakeLLM:
    """Test double: deltas with delays, an optional hang or failure, and a record of its streams."""

    def __init__(self, deltas: list[str], delay: float = 0.0, hang_first: bool = False,
                 fail_after: int | None = None, count_delay: float = 0.0) -> None:
        self.deltas, self.delay, self.hang_first, self.fail_after = deltas, delay, hang_first, fail_after
        self.streams: list[_Stream] = []
        self.stream_chat = _Method(self._stream_chat)
        self.count_tokens = _Method(lambda text: _Value(len(text.split()) + 1, count_delay))
        self.ready = _Method(lambda: _Value({"context_tokens": 2048}))

    def options(self, **_: Any) -> "FakeLLM":
        return self

    def _stream_chat(self, messages: list[dict], params: dict, request_id: str = "-") -> _Stream:
        async def items() -> Any:
            if self.hang_first:
                await asyncio.sleep(3600)
            for i, delta in enumerate(self.deltas):
                if self.fail_after is not None and i == self.fail_after:
                    raise LLMUnavailableError("the LLM server went away")
                await asyncio.sleep(self.delay)
                yield delta
            yield {"finish_reason": "stop"}
        stream = _Stream(items())
        self.streams.append(stream)
        return stream


CLIP_MS = {"tts_ms": 10.0, "avatar_render_ms": 20.0, "encode_ms": 5.0}


class FakeAvatar:
    def __init__(self, seconds_per_clip: float = 0.0) -> None:
        self.seconds_per_clip = seconds_per_clip
        self.rendered: list[str] = []
        self.streams: list[_Stream] = []
        self.render = _Method(self._render)

    def options(self, **_: Any) -> "FakeAvatar":
        return self

    def _render(self, text: str, language: str, voice_id: Any, avatar_id: Any, **_: Any) -> _Stream:
        async def parts() -> Any:
            await asyncio.sleep(self.seconds_per_clip)
            self.rendered.append(text)
            # As the avatar stage does: the clip's last part carries its stage totals.
            yield MediaPart(b"fmp4:" + text.encode(), text, language, 0.0, 1.0, 0, 25, timings_ms=CLIP_MS)
        stream = _Stream(parts())
        self.streams.append(stream)
        return stream


class FakeTTS:
    max_chars = _Method(lambda language: _Value(1000))


def _conversation(llm: FakeLLM, avatar: FakeAvatar, **chat: Any) -> Any:
    settings = Settings()
    settings.chat = settings.chat.model_copy(update=chat)
    return ConversationDeployment.func_or_class(settings.model_dump(mode="json"), llm, FakeTTS(), avatar)


async def _collect(stream: Any) -> list[dict]:
    return [event async for event in stream]


def test_a_reply_streams_text_then_one_clip_per_sentence_in_order():
    llm = FakeLLM(["Hola", ", soy", " Alex.", " Trabajo en", " vídeo", " en tiempo real."])
    avatar = FakeAvatar()

    async def scenario() -> list[dict]:
        conversation = _conversation(llm, avatar, first_clause_chars=0)
        session = await conversation.create_session("es", None, None)
        return await _collect(conversation.chat(session["session_id"], "¿Qué haces?", "auto"))

    events = asyncio.run(scenario())
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("text") == 6
    clips = [e for e in events if e["type"] == "clip"]
    assert [c["text"] for c in clips] == ["Hola, soy Alex.", "Trabajo en vídeo en tiempo real."]
    assert [c["index"] for c in clips] == [0, 1] and [c["start_s"] for c in clips] == [0.0, 1.0]
    assert events[-1]["text"] == "Hola, soy Alex. Trabajo en vídeo en tiempo real."
    assert events[-1]["cut"] is False and events[-1]["clips"] == 2
    assert all(s.cancelled for s in llm.streams)  # the stream is released once drained
    # The server's stage times: each clip's own, and the reply's sums with the LLM stream's time.
    assert all(c["stages_ms"] == {"tts": 10.0, "avatar_render": 20.0, "encode": 5.0} for c in clips)
    stages = events[-1]["stages_ms"]
    assert (stages["tts"], stages["avatar_render"], stages["encode"]) == (20.0, 40.0, 10.0)
    assert 0 <= stages["llm"] <= events[-1]["timings_ms"]["total"]


def test_a_finished_turn_is_history_before_its_done_event_leaves():
    """A client that sends its next message the moment it reads "done" finds the turn recorded (the
    token count of the reply, a call to the LLM stage, must not race the next message)."""
    llm = FakeLLM(["Hi there."], count_delay=0.2)

    async def scenario() -> list[dict]:
        conversation = _conversation(llm, FakeAvatar())
        session = await conversation.create_session("en", None, None)
        first = conversation.chat(session["session_id"], "Hello.", "en")
        async for item in first:  # over HTTP the client has "done" before this generator ends
            if item["type"] == "done":
                break
        second = await _collect(conversation.chat(session["session_id"], "Again.", "en"))
        assert len(conversation.sessions.get(session["session_id"]).turns) == 2
        return second

    assert asyncio.run(scenario())[0]["turn"] == 2


def test_the_first_sentence_renders_while_the_llm_still_writes():
    llm = FakeLLM(["One.", " Two", " words", " more", " here."], delay=0.1)
    avatar = FakeAvatar()

    async def scenario() -> list[dict]:
        conversation = _conversation(llm, avatar)
        session = await conversation.create_session("en", None, None)
        return await _collect(conversation.chat(session["session_id"], "Count.", "en"))

    events = asyncio.run(scenario())
    first_clip = next(i for i, e in enumerate(events) if e["type"] == "clip")
    last_text = max(i for i, e in enumerate(events) if e["type"] == "text")
    assert first_clip < last_text


def test_an_llm_that_never_answers_is_a_503_error_not_a_hang():
    llm = FakeLLM(["never"], hang_first=True)

    async def scenario() -> None:
        conversation = _conversation(llm, FakeAvatar(), llm_timeout_s=0.2)
        session = await conversation.create_session("en", None, None)
        await _collect(conversation.chat(session["session_id"], "Hello?", "en"))

    with pytest.raises(LLMUnavailableError, match="sent nothing"):
        asyncio.run(asyncio.wait_for(scenario(), 5))


def test_an_llm_that_fails_mid_reply_is_spoken_up_to_its_last_whole_clause():
    llm = FakeLLM(["I build", " avatars,", " and I", " like"], fail_after=3)
    avatar = FakeAvatar()

    async def scenario() -> list[dict]:
        conversation = _conversation(llm, avatar, first_clause_chars=0)
        session = await conversation.create_session("en", None, None)
        return await _collect(conversation.chat(session["session_id"], "What?", "en"))

    events = asyncio.run(scenario())
    assert [e["text"] for e in events if e["type"] == "clip"] == ["I build avatars,"]
    assert [e["type"] for e in events][-2:] == ["error", "done"]
    assert events[-2]["error"]["code"] == "llm_unavailable" and events[-1]["cut"] is True


def test_a_new_message_cancels_the_reply_in_flight_and_every_stream_behind_it():
    slow = FakeLLM(["Counting", " one,", " two,", " three,", " four."], delay=0.3)
    avatar = FakeAvatar()

    async def scenario() -> tuple[list[dict], list[dict]]:
        conversation = _conversation(slow, avatar)
        session = await conversation.create_session("en", None, None)
        first = conversation.chat(session["session_id"], "Count slowly.", "en")
        seen = [await anext(first)]  # the reply has begun
        second = asyncio.create_task(_collect(conversation.chat(session["session_id"], "Stop.", "en")))
        seen += await _collect(first)
        return seen, await second

    first, second = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert first[0]["type"] == "start" and first[-1] == {"type": "cancelled", "reason": "new_turn"}
    assert second[-1]["type"] == "done"
    assert slow.streams[0].cancelled


def test_a_client_that_leaves_cancels_the_llm_and_the_render():
    llm = FakeLLM(["A", " long,", " long", " reply", " that", " never", " ends."], delay=0.2)
    avatar = FakeAvatar(seconds_per_clip=5)

    async def scenario() -> Any:
        conversation = _conversation(llm, avatar, first_clause_chars=2)
        session = await conversation.create_session("en", None, None)
        stream = conversation.chat(session["session_id"], "Talk.", "en")
        await anext(stream)
        await asyncio.sleep(0.5)  # "A long," went to the avatar, whose render is in flight
        await stream.aclose()
        await asyncio.sleep(0.05)
        return conversation, session

    conversation, session = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert llm.streams[0].cancelled and avatar.streams and all(s.cancelled for s in avatar.streams)
    assert conversation.sessions.get(session["session_id"]).replying.done()
