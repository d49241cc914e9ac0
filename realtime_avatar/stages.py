"""The served stages as plain Python: what each Serve deployment owns, with no Ray in sight.

Each stage builds its engine from config (``engines.registry``), keeps prepared state in the asset
store under a content id, and takes and returns bytes, plain arrays and dicts, so a deployment is a
thin wrapper that adds resources, a health check and a handle.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines import registry
from engines.avatar.portrait import Portrait, prepare_portrait
from engines.errors import InputError
from engines.media.audio import load_audio, require_duration
from engines.tts.base import AudioChunk, Voice
from engines.tts.text import AUTO, normalize_language
from realtime_avatar.cache import content_hash
from realtime_avatar.clips import ClipCache, clip_key
from realtime_avatar.config import Settings
from realtime_avatar.encoding import ChunkEncoder, Container, UtteranceRenderer
from realtime_avatar.logs import event
from realtime_avatar.store import AssetStore, InvalidAssetIdError, build_store

log = logging.getLogger("realtime_avatar.stages")

ASSET_ID_CHARS = 32  # 128 bits of the content hash: ids are public, short enough for URLs


class UnknownAssetError(InputError):
    status = 404


class UploadTooLargeError(InputError):
    code = "upload_too_large"
    status = 413


@dataclass
class RenderedChunk:
    """A piece of an utterance: its audio (empty for later parts of a chunk) and the frames drawn for it.

    ``audio_offset`` (samples) and ``frame_offset`` (frames) place both on the utterance's clock, the
    way a transport needs them to pace and sync (``pts`` in aiortc terms).
    """

    index: int
    text: str
    language: str
    pcm: np.ndarray
    sample_rate: int
    frames: np.ndarray
    audio_offset: int = 0
    frame_offset: int = 0

    @property
    def audio_seconds(self) -> float:
        return self.pcm.size / self.sample_rate


def bundled_portrait_png() -> bytes:
    """The default portrait: scikit-image's public-domain astronaut (ships inside the wheel)."""
    import cv2
    from skimage import data

    ok, encoded = cv2.imencode(".png", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    assert ok
    return encoded.tobytes()


class Animator:
    """Audio chunks of one utterance -> frames; motion state (blinks, head) carries across chunks.

    Shared by the file pipeline and the Serve avatar stage, which feeds it chunks as they stream in
    and sends each chunk's frames on in parts of at most ``part_frames``, so encoding and delivery
    start before a long clause is fully drawn.
    """

    def __init__(
        self, renderer: Any, motion: Any, portrait: Portrait, sample_rate: int, part_frames: int | None = None
    ) -> None:
        self.renderer, self.motion, self.portrait, self.sample_rate = renderer, motion, portrait, sample_rate
        self.part_frames = part_frames
        self._index = 0
        self._samples = 0  # audio fed so far: the next chunk's offset
        self._frames_out = 0

    def feed(self, chunk: AudioChunk) -> Iterator[RenderedChunk]:
        """The chunk's frames in parts; the first part carries the chunk's audio and text."""
        track = self.motion.from_audio(chunk.pcm, chunk.sample_rate)
        step = self.part_frames or max(len(track), 1)
        for start in range(0, max(len(track), 1), step):
            first = start == 0
            yield self._part(chunk.text if first else "", chunk.language if first else "",
                             chunk.pcm if first else np.zeros(0, np.float32),
                             self._frames(track[start:start + step]))

    def finish(self) -> RenderedChunk | None:
        """The frames of the audio's last partial frame, if any."""
        tail = self._frames(self.motion.flush())
        if not len(tail):
            return None
        return self._part("", "", np.zeros(0, np.float32), tail)

    def _part(self, text: str, language: str, pcm: np.ndarray, frames: np.ndarray) -> RenderedChunk:
        part = RenderedChunk(self._index, text, language, pcm, self.sample_rate, frames,
                             audio_offset=self._samples, frame_offset=self._frames_out)
        self._index += 1
        self._samples += pcm.size
        self._frames_out += len(frames)
        return part

    def _frames(self, track: Any) -> np.ndarray:
        if not len(track):
            size = self.portrait.size
            return np.zeros((0, size, size, 3), np.uint8)
        return self.renderer.render(self.portrait, track)


def _asset_id(*parts: bytes | str) -> str:
    return content_hash(*parts)[:ASSET_ID_CHARS]


def _load(engine: Any) -> None:
    load = getattr(engine, "load", None)
    if callable(load):
        load()


class LanguageModel:
    """LLM: chat messages -> text deltas, and a token counter for the conversation's budget."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        spec = settings.llm
        self.engine = registry.build("llm", spec.name, spec.options)

    @property
    def context_tokens(self) -> int:
        return int(self.engine.context_tokens)

    def load(self) -> None:
        _load(self.engine)

    def stream_chat(self, messages: list[dict[str, str]], params: dict[str, Any]) -> Iterator[str]:
        return self.engine.stream_chat(messages, **params)

    def count_tokens(self, text: str) -> int:
        return int(self.engine.count_tokens(text))


class SpeechRecognition:
    """ASR: any audio container FFmpeg decodes -> text, language and timed segments."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        spec = settings.asr
        self.engine = registry.build("asr", spec.name, spec.options)

    def load(self) -> None:
        _load(self.engine)

    def transcribe(self, audio: bytes, language: str | None = None) -> dict[str, Any]:
        """``language``: any code TTS takes (``ES``, ``es-419``, ``zh-CN``), ``auto`` or None: detected."""
        code = normalize_language(language)
        language = None if code == AUTO else code
        pcm, sample_rate = load_audio(audio, max_seconds=self.settings.limits.max_asr_seconds)
        return self.engine.transcribe(pcm, sample_rate, language).to_dict()


class SpeechSynthesis:
    """TTS: reference audio -> a stored voice; text -> audio chunks clause by clause."""

    def __init__(self, settings: Settings, store: AssetStore | None = None) -> None:
        self.settings, self.store = settings, store or build_store(settings.store, settings.cache_path)
        spec = settings.tts
        # The text limits live in the config's limits section, shared by every TTS engine.
        self.engine = registry.build("tts", spec.name, {"limits": settings.limits.max_text_chars,
                                                         **spec.options})

    @property
    def sample_rate(self) -> int:
        return self.engine.sample_rate

    def load(self) -> None:
        _load(self.engine)

    def prepare_voice(self, audio: bytes) -> dict[str, Any]:
        voice_id = _asset_id("voice", audio, self.settings.tts.name)
        limits = self.settings.limits
        if not self.store.exists("voices", voice_id):
            pcm, sample_rate = load_audio(audio, max_seconds=limits.max_voice_seconds)
            require_duration(pcm, sample_rate, limits.min_voice_seconds)
            voice = self.engine.prepare_voice(pcm, sample_rate)
            self.store.put("voices", voice_id, voice.to_bytes())
            event(log, "voice_prepared", voice_id=voice_id, seconds=round(voice.duration, 2))
        voice = self.voice(voice_id)
        assert voice is not None
        return {"voice_id": voice_id, "engine": voice.engine, "seconds": round(voice.duration, 3)}

    def voice(self, voice_id: str | None) -> Voice | None:
        """The stored voice, or None (the engine's default voice) when no id is given."""
        if voice_id is None:
            return None
        data = _stored(self.store, "voices", voice_id)
        if data is None:
            raise UnknownAssetError(f"no voice with id {voice_id!r}; upload one to /v1/voices",
                                    code="voice_not_found")
        return Voice.from_bytes(data)

    def stream(self, text: str, language: str, voice_id: str | None = None) -> Iterator[AudioChunk]:
        """Bad text, language or voice raise here, before the first chunk. Chunks carry their offsets."""
        return self.engine.stream(text, language, self.voice(voice_id))

    def max_chars(self, language: str) -> int:
        """The longest text the engine speaks in one request in ``language``."""
        return int(self.engine.planner.limits[language])


class Animation:
    """Avatar: a portrait image -> a stored avatar; audio chunks -> frames for that avatar."""

    def __init__(self, settings: Settings, store: AssetStore | None = None) -> None:
        self.settings, self.store = settings, store or build_store(settings.store, settings.cache_path)
        spec = settings.avatar
        self.renderer = registry.build("avatar", spec.name, spec.options)
        self.default_avatar_id: str | None = None
        self.clips = ClipCache(settings.clip_cache, self.store, settings.cache_path / "assets" / "clips")

    def load(self) -> None:
        _load(self.renderer)
        self.default_avatar_id = self.prepare_avatar(bundled_portrait_png())["avatar_id"]

    def prepare_avatar(self, image: bytes) -> dict[str, Any]:
        size = self.settings.render.size
        avatar_id = _asset_id("portrait", image, str(size), self.settings.avatar.name)
        if not self.store.exists("avatars", avatar_id):
            portrait = prepare_portrait(image, size=size, max_pixels=self.settings.limits.max_image_pixels)
            self.store.put("avatars", avatar_id, portrait.to_bytes())
            event(log, "avatar_prepared", avatar_id=avatar_id, size=size)
        return {"avatar_id": avatar_id, "size": size}

    def portrait(self, avatar_id: str | None) -> Portrait:
        avatar_id = avatar_id or self.default_avatar_id
        data = _stored(self.store, "avatars", avatar_id) if avatar_id else None
        if data is None:
            raise UnknownAssetError(f"no avatar with id {avatar_id!r}; upload one to /v1/avatars",
                                    code="avatar_not_found")
        return Portrait.from_bytes(data)

    def new_motion(self) -> Any:
        """Motion generators carry blink/head state across chunks, so each utterance gets its own."""
        render, spec = self.settings.render, self.settings.motion
        return registry.build("motion", spec.name, {"seed": render.seed, "fps": render.fps, **spec.options})

    def animator(self, portrait: Portrait, sample_rate: int, part_seconds: float | None) -> Animator:
        """``part_seconds``: send frames on in parts this long (streaming); None: a chunk at a time."""
        fps = self.settings.render.fps
        part_frames = None if part_seconds is None else max(1, round(part_seconds * fps))
        return Animator(self.renderer, self.new_motion(), portrait, sample_rate, part_frames)

    def utterance(
        self, portrait: Portrait, sample_rate: int, container: Container, path: str | Path | None = None,
        part_seconds: float | None = None,
    ) -> UtteranceRenderer:
        """Audio chunks -> encoded parts of one utterance (an MP4 file at ``path``, or fMP4 bytes)."""
        encoder = ChunkEncoder.open(container, size=portrait.size, sample_rate=sample_rate,
                                    render=self.settings.render, path=path)
        return UtteranceRenderer(self.animator(portrait, sample_rate, part_seconds), encoder)

    def clip_key(self, text: str, language: str, voice_id: str | None, avatar_id: str | None) -> str:
        return clip_key(self.settings, text=text, language=language, voice_id=voice_id,
                        avatar_id=avatar_id or self.default_avatar_id)


def _stored(store: AssetStore, kind: str, asset_id: str) -> bytes | None:
    """The stored bytes, or None: an id that cannot be one of ours is as unknown as a missing one."""
    try:
        return store.get(kind, asset_id)
    except InvalidAssetIdError:
        return None


