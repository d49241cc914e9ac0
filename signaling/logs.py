"""Structured logs: one JSON object per line on stderr, tagged with the request id and, once known, the
conversation's session id. What visitors say (and their raw IP address) is never logged."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("signaling_request_id", default="-")
session_id: contextvars.ContextVar[str] = contextvars.ContextVar("signaling_session_id", default="-")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, Any] = {
            "ts": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            "request_id": request_id.get(),
            "session_id": session_id.get(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own loggers go through the same handler; its access log is replaced by ours (no IPs).
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs every request line at INFO


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """One log line; the ids are taken now, in the request's context (a handler may format it later)."""
    ids = {"request_id": request_id.get(), "session_id": session_id.get()}
    logger.log(level, name, extra={"fields": {**ids, **fields}})
