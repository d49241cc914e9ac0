"""Motion statistics from a person's own video: head sway, blinks and nods, for the motion engine.

``extract_reference_motion(video_bytes)`` decodes the video (PyAV), fits dlib's 68 landmarks on every
analysed frame (the detector runs once per ``redetect_s``; in between, the previous frame's landmarks
place the face box), and measures per frame:

- head pose: ``cv2.solvePnP`` of nine landmarks against a generic 3-D face (below), as yaw / pitch /
  roll in degrees with ``MotionTrack``'s signs;
- eye aspect ratio (``engines.avatar.measure.eye_openness``): a blink is a dip below the open-eye
  baseline;
- gaze: the horizontal offset of the eye opening's darkest pixels (iris and pupil) from the eye's
  middle, in eye widths; a saccade is a quick jump of it.

The result, ``ReferenceMotion``, is a few numbers (a small JSON): per-axis sway (std) and dominant
frequency, the frequency band holding most of the sway's power, blink rate, intervals and duration,
nod rate and depth, gaze spread and saccade rate. ``generator_options`` / ``idle_options`` turn them into
the constructor parameters of ``MotionGenerator`` and ``IdleLoop``, so that person's own rhythm replaces
the generic one (gaze is measured only: ``MotionTrack`` has no gaze channel yet).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import av
import cv2
import numpy as np
from scipy import signal

from engines.avatar.faces import LEFT_EYE, RIGHT_EYE, FaceBox, detect_faces, fit_landmarks
from engines.avatar.measure import eye_openness
from engines.errors import (
    InvalidVideoError,
    NoFaceError,
    VideoTooLongError,
    VideoTooShortError,
    public_message,
)
from engines.motion.procedural import blink_profile

FORMAT_VERSION = 1  # of the JSON; part of an avatar's id, so a changed extractor makes new ids
DEFAULT_MIN_SECONDS = 10.0
DEFAULT_MAX_SECONDS = 60.0
DEFAULT_ANALYSIS_FPS = 25.0  # frames analysed per second: a blink lasts ~4 of them
DEFAULT_WORK_SIDE = 640  # frames are analysed with their long side scaled down to this
DEFAULT_REDETECT_S = 1.0  # the face detector runs this often; landmarks carry the box in between
DEFAULT_MAX_FRAME_PIXELS = 3840 * 2160  # larger frames are refused before decoding (4K is plenty)
DURATION_SLACK_S = 1.0  # a container's stated duration may run this much past its last frame
MIN_FACE_SHARE = 0.5  # a face in fewer of the analysed frames than this: refused as no_face
SMOOTH_S = 0.2  # pose smoothing: removes landmark jitter (frame to frame), keeps head motion (< 2 Hz)
SWAY_BAND_HZ = (0.03, 2.0)  # frequencies counted as head sway
BAND_POWER_SHARES = (0.2, 0.8)  # the sway band: where the cumulative power crosses these shares
SPECTRUM_PADDING = 4  # zero padding of the sway spectrum: finer frequency steps for the peak
BLINK_DROP = 0.15  # eye aspect ratio below (1 - this) x the open-eye baseline: the eyes are closing ...
BLINK_DEPTH = 0.25  # ... and a blink if they reach (1 - this) x it (a dip only to BLINK_DROP is jitter)
BASELINE_S = 2.0  # the open-eye baseline is the running median over this window (pose changes EAR)
MIN_BLINK_GAP_S = 0.2  # dips closer than this are one blink
NOD_MIN_DEG = 2.0  # a chin dip at least this deep (prominence) ...
NOD_MAX_WIDTH_S = 1.0  # ... and at most this wide at half depth is a nod, not slow sway
GAZE_DARK_SHARE = 0.3  # the iris and pupil: the darkest share of the eye opening's pixels
MIN_EYE_PIXELS = 12  # an eye opening smaller than this (closed, tiny) gives no gaze reading
SACCADE_MIN_SHIFT = 0.05  # a gaze jump of at least this many eye widths within two frames ...
SACCADE_MIN_GAP_S = 0.2  # ... at least this long after the last one is a saccade

# Mapping the statistics onto the motion engine's parameters.
IDLE_SHARE = 0.5  # listening sway as a share of the video's (the generic defaults' idle/speaking ratio)
LIMIT_STDS = 3.0  # the engine's soft head limit at this many of the person's std: their range stays
FIRST_BLINK_SHARE = 0.5  # the first blink comes within this share of an interval (generic: 1-3 of 3-6 s)
MIN_BLINK_INTERVAL_S = 0.6
MIN_INTERVALS = 2  # fewer blink intervals than this say nothing about a rhythm: generic blinks stay
MIN_NODS = 2  # likewise for the nods' depth (one dip may be a glance down)

# Generic adult face, millimetres, origin at the nasion (27): x to the subject's left (image right),
# y up, z towards the camera. Rough anthropometric averages; only the shape matters to the angles.
MODEL_POINTS = {
    27: (0.0, 0.0, 0.0),  # nasion
    30: (0.0, -45.0, 20.0),  # nose tip
    33: (0.0, -55.0, 8.0),  # subnasale
    36: (-45.0, -3.0, -22.0),  # outer eye corner, image left
    39: (-15.0, -3.0, -10.0),  # inner eye corner
    42: (15.0, -3.0, -10.0),
    45: (45.0, -3.0, -22.0),
    48: (-25.0, -80.0, -10.0),  # mouth corners
    54: (25.0, -80.0, -10.0),
    8: (0.0, -120.0, -5.0),  # chin (menton)
}
_LANDMARKS = list(MODEL_POINTS)
# Into OpenCV's camera frame (y down, z away from the camera), so a face looking at the camera is R = I.
_OBJECT = (np.array(list(MODEL_POINTS.values()), np.float64) * np.array([1.0, -1.0, -1.0]))


@dataclass(frozen=True)
class FrameSeries:
    """Per analysed frame: head angles (deg, NaN without a face) and eye aspect ratio."""

    fps: float
    yaw: np.ndarray
    pitch: np.ndarray
    roll: np.ndarray
    eye_open: np.ndarray
    gaze: np.ndarray  # horizontal iris offset, eye widths, + = towards image right

    @property
    def face_share(self) -> float:
        return float(np.isfinite(self.yaw).mean()) if self.yaw.size else 0.0


@dataclass(frozen=True)
class ReferenceMotion:
    """A person's motion statistics (all angles in degrees, ``MotionTrack``'s signs)."""

    seconds: float
    frames: int
    face_share: float
    head_std_deg: tuple[float, ...]  # yaw, pitch, roll
    head_freq_hz: tuple[float, ...]  # dominant sway frequency per axis
    head_band_hz: tuple[float, ...]  # (low, high): where most of the sway's power lies (all axes)
    blinks: int = 0
    blink_intervals_s: tuple[float, ...] = field(default=())  # start to start
    blink_duration_s: float | None = None  # closed past half depth (median)
    nods: int = 0
    nod_deg: float | None = None  # median depth of the nods
    gaze_std: float | None = None  # eye widths
    saccades: int = 0
    version: int = FORMAT_VERSION

    @property
    def blinks_per_min(self) -> float:
        return 60.0 * self.blinks / max(self.seconds, 1e-9)

    @property
    def nods_per_min(self) -> float:
        return 60.0 * self.nods / max(self.seconds, 1e-9)

    @property
    def saccades_per_min(self) -> float:
        return 60.0 * self.saccades / max(self.seconds, 1e-9)

    @property
    def blink_interval_median_s(self) -> float | None:
        return float(np.median(self.blink_intervals_s)) if self.blink_intervals_s else None

    @property
    def key(self) -> str:
        """Identifies the statistics (e.g. to cache what was drawn from them)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> ReferenceMotion:
        try:
            values = json.loads(text)
            if values.get("version") != FORMAT_VERSION:
                raise ValueError(f"format {values.get('version')} is not {FORMAT_VERSION}")
            for name in ("head_std_deg", "head_freq_hz", "head_band_hz", "blink_intervals_s"):
                values[name] = tuple(float(v) for v in values[name])
            return cls(**values)
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise ValueError(f"not serialised reference motion: {exc}") from exc

    def summary(self) -> dict[str, Any]:
        """What the API reports about the video."""
        return {
            "seconds": round(self.seconds, 2),
            "head_std_deg": dict(zip(("yaw", "pitch", "roll"), (round(v, 2) for v in self.head_std_deg),
                                     strict=True)),
            "head_band_hz": [round(v, 3) for v in self.head_band_hz],
            "blinks_per_min": round(self.blinks_per_min, 1),
            "blink_interval_median_s": _rounded(self.blink_interval_median_s),
            "blink_duration_s": _rounded(self.blink_duration_s),
            "nods_per_min": round(self.nods_per_min, 1),
            "saccades_per_min": round(self.saccades_per_min, 1),
        }

    def _blink_interval(self) -> tuple[float, float] | None:
        """A uniform range with the intervals' median and quartiles: (median - IQR, median + IQR)."""
        if len(self.blink_intervals_s) < MIN_INTERVALS:
            return None
        q1, median, q3 = np.percentile(self.blink_intervals_s, (25, 50, 75))
        half = max(float(q3 - q1), 0.0)
        low = max(MIN_BLINK_INTERVAL_S, float(median) - half)
        return low, max(low, float(median) + half)

    def _blink_duration(self) -> float | None:
        """The engine's blink length whose profile stays past half closed as long as this person's."""
        if self.blink_duration_s is None:
            return None
        return self.blink_duration_s / _PROFILE_HALF_SHARE

    def generator_options(self) -> dict[str, Any]:
        """``MotionGenerator`` parameters from these statistics (what is unknown keeps its default)."""
        options: dict[str, Any] = {
            "head_speaking_deg": self.head_std_deg,
            "head_idle_deg": _scaled(self.head_std_deg, IDLE_SHARE),
            "head_limit_deg": _scaled(self.head_std_deg, LIMIT_STDS),
            "head_freq_hz": self.head_band_hz,
        }
        interval = self._blink_interval()
        if interval is not None:
            options["blink_interval_s"] = interval
            options["first_blink_s"] = tuple(v * FIRST_BLINK_SHARE for v in interval)
        if (duration := self._blink_duration()) is not None:
            options["blink_duration_s"] = duration
        if self.nods >= MIN_NODS and self.nod_deg is not None:
            options["nod_deg"] = self.nod_deg
        return options

    def idle_options(self, loop_s: float) -> dict[str, Any]:
        """``IdleLoop`` parameters: the sway as whole cycles per loop inside the person's band."""
        low, high = self.head_band_hz
        cycles = sorted({max(1, round(f * loop_s)) for f in np.geomspace(max(low, 1e-3), high, 3)})
        options: dict[str, Any] = {
            "head_deg": _scaled(self.head_std_deg, IDLE_SHARE),
            "head_cycles": tuple(cycles),
        }
        if (interval := self._blink_interval()) is not None:
            options["blink_interval_s"] = interval
        if (duration := self._blink_duration()) is not None:
            options["blink_duration_s"] = duration
        return options


def _profile_half_share() -> float:
    profile = blink_profile(1000)
    return float((profile >= 0.5).mean())


_PROFILE_HALF_SHARE = _profile_half_share()


def _scaled(values: tuple[float, ...], factor: float) -> tuple[float, ...]:
    return tuple(round(v * factor, 3) for v in values)


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# --- decoding and per-frame measurement --------------------------------------------------------------


def _frames(
    data: bytes, *, analysis_fps: float, work_side: int, max_seconds: float, max_frame_pixels: int,
) -> Iterator[tuple[float, np.ndarray]]:
    """(time in s from the first frame, gray frame at ``work_side``), at most ``analysis_fps`` a second."""
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise InvalidVideoError(f"could not read the video: {public_message(str(exc))}") from None
    with container:
        if not container.streams.video:
            raise InvalidVideoError("the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > max_frame_pixels:
            raise InvalidVideoError(f"the video is {width}x{height}, more than {max_frame_pixels} pixels")
        stated = None if container.duration is None else container.duration / av.time_base
        if stated is not None and stated > max_seconds + DURATION_SLACK_S:
            raise VideoTooLongError(f"the video is {stated:.1f} s; at most {max_seconds:g} s is taken")
        start: float | None = None
        next_time = 0.0
        try:
            for index, frame in enumerate(container.decode(stream)):
                rate = float(stream.average_rate or analysis_fps)
                stamp = frame.time if frame.time is not None else index / rate
                start = stamp if start is None else start
                elapsed = stamp - start
                if elapsed > max_seconds:
                    raise VideoTooLongError(f"the video is longer than {max_seconds:g} s")
                if elapsed + 1e-6 < next_time:
                    continue  # more frames a second than analysed
                next_time += 1.0 / analysis_fps
                while next_time <= elapsed:
                    next_time += 1.0 / analysis_fps
                gray = frame.to_ndarray(format="gray")
                scale = work_side / max(gray.shape)
                if scale < 1.0:
                    gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                yield elapsed, _upright(gray, frame.rotation)
        except (av.FFmpegError, ValueError) as exc:
            raise InvalidVideoError(f"could not decode the video: {public_message(str(exc))}") from None


def _upright(gray: np.ndarray, rotation: int) -> np.ndarray:
    """Undo the display rotation a phone writes into the stream (its pixels are stored sideways)."""
    turns = round((rotation or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(gray, turns)) if turns else gray


class _Tracker:
    """Landmarks per frame: the detector every ``redetect`` frames, else a box from the last landmarks
    in the framing the detector gave them (the predictor expects detector-like boxes)."""

    def __init__(self, redetect: int) -> None:
        self.redetect = redetect
        self._count = 0
        self._box_from_points: np.ndarray | None = None  # (left, top, right, bottom) offsets, in face sizes
        self._points: np.ndarray | None = None

    def __call__(self, gray: np.ndarray) -> np.ndarray | None:
        detect = self._count % self.redetect == 0 or self._points is None
        self._count += 1
        box = None
        if detect:
            faces = detect_faces(gray, detect_side=max(gray.shape), max_upsample=1)
            if faces:
                box = faces[0]
            elif self._points is None:
                return None
        if box is None:
            assert self._points is not None and self._box_from_points is not None
            box = self._box(self._points)
        points = fit_landmarks(gray, box)
        if detect:
            self._box_from_points = self._offsets(points, box)
        self._points = points
        return points

    @staticmethod
    def _bounds(points: np.ndarray) -> tuple[np.ndarray, float]:
        low, high = points.min(axis=0), points.max(axis=0)
        return np.concatenate([low, high]), float(max(high - low))

    def _offsets(self, points: np.ndarray, box: FaceBox) -> np.ndarray:
        bounds, size = self._bounds(points)
        return (np.array([box.left, box.top, box.right, box.bottom]) - bounds) / max(size, 1.0)

    def _box(self, points: np.ndarray) -> FaceBox:
        assert self._box_from_points is not None
        bounds, size = self._bounds(points)
        left, top, right, bottom = bounds + self._box_from_points * size
        return FaceBox(float(left), float(top), float(right), float(bottom))


class _PoseSolver:
    def __init__(self) -> None:
        self._guess: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, points: np.ndarray, shape: tuple[int, int]) -> tuple[float, float, float]:
        height, width = shape
        focal = float(max(width, height))  # ~53 degrees across: a webcam or phone held at arm's length
        camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], np.float64)
        image = points[_LANDMARKS].astype(np.float64)
        if self._guess is None:
            ok, rvec, tvec = cv2.solvePnP(_OBJECT, image, camera, None, flags=cv2.SOLVEPNP_EPNP)
            ok, rvec, tvec = cv2.solvePnP(_OBJECT, image, camera, None, rvec, tvec, useExtrinsicGuess=True)
        else:
            ok, rvec, tvec = cv2.solvePnP(_OBJECT, image, camera, None, self._guess[0].copy(),
                                          self._guess[1].copy(), useExtrinsicGuess=True)
        if not ok:
            return math.nan, math.nan, math.nan
        self._guess = (rvec, tvec)
        rotation, _ = cv2.Rodrigues(rvec)
        pitch, yaw, roll = cv2.RQDecomp3x3(rotation)[0]
        # OpenCV's angles -> MotionTrack's: yaw + turns the face to image right, pitch + dips the chin,
        # roll + tilts clockwise on screen.
        return -float(yaw), float(pitch), float(roll)


def gaze_offset(gray: np.ndarray, points: np.ndarray) -> float:
    """Horizontal offset of the iris from the eye's middle, in eye widths, averaged over both eyes."""
    offsets = []
    for eye in (RIGHT_EYE, LEFT_EYE):
        corners = points[eye]
        low = np.maximum(np.floor(corners.min(axis=0)).astype(int), 0)
        high = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + 1, gray.shape[1::-1])
        if np.any(high - low < 2):
            continue
        patch = gray[low[1]:high[1], low[0]:high[0]]
        inside = np.zeros(patch.shape, np.uint8)
        cv2.fillPoly(inside, [np.round(corners - low).astype(np.int32)], 1)
        values = patch[inside > 0]
        if values.size < MIN_EYE_PIXELS:
            continue
        dark = (inside > 0) & (patch <= np.quantile(values, GAZE_DARK_SHARE))
        center = float(np.nonzero(dark)[1].mean()) + low[0]
        width = float(np.linalg.norm(corners[3] - corners[0]))
        offsets.append((center - (corners[0, 0] + corners[3, 0]) / 2) / max(width, 1e-6))
    return float(np.mean(offsets)) if offsets else math.nan


def measure_frames(
    data: bytes,
    *,
    analysis_fps: float = DEFAULT_ANALYSIS_FPS,
    work_side: int = DEFAULT_WORK_SIDE,
    redetect_s: float = DEFAULT_REDETECT_S,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
) -> FrameSeries:
    """Head angles and eye openness of every analysed frame of an encoded video."""
    tracker = _Tracker(max(1, round(redetect_s * analysis_fps)))
    solver = _PoseSolver()
    times, rows = [], []
    for elapsed, gray in _frames(data, analysis_fps=analysis_fps, work_side=work_side,
                                 max_seconds=max_seconds, max_frame_pixels=max_frame_pixels):
        points = tracker(gray)
        times.append(elapsed)
        if points is None:
            rows.append((math.nan,) * 5)
        else:
            rows.append((*solver(points, gray.shape[:2]), eye_openness(points), gaze_offset(gray, points)))
    if not rows:
        raise InvalidVideoError("the video has no frames")
    values = np.array(rows, np.float64)
    span = times[-1] - times[0] + 1.0 / analysis_fps
    fps = len(rows) / span  # what was analysed: the source may have fewer frames a second
    return FrameSeries(fps, *values.T)


# --- statistics ----------------------------------------------------------------------------------------


def _filled(values: np.ndarray) -> np.ndarray:
    """NaNs (frames without a face) bridged linearly."""
    good = np.isfinite(values)
    if good.all() or not good.any():
        return values if good.all() else np.zeros_like(values)
    index = np.arange(values.size)
    return np.interp(index, index[good], values[good])


def _smoothed(values: np.ndarray, fps: float) -> np.ndarray:
    width = max(1, round(SMOOTH_S * fps))
    if width <= 1:
        return values
    kernel = np.ones(width) / width
    padded = np.pad(values, (width // 2, width - 1 - width // 2), mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def _sway(
    series: FrameSeries, blinking: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]:
    """Per-axis detrended, smoothed angles (bridged over blinks); their std; dominant frequencies; the
    common band."""
    angles = np.stack([signal.detrend(_smoothed(_filled(np.where(blinking, np.nan, a)), series.fps))
                       for a in (series.yaw, series.pitch, series.roll)])
    std = angles.std(axis=1)
    n = angles.shape[1]
    window = np.hanning(n)
    spectrum = np.abs(np.fft.rfft(angles * window, n=n * SPECTRUM_PADDING, axis=1)) ** 2
    freqs = np.fft.rfftfreq(n * SPECTRUM_PADDING, 1.0 / series.fps)
    inside = (freqs >= SWAY_BAND_HZ[0]) & (freqs <= SWAY_BAND_HZ[1])
    power, freqs = spectrum[:, inside], freqs[inside]
    dominant = freqs[power.argmax(axis=1)]
    total = np.cumsum(power.sum(axis=0))
    total /= max(total[-1], 1e-12)
    low, high = (float(freqs[min(np.searchsorted(total, share), freqs.size - 1)])
                 for share in BAND_POWER_SHARES)
    return angles, std, dominant, (low, max(high, low))


def _blinks(eye_open: np.ndarray, fps: float) -> tuple[list[float], list[float], np.ndarray]:
    """Blink start-to-start intervals and durations past half depth, in seconds, and the frames the
    blinks take (closing lids move the eye-corner landmarks: the pose there is not the head's)."""
    ear = _filled(eye_open)
    window = max(3, round(BASELINE_S * fps) | 1)
    baseline = signal.medfilt(ear, window) if ear.size >= window else np.full_like(ear, np.median(ear))
    closing = ear < baseline * (1.0 - BLINK_DROP)
    runs: list[list[int]] = []
    gap = max(1, round(MIN_BLINK_GAP_S * fps))
    for index in np.flatnonzero(closing):
        if runs and index - runs[-1][1] <= gap:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    times, durations = [], []
    during = np.zeros(ear.size, bool)
    for start, end in runs:
        deepest = start + int(np.argmin(ear[start:end + 1]))
        if ear[deepest] > baseline[deepest] * (1.0 - BLINK_DEPTH):
            continue
        half = (baseline[deepest] + ear[deepest]) / 2
        lo, hi = max(0, start - gap), min(ear.size, end + gap + 1)
        durations.append(float((ear[lo:hi] < half).sum()) / fps)
        times.append(deepest / fps)
        during[lo:hi] = True
    return list(np.diff(times)), durations, during


def _nods(pitch: np.ndarray, fps: float) -> tuple[int, float | None]:
    peaks, props = signal.find_peaks(pitch, prominence=NOD_MIN_DEG, width=(None, NOD_MAX_WIDTH_S * fps),
                                     distance=max(1, round(NOD_MAX_WIDTH_S * fps)))
    if not len(peaks):
        return 0, None
    return len(peaks), float(np.median(props["prominences"]))


def _saccades(gaze: np.ndarray, blinking: np.ndarray, fps: float) -> tuple[int, float | None]:
    """Quick gaze jumps outside blinks, and the gaze's spread (eye widths)."""
    steady = np.where(blinking, np.nan, gaze)
    if np.isfinite(steady).sum() < 3:
        return 0, None
    smooth = signal.medfilt(_filled(steady), 3)  # a one-frame landmark slip is not a saccade
    jumps = np.abs(smooth[2:] - smooth[:-2]) >= SACCADE_MIN_SHIFT
    jumps &= np.isfinite(steady[2:]) & np.isfinite(steady[:-2])
    count, last = 0, -math.inf
    for index in np.flatnonzero(jumps):
        if (index - last) / fps >= SACCADE_MIN_GAP_S:
            count += 1
        last = index
    return count, float(np.nanstd(steady))


def motion_statistics(series: FrameSeries, *, min_seconds: float = DEFAULT_MIN_SECONDS) -> ReferenceMotion:
    """The statistics of measured frames; refuses too short a video or one without a face."""
    seconds = len(series.yaw) / series.fps
    if seconds < min_seconds:
        raise VideoTooShortError(f"the video is {seconds:.1f} s; at least {min_seconds:g} s is needed")
    if series.face_share < MIN_FACE_SHARE:
        raise NoFaceError(f"a face was found in {series.face_share:.0%} of the video's frames; it needs one "
                          f"in at least {MIN_FACE_SHARE:.0%} (a well-lit, roughly frontal face)")
    intervals, durations, blinking = _blinks(series.eye_open, series.fps)
    angles, std, dominant, band = _sway(series, blinking)
    nods, nod_deg = _nods(angles[1], series.fps)
    saccades, gaze_std = _saccades(series.gaze, blinking, series.fps)
    return ReferenceMotion(
        seconds=round(seconds, 3), frames=len(series.yaw), face_share=round(series.face_share, 3),
        head_std_deg=tuple(round(float(v), 3) for v in std),
        head_freq_hz=tuple(round(float(v), 4) for v in dominant),
        head_band_hz=(round(band[0], 4), round(band[1], 4)),
        blinks=len(durations), blink_intervals_s=tuple(round(float(v), 3) for v in intervals),
        blink_duration_s=round(float(np.median(durations)), 3) if durations else None,
        nods=nods, nod_deg=_rounded(nod_deg), gaze_std=_rounded(gaze_std), saccades=saccades,
    )


def extract_reference_motion(
    data: bytes,
    *,
    min_seconds: float = DEFAULT_MIN_SECONDS,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    **options: Any,
) -> ReferenceMotion:
    """Decode, measure and summarise a reference video. Raises ``InvalidVideoError`` (undecodable),
    ``VideoTooShortError`` / ``VideoTooLongError`` and ``NoFaceError``; nothing is written anywhere."""
    if not data:
        raise InvalidVideoError("the video is empty")
    series = measure_frames(data, max_seconds=max_seconds, **options)
    return motion_statistics(series, min_seconds=min_seconds)
