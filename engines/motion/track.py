"""``MotionTrack``: frame-aligned animation controls, the contract between motion and avatar renderers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

#: Per-frame channels in their canonical order (also the column order of ``as_array``).
CHANNELS = ("mouth_open", "mouth_width", "blink", "yaw", "pitch", "roll", "breath")


@dataclass(frozen=True)
class MotionTrack:
    """Per-frame float32 controls at ``fps`` frames per second.

    - ``mouth_open``: 0 closed .. 1 wide open (jaw drop).
    - ``mouth_width``: -1 rounded ("oo") .. 0 neutral .. 1 spread ("ee").
    - ``blink``: 0 eyes open .. 1 closed.
    - ``yaw``, ``pitch``, ``roll``: head rotation in degrees (a few degrees). Positive yaw turns the face
      towards image right, positive pitch nods the chin down, positive roll tilts it clockwise on screen.
    - ``breath``: -1 exhaled .. 1 inhaled (renderers turn it into a small chest/shoulder rise).
    """

    fps: float
    mouth_open: np.ndarray
    mouth_width: np.ndarray
    blink: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray
    roll: np.ndarray
    breath: np.ndarray

    def __post_init__(self) -> None:
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        length = None
        for name in CHANNELS:
            values = np.ascontiguousarray(getattr(self, name), dtype=np.float32).reshape(-1)
            if length is not None and values.size != length:
                raise ValueError(f"channel {name} has {values.size} frames, expected {length}")
            length = values.size
            object.__setattr__(self, name, values)

    def __len__(self) -> int:
        return int(self.mouth_open.size)

    def __getitem__(self, index: slice) -> MotionTrack:
        if not isinstance(index, slice):
            raise TypeError("MotionTrack supports slicing only, e.g. track[10:20]")
        return MotionTrack(self.fps, **{name: getattr(self, name)[index] for name in CHANNELS})

    @property
    def seconds(self) -> float:
        return len(self) / self.fps

    @classmethod
    def empty(cls, fps: float) -> MotionTrack:
        return cls.from_array(np.zeros((0, len(CHANNELS)), np.float32), fps)

    @classmethod
    def from_array(cls, values: np.ndarray, fps: float) -> MotionTrack:
        """Build from an ``[N, len(CHANNELS)]`` array with columns in ``CHANNELS`` order."""
        values = np.asarray(values, np.float32)
        if values.ndim != 2 or values.shape[1] != len(CHANNELS):
            raise ValueError(f"expected an [N, {len(CHANNELS)}] array, got {values.shape}")
        return cls(fps, **dict(zip(CHANNELS, values.T, strict=True)))

    def as_array(self) -> np.ndarray:
        return np.stack([getattr(self, name) for name in CHANNELS], axis=1)

    @classmethod
    def concatenate(cls, tracks: Iterable[MotionTrack], fps: float | None = None) -> MotionTrack:
        """Join tracks end to end; they must share one frame rate (``fps`` is needed when none is given)."""
        tracks = list(tracks)
        rates = {track.fps for track in tracks}
        if len(rates) > 1:
            raise ValueError(f"cannot concatenate tracks with different fps: {sorted(rates)}")
        rate = rates.pop() if rates else fps
        if rate is None:
            raise ValueError("fps is required to concatenate an empty list of tracks")
        arrays: Sequence[np.ndarray] = [track.as_array() for track in tracks]
        return cls.from_array(np.concatenate(arrays) if arrays else np.zeros((0, len(CHANNELS))), rate)

