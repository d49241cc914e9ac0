"""lip_sync_words_0_1: does the drawn mouth make the shapes of the words that were said, when they were said?

Nothing here reads the motion track or the audio's loudness (which is what drives today's mouth):

1. *When*: whisper word timestamps on the output audio (the project's ASR engine). Text words are matched
   to heard words in order (difflib on normalised spellings); only matched words are judged (where a
   misheard word's phonemes fall is unknown: its frames are left out, and the share matched is reported).
2. *What*: the text's G2P (``phones``) places each word's phonemes inside its span by weight.
3. Per video frame (centre time) a target: ``pause`` (inside no heard word), ``bilabial`` (p/b/m),
   ``open`` / ``round`` / ``spread`` vowels, or other (consonants, schwa: not judged).
4. The mouth on the decoded frames (dlib landmarks, ``FaceMeter``): openness, width, roundness.

Each part is an AUC turned into 0..1 (``2 * AUC - 1``, clipped at 0; chance and a still mouth are 0):

- ``pause_closed``: vowel frames are more open than pause frames
- ``bilabial_closed``: vowel frames are more open than each p/b/m is at its most closed (within a frame)
- ``rounded``: rounded-vowel frames (o/u) have rounder lips (height/width) than spread-vowel frames (i/e)
- ``spread``: spread-vowel frames have wider lips than rounded-vowel frames

The score is the mean of the parts that have at least ``MIN_FRAMES`` frames in both groups (None when no
part has). No lag is searched: the frame at time t is judged against the speech at time t.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engines.avatar.measure import FaceMeter, VideoMeasurement
from evaluator.metrics import phones
from realtime_avatar.pipeline import SpokenSegment

PAUSE = "pause"
MIN_FRAMES = 4
LAG_SEARCH_FRAMES = 6
SILENCE_DB = -35.0  # below the clip's loudest 10 ms by this much: no speech (only to trim whisper's onsets)
GAP_S = 0.15  # a silence this long is a pause
PARTS = ("pause_closed", "bilabial_closed", "rounded", "spread")


@dataclass(frozen=True)
class HeardWord:
    start: float
    end: float
    word: str


@dataclass(frozen=True)
class PlacedPhone:
    start: float
    end: float
    kind: str


@dataclass(frozen=True)
class LipSyncResult:
    score: float | None
    parts: dict[str, float | None]
    words_matched_share: float  # text words whisper heard as such (the rest were placed between them)
    frames_judged: dict[str, int]  # frames per target class
    # Diagnostic, not in the score: the shift of the targets (ms; > 0: the mouth trails the speech)
    # within +-LAG_SEARCH_FRAMES that would score best. A well-synced mouth has it near 0.
    best_lag_ms: float | None = None

    def to_metrics(self) -> dict[str, Any]:
        def r(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {"lip_sync_words_0_1": r(self.score),
                "lip_sync_words_parts": {key: r(value) for key, value in self.parts.items()},
                "lip_sync_words_matched_share": round(self.words_matched_share, 4),
                "lip_sync_words_best_lag_ms": self.best_lag_ms}


def heard_words(asr: Any, pcm: np.ndarray, sample_rate: int, segment: SpokenSegment,
                whole: bool) -> list[HeardWord]:
    """Whisper's words for one language run (all of the audio when ``whole``), in clip time. Mandarin
    words are split into characters, each an equal share of the word's span."""
    offset = 0.0 if whole else segment.start_s
    piece = pcm if whole else pcm[int(segment.start_s * sample_rate): int(segment.end_s * sample_rate)]
    transcript = asr.transcribe(piece, sample_rate, language=segment.language)
    out = []
    for word in (w for s in transcript.segments for w in s.words):
        start, end = word.start + offset, word.end + offset
        if segment.language == "zh":
            chars = phones.text_words(word.word, "zh")
            step = (end - start) / max(len(chars), 1)
            out += [HeardWord(start + i * step, start + (i + 1) * step, c) for i, c in enumerate(chars)]
        elif phones.normalize(word.word):
            out.append(HeardWord(start, end, word.word))
    return trim_to_sound(out, pcm, sample_rate)


def _loudness(pcm: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
    """RMS per 10 ms and the silence floor (``SILENCE_DB`` under the loudest 10 ms)."""
    hop = max(sample_rate // 100, 1)
    n = pcm.size // hop
    frames = pcm[: n * hop].astype(np.float64).reshape(n, hop)
    rms = np.sqrt(np.mean(frames**2, axis=1)) if n else np.zeros(0)
    return rms, (float(rms.max()) * 10 ** (SILENCE_DB / 20) if n else 0.0)


def trim_to_sound(words: list[HeardWord], pcm: np.ndarray, sample_rate: int) -> list[HeardWord]:
    """Whisper's word spans stretch over neighbouring silence (with 1 s of leading silence it starts the
    first word 0.4 s early; a word before a pause often ends inside it): each word is cut to the part of
    its span where the audio is above the silence floor (a word with no sound keeps its span)."""
    rms, floor = _loudness(pcm, sample_rate)
    out = []
    for word in words:
        a = int(word.start * 100)
        loud = np.flatnonzero(rms[a: max(int(np.ceil(word.end * 100)), a + 1)] > floor)
        if loud.size:
            word = HeardWord(max(word.start, (a + loud[0]) / 100), min(word.end, (a + loud[-1] + 1) / 100),
                             word.word)
        out.append(word)
    return out


def silences(pcm: np.ndarray, sample_rate: int) -> list[tuple[float, float]]:
    """Stretches of at least ``GAP_S`` below the silence floor: pauses, even inside a word's span (too
    long for a stop closure, which lasts well under 100 ms)."""
    rms, floor = _loudness(pcm, sample_rate)
    quiet = np.concatenate([[False], rms <= floor, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(int)))
    runs = zip(edges[::2], edges[1::2], strict=True)
    return [(a / 100, b / 100) for a, b in runs if (b - a) / 100 >= GAP_S]


def _spread_over(words: list[str], language: str, start: float, end: float) -> list[PlacedPhone]:
    sequences = [phones.word_phones(w, language) for w in words]
    total = sum(p.weight for seq in sequences for p in seq)
    if total <= 0 or end <= start:
        return []
    placed, t, scale = [], start, (end - start) / total
    for phone in (p for seq in sequences for p in seq):
        placed.append(PlacedPhone(t, t + phone.weight * scale, phone.kind))
        t += phone.weight * scale
    return placed


def place_phones(text_words: list[str], language: str,
                 heard: list[HeardWord]) -> tuple[list[PlacedPhone], int]:
    """The phonemes of the text words whisper heard, on its timeline, and how many words that was."""
    if not text_words or not heard:
        return [], 0
    keys_text = [phones.normalize(w) for w in text_words]
    keys_heard = [phones.normalize(w.word) for w in heard]
    blocks = difflib.SequenceMatcher(a=keys_text, b=keys_heard, autojunk=False).get_matching_blocks()
    placed: list[PlacedPhone] = []
    matched = 0
    for block in blocks:
        for k in range(block.size):
            word = heard[block.b + k]
            placed += _spread_over([text_words[block.a + k]], language, word.start, word.end)
        matched += block.size
    return placed, matched


def frame_targets(n_frames: int, fps: float, heard: list[HeardWord], placed: list[PlacedPhone],
                  quiet: list[tuple[float, float]] = ()) -> np.ndarray:
    """Per frame: the class of the phone at the frame's centre; ``pause`` outside every heard word and
    in ``quiet`` stretches; "" inside a heard word no text phoneme was placed in."""
    times = (np.arange(n_frames) + 0.5) / fps
    labels = np.full(n_frames, PAUSE, dtype=object)
    for word in heard:
        labels[(times >= word.start) & (times < word.end)] = ""
    for phone in placed:
        inside = (times >= phone.start) & (times < phone.end)
        if not inside.any() and phone.kind == phones.BILABIAL:  # a closure shorter than a frame: the
            inside = np.arange(n_frames) == int((phone.start + phone.end) / 2 * fps)  # one it falls in
        labels[inside] = phone.kind
    for start, end in quiet:
        labels[(times >= start) & (times < end)] = PAUSE
    return labels


def separation(high: np.ndarray, low: np.ndarray) -> float | None:
    """2 * AUC - 1 (clipped at 0) for "values in ``high`` exceed values in ``low``"; ties count half,
    so a constant measure is 0. None with fewer than ``MIN_FRAMES`` in either group."""
    if len(high) < MIN_FRAMES or len(low) < MIN_FRAMES:
        return None
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([high, low]))
    auc = (ranks[: len(high)].sum() - len(high) * (len(high) + 1) / 2) / (len(high) * len(low))
    return float(np.clip(2.0 * auc - 1.0, 0.0, 1.0))


def score_mouth(mouth: VideoMeasurement, labels: np.ndarray, words_matched_share: float,
                fps: float | None = None) -> LipSyncResult:
    """The score of ``mouth`` against per-frame ``labels``; with ``fps``, also the best-lag diagnostic."""
    result = _score(mouth, labels, words_matched_share)
    if fps is None:
        return result
    lags = range(-LAG_SEARCH_FRAMES, LAG_SEARCH_FRAMES + 1)
    scored = [(_score(mouth, _delay(labels, lag), 1.0).score, lag) for lag in lags]
    best = max(((score, -abs(lag), lag) for score, lag in scored if score is not None), default=None)
    lag_ms = None if best is None else round(best[2] * 1000.0 / fps, 1)
    return LipSyncResult(result.score, result.parts, result.words_matched_share, result.frames_judged, lag_ms)


def _delay(labels: np.ndarray, frames: int) -> np.ndarray:
    """``labels`` moved ``frames`` later (earlier when negative), the vacated frames unjudged."""
    out = np.full(len(labels), "", dtype=object)
    if frames >= 0:
        out[frames:] = labels[: len(labels) - frames]
    else:
        out[:frames] = labels[-frames:]
    return out


def _window_min(values: np.ndarray) -> np.ndarray:
    padded = np.concatenate([values[:1], values, values[-1:]])
    return np.minimum(np.minimum(padded[:-2], padded[1:-1]), padded[2:])


def _closure_minima(mouth_open: np.ndarray, bilabial: np.ndarray) -> np.ndarray:
    """Per p/b/m (a run of bilabial frames): the least openness within one frame of it. A closure lasts
    one or two frames, about whisper's timing error, so it is judged with that tolerance."""
    index = np.flatnonzero(bilabial)
    if not index.size:
        return np.zeros(0, np.float32)
    runs = np.split(index, np.flatnonzero(np.diff(index) > 1) + 1)
    return np.array([mouth_open[max(r[0] - 1, 0): r[-1] + 2].min() for r in runs], np.float32)


def _score(mouth: VideoMeasurement, labels: np.ndarray, words_matched_share: float) -> LipSyncResult:
    vowels = np.isin(labels, phones.VOWEL_CLASSES)
    rounded, spread = labels == phones.ROUND, labels == phones.SPREAD
    pause, bilabial = labels == PAUSE, labels == phones.BILABIAL
    parts = {
        "pause_closed": separation(mouth.mouth_open[vowels], mouth.mouth_open[pause]),
        # Vowel frames through the same +-1 frame minimum, so a mouth moving at random scores 0 here too.
        "bilabial_closed": separation(_window_min(mouth.mouth_open)[vowels],
                                      _closure_minima(mouth.mouth_open, bilabial)),
        "rounded": separation(mouth.mouth_round[rounded], mouth.mouth_round[spread]),
        "spread": separation(mouth.mouth_width[spread], mouth.mouth_width[rounded]),
    }
    known = [value for value in parts.values() if value is not None]
    counts = {kind: int((labels == kind).sum()) for kind in (PAUSE, phones.BILABIAL, *phones.VOWEL_CLASSES)}
    return LipSyncResult(float(np.mean(known)) if known else None, parts, words_matched_share, counts)


def speech_targets(pcm: np.ndarray, sample_rate: int, said: Sequence[SpokenSegment], asr: Any,
                   n_frames: int, fps: float) -> tuple[np.ndarray, float]:
    """Per-frame targets from the audio and the text (one language run per ``said`` segment; with more
    than one, each is transcribed on its own span of the audio, as the language metric does)."""
    heard_all: list[HeardWord] = []
    placed_all: list[PlacedPhone] = []
    matched = total = 0
    for segment in said:
        heard = heard_words(asr, pcm, sample_rate, segment, whole=len(said) == 1)
        words = phones.text_words(segment.text, segment.language)
        placed, n = place_phones(words, segment.language, heard)
        heard_all += heard
        placed_all += placed
        matched, total = matched + n, total + len(words)
    labels = frame_targets(n_frames, fps, heard_all, placed_all, silences(pcm, sample_rate))
    return labels, matched / max(total, 1)


def lip_sync_words(frames: np.ndarray, fps: float, pcm: np.ndarray, sample_rate: int,
                   said: Sequence[SpokenSegment], asr: Any,
                   mouth: VideoMeasurement | None = None) -> LipSyncResult:
    """Frames + audio + text -> the score and its parts (``mouth``: frames already measured)."""
    mouth = mouth if mouth is not None else FaceMeter().measure_video(frames)
    labels, share = speech_targets(pcm, sample_rate, said, asr, len(mouth.mouth_open), fps)
    return score_mouth(mouth, labels, share, fps)
