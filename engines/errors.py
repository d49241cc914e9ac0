"""Errors for bad input, shared by every engine.

Callers map them to a non-zero CLI exit or to a JSON HTTP error: ``code`` is a stable
machine-readable string, ``status`` the HTTP status an API should answer with.
"""

from __future__ import annotations

import re

_REPR = re.compile(r"<[^<>]{0,200}? at 0x[0-9a-fA-F]+>")
_ERRNO = re.compile(r"\[Errno -?\d+\]\s*")


def public_message(message: str) -> str:
    """``message`` without what a client has no business reading: object reprs (``<_io.BytesIO object
    at 0x...>``) become "the upload", errno markers (``[Errno 2]``) go."""
    return _ERRNO.sub("", _REPR.sub("the upload", message)).strip()


class InputError(ValueError):
    """The caller's input cannot be processed; nothing was produced."""

    code = "invalid_input"
    status = 400

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class EmptyTextError(InputError):
    code = "empty_text"


class InvalidTextError(InputError):
    """Text that cannot be spoken as sent (e.g. a lone UTF-16 surrogate: not Unicode at all)."""

    code = "invalid_text"


class TextTooLongError(InputError):
    code = "text_too_long"
    status = 413


class UnsupportedLanguageError(InputError):
    code = "unsupported_language"


class InvalidImageError(InputError):
    code = "invalid_image"
    status = 415


class NoFaceError(InputError):
    code = "no_face"
    status = 422


class InvalidAudioError(InputError):
    code = "invalid_audio"
    status = 415


class AudioTooShortError(InputError):
    code = "audio_too_short"
    status = 422


class ModelUnavailableError(RuntimeError):
    """Weights or a runtime the configured engine needs are missing; the message says how to get them."""

    code = "model_unavailable"
    status = 503


class InvalidVideoError(InputError):
    code = "invalid_video"
    status = 415


class VideoTooShortError(InputError):
    code = "video_too_short"
    status = 422


class VideoTooLongError(InputError):
    code = "video_too_long"
    status = 422
