"""Short-lived TURN credentials for the visitor's browser (TURN REST scheme, coturn ``use-auth-secret``).

The relay and this service share a secret; a credential is ``<expiry>:<session id>`` with the base64
HMAC-SHA1 of it under that secret as its password, so the relay can check it without a user database and
refuses it after the expiry. Binding it to the conversation means a leaked credential names whose it was
and dies with the token's lifetime.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any


def browser_ice_server(urls: tuple[str, ...], secret: str, session_id: str, ttl_s: float,
                       now: float | None = None) -> dict[str, Any]:
    """One RTCIceServer entry (as JSON) for the relay, valid for ``ttl_s`` from ``now``."""
    name = f"{int((time.time() if now is None else now) + ttl_s)}:{session_id}"
    password = base64.b64encode(hmac.new(secret.encode(), name.encode(), hashlib.sha1).digest()).decode()
    return {"urls": list(urls), "username": name, "credential": password}


def is_relay(entry: Any) -> bool:
    """An ICE server entry that is a TURN relay (the runtime's own minted one is replaced by ours)."""
    urls = entry.get("urls") if isinstance(entry, dict) else None
    urls = [urls] if isinstance(urls, str) else urls or []
    return any(isinstance(u, str) and u.startswith(("turn:", "turns:")) for u in urls)
