"""A listening call sends what was encoded once (``realtime_avatar.rtc.encoded``): a constant Opus packet
for silence, the idle loop's cached VP8 cycle; speech is still encoded live, and the VAD is not run on
a silent microphone. Offline: the tracks are read directly, without a peer connection."""

from __future__ import annotations

import asyncio
import fractions
import itertools
import time

import av
import numpy as np
import pytest
import soundfile as sf
import soxr

from engines.vad.silero import SileroVAD
from realtime_avatar.config import RealtimeSettings
from realtime_avatar.rtc import encoded, listener
from realtime_avatar.rtc.listener import SAMPLE_RATE, Listener
from realtime_avatar.rtc.media import AUDIO_PACKET, AvatarOutput, MediaClock, Utterance, make_tracks
from tests.test_rtc_units import SPEECH


def _loop(frames: int = 20, size: int = 64) -> np.ndarray:
    """A smooth moving picture (what VP8 codes well), ``frames`` long."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    out = []
    for k in range(frames):
        phase = 2 * np.pi * k / frames
        base = 128 + 60 * np.sin(x / 9 + phase) * np.cos(y / 13)
        out.append(np.stack([base, base * 0.8 + 20, 255 - base], axis=-1).clip(0, 255).astype(np.uint8))
    return np.stack(out)


def _decode(payloads: list[bytes]) -> list[np.ndarray]:
    decoder = av.CodecContext.create("libvpx", "r")
    frames = []
    for data in payloads:
        frames += [f.to_ndarray(format="rgb24") for f in decoder.decode(av.Packet(data))]
    return frames


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 10 * np.log10(255 ** 2 / max(mse, 1e-6))


def test_an_idle_cycle_is_a_closed_group_a_decoder_can_loop_over() -> None:
    loop = _loop()
    cycle = encoded.encode_cycle(loop, 2, 1, 25)
    assert len(cycle) == 10 and cycle[0][0] & 1 == 0  # VP8: bit 0 of the first byte clear = keyframe
    assert all(c[0] & 1 for c in cycle[1:])  # the rest refer to the frame before
    decoded = _decode(cycle * 3)  # round the loop three times in one decoder, as a call does
    assert len(decoded) == 30
    shown = [loop[1 + 2 * (k % 10)] for k in range(30)]
    assert min(_psnr(a, b) for a, b in zip(decoded, shown, strict=True)) > 30


def test_silence_is_one_constant_packet_and_decodes_to_silence() -> None:
    silence = encoded.opus_silence(AUDIO_PACKET)
    assert len(silence) <= 4
    decoder = av.CodecContext.create("libopus", "r")
    decoder.format, decoder.layout, decoder.sample_rate = "s16", "stereo", 48000
    frames = decoder.decode(av.Packet(silence))
    assert sum(f.samples for f in frames) == AUDIO_PACKET
    assert not np.abs(frames[0].to_ndarray()).any()


def test_the_tracks_send_cached_silence_and_idle_frames_and_encode_speech_live() -> None:
    async def run() -> tuple[list, list, int, object]:
        output = AvatarOutput(_loop(), 25, idle_stride=2)
        clock = MediaClock()
        audio, video = make_tracks(output, clock)
        sent_video = [await video.recv() for _ in range(3)]  # the cycle is being built: encoded live
        deadline = time.monotonic() + 10
        while encoded.IDLE_CYCLES.get(output.idle_frames, 2, 0, 25) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        sent_video += [await video.recv() for _ in range(30)]  # round to the cycle's start, then from it
        sent_audio = [await audio.recv() for _ in range(5)]
        utterance = Utterance(1, "hi", output.phase_now())
        utterance.add(np.sin(np.arange(1, 12001) / 5).astype(np.float32) * 0.3, 24000,
                      np.repeat(output.idle_frames[:1], 13, axis=0))
        utterance.end()
        output.enqueue(utterance)
        sent_audio += [await audio.recv() for _ in range(45)]
        sent_video += [await video.recv() for _ in range(3)]  # speech: live again, from a keyframe
        audio.stop()
        video.stop()
        return sent_audio, sent_video, len(utterance.audio), video

    sent_audio, sent_video, speech_samples, video = asyncio.run(run())
    silence = encoded.opus_silence(AUDIO_PACKET)
    assert np.diff([p.pts for p in sent_audio]).tolist() == [AUDIO_PACKET] * (len(sent_audio) - 1)
    assert all(isinstance(p, av.Packet) for p in sent_audio)
    kinds = ["silence" if bytes(p) == silence else "coded" for p in sent_audio]
    assert kinds[:5] == ["silence"] * 5
    coded = kinds.index("coded")
    run_length = kinds[coded:].index("silence")
    # The speech, coded; then up to SILENCE_TAIL packets of its silence still coded (the encoder settles
    # on the very packet that is cached within those), then the cached packet again.
    speech_packets = -(-speech_samples // AUDIO_PACKET)
    assert speech_packets <= run_length <= speech_packets + encoded.SILENCE_TAIL, "".join(k[0] for k in kinds)
    assert set(kinds[coded + run_length:]) == {"silence"}
    assert isinstance(sent_video[0], av.VideoFrame)  # the cycle was not built yet
    cached = [isinstance(f, av.Packet) for f in sent_video[3:33]]
    assert True in cached, cached
    first = cached.index(True)
    assert all(cached[first:]), cached  # once on the cycle, every idle frame comes from it
    assert len(cached) - first >= 10  # ... round its end and into the next turn
    assert all(isinstance(f, av.VideoFrame) for f in sent_video[33:])
    assert sent_video[33].pict_type == av.video.frame.PictureType.I
    assert sent_video[34].pict_type != av.video.frame.PictureType.I
    pts = [f.pts for f in sent_video]
    assert all(b > a for a, b in itertools.pairwise(pts))
    assert all(isinstance(f.time_base, fractions.Fraction) for f in sent_video)
    assert video.cached_frames == len(cached) - first  # type: ignore[attr-defined]


def test_a_keyframe_request_leaves_the_cycle_for_a_live_keyframe() -> None:
    class Sender:
        def __init__(self) -> None:
            self.asked = 0

        def _send_keyframe(self) -> None:
            self.asked += 1

    async def run() -> tuple[list, Sender]:
        output = AvatarOutput(_loop(), 25, idle_stride=2)
        audio, video = make_tracks(output, MediaClock())
        sender = Sender()
        video.watch_keyframe_requests(sender)  # type: ignore[attr-defined]
        sent = []
        while len(sent) < 60 and not (len(sent) > 2 and all(isinstance(f, av.Packet) for f in sent[-2:])):
            sent.append(await video.recv())
        sender._send_keyframe()  # what aiortc calls on a PLI / FIR
        sent.append(await video.recv())
        audio.stop()
        video.stop()
        return sent, sender

    sent, sender = asyncio.run(run())
    assert sender.asked == 1  # aiortc's own handling still runs
    assert isinstance(sent[-2], av.Packet), sent  # the cycle was playing...
    assert isinstance(sent[-1], av.VideoFrame) and sent[-1].pict_type == av.video.frame.PictureType.I


@pytest.fixture(scope="module")
def speech16k() -> np.ndarray:
    pcm, rate = sf.read(SPEECH, dtype="float32")
    return soxr.resample(pcm, rate, SAMPLE_RATE).astype(np.float32)


def _started(audio: np.ndarray) -> tuple[float, Listener]:
    heard = Listener(SileroVAD(), RealtimeSettings())
    for start in range(0, len(audio), 320):
        for item in heard.push(audio[start:start + 320]):
            if item.kind == "speech_started":
                return item.at_s, heard
    raise AssertionError("no speech heard")


def test_a_silent_microphone_is_not_run_through_the_vad_and_speech_after_it_is_heard_as_before(
        speech16k: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    quiet = rng.normal(0, 10 ** (-75 / 20), 5 * SAMPLE_RATE).astype(np.float32)  # a quiet mic, 5 s
    audio = np.concatenate([quiet, speech16k[:2 * SAMPLE_RATE]])
    gated_at, gated = _started(audio)
    windows = 5 * SAMPLE_RATE // 512
    assert gated.windows_skipped >= windows - listener.QUIET_WINDOWS - 1
    monkeypatch.setattr(listener, "QUIET_RMS", 0.0)  # every window through the model, as before
    plain_at, plain = _started(audio)
    assert plain.windows_skipped == 0
    assert abs(gated_at - plain_at) <= 0.064, (gated_at, plain_at)
    # Room noise (-50 dBFS) is not quiet: the model hears all of it.
    noisy = rng.normal(0, 10 ** (-50 / 20), 2 * SAMPLE_RATE).astype(np.float32)
    monkeypatch.setattr(listener, "QUIET_RMS", 10 ** (listener.QUIET_DBFS / 20))
    _, room = _started(np.concatenate([noisy, speech16k[:2 * SAMPLE_RATE]]))
    assert room.windows_skipped == 0
