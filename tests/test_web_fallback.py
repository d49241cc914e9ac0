"""The WebSocket fallback from the /avatar page in real headless Chromium, through the real signaling
service and the real Serve app on loopback: the page forced onto the fallback (``?transport=websocket``)
hears a spoken question (fake microphone, a WAV from the bundled TTS) and answers with voice and face
(WebAudio and a canvas), saying it is on the fallback; and a browser whose WebRTC cannot connect
(relay-only ICE, and no relay there) switches to the fallback by itself and says so.

Skipped like tests/test_web_browser.py without chromium or web/dist, unless AVATAR_REQUIRE_BROWSER=1."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
import numpy as np

from tests.test_web_browser import (
    WebDriver,
    say,
    shot,
    signaling,
    wait_for,
)
from tests.test_web_call import call_state, caption, chromium, mic_button, question_wav, voice_messages

__all__ = ["question_wav"]  # the fixture, shared with tests/test_web_call.py
SERVER_ENV = {"AVATAR_CHAT__TEMPERATURE": "0", "AVATAR_CHAT__REPLY_MAX_SENTENCES": "2"}


def open_at(driver: WebDriver, url: str) -> None:
    driver.get(url)
    script = "return document.querySelector('.status')?.dataset.phase"
    wait_for(lambda: driver.execute_script(script) == "ready", 60, "the page to connect")


def debug(driver: WebDriver) -> dict[str, Any]:
    return driver.execute_script("""
        const c = window.__avatarCall || {};
        return {transport: c.transport || 'webrtc', callId: c.callId || null,
                audioPackets: c.audioPackets || 0, audioEnergy: c.audioEnergy || 0,
                framesDrawn: c.framesDrawn || 0, micFrames: c.micFrames || 0,
                events: (c.events || []).map(e => e.type)};""")


def transport_note(driver: WebDriver) -> dict[str, str] | None:
    return driver.execute_script("""
        const n = document.querySelector('.status .transport');
        return n ? {text: n.textContent, switched: n.dataset.switched} : null;""")


def canvas_frame(driver: WebDriver) -> np.ndarray:
    """What the fallback's canvas shows, 128x128 RGB (0 where it is hidden or empty)."""
    pixels = driver.execute_script("""
        const v = document.querySelector('canvas.call');
        if (!v || v.hidden || v.dataset.active !== 'true') return null;
        const c = document.createElement('canvas'); c.width = 128; c.height = 128;
        const g = c.getContext('2d'); g.drawImage(v, 0, 0, 128, 128);
        return Array.from(g.getImageData(0, 0, 128, 128).data);""")
    if pixels is None:
        return np.zeros((128, 128, 3), np.int16)
    return np.asarray(pixels, dtype=np.int16).reshape(128, 128, 4)[..., :3]


def _ended_on_the_runtime(api_server: str, call_id: str) -> None:
    url = f"{api_server}/v1/rtc/calls/{call_id}"
    wait_for(lambda: httpx.get(url, timeout=5, trust_env=False).status_code == 404, 10,
             "the runtime to end the call")


def test_a_call_forced_onto_the_fallback_is_heard_and_answered(api_server, question_wav):
    with signaling(api_server) as base, chromium(question_wav) as driver:
        open_at(driver, f"{base}/avatar/?transport=websocket")
        mic_button(driver).click()
        asked = time.monotonic()
        wait_for(lambda: call_state(driver) not in ("off", "connecting"), 60, "the call to connect")
        connect_s = time.monotonic() - asked
        state = debug(driver)
        assert state["transport"] == "websocket" and state["callId"], state
        note = transport_note(driver)
        assert note is not None and "fallback" in note["text"].lower() and note["switched"] == "false", note
        # The idle face on the canvas, frames drawn on the audio clock, the microphone going up.
        wait_for(lambda: canvas_frame(driver).std() > 20, 30, "the call's face on the canvas")
        start = debug(driver)
        assert start["micFrames"] > 0, start
        shot(driver, "fallback_1_listening")

        wait_for(lambda: "living" in caption(driver).lower(), 90, "the caption of the question")
        wait_for(lambda: any(m["text"].strip() for m in voice_messages(driver, "avatar")), 120,
                 "the reply's text")
        wait_for(lambda: call_state(driver) == "speaking", 120, "the avatar to speak")
        before, before_frame = debug(driver), canvas_frame(driver)
        wait_for(lambda: debug(driver)["audioEnergy"] > before["audioEnergy"] + 1e-3, 20,
                 "the avatar's voice to arrive", every=0.25)
        time.sleep(0.5)
        after, after_frame = debug(driver), canvas_frame(driver)
        shot(driver, "fallback_2_speaking")
        change = float(np.abs(after_frame - before_frame).max())
        assert after["framesDrawn"] > start["framesDrawn"] + 10, (start, after)
        assert after["audioPackets"] > start["audioPackets"] + 50, (start, after)
        assert change > 10, change  # the face moves while it speaks
        wait_for(lambda: call_state(driver) == "listening", 180, "the reply to end")
        reply = voice_messages(driver, "avatar")[-1]
        assert reply["status"] == "done" and len(reply["text"]) > 3, reply
        print(f"\nfallback call connected in {connect_s:.1f} s; reply {reply['text']!r}; {after}")

        mic_button(driver).click()
        wait_for(lambda: call_state(driver) == "off", 5, "the hang-up")
        assert transport_note(driver) is None and canvas_frame(driver).std() == 0
        _ended_on_the_runtime(api_server, state["callId"])


def test_the_page_switches_to_the_fallback_when_webrtc_cannot_connect(api_server):
    # Relayed candidates only, through a TURN relay that is not there: an ICE configuration that cannot
    # connect (what a network that blocks UDP and any relay looks like to the page).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        nowhere = probe.getsockname()[1]  # closed again below: nothing answers there
    relay = {"ICE_TRANSPORT_POLICY": "relay", "TURN_URLS": f"turn:127.0.0.1:{nowhere}?transport=udp",
             "TURN_SECRET": "no-relay-listens"}
    with signaling(api_server, **relay) as base, chromium() as driver:
        open_at(driver, f"{base}/avatar/?ice_timeout_s=6")
        mic_button(driver).click()
        note = wait_for(lambda: (n := transport_note(driver)) and n["switched"] == "true" and n, 60,
                        "the page to switch to the fallback")
        assert "fallback" in note["text"].lower(), note
        wait_for(lambda: call_state(driver) not in ("off", "connecting"), 60, "the fallback call to connect")
        state = debug(driver)
        assert state["transport"] == "websocket", state
        shot(driver, "fallback_3_switched")
        # Typed text in the call is answered over the fallback, with its voice.
        say(driver, "Where do you live?")
        wait_for(lambda: call_state(driver) == "speaking", 120, "the avatar to speak")
        wait_for(lambda: debug(driver)["audioEnergy"] > state["audioEnergy"] + 1e-3, 20,
                 "the avatar's voice", every=0.25)
        assert canvas_frame(driver).std() > 20
        mic_button(driver).click()
        wait_for(lambda: call_state(driver) == "off", 5, "the hang-up")
        _ended_on_the_runtime(api_server, state["callId"])
