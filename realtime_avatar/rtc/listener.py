"""Listening: 16 kHz microphone audio -> VAD windows -> the events of a spoken turn.

Pure logic on the audio's own clock (samples received), so it is tested offline on recorded speech; the
call maps audio time to wall time. Hysteresis on the speech probability, a minimum speech length to start
a turn (longer while the avatar speaks: a barge-in must be meant), an early pause that lets the final
transcription start before the hang-over ends, and the hang-over that ends the turn.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from realtime_avatar.config import RealtimeSettings

SAMPLE_RATE = 16_000
# Outside a turn, a window this quiet (RMS, dBFS) is not speech and the VAD is not asked: a microphone
# that sends silence (a browser's noise suppression, a muted input) costs no model run. Speech is some
# 30 dB louder; the windows still go into the pre-roll, and the model gets every window from the first
# one above this level on. It skips only after QUIET_WINDOWS quiet windows in a row have gone through
# it (256 ms), so its recurrent state is already that of a quiet input: speech after a long silence is
# detected within a window of when the model would have, had it heard all of the silence.
QUIET_DBFS = -60.0
QUIET_RMS = 10 ** (QUIET_DBFS / 20)
QUIET_WINDOWS = 8


class VoiceActivity(Protocol):
    window: int

    def probabilities(self, pcm: np.ndarray) -> list[float]: ...

    def reset(self) -> None: ...


@dataclass
class ListenEvent:
    """``kind``: speech_started | partial | paused | resumed | turn_ended.

    ``audio``: the utterance so far (16 kHz float32) for partial / paused / turn_ended; ``at_s``: where on
    the audio clock it happened (for paused and turn_ended: where the speech ended).
    """

    kind: str
    at_s: float
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


class Listener:
    """Feed it microphone audio (``push``); it answers with the turn's events as they happen."""

    def __init__(self, vad: VoiceActivity, settings: RealtimeSettings) -> None:
        self.vad, self.settings = vad, settings
        self.window_s = vad.window / SAMPLE_RATE
        self.avatar_speaking = False  # set by the call: a barge-in needs barge_in_s of speech
        self._clock = 0  # windows seen
        self._pending = np.zeros(0, np.float32)
        pre_roll = max(1, round(settings.pre_roll_s / self.window_s))
        self._pre_roll: deque[np.ndarray] = deque(maxlen=pre_roll)
        self._utterance: list[np.ndarray] = []
        self._in_turn = False
        self._speech_run = 0  # consecutive speech windows before a turn starts
        self._silence_run = 0  # consecutive silent windows inside a turn
        self._is_speech = False
        self._paused = False
        self._speech_end_s = 0.0
        self._last_partial_s = 0.0
        self._quiet_run = 0  # quiet windows in a row outside a turn
        self.windows_skipped = 0  # windows the VAD was not asked about (quiet, outside a turn)

    @property
    def in_turn(self) -> bool:
        return self._in_turn

    @property
    def now_s(self) -> float:
        return self._clock * self.window_s

    def push(self, pcm: np.ndarray) -> list[ListenEvent]:
        samples = np.concatenate([self._pending, np.asarray(pcm, np.float32).reshape(-1)])
        window = self.vad.window
        whole = len(samples) // window * window
        self._pending = samples[whole:]
        events: list[ListenEvent] = []
        for start in range(0, whole, window):
            chunk = samples[start:start + window]
            events.extend(self._step(chunk, self._probability(chunk)))
        return events

    def _probability(self, window: np.ndarray) -> float:
        if self._in_turn or float(np.sqrt(np.mean(np.square(window)))) >= QUIET_RMS:
            self._quiet_run = 0
        else:
            self._quiet_run += 1
            if self._quiet_run > QUIET_WINDOWS:
                self.windows_skipped += 1
                return 0.0
        return float(self.vad.probabilities(window)[0])

    def reset(self) -> None:
        """Forget the turn in progress (the call ended it another way)."""
        self._utterance.clear()
        self._in_turn = self._paused = self._is_speech = False
        self._speech_run = self._silence_run = 0

    def _step(self, window: np.ndarray, probability: float) -> list[ListenEvent]:
        s = self.settings
        self._clock += 1
        threshold = s.silence_threshold if self._is_speech else s.speech_threshold
        self._is_speech = probability >= threshold
        if not self._in_turn:
            self._pre_roll.append(window)
            self._speech_run = self._speech_run + 1 if self._is_speech else 0
            needed = s.barge_in_s if self.avatar_speaking else s.min_speech_s
            if self._speech_run * self.window_s < max(needed, self.window_s):
                return []
            self._in_turn, self._paused, self._silence_run = True, False, 0
            self._utterance = list(self._pre_roll)
            self._pre_roll.clear()
            self._last_partial_s = self.now_s
            return [ListenEvent("speech_started", self.now_s)]
        self._utterance.append(window)
        if self._is_speech:
            events = []
            if self._paused:
                events.append(ListenEvent("resumed", self.now_s))
            self._paused, self._silence_run = False, 0
            self._speech_end_s = self.now_s
            if self.now_s - self._last_partial_s >= s.partial_asr_s:
                self._last_partial_s = self.now_s
                events.append(ListenEvent("partial", self.now_s, self.audio()))
            if len(self._utterance) * self.window_s >= s.max_utterance_s:
                events.append(self._end())
            return events
        self._silence_run += 1
        silence_s = self._silence_run * self.window_s
        if silence_s >= s.end_of_turn_s:
            return [self._end()]
        if not self._paused and silence_s >= s.early_asr_s:
            self._paused = True
            return [ListenEvent("paused", self._speech_end_s, self.audio())]
        return []

    def audio(self) -> np.ndarray:
        """The utterance so far, trailing silence of the current pause dropped."""
        keep = len(self._utterance) - self._silence_run
        return np.concatenate(self._utterance[:keep]) if keep > 0 else np.zeros(0, np.float32)

    def _end(self) -> ListenEvent:
        event = ListenEvent("turn_ended", self._speech_end_s, self.audio())
        self.reset()
        return event
