"""The viseme engine with and without the voices' phone timing: ``python -m benchmarks.lipsync_phones``.

Six sentences (the three short scenarios, EN_long and two sentences not among the scenarios) in the
bundled voice (``--voice female``: Kokoro in every language; ``male``: Piper in English, Kokoro else),
each spoken once and driven through ``VisemeMotionGenerator`` twice (audio alone; audio + phones), drawn
by the lite renderer and scored by lip sync to words (no MP4 round trip). Prints the scores and the mean
parts per variant.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import yaml

SCENARIOS = Path(__file__).resolve().parents[1] / "realtime_avatar" / "scenarios.yaml"
EXTRA = [("Please keep moving to the blue room, Bob.", "en"), ("Mi mamá come mucho melón.", "es")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voice", choices=("female", "male"), default="female")
    args = parser.parse_args()

    from engines.motion import MotionTrack
    from engines.motion.visemes import VisemeMotionGenerator
    from engines.tts.bundled import BundledTTS
    from evaluator.metrics import lipsync_words as lw
    from realtime_avatar.pipeline import AvatarPipeline, SpokenSegment

    pipeline = AvatarPipeline()
    portrait = pipeline.prepare_portrait()
    listed = yaml.safe_load(SCENARIOS.read_text())
    scenarios = {item["name"]: (item["text"], item["language"]) for item in listed}
    sentences = [scenarios[name] for name in ("EN_short", "ZH_short", "ES_short", "EN_long")] + EXTRA
    tts = BundledTTS(default_voice=args.voice)
    spoken = [(text, language, list(tts.stream(text, language))) for text, language in sentences]
    for variant, with_phones in (("audio only", False), ("audio + phones", True)):
        results = []
        for text, language, chunks in spoken:
            generator = VisemeMotionGenerator()
            parts = [generator.from_audio(c.pcm, c.sample_rate, c.phones if with_phones else ())
                     for c in chunks]
            track = MotionTrack.concatenate([*parts, generator.flush()])
            pcm = np.concatenate([c.pcm for c in chunks])
            rate = chunks[0].sample_rate
            frames = pipeline.renderer.render(portrait, track)
            said = [SpokenSegment(language, text, 0.0, pcm.size / rate)]
            results.append(lw.lip_sync_words(frames, track.fps, pcm, rate, said, pipeline.asr))
        means = {part: np.mean([r.parts[part] for r in results if r.parts.get(part) is not None])
                 for part in results[0].parts}
        scores = ", ".join(f"{r.score:.3f}" for r in results)
        print(f"{args.voice} {variant}: {scores}; mean {np.mean([r.score for r in results]):.3f}; "
              + ", ".join(f"{part} {value:.3f}" for part, value in means.items()))


if __name__ == "__main__":
    main()
