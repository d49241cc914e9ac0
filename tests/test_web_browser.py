"""The /avatar page in a real browser: headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium) against the real signaling service (its own process) and the real Serve app on loopback.

Screenshots go to out/web/. Needs ``web/dist`` (``npm ci && npm run build`` in web/) and chromium; without
them the tests skip, unless AVATAR_REQUIRE_BROWSER=1 (CI) makes that a failure."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHOTS = REPO / "out" / "web"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# Greedy decoding: the same replies every run.
SERVER_ENV = {"AVATAR_CHAT__TEMPERATURE": "0"}


def _missing() -> str | None:
    if not (REPO / "web" / "dist" / "index.html").exists():
        return "web/dist is not built (cd web && npm ci && npm run build)"
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        return "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    return None


if (why := _missing()) is not None:
    if os.environ.get("AVATAR_REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"browser tests required but {why}")
    pytest.skip(why, allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def signaling(runtime_url: str, **env: str) -> Iterator[str]:
    """``python -m signaling`` in its own process (as deployed), SIGNALING_* settings from ``env``."""
    port = _free_port()
    environ = {**os.environ, "SIGNALING_SECRET": "browser-test-secret",
               **{f"SIGNALING_{k}": v for k, v in env.items()}}
    command = [sys.executable, "-m", "signaling", "--runtime-url", runtime_url, "--port", str(port)]
    process = subprocess.Popen(command, cwd=REPO, env=environ, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/healthz", timeout=1, trust_env=False).status_code == 200:
                    break
            assert process.poll() is None and time.monotonic() < deadline, "signaling did not start"
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="avatar-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1100,800", "--lang=en-US"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(every)


def shot(driver: WebDriver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def phase(driver: WebDriver) -> str:
    return driver.find_element(By.CSS_SELECTOR, ".app").get_attribute("data-phase") or ""


def avatar_messages(driver: WebDriver) -> list[dict[str, str]]:
    return driver.execute_script("""
        return [...document.querySelectorAll('.msg.avatar')].map(m => ({
            text: m.querySelector('.text').textContent, lang: m.lang, status: m.dataset.status}))""")


def active_video(driver: WebDriver) -> dict[str, Any]:
    return driver.execute_script("""
        const v = document.querySelector('video[data-active="true"]');
        return v && {time: v.currentTime, paused: v.paused, ended: v.ended, ready: v.readyState,
                     width: v.videoWidth, error: v.error && v.error.message};""")


def frame(driver: WebDriver) -> np.ndarray:
    """The active video's current frame, as the page has it (drawn to a canvas), 128x128 RGB."""
    pixels = driver.execute_script("""
        const v = document.querySelector('video[data-active="true"]');
        const c = document.createElement('canvas'); c.width = 128; c.height = 128;
        const g = c.getContext('2d'); g.drawImage(v, 0, 0, 128, 128);
        return Array.from(g.getImageData(0, 0, 128, 128).data);""")
    return np.asarray(pixels, dtype=np.int16).reshape(128, 128, 4)[..., :3]


def replying(driver: WebDriver, index: int) -> bool:
    """The ``index``-th avatar message (0: the greeting) has its first words."""
    messages = avatar_messages(driver)
    return len(messages) > index and messages[index]["text"] not in ("", "…")


def switched(driver: WebDriver, index: int, language: str) -> None:
    """After a language switch: the new conversation's greeting (avatar message ``index``) is in."""
    wait_for(lambda: phase(driver) == "ready" and len(avatar_messages(driver)) > index
             and avatar_messages(driver)[index]["lang"] == language, 30, f"the {language} conversation")


def problem_text(driver: WebDriver) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, ".problem")
    return found[0].text if found else ""


def choose_language(driver: WebDriver, code: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f'input[name="lang"][value="{code}"]').click()


def say(driver: WebDriver, text: str) -> None:
    box = driver.find_element(By.ID, "message")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)  # Enter sends


def open_page(driver: WebDriver, base: str) -> None:
    driver.get(f"{base}/avatar/")
    wait_for(lambda: phase(driver) == "ready", 60, "the page to connect")


def watch_playback(driver: WebDriver, seconds: float = 0.8) -> tuple[float, float, float]:
    """(currentTime before, after, largest pixel change) over ``seconds`` of playback."""
    before_time, before = active_video(driver)["time"], frame(driver)
    time.sleep(seconds)
    after_time, after = active_video(driver)["time"], frame(driver)
    return before_time, after_time, float(np.abs(after - before).max())


def cjk_share(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum("\u4e00" <= c <= "\u9fff" for c in letters) / max(1, len(letters))


def in_flight(runtime: str) -> dict[str, int]:
    stages = httpx.get(f"{runtime}/readyz", timeout=10, trust_env=False).json()["stages"]
    return {name: stage.get("in_flight", 0) for name, stage in stages.items()}


def test_a_conversation_in_english_spanish_and_mandarin_with_clips_that_play_and_a_stop(api_server, browser):
    with signaling(api_server) as base:
        open_page(browser, base)
        # The idle face: the greeting's first frame, shown before anyone speaks.
        idle = wait_for(lambda: active_video(browser), 30, "the idle face")
        assert idle["width"] == 256 and idle["paused"] and idle["error"] is None
        assert frame(browser).std() > 20  # a picture, not a black box
        greeting = avatar_messages(browser)[0]
        assert greeting["text"] and greeting["status"] == "done"
        shot(browser, "1_idle")

        # English, in the page's first conversation (auto: the reply follows the message's language).
        say(browser, "Hello! What do you do for a living?")
        wait_for(lambda: phase(browser) == "speaking", 120, "the English reply to play")
        before_time, after_time, change = watch_playback(browser)
        assert after_time > before_time + 0.3 and change > 25, (before_time, after_time, change)
        wait_for(lambda: phase(browser) == "ready", 120, "the English reply to end")
        english = avatar_messages(browser)[1]
        assert english["status"] == "done" and english["lang"] == "en" and len(english["text"]) > 3

        # Spanish: the toggle starts a conversation in Spanish (its greeting too), and the page's own
        # strings follow it. The reply's text appears as it is written, then its clips play gaplessly.
        choose_language(browser, "es")
        assert browser.find_element(By.ID, "message").get_attribute("placeholder").startswith("Escribe")
        switched(browser, 2, "es")
        say(browser, "Hola, ¿qué haces en tu trabajo?")
        wait_for(lambda: phase(browser) == "thinking", 5, "thinking")
        wait_for(lambda: replying(browser, 3), 90, "the reply's first words")
        shot(browser, "2_es_text_streaming")
        wait_for(lambda: phase(browser) == "speaking", 120, "the avatar to speak")
        before_time, after_time, change = watch_playback(browser)
        assert after_time > before_time + 0.3, (before_time, after_time)  # currentTime advances
        assert change > 25, change  # and the frames change (the mouth, the head)
        shot(browser, "3_es_speaking")
        wait_for(lambda: phase(browser) == "ready", 120, "the reply to end")
        spanish = avatar_messages(browser)[3]
        assert spanish["status"] == "done" and spanish["lang"] == "es" and len(spanish["text"]) > 3
        played = active_video(browser)
        assert played["ended"] and played["time"] > 1.0  # every clip played, back to back, to the end

        # Mandarin.
        choose_language(browser, "zh")
        assert browser.find_element(By.CSS_SELECTOR, "button.send").get_attribute("aria-label") == "发送"
        switched(browser, 4, "zh")
        say(browser, "你好，你做什么工作？")
        wait_for(lambda: phase(browser) == "speaking", 180, "the Mandarin reply to play")
        before_time, after_time, change = watch_playback(browser)
        assert after_time > before_time + 0.3 and change > 25, (before_time, after_time, change)
        wait_for(lambda: phase(browser) == "ready", 120, "the Mandarin reply to end")
        mandarin = avatar_messages(browser)[5]
        assert mandarin["status"] == "done" and mandarin["lang"] == "zh"
        assert cjk_share(mandarin["text"]) >= 0.6, mandarin["text"]  # written in Chinese characters
        shot(browser, "4_zh_reply")

        # Stop mid-reply: the reply ends where it was, the video pauses, and the runtime frees its stages.
        say(browser, "请给我讲一个关于你的工作、你的城市和你的朋友的长故事。")
        wait_for(lambda: replying(browser, 6), 90, "the reply to begin")
        assert avatar_messages(browser)[6]["status"] == "streaming"
        browser.find_element(By.CSS_SELECTOR, "button.stop").click()
        wait_for(lambda: avatar_messages(browser)[6]["status"] == "stopped", 5, "the reply to stop")
        assert phase(browser) == "ready"
        paused = browser.execute_script("return [...document.querySelectorAll('video')].map(v => v.paused)")
        assert all(paused)
        assert not browser.find_element(By.CSS_SELECTOR, "button.stop").is_enabled()
        wait_for(lambda: not any(in_flight(api_server).values()), 5, "the runtime to cancel the reply")
        stopped_text = avatar_messages(browser)[6]["text"]
        time.sleep(1.0)
        assert avatar_messages(browser)[6]["text"] == stopped_text  # nothing more arrives
        shot(browser, "5_zh_stopped")
        # Nothing is stuck: the box takes the next message.
        browser.find_element(By.ID, "message").send_keys("好")
        assert browser.find_element(By.CSS_SELECTOR, "button.send").is_enabled()
        transcript = browser.find_elements(By.CSS_SELECTOR, ".transcript .msg")
        roles = [m.get_attribute("class").split()[1] for m in transcript]
        assert roles == ["avatar", "user", "avatar",  # English: greeting, question, reply
                     "avatar", "user", "avatar", "avatar", "user", "avatar", "user", "avatar"]

        # A phone screen: the face above the conversation, everything within the width.
        browser.set_window_size(390, 844)
        time.sleep(0.3)
        layout = browser.execute_script("""
            const r = s => document.querySelector(s).getBoundingClientRect();
            return {stage: r('.stage'), chat: r('.chat'), width: document.documentElement.scrollWidth,
                    view: window.innerWidth};""")
        assert layout["stage"]["bottom"] <= layout["chat"]["top"] and layout["width"] <= layout["view"]
        shot(browser, "6_phone")


def test_the_page_shows_waking_seconds_and_offers_retry_when_the_runtime_is_down(browser):
    dead = f"http://127.0.0.1:{_free_port()}"
    with signaling(dead, WAKE_TIMEOUT_S="4") as base:
        browser.get(f"{base}/avatar/")
        wait_for(lambda: phase(browser) == "waking", 10, "the waking state")
        status = browser.find_element(By.CSS_SELECTOR, ".status")
        wait_for(lambda: status.text in ("Waking up the avatar… 2 s", "Waking up the avatar… 3 s"), 10,
                 "the seconds to count")
        shot(browser, "7_waking")
        wait_for(lambda: phase(browser) == "error", 15, "the runtime to be reported down")
        alert = browser.find_element(By.CSS_SELECTOR, ".problem")
        assert "can’t be reached" in alert.text and "did not wake up" in alert.text
        shot(browser, "8_runtime_down")
        alert.find_element(By.CSS_SELECTOR, "button.retry").click()  # retry starts over: waking again
        wait_for(lambda: phase(browser) in ("connecting", "waking"), 10, "the retry")


def test_bad_input_on_the_page_is_explained_and_nothing_sticks(api_server, browser):
    with signaling(api_server, MAX_SESSIONS="1", MESSAGES_PER_MINUTE="2") as base:
        open_page(browser, base)
        # An oversized message: the runtime's 413, in words, with the message's size; the message goes back
        # into the box to be shortened, and the page stays ready.
        say(browser, "palabra " * 80)
        wait_for(lambda: "too long" in problem_text(browser), 20, "the 413")
        assert "the limit is 500" in problem_text(browser) and phase(browser) == "ready"
        box = browser.find_element(By.ID, "message")
        assert box.get_attribute("value") == "palabra " * 80
        assert [m["text"] for m in avatar_messages(browser)] == [avatar_messages(browser)[0]["text"]]
        assert not browser.find_elements(By.CSS_SELECTOR, ".msg.user")
        shot(browser, "9_too_long")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.DELETE)
        # Over the rate limit: the greeting and the oversized message used this minute's two.
        say(browser, "Hi")
        wait_for(lambda: "Please wait" in problem_text(browser), 20, "the 429")
        assert phase(browser) == "error"
        # A second visitor while the one conversation allowed is open: a friendly 503, with retry.
        first = browser.current_window_handle
        browser.switch_to.new_window("tab")
        browser.get(f"{base}/avatar/")
        wait_for(lambda: phase(browser) == "error", 20, "the full house")
        assert "many visitors" in browser.find_element(By.CSS_SELECTOR, ".problem").text
        assert browser.find_element(By.CSS_SELECTOR, ".problem button.retry").is_displayed()
        shot(browser, "10_too_many_sessions")
        browser.close()
        browser.switch_to.window(first)
