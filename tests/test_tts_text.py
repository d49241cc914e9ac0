"""TTS text handling: sentence/clause splitting for mixed scripts, language detection, limits, errors."""

import pytest

from engines.errors import EmptyTextError, TextTooLongError, UnsupportedLanguageError
from engines.tts.text import LanguageDetector, TextPlanner, normalize_language, split_clauses, split_sentences

SWITCH = "Hello, welcome to my page. 欢迎来到我的主页。 Bienvenidos a mi página."
EN_LONG = (
    "Thanks for stopping by. I build realtime avatars that can listen, think and answer in three languages. "
    "Ask me anything about my work, and I will do my best to reply quickly and clearly."
)


@pytest.fixture(scope="module")
def planner() -> TextPlanner:
    return TextPlanner()


def test_sentences_split_on_latin_and_cjk_marks():
    assert split_sentences(SWITCH) == [
        "Hello, welcome to my page.",
        "欢迎来到我的主页。",
        "Bienvenidos a mi página.",
    ]
    assert split_sentences("你好！很高兴认识你。谢谢") == ["你好！", "很高兴认识你。", "谢谢"]
    assert split_sentences("Really?! Yes... ¿Qué tal? Bien.") == ["Really?!", "Yes...", "¿Qué tal?", "Bien."]
    assert split_sentences("Hi.你好。") == ["Hi.", "你好。"]


def test_decimals_abbreviations_and_punctuation_only_pieces_do_not_split():
    assert split_sentences("Dr. Smith paid 3.50 today. Then he left.") == [
        "Dr. Smith paid 3.50 today.",
        "Then he left.",
    ]
    assert split_sentences("Hello. ... !!") == ["Hello."]


def test_long_sentences_split_at_commas_into_bounded_clauses():
    sentence = "Ask me anything about my work, and I will do my best to reply quickly and clearly."
    clauses = split_clauses(sentence, 60)
    assert clauses == [
        "Ask me anything about my work,",
        "and I will do my best to reply quickly and clearly.",
    ]
    assert split_clauses("Short, sentence.", 40) == ["Short, sentence."]
    zh = "我制作能够听、思考并用三种语言回答的实时虚拟形象，有什么问题都可以问我，我会尽快回答你的问题！"
    zh_clauses = split_clauses(zh, 28)
    assert "".join(zh_clauses) == zh and all(len(c) <= 28 for c in zh_clauses) and len(zh_clauses) >= 2
    no_commas = " ".join(["word"] * 40)
    assert all(len(c) <= 30 for c in split_clauses(no_commas, 30))


def test_short_pieces_are_packed_with_neighbours():
    assert split_clauses("Yes, no, maybe, perhaps, well, and then a much longer ending part here.", 40) == [
        "Yes, no, maybe, perhaps, well,",
        "and then a much longer ending part here.",
    ]


def test_switch_script_is_detected_sentence_by_sentence(planner):
    plan = planner.plan(SWITCH, "auto")
    assert [(s.text, s.language) for s in plan] == [
        ("Hello, welcome to my page.", "en"),
        ("欢迎来到我的主页。", "zh"),
        ("Bienvenidos a mi página.", "es"),
    ]


def test_unsure_short_sentences_follow_their_neighbours():
    detector = LanguageDetector()
    assert detector.detect_sentences(["Hola, ¿cómo estás?", "No.", "Gracias por venir."]) == [
        "es",
        "es",
        "es",
    ]
    assert detector.detect_sentences(["3.5", "Thanks for coming to my page."]) == ["en", "en"]
    assert detector.detect("你好") == ("zh", 1.0)


def test_explicit_language_is_used_and_long_text_gets_clauses(planner):
    plan = planner.plan(EN_LONG, "en")
    assert [s.language for s in plan] == ["en"] * 3
    assert all(len(c) <= planner.clause_chars["en"] for s in plan for c in s.clauses)
    assert sum(len(s.clauses) for s in plan) >= 3


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("en", "en"),
        ("EN-us", "en"),
        ("zh_CN", "zh"),
        ("cmn", "zh"),
        ("es-419", "es"),
        ("auto", "auto"),
        (None, "auto"),
    ],
)
def test_language_codes_normalise(code, expected):
    assert normalize_language(code) == expected


@pytest.mark.parametrize("code", ["fr", "ja", "", "xx-yy", 3])
def test_unsupported_languages_are_refused(planner, code):
    with pytest.raises(UnsupportedLanguageError):
        planner.plan("Bonjour.", code)


@pytest.mark.parametrize("text", ["", "   ", "...", "。！", None])
def test_empty_text_is_refused(planner, text):
    with pytest.raises(EmptyTextError):
        planner.plan(text, "en")


def test_limits_are_per_language_and_configurable():
    planner = TextPlanner()
    planner.plan("好" * 400, "zh")
    with pytest.raises(TextTooLongError):
        planner.plan("好" * 401, "zh")
    with pytest.raises(TextTooLongError):
        planner.plan("a" * 1001, "en")
    # auto: each language's sentences count against its own limit
    with pytest.raises(TextTooLongError, match="zh"):
        planner.plan("Hello there. " + "好" * 401 + "。", "auto")
    small = TextPlanner(limits={"en": 20})
    small.plan("Short enough.", "en")
    with pytest.raises(TextTooLongError) as info:
        small.plan("This sentence is longer than twenty.", "en")
    assert info.value.code == "text_too_long" and info.value.status == 413


def test_unsure_sentences_follow_neighbours_whose_script_fits():
    from engines.tts.text import LanguageDetector

    detector = LanguageDetector()
    assert detector.detect_sentences(["你好，欢迎来到我的主页。", "3.5"]) == ["zh", "zh"]
    # An unsure guess for Latin words must not take the Mandarin neighbour's language.
    sure_zh = detector.detect
    detector.detect = lambda text: ("es", 0.3) if text == "Vale." else sure_zh(text)
    assert detector.detect_sentences(["你好，欢迎来到我的主页。", "Vale."]) == ["zh", "es"]
