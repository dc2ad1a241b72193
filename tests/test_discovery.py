"""Candidate discovery: every naming rule, ordering, and the orphan cases."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from clis.discovery import discover_candidates
from clis.errors import InputError
from clis.layout import Layout


def layout(layout_id: str, images: list[str] | None = None) -> Layout:
    return Layout(
        id=layout_id,
        caption="a dog",
        objects=[{"id": "dog-1", "label": "dog", "bbox": [0.1, 0.1, 0.5, 0.5]}],
        images=images,
    )


def touch_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)
    return path


def test_each_rule_and_the_orphans(tmp_path):
    root = tmp_path / "images"
    touch_image(root / "park.png")  # rule <id>.<ext>
    for k in (10, 2, 1):
        touch_image(root / "beach" / f"{k}.png")  # rule <id>/*.<ext>
    (root / "beach" / "notes.png.bak").write_bytes(b"x")  # not an image extension
    (root / "beach" / "manifest.json").write_text("{}")
    touch_image(root / "street_0.JPG")  # rule <id>_<k>.<ext>, any case
    touch_image(root / "street_11.jpg")
    touch_image(root / "street_3.jpg")
    touch_image(tmp_path / "elsewhere" / "shot.png")  # explicit list, absolute path
    touch_image(root / "listed" / "a.webp")  # explicit list, relative to the images folder
    touch_image(root / "stray.png")  # orphan at top level
    touch_image(root / "unknown_layout" / "0.png")  # orphan in a folder no layout owns
    touch_image(root / "street_x.png")  # '_x' is not a number: orphan

    layouts = [
        layout("park"),
        layout("beach"),
        layout("street"),
        layout("listed", images=[str(tmp_path / "elsewhere" / "shot.png"), "listed/a.webp"]),
        layout("empty"),
    ]
    found = discover_candidates(root, layouts)
    names = {k: [p.relative_to(tmp_path).as_posix() for p in v] for k, v in found.candidates.items()}
    assert names == {
        "park": ["images/park.png"],
        "beach": ["images/beach/1.png", "images/beach/2.png", "images/beach/10.png"],
        "street": ["images/street_0.JPG", "images/street_3.jpg", "images/street_11.jpg"],
        "listed": ["elsewhere/shot.png", "images/listed/a.webp"],
    }
    assert found.missing == ["empty"]
    assert [p.relative_to(root).as_posix() for p in found.orphans] == [
        "stray.png",
        "street_x.png",
        "unknown_layout/0.png",
    ]
    assert found.n_candidates == 9
    assert found.pairs()[0] == ("park", root / "park.png")


def test_exact_id_beats_numbered_rule(tmp_path):
    root = tmp_path / "images"
    touch_image(root / "a_1.png")
    touch_image(root / "a_2.png")
    found = discover_candidates(root, [layout("a"), layout("a_1")])
    assert found.candidates["a_1"] == [root / "a_1.png"]
    assert found.candidates["a"] == [root / "a_2.png"]
    assert found.orphans == []


def test_listed_file_is_not_also_counted_twice(tmp_path):
    root = tmp_path / "images"
    touch_image(root / "cat.png")
    found = discover_candidates(root, [layout("cat", images=["cat.png"])])
    assert found.candidates["cat"] == [root / "cat.png"]


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="images folder not found"):
        discover_candidates(tmp_path / "nope", [layout("a")])


def test_images_nested_below_a_layout_folder_are_orphans(tmp_path):
    # Rule 3 takes the files of images/<id>/ itself; deeper files match no rule and must be
    # reported, not silently skipped.
    root = tmp_path / "images"
    touch_image(root / "beach" / "0.png")
    touch_image(root / "beach" / "rejected" / "1.png")
    touch_image(root / "beach" / "a" / "b" / "2.png")
    found = discover_candidates(root, [layout("beach")])
    assert found.candidates == {"beach": [root / "beach" / "0.png"]}
    assert found.orphans == [root / "beach" / "a" / "b" / "2.png", root / "beach" / "rejected" / "1.png"]


def test_a_nested_file_listed_by_its_layout_is_no_orphan(tmp_path):
    root = tmp_path / "images"
    touch_image(root / "beach" / "keep" / "1.png")
    found = discover_candidates(root, [layout("beach", images=["beach/keep/1.png"])])
    assert found.candidates == {"beach": [root / "beach" / "keep" / "1.png"]} and found.orphans == []


def test_listed_file_that_does_not_exist_is_reported(tmp_path):
    root = tmp_path / "images"
    touch_image(root / "cat.png")
    found = discover_candidates(root, [layout("cat", images=["cat.png", "gone.png"]), layout("dog", images=["dog.png"])])
    assert found.not_found == [("cat", root / "gone.png"), ("dog", root / "dog.png")]
    # They stay candidates, so scoring records each as "file not found" and a resumed run
    # scores the file once it exists; the layout therefore is not one "without candidates".
    assert found.candidates["cat"] == [root / "cat.png", root / "gone.png"]
    assert found.missing == []
