"""Settings of the signaling service: defaults here, overridden by ``SIGNALING_*`` environment variables,
then by command-line flags. Kept free of the runtime's settings code so this service installs with
starlette/uvicorn/httpx only (it runs on a small CPU instance with no torch or Ray)."""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREFIX = "SIGNALING_"
WEB_DIST = Path(__file__).resolve().parent.parent / "web" / "dist"
LANGUAGES = ("auto", "en", "zh", "es")


@dataclass(frozen=True)
class Settings:
    runtime_url: str = "http://127.0.0.1:8000"
    runtime_api_key: str = ""  # the runtime's serve.api_key, sent on every call to it; empty: none
    host: str = "127.0.0.1"
    port: int = 8080
    # Origins (scheme://host[:port]) besides the page's own that may call the API from a browser.
    allowed_origins: tuple[str, ...] = ()
    # HMAC key for session tokens; empty: a random key per process (tokens die with the process).
    secret: str = ""
    token_ttl_s: float = 600.0
    sessions_per_minute: int = 6  # per client IP
    messages_per_minute: int = 30  # per client IP (chat messages and greetings)
    offers_per_minute: int = 10  # per client IP: calls started (each costs the runtime a peer connection)
    max_sessions: int = 8  # concurrent conversations through this instance
    max_session_minutes: float = 15.0  # a conversation's lifetime, however active
    # Voice calls through this instance at once (the runtime has its own realtime.max_calls), and how long
    # one may last before it is hung up (the conversation goes on; the visitor may call again).
    max_calls: int = 4
    max_call_minutes: float = 15.0
    wake_timeout_s: float = 180.0  # how long a cold runtime may take to answer /readyz before we say "down"
    stream_idle_timeout_s: float = 120.0  # longest silence inside a streamed reply before it is cut
    trusted_proxies: int = 0  # proxies in front that append to X-Forwarded-For (Cloud Run: 1)
    max_body_bytes: int = 16384
    web_dir: Path = WEB_DIST
    # The TURN relay for visitors behind strict NATs (comma-separated turn:/turns: URLs) and the secret it
    # shares with this service (coturn's static-auth-secret); each conversation gets its own credential,
    # valid turn_ttl_s. None set: the runtime's ICE list is passed on as is.
    turn_urls: tuple[str, ...] = ()
    turn_secret: str = ""
    turn_ttl_s: float = 600.0
    ice_transport_policy: str = ""  # "relay" forces the page onto the relay; empty: the runtime's choice
    log_level: str = "INFO"
    secret_generated: bool = field(default=False, compare=False)

    @property
    def secret_key(self) -> bytes:
        return self.secret.encode()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """``SIGNALING_<FIELD>`` for each field (``SIGNALING_ALLOWED_ORIGINS`` is comma-separated);
        ``overrides`` (e.g. CLI flags) win over the environment; ``None`` overrides are ignored."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "secret_generated":
                continue
            name = PREFIX + f.name.upper()
            if overrides.get(f.name) is not None:
                values[f.name] = overrides[f.name]
            elif environ.get(name, "").strip():
                values[f.name] = _parse(name, environ[name].strip(), f.type)
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        if not values.get("secret"):
            values["secret"] = secrets.token_urlsafe(32)
            values["secret_generated"] = True
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        for name in ("token_ttl_s", "max_session_minutes", "max_call_minutes", "wake_timeout_s",
                     "stream_idle_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{PREFIX}{name.upper()} must be > 0")
        for name in ("sessions_per_minute", "messages_per_minute", "offers_per_minute", "max_sessions",
                     "max_calls", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{PREFIX}{name.upper()} must be >= 1")
        if self.trusted_proxies < 0:
            raise ValueError(f"{PREFIX}TRUSTED_PROXIES must be >= 0")
        if not self.runtime_url.startswith(("http://", "https://")):
            raise ValueError(f"{PREFIX}RUNTIME_URL must be an http(s) URL, got {self.runtime_url!r}")
        if self.turn_urls and not self.turn_secret:
            raise ValueError(f"{PREFIX}TURN_URLS needs {PREFIX}TURN_SECRET (the relay's static-auth-secret)")
        for url in self.turn_urls:
            if not url.startswith(("turn:", "turns:")):
                raise ValueError(f"{PREFIX}TURN_URLS: {url!r} is not a turn: or turns: URL")
        if not 60 <= self.turn_ttl_s <= 86_400:
            raise ValueError(f"{PREFIX}TURN_TTL_S must be between 60 and 86400 seconds")
        if self.ice_transport_policy not in ("", "all", "relay"):
            raise ValueError(f"{PREFIX}ICE_TRANSPORT_POLICY must be all or relay")
        if self.ice_transport_policy == "relay" and not self.turn_urls:
            raise ValueError(f"{PREFIX}ICE_TRANSPORT_POLICY=relay needs {PREFIX}TURN_URLS")
        for origin in self.allowed_origins:
            if not origin.startswith(("http://", "https://")) or origin.endswith("/"):
                raise ValueError(f"{PREFIX}ALLOWED_ORIGINS: {origin!r} is not an origin (scheme://host[:port])")


def _parse(name: str, raw: str, kind: Any) -> Any:
    kind = str(kind)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw)
        if kind.startswith("tuple"):
            return tuple(part.strip().rstrip("/") for part in raw.split(",") if part.strip())
        return raw
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected {kind}") from None
