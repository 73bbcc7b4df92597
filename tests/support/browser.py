"""A real headless Chromium (Debian's chromium + chromedriver) driven by Selenium from a
worker thread, and the ``console`` fixture: a daemon with its admin app and the console's
test catalog, and a browser on it. Screenshots land in ``tests/artifacts/console/``."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.daemon import ADMIN_TOKEN, RunningDaemon

SHOTS = Path(__file__).parent.parent / "artifacts" / "console"
CATALOG = """
flow_groups:
  - name: prompt
    max_attempts: 5
    flows:
      - {key: "2", name: tag, extra_tokens: {tagged: "yes"}}
routers:
  - {name: r, request_key_press: true, prompt: "sound:beep", press_1_timeout: 60,
     flow_group: prompt}
  - {name: bridged, request_key_press: false, buyers: [acme]}
buyers:
  - {name: acme, endpoint: "Local/acme@keypress-test-buyers/n"}
numbers:
  - {number: "18005550601", router: r}
  - {number: "18005550602", router: bridged}
"""


class Browser:
    """Selenium's blocking calls, each run in a worker thread."""

    def __init__(self, base: str) -> None:
        options = webdriver.ChromeOptions()
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                    "--window-size=1280,900", "--disable-dev-shm-usage"):
            options.add_argument(arg)
        options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
        self.driver = webdriver.Chrome(options=options, service=service)
        self.base = base

    async def run(self, work: Callable[[webdriver.Chrome], Any]) -> Any:
        return await asyncio.to_thread(work, self.driver)

    async def open(self, path: str) -> None:
        await self.run(lambda d: d.get(self.base + path))

    async def wait(self, condition: Any, timeout: float = 10.0) -> Any:
        return await self.run(lambda d: WebDriverWait(d, timeout).until(condition))

    async def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        await self.run(lambda d: d.save_screenshot(str(SHOTS / f"{name}.png")))

    async def fill(self, field: str, value: str) -> None:
        def work(d: webdriver.Chrome) -> None:
            element = d.find_element(By.ID, field)
            element.clear()
            element.send_keys(value)
        await self.run(work)

    async def click(self, css: str) -> None:
        """Click something that stays on the page (a checkbox, a button run by script)."""
        await self.run(lambda d: d.find_element(By.CSS_SELECTOR, css).click())

    async def submit(self, css: str, timeout: float = 10.0) -> None:
        """Click a submit button or a link and wait until a new page has loaded, so that
        the next wait reads the new page, never an element of the old one while it unloads
        (Chromium then answers "Node ... does not belong to the document", which Selenium's
        ``staleness_of`` does not expect). The old page is marked by a script variable; the
        new page is a fresh window object without it."""
        def loaded(d: webdriver.Chrome) -> bool:
            try:
                return bool(d.execute_script(
                    "return window.kpOldPage === undefined"
                    " && document.readyState === 'complete'"))
            except WebDriverException:  # the old page is going: ask again
                return False

        def work(d: webdriver.Chrome) -> None:
            d.execute_script("window.kpOldPage = true")
            d.find_element(By.CSS_SELECTOR, css).click()
            WebDriverWait(d, timeout, poll_frequency=0.05).until(loaded)
        await self.run(work)

    def close(self) -> None:
        self.driver.quit()


@pytest.fixture
async def console(daemon_factory: Any) -> AsyncIterator[tuple[RunningDaemon, Browser]]:
    kp: RunningDaemon = await daemon_factory(admin=True)
    await kp.load(CATALOG)
    assert kp.daemon.admin is not None
    browser = await asyncio.to_thread(Browser, kp.daemon.admin.url)
    try:
        yield kp, browser
    finally:
        await asyncio.to_thread(browser.close)


async def log_in(browser: Browser) -> None:
    await browser.open("/console/login")
    await browser.fill("token", ADMIN_TOKEN)
    await browser.submit("main button[type=submit]")
    await browser.wait(ec.presence_of_element_located((By.ID, "calls-now")))
