"""The evaluator/benchmark scenarios, loaded from ``scenarios.yaml``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

SCENARIOS_FILE = Path(__file__).resolve().parent / "scenarios.yaml"


@dataclass(frozen=True)
class Scenario:
    name: str
    text: str
    language: str
    languages: tuple[str, ...]


def load_scenarios(path: Path = SCENARIOS_FILE) -> list[Scenario]:
    return [
        Scenario(item["name"], item["text"], item["language"], tuple(item["languages"]))
        for item in yaml.safe_load(path.read_text())
    ]
