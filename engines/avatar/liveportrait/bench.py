"""Micro-benchmark: ms/frame of ``animate`` for a 256 px source at the release architecture sizes.

    python -m engines.avatar.liveportrait.bench [--cpu-frames 2] [--cuda-frames 50] [--threads 2]

Without ``--weights`` the networks are randomly initialised (the cost does not depend on the values).
On CUDA it also times float16 autocast with and without torch.compile.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from .model import FrameControls, LivePortraitModel
from .networks import LivePortraitNetworks
from .weights import load_networks, make_runtime


def _controls(n: int) -> list[FrameControls]:
    return [
        FrameControls(lip_open=0.1 + 0.3 * (i % 3), eye_open=0.3, yaw=5.0 * float(np.sin(i)), pitch=2.0)
        for i in range(n)
    ]


def time_animate(model: LivePortraitModel, frames: int) -> float:
    """Mean ms/frame over ``frames`` frames, after one warm-up batch (compilation, allocator, caches)."""
    frames = -(-frames // model.batch_size) * model.batch_size  # whole batches: no recompiles mid-run
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    source = model.prepare_source(image)
    model.animate_batch(source, _controls(model.batch_size))
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    model.animate_batch(source, _controls(frames))  # animate_batch copies to host: includes the sync
    return (time.perf_counter() - start) * 1000.0 / frames


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu-frames", type=int, default=2, help="frames timed on CPU (seconds each)")
    parser.add_argument("--cuda-frames", type=int, default=50, help="frames timed per CUDA setting")
    parser.add_argument("--batch-size", type=int, default=1, help="frames rendered per forward pass")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--weights", help="root of the official layout; random weights if omitted")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    nets = load_networks(args.weights) if args.weights else LivePortraitNetworks().eval()
    print(f"torch {torch.__version__}; CPU threads {torch.get_num_threads()}")
    settings = [("cpu", False, False)]
    if torch.cuda.is_available():
        print(f"CUDA device: {torch.cuda.get_device_name()}")
        settings += [("cuda", False, False), ("cuda", True, False), ("cuda", True, True)]
    else:
        print("CUDA not available: CPU only")
    for device, fp16, compiled in settings:
        runtime = make_runtime(nets, device=device, fp16=fp16, compile=compiled)
        model = LivePortraitModel(runtime, batch_size=args.batch_size)
        ms = time_animate(model, max(1, args.cuda_frames if device == "cuda" else args.cpu_frames))
        label = f"{device:4s} fp16={fp16!s:5s} compile={compiled!s:5s} batch={args.batch_size}"
        print(f"{label}: {ms:9.1f} ms/frame")


if __name__ == "__main__":
    main()
