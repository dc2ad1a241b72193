"""The built leaderboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

Checks what only a browser can: the page loads with no console errors and no network
request, the table has the expected rows, clicking a header re-sorts it, the scorer's
manifest opens from its summary, and a malicious label is shown as text (no script runs, no
dialog opens). A screenshot is saved in the test's
tmp folder.
"""

from __future__ import annotations

import os
import shutil

import pytest
from PIL import Image

from browser_helpers import CHROMIUM, chromium_available, chromium_session
from browser_helpers import Watched as BrowserPage
from leaderboard.config import LeaderboardConfig
from leaderboard.site import build_site

try:  # tests/ is a package (tests/__init__.py) in this checkout...
    from tests.test_leaderboard import GENERATORS, MALICIOUS, write_bench
except ImportError:  # ...or plain folder of modules with pytest's default rootdir-based imports
    from test_leaderboard import GENERATORS, MALICIOUS, write_bench

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
pytestmark = pytest.mark.skipif(
    not chromium_available(),
    reason=f"no Chromium at {CHROMIUM} (install Debian's chromium: apt-get install -y chromium)",
)


browser = pytest.fixture(scope="module", name="browser")(chromium_session)


class Watched(BrowserPage):
    """A leaderboard page, with the names of the compare board's rows at hand."""

    def __init__(self, browser):
        super().__init__(browser, width=1200, height=900)

    def names(self) -> list[str]:
        return self.page.locator("#board-compare tbody tr td.name").all_inner_texts()


@pytest.fixture()
def site(tmp_path):
    return build_site([write_bench(tmp_path)], tmp_path / "site", LeaderboardConfig(thumbnails=2))


def test_leaderboard_in_headless_chromium(browser, site, tmp_path):
    watched = Watched(browser)
    try:
        watched.open(site.index)
        by_clis = sorted(GENERATORS, key=lambda n: GENERATORS[n][0], reverse=True)
        assert watched.names() == by_clis
        header = watched.page.locator("#board-compare thead th", has_text="CLIS (mean)")
        assert header.get_attribute("aria-sort") == "descending"
        watched.page.screenshot(path=str(tmp_path / "leaderboard.png"), full_page=True)

        # Clicking a header re-sorts the table: CLIS-I first descending, then ascending.
        watched.page.locator("#board-compare thead th button", has_text="CLIS-I").click()
        by_clis_i = sorted(GENERATORS, key=lambda n: GENERATORS[n][3], reverse=True)
        assert by_clis_i not in (by_clis, list(reversed(by_clis)))  # the data can tell a real sort
        assert watched.names() == by_clis_i
        clis_i_header = watched.page.locator("#board-compare thead th", has_text="CLIS-I")
        assert clis_i_header.get_attribute("aria-sort") == "descending"
        assert header.get_attribute("aria-sort") in (None, "none")
        watched.page.locator("#board-compare thead th button", has_text="CLIS-I").click()
        assert watched.names() == list(reversed(by_clis_i))
        assert clis_i_header.get_attribute("aria-sort") == "ascending"
        watched.page.locator("#board-compare thead th button", has_text="Name").click()
        assert watched.names() == sorted(GENERATORS, key=str.lower)

        # The malicious generator name is text: it is visible as typed and no script ran.
        assert MALICIOUS in watched.names()
        assert watched.page.locator("script").count() == 1  # the sorter only

        # Nested provenance: dotted-key rows; the scorer's manifest opens from its summary.
        models = watched.page.locator("table.kv", has=watched.page.locator("caption", has_text="Models")).first
        assert models.locator("tr", has_text="layout.llm.spec").inner_text().split() == ["layout.llm.spec", "hf:tiny/lm"]
        scorer = watched.page.locator("details.scorer")
        scorer_row = scorer.locator("tr", has_text="weights.clis.layout")
        assert not scorer_row.is_visible()
        scorer.locator("summary").click()
        assert scorer_row.is_visible() and scorer_row.inner_text().split() == ["weights.clis.layout", "0.5"]
        assert scorer.locator("th", has_text=f"settings.{MALICIOUS}.margin").is_visible()  # a key shown as text
        assert "{'" not in watched.page.locator("body").inner_text()

        # A row page: its malicious instance label and caption are text too.
        watched.page.locator("#board-compare a", has_text="gligen").click()
        watched.page.wait_for_load_state("load")
        labels = watched.page.locator("table.instances tbody td:nth-child(4)").all_inner_texts()
        assert MALICIOUS in labels
        assert watched.page.locator("script").count() == 1
        assert watched.page.locator(".thumb img").count() == 4
        assert all(
            watched.page.evaluate("img => img.complete && img.naturalWidth > 0", img.element_handle())
            for img in watched.page.locator("img").all()
        )
        watched.page.screenshot(path=str(tmp_path / "row.png"), full_page=True)
        for shot in ("leaderboard.png", "row.png"):
            with Image.open(tmp_path / shot) as picture:
                assert picture.width >= 800 and picture.height >= 400
        if os.environ.get("CLIS_LEADERBOARD_SCREENSHOT"):
            shutil.copyfile(tmp_path / "leaderboard.png", os.environ["CLIS_LEADERBOARD_SCREENSHOT"])

        assert watched.console == []
        assert watched.dialogs == []
        assert watched.requests == []
    finally:
        watched.close()
