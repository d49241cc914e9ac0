"""Session tokens: ``v1.<claims>.<mac>``, base64url JSON claims signed with HMAC-SHA256.

The claims carry the runtime's session id, the token's expiry (``exp``) and the conversation's hard end
(``end``, the minutes-per-session cap), so any instance holding the secret can check a token without
shared state. Tokens are bearer credentials: short-lived, refreshed by the page, never logged."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

VERSION = "v1"


class TokenError(Exception):
    """A token the service refuses: ``status`` and ``code`` are what the API answers."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Claims:
    sid: str  # the runtime's session id
    iat: float
    exp: float
    end: float  # the conversation may not outlive this (unix seconds)

    def as_dict(self) -> dict[str, Any]:
        return {"sid": self.sid, "iat": round(self.iat, 3), "exp": round(self.exp, 3),
                "end": round(self.end, 3)}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, signed: str) -> bytes:
    return hmac.new(secret, signed.encode(), hashlib.sha256).digest()


def issue(secret: bytes, sid: str, ttl_s: float, end: float, now: float | None = None) -> tuple[str, Claims]:
    """A token for ``sid`` valid for ``ttl_s``, never past the conversation's ``end``."""
    now = time.time() if now is None else now
    claims = Claims(sid=sid, iat=now, exp=min(now + ttl_s, end), end=end)
    payload = _b64(json.dumps(claims.as_dict(), separators=(",", ":")).encode())
    signed = f"{VERSION}.{payload}"
    return f"{signed}.{_b64(_mac(secret, signed))}", claims


def verify(secret: bytes, token: str, now: float | None = None) -> Claims:
    """The token's claims, or TokenError: 401 for a malformed, forged or expired token, 403 once the
    conversation has used up its minutes (a new token would not help: the page must start a new one)."""
    now = time.time() if now is None else now
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION:
        raise TokenError(401, "invalid_token", "the session token is malformed")
    signed = f"{parts[0]}.{parts[1]}"
    try:
        mac = _unb64(parts[2])
    except ValueError:
        raise TokenError(401, "invalid_token", "the session token is malformed") from None
    # Constant-time comparison: a forger learns nothing from how long a refusal takes.
    if not hmac.compare_digest(mac, _mac(secret, signed)):
        raise TokenError(401, "invalid_token", "the session token's signature does not match")
    try:
        raw = json.loads(_unb64(parts[1]))
        claims = Claims(sid=str(raw["sid"]), iat=float(raw["iat"]), exp=float(raw["exp"]),
                        end=float(raw["end"]))
    except (ValueError, KeyError, TypeError):
        raise TokenError(401, "invalid_token", "the session token's claims are unreadable") from None
    if now >= claims.end:
        raise TokenError(403, "session_time_limit",
                         "this conversation has reached its time limit; start a new one")
    if now >= claims.exp:
        raise TokenError(401, "token_expired", "the session token has expired; start a new conversation")
    return claims
