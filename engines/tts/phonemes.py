"""Text -> phoneme strings in the symbol set Kokoro v1.0 was trained on (misaki's conventions).

- English: misaki's US gold/silver lexicons (the dictionaries Kokoro's English voices learned from),
  eSpeak with misaki's symbol mapping for words they lack (names, numbers).
- Spanish: eSpeak ``es`` with misaki's mapping, as Kokoro's own Spanish pipeline does.
- Mandarin: jieba words, pypinyin with tone sandhi, misaki's pinyin -> IPA. Kokoro's only voices here
  are Japanese, which read misaki's unsegmented syllables ambiguously ("xwa→ni↗ŋ", 欢迎, was heard
  as 华宁), so zero-initial syllables inside a word get their glide or glottal onset (y -> j/ɥ,
  w -> w, a/e/o -> ʔ), as Mandarin speakers pronounce them.
"""

from __future__ import annotations

import functools
import importlib.resources as resources
import json
import re

from engines.tts.espeak import ipa

_TIE = "^"
# misaki's EspeakFallback mapping (eSpeak IPA -> Kokoro symbols), longest match first.
_EN_MAP = sorted(
    {
        "ʔˌn\u0329": "ʔn",
        "ʔn\u0329": "ʔn",
        "a^ɪ": "I",
        "a^ʊ": "W",
        "d^ʒ": "ʤ",
        "e^ɪ": "A",
        "e": "A",
        "t^ʃ": "ʧ",
        "ɔ^ɪ": "Y",
        "ə^l": "ᵊl",
        "ʲo": "jo",
        "ʲə": "jə",
        "ʲ": "",
        "ɚ": "əɹ",
        "r": "ɹ",
        "x": "k",
        "ç": "k",
        "ɐ": "ə",
        "ɬ": "l",
        "\u0303": "",
    }.items(),
    key=lambda kv: -len(kv[0]),
)
# misaki's EspeakG2P mapping for other languages.
_OTHER_MAP = (
    ("a^ɪ", "I"),
    ("a^ʊ", "W"),
    ("d^z", "ʣ"),
    ("d^ʒ", "ʤ"),
    ("e^ɪ", "A"),
    ("o^ʊ", "O"),
    ("ə^ʊ", "Q"),
    ("s^s", "S"),
    ("t^s", "ʦ"),
    ("t^ʃ", "ʧ"),
    ("ɔ^ɪ", "Y"),
)
_EN_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’.-]*[A-Za-z0-9]|[A-Za-z0-9]|[,.!?;:…]+")
_PUNCT = re.compile(r"[,.!?;:…]+")
_VOWEL_START = re.compile(r"^[aeiouæɑɐɒɔəɛɜɪʊʌAEIOQWY]")
_HAN_RUN = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+)")
_ZH_PUNCT = str.maketrans(
    {"，": ",", "、": ",", "。": ".", "．": ".", "！": "!", "？": "?", "：": ":", "；": ";"}
)


def _espeak_en(text: str) -> str:
    ps = ipa(text, "en-us", _TIE)
    for old, new in _EN_MAP:
        ps = ps.replace(old, new)
    ps = re.sub(r"(\S)\u0329", r"ᵊ\1", ps).replace("\u0329", "")
    ps = ps.replace("o^ʊ", "O").replace("ɜːɹ", "ɜɹ").replace("ɜː", "ɜɹ").replace("ɪə", "iə").replace("ː", "")
    ps = ps.replace("o", "ɔ").replace("ɾ", "T").replace("ʔ", "t")
    return ps.replace(_TIE, "")


@functools.cache
def _lexicon() -> dict[str, str | dict[str, str]]:
    data = resources.files("misaki") / "data"
    lexicon: dict[str, str | dict[str, str]] = json.loads((data / "us_silver.json").read_text("utf-8"))
    lexicon.update(json.loads((data / "us_gold.json").read_text("utf-8")))
    return lexicon


def _lookup(word: str, next_word: str | None) -> str | None:
    lower = word.lower()
    # Function words whose lexicon entry is the stressed/letter form; misaki picks these by context.
    if lower == "a":
        return "ɐ"
    if lower in ("the", "to"):
        before_vowel = next_word is not None and bool(
            _VOWEL_START.match((_lookup(next_word, None) or "").lstrip("ˈˌ"))
        )
        return {"the": ("ðə", "ði"), "to": ("tə", "tʊ")}[lower][before_vowel]
    lexicon = _lexicon()
    entry = lexicon.get(word) or lexicon.get(lower) or lexicon.get(lower.capitalize())
    if isinstance(entry, dict):
        entry = entry.get("DEFAULT") or next(iter(entry.values()))
    return entry


def english(text: str) -> str:
    tokens = _EN_TOKEN.findall(text.replace("’", "'"))
    out: list[str] = []
    for i, token in enumerate(tokens):
        if _PUNCT.fullmatch(token):
            if out:
                out[-1] += token[0] if token[0] != "…" else "…"
            continue
        following = next((t for t in tokens[i + 1 :] if not _PUNCT.fullmatch(t)), None)
        out.append(_lookup(token, following) or _espeak_en(token))
    return " ".join(out)


def spanish(text: str) -> str:
    ps = ipa(text, "es", _TIE)
    for old, new in _OTHER_MAP:
        ps = ps.replace(old, new)
    return ps.replace(_TIE, "").replace("-", "")


@functools.cache
def _jieba() -> object:
    import jieba

    jieba.setLogLevel(60)  # its dictionary-building chatter is not an error
    jieba.initialize()
    return jieba


def load() -> None:
    """Load the dictionaries (English lexicon, jieba, pypinyin) now so the first request is not slowed."""
    _lexicon()
    _jieba()
    mandarin("你好")


def _syllable(pinyin: str, ipa_text: str, inside_word: bool) -> str:
    if not inside_word:
        return ipa_text
    if pinyin[0] == "y":
        return ("j" if ipa_text[0] == "i" else "ɥ" if ipa_text[0] == "y" else "") + ipa_text
    if pinyin[0] == "w" and ipa_text[0] == "u":
        return "w" + ipa_text
    return ("ʔ" if pinyin[0] in "aeo" else "") + ipa_text


def mandarin(text: str) -> str:
    import cn2an
    from misaki.zh import ZHG2P
    from pypinyin import Style, lazy_pinyin

    text = cn2an.transform(text, "an2cn").translate(_ZH_PUNCT)
    out: list[str] = []
    for run in _HAN_RUN.split(text):
        if not _HAN_RUN.fullmatch(run):
            # Latin words inside Chinese ("Python") are read in English; punctuation passes through.
            out.append(english(run) if re.search(r"[A-Za-z0-9]", run) else run.strip())
            continue
        for word in _jieba().lcut(run):  # type: ignore[attr-defined]
            syllables = lazy_pinyin(word, style=Style.TONE3, neutral_tone_with_five=True, tone_sandhi=True)
            out.append(
                "".join(
                    _syllable(py, ZHG2P.py2ipa(py), i > 0)
                    for i, py in enumerate(syllables)
                    if py[:-1].isalpha()
                )
            )
    joined = " ".join(o for o in out if o)
    return re.sub(r"\s+([,.!?;:])", r"\1", joined).replace("\u032f", "")
