"""Voice calls relayed through a real coturn (Debian's ``turnserver`` with the repo's config, on loopback),
with the runtime and the harness client both forced to relay-only ICE: the call connects over a relayed
candidate pair and a spoken question is heard and answered. The relay refuses forged and expired TURN REST
credentials and accepts the ones the runtime mints; /v1/rtc/config hands one out only for an open session.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from realtime_avatar.rtc import coturn
from realtime_avatar.rtc.client import RealtimeCall
from realtime_avatar.rtc.harness import Line, speak_lines
from realtime_avatar.rtc.turn import credential, username

RELAY = coturn.LocalRelay.pick()
RELAY_PORT, RELAY_SECRET, RELAY_URL = RELAY.port, RELAY.secret, RELAY.url
SERVER_ENV = {**RELAY.runtime_env(policy="relay"), "AVATAR_CHAT__TEMPERATURE": "0"}


@pytest.fixture(scope="module", autouse=True)
def relay() -> Iterator[str]:
    with RELAY.running() as url:
        yield url


async def _allocate(name: str, password: str) -> tuple[str, int]:
    """A TURN allocation on the relay with this credential; its relayed address."""
    from aioice.turn import create_turn_endpoint

    transport, _ = await asyncio.wait_for(create_turn_endpoint(
        asyncio.DatagramProtocol, ("127.0.0.1", RELAY_PORT), name, password), 10)
    try:
        return transport.get_extra_info("sockname")
    finally:
        transport.close()


def _refused(name: str, password: str) -> str:
    from aioice.stun import TransactionFailed

    with pytest.raises(TransactionFailed) as refused:
        asyncio.run(_allocate(name, password))
    return str(refused.value)


def test_the_relay_takes_only_unexpired_credentials_made_with_its_secret(relay: str) -> None:
    good = username("a-session", 600)
    assert asyncio.run(_allocate(good, credential(RELAY_SECRET, good)))[0] == "127.0.0.1"
    assert "401" in _refused(good, credential("not-the-secret", good))  # forged
    password = credential(RELAY_SECRET, good)
    assert "401" in _refused(good, ("A" if password[0] != "A" else "B") + password[1:])  # tampered
    expired = username("a-session", -30)
    assert "401" in _refused(expired, credential(RELAY_SECRET, expired))


def test_the_config_mints_a_credential_only_for_an_open_session(api_server: str, relay: str) -> None:
    anonymous = httpx.get(f"{api_server}/v1/rtc/config", timeout=30).json()
    assert anonymous["ice_servers"] == [] and anonymous["ice_transport_policy"] == "relay"
    unknown = httpx.get(f"{api_server}/v1/rtc/config", params={"session_id": "0" * 32}, timeout=30)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "session_not_found"

    session = httpx.post(f"{api_server}/v1/chat/sessions", json={"language": "en"}, timeout=30).json()
    config = httpx.get(f"{api_server}/v1/rtc/config", params={"session_id": session["session_id"]},
                       timeout=30).json()
    (server,) = config["ice_servers"]
    expiry, _, who = server["username"].partition(":")
    assert server["urls"] == [RELAY_URL] and who == session["session_id"]
    assert 0 < int(expiry) - time.time() <= 601
    asyncio.run(_allocate(server["username"], server["credential"]))  # the relay takes it


def test_a_relay_only_call_is_heard_and_answered_through_coturn(api_server: str, relay: str) -> None:
    (question,) = speak_lines(api_server, [Line("What do you do for a living?", "en")])

    async def run() -> tuple[dict, dict, list, np.ndarray]:
        async with RealtimeCall(api_server, "en", keep_video=True, ice_transport_policy="relay") as call:
            heard_from = len(call.recording.audio.chunks)
            await call.say(question.pcm, question.sample_rate)
            transcript = await call.wait_event("transcript", timeout_s=120,
                                               where=lambda e: bool(e.get("final")))
            done = await call.wait_event("reply_done", timeout_s=180)
            assert transcript is not None and done is not None, [e.type for e in call.recording.events]
            info = httpx.get(f"{api_server}/v1/rtc/calls/{call.recording.call_id}", timeout=30).json()
            reply = np.concatenate(call.recording.audio.chunks[heard_from:])
            return transcript.event, info, [call.recording.ice, len(call.recording.video.frames)], reply

    transcript, info, (ice, frames), reply = asyncio.run(run())
    assert "living" in transcript["text"].lower(), transcript
    # Both ends offered relayed candidates only, so the pair that carried the call is relay <-> relay.
    assert ice == {"local": "relay", "remote": "relay"}, ice
    assert info["ice"] == {"local": "relay", "remote": "relay"}, info
    assert frames > 25  # the avatar's video came through the relay
    assert float(np.sqrt(np.mean(reply ** 2))) > 0.01  # and its voice
