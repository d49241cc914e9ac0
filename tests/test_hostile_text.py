"""Hostile text at the text entry points (issue 15, item 3): the TTS text planner, which every TTS engine
calls first, and the chat message check. Whatever a client sends, the answer is a result or an
``InputError`` (a 4xx), never anything else; what comes out is text every engine can encode."""

import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engines.errors import InputError
from engines.tts.text import TextPlanner, normalize_text
from realtime_avatar.config import ChatSettings
from realtime_avatar.conversation import check_message

HOSTILE = [
    "\ud800", "\udfff", "\x00", "\x07", "\x1b", "\x7f", "\u202e", "\u202d", "\u2066", "\u2069", "\u200e",
    "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u00a0", "\u3000", "\u2009", "\u2028",
    "\u2029", "\x85", "\t", "\r", "\n", "\ue000", "\U000f0000", "\u0378", "\u0301", "e", "\ufffe",
]
ANY_CHAR = st.characters(categories=["Cs", "Cc", "Cf", "Co", "Cn", "Zs", "Zl", "Zp", "Mn", "Me", "Ll", "Lu",
                                     "Lo", "Nd", "Po", "Ps", "Pe", "Sm", "So"])
TEXTS = st.text(st.one_of(st.sampled_from(HOSTILE), st.sampled_from(list("Hola, 你好。 Hi! ¿Qué? 3.5 ")),
                          ANY_CHAR), max_size=120)
PLANNER = TextPlanner()


def _clean(text: str) -> None:
    text.encode("utf-8")  # no lone surrogate reaches an engine
    bad = [c for c in text if unicodedata.category(c) in ("Cc", "Cf", "Co", "Cn", "Cs") and c != "\n"]
    assert not bad, [hex(ord(c)) for c in bad]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXTS, language=st.sampled_from(["auto", "en", "zh", "es", None]))
def test_planner_gives_clean_sentences_or_an_input_error(text, language):
    try:
        sentences = PLANNER.plan(text, language)
    except InputError as exc:
        assert 400 <= exc.status < 500 and exc.code
        return
    assert sentences
    for sentence in sentences:
        _clean(sentence.text)
        for clause in sentence.clauses:
            _clean(clause)


@settings(max_examples=400, deadline=None)
@given(text=TEXTS)
def test_message_check_gives_clean_text_or_an_input_error(text):
    try:
        checked = check_message(text, ChatSettings())
    except InputError as exc:
        assert 400 <= exc.status < 500 and exc.code
        return
    _clean(checked)
    assert checked == checked.strip() and checked


@pytest.mark.parametrize("text", ["hi \ud800", "\udc00 hola", "你好\ud83d"])
def test_lone_surrogate_is_invalid_text(text):
    with pytest.raises(InputError) as planner_error:
        PLANNER.plan(text, "en")
    with pytest.raises(InputError) as chat_error:
        check_message(text, ChatSettings())
    assert planner_error.value.code == chat_error.value.code == "invalid_text"
    assert planner_error.value.status == 400


def test_normalisation():
    assert normalize_text("a\u202eb\u202c c\u200b\u200b\u200bd\ufeff") == "ab cd"
    assert normalize_text("ex\u3000otic\u00a0\u2009spaces\t here") == "ex otic spaces here"
    assert normalize_text("line\u2028two\u2029three") == "line\ntwo\nthree"
    assert normalize_text("nul\x00 and \x1b[31mesc") == "nul and [31mesc"
    assert normalize_text("e\u0301") == "\u00e9"  # NFC
    assert normalize_text("你好，世界。") == "你好，世界。"  # CJK punctuation kept as it is (no NFKC)
    assert normalize_text(None) is None  # the caller's type check answers anything but a str


def test_bidi_and_zero_width_only_text_is_empty():
    with pytest.raises(InputError) as error:
        PLANNER.plan("\u202e\u200b\u2066\ufeff", "en")
    assert error.value.code == "empty_text"
