"""Timed phones: what a TTS engine said and when, and the mouth shape each sound wants.

Shared by the TTS engines that know their own alignment (Kokoro's and Piper's duration predictors) and
the viseme motion engine, which shapes the mouth from them. Symbols are the ones those engines speak:
IPA plus misaki's diphthong letters (``A`` eI, ``I`` aI, ``W`` aU, ``Y`` OI, ``O`` oU, ``Q`` @U) and
Mandarin tone arrows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple


class Phone(NamedTuple):
    """One spoken symbol and its span, in seconds from the start of its audio chunk."""

    symbol: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Viseme:
    """A sound's lips: ``width`` -1 rounded .. 1 spread, or ``None`` for sounds whose lips take the
    neighbouring vowel's shape (t, n, s, k, h...); ``closed`` for the sounds made with the lips shut.
    How far the jaw drops is the audio's to say (the viseme engine measured that best)."""

    width: float | None = None
    closed: bool = False


_FREE = Viseme()  # tongue consonants and f/v (the lower lip on the teeth): the lips keep the vowel's shape
_POSTALVEOLAR = Viseme(-0.45)  # sh, zh, ch, j, Mandarin retroflexes: lips pushed forward
_PALATAL = Viseme(0.5)  # Mandarin x, q, j and the glide y: lips drawn back
# Vowels and glides: width from rounding and frontness.
_VOWEL_WIDTH = {
    "i": 1.0, "ɪ": 0.7, "ɨ": 0.5, "ɯ": 0.3, "y": -0.9, "u": -1.0, "ʊ": -0.7, "e": 0.7, "ɛ": 0.5,
    "ø": -0.7, "o": -0.8, "ɔ": -0.6, "ə": 0.0, "ᵊ": 0.0, "ɚ": -0.2, "ɜ": 0.0, "ʌ": 0.0, "æ": 0.4,
    "a": 0.1, "ɐ": 0.0, "ɑ": -0.1, "ɒ": -0.3, "w": -1.0, "ɥ": -0.9,
}

VISEMES: dict[str, Viseme] = {
    **dict.fromkeys("pbmɸβ", Viseme(closed=True)),
    **dict.fromkeys("fvɱtdnlszθðkgŋhxɣɾrʔɲçʝʎʋɫχʁɬ", _FREE),
    **dict.fromkeys("ʃʒʧʤʂʐɻɹ", _POSTALVEOLAR),
    **dict.fromkeys("ʨʥɕjʲ", _PALATAL),
    **{symbol: Viseme(width) for symbol, width in _VOWEL_WIDTH.items()},
}
# Diphthongs: the first half takes the first vowel's shape, the second half the second's.
DIPHTHONGS: dict[str, tuple[str, str]] = {
    "A": ("e", "ɪ"), "I": ("a", "ɪ"), "W": ("a", "ʊ"), "Y": ("ɔ", "ɪ"), "O": ("o", "ʊ"), "Q": ("ə", "ʊ"),
}
# Marks that carry a duration in the models but no mouth of their own: stress goes with the sound after
# it, length and tone with the sound before.
LEADING_MARKS = frozenset("ˈˌ")
TRAILING_MARKS = frozenset("ː↗↘↓→ʰ̃")
# Punctuation and word gaps: no sound (the mouth follows the audio there).
SILENT = frozenset(" ,.!?;:—…¡¿\"'()-–«»“”^$_")


def spell_phones(symbols: Sequence[str], spans: Sequence[tuple[float, float]]) -> list[Phone]:
    """Phones from a model's symbols and their spans: marks merged into their sound, diphthongs split
    into their two vowels, silent symbols dropped, unknown symbols kept (they shape nothing)."""
    merged: list[list] = []  # [symbol, start, end]
    leading_start: float | None = None
    for symbol, (start, end) in zip(symbols, spans, strict=True):
        if symbol in LEADING_MARKS:
            leading_start = start if leading_start is None else leading_start
        elif symbol in TRAILING_MARKS:
            if merged and merged[-1][2] >= start - 1e-6:
                merged[-1][2] = end
        elif symbol in SILENT:
            leading_start = None
        else:
            merged.append([symbol, start if leading_start is None else leading_start, end])
            leading_start = None
    phones: list[Phone] = []
    for symbol, start, end in merged:
        if symbol in DIPHTHONGS:
            first, second = DIPHTHONGS[symbol]
            middle = (start + end) / 2
            phones += [Phone(first, start, middle), Phone(second, middle, end)]
        else:
            phones.append(Phone(symbol, start, end))
    return phones


def spans_from_durations(durations: Iterable[float], seconds_per_unit: float,
                         offset_s: float = 0.0) -> list[tuple[float, float]]:
    """Consecutive spans from per-symbol durations in model frames."""
    spans, t = [], offset_s
    for units in durations:
        end = t + float(units) * float(seconds_per_unit)
        spans.append((t, end))
        t = end
    return spans


def shift(phones: Iterable[Phone], seconds: float) -> tuple[Phone, ...]:
    """The phones moved by ``seconds`` (e.g. after trimming leading silence off their audio)."""
    return tuple(Phone(p.symbol, p.start_s + seconds, p.end_s + seconds) for p in phones)
