"""Per-scenario median / p95 / std over runs, as a printed table, Markdown, and a trend plot."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

SUMMARY_METRICS = (
    "total_generation_ms", "tts_ms", "avatar_render_ms", "real_time_factor", "speaker_similarity",
    "f0_rmse_hz", "language_correctness_1_1", "lip_sync_coherence_0_1", "asr_wer",
    "lip_sync_words_0_1", "f0_median_st_vs_reference", "f0_median_st_vs_golden",
)


def load_runs(output_dir: Path) -> list[dict[str, Any]]:
    runs = [json.loads(path.read_text()) for path in sorted(output_dir.glob("*.json"))]
    return sorted(runs, key=lambda run: run["run_id"])


def summarize(runs: list[dict[str, Any]], extra: tuple[str, ...] = ()) -> str:
    """Markdown table: one row per scenario, each cell median / p95 / std (population) across the runs;
    ``extra`` metrics get columns after the usual ones (the API run's client times)."""
    metrics = (*SUMMARY_METRICS, *extra)
    by_scenario: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_scenario[run["scenario"]].append(run["metrics"])
    header = "| scenario | runs | " + " | ".join(metrics) + " |"
    lines = ["median / p95 / std per scenario", "", header, "|" + "---|" * (len(metrics) + 2)]
    for scenario, values in by_scenario.items():
        cells = []
        for key in metrics:
            series = np.array([v[key] for v in values if v.get(key) is not None], float)
            series = series[np.isfinite(series)]
            if series.size == 0:
                cells.append("-")
                continue
            stats = (np.median(series), np.percentile(series, 95), np.std(series))
            cells.append(" / ".join(_number(value) for value in stats))
        lines.append(f"| {scenario} | {len(values)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    if abs(value) < 1e-9:  # float noise in the std of identical values
        return "0"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def plot_trends(runs: list[dict[str, Any]], path: Path) -> None:
    """Latency and quality of every stored run, in run order, one line per scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = ("total_generation_ms", "real_time_factor", "speaker_similarity", "f0_rmse_hz",
              "lip_sync_coherence_0_1", "lip_sync_words_0_1", "f0_median_st_vs_reference")
    figure, axes = plt.subplots(len(panels), 1, figsize=(9, 2.4 * len(panels)), sharex=False)
    by_scenario: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_scenario[run["scenario"]].append(run["metrics"])
    for axis, key in zip(axes, panels, strict=True):
        for scenario, values in by_scenario.items():
            # Older runs may lack a metric, and f0_rmse_hz may be null: NaN leaves a gap.
            series = [np.nan if v.get(key) is None else v[key] for v in values]
            axis.plot(series, marker="o", label=scenario)
        axis.set_ylabel(key, fontsize=8)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize=7, ncol=3)
    axes[-1].set_xlabel("run (oldest first, per scenario)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
