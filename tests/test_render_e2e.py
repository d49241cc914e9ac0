"""End to end through the CLI: text -> MP4 in en, zh, es, judged on the file a user would get.

Everything is measured on the MP4 itself: streams and durations from the container, the language by
whisper on the decoded audio track, mouth and eyes by dlib landmarks on the decoded video frames.
"""

import itertools

import numpy as np
import pytest

from engines.avatar.measure import FaceMeter
from engines.media.audio import load_audio
from engines.media.mp4 import probe_mp4, read_frames
from realtime_avatar.cli import main

FPS = 25
CASES = {
    # The English case lasts over 6 s so that at least one blink must fall inside it.
    "en": "Hello, welcome to my page. I build realtime avatars that listen, think and answer quickly. "
    "Ask me anything about my work.",
    "zh": "你好，很高兴认识你。欢迎来到我的主页，有什么问题都可以问我。",
    "es": "Hola, mucho gusto en conocerte. Bienvenidos a mi página, pregúntame lo que quieras.",
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("renders")
    paths = {}
    for lang, text in CASES.items():
        path = out / f"{lang}.mp4"
        assert main(["render", "--text", text, "--lang", lang, "-o", str(path)]) == 0
        paths[lang] = path
    return paths


def _frame_envelope(pcm: np.ndarray, sample_rate: int, n_frames: int) -> np.ndarray:
    hop = sample_rate / FPS
    edges = np.round(np.arange(n_frames + 1) * hop).astype(int)
    return np.array([np.sqrt(np.mean(pcm[a:b] ** 2)) if b > a else 0.0 for a, b in itertools.pairwise(edges)])


@pytest.mark.parametrize("lang", list(CASES))
def test_container(rendered, lang):
    info = probe_mp4(rendered[lang])
    assert [s.codec for s in info.video] == ["h264"] and [s.codec for s in info.audio] == ["aac"]
    assert 256 <= info.width <= 360 and info.width == info.height
    assert info.fps == FPS and info.pix_fmt == "yuv420p"
    assert abs(info.video[0].duration_s - info.audio[0].duration_s) <= 1 / FPS


@pytest.mark.parametrize("lang", list(CASES))
def test_spoken_language_of_the_mp4_audio(rendered, asr, lang):
    pcm, sample_rate = load_audio(rendered[lang])
    assert asr.transcribe(pcm, sample_rate).language == lang


@pytest.mark.parametrize("lang", list(CASES))
def test_drawn_mouth_follows_the_audio(rendered, lang):
    frames = read_frames(rendered[lang])
    pcm, sample_rate = load_audio(rendered[lang])
    mouth = FaceMeter().measure_video(frames).mouth_open
    envelope = _frame_envelope(pcm, sample_rate, len(frames))
    correlation = np.corrcoef(mouth, envelope)[0, 1]
    assert correlation > 0.4, correlation


def test_blinks_in_a_six_second_clip(rendered):
    frames = read_frames(rendered["en"])
    assert len(frames) >= 6 * FPS
    eyes = FaceMeter().measure_video(frames[: 6 * FPS + 1]).eye_open
    closed = eyes < 0.75 * np.median(eyes)
    assert closed.any(), eyes.round(3)
    assert closed.mean() < 0.2  # blinks are brief: the eyes are open nearly all the time
