"""TURN REST credentials for the runtime's side of a call (coturn's ``use-auth-secret``).

The relay never stores users: a username is ``<expiry unix time>:<who>`` and its password is the
base64 HMAC-SHA1 of that username under the secret the relay shares with us, so the relay can check a
credential alone and refuses it once the expiry has passed. The runtime mints one per call for its own
allocation, and one per session for a client that asks ``/v1/rtc/config`` directly (the signaling service
mints the browser's from the same secret).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from realtime_avatar.config import IceServer, RealtimeSettings


def credential(secret: str, username: str) -> str:
    """The password the relay expects for ``username`` (RFC-less but universal: coturn, Twilio, ...)."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def username(who: str, ttl_s: float, now: float | None = None) -> str:
    expiry = int((time.time() if now is None else now) + ttl_s)
    return f"{expiry}:{who}"


def ice_servers(settings: RealtimeSettings, who: str, now: float | None = None) -> list[IceServer]:
    """The configured STUN/TURN servers, plus the TURN relay with a credential for ``who`` that expires
    after ``turn.ttl_s``."""
    servers = list(settings.ice_servers)
    turn = settings.turn
    if turn.urls:
        name = username(who, turn.ttl_s, now)
        password = credential(turn.secret, name)
        servers.append(IceServer(urls=list(turn.urls), username=name, credential=password))
    return servers
