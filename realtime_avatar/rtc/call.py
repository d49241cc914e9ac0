"""One voice call: microphone -> listener -> ASR -> the conversation's reply -> speech drawn on the idle
loop -> the call's media clock; events to the page on the data channel.

The stages are reached through :class:`CallStages` (the realtime deployment passes Serve handles, tests
can pass anything), so the turn-taking logic knows nothing of Ray or of the models. A user who speaks while
the avatar talks (or thinks) interrupts it: the queued media is dropped at once and every stream behind
the reply is cancelled; a reply cut before it made a sound is merged into the next user turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import io
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import soundfile as sf

from engines.tts.text import AUTO, LANGUAGES
from realtime_avatar import logs
from realtime_avatar.config import RealtimeSettings
from realtime_avatar.logs import event
from realtime_avatar.rtc import protocol as p
from realtime_avatar.rtc.listener import SAMPLE_RATE, Listener, ListenEvent, VoiceActivity
from realtime_avatar.rtc.media import AvatarOutput, Utterance

log = logging.getLogger("realtime_avatar.rtc")
LEAD_FRAMES_AT_START = 15  # first guess of how long a sentence takes to its first part (refined per call)
# Bounds on what a call keeps between turns. Microphone frames waiting to be listened to (20 ms each):
# past this backlog (a starved event loop) the oldest are dropped, as a jitter buffer drops late audio.
MAX_MIC_BACKLOG = 50
# A user turn cut before its reply made a sound is merged into the next one: at most this many characters
# of it (repeated cuts must not grow it past what the conversation takes as one message).
MAX_UNANSWERED_CHARS = 300


class CallStages(Protocol):
    async def transcribe(self, wav: bytes, language: str | None) -> dict[str, Any]: ...

    def talk(self, text: str, language: str) -> AsyncIterator[dict[str, Any]]: ...

    def speak(self, text: str, language: str, start_frame: int) -> AsyncIterator[Any]: ...


@dataclass
class TurnTimes:
    """Wall-clock marks of one turn (time.time()), reported relative to the end of the user's speech."""

    turn: int
    speech_end: float
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, time.time())

    def ms(self) -> dict[str, float]:
        return {k: round((v - self.speech_end) * 1000, 1) for k, v in self.marks.items()}


class Call:
    def __init__(
        self, call_id: str, session_id: str, language: str, settings: RealtimeSettings, stages: CallStages,
        vad: VoiceActivity, idle_frames: np.ndarray, fps: int, send: Callable[[str], None],
    ) -> None:
        self.call_id, self.session_id, self.language = call_id, session_id, language
        self.settings, self.stages, self.send_text = settings, stages, send
        self.listener = Listener(vad, settings)
        self.output = AvatarOutput(idle_frames, fps, idle_stride=settings.idle_frame_stride,
                                   on_started=self._utterance_started,
                                   on_finished=self._utterance_finished)
        self.fps = fps
        self.started = time.monotonic()
        self.last_activity = time.monotonic()
        self.turns = 0
        self.state = "listening"
        self.ended: str | None = None
        self._reply: asyncio.Task[None] | None = None
        self._reply_turn = 0
        self._reply_done = True
        self._heard_audio = False  # has the reply in flight made a sound yet
        self._unanswered = ""  # a user turn whose reply was cut before it said anything
        self._partial: asyncio.Task[Any] | None = None
        # A reply started at a pause: (utterance samples it answers, its task, its times).
        self._speculation: tuple[int, asyncio.Task[None] | None, TurnTimes] | None = None
        self._holding = False
        self._held: list[str] = []
        self._dropped: set[asyncio.Task[Any]] = set()
        self._unheard = np.zeros(0, np.float32)  # a turn cut while it was being transcribed
        self._times: TurnTimes | None = None
        self._lead_frames = LEAD_FRAMES_AT_START
        self._tasks: set[asyncio.Task[Any]] = set()
        self._resampler: Any = None
        self.mic_frames = 0  # microphone frames received
        self.mic_dropped = 0  # ... and dropped unheard because they queued up past MAX_MIC_BACKLOG

    # --- events out ----------------------------------------------------------------------------------

    def emit(self, kind: str, **fields: Any) -> None:
        message = p.encode(kind, **fields)
        if self._holding:  # a reply started before the turn ended: the page hears of it only if it stands
            self._held.append(message)
        else:
            self._send(message)

    def _send(self, message: str) -> None:
        with contextlib.suppress(Exception):  # a closed channel: the call is ending anyway
            self.send_text(message)

    def _set_state(self, state: str, **fields: Any) -> None:
        self.state = state
        self.emit(state, **fields)

    # --- microphone in -------------------------------------------------------------------------------

    async def consume(self, track: Any) -> None:
        """Read the microphone track until it ends; every 20 ms of audio goes through the listener.

        A microphone sends a frame every 20 ms, silent or not: once it has sent one, ``peer_timeout_s``
        without another means the peer is gone (closed the tab, lost the network) even though nothing
        said so, and the call ends ("peer_gone") long before ICE consent would expire (~30 s).
        """
        import av

        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self._set_state(p.LISTENING)
        while self.ended is None:
            try:
                if self.mic_frames:
                    frame = await asyncio.wait_for(track.recv(), self.settings.peer_timeout_s)
                else:  # before the first frame, ICE is still connecting: its own failure ends the call
                    frame = await track.recv()
            except TimeoutError:
                self.ended = self.ended or "peer_gone"
                event(log, "peer_silent", level=logging.WARNING, call_id=self.call_id,
                      seconds=self.settings.peer_timeout_s)
                return
            except Exception:  # MediaStreamError: the peer stopped sending (hung up, vanished)
                return
            self.mic_frames += 1
            self.mic_dropped += _drop_backlog(track, MAX_MIC_BACKLOG)
            for out in self._resampler.resample(frame):
                self.feed(out.to_ndarray().reshape(-1), time.time())

    def feed(self, pcm16k: np.ndarray, now: float) -> None:
        for item in self.listener.push(pcm16k):
            self._on_listen(item, now - (self.listener.now_s - item.at_s))

    def _on_listen(self, item: ListenEvent, at_wall: float) -> None:
        if item.kind == "speech_started":
            self.last_activity = time.monotonic()
            if self._replying():
                self.interrupt()
            self._set_state(p.USER_SPEAKING)
        elif item.kind == "partial":
            if self._partial is None or self._partial.done():
                self._partial = self._spawn(self._caption(item.audio))
        elif item.kind == "paused":
            self._speculate(item.audio, at_wall)
        elif item.kind == "resumed":
            self._drop_speculation()
        elif item.kind == "turn_ended":
            self.last_activity = time.monotonic()
            if self._speculation is not None and self._speculation[0] == len(item.audio):
                self._confirm_speculation()
                return
            self._drop_speculation()
            self.turns += 1
            times = TurnTimes(self.turns, at_wall)
            times.mark("vad_end")
            self._start_reply(self._answer_speech(item.audio, times), times.turn)

    # --- answering before the hang-over ends -----------------------------------------------------------
    # When the user pauses (early_asr_s), the whole reply starts on what was said so far: ASR, LLM, TTS
    # and rendering run while the hang-over is still timing out. Its events and media are held. If the
    # turn ends with nothing added, they are released at once; if the user goes on, it is dropped
    # without a trace (the conversation records a turn only when a reply completes).

    def _speculate(self, audio: np.ndarray, speech_end: float) -> None:
        self._drop_speculation()
        if self._partial is not None and not self._partial.done():
            self._partial.cancel()  # the final transcription needs the ASR replica more than a caption
        times = TurnTimes(self.turns + 1, speech_end)
        self._holding, self._held = True, []
        self.output.hold = True
        self._start_reply(self._answer_speech(audio, times), times.turn)
        self._speculation = (len(audio), self._reply, times)

    def _confirm_speculation(self) -> None:
        assert self._speculation is not None
        _, _, times = self._speculation
        self._speculation = None
        self.turns += 1
        times.mark("vad_end")
        held, self._held, self._holding = self._held, [], False
        self.output.hold = False
        for message in held:
            self._send(message)

    def _drop_speculation(self) -> None:
        if self._speculation is None:
            return
        _, task, _ = self._speculation
        self._speculation = None
        self._holding, self._held = False, []
        if task is not None and not task.done():
            self._dropped.add(task)
            task.add_done_callback(self._dropped.discard)
            task.cancel()
        self.output.clear()
        self.output.hold = False
        if self.state != p.USER_SPEAKING:
            self.state = p.USER_SPEAKING

    # --- typed input and control from the page --------------------------------------------------------

    def on_message(self, message: str | bytes) -> None:
        data = p.decode(message, self.settings.max_event_chars)
        if data is None:
            return
        kind = data["type"]
        if kind == p.STOP:
            self.interrupt()
            self._set_state(p.LISTENING)
        elif kind == p.HANGUP:
            self.ended = self.ended or "hangup"
        elif kind == p.TEXT and isinstance(data.get("text"), str) and data["text"].strip():
            self.last_activity = time.monotonic()
            if self._replying():
                self.interrupt()
            self.turns += 1
            times = TurnTimes(self.turns, time.time())
            language = data.get("language") if isinstance(data.get("language"), str) else self.language
            self._start_reply(self._answer(data["text"], language, times), times.turn)

    # --- answering -----------------------------------------------------------------------------------

    def _replying(self) -> bool:
        return (self._reply is not None and not self._reply.done()) or self.output.speaking

    def interrupt(self) -> None:
        """Stop the avatar now: its queued media first (what the user hears and sees), then the work."""
        if not self._replying():
            return
        seen = self.state in (p.THINKING, p.SPEAKING) or self.output.speaking  # the page knows of a reply
        self.output.clear()
        self.listener.avatar_speaking = False
        if self._reply is not None and not self._reply.done():
            self._reply.cancel()
        if seen:
            self.emit(p.INTERRUPTED, turn=self._reply_turn)
        event(log, "barge_in", call_id=self.call_id, turn=self._reply_turn, heard=self._heard_audio)

    def _start_reply(self, work: Any, turn: int) -> None:
        if self._reply is not None and not self._reply.done():
            self._reply.cancel()
        self._reply_turn, self._reply_done, self._heard_audio = turn, False, False
        self._reply = self._spawn(work)

    async def _answer_speech(self, audio: np.ndarray, times: TurnTimes) -> None:
        if len(self._unheard):  # the user spoke again while the last turn was still being transcribed
            gap = np.zeros(int(0.2 * SAMPLE_RATE), np.float32)
            audio, self._unheard = np.concatenate([self._unheard, gap, audio]), np.zeros(0, np.float32)
        try:
            result = await self._transcribe(audio)
        except asyncio.CancelledError:
            if asyncio.current_task() not in self._dropped:
                # Not heard yet, not lost: it leads the next turn's audio (its last max_utterance_s only,
                # however often the user talks over the transcription).
                self._unheard = audio[-int(self.settings.max_utterance_s * SAMPLE_RATE):]
            raise
        except Exception as exc:  # ASR down or overloaded: say so, and keep listening
            self.emit(p.ERROR, error={"code": getattr(exc, "code", "asr_failed"),
                                      "message": "the avatar did not catch that; please say it again"})
            event(log, "asr_failed", level=logging.WARNING, call_id=self.call_id, error=type(exc).__name__)
            self._set_state(p.LISTENING)
            return
        times.mark("asr_final")
        text = str(result.get("text", "")).strip()
        if not text:  # noise the VAD let through, or words whisper could not make out
            self._set_state(p.LISTENING)
            return
        language = self.language if self.language != "auto" else _spoken(result.get("language"))
        self.emit(p.TRANSCRIPT, text=text, language=language, final=True, turn=times.turn)
        await self._answer(text, language, times)

    async def _answer(self, text: str, language: str, times: TurnTimes) -> None:
        if self._unanswered:
            text, self._unanswered = f"{self._unanswered} {text}", ""
        self._times = times
        self._set_state(p.THINKING, turn=times.turn)
        sentences: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()
        speaker = asyncio.create_task(self._speak(sentences, times))
        events = self.stages.talk(text, language)
        reply, cancelled = "", False
        try:
            async for item in events:
                kind = item.get("type")
                if kind == "text":
                    times.mark("llm_first_token")
                    self.emit(p.REPLY_TEXT, delta=item["delta"], turn=times.turn)
                elif kind == "sentence":
                    times.mark("first_sentence")
                    sentences.put_nowait((item["text"], item.get("language") or language))
                elif kind == "done":
                    reply = str(item.get("text", ""))
                    self.emit(p.REPLY_DONE, turn=times.turn, text=reply, cut=bool(item.get("cut")))
                elif kind == "error":
                    self.emit(p.ERROR, error=item.get("error", {}))
            sentences.put_nowait(None)
            await speaker
        except asyncio.CancelledError:
            cancelled = True
            dropped = asyncio.current_task() in self._dropped  # a speculation the user talked over
            if not self._heard_audio and not dropped:
                self._unanswered = _tail(text, MAX_UNANSWERED_CHARS)  # cut before a sound: the next
                # turn answers both
            raise
        except Exception as exc:
            code = getattr(exc, "code", "reply_failed")
            self.emit(p.ERROR, error={"code": code, "message": "the avatar could not answer; try again"})
            event(log, "reply_failed", level=logging.WARNING, call_id=self.call_id, error=type(exc).__name__)
        finally:
            speaker.cancel()
            with contextlib.suppress(BaseException):
                await speaker
            with contextlib.suppress(Exception):
                await events.aclose()  # type: ignore[attr-defined]
            self._reply_done = True
            if not cancelled and not self.output.speaking and self.ended is None:
                self._back_to_listening()

    async def _speak(self, sentences: asyncio.Queue[tuple[str, str] | None], times: TurnTimes) -> None:
        """Render the reply's sentences one after another onto the output queue."""
        while (item := await sentences.get()) is not None:
            text, language = item
            phase = self.output.phase_after_queue()
            if phase is None:
                phase = self.output.phase_now(self._lead_frames)
            utterance = Utterance(times.turn, text, phase)
            self.output.enqueue(utterance)
            asked = time.time()
            parts = self.stages.speak(text, language, phase)
            try:
                async for part in parts:
                    if not utterance.frames:
                        times.mark("first_part")
                        self._learn_lead(time.time() - asked)
                    utterance.add(part.pcm, part.sample_rate, part.frames)
            finally:
                utterance.end()
                with contextlib.suppress(Exception):
                    await parts.aclose()  # type: ignore[attr-defined]

    def _learn_lead(self, seconds: float) -> None:
        frames = seconds * self.fps
        self._lead_frames = round(0.7 * self._lead_frames + 0.3 * frames)

    def _utterance_started(self, utterance: Utterance) -> None:
        if utterance.turn != self._reply_turn:
            return
        self._heard_audio = True
        self.listener.avatar_speaking = True
        if self.state != p.SPEAKING:
            self._set_state(p.SPEAKING, turn=utterance.turn, text=utterance.text)

    def _utterance_finished(self, utterance: Utterance) -> None:
        times = self._times
        if times is not None and times.turn == utterance.turn:
            if utterance.first_audio_at:
                times.marks.setdefault("first_audio_sent", utterance.first_audio_at)
            if utterance.first_frame_at:
                times.marks.setdefault("first_frame_sent", utterance.first_frame_at)
        if self.output.speaking:
            return
        self.listener.avatar_speaking = False
        if self._reply_done:
            self._back_to_listening()

    def _back_to_listening(self) -> None:
        times, self._times = self._times, None
        if times is not None:
            timings = times.ms()
            self.emit(p.TURN_TIMINGS, turn=times.turn, timings_ms=timings)
            event(log, "turn_timings", call_id=self.call_id, session_id=self.session_id, turn=times.turn,
                  **{k: round(v) for k, v in timings.items()})
        self.emit(p.IDLE)
        self._set_state(p.LISTENING)

    # --- ASR -----------------------------------------------------------------------------------------

    async def _transcribe(self, audio: np.ndarray) -> dict[str, Any]:
        language = None if self.language == "auto" else self.language
        return await self.stages.transcribe(_wav(audio), language)

    async def _caption(self, audio: np.ndarray) -> None:
        try:
            result = await self._transcribe(audio)
        except Exception:  # a caption is a courtesy: the final transcript still comes
            return
        text = str(result.get("text", "")).strip()
        if text and self.listener.in_turn:
            self.emit(p.TRANSCRIPT, text=text, language=result.get("language"), final=False,
                      turn=self.turns + 1)

    # --- lifetime ------------------------------------------------------------------------------------

    def _spawn(self, work: Any) -> asyncio.Task[Any]:
        token = logs.request_id.set(self.call_id)
        try:
            task = asyncio.create_task(work)
        finally:
            logs.request_id.reset(token)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            event(log, "call_task_failed", level=logging.WARNING, call_id=self.call_id,
                  error=type(exc).__name__)

    def expired(self, now: float) -> str | None:
        """Why the call should end now (time limit, nobody spoke for too long), or None."""
        if self.ended:
            return self.ended
        if now - self.started > self.settings.max_call_minutes * 60:
            return "time_limit"
        if not self._replying() and not self.listener.in_turn and \
                now - self.last_activity > self.settings.idle_timeout_s:
            return "idle"
        return None

    async def close(self, reason: str) -> None:
        """Stop everything the call runs; the peer connection is closed by its owner."""
        if self.ended is None or self.ended != reason:
            self.ended = reason
        self.emit(p.CALL_ENDED, reason=reason)
        self.output.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    @property
    def in_flight(self) -> int:
        return len(self._tasks)


async def drain(track: Any) -> None:
    """Read a received track nobody uses until it ends, dropping its frames (else they pile up)."""
    with contextlib.suppress(Exception):
        while True:
            await track.recv()


def trim_heap() -> None:
    """Collect the cycles an ended call leaves (its peer connection's handlers and the call refer to each
    other, so only the cycle collector frees its VAD session and buffers), then give the heap's free
    pages back to the OS (glibc ``malloc_trim``; skipped elsewhere). A call frees tens of MB of frames
    and audio in pieces; without this glibc keeps them mapped, and RSS would read as a leak."""
    global _libc
    gc.collect()
    if _libc is None:
        try:
            _libc = ctypes.CDLL("libc.so.6")
        except OSError:
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


_libc: Any = None


def _drop_backlog(track: Any, keep: int) -> int:
    """Drop the oldest frames an aiortc remote track has queued beyond ``keep`` (its queue is unbounded:
    a consumer that fell behind would otherwise fall further behind, and hold the memory); how many."""
    queue = getattr(track, "_queue", None)
    dropped = 0
    if isinstance(queue, asyncio.Queue):
        while queue.qsize() > keep:
            item = queue.get_nowait()
            if item is None:  # the end of the track: keep it for the next recv()
                queue.put_nowait(None)
                break
            dropped += 1
    return dropped


def _tail(text: str, limit: int) -> str:
    """The last ``limit`` characters of ``text``, from a word boundary when there is one."""
    if len(text) <= limit:
        return text
    cut = text[-limit:]
    space = cut.find(" ")
    return cut[space + 1:] if 0 <= space < limit // 2 else cut


def _spoken(language: Any) -> str:
    """Whisper's language when the avatar speaks it; else auto (the conversation reads the text itself:
    whisper takes short Spanish for Italian or Portuguese now and then)."""
    return language if language in LANGUAGES else AUTO


def _wav(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
