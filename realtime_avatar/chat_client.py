"""A small client for the chat API: sessions, and a reply's NDJSON events as they stream in.

Used by ``avatar chat``, the chat benchmark and the API tests, so all three read the stream the same
way a browser would: line by line, clips decoded from base64 as each arrives.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

END_EVENTS = ("done", "error", "cancelled")


class ChatApiError(RuntimeError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


@dataclass
class Reply:
    """One reply as received: its events, clips (fMP4 bytes) and client-side arrival times (s)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    clips: list[bytes] = field(default_factory=list)
    first_text_s: float | None = None
    first_clip_s: float | None = None
    total_s: float = 0.0

    @property
    def end(self) -> dict[str, Any]:
        return self.events[-1] if self.events else {}

    @property
    def text(self) -> str:
        return str(self.end.get("text", ""))

    @property
    def clip_events(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "clip"]


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
        raise ChatApiError(response.status_code, error["code"], error["message"])
    except (ValueError, KeyError, TypeError):
        raise ChatApiError(response.status_code, "http_error", response.text[:200]) from None


class ChatClient:
    def __init__(self, base_url: str, timeout_s: float = 120.0) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create_session(self, language: str = "auto", **fields: Any) -> dict[str, Any]:
        response = self.http.post("/v1/chat/sessions", json={"language": language, **fields})
        _raise_for(response)
        return response.json()

    def end_session(self, session_id: str) -> dict[str, Any]:
        response = self.http.delete(f"/v1/chat/sessions/{session_id}")
        _raise_for(response)
        return response.json()

    def events(self, session_id: str, text: str, language: str = "auto") -> Iterator[dict[str, Any]]:
        """The reply's events as they arrive; an HTTP error before the stream raises ChatApiError."""
        body = {"session_id": session_id, "text": text, "language": language}
        return self._stream("POST", "/v1/chat", body)

    def greeting_events(self, session_id: str) -> Iterator[dict[str, Any]]:
        return self._stream("GET", f"/v1/chat/sessions/{session_id}/greeting")

    def _stream(self, method: str, path: str, body: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        with self.http.stream(method, path, json=body) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for(response)
            for line in response.iter_lines():
                if line.strip():
                    yield json.loads(line)

    def send(self, session_id: str, text: str, language: str = "auto") -> Reply:
        return collect(self.events(session_id, text, language))

    def greeting(self, session_id: str) -> Reply:
        return collect(self.greeting_events(session_id))


def collect(events: Iterator[dict[str, Any]]) -> Reply:
    """Drain a reply's events, decoding clips and timing their arrival from now."""
    started = time.perf_counter()
    reply = Reply()
    for item in events:
        now = time.perf_counter() - started
        reply.events.append(item)
        if item["type"] == "text" and reply.first_text_s is None:
            reply.first_text_s = now
        if item["type"] == "clip":
            reply.clips.append(base64.b64decode(item["data"]))
            reply.first_clip_s = reply.first_clip_s if reply.first_clip_s is not None else now
        if item["type"] in END_EVENTS and item["type"] != "error":
            break
    reply.total_s = time.perf_counter() - started
    return reply
