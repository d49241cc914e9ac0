"""Word/character error rates for round-trip checks (TTS -> ASR) and the evaluator.

Both sides are normalised the same way so that only what was *said* counts: case and punctuation
are dropped, Chinese is compared in simplified characters (whisper often writes traditional ones)
with Arabic digits spelled as Chinese numerals (``an2cn``), since either spelling is the same speech.
"""

from __future__ import annotations

import re
import unicodedata

import cn2an
import jiwer
import zhconv

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_DIGITS = re.compile(r"\d+(?:\.\d+)?")


def _drop_punctuation(text: str) -> str:
    # Apostrophes inside words ("it's") belong to the word; other punctuation becomes a space.
    text = re.sub(r"(?<=\w)['’](?=\w)", "", text)
    return "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)


def normalize(text: str, language: str | None = None) -> str:
    """Lower-case, punctuation-free text with single spaces; Chinese simplified, digits as numerals."""
    text = unicodedata.normalize("NFKC", text)
    if language == "zh" or _CJK.search(text):
        text = zhconv.convert(text, "zh-cn")
        text = _DIGITS.sub(lambda m: cn2an.an2cn(m.group(0)), text)
    return " ".join(_drop_punctuation(text).lower().split())


def word_error_rate(reference: str, hypothesis: str, language: str | None = None) -> float:
    ref, hyp = normalize(reference, language), normalize(hypothesis, language)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp)) if hyp else 1.0


def char_error_rate(reference: str, hypothesis: str, language: str | None = None) -> float:
    """CER over characters with spaces removed (Chinese has no word spaces to compare)."""
    ref = normalize(reference, language).replace(" ", "")
    hyp = normalize(hypothesis, language).replace(" ", "")
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.cer(ref, hyp)) if hyp else 1.0


def error_rate(reference: str, hypothesis: str, language: str) -> float:
    """The customary metric per language: CER for Chinese, WER otherwise."""
    if language == "zh":
        return char_error_rate(reference, hypothesis, language)
    return word_error_rate(reference, hypothesis, language)
