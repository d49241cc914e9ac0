"""The headless WebRTC client and its measures on real media over a real aiortc connection, no Ray.

A stand-in runtime in this process answers the client's offer and plays a rendered clip (the avatar's
own frames and audio, paced on the clock like aiortc's tracks), noting when it handed each frame to
its sender; on one clock, the client's measured arrivals can be checked against those send times. The
clip is played in sync and with its audio 200 ms late: the measured A/V lag must move by 200 ms.
"""

import asyncio
import fractions
import time

import numpy as np
import pytest
import soxr
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, VideoFrame

from engines.avatar.measure import FaceMeter
from engines.media.mp4 import read_audio, read_frames
from realtime_avatar.rtc import measure, protocol
from realtime_avatar.rtc.client import RealtimeCall, _PacketArrivals

RATE = 48000
FPS = 25
LEAD_S = 1.0  # idle frames and silence before the clip starts


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> dict:
    from realtime_avatar.pipeline import AvatarPipeline

    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    pipeline = AvatarPipeline()
    pipeline.render_mp4("Hello! I can listen, think and answer in three languages.", "en", path)
    pcm, sample_rate = read_audio(path)
    frames = read_frames(path)
    speech, speech_rate = pipeline.tts.synthesize("What do you do for a living?", "en")
    # The clip's own A/V lag (its frame times are its pts): what a perfect transport must deliver.
    env = measure.envelope(measure.AudioStream(pcm, sample_rate, np.array([0]), np.array([0.0])))
    mouth = FaceMeter().measure_video(frames).mouth_open
    own_lag, _ = measure.av_lag(env, np.arange(len(frames)) / FPS, mouth)
    return {"pcm": soxr.resample(pcm, sample_rate, RATE).astype(np.float32), "frames": frames,
            "speech": (speech, speech_rate), "own_lag": own_lag, "mouth": mouth}


class _Paced:
    """A shared start for both outgoing tracks, and when each frame's last RTP packet left (by pts)."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.wire: dict[int, dict[int, float]] = {}  # ssrc -> RTP timestamp -> sent at
        self.ssrc: dict[str, int] = {}

    async def wait(self, pts: int, rate: int) -> None:
        if self.start is None:
            self.start = time.perf_counter()
        delay = self.start + pts / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)

    def hook(self, pc: RTCPeerConnection) -> None:
        """Note each outgoing RTP packet as it goes to the socket (after aiortc's encoding, which a
        loaded machine may delay differently for audio and video)."""
        for sender in pc.getSenders():
            self.ssrc[sender.track.kind] = sender._ssrc
        transport = pc.getSenders()[0].transport
        original = transport._send_rtp

        async def send(data: bytes) -> None:
            await original(data)
            if len(data) >= 12 and not 192 <= data[1] <= 223:  # RTP, not RTCP
                stamps = self.wire.setdefault(int.from_bytes(data[8:12], "big"), {})
                stamps[int.from_bytes(data[4:8], "big")] = time.perf_counter()

        transport._send_rtp = send

    def sent(self, kind: str) -> dict[int, float]:
        """pts -> when it left: RTP timestamps count from the first frame's, as the pts do."""
        stamps = self.wire.get(self.ssrc[kind], {})
        if not stamps:
            return {}
        first = next(iter(stamps))
        return {(ts - first) % (1 << 32): at for ts, at in stamps.items()}


class ClipAudio(MediaStreamTrack):
    kind = "audio"

    def __init__(self, pcm: np.ndarray, delay_s: float, pace: _Paced) -> None:
        super().__init__()
        lead = np.zeros(int((LEAD_S + delay_s) * RATE), np.float32)
        self.pcm = np.concatenate([lead, pcm, np.zeros(RATE, np.float32)])
        self.pace, self.pts = pace, 0

    async def recv(self) -> AudioFrame:
        await self.pace.wait(self.pts, RATE)
        block = self.pcm[self.pts : self.pts + 960]
        block = np.pad(block, (0, 960 - len(block)))
        frame = AudioFrame.from_ndarray((block * 32767).astype(np.int16).reshape(1, -1), format="s16",
                                        layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, self.pts, fractions.Fraction(1, RATE)
        self.pts += 960
        return frame


class ClipVideo(MediaStreamTrack):
    kind = "video"

    def __init__(self, frames: np.ndarray, pace: _Paced) -> None:
        super().__init__()
        lead = int(LEAD_S * FPS)
        self.frames = np.concatenate([np.repeat(frames[:1], lead, 0), frames, np.repeat(frames[-1:], FPS, 0)])
        self.pace, self.index = pace, 0

    async def recv(self) -> VideoFrame:
        pts = self.index * 90000 // FPS
        await self.pace.wait(pts, 90000)
        frame = VideoFrame.from_ndarray(self.frames[min(self.index, len(self.frames) - 1)], format="rgb24")
        frame.pts, frame.time_base = pts, fractions.Fraction(1, 90000)
        self.index += 1
        return frame


class StandInRuntime:
    """Answers like the runtime's /v1/rtc/offer; records the microphone it hears and the messages."""

    def __init__(self, clip: dict, audio_delay_s: float) -> None:
        self.clip, self.audio_delay_s = clip, audio_delay_s
        self.pace = _Paced()
        self.pc: RTCPeerConnection | None = None
        self.messages: list[dict] = []
        self.mic: list[tuple[float | None, np.ndarray]] = []  # (packet arrival, mono float32 PCM)
        self.tasks: list[asyncio.Future] = []

    async def create_session(self, language: str, **fields) -> dict:
        return {"session_id": "stand-in", "language": language}

    async def rtc_config(self, session_id: str) -> dict:
        return {"ice_servers": []}

    async def offer(self, body: dict) -> dict:
        self.pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

        @pc.on("datachannel")
        def _channel(channel) -> None:
            channel.on("message", lambda message: self.messages.append(protocol.decode(message, 10000)))
            channel.send(protocol.encode(protocol.CALL_STARTED, call_id="c1", session_id=body["session_id"],
                                         language="en"))

        @pc.on("track")
        def _track(track) -> None:
            async def read() -> None:
                while True:
                    try:
                        frame = await track.recv()
                    except MediaStreamError:
                        return
                    data = frame.to_ndarray().reshape(-1, len(frame.layout.channels)).mean(axis=1) / 32768
                    # When its packet reached the stand-in (before aiortc's jitter buffer held it).
                    self.mic.append((arrivals.arrival(frame.pts), data.astype(np.float32)))

            self.tasks.append(asyncio.ensure_future(read()))

        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
        arrivals = _PacketArrivals(next(t.receiver for t in pc.getTransceivers() if t.kind == "audio"))
        pc.addTrack(ClipAudio(self.clip["pcm"], self.audio_delay_s, self.pace))
        pc.addTrack(ClipVideo(self.clip["frames"], self.pace))
        await pc.setLocalDescription(await pc.createAnswer())
        self.pace.hook(pc)
        return {"call_id": "c1", "session_id": body["session_id"], "sdp": pc.localDescription.sdp,
                "type": "answer", "language": "en"}

    async def hang_up(self, call_id: str) -> None:
        pass

    async def aclose(self) -> None:
        if self.pc is not None:
            await self.pc.close()


async def _call(clip: dict, delay_s: float) -> tuple[RealtimeCall, StandInRuntime, measure.SentUtterance]:
    runtime = StandInRuntime(clip, delay_s)
    async with RealtimeCall(signalling=runtime, language="en") as call:
        assert await call.wait_event(protocol.CALL_STARTED, timeout_s=10) is not None
        sent = await call.say(*clip["speech"], label="q", language="en", text="What do you do?")
        length = LEAD_S + delay_s + len(clip["pcm"]) / RATE + 0.5
        await asyncio.sleep(max(0.0, runtime.pace.start + length - time.perf_counter()))
    return call, runtime, sent


@pytest.fixture(scope="module", params=[0.0, 0.2], ids=["in-sync", "audio-200ms-late"])
def played(request, clip):
    return request.param, *asyncio.run(_call(clip, request.param))


def _analysed(call: RealtimeCall) -> tuple[measure.Envelope, float, np.ndarray, np.ndarray]:
    rec = call.recording
    env = measure.envelope(rec.audio.stream())
    threshold = measure.silence_threshold(measure.noise_floor(env.rms))
    mouth = FaceMeter().measure_video(rec.video.frames).mouth_open
    return env, threshold, rec.video.times(), mouth


def test_the_call_is_set_up_and_hung_up_like_the_page_does(played):
    _, call, runtime, _ = played
    rec = call.recording
    assert rec.session_id == "stand-in" and rec.call_id == "c1"
    assert [e.type for e in rec.events][:1] == [protocol.CALL_STARTED]
    assert {"type": protocol.HANGUP} in runtime.messages
    assert rec.audio.sample_rate == RATE
    assert rec.video.frames[0].shape == (256, 256, 3)
    # Packet arrivals were seen for (nearly) every frame, and never after the decoder handed it over.
    for track in (rec.audio, rec.video):
        arrived = np.array([np.nan if a is None else a for a in track.arrived_at])
        assert np.isfinite(arrived).mean() > 0.95
        assert np.nanmax(arrived - np.array(track.received_at)) <= 1e-6


def test_microphone_times_are_when_the_speech_left(played):
    """The stand-in decodes the microphone: the speech it hears (found the same way the client found
    it in the clip) starts and ends in the frames whose send times the client reported, and those
    frames reached it at once (loopback: a few ms, whatever stalls the shared CPU adds now and then)."""
    _, call, runtime, sent = played
    sizes = np.array([len(pcm) for _, pcm in runtime.mic])
    heard = measure.speech_span(np.concatenate([pcm for _, pcm in runtime.mic]), RATE)
    heard_frames = np.searchsorted(np.cumsum(sizes), heard, side="right")
    said_frames = [call.mic.sent_at.index(sent.speech_start_at), call.mic.sent_at.index(sent.speech_end_at)]
    assert np.abs(heard_frames - said_frames).max() <= 1, (heard_frames, said_frames)
    arrived = np.array([at for at, _ in runtime.mic], float)
    n = min(len(arrived), len(call.mic.sent_at))
    assert np.nanmedian(arrived[:n] - np.array(call.mic.sent_at[:n])) < 0.03
    assert 0.5 < sent.speech_end_at - sent.speech_start_at < sent.ended_at - sent.started_at


def _as_sent(runtime: StandInRuntime) -> tuple[measure.Envelope, np.ndarray, np.ndarray]:
    """The stand-in's own media on the times each frame left it: the ground truth the received side is
    compared with (on a loaded machine the sender's pacing itself can slip)."""
    clip, sent = runtime.clip, {kind: runtime.pace.sent(kind) for kind in ("audio", "video")}
    audio_pts = np.array(sorted(sent["audio"]))
    lead = np.zeros(int((LEAD_S + runtime.audio_delay_s) * RATE), np.float32)
    pcm = np.concatenate([lead, clip["pcm"], np.zeros(RATE, np.float32)])[: audio_pts[-1] + 960]
    stream = measure.AudioStream(pcm, RATE, audio_pts, np.array([sent["audio"][p] for p in audio_pts]))
    video_pts = np.array(sorted(sent["video"]))
    mouth = np.concatenate([np.repeat(clip["mouth"][:1], int(LEAD_S * FPS)), clip["mouth"],
                            np.repeat(clip["mouth"][-1:], FPS)])
    index = np.minimum(video_pts * FPS // 90000, len(mouth) - 1)
    return measure.envelope(stream), np.array([sent["video"][p] for p in video_pts]), mouth[index]


def test_onsets_are_measured_where_the_media_arrived(played):
    """The first audio above silence and the first speaking frame, found the same way on what the
    stand-in sent (its send times) and on what arrived: arrival follows sending within loopback time."""
    _, call, runtime, _ = played
    env, threshold, frame_times, mouth = _analysed(call)
    env_sent, sent_times, sent_mouth = _as_sent(runtime)
    onset = measure.first_above(env.times, env.rms, threshold, 0.0, hold=5, share=0.6)
    onset_sent = measure.first_above(env_sent.times, env_sent.rms, threshold, 0.0, hold=5, share=0.6)
    assert 0.0 <= onset - onset_sent < 0.05, onset - onset_sent
    idle = measure.idle_frames(frame_times, env, threshold)
    mouth_threshold = measure.mouth_threshold(mouth[idle])
    frame_at = measure.first_above(frame_times, mouth, mouth_threshold, 0.0, hold=2)
    frame_sent = measure.first_above(sent_times, sent_mouth, mouth_threshold, 0.0, hold=2)
    # VP8 may soften the first opening frame below threshold: one frame late at most.
    assert 0.0 <= frame_at - frame_sent < 0.05 + 0.04, frame_at - frame_sent


def _received_on_send_times(call: RealtimeCall, runtime: StandInRuntime,
                            mouth: np.ndarray) -> tuple[measure.Envelope, np.ndarray, np.ndarray]:
    """The decoded media, each frame placed at the time it left the stand-in (matched by pts): the
    same sound and pixels as on arrival, so only the timeline differs (not Opus or VP8)."""
    audio, video = call.recording.audio, call.recording.video
    left = {kind: runtime.pace.sent(kind) for kind in ("audio", "video")}
    kept = [i for i, p in enumerate(audio.pts) if p in left["audio"]]
    chunks = [audio.chunks[i] for i in kept]
    starts = np.concatenate([[0], np.cumsum([len(c) for c in chunks])[:-1]])
    stream = measure.AudioStream(np.concatenate(chunks), audio.sample_rate, starts,
                                 np.array([left["audio"][audio.pts[i]] for i in kept]))
    shown = [i for i, p in enumerate(video.pts) if p in left["video"]]
    return (measure.envelope(stream), np.array([left["video"][video.pts[i]] for i in shown]),
            np.asarray(mouth)[shown])


def test_av_lag_on_received_media_moves_with_the_audio_delay(played, clip):
    """The lag measured on arrival equals the lag of the same media on the times it was sent; and the
    negative control: the same clip with its audio 200 ms late measures 200 ms lower (video earlier)."""
    delay, call, runtime, _ = played
    env, _, frame_times, mouth = _analysed(call)
    lag, corr = measure.av_lag(env, frame_times, mouth)
    sent_lag, _ = measure.av_lag(*_received_on_send_times(call, runtime, mouth))
    assert corr > 0.5
    assert lag == pytest.approx(sent_lag, abs=0.02), (lag, sent_lag)
    assert lag == pytest.approx(clip["own_lag"] - delay, abs=0.06), (lag, clip["own_lag"])


def test_delivered_frame_rate(played):
    _, call, runtime, _ = played
    video = call.recording.video
    received = measure.frame_pacing(video.times())
    # The same frames as sent (received pts count from the first frame, as the stand-in's do).
    left = runtime.pace.sent("video")
    sent = measure.frame_pacing(np.array([left[p] for p in video.pts]))
    assert received["fps"] == pytest.approx(sent["fps"], abs=1.0)
    assert received["interval_p50_ms"] == pytest.approx(sent["interval_p50_ms"], abs=5)
    assert received["frames"] >= 0.95 * (LEAD_S + len(runtime.clip["pcm"]) / RATE) * FPS


def test_a_silent_utterance_is_refused():
    async def go() -> None:
        call = RealtimeCall(signalling=StandInRuntime({}, 0.0))
        with pytest.raises(ValueError, match="silent"):
            await call.say(np.zeros(RATE, np.float32), RATE)

    asyncio.run(go())


def test_clip_fixture_lag_is_small(clip):
    """The rendered clip itself is in sync (its mouth follows its own audio within a frame)."""
    assert abs(clip["own_lag"]) < 0.04


