"""A voice call from the /avatar page in real headless Chromium, with a fake microphone playing a spoken
question (a WAV made with the bundled TTS), through the real signaling service and the real Serve app on
loopback: the caption of the question, the avatar's video and audio arriving (per ``getStats``), the
reply's text, typed text inside the call, the hang-up. The page's call problems (too many calls, an
answer the browser refuses, no microphone, a blocked one) are shown against the signaling service's
runtime double from tests/test_signaling.py, no Serve needed.

Screenshots go to out/web/call_*.png. Skipped like tests/test_web_browser.py without chromium or
web/dist, unless AVATAR_REQUIRE_BROWSER=1 (CI) makes that a failure."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

# The browser tests' module-level skip (a failure with AVATAR_REQUIRE_BROWSER=1) comes along, and
# selenium with it, imported there after that check.
from tests.test_web_browser import (
    CHROMEDRIVER,
    CHROMIUM,
    By,
    Service,
    WebDriver,
    open_page,
    phase,
    problem_text,
    say,
    shot,
    signaling,
    wait_for,
    webdriver,
)

SERVER_ENV = {"AVATAR_CHAT__TEMPERATURE": "0"}  # greedy decoding: the same replies every run
QUESTION = "What do you do for a living?"
# The fake microphone starts the file when the page opens it (getUserMedia, each call anew), before the
# call is up: the question waits this long in silence, time enough to signal and connect.
LEAD_IN_S = 8.0
TAIL_S = 1.5  # silence after the question: the end of the turn
RATE = 48000


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory) -> Path:
    """The question spoken by the bundled TTS, as 48 kHz mono 16-bit PCM (what Chromium's fake capture
    reads), framed by silence."""
    import soundfile as sf
    import soxr

    from realtime_avatar.config import Settings
    from realtime_avatar.stages import SpeechSynthesis

    tts = SpeechSynthesis(Settings())
    tts.load()
    pcm, rate = tts.engine.synthesize(QUESTION, "en")
    speech = soxr.resample(pcm, rate, RATE).astype(np.float32)
    speech *= 0.5 / max(1e-6, float(np.abs(speech).max()))  # a clear, unclipped level
    audio = np.concatenate([np.zeros(int(LEAD_IN_S * RATE), np.float32), speech,
                            np.zeros(int(TAIL_S * RATE), np.float32)])
    path = tmp_path_factory.mktemp("mic") / "question.wav"
    sf.write(path, audio, RATE, subtype="PCM_16")
    return path


@contextlib.contextmanager
def chromium(microphone: Path | None = None, *extra: str) -> Iterator[WebDriver]:
    """Headless Chromium whose microphone is allowed without a prompt and fake: ``microphone``'s WAV,
    played once (then silence), or Chromium's beep; ``extra`` flags besides."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="avatar-chromium-")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--window-size=1100,800", "--lang=en-US",
             "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
             "--autoplay-policy=no-user-gesture-required",
             # Plain loopback host candidates instead of mDNS names, which aiortc does not resolve.
             "--disable-features=WebRtcHideLocalIpsWithMdns", *extra]
    if microphone is not None:
        flags.append(f"--use-file-for-fake-audio-capture={microphone}%noloop")
    for flag in flags:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(10)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def call_state(driver: WebDriver) -> str:
    return driver.find_element(By.CSS_SELECTOR, ".app").get_attribute("data-call") or ""


def mic_button(driver: WebDriver) -> Any:
    return driver.find_element(By.CSS_SELECTOR, "button.mic")


def voice_messages(driver: WebDriver, role: str) -> list[dict[str, str]]:
    return driver.execute_script("""
        return [...document.querySelectorAll('.msg.' + arguments[0] + '[data-via="voice"]')].map(m => ({
            text: m.querySelector('.text').textContent, status: m.dataset.status, lang: m.lang}))""", role)


def caption(driver: WebDriver, who: str = "user") -> str:
    """The line of the call's caption on the video for ``who`` ("user" or "avatar"), without its label."""
    return driver.execute_script("""
        const line = document.querySelector('.stage .caption[data-who="' + arguments[0] + '"]');
        return line ? line.lastChild.textContent : '';""", who)


def call_video(driver: WebDriver) -> dict[str, Any]:
    return driver.execute_script("""
        const v = document.querySelector('video.call');
        return {active: v.dataset.active === 'true', time: v.currentTime, paused: v.paused,
                width: v.videoWidth, ready: v.readyState,
                tracks: v.srcObject ? v.srcObject.getTracks().length : 0};""")


def call_frame(driver: WebDriver) -> np.ndarray:
    """The call video's current picture, as the page has it (drawn to a canvas), 128x128 RGB."""
    pixels = driver.execute_script("""
        const v = document.querySelector('video.call');
        const c = document.createElement('canvas'); c.width = 128; c.height = 128;
        const g = c.getContext('2d'); g.drawImage(v, 0, 0, 128, 128);
        return Array.from(g.getImageData(0, 0, 128, 128).data);""")
    return np.asarray(pixels, dtype=np.int16).reshape(128, 128, 4)[..., :3]


def rtc_stats(driver: WebDriver) -> dict[str, dict[str, float]]:
    """inbound-rtp counters of the page's call, by kind (the page keeps its peer connection on
    ``window.__avatarCall`` for this)."""
    return driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const call = window.__avatarCall;
        if (!call) { done({}); return; }
        call.pc.getStats().then(report => {
            const out = {};
            report.forEach(s => {
                if (s.type === 'inbound-rtp') out[s.kind] = {
                    framesDecoded: s.framesDecoded || 0, bytesReceived: s.bytesReceived || 0,
                    packetsReceived: s.packetsReceived || 0, totalAudioEnergy: s.totalAudioEnergy || 0,
                    frameWidth: s.frameWidth || 0};
            });
            out.connection = {state: call.pc.connectionState};
            done(out);
        }, () => done({}));""")


def test_a_voice_call_from_the_page_is_heard_answered_and_hung_up(api_server, question_wav):
    with signaling(api_server) as base, chromium(question_wav) as driver:
        open_page(driver, base)
        assert call_state(driver) == "off" and mic_button(driver).text == "Talk"
        # A first call, hung up as soon as it is up, then the call that hears the question: calling again
        # after a hang-up works, and a cold runtime's first offer (slow on a busy machine) cannot eat
        # into the question's lead-in.
        mic_button(driver).click()
        wait_for(lambda: call_state(driver) != "off", 2, "the call to begin")
        assert mic_button(driver).text == "Hang up"  # a call being set up can be abandoned too
        wait_for(lambda: call_state(driver) not in ("off", "connecting"), 90, "the first call to connect")
        first_call = driver.execute_script("return window.__avatarCall.callId")
        mic_button(driver).click()
        wait_for(lambda: call_state(driver) == "off", 5, "the first call to end")
        earlier = len(voice_messages(driver, "user"))

        mic_button(driver).click()
        asked = time.monotonic()
        wait_for(lambda: call_state(driver) not in ("off", "connecting"), 60, "the call to connect")
        connect_s = time.monotonic() - asked
        call_id = driver.execute_script("return window.__avatarCall.callId")
        assert call_id != first_call
        # The avatar's live video replaces the idle face once it has a picture, before anyone speaks.
        wait_for(lambda: call_video(driver)["active"], 30, "the call's video to play")
        video = call_video(driver)
        assert video["tracks"] == 2 and video["width"] > 0 and not video["paused"], video
        assert call_frame(driver).std() > 20  # a face, not a black box
        shot(driver, "call_1_listening")
        start = rtc_stats(driver)
        assert start["connection"]["state"] == "connected", start
        assert connect_s < LEAD_IN_S, f"the call took {connect_s:.1f} s to connect: the question was missed"

        # The question plays into the microphone: its caption on the video (it stays up through the
        # reply), its entry in the transcript, then the avatar's answer.
        wait_for(lambda: "living" in caption(driver).lower(), 90, "the caption of the question")
        heard = caption(driver)
        question = wait_for(lambda: next((m for m in voice_messages(driver, "user")[earlier:]
                                          if "living" in m["text"].lower() and m["status"] == "done"), None),
                            5, "the question in the transcript")
        assert question["lang"] == "en", question
        shot(driver, "call_2_caption")
        wait_for(lambda: any(m["text"].strip() for m in voice_messages(driver, "avatar")), 120,
                 "the reply's text")
        wait_for(lambda: call_state(driver) == "speaking", 120, "the avatar to speak")
        # "speaking" comes on the data channel as the first sentence is queued; its sound follows on the
        # media path, late by the jitter buffer (and by seconds on a starved machine).
        before, before_frame = rtc_stats(driver), call_frame(driver)

        def sounding() -> dict[str, Any] | None:
            stats = rtc_stats(driver)
            return stats if stats["audio"]["totalAudioEnergy"] > before["audio"]["totalAudioEnergy"] else None

        after = wait_for(sounding, 20, "the avatar's voice to arrive", every=0.25)
        time.sleep(0.5)
        after_frame = call_frame(driver)
        shot(driver, "call_3_speaking")
        change = float(np.abs(after_frame - before_frame).max())
        decoded = after["video"]["framesDecoded"] - start["video"]["framesDecoded"]
        audio_bytes = after["audio"]["bytesReceived"] - start["audio"]["bytesReceived"]
        energy = after["audio"]["totalAudioEnergy"] - before["audio"]["totalAudioEnergy"]
        assert after["video"]["framesDecoded"] > before["video"]["framesDecoded"]  # frames keep coming
        assert decoded > 50 and audio_bytes > 2000, (start, after)
        assert change > 10, change  # the face moves while it speaks
        wait_for(lambda: call_state(driver) == "listening", 180, "the reply to end")
        reply = voice_messages(driver, "avatar")[-1]
        assert reply["status"] == "done" and len(reply["text"]) > 3 and reply["lang"] == "en", reply
        timings = driver.execute_script("""
            return window.__avatarCall.events.filter(e => e.type === 'turn_timings')
                .map(e => e.timings_ms)""")
        end = rtc_stats(driver)
        print(f"\ncall connected in {connect_s:.1f} s; caption {heard!r}; transcript {question['text']!r}"
              f"\nreply {reply['text']!r}\nturn timings (ms after the end of speech) {timings}"
              f"\nvideo framesDecoded {start['video']['framesDecoded']} -> {end['video']['framesDecoded']}, "
              f"audio bytesReceived {start['audio']['bytesReceived']} -> {end['audio']['bytesReceived']}, "
              f"audio energy at the first sound +{energy:.4f}, largest pixel change {change:.0f}")

        # Typed text inside the call goes over the data channel and is answered in the call; the stop
        # button cuts that answer while it is spoken.
        say(driver, "Where do you live?")
        wait_for(lambda: len([m for m in voice_messages(driver, "avatar") if m["text"].strip()]) >= 2, 120,
                 "the reply to the typed message")
        typed = driver.find_elements(By.CSS_SELECTOR, '.msg.user[data-via="call-text"]')
        assert [m.find_element(By.CSS_SELECTOR, ".text").text for m in typed] == ["Where do you live?"]
        shot(driver, "call_4_typed")
        wait_for(lambda: call_state(driver) == "speaking", 120, "the typed reply to be spoken")
        stop = driver.find_element(By.CSS_SELECTOR, "button.stop")
        assert stop.is_enabled()
        stop.click()
        wait_for(lambda: voice_messages(driver, "avatar")[-1]["status"] == "stopped", 5, "the reply to stop")
        wait_for(lambda: call_state(driver) == "listening", 5, "listening again")
        assert not stop.is_enabled()
        print(f"typed reply, stopped: {voice_messages(driver, 'avatar')[-1]['text']!r}")

        # The language toggle starts a new conversation, and the call moves with it (called again).
        driver.find_element(By.CSS_SELECTOR, 'input[name="lang"][value="es"]').click()
        def moved() -> dict[str, Any] | None:
            return driver.execute_script("""
                const call = window.__avatarCall;
                const started = call.events.find(e => e.type === 'call_started');
                return call.callId !== arguments[0] && started || null""", call_id)

        started = wait_for(moved, 60, "the call in the Spanish conversation")
        spanish_call = started["call_id"]
        assert started["language"] == "es" and mic_button(driver).text == "Colgar", started
        wait_for(lambda: call_video(driver)["active"], 30, "the Spanish call's video")

        # Hang up: the call ends on both sides, and the idle face is back.
        mic_button(driver).click()
        wait_for(lambda: call_state(driver) == "off", 5, "the hang-up")
        assert driver.execute_script("return window.__avatarCall.pc.connectionState") == "closed"
        assert not call_video(driver)["active"] and mic_button(driver).text == "Hablar"
        assert phase(driver) == "ready" and not problem_text(driver)
        for ended in (first_call, call_id, spanish_call):  # the runtime holds none of them any more
            url = f"{api_server}/v1/rtc/calls/{ended}"
            wait_for(lambda u=url: httpx.get(u, timeout=5, trust_env=False).status_code == 404, 10,
                     "the runtime to end the call")
        shot(driver, "call_5_hung_up")


# --- call problems on the page (the runtime double: no Serve, no media) ------------------------------------


def _fake_runtime() -> Any:
    from tests.test_signaling import FakeRuntime, FakeStream

    class TextOnly(FakeStream):  # the double's clips are not real MP4s: the page would say so
        def lines(self) -> list[dict[str, Any]]:
            return [line for line in super().lines() if line["type"] != "clip"]

    class Runtime(FakeRuntime):
        async def greeting(self, request: Any) -> Any:
            return TextOnly(self, ["Hi! I'm Alex."], "en")

        async def chat(self, request: Any) -> Any:
            reply = await super().chat(request)
            return TextOnly(self, reply.deltas, reply.language) if isinstance(reply, FakeStream) else reply

        async def rtc_offer(self, request: Any) -> Any:
            if self.offer_mode != "unreachable":
                return await super().rtc_offer(request)
            # A real answer (aiortc's) from a peer that is gone before the browser's connectivity checks
            # reach it: what a network that blocks the media path looks like to the page.
            from aiortc import RTCPeerConnection, RTCSessionDescription
            from starlette.responses import JSONResponse

            body = await request.json()
            self.offers.append(body)
            pc = RTCPeerConnection()
            await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            answer = pc.localDescription.sdp
            await pc.close()
            self.calls["unreachable"] = body["session_id"]
            self.call_log.append(("offer", "unreachable"))
            return JSONResponse({"call_id": "unreachable", "session_id": body["session_id"], "sdp": answer,
                                 "type": "answer", "language": body.get("language", "auto")})

    return Runtime()


def _refuse_microphone(driver: WebDriver, name: str) -> None:
    """getUserMedia rejects as the browser does when the mic is blocked or missing (the fake device can
    be neither)."""
    driver.execute_script("""
        const name = arguments[0];
        navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('no', name));""", name)


def test_call_problems_are_explained_on_the_page():
    from tests.test_signaling import running_runtime

    fake = _fake_runtime()
    with running_runtime(fake) as runtime_url, signaling(runtime_url) as base, chromium() as driver:
        # WebRTC only: these are WebRTC's problems (the page's switch to the WebSocket fallback when ICE
        # fails, and the fallback's own failures, are tests/test_web_fallback.py's).
        driver.get(f"{base}/avatar/?transport=webrtc")
        wait_for(lambda: phase(driver) == "ready", 60, "the page to connect")
        # The runtime is on as many calls as it takes: the 503's message and its Retry-After, in words.
        fake.offer_mode = "too_many_calls"
        mic_button(driver).click()
        wait_for(lambda: "too many calls" in problem_text(driver), 20, "the too-many-calls message")
        assert "try again in 5 s" in problem_text(driver) and call_state(driver) == "off"
        assert mic_button(driver).is_enabled() and mic_button(driver).text == "Talk"
        shot(driver, "call_6_too_many_calls")

        # An answer the browser cannot take: said so, and the call is hung up on the runtime.
        fake.offer_mode = "ok"
        driver.find_element(By.CSS_SELECTOR, ".problem button.retry").click()
        wait_for(lambda: "could not be set up" in problem_text(driver), 20, "the failed call")
        assert fake.offers[-1]["sdp"].startswith("v=0") and "m=audio" in fake.offers[-1]["sdp"]
        assert "m=video" in fake.offers[-1]["sdp"] and "webrtc-datachannel" in fake.offers[-1]["sdp"]
        assert "a=candidate:" in fake.offers[-1]["sdp"]  # gathered before the offer left (no trickle)
        wait_for(lambda: fake.call_log and fake.call_log[-1][0] == "hangup", 5, "the hang-up")
        assert fake.calls == {} and call_state(driver) == "off"

        # A media path that never connects: said so once the browser gives up (or the page's 20 s).
        fake.offer_mode = "unreachable"
        mic_button(driver).click()
        wait_for(lambda: "could not connect" in problem_text(driver), 40, "the failed connection")
        assert call_state(driver) == "off" and fake.call_log[-1] == ("hangup", "unreachable")
        shot(driver, "call_9_no_connection")

        # No microphone, and a blocked one: each in words, with the text box still there to type.
        _refuse_microphone(driver, "NotFoundError")
        mic_button(driver).click()
        wait_for(lambda: "No microphone was found" in problem_text(driver), 5, "the no-mic message")
        shot(driver, "call_7_no_microphone")
        _refuse_microphone(driver, "NotAllowedError")
        mic_button(driver).click()
        wait_for(lambda: "microphone is blocked" in problem_text(driver), 5, "the blocked-mic message")
        assert call_state(driver) == "off" and driver.find_element(By.ID, "message").is_enabled()
        shot(driver, "call_8_microphone_blocked")
        # Typed chat still works, through /chat as before.
        say(driver, "hola")
        wait_for(lambda: "Trabajo" in driver.find_elements(By.CSS_SELECTOR, ".msg.avatar")[-1].text, 10,
                 "the reply")
        assert fake.chats[-1]["text"] == "hola"
