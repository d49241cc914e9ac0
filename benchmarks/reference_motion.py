"""Motion from the owner's video, measured: ``python -m benchmarks.reference_motion``.

For scripted reference videos (lite renders of the fixture portrait with known motion, as in the
tests): the video's statistics, then the generic engine's output and the reference-driven output for the
same audio (9.7 s of speech, then 10 s of listening), each measured on its decoded frames with the same
extractor. Then the extractor's speed on a 256 px and a 1280x720 video. Prints Markdown.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import soundfile as sf

from engines.motion.generator import MotionGenerator
from engines.motion.reference import ReferenceMotion, extract_reference_motion
from engines.motion.track import MotionTrack
from tests.motion_videos import DATA, FPS, MotionScript, encode, portrait, render

SCRIPTS = {
    "calm, blinks every 2 s": MotionScript(yaw_deg=1.0, pitch_deg=0.6, blink_every_s=2.0),
    "lively, blinks every 7 s": MotionScript(yaw_deg=12.0, pitch_deg=6.0, blink_every_s=7.0, blink_s=0.3),
    "nods every 4 s, blinks every 2 s": MotionScript(nod_every_s=4.0, nod_deg=5.0),
}
LISTEN_S = 10
HD = (1280, 720)


def _row(label: str, stats: ReferenceMotion) -> str:
    yaw, pitch, roll = stats.head_std_deg
    median = stats.blink_interval_median_s
    return (f"| {label} | {yaw:.2f} | {pitch:.2f} | {roll:.2f} | {stats.head_band_hz[0]:.2f}-"
            f"{stats.head_band_hz[1]:.2f} | {'-' if median is None else f'{median:.2f}'} | "
            f"{stats.blinks_per_min:.0f} | {stats.nods_per_min:.0f} |")


def _output(options: dict, pcm: np.ndarray, sample_rate: int, face) -> ReferenceMotion:
    generator = MotionGenerator(seed=0, fps=FPS, **options)
    track = MotionTrack.concatenate([generator.from_audio(pcm, sample_rate), generator.flush(),
                                     generator.idle(LISTEN_S * FPS)])
    return extract_reference_motion(encode(render(track, face)))


def _still_talking(pcm: np.ndarray, sample_rate: int, face) -> ReferenceMotion:
    """The extractor's floor: a head that does not move or blink, only talks."""
    still = {"head_idle_deg": (0.0,) * 3, "head_speaking_deg": (0.0,) * 3, "nod_deg": 0.0,
             "blink_interval_s": (LISTEN_S * 10, LISTEN_S * 10), "first_blink_s": (LISTEN_S * 10,) * 2}
    return _output(still, pcm, sample_rate, face)


def _hd(frames: np.ndarray) -> np.ndarray:
    """The 256 px frames inside a 1280x720 frame (face ~700 px tall), as a phone's landscape video."""
    width, height = HD
    out = np.full((len(frames), height, width, 3), 90, np.uint8)
    x0 = (width - height) // 2
    for i, frame in enumerate(frames):
        out[i, :, x0:x0 + height] = cv2.resize(frame, (height, height), interpolation=cv2.INTER_CUBIC)
    return out


def _speed(data: bytes, frames: int) -> float:
    started = time.perf_counter()
    extract_reference_motion(data)
    return frames / (time.perf_counter() - started)


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    face = portrait()
    pcm, sample_rate = sf.read(DATA / "LJ001-0001.wav", dtype="float32")
    generic = _output({}, pcm, sample_rate, face)
    print("| video / output | yaw std | pitch std | roll std | sway band Hz | blink interval median s | "
          "blinks/min | nods/min |")
    print("|---|---|---|---|---|---|---|---|")
    print(_row("generic engine's output", generic))
    print(_row("still head, talking (the extractor's floor)", _still_talking(pcm, sample_rate, face)))
    speeds = []
    for name, script in SCRIPTS.items():
        frames = render(script.track(), face)
        video = encode(frames)
        speeds.append(("256 px", _speed(video, len(frames))))
        stats = extract_reference_motion(video)
        print(_row(f"video: {name}", stats))
        print(_row("output driven by it", _output(stats.generator_options(), pcm, sample_rate, face)))
    frames = render(next(iter(SCRIPTS.values())).track(), face)
    speeds.append(("1280x720", _speed(encode(_hd(frames)), len(frames))))
    print()
    for size, rate in speeds:
        print(f"extraction, {size}: {rate:.0f} frames/s")


if __name__ == "__main__":
    main()
