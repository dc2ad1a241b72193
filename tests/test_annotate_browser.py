"""The labelling site of ``clis annotate build`` in a real headless Chromium (Playwright).

What only a browser can check: the page runs under its strict CSP from ``file://`` with no
console error and no network request, boxes sit where the layout puts them, the keyboard
labels objects, the labels survive a reload, the export downloads a valid ``clis.labels/1``
file with the site block of the built site, an export imports back into a fresh browser, and
a malicious caption or label is shown as text (no script runs, no dialog opens).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from annotate_helpers import (
    Watched, chromium_available, export_labels, label_layout, label_with_keys, make_candidates, open_site,
)  # fmt: skip
from browser_helpers import chromium_session
from clis.annotate.labels import parse_time, read_labels
from clis.annotate.site import build_site

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
pytestmark = pytest.mark.skipif(not chromium_available(), reason="no Chromium (install Debian's chromium)")

MALICIOUS = "<img src=x onerror=alert(1)><script>alert('c')</script>\"&amp;"


browser = pytest.fixture(scope="module", name="browser")(chromium_session)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("annotate-site")
    examples = json.loads((Path(__file__).resolve().parent.parent / "examples" / "layouts.json").read_text())
    layouts = [layout for layout in examples if layout["id"] in ("chelsea", "coffee")]
    layouts.append({"id": "evil<i>\"'", "caption": MALICIOUS, "objects": [
        {"id": "o1", "label": MALICIOUS, "bbox": [0.25, 0.5, 0.5, 0.25]}]})
    cands, layouts_path = make_candidates(root, n=2, layouts=layouts)
    report = build_site(cands, layouts_path, root / "annot")
    return report


def progress(page) -> str:
    return page.locator("#progress").inner_text()


def answers(page, cand: int) -> list:
    """The pressed answer of each object row of candidate ``cand`` (0-based), None if unanswered."""
    rows = page.locator(f"#screen .cand >> nth={cand}").locator(".item")
    out = []
    for k in range(rows.count()):
        pressed = rows.nth(k).locator("button.answer[aria-pressed=true]")
        out.append(pressed.inner_text() if pressed.count() else None)
    return out


def test_label_reload_and_export(browser, site, tmp_path):
    watched = Watched(browser)
    page = watched.page
    try:
        open_site(watched, site.out, "alice")
        assert page.locator("#annotator").input_value() == "alice"
        assert progress(page) == f"0 / {site.objects} objects, 0 / 3 layouts"
        assert page.locator("#screen .caption").inner_text().startswith("a close-up of a tabby cat")
        # chelsea has four objects: y, p, n answer the first three of candidate 1, each moving the focus on.
        label_with_keys(page, ["y", "p", "n"])
        assert answers(page, 0) == ["yes", "partly", "no", None]
        assert page.locator("#screen .item.focused").count() == 1
        assert page.locator("#screen .cand >> nth=0").locator(".item >> nth=3").get_attribute("class").count("focused") == 1
        # j: candidate 2's first object (yes); back up three to candidate 1's eye-2 and clear it.
        label_with_keys(page, ["j", "y", "k", "k", "ArrowUp", "x", "2", "a"])
        assert answers(page, 0) == ["yes", "partly", None, None]
        assert answers(page, 1) == ["yes", None, None, None]
        label_with_keys(page, ["n", "n"])  # eye-2, then the focus moves on to nose-1
        assert answers(page, 0) == ["yes", "partly", "no", "no"]
        assert page.locator("#screen .best button[aria-pressed=true]").inner_text() == "2"
        assert page.locator("#screen .plausible button[aria-pressed=true]").inner_text().startswith("yes")
        assert progress(page) == f"5 / {site.objects} objects, 0 / 3 layouts"

        # Boxes sit where the layout says, placed from JS under the CSP (cat-1 is the whole image).
        frame = page.locator("#screen .cand >> nth=0").locator(".frame img").bounding_box()
        eye = page.locator("#screen .cand >> nth=0").locator(".box >> nth=1").bounding_box()
        assert abs(eye["x"] - (frame["x"] + 0.3 * frame["width"])) < 2
        assert abs(eye["width"] - 0.16 * frame["width"]) < 2
        assert abs(eye["y"] - (frame["y"] + 0.28 * frame["height"])) < 2

        # The labels and the position survive a reload.
        watched.reload()
        assert page.locator("#annotator").input_value() == "alice"
        assert progress(page) == f"5 / {site.objects} objects, 0 / 3 layouts"
        assert answers(page, 0) == ["yes", "partly", "no", "no"] and answers(page, 1) == ["yes", None, None, None]

        # The next layout, then the help.
        label_with_keys(page, ["]"])
        assert page.locator("#screen .layout-head .lid").inner_text() == "coffee"
        assert page.locator("#layout-items li.current").inner_text().strip().endswith("coffee")
        label_with_keys(page, ["?"])
        assert page.locator("#help").is_visible()
        label_with_keys(page, ["Escape"])
        assert not page.locator("#help").is_visible()
        label_with_keys(page, ["PageUp"])
        assert page.locator("#screen .layout-head .lid").inner_text() == "chelsea"

        data = export_labels(page, tmp_path / "alice.json")
        built = json.loads((site.out / "site.json").read_text())["site"]
        assert data["format"] == "clis.labels/1" and data["site"] == built
        assert data["annotators"] == ["alice"]
        chelsea = site.out / "data.js"
        images = [c["image"] for c in json.loads(chelsea.read_text()[len("window.CLIS_ANNOTATE = "):-2])["layouts"][0]["candidates"]]
        got = [(r["annotator"], r["layout_id"], r["image"], r["object_id"], r["label"]) for r in data["objects"]]
        assert got == [
            ("alice", "chelsea", images[0], "cat-1", "yes"), ("alice", "chelsea", images[0], "eye-1", "partly"),
            ("alice", "chelsea", images[0], "eye-2", "no"), ("alice", "chelsea", images[0], "nose-1", "no"),
            ("alice", "chelsea", images[1], "cat-1", "yes"),
        ]
        assert [(r["layout_id"], r["best"], r["plausible"]) for r in data["layouts"]] == [("chelsea", images[1], "yes")]
        for record in data["objects"] + data["layouts"]:
            assert parse_time(record["time"]).year >= 2024
        labels = read_labels([tmp_path / "alice.json"])  # a valid clis.labels/1 file
        assert len(labels.objects) == 5 and labels.site["id"] == site.site["id"]

        assert watched.console == [] and watched.dialogs == [] and watched.requests == []
    finally:
        watched.close()

    # A fresh browser (no stored labels) imports the export and shows the same answers.
    fresh = Watched(browser)
    try:
        open_site(fresh, site.out, "alice")
        assert progress(fresh.page) == f"0 / {site.objects} objects, 0 / 3 layouts"
        fresh.page.set_input_files("#import", str(tmp_path / "alice.json"))
        sync_api.expect(fresh.page.locator("#progress")).to_have_text(re.compile(r"^5 / "))
        assert answers(fresh.page, 0) == ["yes", "partly", "no", "no"]
        # Another annotator in the same browser starts with no labels; switching back finds them.
        fresh.page.fill("#annotator", "bob")
        fresh.page.press("#annotator", "Enter")
        fresh.page.locator("#screen").focus()
        assert progress(fresh.page).startswith("0 /")
        label_layout(fresh.page, ["n"], best=1, plausible="no", next_layout=False)
        bob = export_labels(fresh.page, tmp_path / "bob.json")
        assert bob["annotators"] == ["bob"] and [r["label"] for r in bob["objects"]] == ["no"]
        assert bob["layouts"][0]["plausible"] == "no"
        fresh.page.fill("#annotator", "alice")
        fresh.page.press("#annotator", "Enter")
        assert progress(fresh.page).startswith("5 /")
        assert fresh.console == [] and fresh.dialogs == [] and fresh.requests == []
    finally:
        fresh.close()


def test_malicious_strings_show_as_text(browser, site, tmp_path):
    watched = Watched(browser)
    page = watched.page
    try:
        open_site(watched, site.out, "mallory<b>")
        label_with_keys(page, ["]", "]"])
        assert page.locator("#screen .layout-head .lid").inner_text() == "evil<i>\"'"
        assert page.locator("#screen .caption").inner_text() == MALICIOUS
        assert page.locator("#screen .phrases b").inner_text() == MALICIOUS
        assert page.locator("#screen .box .tag").first.inner_text() == f"1 {MALICIOUS}"
        assert page.locator("script").count() == 2  # data.js and annotate.js only
        assert page.locator("#screen img").count() == 2  # the candidates; no injected <img>
        assert page.locator("#screen i").count() == 0
        # The last layout has one object per candidate: "u" finds the first layout not done.
        label_with_keys(page, ["y", "y", "1", "a", "u"])
        assert page.locator("#screen .layout-head .lid").inner_text() == "chelsea"
        assert page.locator("#layout-items li.done").count() == 1
        page.screenshot(path=str(tmp_path / "annotate.png"), full_page=True)
        data = export_labels(page, tmp_path / "m.json")
        assert data["annotators"] == ["mallory<b>"] and len(data["objects"]) == 2
        assert watched.console == [] and watched.dialogs == [] and watched.requests == []
    finally:
        watched.close()
