"""The WebRTC side of a call (aiortc): check an offer, answer it with the avatar's tracks, watch the peer.

No trickle ICE: the answer is returned once this side's candidates are gathered (host candidates take
milliseconds; a TURN allocation well under a second), which keeps signalling one request.
"""

from __future__ import annotations

import re
from typing import Any

from engines.errors import InputError
from realtime_avatar.config import IceServer

MAX_SDP_CHARS = 64_000


class InvalidOfferError(InputError):
    code = "invalid_sdp"


def check_offer(sdp: Any, kind: Any) -> str:
    """The offer's SDP when it can be a WebRTC offer with a microphone; a clear 400 otherwise."""
    if kind != "offer":
        raise InvalidOfferError('"type" must be "offer"')
    if not isinstance(sdp, str) or not sdp.strip():
        raise InvalidOfferError('"sdp" must be the offer\'s SDP text')
    if len(sdp) > MAX_SDP_CHARS:
        raise InvalidOfferError(f"the SDP is longer than {MAX_SDP_CHARS} characters")
    if not sdp.lstrip().startswith("v=0"):
        raise InvalidOfferError("this is not SDP (it must begin with v=0)")
    if "a=fingerprint:" not in sdp or "a=ice-ufrag:" not in sdp:
        raise InvalidOfferError("this SDP is not a WebRTC offer (no DTLS fingerprint or ICE credentials)")
    if not _sends_audio(sdp):
        raise InvalidOfferError("the offer has no microphone audio the avatar could listen to",
                                code="no_audio")
    return sdp


def _sends_audio(sdp: str) -> bool:
    for section in re.split(r"\r?\n(?=m=)", sdp)[1:]:
        if section.startswith("m=audio") and not re.search(r"^a=(recvonly|inactive)\s*$", section, re.M):
            port = section.split()[1] if len(section.split()) > 1 else "0"
            if port != "0":
                return True
    return False


def offers_video(sdp: str) -> bool:
    return any(s.startswith("m=video") for s in re.split(r"\r?\n(?=m=)", sdp)[1:])


def rtc_configuration(servers: list[IceServer], policy: str = "all") -> Any:
    """``policy`` "relay": only TURN-relayed candidates are gathered (no host or server-reflexive ones)."""
    from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy

    return RTCConfiguration(
        iceServers=[RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
                    for s in servers],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY if policy == "relay" else RTCIceTransportPolicy.ALL)


def nominated_pair(pc: Any) -> dict[str, str] | None:
    """The candidate types of the pair ICE chose (``{"local": "relay", "remote": "host"}``), once connected.
    aiortc has no candidate-pair stats, so this reads aioice's connection behind the first transport."""
    for transceiver in pc.getTransceivers():
        transport = transceiver.receiver.transport
        connection = getattr(getattr(transport, "transport", None), "_connection", None)
        nominated = getattr(connection, "_nominated", None) or {}
        for pair in nominated.values():
            return {"local": pair.local_candidate.type, "remote": pair.remote_candidate.type}
    return None


async def answer(pc: Any, sdp: str, audio_track: Any, video_track: Any | None) -> str:
    """Apply the offer, attach the avatar's tracks to the offered transceivers, and return the answer."""
    from aiortc import RTCSessionDescription

    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise InvalidOfferError(f"the offer could not be applied: {type(exc).__name__}") from None
    pc.addTrack(audio_track)
    if video_track is not None:
        sender = pc.addTrack(video_track)
        watch = getattr(video_track, "watch_keyframe_requests", None)
        if watch is not None:
            watch(sender)  # a PLI / FIR ends a cached idle cycle at once (media.make_tracks)
    description = await pc.createAnswer()
    await pc.setLocalDescription(description)
    return str(pc.localDescription.sdp)
