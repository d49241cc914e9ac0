"""Reference videos with known motion, rendered here: no real face video ships with the project.

The lite renderer animates the fixture portrait from a scripted ``MotionTrack`` (a yaw and a pitch
sinusoid, blinks every ``blink_every_s``, optional nods; glances painted on afterwards), and the frames
are encoded to MP4 bytes as a phone would send them. Also: videos with no face, for the refusals.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engines.avatar.faces import LEFT_EYE, RIGHT_EYE
from engines.avatar.lite import LiteRenderer
from engines.avatar.portrait import Portrait, prepare_portrait
from engines.media.mp4 import Mp4Writer
from engines.motion.procedural import blink_profile
from engines.motion.track import MotionTrack

DATA = Path(__file__).resolve().parent / "data"
FPS = 25
SIZE = 256
SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class MotionScript:
    seconds: float = 20.0
    yaw_deg: float = 6.0  # sinusoid amplitudes (std = amplitude / sqrt 2)
    yaw_hz: float = 0.25
    pitch_deg: float = 3.0
    pitch_hz: float = 0.4
    blink_every_s: float = 2.0
    blink_s: float = 0.2
    nod_every_s: float | None = None  # extra quick chin dips
    nod_deg: float = 3.0

    def track(self) -> MotionTrack:
        n = round(self.seconds * FPS)
        t = np.arange(n) / FPS
        blink = np.zeros(n)
        profile = blink_profile(round(self.blink_s * FPS))
        for start in np.arange(self.blink_every_s / 2, self.seconds - self.blink_s, self.blink_every_s):
            first = round(start * FPS)
            blink[first:first + len(profile)] = profile[: n - first]
        pitch = self.pitch_deg * np.sin(2 * np.pi * self.pitch_hz * t)
        if self.nod_every_s:
            for at in np.arange(self.nod_every_s / 2, self.seconds, self.nod_every_s):
                pitch += self.nod_deg * np.exp(-0.5 * ((t - at) / 0.15) ** 2)
        zeros = np.zeros(n)
        return MotionTrack(FPS, mouth_open=zeros, mouth_width=zeros, blink=blink,
                           yaw=self.yaw_deg * np.sin(2 * np.pi * self.yaw_hz * t), pitch=pitch, roll=zeros,
                           breath=np.sin(2 * np.pi * 0.25 * t))


def portrait(size: int = SIZE) -> Portrait:
    return prepare_portrait(DATA / "biden.jpg", size=size)


def encode(frames: np.ndarray, fps: int = FPS) -> bytes:
    """Frames -> MP4 bytes (H.264, with a silent audio track as phones record)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        height, width = frames.shape[1:3]
        with Mp4Writer(path, width=width, height=height, sample_rate=SAMPLE_RATE, fps=fps) as writer:
            writer.write_frames(frames)
            writer.write_audio(np.zeros(round(len(frames) / fps * SAMPLE_RATE), np.float32))
        return path.read_bytes()


def render(track: MotionTrack, face: Portrait | None = None) -> np.ndarray:
    return LiteRenderer().render(face or portrait(), track)


def scripted_video(script: MotionScript, face: Portrait | None = None) -> bytes:
    return encode(render(script.track(), face))


def glance(frames: np.ndarray, face: Portrait, shifts_px: np.ndarray) -> np.ndarray:
    """Each eye's content moved sideways by ``shifts_px[i]`` px in frame ``i``: the iris looks aside (the
    lite renderer cannot move the eyes; the head must hold still for the portrait's eye boxes to fit)."""
    out = frames.copy()
    for eye in (RIGHT_EYE, LEFT_EYE):
        corners = face.landmarks[eye]
        x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 1
        x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 2
        inside = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(inside, [np.round(corners - (x0, y0)).astype(np.int32)], 1)
        inside = cv2.dilate(inside, np.ones((3, 3), np.uint8)).astype(bool)[..., None]
        for index, shift in enumerate(shifts_px):
            if shift:
                box = frames[index, y0:y1, x0:x1]
                out[index, y0:y1, x0:x1] = np.where(inside, np.roll(box, int(shift), axis=1), box)
    return out


def faceless_video(seconds: float, size: int = 128, fps: int = FPS, seed: int = 0) -> bytes:
    """A drifting gradient with noise: moving pixels, no face."""
    rng = np.random.default_rng(seed)
    n = round(seconds * fps)
    ramp = np.linspace(0, 255, size)[None, :]
    frames = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        base = (ramp + 3 * i) % 256
        frames[i] = np.clip(base[..., None] + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    return encode(frames, fps)
