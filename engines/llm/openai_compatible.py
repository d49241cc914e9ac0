"""Any OpenAI-style chat server (vLLM, llama.cpp's server, Ollama): ``POST {base_url}/chat/completions``
with ``stream: true``, its server-sent events parsed here with httpx (no ``openai`` client needed).

Every failure to get an answer (refused or reset connection, connect or read timeout, a 5xx, 401/403,
404 for an unknown model, 429) raises :class:`LLMUnavailableError`; a request the server rejects as
malformed (400/413/422) raises an :class:`InputError`. The read timeout bounds each wait for bytes
(the first token after the server's prompt evaluation, then every next one), not the whole reply.
Closing the iterator closes the HTTP response; servers stop generating when the client goes away.

Token counts are an estimate unless ``tokenizer`` names a Hugging Face ``tokenizer.json`` of the served
model: one per CJK character plus one per three other characters. That errs high for English and
Spanish (GPT-style vocabularies average about four characters a token), which is the safe side for a
context budget.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from engines.errors import InputError
from engines.llm.base import ChatStream, ContextTooLongError, Finish, LLMEngine, LLMUnavailableError, Message

_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
_REJECTED = (400, 413, 422)


def estimate_tokens(text: str) -> int:
    """A vocabulary-free token estimate: 1 per CJK (or kana, hangul, full-width) char, 1 per 3 others."""
    cjk = len(_CJK.findall(text))
    return cjk + math.ceil((len(text) - cjk) / 3)


def _api_base(base_url: str) -> str:
    """``http://host:8000`` and ``http://host:8000/v1`` both mean the API under ``/v1``."""
    url = base_url.rstrip("/")
    return url if urlsplit(url).path else f"{url}/v1"


class OpenAICompatibleLLM(LLMEngine):
    """``model`` is the served model's name (vLLM and Ollama need it; llama.cpp's server ignores it).

    ``api_key`` is the key itself, ``api_key_env`` the name of an environment variable holding it
    (read at ``load()``). ``context_tokens`` should match the server's context (vLLM's
    ``max_model_len``). ``max_tokens``/``temperature``/``top_p`` are defaults that ``stream_chat``
    params override; ``extra_body`` adds server-specific fields to every request.
    """

    name = "openai-compatible"

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080/v1",
        model: str | None = None,
        *,
        api_key: str | None = None,
        api_key_env: str | None = None,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 30.0,
        context_tokens: int = 4096,
        tokenizer: str | None = None,
        max_tokens: int = 128,
        temperature: float = 0.7,
        top_p: float = 0.9,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        self.base_url = _api_base(base_url)
        self.model = model
        self.api_key = api_key
        self.api_key_env = api_key_env
        self.timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s, pool=connect_timeout_s)
        self.context_tokens = context_tokens
        self.tokenizer_path = tokenizer
        self.defaults: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p}
        self.extra_body = dict(extra_body or {})
        self._client: httpx.Client | None = None
        self._tokenizer: Any = None

    def load(self) -> None:
        """Builds the HTTP client (and tokenizer); a server that is down now fails requests, not this."""
        if self._client is not None:
            return
        if self.tokenizer_path:
            try:
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise LLMUnavailableError("reading a tokenizer.json needs: pip install tokenizers") from exc
            try:
                self._tokenizer = Tokenizer.from_file(self.tokenizer_path)
            except Exception as exc:  # tokenizers raises its own Exception type for unreadable files
                raise LLMUnavailableError(f"cannot read tokenizer {self.tokenizer_path!r}: {exc}") from exc
        key = self.api_key or (os.environ.get(self.api_key_env) if self.api_key_env else None)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=self.timeout)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self.load()
        assert self._client is not None
        return self._client

    def check_health(self) -> None:
        """``GET /models`` answers (and lists ``model``, when one is configured)."""
        try:
            response = self.client.get("/models")
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code != 200:
            raise LLMUnavailableError(f"LLM server at {self.base_url}: GET /models -> {response.status_code}")
        served = [m.get("id") for m in response.json().get("data", [])]
        if self.model and self.model not in served:
            raise LLMUnavailableError(f"LLM server at {self.base_url} does not serve {self.model!r}; "
                                      f"it serves {', '.join(map(str, served)) or 'nothing'}")

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is None and self.tokenizer_path:
            self.load()
        if self._tokenizer is not None:
            return len(self._tokenizer.encode(text, add_special_tokens=False).ids)
        return estimate_tokens(text)

    def stream_chat(self, messages: Sequence[Message], **params: object) -> ChatStream:
        body: dict[str, Any] = {**self.extra_body, **self.defaults,
                                **{k: v for k, v in params.items() if v is not None}}
        body.update(messages=[dict(m) for m in messages], stream=True)
        if self.model:
            body["model"] = self.model
        return ChatStream(lambda finish: self._stream(body, finish))

    def _stream(self, body: dict[str, Any], finish: Finish) -> Iterator[str]:
        try:
            with self.client.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise self._refused(response)
                for data in _sse_data(response.iter_lines()):
                    if data.strip() == "[DONE]":
                        return
                    text = _delta_text(json.loads(data), self.base_url, finish)
                    if text:
                        yield text
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        except json.JSONDecodeError as exc:
            raise LLMUnavailableError(f"LLM server at {self.base_url} sent a malformed event: {exc}") from exc

    def _unreachable(self, exc: httpx.HTTPError) -> LLMUnavailableError:
        if isinstance(exc, httpx.TimeoutException):
            return LLMUnavailableError(f"LLM server at {self.base_url} timed out ({type(exc).__name__})")
        reason = str(exc) or type(exc).__name__
        return LLMUnavailableError(f"cannot reach the LLM server at {self.base_url}: {reason}")

    def _refused(self, response: httpx.Response) -> Exception:
        detail = response.text[:300].strip()
        message = f"LLM server at {self.base_url} answered {response.status_code}: {detail}"
        if response.status_code in _REJECTED:
            if "context" in detail.lower():
                return ContextTooLongError(message)
            return InputError(message, code="llm_rejected")
        return LLMUnavailableError(message)


def _sse_data(lines: Iterator[str]) -> Iterator[str]:
    """The data of each server-sent event (``data:`` lines joined; comments and other fields skipped)."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield "\n".join(data)


def _delta_text(event: Any, base_url: str, finish: Finish) -> str:
    if not isinstance(event, dict):
        return ""
    if "error" in event:  # vLLM and llama.cpp report mid-stream failures as an error event
        error = event["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        raise LLMUnavailableError(f"LLM server at {base_url} failed mid-reply: {message}")
    choice = (event.get("choices") or [{}])[0]
    finish.reason = choice.get("finish_reason") or finish.reason
    return (choice.get("delta") or {}).get("content") or ""
