"""The golden pitch run: F0 statistics per scenario of one pinned build, stored in the repo
(``evaluator/golden/f0.json``, numbers only, no audio), so pitch regressions show up as
``f0_*_vs_golden``. Written only on purpose by ``python -m evaluator golden``; runs whose engines,
options or reference voice differ from the golden's (another ``config_key``) are not compared (null).
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from evaluator.metrics.pitch import F0Stats

GOLDEN_FILE = Path(__file__).resolve().parent / "golden" / "f0.json"


def load_golden(config_key: str, path: Path = GOLDEN_FILE) -> dict[str, F0Stats]:
    if not path.exists():
        return {}
    stored = json.loads(path.read_text())
    if stored.get("config_key") != config_key:
        return {}
    return {name: F0Stats.from_dict(values) for name, values in stored["scenarios"].items()}


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_golden(config_key: str, stats: dict[str, F0Stats], path: Path = GOLDEN_FILE) -> None:
    document = {
        "about": "F0 statistics of one render per scenario; rewrite on purpose: python -m evaluator golden",
        "build": _commit(), "written": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config_key": config_key,
        "scenarios": {name: {k: None if v is None else round(v, 3) for k, v in s.to_dict().items()}
                      for name, s in stats.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
