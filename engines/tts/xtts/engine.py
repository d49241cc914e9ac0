"""XTTS-v2 (coqui-tts) behind the TTS contract: a cloned voice, streamed in ~1 s chunks.

Per reference voice, the GPT conditioning latents and the speaker embedding are computed once and kept
on disk, keyed by the clip's content hash and the checkpoint's identity, so a voice prepared once is
never conditioned again (not even after a restart). Per clause, ``inference_stream`` yields audio every
``stream_chunk_size`` GPT tokens; the text planner keeps every clause within XTTS's per-call character
limit, splitting by sentence first and at clauses only when a sentence is still too long.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pickle
import threading
import time
import zipfile
from collections.abc import Iterator, Mapping
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines.errors import InputError, ModelUnavailableError
from engines.media.files import atomic_output
from engines.tts.base import AudioChunk, TTSEngine
from engines.tts.text import AUTO, Sentence
from engines.tts.voice import Voice, content_hash

from .torchaudio_compat import ensure_torchaudio

FETCH_COMMAND = "avatar models fetch xtts-v2"
REQUIRED_FILES = ("config.json", "model.pth", "vocab.json")
SPEAKERS_FILE = "speakers_xtts.pth"  # optional: the release's preset speakers, used when no voice is given
LANGUAGE_CODES: Mapping[str, str] = {"en": "en", "es": "es", "zh": "zh-cn"}
# XTTS's per-call limits (its tokenizer's char_limits): longer inputs degrade or get truncated.
CHAR_LIMITS: Mapping[str, int] = {"en": 250, "es": 239, "zh": 82}
CONDITIONING_RATE = 22_050  # coqui's load_sr for reference audio
CONDITIONING_KEYS = ("gpt_cond_latent", "speaker_embedding")
_SAMPLE_BYTES = 1 << 20


def check_checkpoint(directory: Path) -> None:
    """Raise ModelUnavailableError naming each missing file and the command that fetches them."""
    missing = [directory / name for name in REQUIRED_FILES if not (directory / name).is_file()]
    if missing:
        names = "\n  ".join(str(p) for p in missing)
        raise ModelUnavailableError(
            f"XTTS-v2 weights are missing under {directory}:\n  {names}\n"
            f"Fetch them with `{FETCH_COMMAND}` (needs access to the model hub or the GCS weights cache)."
        )


@cache
def _coqui() -> tuple[Any, Any]:
    """(Xtts class, XttsConfig class), with the torchaudio stand-in registered first where needed."""
    ensure_torchaudio()
    try:
        from TTS.tts.configs.xtts_config import XttsConfig
        from TTS.tts.models.xtts import Xtts, _legacy_safe_globals
    except ImportError as exc:
        raise ModelUnavailableError(
            f"coqui-tts cannot be imported ({exc}): pip install coqui-tts==0.28.0 torchcodec==0.17.0 six "
            "(with the project's torch pin in the same command)"
        ) from exc

    class ReadOnlyXtts(Xtts):
        """Xtts whose checkpoint read never writes.

        The release's model.pth pickles its XttsConfig; coqui 0.28 converts it and saves the result over
        the original on first load, which changes the size and sha256 that `avatar models` recorded at
        fetch (startup checks then fail) and breaks on read-only mounts. Same read, no write-back.
        """

        def _load_checkpoint(self, model_path: Path) -> dict[str, Any]:
            with _legacy_safe_globals():
                return torch.load(model_path, map_location="cpu", weights_only=True)["model"]

    return ReadOnlyXtts, XttsConfig


class XTTSEngine(TTSEngine):
    """XTTS-v2 voice cloning (24 kHz), loaded lazily from a checkpoint dir in the official layout.

    Options: ``checkpoint_dir``; ``device`` ("cpu", "cuda" or "cuda:N"); ``fp16`` (CUDA autocast) and
    ``use_deepspeed`` (CUDA, needs the deepspeed package), both off by default; ``stream_chunk_size``
    (GPT tokens per audio chunk, ~0.93 s of speech per 20); ``cache_dir`` for conditioning latents;
    ``threads`` (torch CPU threads, process-wide); ``speed``; ``speaker`` (a preset of
    speakers_xtts.pth for requests without a voice, default its first); plus TTSEngine's options, where
    ``clause_chars`` is capped at XTTS's per-call limits (and defaults to them).
    """

    name = "xtts-v2"
    sample_rate = 24_000

    def __init__(
        self,
        checkpoint_dir: str | Path,
        device: str = "cpu",
        fp16: bool = False,
        use_deepspeed: bool = False,
        stream_chunk_size: int = 20,
        cache_dir: str | Path | None = None,
        threads: int | None = None,
        speed: float = 1.0,
        speaker: str | None = None,
        limits: Mapping[str, int] | None = None,
        clause_chars: Mapping[str, int] | None = None,
        sentence_pause: float = 0.25,
        clause_pause: float = 0.1,
        voice_cache_size: int = 32,
    ) -> None:
        wanted = clause_chars or {}
        per_call = {lang: min(limit, wanted.get(lang, limit)) for lang, limit in CHAR_LIMITS.items()}
        super().__init__(limits, per_call, sentence_pause, clause_pause, voice_cache_size)
        if device != "cpu" and not device.startswith("cuda"):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        if (fp16 or use_deepspeed) and device == "cpu":
            raise ValueError("fp16 and use_deepspeed need device='cuda'")
        if stream_chunk_size < 1:
            raise ValueError(f"stream_chunk_size must be >= 1, got {stream_chunk_size}")
        self.checkpoint_dir = Path(checkpoint_dir).expanduser()
        check_checkpoint(self.checkpoint_dir)
        self.device = device
        self.fp16 = fp16
        self.use_deepspeed = use_deepspeed
        self.stream_chunk_size = stream_chunk_size
        self.cache_dir = (
            Path(cache_dir).expanduser()
            if cache_dir is not None
            else Path.home() / ".cache" / "realtime-avatar" / "xtts-latents"
        )
        self.threads = threads
        self.speed = speed
        self.speaker = speaker
        self._latent_dim = self._read_latent_dim()
        self._model: Any = None
        self._config: Any = None
        self._load_lock = threading.Lock()
        # The GPT keeps the current prompt in the module (store_prefix_emb): one clause at a time.
        self._generate_lock = threading.Lock()

    def _read_latent_dim(self) -> int:
        path = self.checkpoint_dir / "config.json"
        try:
            return int(json.loads(path.read_text())["model_args"]["gpt_n_model_channels"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelUnavailableError(
                f"{path} is not an XTTS config ({exc}); re-fetch with `{FETCH_COMMAND}`"
            ) from exc

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @cached_property
    def model_id(self) -> str:
        """Identity of the checkpoint for cache keys: config and vocab, plus model.pth's size, head and tail.

        Sampling model.pth (1.87 GB) instead of hashing it keeps a cache hit free of model I/O; any
        re-trained or re-exported checkpoint changes its size or its pickled header and tail.
        """
        digest = hashlib.sha256()
        for name in ("config.json", "vocab.json"):
            digest.update((self.checkpoint_dir / name).read_bytes())
        model = self.checkpoint_dir / "model.pth"
        size = model.stat().st_size
        digest.update(str(size).encode())
        with model.open("rb") as handle:
            digest.update(handle.read(_SAMPLE_BYTES))
            handle.seek(max(0, size - _SAMPLE_BYTES))
            digest.update(handle.read())
        return digest.hexdigest()

    def load(self) -> None:
        with self._load_lock:
            if self._model is not None:
                return
            check_checkpoint(self.checkpoint_dir)
            if self.device.startswith("cuda") and not torch.cuda.is_available():
                raise ModelUnavailableError(f"device {self.device!r} requested but CUDA is not available")
            if self.use_deepspeed:
                try:
                    import deepspeed  # noqa: F401
                except ImportError as exc:
                    raise ModelUnavailableError("use_deepspeed needs the deepspeed package") from exc
            xtts, xtts_config = _coqui()
            if self.threads and self.device == "cpu":
                torch.set_num_threads(self.threads)
            config = xtts_config()
            config.load_json(str(self.checkpoint_dir / "config.json"))
            model = xtts(config)  # what Xtts.init_from_config does; coqui 0.28 deprecates that spelling
            try:
                # strict=True (coqui's default): every tensor of the architecture must be in model.pth.
                model.load_checkpoint(
                    config,
                    checkpoint_dir=str(self.checkpoint_dir),
                    vocab_path=str(self.checkpoint_dir / "vocab.json"),
                    use_deepspeed=self.use_deepspeed,
                )
            except (OSError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as exc:
                raise ModelUnavailableError(
                    f"{self.checkpoint_dir / 'model.pth'} does not load into XTTS: {exc}\n"
                    f"Re-fetch the official files with `{FETCH_COMMAND}`."
                ) from exc
            if self.speaker is not None and (
                model.speaker_manager is None or self.speaker not in model.speaker_manager.speakers
            ):
                raise ValueError(f"speaker {self.speaker!r} is not in {self.checkpoint_dir / SPEAKERS_FILE}")
            self._config = config
            self._model = model.to(self.device)

    def _loaded(self) -> Any:
        self.load()
        return self._model

    # --- voices ----------------------------------------------------------------------------------------

    def _cache_path(self, audio: np.ndarray, sample_rate: int) -> Path:
        return self._latents_path(content_hash(audio, sample_rate))  # the Voice's voice_id

    def _latents_path(self, voice_id: str) -> Path:
        key = hashlib.sha256(f"{voice_id}:{self.model_id}".encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.npz"

    def forget_voice(self, voice: Voice) -> None:
        """A deleted voice: its cached latents go too."""
        super().forget_voice(voice)
        self._latents_path(voice.voice_id).unlink(missing_ok=True)

    def purge_cache(self, max_age_s: float) -> int:
        """Delete cached latents older than ``max_age_s`` (the store's retention); how many went."""
        now, gone = time.time(), 0
        for path in self.cache_dir.glob("*/*.npz") if self.cache_dir.is_dir() else ():
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > max_age_s:
                    path.unlink()
                    gone += 1
        return gone

    def _condition(self, audio: np.ndarray, sample_rate: int) -> dict[str, Any]:
        path = self._cache_path(audio, sample_rate)
        # A missing or unreadable entry (e.g. cut short by a crash) is recomputed and overwritten.
        with (
            contextlib.suppress(OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile),
            np.load(path, allow_pickle=False) as cached,
        ):
            return {k: cached[k] for k in CONDITIONING_KEYS}
        conditioning = self._compute_conditioning(audio, sample_rate)
        with atomic_output(path) as tmp, tmp.open("wb") as handle:
            np.savez(handle, **conditioning)
        return conditioning

    def _compute_conditioning(self, audio: np.ndarray, sample_rate: int) -> dict[str, Any]:
        """``Xtts.get_conditioning_latents`` for one in-memory clip (coqui's version only reads files)."""
        model = self._loaded()
        import torchaudio  # after load(): the real package or the stand-in that _coqui() registered

        config = self._config
        wav = torchaudio.functional.resample(torch.from_numpy(audio)[None], sample_rate, CONDITIONING_RATE)
        wav = wav.clamp(-1.0, 1.0)[:, : CONDITIONING_RATE * config.max_ref_len].to(model.device)
        if config.sound_norm_refs:
            wav = wav / wav.abs().max() * 0.75
        speaker_embedding = model.get_speaker_embedding(wav, CONDITIONING_RATE)
        gpt_cond_latent = model.get_gpt_cond_latents(
            wav, CONDITIONING_RATE, length=config.gpt_cond_len, chunk_length=config.gpt_cond_chunk_len
        )
        return {
            "gpt_cond_latent": gpt_cond_latent.float().cpu().numpy(),  # [1, 32, 1024] for the release
            "speaker_embedding": speaker_embedding.float().cpu().numpy(),  # [1, 512, 1]
        }

    def _check_voice(self, voice: Voice) -> None:
        shapes = tuple(np.shape(voice.conditioning.get(k)) for k in CONDITIONING_KEYS)
        if shapes != ((1, 32, self._latent_dim), (1, 512, 1)):
            raise InputError(
                f"voice {voice.voice_id[:12]} has latents of shapes {shapes}, which this XTTS checkpoint "
                "cannot use; prepare the voice again with this engine",
                code="voice_mismatch",
            )

    def _latents(self, voice: Voice | None) -> tuple[torch.Tensor, torch.Tensor]:
        model = self._loaded()
        if voice is None:
            speakers = model.speaker_manager.speakers
            preset = speakers[self.speaker or next(iter(speakers))]
            return preset["gpt_cond_latent"], preset["speaker_embedding"]
        return tuple(  # type: ignore[return-value]
            torch.as_tensor(np.asarray(voice.conditioning[k], np.float32)) for k in CONDITIONING_KEYS
        )

    # --- speech ----------------------------------------------------------------------------------------

    def stream(
        self, text: str, language: str | None = AUTO, voice: Voice | None = None
    ) -> Iterator[AudioChunk]:
        """Chunks of ~``stream_chunk_size`` GPT tokens; a clause's text rides on its first chunk only.

        The pause after each clause is its own silent chunk (a streamed clause's last chunk is not known
        until the GPT stops). Input errors are raised here, before any chunk.
        """
        if voice is None and not (self.checkpoint_dir / SPEAKERS_FILE).is_file():
            raise InputError(
                f"XTTS needs a reference voice: this checkpoint has no {SPEAKERS_FILE} preset speakers",
                code="voice_required",
            )
        if voice is not None and voice.engine == self.name:
            self._check_voice(voice)
        return super().stream(text, language, voice)

    def _chunks(self, sentences: list[Sentence], voice: Voice | None) -> Iterator[AudioChunk]:
        for sentence in sentences:
            for i, clause in enumerate(sentence.clauses):
                label = clause
                for pcm in self._generate(clause, sentence.language, voice):
                    yield AudioChunk(pcm, self.sample_rate, label, sentence.language)
                    label = ""
                pause = self.sentence_pause if i == len(sentence.clauses) - 1 else self.clause_pause
                silence = np.zeros(int(pause * self.sample_rate), np.float32)
                yield AudioChunk(silence, self.sample_rate, "", sentence.language)

    def _speak(self, text: str, language: str, voice: Voice | None) -> np.ndarray:
        return np.concatenate([np.zeros(0, np.float32), *self._generate(text, language, voice)])

    def _precision(self) -> contextlib.AbstractContextManager[Any]:
        # Entered around each step only: an autocast left on across a yield would leak into the caller.
        return torch.autocast("cuda", dtype=torch.float16) if self.fp16 else contextlib.nullcontext()

    def _generate(self, text: str, language: str, voice: Voice | None) -> Iterator[np.ndarray]:
        """float32 audio chunks at 24 kHz for one clause of at most CHAR_LIMITS[language] characters."""
        model = self._loaded()
        gpt_cond_latent, speaker_embedding = self._latents(voice)
        config = self._config
        with self._generate_lock:
            steps = model.inference_stream(
                text,
                LANGUAGE_CODES[language],
                gpt_cond_latent,
                speaker_embedding,
                stream_chunk_size=self.stream_chunk_size,
                temperature=config.temperature,
                length_penalty=config.length_penalty,
                repetition_penalty=config.repetition_penalty,
                top_k=config.top_k,
                top_p=config.top_p,
                speed=self.speed,
                enable_text_splitting=False,  # the planner already split within CHAR_LIMITS
            )
            while True:
                with self._precision():
                    wav = next(steps, None)
                if wav is None:
                    return
                pcm = wav.float().cpu().numpy().reshape(-1)
                if pcm.size:
                    yield np.clip(pcm, -1.0, 1.0)
