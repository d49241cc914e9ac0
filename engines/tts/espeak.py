"""IPA from eSpeak NG through its C API, using the library and data shipped in ``espeakng-loader``.

The pip package pins one eSpeak version (1.52) for every machine, so phoneme output (and with it the
voices' intelligibility) does not drift with the OS package. The library keeps global state, hence
the lock.
"""

from __future__ import annotations

import ctypes
import re
import threading
from pathlib import Path

from engines.errors import ModelUnavailableError

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_IPA = 0x02
_USE_TIE = 0x80

# Clause punctuation (not the dot of "3.5"): eSpeak drops it, so text is phonemized between the marks
# and they are put back.
_PUNCT = re.compile(r"([,.!?;:…]+(?=\s|$)|[¡¿]+)")

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def _library() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        try:
            import espeakng_loader
        except ImportError as exc:
            raise ModelUnavailableError("eSpeak NG is missing: pip install espeakng-loader") from exc
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data_parent = str(Path(espeakng_loader.get_data_path()).parent).encode()
        if lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent, 0) <= 0:
            raise ModelUnavailableError("eSpeak NG failed to initialise from espeakng-loader's data")
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        _lib = lib
    return _lib


def _clause_ipa(lib: ctypes.CDLL, text: str, mode: int) -> str:
    buffer = ctypes.c_char_p(text.encode("utf-8"))
    pointer = ctypes.pointer(buffer)
    parts: list[str] = []
    while pointer.contents.value:
        out = lib.espeak_TextToPhonemes(pointer, _CHARS_UTF8, mode)
        if out:
            parts.append(out.decode("utf-8"))
    return " ".join(" ".join(parts).split())


def ipa(text: str, voice: str, tie: str | None = None) -> str:
    """IPA for ``text`` in eSpeak voice ``voice``, keeping clause punctuation (``, . ! ? ; :``).

    ``tie`` marks multi-letter phonemes (``t^ʃ``) so callers can map them to single symbols.
    """
    mode = _IPA | ((_USE_TIE | ord(tie) << 8) if tie else 0)
    out: list[str] = []
    with _lock:
        lib = _library()
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ModelUnavailableError(f"eSpeak NG has no voice {voice!r}")
        for piece in _PUNCT.split(text):
            if not piece.strip():
                continue
            if _PUNCT.fullmatch(piece):
                mark = piece.strip("¡¿")[:1]
                if mark and out:
                    out[-1] += "…" if mark == "…" else mark
                continue
            phonemes = _clause_ipa(lib, piece.strip(), mode)
            if phonemes:
                out.append(phonemes)
    return " ".join(out)
