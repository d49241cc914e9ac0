"""LLM engines on the bundled SmolLM2-135M: streaming, early close, token counts, the KV prefix cache,
and the OpenAI-compatible client against llama-cpp-python's own server (replies kept short for CI)."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from engines.errors import InputError, ModelUnavailableError
from engines.llm.base import ContextTooLongError, LLMUnavailableError
from engines.llm.bundled import bundled_model_path
from engines.llm.llama_cpp import LlamaCppLLM, transcript_prompt
from engines.llm.openai_compatible import OpenAICompatibleLLM, estimate_tokens
from engines.registry import resolve
from graphs.launch import free_port

PERSONA = (
    "You are Alex, a friendly software engineer who lives in Lisbon and builds realtime avatars. "
    "You answer in the language of the user's message, in one to three short sentences, without lists. "
    "You like hiking, espresso, old synthesizers and long train journeys across Europe. "
    "At work you write Python and C++, tune speech models and care about latency more than anything. "
    "You never invent facts about the user, you say so when you do not know something, and you keep a "
    "warm, curious tone. If someone asks about your projects, mention the talking-head avatar that "
    "listens, thinks and answers in English, Mandarin and Spanish on a small laptop. "
    "You avoid jargon with beginners and go deep with experts. You sometimes ask a short question back. "
    "When a question is rude, you stay calm and steer the conversation somewhere friendlier."
)
GREEDY = {"temperature": 0.0, "seed": 7}


def chat(system: str, user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


@pytest.fixture(scope="module")
def smollm2() -> LlamaCppLLM:
    engine = LlamaCppLLM("smollm2-135m", n_ctx=1024)
    engine.load()
    return engine


def test_registry_names_both_engines():
    assert resolve("llm", "llama-cpp") is LlamaCppLLM
    assert resolve("llm", "openai-compatible") is OpenAICompatibleLLM


def test_streams_english_deltas_equal_to_the_non_streamed_reply(smollm2):
    messages = chat("You are a helpful assistant.", "What is the capital of France?")
    smollm2.llama.reset()  # both runs evaluate the whole prompt, so their logits are bit-identical
    stream = smollm2.stream_chat(messages, max_tokens=24, **GREEDY)
    deltas = list(stream)
    assert len(deltas) > 1 and all(deltas)
    assert "Paris" in "".join(deltas) and stream.finish_reason in ("stop", "length")

    smollm2.llama.reset()
    whole = smollm2.llama.create_chat_completion(
        messages=messages, stream=False, **{**smollm2.defaults, "max_tokens": 24, **GREEDY}
    )
    assert "".join(deltas) == whole["choices"][0]["message"]["content"].lstrip()


def test_close_mid_stream_stops_generation_and_frees_the_lock(smollm2):
    stream = smollm2.stream_chat(chat(PERSONA, "Tell me a long story about a dragon."), max_tokens=200)
    next(stream)
    assert smollm2._lock.locked()

    second: list[str] = []
    waiter = threading.Thread(target=lambda: second.extend(
        smollm2.stream_chat(chat(PERSONA, "Say hello."), max_tokens=8)))
    waiter.start()
    time.sleep(0.3)
    assert not second and waiter.is_alive()  # waits for the first stream's lock

    first_stats = smollm2.last_stats
    stream.close()
    assert first_stats.completion_tokens < 20  # stopped right away, far from max_tokens
    assert stream.finish_reason is None
    waiter.join(timeout=30)
    assert not waiter.is_alive() and second
    assert not smollm2._lock.locked()

    dropped = smollm2.stream_chat(chat(PERSONA, "Count to fifty."), max_tokens=100)
    next(dropped)
    del dropped  # an abandoned stream is finalized, and lets go of the lock, too
    assert not smollm2._lock.locked()


def test_count_tokens(smollm2):
    short, longer = smollm2.count_tokens("Hello there."), smollm2.count_tokens("Hello there. " * 10)
    assert 0 < short < longer
    assert smollm2.count_tokens("") == 0
    assert smollm2.count_tokens("你好，很高兴认识你。") > 0
    messages = chat(PERSONA, "Hi!")
    assert smollm2.count_messages(messages) > smollm2.count_tokens(PERSONA)


def test_same_system_prompt_is_not_evaluated_again(smollm2):
    persona_tokens = smollm2.count_tokens(PERSONA)
    assert persona_tokens > 150
    other = PERSONA.replace("Alex", "Sam").replace("Lisbon", "Madrid")  # diverges at the first words

    list(smollm2.stream_chat(chat(PERSONA, "What do you do?"), max_tokens=4, **GREEDY))
    list(smollm2.stream_chat(chat(PERSONA, "Where do you live?"), max_tokens=4, **GREEDY))
    same = smollm2.last_stats
    list(smollm2.stream_chat(chat(other, "Where do you live?"), max_tokens=4, **GREEDY))
    different = smollm2.last_stats

    assert abs(same.prompt_tokens - different.prompt_tokens) < 10
    assert same.reused_tokens >= persona_tokens and same.evaluated_tokens < 20
    assert different.reused_tokens < 10 and different.evaluated_tokens >= persona_tokens
    # Evaluating ~200 prompt tokens on 2 cores costs far more than the few after a cached prefix.
    assert same.first_delta_s < 0.7 * different.first_delta_s


def test_ram_cache_restores_an_interleaved_conversation():
    engine = LlamaCppLLM("smollm2-135m", n_ctx=1024, ram_cache_mb=256)
    first_turn = chat(PERSONA, "What do you do?")
    reply = "".join(engine.stream_chat(first_turn, max_tokens=16, **GREEDY))
    first = engine.last_stats
    list(engine.stream_chat(chat("You are a pirate.", "Ahoy!"), max_tokens=4, **GREEDY))  # another session
    second_turn = [*first_turn, {"role": "assistant", "content": reply}, {"role": "user", "content": "Why?"}]
    list(engine.stream_chat(second_turn, max_tokens=4, **GREEDY))
    assert engine.last_stats.reused_tokens >= first.prompt_tokens - 2


def test_prompt_over_the_context_is_an_input_error(smollm2):
    with pytest.raises(ContextTooLongError) as caught:
        list(smollm2.stream_chat(chat(PERSONA, "word " * 1200), max_tokens=4))
    assert caught.value.code == "context_too_long" and not smollm2._lock.locked()


def test_gemma_base_model_answers_in_a_plain_transcript():
    messages = [{"role": "system", "content": "You are Alex."}, {"role": "user", "content": "Hi!"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "What do you do?"}]
    assert transcript_prompt(messages) == (
        "You are Alex.\n\nUser: Hi!\nAssistant: Hello!\nUser: What do you do?\nAssistant:"
    )
    engine = LlamaCppLLM("gemma3-270m", n_ctx=512)
    reply = "".join(engine.stream_chat(chat("You are Alex, a software engineer.", "What do you do?"),
                                       max_tokens=24, **GREEDY))
    assert reply.strip() and reply == reply.lstrip() and "User:" not in reply


def test_missing_model_file_says_what_to_do(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelUnavailableError) as caught:
        LlamaCppLLM(str(missing)).load()
    assert caught.value.code == "llm_unavailable" and caught.value.status == 503
    assert str(missing) in str(caught.value) and "pip install" in str(caught.value)
    with pytest.raises(LLMUnavailableError, match="bundled"):
        LlamaCppLLM("tinyllama-1b").load()


# --- OpenAI-compatible client ---------------------------------------------------------------------


def _wait_until_serving(base_url: str, process: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {process.returncode} (see its log in tmp_path)")
        try:
            if httpx.get(f"{base_url}/v1/models", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError("llama_cpp.server did not start")


@pytest.fixture
def llama_server(tmp_path) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    log = (tmp_path / "llama_server.log").open("wb")  # a file, not a pipe nobody reads, which could fill up
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_model_path("smollm2-135m")),
         "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024",
         "--n_threads", "1", "--verbose", "False"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(base_url, process)
        yield base_url, process
    finally:
        process.kill()
        process.wait()
        log.close()


def test_openai_compatible_streams_from_a_real_server_then_fails_fast_when_it_dies(llama_server):
    base_url, process = llama_server
    engine = OpenAICompatibleLLM(base_url, "smollm2", connect_timeout_s=1.0, read_timeout_s=20.0)
    engine.check_health()
    deltas = list(engine.stream_chat(chat("You are a helpful assistant.", "What is the capital of France?"),
                                     max_tokens=16, temperature=0.0))
    assert len(deltas) > 1 and all(deltas)
    assert "Paris" in "".join(deltas)
    capped = engine.stream_chat(chat(PERSONA, "Tell me a long story."), max_tokens=3)
    assert list(capped) and capped.finish_reason == "length"

    stream = engine.stream_chat(chat(PERSONA, "Tell me a long story."), max_tokens=200)
    next(stream)
    stream.close()  # closes the response; the next request gets an answer at once
    assert list(engine.stream_chat(chat(PERSONA, "Hi!"), max_tokens=4))

    process.kill()
    process.wait()
    started = time.monotonic()
    with pytest.raises(LLMUnavailableError) as caught:
        list(engine.stream_chat(chat(PERSONA, "Are you there?"), max_tokens=4))
    assert time.monotonic() - started < 3.0 and caught.value.code == "llm_unavailable"
    with pytest.raises(LLMUnavailableError):
        engine.check_health()


def test_openai_compatible_unreachable_and_silent_servers_fail_fast():
    unreachable = OpenAICompatibleLLM(f"http://127.0.0.1:{free_port()}", connect_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(LLMUnavailableError, match="cannot reach"):
        list(unreachable.stream_chat(chat("x", "Hi")))
    assert time.monotonic() - started < 3.0

    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        engine = OpenAICompatibleLLM(f"http://127.0.0.1:{silent.getsockname()[1]}", read_timeout_s=0.5)
        started = time.monotonic()
        with pytest.raises(LLMUnavailableError, match="timed out"):
            list(engine.stream_chat(chat("x", "Hi")))
        assert time.monotonic() - started < 3.0


class _StubHandler(http.server.BaseHTTPRequestHandler):
    """Answers by path: /v1 an error status, /sse/v1 a stream with a comment, a split event and an error."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.path.startswith("/sse/"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(b': ping\n\ndata: {"choices": [{"delta": {"role": "assistant"}}]}\n\n'
                             b'data: {"choices": [{"delta": {"content": "Hola"}}]}\r\n\r\n'
                             b'data: {"error": {"message": "out of memory"}}\n\n')
            return
        status = int(self.path.split("/")[2])
        body = b'{"error": {"message": "maximum context length is 2048 tokens"}}' if status == 400 else b"{}"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StubHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("status", "error"), [(500, LLMUnavailableError), (503, LLMUnavailableError),
                                                (404, LLMUnavailableError), (400, ContextTooLongError)])
def test_openai_compatible_maps_error_statuses(stub_server, status, error):
    engine = OpenAICompatibleLLM(f"{stub_server}/status/{status}/v1")
    with pytest.raises(error):
        list(engine.stream_chat(chat("x", "Hi")))
    assert issubclass(ContextTooLongError, InputError)


def test_openai_compatible_parses_events_and_raises_a_mid_stream_error(stub_server):
    stream = OpenAICompatibleLLM(f"{stub_server}/sse/v1").stream_chat(chat("x", "Hi"))
    assert next(stream) == "Hola"
    with pytest.raises(LLMUnavailableError, match="out of memory"):
        next(stream)


def test_token_estimate_without_a_tokenizer():
    assert estimate_tokens("") == 0
    assert estimate_tokens("你好世界") == 4
    assert estimate_tokens("Hello, world") == 4
    assert OpenAICompatibleLLM().count_tokens("¿Qué tal? 你好") == estimate_tokens("¿Qué tal? 你好")
