"""Locust users for the avatar API: short TTS calls and renders, streamed and whole.

For streamed renders locust's own row times the response headers; two events of their own add the
time to the first body byte (request type ``TTFB``) and to the last (``DOWNLOAD``), so the CSV holds
them beside the whole-MP4 times. Any non-200 answer (a 503 under overload too) is a failure.
"""

from __future__ import annotations

import time

from locust import HttpUser, between, task

SENTENCES = [
    ("Hello! Thanks for stopping by.", "en"),
    ("¡Hola! Gracias por venir.", "es"),
    ("你好，欢迎光临。", "zh"),
]


class AvatarUser(HttpUser):
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        self.turn = 0

    def _next_sentence(self) -> tuple[str, str]:
        self.turn += 1
        return SENTENCES[self.turn % len(SENTENCES)]

    @task(2)
    def tts(self) -> None:
        text, language = self._next_sentence()
        with self.client.post("/v1/tts", json={"text": text, "language": language},
                              name="/v1/tts", catch_response=True) as response:
            if response.status_code != 200 or not response.content.startswith(b"RIFF"):
                response.failure(f"status {response.status_code}: {response.text[:200]}")

    @task(1)
    def render(self) -> None:
        text, language = self._next_sentence()
        with self.client.post("/v1/render", json={"text": text, "language": language},
                              name="/v1/render", catch_response=True) as response:
            if response.status_code != 200 or b"ftyp" not in response.content[:16]:
                response.failure(f"status {response.status_code}: {response.text[:200]}")

    @task(1)
    def render_streamed(self) -> None:
        text, language = self._next_sentence()
        started = time.perf_counter()
        first_byte_ms = None
        size = 0
        with self.client.post("/v1/render", json={"text": text, "language": language, "stream": True},
                              name="/v1/render stream", stream=True, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}: {response.text[:200]}")
                return
            for block in response.iter_content(chunk_size=None):
                if first_byte_ms is None and block:
                    first_byte_ms = (time.perf_counter() - started) * 1000
                size += len(block)
            if first_byte_ms is None:
                response.failure("the stream ended with no bytes")
                return
        total_ms = (time.perf_counter() - started) * 1000
        for kind, ms in (("TTFB", first_byte_ms), ("DOWNLOAD", total_ms)):
            self.environment.events.request.fire(
                request_type=kind, name="/v1/render stream", response_time=ms, response_length=size,
                exception=None, context={},
            )
