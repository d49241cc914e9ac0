"""Text -> mouth classes of its phonemes, per word (G2P only: no audio, no timing).

English and Spanish through eSpeak NG's IPA (the bundled TTS engines' own G2P, ``engines/tts/espeak``),
Mandarin per character through pypinyin (initial + final). Every phoneme becomes one of the mouth
classes below with a relative duration weight (vowels twice a consonant), which is all the lip-sync
metric needs to place phonemes inside a word whose start and end whisper heard.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

BILABIAL, CONSONANT, NEUTRAL = "bilabial", "consonant", "neutral"
OPEN, ROUND, SPREAD = "open", "round", "spread"
VOWEL_CLASSES = (OPEN, ROUND, SPREAD)  # full vowels: the mouth should be open on them

_ROUND = set("oɔuʊɒyøœɵ")
_SPREAD = set("iɪeɛ")
_OPEN = set("aɑæʌɐɶ")
_NEUTRAL = set("əɚɜɝɨɤ")
_BILABIAL = set("pbm")
_SKIP = set("ˈˌ.ˑ‿-_ ,;:!?…'") | {"\u0303", "\u0329", "\u032f", "\u0361"}
_ESPEAK_VOICE = {"en": "en-us", "es": "es"}
_HAN = re.compile(r"[\u3400-\u9fff]")
_LATIN_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")


@dataclass(frozen=True)
class Phone:
    kind: str  # one of the classes above
    weight: float  # relative duration inside its word


def _vowel_kind(symbol: str) -> str | None:
    for kinds, kind in ((_ROUND, ROUND), (_SPREAD, SPREAD), (_OPEN, OPEN), (_NEUTRAL, NEUTRAL)):
        if symbol in kinds:
            return kind
    return None


def ipa_phones(ipa: str) -> list[Phone]:
    """Phones of an eSpeak IPA string written with tie ``^`` (``a^ɪ`` is one diphthong, classed by its
    first symbol); length marks lengthen the phone before them."""
    phones: list[Phone] = []
    tied = False
    for symbol in unicodedata.normalize("NFD", ipa):
        if symbol == "^":
            tied = True
            continue
        if symbol == "ː" and phones:
            phones[-1] = Phone(phones[-1].kind, phones[-1].weight * 1.5)
            continue
        if symbol in _SKIP or unicodedata.category(symbol).startswith("M"):
            continue
        if tied and phones:  # second half of a diphthong or affricate: same phone, a little longer
            phones[-1] = Phone(phones[-1].kind, phones[-1].weight + 0.5)
            tied = False
            continue
        vowel = _vowel_kind(symbol)
        if vowel is not None:
            phones.append(Phone(vowel, 2.0))
        else:
            phones.append(Phone(BILABIAL if symbol in _BILABIAL else CONSONANT, 1.0))
    return phones


def _final_phones(initial: str, final: str) -> list[Phone]:
    """A pinyin final's vowels: an optional medial (i/u/ü) and its nucleus."""
    final = final.replace("ü", "v")
    if not final:
        return []
    if final in ("i",) and initial in ("z", "c", "s", "zh", "ch", "sh", "r"):
        return [Phone(NEUTRAL, 2.0)]  # apical vowel of zi/ci/si/zhi/...: lips neither spread nor round
    phones = []
    if len(final) > 1 and final[0] in "iuv" and final[1] in "aoe":
        phones.append(Phone(SPREAD if final[0] == "i" else ROUND, 1.0))
        final = final[1:]
    nucleus = final[0]
    if nucleus == "a":
        kind = OPEN
    elif nucleus in "ouv":
        kind = ROUND
    elif nucleus == "i" or final.startswith("ei"):
        kind = SPREAD
    elif final == "e" and (initial == "y" or (phones and phones[0].kind == SPREAD)):
        kind = SPREAD  # ie / ye: [iɛ]
    elif final == "e" and phones:
        kind = ROUND  # ue/üe: [yɛ]/[wɛ] keep the rounding
    else:
        kind = NEUTRAL  # e [ɤ], en, eng, er
    phones.append(Phone(kind, 2.0))
    if final.endswith(("n", "ng")):
        phones.append(Phone(CONSONANT, 1.0))
    return phones


def pinyin_phones(char: str) -> list[Phone]:
    from pypinyin import Style, pinyin

    initial = pinyin(char, style=Style.INITIALS, strict=False)[0][0]
    final = pinyin(char, style=Style.FINALS, strict=False)[0][0]
    phones = [Phone(BILABIAL if initial in ("b", "p", "m") else CONSONANT, 1.0)] if initial else []
    return phones + _final_phones(initial, final)


@lru_cache(maxsize=4096)
def word_phones(word: str, language: str) -> tuple[Phone, ...]:
    if language == "zh":
        return tuple(phone for char in word for phone in pinyin_phones(char))
    from engines.tts.espeak import ipa

    return tuple(ipa_phones(ipa(word, _ESPEAK_VOICE.get(language, "en-us"), tie="^")))


def normalize(word: str) -> str:
    """Matching key for a word: lower case, no accents, letters only (whisper's punctuation differs)."""
    stripped = "".join(c for c in unicodedata.normalize("NFKD", word.lower()) if not unicodedata.combining(c))
    return "".join(c for c in stripped if c.isalnum())


def text_words(text: str, language: str) -> list[str]:
    """The words of ``text``: single Han characters for Mandarin (whisper's zh words are runs of them)."""
    if language == "zh":
        return _HAN.findall(text)
    return _LATIN_WORD.findall(text)
