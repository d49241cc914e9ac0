"""Random-weight XTTS checkpoints in the official layout, for tests and benchmarks without the real weights.

The hub's files cannot be fetched on the build machines, so tests make their own: ``config.json``
(coqpit ``XttsConfig.save_json``), ``model.pth`` (``{"model": state_dict}``, what coqui's
``load_checkpoint`` reads) and ``vocab.json``. ``release`` has coqui/XTTS-v2's architecture (30 GPT
layers, 1024 wide: the timings of a real model, not its voice); ``small`` keeps every component but
shrinks the GPT and caps generation so a clause ends quickly on CPU. The HiFi-GAN decoder and the
speaker encoder have fixed sizes in coqui, so they are full size in both.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from .torchaudio_compat import ensure_torchaudio

# Values of coqui/XTTS-v2's config.json that differ from coqpit's XttsConfig defaults.
RELEASE_ARGS: dict[str, Any] = {
    "gpt_layers": 30,
    "gpt_n_model_channels": 1024,
    "gpt_n_heads": 16,
    "decoder_input_dim": 1024,
    "gpt_max_audio_tokens": 605,
    "gpt_max_text_tokens": 402,
    "gpt_max_prompt_tokens": 70,
    "gpt_num_audio_tokens": 1026,
    "gpt_start_audio_token": 1024,
    "gpt_stop_audio_token": 1025,
    "gpt_use_perceiver_resampler": True,
}
RELEASE_INFERENCE: dict[str, Any] = {
    "temperature": 0.75,
    "repetition_penalty": 5.0,
    "gpt_cond_len": 30,
    "gpt_cond_chunk_len": 4,
    "max_ref_len": 30,
}
# The decoder consumes GPT latents, so its input width follows the GPT's. 30 audio tokens cap a clause
# at 27 generated tokens (~1.3 s of audio): two stream chunks of 20 + 7.
SMALL_ARGS: dict[str, Any] = {
    **RELEASE_ARGS,
    "gpt_layers": 2,
    "gpt_n_model_channels": 128,
    "gpt_n_heads": 4,
    "decoder_input_dim": 128,
    "gpt_max_audio_tokens": 30,
}
SIZES = {"small": SMALL_ARGS, "release": RELEASE_ARGS}


def write_random_checkpoint(
    directory: str | Path, vocab: str | Path, *, size: str = "small", seed: int = 0
) -> Path:
    """Write config.json, model.pth and vocab.json of a randomly initialised XTTS into ``directory``."""
    ensure_torchaudio()
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = XttsConfig(**RELEASE_INFERENCE)
    for key, value in SIZES[size].items():
        setattr(config.model_args, key, value)
    torch.manual_seed(seed)
    model = Xtts(config)
    # The GPT is only built once the tokenizer knows the vocabulary size (as in load_checkpoint).
    model.tokenizer = VoiceBpeTokenizer(vocab_file=str(vocab))
    model.init_models()
    torch.save({"model": model.state_dict()}, directory / "model.pth")
    config.save_json(str(directory / "config.json"))
    shutil.copyfile(vocab, directory / "vocab.json")
    return directory
