"""The served stages as plain Python: what each Serve deployment owns, with no Ray in sight.

Each stage builds its engine from config (``engines.registry``), keeps prepared state in the asset
store under a content id, and takes and returns bytes, plain arrays and dicts, so a deployment is a
thin wrapper that adds resources, a health check and a handle.
"""

from __future__ import annotations

import inspect
import logging
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines import registry
from engines.avatar.portrait import Portrait, prepare_portrait
from engines.errors import InputError
from engines.media.audio import load_audio, require_duration
from engines.motion.idle import IdleLoop
from engines.motion.reference import FORMAT_VERSION as MOTION_FORMAT
from engines.motion.reference import ReferenceMotion, extract_reference_motion
from engines.motion.track import MotionTrack
from engines.tts.base import AudioChunk, Voice
from engines.tts.text import AUTO, normalize_language
from realtime_avatar.cache import content_hash
from realtime_avatar.clips import ClipCache, clip_key
from realtime_avatar.config import Settings
from realtime_avatar.encoding import ChunkEncoder, Container, UtteranceRenderer
from realtime_avatar.logs import event
from realtime_avatar.store import AssetStore, InvalidAssetIdError, build_store

log = logging.getLogger("realtime_avatar.stages")

IDLE_LOOPS_KEPT = 4  # idle loops drawn per avatar process (each ~40 MB at 256 px)
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
        self, renderer: Any, motion: Any, portrait: Portrait, sample_rate: int,
        part_frames: int | None = None, settle_frames: int = 0,
    ) -> None:
        self.renderer, self.motion, self.portrait, self.sample_rate = renderer, motion, portrait, sample_rate
        self.part_frames = part_frames
        self.settle_frames = settle_frames  # realtime: frames (and silence) that ease back onto the idle loop
        self._index = 0
        self._samples = 0  # audio fed so far: the next chunk's offset
        self._frames_out = 0

    def feed(self, chunk: AudioChunk) -> Iterator[RenderedChunk]:
        """The chunk's frames in parts; the first part carries the chunk's audio and text."""
        track = self.motion.from_audio(chunk.pcm, chunk.sample_rate, chunk.phones)
        step = self.part_frames or max(len(track), 1)
        for start in range(0, max(len(track), 1), step):
            first = start == 0
            yield self._part(chunk.text if first else "", chunk.language if first else "",
                             chunk.pcm if first else np.zeros(0, np.float32),
                             self._frames(track[start:start + step]))

    def finish(self) -> RenderedChunk | None:
        """The frames of the audio's last partial frame, if any (and the settling frames, if asked)."""
        tail = self.motion.flush()
        pcm = np.zeros(0, np.float32)
        if self.settle_frames:
            # Silence up to the end of the padded last frame and through the settling frames, so the
            # audio covers every frame.
            frames_total = self._frames_out + len(tail) + self.settle_frames
            pcm = np.zeros(max(0, round(frames_total * self.sample_rate / self.motion.fps) - self._samples),
                           np.float32)
            tail = MotionTrack.concatenate([tail, self.motion.settle(self.settle_frames)])
        frames = self._frames(tail)
        if not len(frames):
            return None
        return self._part("", "", pcm, frames)

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
        *_, transcript = self.transcribe_steps(*self.decode(audio, language))
        assert transcript is not None
        return transcript

    def decode(self, audio: bytes, language: str | None = None) -> tuple[np.ndarray, int, str | None]:
        """The request's language checked (None: detect), then its audio decoded: (pcm, rate, language)."""
        code = normalize_language(language)
        pcm, sample_rate = load_audio(audio, max_seconds=self.settings.limits.max_asr_seconds)
        return pcm, sample_rate, None if code == AUTO else code

    def audio_cost(self, pcm: np.ndarray, sample_rate: int) -> float:
        """Admission cost: the audio's share of the longest a request may send (``max_asr_seconds``)."""
        return pcm.shape[0] / sample_rate / self.settings.limits.max_asr_seconds

    def transcribe_steps(
        self, pcm: np.ndarray, sample_rate: int, language: str | None, fast: bool = False
    ) -> Iterator[dict[str, Any] | None]:
        """None per decoded segment, then the transcript as a dict (engines without steps: one step).
        ``fast``: the engine's quicker decoding for a realtime turn, where it has one."""
        steps = getattr(self.engine, "transcribe_steps", None)
        if steps is None:
            yield self.engine.transcribe(pcm, sample_rate, language).to_dict()
            return
        for step in (steps(pcm, sample_rate, language, fast=True) if fast
                     else steps(pcm, sample_rate, language)):
            yield None if step is None else step.to_dict()


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
            raise UnknownAssetError(f"no voice with id {str(voice_id)[:64]!r}; upload one to /v1/voices",
                                    code="voice_not_found")
        return Voice.from_bytes(data)

    def delete_voice(self, voice_id: str) -> dict[str, Any]:
        """Remove a stored voice from the store (every node, with a bucket); 404 if there is none."""
        voice = self.voice(voice_id)  # 404 voice_not_found if there is none
        assert voice is not None
        _delete(self.store, "voices", voice_id)
        forget = getattr(self.engine, "forget_voice", None)  # what the engine keeps of it (XTTS latents)
        if forget is not None:
            forget(voice)
        event(log, "voice_deleted", voice_id=voice_id)
        return {"voice_id": voice_id, "deleted": True}

    def purge(self) -> int:
        """Delete stored voices past ``store.retention_s`` (and engine caches of them, e.g. XTTS latents)."""
        gone = self.store.purge("voices")
        purge_cache, retention = getattr(self.engine, "purge_cache", None), self.settings.store.retention_s
        if purge_cache is not None and retention is not None:
            gone += purge_cache(retention)
        return gone

    def stream(self, text: str, language: str, voice_id: str | None = None) -> Iterator[AudioChunk]:
        """Bad text, language or voice raise here, before the first chunk. Chunks carry their offsets."""
        return self.engine.stream(text, language, self.voice(voice_id))

    def text_cost(self, text: str, language: str) -> float:
        return text_cost(self.settings, text, language)

    def max_chars(self, language: str) -> int:
        """The longest text the engine speaks in one request in ``language``."""
        return int(self.engine.planner.limits[language])


def voice_activity(settings: Settings) -> Any:
    """A fresh VAD for one audio stream (the engine is recurrent: one per call's microphone)."""
    spec = settings.vad
    return registry.build("vad", spec.name, spec.options)


class Animation:
    """Avatar: a portrait image (and optionally the owner's video) -> a stored avatar; audio chunks ->
    frames for that avatar.

    An avatar made with a reference video has its motion statistics (``ReferenceMotion``, a small JSON)
    stored under the same id as kind ``motions``: its renders and its idle loop draw head sway, blinks
    and nods from them instead of the motion engine's generic defaults (``reference`` below).
    """

    def __init__(self, settings: Settings, store: AssetStore | None = None) -> None:
        self.settings, self.store = settings, store or build_store(settings.store, settings.cache_path)
        spec = settings.avatar
        self.renderer = registry.build("avatar", spec.name, spec.options)
        self.default_avatar_id: str | None = None
        self.clips = ClipCache(settings.clip_cache, self.store, settings.cache_path / "assets" / "clips")
        render = settings.render
        self.idle_motion = IdleLoop(render.seed, render.fps, loop_s=settings.realtime.idle_loop_s)
        self._idle_loops: OrderedDict[str, IdleLoop] = OrderedDict()  # by reference motion key
        self._idle_frames: OrderedDict[str, np.ndarray] = OrderedDict()

    def load(self) -> None:
        _load(self.renderer)
        self.default_avatar_id = self.prepare_avatar(bundled_portrait_png())["avatar_id"]
        self.idle_frames(self.portrait(None))  # drawn now, so the first call does not wait for it

    def prepare_avatar(self, image: bytes, motion_video: bytes | None = None) -> dict[str, Any]:
        """Store the portrait (and the statistics of ``motion_video``, the owner's own 10-60 s video).

        Both are checked before anything is stored: a portrait or video that is refused leaves nothing
        behind. Only the statistics are kept, never the video."""
        size, limits = self.settings.render.size, self.settings.limits
        parts: list[bytes | str] = ["portrait", image, str(size), self.settings.avatar.name]
        if motion_video is not None:
            if len(motion_video) > limits.max_motion_video_bytes:
                raise UploadTooLargeError(
                    f"the motion video is larger than {limits.max_motion_video_bytes} bytes")
            parts += ["motion", str(MOTION_FORMAT), motion_video]
        avatar_id = _asset_id(*parts)
        stored = self.store.exists("avatars", avatar_id)
        if motion_video is not None and stored:
            stored = self.store.exists("motions", avatar_id)
        if not stored:
            portrait = prepare_portrait(image, size=size, max_pixels=limits.max_image_pixels)
            reference = None
            if motion_video is not None:
                reference = extract_reference_motion(
                    motion_video, min_seconds=limits.min_motion_video_seconds,
                    max_seconds=limits.max_motion_video_seconds)
                self.store.put("motions", avatar_id, reference.to_json().encode())
            try:
                self.store.put("avatars", avatar_id, portrait.to_bytes())
            except BaseException:
                if reference is not None:  # no statistics without their avatar
                    _delete(self.store, "motions", avatar_id)
                raise
            event(log, "avatar_prepared", avatar_id=avatar_id, size=size, motion=reference is not None)
        created: dict[str, Any] = {"avatar_id": avatar_id, "size": size}
        if motion_video is not None:
            reference = self.reference_motion(avatar_id)
            assert reference is not None
            created["motion"] = reference.summary()
        return created

    def reference_motion(self, avatar_id: str | None) -> ReferenceMotion | None:
        """The avatar's motion statistics from its owner's video; None: the engine's generic motion."""
        data = _stored(self.store, "motions", avatar_id) if avatar_id else None
        return None if data is None else ReferenceMotion.from_json(data)

    def delete_avatar(self, avatar_id: str) -> dict[str, Any]:
        """Remove a stored avatar (face crop, landmarks, features, motion statistics) from the store; 404
        if there is none."""
        motion = _delete(self.store, "motions", avatar_id)
        if not _delete(self.store, "avatars", avatar_id) and not motion:
            raise UnknownAssetError(f"no avatar with id {str(avatar_id)[:64]!r}", code="avatar_not_found")
        event(log, "avatar_deleted", avatar_id=avatar_id)
        return {"avatar_id": avatar_id, "deleted": True}

    def purge(self) -> int:
        """Delete stored avatars (and their motion statistics) past ``store.retention_s``."""
        return self.store.purge("avatars") + self.store.purge("motions")

    def portrait(self, avatar_id: str | None) -> Portrait:
        avatar_id = avatar_id or self.default_avatar_id
        data = _stored(self.store, "avatars", avatar_id) if avatar_id else None
        if data is None and avatar_id is not None and avatar_id == self.default_avatar_id:
            # The bundled portrait outlives retention and DELETE: it is prepared again when asked for.
            self.prepare_avatar(bundled_portrait_png())
            data = _stored(self.store, "avatars", avatar_id)
        if data is None:
            raise UnknownAssetError(f"no avatar with id {str(avatar_id)[:64]!r}; upload one to /v1/avatars",
                                    code="avatar_not_found")
        return Portrait.from_bytes(data)

    def new_motion(self, reference: ReferenceMotion | None = None, **extra: Any) -> Any:
        """Motion generators carry blink/head state across chunks, so each utterance gets its own.
        ``reference``: the avatar's own motion statistics replace the engine's generic ones (only the
        parameters the configured engine takes)."""
        render, spec = self.settings.render, self.settings.motion
        options = {"seed": render.seed, "fps": render.fps, **spec.options}
        if reference is not None:
            options.update(_accepted(registry.resolve("motion", spec.name), reference.generator_options()))
        return registry.build("motion", spec.name, {**options, **extra})

    def animator(
        self, portrait: Portrait, sample_rate: int, part_seconds: float | None,
        reference: ReferenceMotion | None = None,
    ) -> Animator:
        """``part_seconds``: send frames on in parts this long (streaming); None: a chunk at a time."""
        fps = self.settings.render.fps
        part_frames = None if part_seconds is None else max(1, round(part_seconds * fps))
        return Animator(self.renderer, self.new_motion(reference), portrait, sample_rate, part_frames)

    def idle_loop(self, reference: ReferenceMotion | None = None) -> IdleLoop:
        """The realtime idle motion: generic, or drawn from the avatar's own statistics."""
        if reference is None:
            return self.idle_motion
        loop = self._idle_loops.get(reference.key)
        if loop is None:
            render, loop_s = self.settings.render, self.settings.realtime.idle_loop_s
            loop = self._idle_loops[reference.key] = IdleLoop(render.seed, render.fps, loop_s=loop_s,
                                                              **reference.idle_options(loop_s))
            while len(self._idle_loops) > IDLE_LOOPS_KEPT:
                self._idle_loops.popitem(last=False)
        self._idle_loops.move_to_end(reference.key)
        return loop

    def idle_frames(self, portrait: Portrait, reference: ReferenceMotion | None = None) -> np.ndarray:
        """One loop of the idle motion drawn for this portrait (kept for the last few portraits)."""
        key = portrait.key if reference is None else f"{portrait.key}:{reference.key}"
        frames = self._idle_frames.get(key)
        if frames is None:
            frames = self.renderer.render(portrait, self.idle_loop(reference).loop())
            self._idle_frames[key] = frames
            while len(self._idle_frames) > IDLE_LOOPS_KEPT:
                self._idle_frames.popitem(last=False)
        self._idle_frames.move_to_end(key)
        return frames

    def speech_animator(
        self, portrait: Portrait, sample_rate: int, start_frame: int,
        reference: ReferenceMotion | None = None,
    ) -> Animator:
        """Speech laid on the idle loop from loop frame ``start_frame``, easing back onto it at the end."""
        render = self.settings.render
        motion = self.new_motion(reference, base=self.idle_loop(reference), start_frame=start_frame)
        part_frames = max(1, round(render.part_seconds * render.fps))
        settle = round(self.settings.realtime.settle_s * render.fps)
        return Animator(self.renderer, motion, portrait, sample_rate, part_frames, settle_frames=settle)

    def utterance(
        self, portrait: Portrait, sample_rate: int, container: Container, path: str | Path | None = None,
        part_seconds: float | None = None, reference: ReferenceMotion | None = None,
    ) -> UtteranceRenderer:
        """Audio chunks -> encoded parts of one utterance (an MP4 file at ``path``, or fMP4 bytes)."""
        encoder = ChunkEncoder.open(container, size=portrait.size, sample_rate=sample_rate,
                                    render=self.settings.render, path=path)
        return UtteranceRenderer(self.animator(portrait, sample_rate, part_seconds, reference), encoder)

    def text_cost(self, text: str, language: str) -> float:
        return text_cost(self.settings, text, language)

    def clip_key(self, text: str, language: str, voice_id: str | None, avatar_id: str | None) -> str:
        return clip_key(self.settings, text=text, language=language, voice_id=voice_id,
                        avatar_id=avatar_id or self.default_avatar_id)


def text_cost(settings: Settings, text: str, language: str | None) -> float:
    """Admission cost of speaking ``text``: its share of the longest text a request may carry in its
    language (``limits.max_text_chars``; auto: the strictest language's limit)."""
    limits = settings.limits.max_text_chars
    code = normalize_language(language)
    return len(text) / max(1, limits.get(code) or min(limits.values()))


def _accepted(engine: type, options: dict[str, Any]) -> dict[str, Any]:
    """The options ``engine``'s constructor takes (all of them if it takes ``**kwargs``)."""
    parameters = inspect.signature(engine).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return options
    names = {p.name for p in parameters}
    return {name: value for name, value in options.items() if name in names}


def _delete(store: AssetStore, kind: str, asset_id: str) -> bool:
    """Whether something was deleted: an id that cannot be one of ours was never stored."""
    try:
        return store.delete(kind, asset_id)
    except InvalidAssetIdError:
        return False


def _stored(store: AssetStore, kind: str, asset_id: str) -> bytes | None:
    """The stored bytes, or None: an id that cannot be one of ours is as unknown as a missing one."""
    try:
        return store.get(kind, asset_id)
    except InvalidAssetIdError:
        return None


