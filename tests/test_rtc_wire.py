"""The WebSocket fallback's framing and its media loop, offline: microphone frames in (and what is not
one), audio and video out on the call's one clock, events first, the end of the call ending the stream."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from realtime_avatar.rtc import wire
from realtime_avatar.rtc.media import AvatarOutput, Utterance
from realtime_avatar.rtc.socket_link import SocketLink


def test_a_microphone_frame_round_trips() -> None:
    pcm = (np.sin(np.arange(960) / 10) * 10000).astype(np.int16)
    rate, back = wire.parse_mic(wire.mic_frame(pcm, 48000))
    assert rate == 48000 and np.array_equal(back, pcm)
    rate, back = wire.parse_mic(wire.mic_frame(np.full(320, 0.5, np.float32), 16000))
    assert rate == 16000 and back[0] == 16384


@pytest.mark.parametrize("data, why", [
    (b"", "type 0x01"),
    (b"\x11" + bytes(20), "type 0x01"),
    (wire.mic_frame(np.zeros(160, np.int16), 22050), "16000 or 48000"),
    (wire.mic_frame(np.zeros(160, np.int16), 16000) + b"\x00", "whole 16-bit samples"),
    (wire.mic_frame(np.zeros(4801, np.int16), 48000), "at most 100 ms"),
])
def test_what_is_not_a_microphone_frame_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(wire.FrameError, match=why):
        wire.parse_mic(data)


def test_media_messages_carry_their_clock_position() -> None:
    kind, position, payload = wire.parse_media(wire.audio_message(2**40 + 7, np.arange(4, dtype=np.int16)))
    assert (kind, position) == (wire.AUDIO, 2**40 + 7)
    assert np.array_equal(np.frombuffer(payload, "<i2"), np.arange(4))
    frame = np.zeros((32, 32, 3), np.uint8)
    frame[8:24, 8:24] = 200
    kind, position, payload = wire.parse_media(wire.video_message(1920, wire.encode_jpeg(frame)))
    assert (kind, position) == (wire.VIDEO, 1920)
    assert np.abs(wire.decode_jpeg(payload).astype(int) - frame).mean() < 8
    with pytest.raises(wire.FrameError):
        wire.parse_media(b"\x01" + bytes(8))


def _output() -> AvatarOutput:
    idle = np.zeros((10, 16, 16, 3), np.uint8)
    for i in range(10):
        idle[i] += i * 20
    return AvatarOutput(idle, fps=25, idle_stride=2)


def test_the_media_loop_paces_audio_and_video_on_one_clock() -> None:
    output = _output()
    fed: list[int] = []
    link = SocketLink(output, lambda pcm, now: fed.append(len(pcm)))
    for _ in range(10):  # 200 ms at 48 kHz: the listener's 16 kHz, less the resampler's delay
        link.microphone(wire.mic_frame(np.zeros(960, np.int16), 48000), 0.0)
    assert 2800 <= sum(fed) <= 3200, sum(fed)
    fed.clear()
    link.microphone(wire.mic_frame(np.zeros(320, np.int16), 16000), 0.0)  # already 16 kHz: as it is
    assert fed == [320]

    async def run() -> list[list[bytes | str]]:
        batches: list[list[bytes | str]] = []
        link.send('{"type":"call_started"}')
        stream = link.media()
        async for batch in stream:
            batches.append(batch)
            if len(batches) == 3:  # speech queued: the next frames go out at the full rate
                speech = Utterance(1, "hi", 0, frames=[np.full((16, 16, 3), 255, np.uint8)] * 5,
                                   audio=np.full(5 * 1920, 1000, np.int16), ended=True)
                output.enqueue(speech)
            if len(batches) == 12:
                link.send('{"type":"call_ended","reason":"hangup"}')
                link.finish()
        return batches
    batches = asyncio.run(asyncio.wait_for(run(), 10))
    assert batches[0] == ['{"type":"call_started"}']
    assert batches[-1] == ['{"type":"call_ended","reason":"hangup"}']
    media = [wire.parse_media(m) for b in batches for m in b if isinstance(m, bytes)]
    audio = [(p, np.frombuffer(x, "<i2")) for k, p, x in media if k == wire.AUDIO]
    video = [(p, wire.decode_jpeg(x)) for k, p, x in media if k == wire.VIDEO]
    positions = [p for p, _ in audio]
    assert positions == list(range(0, 960 * len(audio), 960))  # contiguous, never skipped
    assert all(p % 1920 == 0 for p, _ in video)
    # The speech's first sample and its first frame are at the same clock position.
    first_loud = next(p for p, pcm in audio if pcm.any())
    first_white = next(p for p, frame in video if frame.mean() > 200)
    assert first_loud == first_white
    # Listening goes out at every idle_frame_stride-th frame; speech at every frame.
    steps = np.diff([p for p, _ in video]) // 1920
    assert 2 in steps and 1 in steps


def test_the_relay_drops_late_video_for_a_slow_client_never_audio_or_events() -> None:
    from deployments import socket_relay

    class SlowSocket:  # each send takes 30 ms: slower than 25 fps of frames plus 50 audio packets a second
        def __init__(self) -> None:
            self.sent: list[bytes | str] = []

        async def send_bytes(self, data: bytes) -> None:
            await asyncio.sleep(0.03)
            self.sent.append(data)

        async def send_text(self, data: str) -> None:
            self.sent.append(data)

    async def media():  # one second of a call, produced at once (the runtime does not wait for us)
        for k in range(25):
            yield [wire.audio_message(k * 1920, np.zeros(960, np.int16)),
                   wire.audio_message(k * 1920 + 960, np.zeros(960, np.int16)),
                   wire.video_message(k * 1920, b"jpeg"), '{"type":"listening"}']
        yield ['{"type":"call_ended","reason":"idle"}']

    socket = SlowSocket()
    reason = asyncio.run(socket_relay._downlink(socket, media()))  # type: ignore[arg-type]
    kinds = [m[0] if isinstance(m, bytes) else "event" for m in socket.sent]
    assert reason == "idle"
    assert kinds.count(wire.AUDIO) == 50 and kinds.count("event") == 26
    assert 0 < kinds.count(wire.VIDEO) < 25  # the first frames went; the late ones were dropped
