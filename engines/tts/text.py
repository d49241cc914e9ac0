"""Text handling shared by the TTS engines: validation, language choice, sentence and clause splitting.

A request becomes a list of :class:`Sentence` objects, each with one language and its clauses; an
engine speaks clause by clause so the first audio chunk is ready after the first clause, not after
the whole text. With ``language="auto"`` every sentence is detected on its own, so a script that
switches EN -> ZH -> ES sentence by sentence is spoken in each sentence's language.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engines.errors import EmptyTextError, InvalidTextError, TextTooLongError, UnsupportedLanguageError

LANGUAGES = ("en", "zh", "es")
AUTO = "auto"
DEFAULT_LIMITS: Mapping[str, int] = {"en": 1000, "es": 1000, "zh": 400}
# Clause length (chars) above which a sentence is cut at commas: about 4-5 s of speech.
DEFAULT_CLAUSE_CHARS: Mapping[str, int] = {"en": 80, "es": 80, "zh": 28}

_ALIASES = {"cmn": "zh", "zho": "zh", "chi": "zh", "eng": "en", "spa": "es"}
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_HAN = re.compile(f"[{_CJK}]")
_SPEAKABLE = re.compile(rf"[^\W_]|[{_CJK}]")
# A sentence ends after CJK end marks, or after Latin ones followed by a space, a CJK char or the end.
_SENTENCE_END = re.compile(rf"[。！？]+[”’」』）)]*\s*|[.!?…]+[\"”’)]*(?=\s|[{_CJK}]|$)\s*|\n+")
_ABBREVIATION = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|Prof|Sr|Sra|Srta|St|vs|etc|e\.g|i\.e)|\b[A-Z])\.\s*$")
_CLAUSE_END = re.compile(r"(?<=[,，、;；:：])\s*")
_MIN_CONFIDENCE = 0.6


@dataclass(frozen=True)
class Sentence:
    text: str
    language: str
    clauses: tuple[str, ...]


def normalize_language(language: str | None) -> str:
    """``en``/``zh``/``es``/``auto`` from a code such as ``es-419``, ``zh_CN``, ``EN`` or None (auto)."""
    if language is None:
        return AUTO
    if not isinstance(language, str):
        raise UnsupportedLanguageError(f"language must be a string, got {type(language).__name__}")
    code = language.strip().lower().replace("_", "-").split("-")[0]
    code = _ALIASES.get(code, code)
    if code not in (*LANGUAGES, AUTO):
        raise UnsupportedLanguageError(
            f"language {language!r} is not supported; use one of {', '.join(LANGUAGES)} or auto"
        )
    return code


_SURROGATE = re.compile("[\ud800-\udfff]")
_LINE_BREAKS = "\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_SPACE_RUN = re.compile(r"[ ]{2,}")


def _normal_char(char: str) -> str:
    if char in _LINE_BREAKS:
        return "\n"
    category = unicodedata.category(char)
    if char in "\t\r" or category == "Zs":  # tabs and every exotic space (NBSP, ideographic, thin...) -> " "
        return " "
    if category in ("Cc", "Cf", "Co", "Cn"):
        # Control chars (NUL, ESC...), format chars (bidi overrides and isolates, zero-width space /
        # joiners, BOM, soft hyphen), private-use and unassigned code points: nothing to speak, dropped.
        return ""
    return char


def normalize_text(text: object) -> object:
    """Text as every TTS engine and the chat path take it: NFC, exotic spaces as " ", line and paragraph
    separators as "\n", control / format (bidi, zero-width) / private-use / unassigned code points
    removed, runs of spaces collapsed. A lone UTF-16 surrogate (not Unicode: no encoder takes it) is
    refused with ``InvalidTextError`` (400 ``invalid_text``). Anything but a ``str`` is returned as it
    is, for the caller's own type check to answer."""
    if not isinstance(text, str):
        return text
    surrogate = _SURROGATE.search(text)
    if surrogate:
        raise InvalidTextError(
            f"the text holds a lone UTF-16 surrogate (U+{ord(surrogate.group()):04X}) at position "
            f"{surrogate.start()}; send valid Unicode"
        )
    if not (text.isascii() and text.isprintable()):
        text = "".join(_normal_char(c) for c in unicodedata.normalize("NFC", text))
    return _SPACE_RUN.sub(" ", text)


def split_sentences(text: str) -> list[str]:
    """Sentences of mixed CJK/Latin text, end punctuation kept; abbreviations like "Dr." do not end one."""
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if _ABBREVIATION.search(text, start, match.end()) and match.group().strip() == ".":
            continue
        piece = text[start : match.end()].strip()
        if piece:
            sentences.append(piece)
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return [s for s in sentences if is_speakable(s)]


def _hard_split(piece: str, max_chars: int) -> list[str]:
    if len(piece) <= max_chars:
        return [piece]
    if _HAN.search(piece):
        return [piece[i : i + max_chars] for i in range(0, len(piece), max_chars)]
    out: list[str] = []
    current = ""
    for word in piece.split():
        if current and len(current) + 1 + len(word) > max_chars:
            out.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return [*out, current] if current else out


def split_clauses(sentence: str, max_chars: int) -> list[str]:
    """Cut a long sentence at commas/semicolons/colons into clauses of at most ``max_chars``.

    Neighbouring short pieces are packed together so no clause is a lone word; a piece with no comma
    that is still too long is cut at spaces (or every ``max_chars`` characters for CJK).
    """
    if len(sentence) <= max_chars:
        return [sentence]
    clauses: list[str] = []
    current = ""
    joiner = "" if _HAN.search(sentence) else " "
    for piece in (p.strip() for p in _CLAUSE_END.split(sentence)):
        if not piece:
            continue
        candidate = f"{current}{joiner}{piece}" if current else piece
        if len(candidate) <= max_chars:
            current = candidate
            continue
        if current:
            clauses.append(current)
        *full, current = _hard_split(piece, max_chars)
        clauses.extend(full)
    if current:
        clauses.append(current)
    return [c for c in clauses if is_speakable(c)]


def is_speakable(text: str) -> bool:
    return bool(_SPEAKABLE.search(text))


_LATIN_LETTER = re.compile(r"[A-Za-zÀ-ÿ]")


class LanguageDetector:
    """Per-sentence EN/ZH/ES detection with lingua (models ship in the wheel); thread-safe lazy build."""

    def __init__(self) -> None:
        self._detector: Any = None
        self._lock = threading.Lock()

    def _build(self) -> Any:
        with self._lock:
            if self._detector is None:
                from lingua import Language, LanguageDetectorBuilder

                self._detector = LanguageDetectorBuilder.from_languages(
                    Language.ENGLISH, Language.CHINESE, Language.SPANISH
                ).build()
        return self._detector

    def detect(self, text: str) -> tuple[str | None, float]:
        """(language, confidence); language None when nothing in the text hints at one (e.g. "3.5")."""
        if _HAN.search(text):
            return "zh", 1.0
        values = self._build().compute_language_confidence_values(text)
        if not values or values[0].value <= 0.0:
            return None, 0.0
        return values[0].language.iso_code_639_1.name.lower(), float(values[0].value)

    def detect_sentences(self, sentences: list[str], fallback: str = "en") -> list[str]:
        """Languages for consecutive sentences: an unsure guess ("No.", "OK.") follows its neighbours."""
        guesses = [self.detect(s) for s in sentences]
        sure = [(i, lang) for i, (lang, conf) in enumerate(guesses) if lang and conf >= _MIN_CONFIDENCE]
        languages: list[str] = []
        for i, (lang, conf) in enumerate(guesses):
            if lang and conf >= _MIN_CONFIDENCE:
                languages.append(lang)
                continue
            # A neighbour's language only fits if the script does: Latin words never become Mandarin
            # (digits and symbols may: "3.5" after Chinese is read in Chinese).
            latin = bool(_LATIN_LETTER.search(sentences[i]))
            fits = [(j, lg) for j, lg in sure if not (latin and lg == "zh")]
            before = [lg for j, lg in fits if j < i]
            after = [lg for j, lg in fits if j > i]
            languages.append(before[-1] if before else after[0] if after else lang or fallback)
        return languages


class TextPlanner:
    """Turns a request's text and language into sentences and clauses, enforcing per-language limits."""

    def __init__(
        self,
        limits: Mapping[str, int] | None = None,
        clause_chars: Mapping[str, int] | None = None,
        detector: LanguageDetector | None = None,
    ) -> None:
        self.limits = {**DEFAULT_LIMITS, **(limits or {})}
        self.clause_chars = {**DEFAULT_CLAUSE_CHARS, **(clause_chars or {})}
        self.detector = detector or LanguageDetector()

    def plan(self, text: str, language: str | None = AUTO) -> list[Sentence]:
        if not isinstance(text, str):
            raise EmptyTextError(f"text must be a string, got {type(text).__name__}")
        code = normalize_language(language)
        stripped = str(normalize_text(text)).strip()
        if not stripped or not is_speakable(stripped):
            raise EmptyTextError("text is empty or has nothing to speak")
        # Cheap guard before detection: no language allows more than the largest limit.
        if len(stripped) > max(self.limits.values()):
            raise TextTooLongError(
                f"text has {len(stripped)} characters; the limit is {max(self.limits.values())}"
            )
        sentences = split_sentences(stripped)
        languages = self.detector.detect_sentences(sentences) if code == AUTO else [code] * len(sentences)
        totals: dict[str, int] = {}
        for sentence, lang in zip(sentences, languages, strict=True):
            totals[lang] = totals.get(lang, 0) + len(sentence)
        for lang, total in totals.items():
            if total > self.limits[lang]:
                raise TextTooLongError(
                    f"{lang} text has {total} characters; the limit is {self.limits[lang]}"
                )
        return [
            Sentence(s, lang, tuple(split_clauses(s, self.clause_chars[lang])))
            for s, lang in zip(sentences, languages, strict=True)
        ]


# A clause boundary inside a sentence still being written: a comma-like mark and the space after it.
_CLAUSE_BOUNDARY = re.compile(r"[,，、;；:：]\s*")


class ClauseAggregator:
    """Text arriving in pieces (LLM deltas) -> speakable segments, each as soon as it is whole.

    ``feed`` returns the sentences a delta completed; a sentence still being written that is already
    longer than ``max_clause_chars`` gives up its finished clauses (cut at commas) so speech can start
    before the model reaches the full stop. A Latin end mark at the very end of the text is not final
    yet ("3." may become "3.5"); CJK end marks are. ``flush`` returns what is left: all of it when the
    reply ended normally, only up to its last whole clause when the reply was cut off (``cut=True``).
    """

    def __init__(self, max_clause_chars: int = DEFAULT_CLAUSE_CHARS["en"]) -> None:
        self.max_clause_chars = max_clause_chars
        self._pending = ""

    @property
    def pending(self) -> str:
        return self._pending

    def feed(self, delta: str) -> list[str]:
        self._pending += delta
        end = self._last_final_sentence_end()
        segments: list[str] = []
        if end:
            segments = split_sentences(self._pending[:end])
            self._pending = self._pending[end:]
        if len(self._pending) > self.max_clause_chars:
            cut = self._last_clause_end(self._pending)
            if cut:
                segments += [c for c in [self._pending[:cut].strip()] if is_speakable(c)]
                self._pending = self._pending[cut:]
        return segments

    def flush(self, cut: bool = False) -> list[str]:
        text, self._pending = self._pending, ""
        if cut:
            text = text[: self._last_clause_end(text)]
        return split_sentences(text) if text.strip() else []

    def _last_final_sentence_end(self) -> int:
        last = 0
        text = self._pending
        for match in _SENTENCE_END.finditer(text):
            if match.end() == len(text) and not _CJK_END.search(match.group()):
                break  # a Latin end mark with nothing after it yet
            if _ABBREVIATION.search(text, 0, match.end()) and match.group().strip() == ".":
                continue
            last = match.end()
        return last

    @staticmethod
    def _last_clause_end(text: str) -> int:
        ends = [m.end() for m in _CLAUSE_BOUNDARY.finditer(text)]
        ends += [m.end() for m in _SENTENCE_END.finditer(text)]
        return max(ends, default=0)


_CJK_END = re.compile(r"[。！？]")
