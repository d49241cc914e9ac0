"""lip_sync_words_0_1: does the drawn mouth make the shapes of the words that were said, when they were said?

Nothing here reads the motion track, and the mouth is never compared with the audio's loudness (which
is what drives the default mouth); the audio's level only helps place the words (step 1):

1. *When*: whisper word timestamps on the output audio (the project's ASR engine), each word cut to its
   sound, the boundary between two touching words moved to the silence or level dip within 250 ms of it
   (whisper's own boundary there is often 100-280 ms early), a word before a gap carried on to the end
   of its sound (whisper often ends it inside its last vowel), silences of ``GAP_S`` or more counted as
   pauses. Text words are matched to heard words in order (difflib on normalised spellings); only
   matched words are judged (where a misheard word's phonemes fall is unknown: its frames are left out,
   and the share matched is reported).
2. *What*: the text's G2P (``phones``) places each word's phonemes inside its span by weight.
3. Per video frame (centre time) a target: ``pause`` (inside no heard word), ``bilabial`` (p/b/m),
   ``open`` / ``round`` / ``spread`` vowels, other consonants, neutral vowels (schwa).
4. The mouth on the decoded frames (dlib landmarks, ``FaceMeter``): openness, width, roundness.

Parts, each 0..1 (chance and a still mouth are 0):

- ``timing`` (*when*): Pearson r of openness with the openness the targets ask for (closed 0, consonant
  1/3, neutral vowel 2/3, full vowel 1) at lag 0 +- ``TIMING_TOLERANCE_S``, clipped at 0, times the share
  of its best r over +-``TIMING_LAG_S`` that lag 0 reaches. A mouth in time peaks at lag 0; the same
  mouth 200 ms off peaks 200 ms away and scores ~0.
- *What*, each ``2 * AUC - 1`` clipped at 0:
  ``pause_closed``: vowel frames are more open than pause frames;
  ``bilabial_closed``: vowel frames are more open than each p/b/m is at its most closed (within a frame);
  ``rounded``: o/u frames have rounder lips (height/width) than i/e frames at an equal jaw opening;
  ``spread``: i/e frames have wider lips than o/u frames at an equal jaw opening ("at an equal jaw
  opening": less a line fitted over the clip on the inner gap over the eye-corner distance, so a mouth
  only more open on o/u is not "rounder").

The score is the geometric mean of ``timing`` and the mean of the *what* parts that have at least
``MIN_FRAMES`` frames in both groups (either alone when the other cannot be judged; None when none can).
No lag is searched for the score: the frame at time t is judged against the speech at time t.
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
TIMING_LAG_S = 0.4  # the timing part's correlation is looked at over lags of +-400 ms ...
TIMING_TOLERANCE_S = 0.04  # ... and read at lag 0 +- this (at least a frame): the alignment's error
SNAP_S = 0.25  # whisper's boundary between touching words moves at most this far (its errors: <= 0.28 s)
SNAP_SMOOTH = 3  # 10 ms steps of level smoothed when looking for a boundary's quietest point
TOUCHING_S = 0.05  # words closer than this touch (whisper gave them one boundary)
MIN_WORD_S = 0.05  # no word is shrunk below this by snapping
SILENCE_DB = -35.0  # below the clip's loudest 10 ms by this much: no speech (only to trim whisper's onsets)
GAP_S = 0.15  # a silence this long is a pause
FLAT = 1e-6  # a series with less spread than this is constant (float32 noise)
PARTS = ("timing", "pause_closed", "bilabial_closed", "rounded", "spread")


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
    # Where the timing part's correlation peaks (ms within +-TIMING_LAG_S; > 0: the mouth trails the
    # speech). A well-synced mouth has it near 0; None when nothing correlates.
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
    words = snap_boundaries(trim_to_sound(out, pcm, sample_rate), pcm, sample_rate)
    return extend_to_sound(words, pcm, sample_rate)


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


def snap_boundaries(words: list[HeardWord], pcm: np.ndarray, sample_rate: int) -> list[HeardWord]:
    """Whisper's boundary between two touching words is often 100-280 ms early (measured against the
    known spans of word-by-word synthesized speech: it puts the boundary inside the first word), as
    large as the 200 ms shift the score has to see. Each such boundary moves to the sound it marks
    within ``SNAP_S``: the longest silence there (the first word ends where it starts, the second
    starts where it ends), else the quietest 10 ms (smoothed over ``SNAP_SMOOTH`` steps). Each word
    keeps at least ``MIN_WORD_S``. Word order and the words themselves are whisper's."""
    rms, floor = _loudness(pcm, sample_rate)
    level = np.convolve(20 * np.log10(np.maximum(rms, 1e-9)), np.ones(SNAP_SMOOTH) / SNAP_SMOOTH, mode="same")
    out = list(words)
    for i in range(len(out) - 1):
        first, second = out[i], out[i + 1]
        if second.start - first.end > TOUCHING_S:
            continue
        middle = (first.end + second.start) / 2
        lo = int(max(first.start + MIN_WORD_S, middle - SNAP_S) * 100)
        hi = min(int(min(second.end - MIN_WORD_S, middle + SNAP_S) * 100), rms.size)
        if hi <= lo:
            continue
        quiet = np.flatnonzero(rms[lo:hi] <= floor)
        if quiet.size:
            run = max(np.split(quiet, np.flatnonzero(np.diff(quiet) > 1) + 1), key=len)
            a, b = lo + run[0], lo + run[-1] + 1
            while a > first.start * 100 and rms[a - 1] <= floor:  # the whole silence, past the window
                a -= 1
            while b < min(second.end * 100, rms.size) and rms[b] <= floor:
                b += 1
            end, start = a / 100, b / 100
        else:
            end = start = (lo + int(np.argmin(level[lo:hi]))) / 100
        out[i] = HeardWord(first.start, end, first.word)
        out[i + 1] = HeardWord(start, second.end, second.word)
    return out


def extend_to_sound(words: list[HeardWord], pcm: np.ndarray, sample_rate: int) -> list[HeardWord]:
    """A word before a gap ends where its sound does: the end moves on while the audio stays above the
    silence floor, never past the next word's start. Whisper often ends such a word inside its last
    vowel (好 in the male voice: 80 ms early), so the vowel's tail was judged a pause and a mouth still
    open on it lost. Checked against the bundled voices' own phone timing (which the metric never reads)
    on the four one-language scenarios in both voices: of the frames judged pauses, 154 of 338 lay
    inside a phone the voice was saying, and 105 of 289 with this; no frame the voices leave silent
    became speech."""
    rms, floor = _loudness(pcm, sample_rate)
    out = list(words)
    for i, word in enumerate(out):
        limit = out[i + 1].start if i + 1 < len(out) else rms.size / 100
        if limit - word.end <= TOUCHING_S:  # touching words: snap_boundaries placed that boundary
            continue
        end = int(np.ceil(word.end * 100))
        while end < min(int(limit * 100), rms.size) and rms[end] > floor:
            end += 1
        out[i] = HeardWord(word.start, max(word.end, end / 100), word.word)
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
    # p/b/m last: a closure shorter than a frame takes the frame its middle falls in, and is not then
    # overwritten by the vowel after it (which lost every closure of "more", "moving", "room" before).
    for phone in sorted(placed, key=lambda p: p.kind == phones.BILABIAL):
        inside = (times >= phone.start) & (times < phone.end)
        if not inside.any() and phone.kind == phones.BILABIAL:
            inside = np.arange(n_frames) == int((phone.start + phone.end) / 2 * fps)
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
                fps: float) -> LipSyncResult:
    """The score of ``mouth`` against per-frame ``labels`` (at ``fps``)."""
    timing, lag = timing_part(mouth.mouth_open, labels, fps)
    result = _score(mouth, labels, words_matched_share, timing)
    return LipSyncResult(result.score, result.parts, result.words_matched_share, result.frames_judged,
                         None if lag is None else round(lag * 1000.0 / fps, 1))


def expected_open(labels: np.ndarray) -> np.ndarray:
    """Per frame how open the words want the mouth, as a rank: closed (pause, p/b/m) 0, other
    consonants 1/3, neutral vowels 2/3, full vowels 1; NaN where nothing was placed (not judged)."""
    out = np.full(len(labels), np.nan)
    for kinds, value in (((PAUSE, phones.BILABIAL), 0.0), ((phones.CONSONANT,), 1 / 3),
                         ((phones.NEUTRAL,), 2 / 3), (phones.VOWEL_CLASSES, 1.0)):
        out[np.isin(labels, kinds)] = value
    return out


def lagged_correlation(mouth_open: np.ndarray, expected: np.ndarray, max_lag: int) -> np.ndarray:
    """Pearson r of openness and ``expected`` per lag in -max_lag..max_lag (lag > 0: the mouth trails
    the words), over the judged frames; 0 where either side is constant."""
    out = np.zeros(2 * max_lag + 1)
    for i, lag in enumerate(range(-max_lag, max_lag + 1)):
        mouth = mouth_open[max(lag, 0): len(mouth_open) + min(lag, 0)].astype(np.float64)
        want = expected[max(-lag, 0): len(expected) + min(-lag, 0)]
        judged = ~np.isnan(want)
        mouth, want = mouth[judged], want[judged]
        if mouth.size > 2 and np.ptp(mouth) > FLAT and np.ptp(want) > 0:
            out[i] = float(np.corrcoef(mouth, want)[0, 1])
    return out


def timing_part(mouth_open: np.ndarray, labels: np.ndarray, fps: float) -> tuple[float | None, int | None]:
    """Does the mouth open and close when the words do? The correlation of openness with
    ``expected_open`` at lag 0 (best within ``TIMING_TOLERANCE_S``, the alignment's error), clipped at 0,
    times the share of the best correlation over +-``TIMING_LAG_S`` that lag 0 reaches: a mouth in
    time peaks at 0; one 200 ms off peaks 200 ms away and is near 0 at lag 0. Returns the part and the
    peak's lag in frames (None when too few frames are judged)."""
    expected = expected_open(labels)
    if np.count_nonzero(~np.isnan(expected)) < 2 * MIN_FRAMES:
        return None, None
    max_lag = max(round(TIMING_LAG_S * fps), 1)
    tolerance = max(round(TIMING_TOLERANCE_S * fps), 1)
    r = lagged_correlation(mouth_open, expected, max_lag)
    near = float(r[max_lag - tolerance: max_lag + tolerance + 1].max())
    peak = float(r.max())
    if peak <= 0:
        return 0.0, None
    return float(np.clip(near, 0.0, 1.0) * np.clip(near / peak, 0.0, 1.0)), int(np.argmax(r)) - max_lag


def _window_min(values: np.ndarray) -> np.ndarray:
    padded = np.concatenate([values[:1], values, values[-1:]])
    return np.minimum(np.minimum(padded[:-2], padded[1:-1]), padded[2:])


def closure_frames(mouth_open: np.ndarray, bilabial: np.ndarray) -> np.ndarray:
    """Per p/b/m (a run of bilabial frames): the frame judged for it, the least open within one frame of
    it. A closure lasts one or two frames, about whisper's timing error, so it is judged with that
    tolerance."""
    index = np.flatnonzero(bilabial)
    if not index.size:
        return np.zeros(0, np.int64)
    runs = np.split(index, np.flatnonzero(np.diff(index) > 1) + 1)
    picks = []
    for run in runs:
        near = np.arange(max(run[0] - 1, 0), min(run[-1] + 2, len(mouth_open)))
        picks.append(near[np.argmin(mouth_open[near])])
    return np.array(picks, np.int64)


def at_equal_opening(values: np.ndarray, opening: np.ndarray) -> np.ndarray:
    """``values`` less what the jaw's ``opening`` explains of them (a line fitted over the clip): lip
    height/width grows with the gap and width shrinks as the jaw drops, so without this a mouth drawn
    a little more open on o/u than on i/e reads "rounder" with no rounding at all."""
    x, y = opening.astype(np.float64), values.astype(np.float64)
    if x.size < 2 or np.ptp(x) <= FLAT:
        return y
    slope, intercept = np.polyfit(x, y, 1)
    return y - (slope * x + intercept)


def _score(mouth: VideoMeasurement, labels: np.ndarray, words_matched_share: float,
           timing: float | None) -> LipSyncResult:
    vowels = np.isin(labels, phones.VOWEL_CLASSES)
    rounded, spread = labels == phones.ROUND, labels == phones.SPREAD
    pause, bilabial = labels == PAUSE, labels == phones.BILABIAL
    # The jaw's opening is the inner gap over the eye-corner distance (openness x width), not openness:
    # openness is over the mouth's own width, which rounding narrows, so it would take rounding out too.
    opening = mouth.mouth_open * mouth.mouth_width
    roundness = at_equal_opening(mouth.mouth_round, opening)
    width = at_equal_opening(mouth.mouth_width, opening)
    shape = {
        "pause_closed": separation(mouth.mouth_open[vowels], mouth.mouth_open[pause]),
        # Vowel frames through the same +-1 frame minimum, so a mouth moving at random scores 0 here too.
        "bilabial_closed": separation(_window_min(mouth.mouth_open)[vowels],
                                      mouth.mouth_open[closure_frames(mouth.mouth_open, bilabial)]),
        "rounded": separation(roundness[rounded], roundness[spread]),
        "spread": separation(width[spread], width[rounded]),
    }
    known = [value for value in shape.values() if value is not None]
    what = float(np.mean(known)) if known else None
    # When x what: shapes are judged on the frames the words put them on, so with the timing off they
    # are chance (positive on average: each part is clipped at 0), and the geometric mean lets timing
    # near 0 take the score with it; either alone when the other cannot be judged.
    if timing is None or what is None:
        score = what if timing is None else timing
    else:
        score = float(np.sqrt(timing * what))
    counts = {kind: int((labels == kind).sum()) for kind in (PAUSE, phones.BILABIAL, *phones.VOWEL_CLASSES)}
    return LipSyncResult(score, {"timing": timing, **shape}, words_matched_share, counts)


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
