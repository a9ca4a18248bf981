"""The web client (``GET /``) in a real headless Chromium, driven by selenium through chromedriver,
against ``twistd -n anygle`` run as a subprocess with its default limits and origins.

One browser serves the module; each page is a window of its own.  Every wait is for a condition
in the page's DOM (``body[data-state]``, ``body[data-conn]``, ``#call[data-rtc-state]``,
``#report-status[data-state]``, ``#partner-status[data-state]``), never a sleep.  A connection
is cut (RST, no close frame) by a proxy of the test's own (``tests/tcpcut.py``) on 127.0.0.2.
The screenshots (the video call, the phone layout) are saved under ``$ANYGLE_TEST_ARTIFACTS``
(default: the temp directory) and their paths printed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tests.harness import Instance, free_port, load_selfsigned, start_nginx, stop_process
from tests.tcpcut import TcpCut

pytestmark = pytest.mark.slow  # real processes: not in the fast loop

# No skip when Chromium is missing: .ci/install installs it, and a missing browser must fail.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT = 20.0  # generous deadline for any one condition; they hold within a second or two
ARTIFACTS = Path(os.environ.get("ANYGLE_TEST_ARTIFACTS") or tempfile.gettempdir())


def launch(profile: str, *flags: str, env: dict[str, str] | None = None) -> webdriver.Chrome:
    """Headless Chromium with a fake camera and microphone, its profile in ``profile``."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--use-fake-ui-for-media-stream",  # camera/microphone allowed without a prompt
        "--use-fake-device-for-media-stream",  # a synthetic camera and microphone
        "--window-size=1100,800",
        *flags,
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER, env=env), options=options)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    profile = tempfile.mkdtemp(prefix="anygle-chromium-")
    driver = launch(profile)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def anygle() -> Iterator[Instance]:
    """Default settings (limits, origins) except a 1 s stats push, to see the count change."""
    instance = Instance("--stats-interval=1", name="webclient").start()
    try:
        yield instance
    finally:
        instance.stop()


def stats(http_port: int) -> dict[str, Any]:
    """``GET /stats``; a 429 (the per-address budget: ``--rate-limit`` requests a minute, shared
    with the pages' own requests and handshakes) is waited out."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/stats", timeout=5) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            if e.code != 429 or time.monotonic() > deadline:
                raise
            time.sleep(1)


def wait_stats(http_port: int, condition: Callable[[dict[str, Any]], bool], what: str) -> None:
    """Poll ``/stats`` twice a second (not at the pages' 20 Hz: it has a per-minute budget)."""
    deadline = time.monotonic() + WAIT
    while not condition(stats(http_port)):
        if time.monotonic() > deadline:
            raise AssertionError(f"/stats did not get to: {what}")
        time.sleep(0.5)


class Page:
    """One browser window showing the web client."""

    def __init__(self, driver: webdriver.Chrome, handle: str) -> None:
        self.driver = driver
        self.handle = handle

    def focus(self) -> webdriver.Chrome:
        if self.driver.current_window_handle != self.handle:
            self.driver.switch_to.window(self.handle)
        return self.driver

    def find(self, css: str) -> Any:
        return self.focus().find_element(By.CSS_SELECTOR, css)

    def attr(self, css: str, name: str) -> str | None:
        return self.find(css).get_attribute(name)

    def text(self, css: str) -> str:
        return self.find(css).text

    def wait(self, condition: Callable[[], Any], what: str) -> Any:
        self.focus()
        return WebDriverWait(self.driver, WAIT, poll_frequency=0.05).until(
            lambda _: condition(), message=f"page did not get to: {what}"
        )

    def wait_state(self, state: str) -> None:
        self.wait(lambda: self.attr("body", "data-state") == state, f"state {state}")

    def start(self, mode: str = "text", interests: str = "", age: str = "adult") -> None:
        self.wait(lambda: self.attr("body", "data-conn") == "open", "connected")
        self.find(f"input[name=age][value={age}]").click()
        self.find(f"input[name=mode][value={mode}]").click()
        field = self.find("#interests")
        field.clear()
        field.send_keys(interests)
        self.find("#start").click()

    def press(self, *keys: str) -> None:
        self.focus().switch_to.active_element.send_keys(*keys)

    def lines(self, who: str) -> list[str]:
        return [e.text for e in self.focus().find_elements(By.CSS_SELECTOR, f"#log .{who} .text")]

    def js(self, script: str, *args: Any) -> Any:
        return self.focus().execute_script(script, *args)

    def send(self, text: str) -> None:
        self.find("#message").send_keys(text, Keys.ENTER)

    def rect(self, css: str) -> dict[str, float]:
        return self.js(
            "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
            "return {top: r.top, bottom: r.bottom, left: r.left, right: r.right};",
            css,
        )


@pytest.fixture
def pages(browser: webdriver.Chrome, anygle: Instance) -> Iterator[Callable[..., Page]]:
    """``open(url=...)`` -> a new window on the web client; all closed after the test, and the
    server has seen every one of them leave (so the next test starts with nobody online)."""
    home = browser.current_window_handle
    opened: list[str] = []

    def open_page(url: str | None = None) -> Page:
        browser.switch_to.new_window("window")
        opened.append(browser.current_window_handle)
        browser.get(url or f"http://127.0.0.1:{anygle.http_port}/")
        return Page(browser, browser.current_window_handle)

    yield open_page
    for handle in opened:
        browser.switch_to.window(handle)
        browser.close()
    browser.switch_to.window(home)
    deadline = time.monotonic() + WAIT
    while stats(anygle.http_port)["totalOnline"] and time.monotonic() < deadline:
        time.sleep(0.5)


def matched_pair(
    pages: Callable[..., Page],
    mode: str,
    interest: str,
    age: str = "adult",
    a: Page | None = None,
    url: str | None = None,
) -> tuple[Page, Page]:
    """Two pages chatting; ``a``: a page opened already (through a proxy, as a phone); ``url``:
    another server's page."""
    a = a or pages(url)
    # a's count comes from GET /stats when it connects; b's arrival reaches a only by `stats`
    a.wait(lambda: a.text("#online") == "1", "online count 1")
    b = pages(url)
    a.start(mode, interest, age)
    a.wait_state("searching")
    a.wait(lambda: "#1 in line" in a.text("#status"), "queue position shown")
    b.start(mode, interest, age)
    for page in (a, b):
        page.wait_state("chatting")

        def shared(p: Page = page) -> bool:
            return f"You both like {interest}" in p.text("#log")

        page.wait(shared, "shared interest")
    return a, b


def test_text_chat_typing_skip_and_next(pages, anygle):
    a, b = matched_pair(pages, "text", "chess")
    a.wait(lambda: a.text("#online") == "2", "online count 2 from the stats push")

    a.find("#message").send_keys("hello stranger")
    b.wait(lambda: b.find("#typing").is_displayed(), "typing indicator")
    a.find("#message").send_keys(Keys.ENTER)
    b.wait(lambda: b.lines("them") == ["hello stranger"], "a's message")
    b.wait(lambda: not b.find("#typing").is_displayed(), "typing indicator gone")
    assert a.lines("me") == ["hello stranger"]

    b.find("#message").send_keys("hi! how are you?")
    b.find("#send").click()
    a.wait(lambda: a.lines("them") == ["hi! how are you?"], "b's message")

    a.press(Keys.ESCAPE)  # skip: a searches again, b is told and may go next
    a.wait_state("searching")
    b.wait_state("ended")
    b.wait(lambda: "skipped you" in b.text("#log"), "partner_skipped shown")
    assert b.text("#skip").startswith("Next") and b.find("#message").get_attribute("disabled")
    b.press(Keys.ESCAPE)  # next
    b.wait_state("searching")
    # they skipped each other: the rematch cooldown keeps them apart, both wait in line
    b.wait(lambda: "in line" in b.text("#status"), "b's queue position")
    assert stats(anygle.http_port)["inQueue"] == 2


def test_a_teen_sees_the_safety_notices(pages):
    """The grey move reaches the teen with a notice the page shows; the next move ends the
    chat, and the page says why."""
    stranger, teen = matched_pair(pages, "text", "anime", age="teen")
    stranger.find("#message").send_keys("ur so mature for ur age honestly", Keys.ENTER)
    teen.wait(lambda: teen.lines("them") == ["ur so mature for ur age honestly"], "the message")
    teen.wait(lambda: "Heads up" in teen.text("#log .notice"), "the grooming notice shown")
    assert not stranger.focus().find_elements(By.CSS_SELECTOR, "#log .notice")
    stranger.find("#message").send_keys("is anyone else home with u rn?", Keys.ENTER)
    teen.wait(lambda: "We ended this chat" in teen.text("#log"), "the chat_ended notice shown")
    teen.wait_state("ended")
    stranger.wait_state("ended")
    assert teen.lines("them") == ["ur so mature for ur age honestly"]


def call_up(page: Page) -> None:
    """The WebRTC call is connected and the partner's (fake) camera is playing."""
    page.wait(lambda: page.attr("#call", "data-rtc-state") == "connected", "call up")
    script = "return document.getElementById('remote-video').videoWidth"
    page.wait(lambda: page.focus().execute_script(script) > 0, "the partner's video playing")


def test_video_call_connects_with_fake_camera(pages):
    a, b = matched_pair(pages, "video", "music")
    for page in (a, b):
        call_up(page)
    b.find("#message").send_keys("hi! nice to meet you", Keys.ENTER)
    a.wait(lambda: a.lines("them") == ["hi! nice to meet you"], "message during the call")
    a.find("#message").send_keys("likewise! what do you play?", Keys.ENTER)
    b.wait(lambda: b.lines("them") == ["likewise! what do you play?"], "the answer")
    a.find("#message").send_keys("I")  # b shows "Stranger is typing…" in the screenshot
    b.wait(lambda: b.find("#typing").is_displayed(), "typing indicator")
    path = ARTIFACTS / "anygle-web-client.png"
    b.focus().save_screenshot(str(path))
    print(f"web client screenshot: {path}")

    a.find("#toggle-camera").click()  # a turns its camera off: b is told
    b.wait(lambda: "camera off" in b.text("#remote-note"), "partner's camera off shown")
    a.press(Keys.ESCAPE)  # "I" is still in a's message box: the first Esc asks, the second skips
    a.wait(lambda: a.find("#skip-confirm").is_displayed(), "asked to press Esc again")
    a.press(Keys.ESCAPE)
    b.wait_state("ended")
    assert b.attr("#call", "data-rtc-state") == "closed"


def test_report_through_the_ui(pages):
    _, b = matched_pair(pages, "text", "travel")
    b.find("#report").click()
    b.wait(lambda: b.find("#report-dialog").is_displayed(), "report dialog")
    b.find("input[name=reason][value=spam]").click()
    b.find("#report-details").send_keys("keeps posting links")
    b.find("#report-send").click()
    b.wait(
        lambda: b.attr("#report-status", "data-state") in ("received", "error"),
        "an answer to the report",
    )
    if b.attr("#report-status", "data-code") == "UNKNOWN_TYPE":
        pytest.skip("this server does not know the `report` message yet")
    assert b.attr("#report-status", "data-state") == "received", b.text("#report-status")
    assert "received" in b.text("#report-status")
    b.find("#report-cancel").click()
    assert b.find("#report").get_attribute("disabled")  # one report per partner


ARABIC = "مرحبا! كيف حالك اليوم؟"
HEBREW = "שלום, מה שלומך?"


def test_right_to_left_text_and_times_on_screen(pages):
    """Each bubble and the input take their direction from their text (``dir="auto"``), and
    every message shows its time on screen, not only in a tooltip."""
    a, b = matched_pair(pages, "text", "languages")
    assert a.attr("#message", "dir") == "auto"
    a.send(ARABIC)
    b.wait(lambda: b.lines("them") == [ARABIC], "the Arabic message")
    b.send("hi! I only speak English, sorry")
    a.wait(lambda: a.lines("them") == ["hi! I only speak English, sorry"], "the English answer")
    direction = "return getComputedStyle(arguments[0]).direction"
    for page, who, expected in ((a, "me", "rtl"), (b, "them", "rtl"), (a, "them", "ltr")):
        bubble = page.find(f"#log .{who} .text")
        assert bubble.get_attribute("dir") == "auto"
        assert page.js(direction, bubble) == expected, (who, page.js(direction, bubble))
    a.find("#message").send_keys(HEBREW)
    assert a.js("return arguments[0].matches(':dir(rtl)')", a.find("#message"))
    for page in (a, b):
        times = page.focus().find_elements(By.CSS_SELECTOR, "#log .line:not(.system) .time")
        assert len(times) == 2
        for t in times:
            assert t.is_displayed() and re.search(r"\b\d{1,2}:\d{2}\b", t.text), t.text
            assert t.get_attribute("datetime")


def test_escape_with_an_unsent_draft_asks_first(pages):
    """Esc with a half-typed message does not skip at once (nor sends the draft on): it asks,
    typing on withdraws the question, a second Esc skips and clears the draft, so it never
    reaches the next stranger.  With nothing typed, Esc skips (or goes next) at once."""
    a, b = matched_pair(pages, "text", "poetry")
    a.find("#message").send_keys("roses are red")
    a.press(Keys.ESCAPE)
    a.wait(lambda: a.find("#skip-confirm").is_displayed(), "asked to press Esc again")
    assert "again" in a.text("#skip-confirm") and "cleared" in a.text("#skip-confirm")
    assert a.attr("body", "data-skip-armed") == "true"
    assert a.attr("body", "data-state") == "chatting"
    assert a.find("#message").get_attribute("value") == "roses are red"
    a.find("#message").send_keys(", violets")  # typing on: the question is withdrawn
    a.wait(lambda: not a.find("#skip-confirm").is_displayed(), "question withdrawn")
    assert a.attr("body", "data-state") == "chatting" and b.attr("body", "data-state") == "chatting"
    a.press(Keys.ESCAPE)
    a.wait(lambda: a.find("#skip-confirm").is_displayed(), "asked again")
    a.press(Keys.ESCAPE)
    a.wait_state("searching")
    b.wait_state("ended")
    assert a.find("#message").get_attribute("value") == ""
    assert not a.find("#skip-confirm").is_displayed()
    assert a.attr("body", "data-skip-armed") is None
    assert b.lines("them") == []  # the draft never went out
    b.press(Keys.ESCAPE)  # nothing typed: next at once
    b.wait_state("searching")
    assert a.text("#online") == "2"
    b.focus().get("about:blank")  # b leaves: a's count follows with the next push
    a.wait(lambda: a.text("#online") == "1", "online count 1 again")


def test_a_blocked_message_is_marked_not_sent_on_its_bubble(pages):
    """Moderation blocks one line to a teen (the chat goes on): the sender's own bubble of that
    line says "not sent", besides the warning; the lines before and after it do not."""
    stranger, teen = matched_pair(pages, "text", "minecraft", age="teen")
    lines = [
        "hey whats up",
        "dont tell ur parents about me ok? its our thing",
        "so what games do u play",
    ]
    stranger.send(lines[0])
    teen.wait(lambda: teen.lines("them") == lines[:1], "the first line")
    stranger.send(lines[1])
    stranger.wait(lambda: "Message not sent" in stranger.text("#log .warning"), "the warning")
    stranger.send(lines[2])
    teen.wait(lambda: teen.lines("them") == [lines[0], lines[2]], "the third line")
    assert stranger.lines("me") == lines
    marked = stranger.focus().find_elements(By.CSS_SELECTOR, "#log .me.not-sent")
    assert [m.find_element(By.CSS_SELECTOR, ".text").text for m in marked] == [lines[1]]
    label = marked[0].find_element(By.CSS_SELECTOR, ".label")
    assert label.is_displayed() and label.text.lower() == "not sent"
    assert not teen.focus().find_elements(By.CSS_SELECTOR, "#log .not-sent")


def test_phone_layout_at_360_px(pages):
    """A phone held upright (360x740 CSS px, mobile viewport): laid out for its width (the
    viewport meta), nothing wider than the screen (also not a long word), the video above
    the chat, the message box and Skip on screen in its lower half, under the thumb."""
    phone = pages()
    metrics = {"width": 360, "height": 740, "deviceScaleFactor": 2, "mobile": True}
    phone.focus().execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    phone.focus().refresh()
    assert phone.js("return innerWidth") == 360  # not a zoomed-out 980 px desktop page

    def fits() -> bool:
        return phone.js("return document.documentElement.scrollWidth <= innerWidth")

    assert fits(), "the start form is wider than the phone"
    _, other = matched_pair(pages, "video", "films", a=phone)
    other.send("look: https://example.com/" + "averyveryverylongpathwithoutanyspaces" * 4)
    phone.wait(lambda: len(phone.lines("them")) == 1, "a long word")
    phone.send("on my phone")
    assert fits(), "the chat is wider than the phone"
    height = phone.js("return innerHeight")
    call, log = phone.rect("#call"), phone.rect("#log")
    assert phone.find("#call").is_displayed() and call["bottom"] <= log["top"], (call, log)
    for css in ("#message", "#send", "#skip"):
        r = phone.rect(css)
        assert phone.find(css).is_displayed(), css
        assert 0 <= r["left"] and r["right"] <= 360, (css, r)
        assert height / 2 <= r["top"] and r["bottom"] <= height, (css, r, height)
    path = ARTIFACTS / "anygle-web-client-phone.png"
    phone.focus().save_screenshot(str(path))
    print(f"phone screenshot: {path}")


class CutNetwork:
    """The server's two ports mirrored on 127.0.0.2 by :class:`TcpCut` proxies: a page loaded
    from :attr:`url` is told the WebSocket's port and connects to it on the host it came from,
    so both its page and its WebSocket go through a proxy; :attr:`ws` cuts the WebSocket."""

    HOST = "127.0.0.2"

    def __init__(self, instance: Instance) -> None:
        self.ws = TcpCut(instance.ws_port, listen_host=self.HOST, listen_port=instance.ws_port)
        self.http = TcpCut(
            instance.http_port, listen_host=self.HOST, listen_port=instance.http_port
        )
        self.url = f"http://{self.HOST}:{instance.http_port}/"

    def close(self) -> None:
        self.ws.close()
        self.http.close()


@pytest.fixture
def network(anygle: Instance) -> Iterator[CutNetwork]:
    """Set up before ``pages`` (name it first), so the pages close through it cleanly."""
    net = CutNetwork(anygle)
    try:
        yield net
    finally:
        net.close()


def test_resume_after_the_connection_is_cut(network, pages, anygle):
    """A's connection is reset (no close frame: a phone changing networks) while B writes on;
    A writes too while it reconnects.  A takes its session back: the chat goes on in both
    pages, every message once and in order, and B saw "Stranger is reconnecting…" come and
    go."""
    a, b = matched_pair(pages, "text", "rowing", a=pages(network.url))
    a.send("a1: hi!")
    b.wait(lambda: b.lines("them") == ["a1: hi!"], "a1")
    b.send("b1: hello")
    a.wait(lambda: a.lines("them") == ["b1: hello"], "b1")
    assert (
        b.attr("#partner-status", "data-state") == ""
        and not b.find("#partner-status").is_displayed()
    )

    assert network.ws.cut(refuse=True) == 1  # and new connections are reset: no network
    a.wait(lambda: a.attr("body", "data-conn") == "reconnecting", "A reconnecting")
    assert a.find("#conn").is_displayed() and a.text("#conn") == "Reconnecting…"
    b.wait(lambda: b.attr("#partner-status", "data-state") == "away", "B told A is away")
    assert b.find("#partner-status").is_displayed()
    assert b.text("#partner-status") == "Stranger is reconnecting…"
    b.send("b2: are you there?")
    b.send("b3: hello??")
    a.send("a2: sorry, a tunnel")  # kept until the session is back
    assert "pending" in (a.attr("#log .me:last-child", "class") or "").split()
    assert (
        a.attr("body", "data-state") == "chatting" and a.attr("body", "data-conn") == "reconnecting"
    )

    network.ws.restore()
    a.wait(lambda: a.attr("body", "data-conn") == "open", "A back")
    them_a = ["b1: hello", "b2: are you there?", "b3: hello??"]
    a.wait(lambda: a.lines("them") == them_a, "what A missed")
    b.wait(lambda: b.lines("them") == ["a1: hi!", "a2: sorry, a tunnel"], "what A wrote away")
    b.wait(lambda: b.attr("#partner-status", "data-state") == "back", "B told A is back")
    assert not b.find("#partner-status").is_displayed()

    b.send("b4: welcome back")  # the chat goes on
    a.wait(lambda: a.lines("them") == [*them_a, "b4: welcome back"], "b4")
    a.send("a3: thanks")
    b.wait(lambda: b.lines("them") == ["a1: hi!", "a2: sorry, a tunnel", "a3: thanks"], "a3")
    assert a.lines("me") == ["a1: hi!", "a2: sorry, a tunnel", "a3: thanks"]
    assert b.lines("me") == ["b1: hello", "b2: are you there?", "b3: hello??", "b4: welcome back"]
    assert not a.focus().find_elements(By.CSS_SELECTOR, "#log .pending, #log .not-sent")
    for page in (a, b):
        assert page.attr("body", "data-state") == "chatting"
        assert "lost" not in page.text("#log") and "disconnected" not in page.text("#log")
    assert network.ws.forwarded == 2  # the first connection and the one that resumed
    wait_stats(
        anygle.http_port,
        lambda s: s["totalOnline"] == 2 and s["activeChats"] == 1,
        "the same two users in one chat",
    )


@pytest.fixture
def short_grace() -> Iterator[tuple[Instance, CutNetwork]]:
    """A server of its own that keeps a dropped session 2 s, mirrored on 127.0.0.2."""
    instance = Instance("--stats-interval=1", "--resume-grace=2", name="webclient-grace").start()
    net = CutNetwork(instance)
    try:
        yield instance, net
    finally:
        net.close()
        instance.stop()


def test_back_too_late_the_chat_is_lost(short_grace, pages):
    """A comes back after the server's grace: its resume is refused, the new connection is a
    new session, A is told the chat was lost (what it wrote meanwhile is marked not sent), and
    can go on with Next."""
    instance, network = short_grace
    a, b = matched_pair(
        pages,
        "text",
        "sailing",
        a=pages(network.url),
        url=f"http://127.0.0.1:{instance.http_port}/",
    )
    a.send("a1: hi!")
    b.wait(lambda: b.lines("them") == ["a1: hi!"], "a1")
    network.ws.cut(refuse=True)
    a.wait(lambda: a.attr("body", "data-conn") == "reconnecting", "A reconnecting")
    a.send("a2: still there?")
    b.wait(lambda: b.attr("#partner-status", "data-state") == "away", "B told A is away")
    b.wait_state("ended")  # the grace is over: partner_disconnected
    assert "disconnected" in b.text("#log") and not b.find("#partner-status").is_displayed()
    network.ws.restore()
    a.wait(lambda: a.attr("body", "data-conn") == "open", "A connected again")
    a.wait_state("ended")
    assert "chat was lost" in a.text("#log")
    assert a.lines("me") == ["a1: hi!", "a2: still there?"]
    marked = a.focus().find_elements(By.CSS_SELECTOR, "#log .me.not-sent .text")
    assert [m.text for m in marked] == ["a2: still there?"]
    assert b.lines("them") == ["a1: hi!"]
    a.press(Keys.ESCAPE)  # Next: a search of the new session
    a.wait(lambda: "#1 in line" in a.text("#status"), "searching again")


def test_through_nginx_own_origin_and_reconnect_after_a_drop(pages, anygle):
    """Behind the shipped nginx config the page connects to its own origin; when the proxy
    goes away (no close frame reaches either end) and comes back, the page reconnects (with
    backoff) and goes on searching: its session resumed, or a new one that joins again."""
    prefix = tempfile.mkdtemp(prefix="anygle-webclient-nginx-")
    port = free_port()
    upstreams = [(anygle.ws_port, anygle.http_port)]
    nginx = start_nginx(port, upstreams, prefix, WAIT)
    try:
        page = pages(f"http://127.0.0.1:{port}/")
        config = json.loads(page.attr('meta[name="anygle-config"]', "content") or "")
        assert config == {}, config  # proxied: not the listener's port but the page's origin
        page.start("text", "cooking")
        page.wait(lambda: "#1 in line" in page.text("#status"), "searching through nginx")

        stop_process(nginx)  # SIGTERM: nginx drops every connection at once
        page.wait(
            lambda: (
                page.attr("body", "data-conn") == "reconnecting"
                and "Reconnecting" in page.text("#conn")
            ),
            "the drop noticed, reconnecting",
        )
        assert page.attr("body", "data-state") == "searching"
        nginx = start_nginx(port, upstreams, prefix, WAIT)
        page.wait(lambda: page.attr("body", "data-conn") == "open", "reconnected")
        # one session (the old connection's, or a new one), in the queue with the same choices
        wait_stats(
            anygle.http_port,
            lambda s: s["totalOnline"] == 1 and s["inQueue"] == 1,
            "searching again after the reconnect",
        )
        assert page.attr("body", "data-state") == "searching"
    finally:
        stop_process(nginx)
        shutil.rmtree(prefix, ignore_errors=True)


HOST = "chat.anygle.test"  # mapped to 127.0.0.1 by the browser's resolver rules


def test_video_over_https_with_a_test_ca(anygle, tmp_path):
    """The shipped nginx TLS block in front of the server: two pages on a real host name (not
    localhost, which browsers would trust anyway) get camera access and see each other's
    video.  The test's own CA is trusted in the browser's certificate store (NSS)."""
    tls = tmp_path / "tls"
    load_selfsigned().write(str(tls), [HOST])  # a CA of the test's own, and a certificate
    home = tmp_path / "home"
    nssdb = f"sql:{home}/.pki/nssdb"
    (home / ".pki" / "nssdb").mkdir(parents=True)
    subprocess.run(["certutil", "-N", "-d", nssdb, "--empty-password"], check=True)
    trust = ["certutil", "-A", "-d", nssdb, "-t", "C,,", "-n", "anygle-test-ca"]
    subprocess.run([*trust, "-i", str(tls / "ca.pem")], check=True)

    port = free_port()
    upstreams = [(anygle.ws_port, anygle.http_port)]
    tls_files = (str(tls / "fullchain.pem"), str(tls / "privkey.pem"))
    nginx = start_nginx(port, upstreams, str(tmp_path / "nginx"), WAIT, tls=tls_files)
    driver = launch(
        str(tmp_path / "profile"),
        f"--host-resolver-rules=MAP {HOST} 127.0.0.1",
        env={**os.environ, "HOME": str(home)},
    )
    url = f"https://{HOST}:{port}/"
    try:

        def open_page(_: str | None = None) -> Page:
            driver.switch_to.new_window("window")
            driver.get(url)
            return Page(driver, driver.current_window_handle)

        a, b = matched_pair(open_page, "video", "hiking")
        for page in (a, b):
            assert page.focus().execute_script("return window.isSecureContext") is True
            assert page.focus().execute_script("return location.protocol") == "https:"
            call_up(page)
        hsts = a.focus().execute_async_script(
            "fetch('/health').then(r => arguments[0](r.headers.get('strict-transport-security')))"
        )
        assert hsts == "max-age=63072000"
    finally:
        driver.quit()
        stop_process(nginx)
