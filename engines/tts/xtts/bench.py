"""Time to first chunk (TTFC) and real-time factor of XTTS streaming, per language.

    python -m engines.tts.xtts.bench --checkpoint-dir ~/.cache/realtime-avatar/models/xtts-v2 --device cuda
    python -m engines.tts.xtts.bench --random release --device cuda --fp16
    python -m engines.tts.xtts.bench --random small --threads 2

``--random`` writes a random-weight checkpoint to a temp dir first: ``release`` has the real architecture
(its timings are the real model's per token), ``small`` is the tests' model. Random weights never emit
the stop token, so each clause is cut after ``--max-chunks`` chunks; a real model stops by itself.
TTFC runs from the ``stream()`` call to the first chunk; RTF is synthesis time over audio seconds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch

from engines.tts.voice import Voice

from .engine import XTTSEngine
from .random_checkpoint import SIZES, write_random_checkpoint
from .torchaudio_compat import ensure_torchaudio

SENTENCES = {
    "en": "Hello, it's great to meet you, and thanks for stopping by my page.",
    "zh": "你好，很高兴认识你，有什么问题都可以问我。",
    "es": "Hola, mucho gusto en conocerte, pregúntame lo que quieras.",
}


def time_stream(
    engine: XTTSEngine, text: str, language: str, voice: Voice, max_chunks: int
) -> tuple[float, float, float]:
    """(seconds to the first chunk, seconds in all, seconds of speech) for one sentence."""
    started = time.perf_counter()
    first = 0.0
    samples = 0
    chunks = engine.stream(text, language, voice)
    for n, chunk in enumerate(chunks, 1):
        if not chunk.pcm.any():  # the pause after the sentence
            break
        first = first or time.perf_counter() - started
        samples += chunk.pcm.size
        if n == max_chunks:
            break
    chunks.close()
    return first, time.perf_counter() - started, samples / engine.sample_rate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--checkpoint-dir", type=Path, help="official layout: config.json, model.pth, vocab.json"
    )
    source.add_argument(
        "--random", choices=sorted(SIZES), help="time a random-weight checkpoint of this size"
    )
    parser.add_argument("--vocab", type=Path, default=Path("tests/data/xtts_vocab.json"), help="for --random")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--deepspeed", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--stream-chunk-size", type=int, default=20)
    parser.add_argument("--reference", type=Path, default=Path("tests/data/LJ001-0001.wav"))
    parser.add_argument("--runs", type=int, default=3, help="timed runs per language, after one warm-up")
    parser.add_argument("--max-chunks", type=int, default=4, help="chunks timed per run at most")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint_dir
        if args.random:
            started = time.perf_counter()
            checkpoint = write_random_checkpoint(Path(tmp) / "xtts-v2", args.vocab, size=args.random)
            print(f"random {args.random} checkpoint written in {time.perf_counter() - started:.1f} s")
        engine = XTTSEngine(
            checkpoint,
            device=args.device,
            fp16=args.fp16,
            use_deepspeed=args.deepspeed,
            stream_chunk_size=args.stream_chunk_size,
            cache_dir=Path(tmp) / "latents",
            threads=args.threads,
        )
        started = time.perf_counter()
        engine.load()
        print(
            f"torch {torch.__version__}; device {args.device}; fp16 {args.fp16}; deepspeed {args.deepspeed}; "
            f"CPU threads {torch.get_num_threads()}; load {time.perf_counter() - started:.1f} s; "
            f"torchaudio {'stand-in' if ensure_torchaudio() else 'installed'}"
        )
        pcm, rate = sf.read(args.reference, dtype="float32")
        started = time.perf_counter()
        voice = engine.prepare_voice(pcm, rate)
        print(f"voice conditioning (cache miss) {time.perf_counter() - started:.2f} s")
        for language, text in SENTENCES.items():
            time_stream(
                engine, text, language, voice, args.max_chunks
            )  # warm-up (text front ends, allocator)
            runs = [time_stream(engine, text, language, voice, args.max_chunks) for _ in range(args.runs)]
            ttfc = statistics.median(r[0] for r in runs)
            rtf = statistics.median(r[1] / r[2] for r in runs)
            audio = statistics.mean(r[2] for r in runs)
            print(
                f"{language}: first chunk {ttfc * 1000:6.0f} ms   RTF {rtf:.2f} over {audio:.2f} s of audio "
                f"(median of {args.runs})"
            )


if __name__ == "__main__":
    main()
