"""The ``Server-Timing`` response header (W3C Server Timing): ``name;dur=<ms>;desc="..."``, comma-separated.

``/v1/render`` sends its per-stage times in it; the evaluator (``--target``) reads them back. Both ends use
this module, so the writer and the reader cannot drift apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

HEADER = "Server-Timing"
# A metric name is an RFC 7230 token; a parameter value is a token or a quoted string.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class ServerTimingError(ValueError):
    """The header is not valid Server-Timing syntax."""


def format_server_timing(metrics: dict[str, tuple[float, str]]) -> str:
    """``{"tts": (812.34, "speech synthesis")}`` -> ``tts;dur=812.3;desc="speech synthesis"``."""
    entries = []
    for name, (duration_ms, description) in metrics.items():
        if not _TOKEN.match(name):
            raise ValueError(f"not a Server-Timing metric name: {name!r}")
        quoted = description.replace("\\", "\\\\").replace('"', '\\"')
        entries.append(f'{name};dur={duration_ms:.1f};desc="{quoted}"')
    return ", ".join(entries)


def _split(text: str, separator: str) -> Iterator[str]:
    """``text`` cut at ``separator`` outside quoted strings (a description may hold commas)."""
    start, quoted, escaped = 0, False, False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            yield text[start:i]
            start = i + 1
    if quoted:
        raise ServerTimingError(f"unterminated quoted string in {text!r}")
    yield text[start:]


def parse_server_timing(header: str) -> dict[str, float]:
    """Metric name -> ``dur`` in ms. A metric without ``dur`` is left out (the spec allows one: it only
    names something); of repeated ``dur`` values (in one entry or a repeated name) the first counts;
    descriptions are ignored."""
    durations: dict[str, float] = {}
    for entry in _split(header, ","):
        if not entry.strip():
            continue
        name, *params = (piece.strip() for piece in _split(entry, ";"))
        if not _TOKEN.match(name):
            raise ServerTimingError(f"bad metric name {name!r} in Server-Timing {header!r}")
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() != "dur" or name in durations:
                continue
            try:
                duration = float(value.strip().strip('"'))
            except ValueError:
                duration = math.nan
            if not math.isfinite(duration):
                raise ServerTimingError(f"bad dur {value!r} for {name!r} in Server-Timing {header!r}")
            durations[name] = duration
    return durations
