"""Headless Chromium for the Python suites that look at pages (tests/browser, and
tests/observability's dashboard drawing): Debian's chromium and chromedriver through
Selenium (Selenium Manager never runs), a fixed 1400x900 viewport, and the page's console
and network logs read back so that a test can assert nothing went wrong.

Screenshots go to $AGL_SCREENSHOTS_DIR (default target/screenshots). With
AGL_README_SCREENSHOTS=1 only the shots a test forces are written, by default to
docs/images: the README's images.
"""

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

from agltest import REPO

CHROMIUM = os.environ.get("AGL_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("AGL_CHROMEDRIVER", "/usr/bin/chromedriver")
README_MODE = os.environ.get("AGL_README_SCREENSHOTS") == "1"
SCREENSHOTS = Path(os.environ.get("AGL_SCREENSHOTS_DIR") or ("docs/images" if README_MODE else "target/screenshots"))
if not SCREENSHOTS.is_absolute():
    SCREENSHOTS = REPO / SCREENSHOTS
WINDOW = (1400, 900)


def missing_browser():
    """Why no browser can be started here, or None."""
    for path, variable in ((CHROMIUM, "AGL_CHROMIUM"), (CHROMEDRIVER, "AGL_CHROMEDRIVER")):
        if not os.access(path, os.X_OK):
            return f"{path} is not an executable (install Debian's chromium and chromium-driver, or set {variable})"
    return None


def png_size(path):
    """(width, height) of a PNG file, from its header."""
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n", path
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


class Browser:
    """Selenium's Chrome on Debian's headless Chromium and chromedriver."""

    def __init__(self):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="agl-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in (
            "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
            f"--window-size={WINDOW[0]},{WINDOW[1]}", "--no-proxy-server", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
            "--disable-background-networking", "--disable-component-update", "--lang=en-US",
            f"--user-data-dir={self.profile}",
        ):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.service = Service(executable_path=CHROMEDRIVER, log_output=subprocess.DEVNULL)
        self.driver = webdriver.Chrome(options=options, service=self.service)
        self.driver.set_page_load_timeout(30)
        # The viewport, not the window, is what a screenshot shows: make it exactly WINDOW.
        self._viewport(*WINDOW)
        self.shots = []
        self.allowed = []  # regexes of problems the current test expects (reset per test)
        # Start from a blank page and forget what the start-up tab (chrome://new-tab-page)
        # logged: its own fetches fail offline.
        self.driver.get("about:blank")
        self.problems()

    # -- what went wrong in the page --

    def problems(self):
        """Console errors and failed requests since the last call (the logs drain)."""
        found = []
        for entry in self.driver.get_log("browser"):
            if entry["level"] == "SEVERE" or "Uncaught" in entry["message"]:
                found.append(f"console {entry['level']}: {entry['message']}")
        urls = {}
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            method, params = message.get("method"), message.get("params", {})
            if method == "Network.requestWillBeSent":
                urls[params["requestId"]] = params["request"]["url"]
            elif method == "Network.responseReceived":
                response = params["response"]
                if response.get("status", 0) >= 400:
                    found.append(f"HTTP {response['status']} for {response['url']}")
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                # A request the page itself cancelled (a navigation away aborting a refresh
                # poll) is not a failure; anything else is.
                url = urls.get(params.get("requestId"), params.get("requestId"))
                found.append(f"request failed ({params.get('errorText')}"
                             f"{', ' + params['blockedReason'] if params.get('blockedReason') else ''}): {url}")
        return found

    def assert_clean(self, what, allow=()):
        """No problem since the last check, but those matching a regex of `allow` or of
        what this test allowed before (`self.allowed`)."""
        self.allowed.extend(allow)
        found = [p for p in self.problems() if not any(re.search(a, p) for a in self.allowed)]
        assert not found, f"{what}: " + "; ".join(found)

    # -- navigation --

    def open(self, url, name=None, force_shot=False, allow=()):
        """Loads url, waits for the document, saves a screenshot named `name`, and asserts
        that the page logged no console error and no request failed (but those matching a
        regex of `allow`)."""
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver.get(url)
        WebDriverWait(self.driver, 15).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )
        if name:
            self.shot(name, force=force_shot)
        self.assert_clean(f"loading {url}", allow)

    def shot(self, name, force=False):
        """Saves a screenshot as NAME.png (in README mode only when forced)."""
        if README_MODE and not force:
            return None
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        assert self.driver.save_screenshot(str(path)), f"no screenshot for {name}"
        self.shots.append(path)
        return path

    # -- the DOM --

    def find(self, css):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css, within=None):
        from selenium.webdriver.common.by import By

        return (within or self.driver).find_elements(By.CSS_SELECTOR, css)

    def wait(self, condition, what, timeout=15):
        """WebDriverWait(timeout).until(condition), with a readable failure. An element
        the page replaced or has not drawn yet (a live refresh) only means "not yet"."""
        from selenium.common.exceptions import (
            NoSuchElementException,
            StaleElementReferenceException,
            TimeoutException,
        )
        from selenium.webdriver.support.ui import WebDriverWait

        ignored = (NoSuchElementException, StaleElementReferenceException)
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1, ignored_exceptions=ignored).until(condition)
        except TimeoutException:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} at {self.driver.current_url}")

    def quit(self):
        self.driver.quit()

    def page_shot(self, name, force=False):
        """Saves the whole page as NAME.png, not only the viewport: for the shot the viewport
        grows to the document's height (WINDOW's width)."""
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self._viewport(WINDOW[0], max(WINDOW[1], height))
        try:
            return self.shot(name, force=force)
        finally:
            self._viewport(*WINDOW)

    def _viewport(self, width, height):
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False,
        })
