"""Headless Chromium for the browser tests (Debian's ``chromium``, driven by Playwright): the
launch settings and a page that records what a static site must never do (console errors,
page errors, dialogs, network requests)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

CHROMIUM = os.environ.get("CLIS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def chromium_available() -> bool:
    return shutil.which(CHROMIUM) is not None or Path(CHROMIUM).is_file()


class Watched:
    """A page (in its own browser context, so its own localStorage) with every console error or
    warning, page error, dialog and non-file request recorded. ``ready``: a selector the page
    shows once its script has run (None: the load event is enough)."""

    ready: Optional[str] = None

    def __init__(self, browser, context=None, width: int = 1300, height: int = 950):
        self.context = context if context is not None else browser.new_context(
            viewport={"width": width, "height": height}, accept_downloads=True
        )
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.page.on("dialog", self._dialog)
        self.page.on("request", self._request)

    def _request(self, request) -> None:
        if not request.url.startswith(("file://", "data:", "blob:")):
            self.requests.append(request.url)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, path: Path) -> None:
        self.page.goto(Path(path).resolve().as_uri())
        self.page.wait_for_load_state("load")
        if self.ready:
            self.page.wait_for_selector(self.ready)

    def reload(self) -> None:
        self.page.reload()
        self.page.wait_for_load_state("load")
        if self.ready:
            self.page.wait_for_selector(self.ready)

    def clean(self) -> bool:
        """No console error, page error, dialog or network request so far."""
        return not (self.console or self.dialogs or self.requests)

    def close(self) -> None:
        self.context.close()


def launch_chromium(playwright):
    """The headless Chromium the browser tests use (Debian's, at ``CHROMIUM``)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def chromium_session():
    """One headless Chromium for a test module (use as ``pytest.fixture(scope="module")(chromium_session)``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()
