"""Headless Chromium for the browser tests: Debian's /usr/bin/chromium driven by Playwright.

`make install` installs the chromium package when it is missing; Playwright never downloads a
browser of its own here. Each person gets a browser context of their own (own storage, own
cookies), as on two machines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps trying to reach Google's services,
# which on a closed network slows start-up and fills the log.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts"
# Playwright's waits, in milliseconds: generous for a loaded 2-CPU machine, never a sleep.
WITHIN_MS = 15_000


class Browsers:
    """Opens pages, each in a context of its own; records every script error they raise and every
    URL they request."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.errors: list[str] = []
        # Every URL the pages asked for, WebSockets included, in order.
        self.requested: list[str] = []

    async def open(self, url: str) -> Page:
        context = await self.browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(WITHIN_MS)
        self.contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda error: self.errors.append(f"{url}: {error}"))
        page.on("console", lambda message: self._console(url, message))
        page.on("request", lambda request: self.requested.append(request.url))
        page.on("websocket", lambda socket: self.requested.append(socket.url))
        await page.goto(url)
        return page

    def _console(self, url: str, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"{url}: {message.text}")

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()


@pytest.fixture(scope="session")
def chromium_executable() -> Path:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: `make install` installs Debian's chromium package")
    return CHROMIUM


@pytest.fixture(scope="session")
async def chromium(chromium_executable: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium_executable), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def browsers(chromium: Browser) -> AsyncIterator[Browsers]:
    opened = Browsers(chromium)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go (gitignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
