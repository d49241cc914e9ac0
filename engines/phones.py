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
    """A sound's mouth: ``open`` 0 (lips shut) .. 1 (jaw wide), ``width`` -1 rounded .. 1 spread, or
    ``None`` for sounds whose lips take the neighbouring vowel's shape (t, n, s, k, h...)."""

    open: float
    width: float | None = None

    @property
    def closed(self) -> bool:
        return self.open == 0.0


CLOSED = Viseme(0.0, None)  # p, b, m: the lips meet
_LABIODENTAL = Viseme(0.08, None)  # f, v: the lower lip on the upper teeth
_CONSONANT = Viseme(0.25, None)  # tongue consonants: the jaw nearly up, lips free
_POSTALVEOLAR = Viseme(0.25, -0.45)  # sh, zh, ch, j, Mandarin retroflexes: lips pushed forward
_PALATAL = Viseme(0.25, 0.5)  # Mandarin x, q, j and the glide y: lips drawn back

VISEMES: dict[str, Viseme] = {
    **dict.fromkeys("pbmɸβ", CLOSED),
    **dict.fromkeys("fvɱ", _LABIODENTAL),
    **dict.fromkeys("tdnlszθðkgŋhxɣɾrʔɲçʝʎʋɫχʁɬ", _CONSONANT),
    **dict.fromkeys("ʃʒʧʤʂʐɻɹ", _POSTALVEOLAR),
    **dict.fromkeys("ʨʥɕjʲ", _PALATAL),
    "w": Viseme(0.25, -1.0),
    "ɥ": Viseme(0.25, -0.9),
    # Vowels: jaw from the vowel's height (a close vowel still parts the lips more than a consonant),
    # width from its rounding and frontness.
    "i": Viseme(0.45, 1.0),
    "ɪ": Viseme(0.5, 0.7),
    "ɨ": Viseme(0.45, 0.5),
    "ɯ": Viseme(0.45, 0.3),
    "y": Viseme(0.45, -0.9),
    "u": Viseme(0.45, -1.0),
    "ʊ": Viseme(0.5, -0.7),
    "e": Viseme(0.55, 0.7),
    "ɛ": Viseme(0.6, 0.5),
    "ø": Viseme(0.55, -0.7),
    "o": Viseme(0.6, -0.8),
    "ɔ": Viseme(0.65, -0.6),
    "ə": Viseme(0.5, 0.0),
    "ᵊ": Viseme(0.45, 0.0),
    "ɚ": Viseme(0.5, -0.2),
    "ɜ": Viseme(0.5, 0.0),
    "ʌ": Viseme(0.65, 0.0),
    "æ": Viseme(0.75, 0.4),
    "a": Viseme(0.85, 0.1),
    "ɐ": Viseme(0.7, 0.0),
    "ɑ": Viseme(0.9, -0.1),
    "ɒ": Viseme(0.85, -0.3),
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
