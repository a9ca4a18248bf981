"""The web client (``GET /``) in a real headless Chromium, driven by selenium through chromedriver,
against ``twistd -n anygle`` run as a subprocess with its default limits and origins.

One browser serves the module; each page is a window of its own.  Every wait is for a condition
in the page's DOM (``body[data-state]``, ``body[data-conn]``, ``#call[data-rtc-state]``,
``#report-status[data-state]``), never a sleep.  The video call's screenshot is saved under
``$ANYGLE_TEST_ARTIFACTS`` (default: the temp directory) and its path printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
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
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/stats", timeout=5) as r:
        return json.load(r)


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
        time.sleep(0.1)


def matched_pair(
    pages: Callable[..., Page], mode: str, interest: str, age: str = "adult"
) -> tuple[Page, Page]:
    a = pages()
    # a's count comes from GET /stats when it connects; b's arrival reaches a only by `stats`
    a.wait(lambda: a.text("#online") == "1", "online count 1")
    b = pages()
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


def test_through_nginx_own_origin_and_reconnect_after_a_drop(pages, anygle):
    """Behind the shipped nginx config the page connects to its own origin; when the proxy
    goes away and comes back, the page reconnects (with backoff) and searches again."""
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
                page.attr("body", "data-conn") == "closed"
                and "Reconnecting in" in page.text("#conn")
            ),
            "the drop noticed, a reconnect planned",
        )
        assert page.attr("body", "data-state") == "searching"
        nginx = start_nginx(port, upstreams, prefix, WAIT)
        page.wait(lambda: page.attr("body", "data-conn") == "open", "reconnected")
        # the old connection is gone and the new one is in the queue with the same choices
        page.wait(
            lambda: (s := stats(anygle.http_port))["totalOnline"] == 1 and s["inQueue"] == 1,
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

        def open_page() -> Page:
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
