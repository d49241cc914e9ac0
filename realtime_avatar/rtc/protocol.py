"""The realtime call's wire protocol, in one place (the page, the harness and the gateway follow it).

Signalling (HTTP, no trickle ICE: the answer carries every candidate):

- ``GET  /v1/rtc/config?session_id=`` -> ``{"ice_servers": [{"urls", "username"?, "credential"?}],
  "ice_transport_policy": all|relay, "max_calls"}``; with a session, the TURN relay's short-lived
  credential (``<expiry>:<session_id>``) is among the servers (404 / 410 for a session not open).
- ``POST /v1/rtc/offer``  ``{"session_id", "sdp", "type": "offer", "language"?: auto|en|zh|es}``
  -> ``{"call_id", "session_id", "sdp", "type": "answer", "language"}``. The offer must carry an audio
  m-line the client sends on (the microphone) and should carry a data channel labelled ``events``;
  the answer sends back one audio track (48 kHz Opus) and one video track (``render.size`` px, 25 fps).
  Errors: 400 ``invalid_sdp`` / ``no_audio``, 404 ``session_not_found``, 503 ``too_many_calls`` with
  ``Retry-After``.
- ``GET /v1/rtc/calls/{call_id}`` -> state and counters; ``DELETE /v1/rtc/calls/{call_id}`` hangs up.

Events on the ``events`` data channel, JSON objects with a ``type``:

server -> client
  ``call_started`` {call_id, session_id, language}   ``listening``   ``user_speaking``
  ``transcript`` {text, language, final: bool, turn}  ``thinking`` {turn}
  ``reply_text`` {delta, turn}   ``speaking`` {turn, text}   ``reply_done`` {turn, text, cut: bool}
  ``interrupted`` {turn}   ``idle``   ``turn_timings`` {turn, timings_ms: {...}}
  ``error`` {error: {code, message}}   ``call_ended`` {reason}
client -> server
  ``text`` {text, language?}  (a typed message inside the call)   ``stop`` (cut the reply in flight)
  ``hangup``
"""

from __future__ import annotations

import json
from typing import Any

EVENTS_CHANNEL = "events"

# server -> client
CALL_STARTED = "call_started"
LISTENING = "listening"
USER_SPEAKING = "user_speaking"
TRANSCRIPT = "transcript"
THINKING = "thinking"
REPLY_TEXT = "reply_text"
SPEAKING = "speaking"
REPLY_DONE = "reply_done"
INTERRUPTED = "interrupted"
IDLE = "idle"
TURN_TIMINGS = "turn_timings"
ERROR = "error"
CALL_ENDED = "call_ended"

# client -> server
TEXT = "text"
STOP = "stop"
HANGUP = "hangup"


def encode(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields}, ensure_ascii=False, separators=(",", ":"))


def decode(message: str | bytes, max_chars: int) -> dict[str, Any] | None:
    """A client message as a dict, or None when it is not one we understand (ignored, never fatal)."""
    if isinstance(message, bytes):
        try:
            message = message.decode()
        except UnicodeDecodeError:
            return None
    if len(message) > max_chars:
        return None
    try:
        value = json.loads(message)
    except ValueError:
        return None
    return value if isinstance(value, dict) and isinstance(value.get("type"), str) else None
