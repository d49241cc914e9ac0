"""Bad input through the CLI: a clear message, exit code 2, and no output file left behind."""

import numpy as np
import pytest

from engines.media.audio import wav_bytes
from realtime_avatar.cli import EXIT_BAD_INPUT, main


@pytest.fixture
def out(tmp_path):
    return tmp_path / "out" / "clip.mp4"


def _run(capsys, *args):
    code = main(["render", *args])
    return code, capsys.readouterr().err


def _assert_refused(code, err, out, expected_code):
    assert code == EXIT_BAD_INPUT
    assert f"error [{expected_code}]" in err
    assert not out.exists()
    if out.parent.exists():
        assert list(out.parent.iterdir()) == []  # no temp file either


@pytest.mark.parametrize(
    "text, lang, code",
    [
        ("", "en", "empty_text"),
        ("   \n ", "auto", "empty_text"),
        ("Hello there. " * 200, "en", "text_too_long"),
        ("你好" * 300, "zh", "text_too_long"),
        ("Bonjour tout le monde.", "fr", "unsupported_language"),
    ],
)
def test_bad_text_is_refused(capsys, out, text, lang, code):
    _assert_refused(*_run(capsys, "--text", text, "--lang", lang, "-o", str(out)), out, code)


def test_unreadable_image(capsys, out, tmp_path):
    bogus = tmp_path / "portrait.jpg"
    bogus.write_bytes(b"\xff\xd8 definitely not a jpeg" * 50)
    _assert_refused(*_run(capsys, "--text", "Hi there.", "--image", str(bogus), "-o", str(out)), out,
                    "invalid_image")


def test_missing_image(capsys, out, tmp_path):
    _assert_refused(*_run(capsys, "--text", "Hi.", "--image", str(tmp_path / "nope.png"), "-o", str(out)),
                    out, "image_not_found")


def test_image_without_face(capsys, out, tmp_path):
    import cv2

    y, x = np.mgrid[0:300, 0:400]
    gradient = np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)
    path = tmp_path / "gradient.png"
    cv2.imwrite(str(path), gradient)
    code, err = _run(capsys, "--text", "Hi there.", "--image", str(path), "-o", str(out))
    _assert_refused(code, err, out, "no_face")


def test_voice_that_is_not_audio(capsys, out, tmp_path):
    path = tmp_path / "voice.wav"
    path.write_text("RIFF? no, just text pretending to be a wave file")
    _assert_refused(*_run(capsys, "--text", "Hi there.", "--voice", str(path), "-o", str(out)), out,
                    "invalid_audio")


def test_voice_shorter_than_two_seconds(capsys, out, tmp_path):
    path = tmp_path / "short.wav"
    t = np.arange(int(1.2 * 24000)) / 24000
    path.write_bytes(wav_bytes((0.2 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), 24000))
    _assert_refused(*_run(capsys, "--text", "Hi there.", "--voice", str(path), "-o", str(out)), out,
                    "audio_too_short")


def test_text_limit_comes_from_the_config(capsys, out, monkeypatch):
    monkeypatch.setenv("AVATAR_LIMITS__MAX_TEXT_CHARS__EN", "20")
    text = "This sentence is longer than twenty characters."
    _assert_refused(*_run(capsys, "--text", text, "--lang", "en", "-o", str(out)), out, "text_too_long")
