"""A PNG contact sheet of the mouth on the frames where the words want a shape: one row per class
(o/u rounded, i/e spread, p/b/m closed, pause), frames picked at the middle of each such phoneme as the
lip-sync metric places it (whisper timing + G2P), each tile captioned with its time and measures. For a
p/b/m it is the least open frame within one frame of it, the frame the metric judges (a closure lasts a
frame or two, about whisper's timing error).

``python -m evaluator sheet [--text T] [--lang L] [--output out/eval/sheet.png]`` renders the text with
the configured engines and writes the sheet (and the MP4 beside it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engines.avatar.measure import FaceMeter
from evaluator.metrics import lipsync_words, phones
from realtime_avatar.pipeline import SpokenSegment

DEFAULT_TEXT = "Oh, we see the moon from my room. Meet me at noon."
ROWS = ((phones.ROUND, "o/u rounded"), (phones.SPREAD, "i/e spread"), (phones.BILABIAL, "p/b/m closed"),
        (lipsync_words.PAUSE, "pause"))
PER_ROW = 6
TILE = 128


def _runs(labels: np.ndarray, kind: str, openness: np.ndarray) -> list[int]:
    """The middle frame of each run of ``kind`` labels (for p/b/m: the frame the metric judges)."""
    if kind == phones.BILABIAL:
        return [int(i) for i in lipsync_words.closure_frames(openness, labels == kind)]
    index = np.flatnonzero(labels == kind)
    if not index.size:
        return []
    return [int(r[len(r) // 2]) for r in np.split(index, np.flatnonzero(np.diff(index) > 1) + 1)]


def contact_sheet(frames: np.ndarray, fps: float, pcm: np.ndarray, sample_rate: int,
                  said: Sequence[SpokenSegment], asr: Any, path: Path) -> dict[str, list[int]]:
    """Write the sheet to ``path``; returns the frame indices shown per class."""
    meter = FaceMeter()
    measured = [meter.measure(frame) for frame in frames]
    labels, _ = lipsync_words.speech_targets(pcm, sample_rate, said, asr, len(frames), fps)
    shown: dict[str, list[int]] = {}
    rows = []
    for kind, title in ROWS:
        picks = _runs(labels, kind, np.array([m.mouth_open for m in measured]))
        if len(picks) > PER_ROW:  # spread over the clip
            picks = [picks[i] for i in np.linspace(0, len(picks) - 1, PER_ROW).round().astype(int)]
        shown[kind] = picks
        tiles = [_title_tile(title)]
        for i in picks:
            tiles.append(_mouth_tile(frames[i], measured[i], f"{i / fps:.2f}s"))
        tiles += [np.full((TILE, TILE, 3), 255, np.uint8)] * (PER_ROW + 1 - len(tiles))
        rows.append(np.concatenate(tiles, axis=1))
    sheet = np.concatenate(rows, axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return shown


def _title_tile(title: str) -> np.ndarray:
    tile = np.full((TILE, TILE, 3), 255, np.uint8)
    cv2.putText(tile, title, (4, TILE // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return tile


def _mouth_tile(frame: np.ndarray, measured: Any, caption: str) -> np.ndarray:
    """The lower face around the mouth (twice the mouth width square), scaled to a tile."""
    mouth = measured.landmarks[48:68]
    centre = mouth.mean(axis=0)
    half = max(float(np.ptp(mouth[:, 0])), 8.0)
    x0, y0 = int(max(centre[0] - half, 0)), int(max(centre[1] - half, 0))
    crop = frame[y0: int(centre[1] + half), x0: int(centre[0] + half)]
    tile = cv2.resize(np.ascontiguousarray(crop), (TILE, TILE), interpolation=cv2.INTER_CUBIC)
    lines = (caption, f"o {measured.mouth_open:.2f} w {measured.mouth_width:.2f} "
                      f"r {measured.mouth_round:.2f}")
    cv2.rectangle(tile, (0, TILE - 26), (TILE, TILE), (255, 255, 255), -1)
    for row, text in enumerate(lines):
        cv2.putText(tile, text, (2, TILE - 15 + 12 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return tile
