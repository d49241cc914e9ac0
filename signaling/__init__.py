"""The signaling service: serves the /avatar page, issues session tokens, guards cost, wakes the GPU
runtime and relays chat to it. Its own process and dependency set (starlette, uvicorn, httpx)."""

from .app import create_app
from .config import Settings

__all__ = ["Settings", "create_app"]
