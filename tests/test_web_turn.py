"""A voice call from the /avatar page in real headless Chromium relayed through a real coturn on loopback:
the signaling service hands the page a TURN credential of its own, minted for the conversation, and tells
it to use relayed candidates only; the runtime is relay-only too. The page's ``getStats`` shows the call
carried by a relay <-> relay candidate pair, the question is heard (its caption) and the avatar's video
and voice arrive. Skipped like the other browser tests without chromium, unless AVATAR_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from realtime_avatar.rtc import coturn
from tests import test_web_call
from tests.test_web_browser import WebDriver, open_page, shot, signaling, wait_for
from tests.test_web_call import LEAD_IN_S, call_state, caption, chromium, mic_button, rtc_stats

question_wav = test_web_call.question_wav  # the fixture: the spoken question, framed by silence
RELAY = coturn.LocalRelay.pick()
RELAY_PORT, RELAY_SECRET, RELAY_URL = RELAY.port, RELAY.secret, RELAY.url
SERVER_ENV = {**RELAY.runtime_env(policy="relay"), "AVATAR_CHAT__TEMPERATURE": "0"}


@pytest.fixture(scope="module", autouse=True)
def relay() -> Iterator[str]:
    with RELAY.running() as url:
        yield url


def selected_pair(driver: WebDriver) -> dict[str, Any]:
    """The candidate types and addresses of the pair the page's call runs on (``getStats``)."""
    return driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        window.__avatarCall.pc.getStats().then(report => {
            let pair = null;
            report.forEach(s => {
                if (s.type === 'transport' && s.selectedCandidatePairId) {
                    pair = report.get(s.selectedCandidatePairId);
                }
            });
            if (!pair) { done({}); return; }
            const local = report.get(pair.localCandidateId), remote = report.get(pair.remoteCandidateId);
            done({state: pair.state, local: local.candidateType, remote: remote.candidateType,
                  localAddress: local.address + ':' + local.port, relayUrl: local.url || '',
                  bytesReceived: pair.bytesReceived});
        }, () => done({}));""")


def test_a_call_from_the_page_runs_relay_only_through_coturn(api_server, question_wav):
    env = {"TURN_URLS": RELAY_URL, "TURN_SECRET": RELAY_SECRET, "ICE_TRANSPORT_POLICY": "relay"}
    with signaling(api_server, **env) as base, chromium(question_wav) as driver:
        open_page(driver, base)
        mic_button(driver).click()
        asked = time.monotonic()
        wait_for(lambda: call_state(driver) not in ("off", "connecting"), 60, "the relayed call to connect")
        connect_s = time.monotonic() - asked
        config = driver.execute_script("""
            const c = window.__avatarCall.pc.getConfiguration();
            return {policy: c.iceTransportPolicy, servers: c.iceServers.map(s => ({urls: s.urls,
                    username: s.username}))};""")
        assert config["policy"] == "relay", config
        (server,) = config["servers"]  # the signaling service's own credential, for this conversation
        assert server["urls"] == [RELAY_URL] and server["username"].split(":")[1], config
        pair = wait_for(lambda: selected_pair(driver) or None, 10, "the selected candidate pair")
        assert (pair["local"], pair["remote"]) == ("relay", "relay"), pair
        assert pair["localAddress"].startswith("127.0.0.1:"), pair
        wait_for(lambda: "living" in caption(driver).lower(), 90, "the caption of the question (mic relayed)")
        start = rtc_stats(driver)
        wait_for(lambda: call_state(driver) == "speaking", 150, "the avatar to speak")
        def sounding() -> dict[str, Any] | None:
            stats = rtc_stats(driver)
            return stats if stats["audio"]["totalAudioEnergy"] > start["audio"]["totalAudioEnergy"] else None

        after = wait_for(sounding, 30, "the avatar's voice", every=0.25)
        assert after["video"]["framesDecoded"] > start["video"]["framesDecoded"] + 10, (start, after)
        shot(driver, "call_relay_speaking")
        print(f"\nrelayed call connected in {connect_s:.1f} s over {pair}; caption {caption(driver)!r}; "
              f"ice {config}")
        assert connect_s < LEAD_IN_S, f"the relayed call took {connect_s:.1f} s: the question was missed"
        mic_button(driver).click()
        wait_for(lambda: call_state(driver) == "off", 5, "the hang-up")
