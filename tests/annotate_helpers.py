"""Helpers shared by the tests of ``clis annotate`` (site, labels, browser, round trips).

- ``make_candidates`` builds a folder ``cands/<layout id>/0.png, 1.png, ...`` of N different
  candidates per layout from the example images (the original, a mirrored copy, a smaller
  copy, ...), and a layouts file to go with it;
- ``write_scores`` writes a hand-made scores.jsonl for such a folder, whose ``image`` strings are
  exactly what ``clis score CANDIDATES LAYOUTS`` writes, with the clis values you choose;
- ``Watched`` is a Playwright page that records console errors, page errors, dialogs and every
  request that is not a local file; ``launch_chromium`` starts the headless Chromium;
- ``open_site``, ``label_with_keys``, ``label_layout`` and ``export_labels`` drive a built site
  with the keyboard, as an annotator does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from PIL import Image, ImageOps

from browser_helpers import CHROMIUM, CHROMIUM_ARGS, chromium_available, launch_chromium  # noqa: F401
from browser_helpers import Watched as BrowserPage

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
def _variant(image: Image.Image, k: int) -> Image.Image:
    """The k-th candidate made of one example image: each differs in its pixels (so in its hash)."""
    kind = k % 4
    if kind == 0:
        out = image.copy()
    elif kind == 1:
        out = ImageOps.mirror(image)
    elif kind == 2:
        out = image.resize((max(8, image.width // 2), max(8, image.height // 2)))
    else:
        out = ImageOps.flip(image)
    if k >= 4:  # more than four: darker copies, still distinct
        out = out.point(lambda v, f=k: v * 4 // (f + 1))
    return out


def make_candidates(
    root: Path,
    n: int = 3,
    layout_ids: Optional[Iterable[str]] = None,
    layouts: Optional[list[dict]] = None,
    size: int = 96,
) -> tuple[Path, Path]:
    """Build ``root/cands/<layout id>/0.png .. <n-1>.png`` and ``root/layouts.json``.

    ``layouts``: the layout records to write (default: the example layouts, or those of
    ``layout_ids``). A layout whose id has no example image (a made-up or malicious id) gets
    the first example image. Images are shrunk to at most ``size`` px on their long side, to
    keep tests fast. Returns ``(candidates folder, layouts file)``.
    """
    root = Path(root)
    if layouts is None:
        layouts = json.loads((EXAMPLES / "layouts.json").read_text(encoding="utf-8"))
        if layout_ids is not None:
            wanted = list(layout_ids)
            layouts = [layout for layout in layouts if layout["id"] in wanted]
    examples = sorted((EXAMPLES / "images").glob("*.jpg"))
    cands = root / "cands"
    cands.mkdir(parents=True, exist_ok=True)
    for layout in layouts:
        source = EXAMPLES / "images" / f"{layout['id']}.jpg"
        with Image.open(source if source.is_file() else examples[0]) as opened:
            image = opened.convert("RGB")
        image.thumbnail((size, size))
        folder = cands / layout["id"]
        folder.mkdir(exist_ok=True)
        for k in range(n):
            _variant(image, k).save(folder / f"{k}.png")
    layouts_path = root / "layouts.json"
    layouts_path.write_text(json.dumps(layouts, ensure_ascii=False), encoding="utf-8")
    return cands, layouts_path


def write_scores(
    path: Path, candidates: Path, layouts_path: Path,
    clis: Callable[[str, int], Optional[float]] = lambda layout_id, k: 50.0 + k,
    instance: Callable[[str, int, str], Optional[float]] = lambda layout_id, k, object_id: 60.0,
) -> list[dict]:
    """Write a scores.jsonl for ``candidates`` as ``clis score CANDIDATES LAYOUTS`` would name
    them (``image`` = the discovered path as a string): ``clis(layout_id, k)`` is the clis of the
    layout's k-th candidate (also its clis_i), ``instance(layout_id, k, object_id)`` each
    instance's score. Returns the records."""
    from clis.discovery import discover_candidates
    from clis.formats import load_layouts

    layouts = load_layouts(layouts_path)
    discovery = discover_candidates(candidates, layouts)
    by_id = {layout.id: layout for layout in layouts}
    records = []
    for layout_id, paths in discovery.candidates.items():
        for k, image in enumerate(paths):
            value = clis(layout_id, k)
            records.append({
                "layout_id": layout_id, "image": str(image), "clis": value, "clis_i": value, "clis_l": 70.0,
                "global": 30.0, "error": None,
                "instances": [{"object_id": o.id, "label": o.label, "phrase": o.phrase, "bbox": o.bbox,
                               "region": None, "grounding": None, "detection": None,
                               "score": instance(layout_id, k, o.id)} for o in by_id[layout_id].objects],
            })  # fmt: skip
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return records


class Watched(BrowserPage):
    """A page of the labelling site: ready once its script marked the body."""

    ready = "body.ready"


def open_site(watched: Watched, site: Path, annotator: str = "alice") -> None:
    """Open ``site/index.html`` and, when the page asks who is labelling, answer ``annotator``."""
    watched.open(Path(site) / "index.html")
    page = watched.page
    if page.locator("#ask-annotator").is_visible():
        page.fill("#annotator-first", annotator)
        page.press("#annotator-first", "Enter")
        page.wait_for_selector("#ask-annotator", state="hidden")


def label_with_keys(page, keys: Sequence[str]) -> None:
    """Press each key in turn on the page (``"y"``, ``"PageDown"``, ``"3"``, ...), as the
    keyboard shortcuts of docs/annotate.md say."""
    page.locator("#screen").focus()
    for key in keys:
        page.keyboard.press(key)


def label_layout(page, answers: Sequence[str], best: Optional[int] = None, plausible: Optional[str] = None,
                 next_layout: bool = True) -> None:
    """Label the current layout: ``answers`` (``"yes"``/``"partly"``/``"no"``, or ``"y"``/``"p"``/``"n"``)
    go to its objects in order (candidate 1's objects, then candidate 2's, ...: each answer moves
    the focus to the next unanswered one); ``best`` is the 1-based candidate judged best,
    ``plausible`` ``"yes"``/``"no"``; then ``]`` goes to the next layout when ``next_layout``."""
    keys = [answer[0] for answer in answers]
    if best is not None:
        keys.append(str(best))
    if plausible is not None:
        keys.append({"yes": "a", "no": "z"}[plausible])
    if next_layout:
        keys.append("]")
    label_with_keys(page, keys)


def export_labels(page, dest: Path) -> dict:
    """Export with the ``e`` key, save the download at ``dest`` and return its JSON."""
    with page.expect_download() as info:
        page.keyboard.press("e")
    info.value.save_as(str(dest))
    return json.loads(Path(dest).read_text(encoding="utf-8"))
