"""The Ray-free parts of chat: streamed text -> clauses, the reply planner, sessions and their limits,
the prompt's token budget, the persona, and the stage iterator that must free itself when abandoned."""

import asyncio
import threading
import time

import pytest

from deployments.common import StageHealth
from deployments.http import to_api_error
from engines.errors import InputError
from engines.llm.base import LLMUnavailableError
from engines.tts.text import ClauseAggregator
from realtime_avatar.config import ChatSettings
from realtime_avatar.conversation import (
    CapacityError,
    MessageTooLongError,
    ReplyPlanner,
    SessionExpiredError,
    SessionNotFoundError,
    SessionTable,
    TranscriptLog,
    Turn,
    build_messages,
    check_message,
)
from realtime_avatar.persona import load_persona
from realtime_avatar.store import StoreUnavailableError


def _feed_all(aggregator: ClauseAggregator, deltas: list[str]) -> list[list[str]]:
    return [aggregator.feed(d) for d in deltas]


def test_sentences_leave_as_soon_as_they_are_whole_and_not_before():
    aggregator = ClauseAggregator(max_clause_chars=200)
    deltas = ["Hello", " there.", " I am", " 3.", "5 metres tall, Dr.", " Smith said. Bye"]
    out = _feed_all(aggregator, deltas)
    # "there." waits for what follows (it could have been "there.5"); "3." is not an end; "Dr." neither.
    assert out == [[], [], ["Hello there."], [], [], ["I am 3.5 metres tall, Dr. Smith said."]]
    assert aggregator.flush() == ["Bye"]


def test_cjk_end_marks_are_final_at_once_and_long_sentences_give_up_clauses():
    aggregator = ClauseAggregator(max_clause_chars=10)
    assert aggregator.feed("你好！") == ["你好！"]
    assert aggregator.feed("我在马德里工作，") == []  # 8 chars: not long yet
    assert aggregator.feed("也常去上海。") == ["我在马德里工作，也常去上海。"]
    assert aggregator.feed("Today, when the model writes slowly") == ["Today,"]


def test_a_cut_reply_is_spoken_up_to_its_last_whole_clause():
    aggregator = ClauseAggregator(max_clause_chars=200)
    aggregator.feed("I build avatars, and I like hik")
    assert aggregator.flush(cut=True) == ["I build avatars,"]
    aggregator.feed("No boundary at all here")
    assert aggregator.flush(cut=True) == []
    aggregator.feed("A normal ending without a stop")
    assert aggregator.flush() == ["A normal ending without a stop"]


def test_the_planner_caps_sentences_and_characters_and_sends_the_first_clause_early():
    planner = ReplyPlanner("en", max_sentences=2, max_chars=500, first_clause_chars=4)
    assert planner.feed("Well, I think") == ["Well,"]  # the first clause alone: an earlier first clip
    assert planner.feed(" so, yes. Another one, fairly short.") == ["I think so, yes."]
    assert planner.feed(" A third.") == ["Another one, fairly short."]
    assert planner.full and planner.feed(" More.") == [] and planner.flush(cut=False) == []
    assert planner.text() == "Well, I think so, yes. Another one, fairly short."
    short = ReplyPlanner("es", max_sentences=3, max_chars=20)
    assert short.feed("Hola, ¿qué tal? Soy Alex, encantado. ") == ["Hola, ¿qué tal?"]
    assert short.full is False and short.flush(cut=False) == []  # the next one would pass 20 chars
    zh = ReplyPlanner("zh", max_sentences=3, max_chars=100)
    zh.feed("你好！我是亚历克斯。")
    assert zh.text() == "你好！我是亚历克斯。"


def test_sessions_expire_cap_and_end(tmp_path):
    now = [1000.0]
    table = SessionTable(ChatSettings(max_sessions=2, idle_ttl_s=60, max_session_minutes=5, max_turns=2),
                         clock=lambda: now[0])
    a = table.create("es", None, None)
    b = table.create("auto", None, None)
    assert (a.language, b.language) == ("es", None) and len(a.session_id) == 32
    with pytest.raises(CapacityError):
        table.create(None, None, None)
    with pytest.raises(SessionNotFoundError):
        table.get("0" * 32)
    now[0] += 59
    assert table.get(a.session_id) is a  # used: its idle clock restarts
    now[0] += 2
    with pytest.raises(SessionExpiredError):
        table.get(b.session_id)  # idle for 61 s
    table.create("zh", None, None)  # b's place is free again
    table.end(a.session_id)
    with pytest.raises(SessionExpiredError):
        table.get(a.session_id)
    with pytest.raises(InputError, match="not supported"):
        table.create("fr", None, None)


def test_a_session_ends_after_its_turns_and_its_minutes():
    now = [0.0]
    settings = ChatSettings(max_turns=1, max_session_minutes=1, idle_ttl_s=600)
    table = SessionTable(settings, clock=lambda: now[0])
    session = table.create(None, None, None)
    session.turns.append(Turn("hi", "hello", 5))
    with pytest.raises(SessionExpiredError, match="1 turns"):
        table.get(session.session_id)
    other = table.create(None, None, None)
    now[0] += 61
    with pytest.raises(SessionExpiredError):
        table.get(other.session_id)


def test_messages_are_checked():
    settings = ChatSettings(max_message_chars=10)
    assert check_message("  hola  ", settings) == "hola"
    for empty in ("", "   ", "?!", None, 3):
        with pytest.raises(InputError, match="empty"):
            check_message(empty, settings)
    with pytest.raises(MessageTooLongError) as caught:
        check_message("x" * 11, settings)
    assert caught.value.status == 413


def test_the_prompt_keeps_the_latest_turns_that_fit_the_budget():
    turns = [Turn(f"q{i}", f"a{i}", 10) for i in range(5)]
    messages, dropped = build_messages("sys", 20, turns, "now", 5, budget=20 + 5 + 12 + 25)
    assert dropped == 3  # two 10-token turns fit in the 25 left
    assert [m["content"] for m in messages] == ["sys", "q3", "a3", "q4", "a4", "now"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]


def test_the_bundled_persona_builds_a_prompt_per_language():
    persona = load_persona(ChatSettings().persona.replace("{package_dir}", _package_dir()))
    assert persona.name and {"en", "zh", "es"} <= set(persona.greetings)
    prompt = persona.system_prompt("es", 2)
    assert persona.name in prompt and "Spanish" in prompt and "español" in prompt and "2" in prompt
    assert "中文" in persona.system_prompt("zh", 3)


def test_a_broken_persona_file_is_a_clear_error(tmp_path):
    path = tmp_path / "persona.yaml"
    path.write_text("name: Alex\nlanguages: [fr]\n")
    with pytest.raises(InputError, match="unsupported languages"):
        load_persona(path)
    with pytest.raises(InputError, match="not found"):
        load_persona(tmp_path / "missing.yaml")


def test_transcripts_are_written_only_when_the_owner_turns_them_on(tmp_path):
    TranscriptLog(ChatSettings(transcripts_dir=str(tmp_path / "off"))).write("s", "hi", "hello", "en")
    assert not (tmp_path / "off").exists()
    TranscriptLog(ChatSettings(record_transcripts=True, transcripts_dir=str(tmp_path / "on"))).write(
        "s", "hi", "hello", "en")
    assert "hello" in (tmp_path / "on" / "s.jsonl").read_text()


def test_chat_failures_map_to_their_statuses():
    llm = to_api_error(LLMUnavailableError("the LLM server at 127.0.0.1:9 refused"), 2)
    assert (llm.status, llm.code, llm.headers) == (503, "llm_unavailable", {"Retry-After": "2"})
    full = to_api_error(CapacityError("16 conversations are open"), 3)
    assert (full.status, full.code, full.headers) == (503, "too_many_sessions", {"Retry-After": "3"})
    assert to_api_error(SessionExpiredError("ended"), 2).status == 410
    assert to_api_error(SessionNotFoundError("unknown"), 2).status == 404


def test_a_store_outage_is_not_a_health_strike():
    health = StageHealth(unhealthy_after=1)

    def store_down() -> None:
        raise StoreUnavailableError("cannot read gs://bucket: timed out")

    async def scenario() -> None:
        for _ in range(3):
            with pytest.raises(StoreUnavailableError):
                await health.call("r", store_down)
        health.check()

    asyncio.run(scenario())


def test_an_abandoned_stream_frees_the_stage_and_is_closed_after_its_step():
    """The consumer leaves while a worker thread is inside next(): the request is freed at once, and
    the iterator is closed (generation stops) as soon as that step returns, never concurrently."""
    health = StageHealth(unhealthy_after=3)
    inside, release = threading.Event(), threading.Event()
    closed_at: list[float] = []

    def tokens():
        try:
            yield "first"
            inside.set()
            release.wait(5)
            yield "second"
            yield "never"
        finally:
            closed_at.append(time.monotonic())

    async def scenario() -> float:
        async def consume() -> None:
            async for _ in health.iterate("r", tokens()):
                pass

        task = asyncio.create_task(consume())
        await asyncio.to_thread(inside.wait, 5)
        assert health.in_flight == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert health.in_flight == 0 and not closed_at  # freed, but not closed under the worker's feet
        released = time.monotonic()
        release.set()
        for _ in range(100):
            if closed_at:
                break
            await asyncio.sleep(0.01)
        return released

    released = asyncio.run(scenario())
    assert closed_at and closed_at[0] >= released


def _package_dir() -> str:
    from realtime_avatar.config import DEFAULT_CONFIG

    return str(DEFAULT_CONFIG.parent)
