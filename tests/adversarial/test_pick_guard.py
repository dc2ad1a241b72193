"""``clis pick`` under attack: hostile or broken scores files and output paths (issue 12).

A scores file is data a user may have been sent: it must not make pick copy files that are not
candidates, put NaN or text into annotations.json, or leave a half-written dataset. Every
refusal is one line, exit 2, before the first image is copied; ``--out`` is built in a staging
folder, so a failed pick leaves an existing dataset exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from PIL import Image
from pycocotools.coco import COCO

from clis.formats import save_layouts
from clis.layout import Layout
from pipeline_helpers import run_cli

LAYOUTS = [
    Layout.model_validate(d)
    for d in [
        {"id": "tea", "caption": "a cup on a table", "objects": [
            {"id": "cup-1", "label": "cup", "bbox": [0.25, 0.5, 0.5, 0.25]},
            {"id": "table-1", "label": "table", "bbox": [0.0, 0.75, 1.0, 0.25]}]},
        {"id": "pets", "caption": "a cat", "objects": [{"id": "cat-1", "label": "cat", "bbox": [0.0, 0.0, 0.5, 0.5]}]},
    ]
]  # fmt: skip


def rec(layout_id, image, clis=70.0, score=80.0, **extra):
    objects = {"tea": ["cup-1", "table-1"], "pets": ["cat-1"]}.get(layout_id, ["x-1"])
    return {
        "layout_id": layout_id, "image": image, "clis": clis, "clis_i": clis, "clis_l": 70.0, "global": 30.0,
        "instances": [{"object_id": o, "score": score, "region": 25.0, "grounding": 80.0, "detection": None}
                      for o in objects],
        "error": None, **extra,
    }  # fmt: skip


GOOD = [rec("tea", "tea/0.png", 70.0), rec("tea", "tea/1.png", 75.0), rec("pets", "pets/0.png", 80.0)]


@pytest.fixture
def setup(tmp_path):
    """Candidates, layouts file, and a writer of scores files; returns a dict of paths."""
    cand = tmp_path / "cand"
    for record in GOOD:
        path = cand / record["image"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), (200, 100, 50)).save(path)
    layouts = save_layouts(LAYOUTS, tmp_path / "layouts.json")

    def scores(records, name="scores.jsonl"):
        path = tmp_path / name
        path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in records), encoding="utf-8")
        return path

    return {"tmp": tmp_path, "cand": cand, "layouts": layouts, "scores": scores, "out": tmp_path / "ds"}


def pick(setup, scores, capsys, *options, out=None):
    out = setup["out"] if out is None else out
    return run_cli(["pick", str(setup["cand"]), str(setup["layouts"]), "--scores", str(scores), "--out", str(out),
                    *options], capsys)  # fmt: skip


PROGRESS = re.compile(r"^(score|write)\s.*\d+/\d+ ")  # the progress bar's last frame


def assert_one_line_error(code, output, *parts):
    lines = [line for line in output.splitlines() if line.strip() and not PROGRESS.match(line)]
    assert code == 2, output
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Traceback" not in output and "unexpected" not in output, output
    for part in parts:
        assert part in lines[0], (part, output)


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the hash of its bytes (folders as "dir")."""
    return {
        str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }


def leftovers(setup) -> list[str]:
    return sorted(p.name for p in setup["tmp"].iterdir() if p.name.startswith(".ds."))


# -- item 8: only discovered candidates are copied ---------------------------------------------------


@pytest.mark.parametrize("where", ["outside", "passwd", "other-layout", "dotdot"])
def test_a_record_naming_a_file_that_is_not_a_candidate_is_refused_before_any_copy(setup, capsys, where):
    outside = setup["tmp"] / "private.png"
    Image.new("RGB", (64, 48), (1, 2, 3)).save(outside)
    image = {"outside": str(outside), "passwd": "/etc/passwd", "other-layout": "pets/0.png",
             "dotdot": "../private.png"}[where]  # fmt: skip
    # ranked first, so the old code copied it into dataset/images/
    scores = setup["scores"]([GOOD[0], rec("tea", image, 99.0), GOOD[2]])
    code, output = pick(setup, scores, capsys)
    assert_one_line_error(code, output, "scores.jsonl: line 2", "field 'image'", repr(image), "not a candidate",
                          "'tea'")  # fmt: skip
    assert not setup["out"].exists() and leftovers(setup) == []


def test_a_failed_pick_leaves_an_earlier_dataset_untouched(setup, capsys):
    code, output = pick(setup, setup["scores"](GOOD), capsys)
    assert code == 0, output
    before = tree(setup["out"])
    assert "images/tea_1.png" in before
    scores = setup["scores"]([*GOOD, rec("pets", "/etc/passwd", 99.0)], name="bad.jsonl")
    code, output = pick(setup, scores, capsys)
    assert_one_line_error(code, output, "bad.jsonl: line 4")
    assert tree(setup["out"]) == before and leftovers(setup) == []


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_write_failure_half_way_leaves_no_half_dataset(setup, capsys, monkeypatch, failure):
    import shutil

    code, output = pick(setup, setup["scores"](GOOD), capsys)
    assert code == 0, output
    before = tree(setup["out"])
    real_copy, copies = shutil.copyfile, []

    def copy_then_fail(src, dst, *args, **kwargs):
        copies.append(dst)
        if len(copies) == 2:
            raise failure
        return real_copy(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", copy_then_fail)
    code, output = pick(setup, setup["scores"](GOOD), capsys, "--top", "2")
    if isinstance(failure, OSError):
        assert_one_line_error(code, output, "No space left on device", "nothing was changed")
    else:
        assert code == 130, output
    assert len(copies) == 2 and tree(setup["out"]) == before and leftovers(setup) == []


def test_an_image_that_cannot_be_opened_is_dropped_before_anything_is_copied(setup, capsys):
    (setup["cand"] / "tea" / "1.png").write_bytes(b"not a png at all")
    code, output = pick(setup, setup["scores"](GOOD), capsys, "--top", "2")
    assert code == 0, output
    summary = json.loads((setup["out"] / "summary.json").read_text())
    broken = [d for d in summary["dropped_images"] if d["reason"] == "cannot open image"]
    assert [d["image"] for d in broken] == ["tea/1.png"] and "not an image file" in broken[0]["error"]
    assert sorted(p.name for p in (setup["out"] / "images").iterdir()) == ["pets_0.png", "tea_0.png"]


def test_the_python_api_copies_only_candidates(setup):
    from clis.errors import InputError
    from clis.pick import PickConfig, select, write_dataset

    selection = select([rec("tea", "/etc/passwd")], LAYOUTS, PickConfig())
    with pytest.raises(InputError, match="not a candidate"):
        write_dataset(selection, setup["out"], setup["cand"])
    assert not (setup["out"] / "images").exists()


# -- item 11: score fields are finite numbers --------------------------------------------------------


@pytest.mark.parametrize(
    "line, field",
    [
        ('"clis": NaN', "field 'clis'"),
        ('"clis": 1e309', "field 'clis'"),
        ('"clis": "high"', "field 'clis'"),
        ('"clis_l": true', "field 'clis_l'"),
        ('"global": [1]', "field 'global'"),
        ('"instances": [{"object_id": "cup-1", "score": "high"}]', "field 'instances[0].score'"),
        ('"instances": [{"object_id": "cup-1", "score": 50, "grounding": -Infinity}]', "field 'instances[0].grounding'"),
        ('"instances": [{"object_id": "cup-1", "region": {"a": 1}}]', "field 'instances[0].region'"),
        ('"instances": [{"object_id": "cup-1", "detection": 3}]', "field 'instances[0].detection'"),
        ('"instances": [{"object_id": 7}]', "field 'instances[0].object_id'"),
        ('"instances": ["cup-1"]', "field 'instances[0]'"),
        ('"instances": {"cup-1": 50}', "field 'instances'"),
        ('"error": 5', "field 'error'"),
    ],
)
def test_a_score_field_that_is_not_a_finite_number_is_refused(setup, capsys, line, field):
    bad = json.dumps(rec("tea", "tea/1.png", 75.0))[:-1] + ", " + line + "}\n"
    scores = setup["scores"]([GOOD[0], bad])
    code, output = pick(setup, scores, capsys)
    assert_one_line_error(code, output, "scores.jsonl: line 2", field)
    assert not setup["out"].exists()


def test_annotations_hold_only_finite_numbers_and_pycocotools_reads_them(setup, capsys):
    records = [rec("tea", "tea/0.png", 70), rec("tea", "tea/1.png", None, clis_l=None), GOOD[2]]
    records[1]["clis_i"] = 12.5  # ranked by clis_i when clis is null
    code, output = pick(setup, setup["scores"](records), capsys)
    assert code == 0, output
    text = (setup["out"] / "annotations.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    coco = COCO(str(setup["out"] / "annotations.json"))
    assert sorted(im["file_name"] for im in coco.loadImgs(coco.getImgIds())) == ["pets_0.png", "tea_0.png"]


# -- item 4: one image listed twice --------------------------------------------------------------------


def test_a_scores_file_listing_one_image_twice_is_refused(setup, capsys):
    scores = setup["scores"]([*GOOD, GOOD[1]])
    code, output = pick(setup, scores, capsys)
    assert_one_line_error(code, output, "scores.jsonl: line 4", "'tea/1.png'", "twice", "line 2")


def test_one_image_spelled_two_ways_is_refused_too(setup, capsys):
    scores = setup["scores"]([*GOOD, rec("tea", str(setup["cand"] / "tea" / "1.png"), 10.0)])
    code, output = pick(setup, scores, capsys)
    assert_one_line_error(code, output, "scores.jsonl: line 4", "twice", "line 2")


# -- item 22: unknown layout ids ----------------------------------------------------------------------------


def test_records_of_unknown_layouts_are_warned_about_once(setup, capsys):
    # Scores of a superset of the layouts are legitimate (pick from a filtered layouts file).
    scores = setup["scores"]([*GOOD, rec("gone", "gone/0.png"), rec("gone", "gone/1.png"), rec("x[/b]", "x.png")])
    code, output = pick(setup, scores, capsys)
    assert code == 0, output
    warnings = [line for line in output.splitlines() if "not in" in line and line.startswith("warning:")]
    assert len(warnings) == 1, output
    assert "3 records of 2 layouts" in warnings[0] and "'gone'" in warnings[0] and "line 4" in warnings[0]


def test_a_scores_file_of_other_layouts_only_is_refused(setup, capsys):
    scores = setup["scores"]([rec("gone", "gone/0.png"), rec("other", "other/0.png")])
    code, output = pick(setup, scores, capsys)
    assert_one_line_error(code, output, "scores.jsonl", "none of its 2 records", "layouts.json")
    assert not setup["out"].exists()


# -- item 17: output paths checked first, and locked ---------------------------------------------------------


def test_out_that_is_a_file_or_under_a_file_or_an_input_fails_before_any_work(setup, capsys, monkeypatch):
    import clis.cli.pick as cli_pick

    monkeypatch.setattr(cli_pick, "read_layouts", lambda *a, **k: pytest.fail("read the layouts first"))
    scores = setup["scores"](GOOD)
    a_file = setup["tmp"] / "file.txt"
    a_file.write_text("keep me")
    for out, part in [(a_file, "is a file"), (a_file / "ds", "is a file"), (setup["cand"], "same file as CANDIDATES"),
                      (scores, "is a file")]:  # fmt: skip
        code, output = pick(setup, scores, capsys, out=out)
        assert_one_line_error(code, output, "--out", part)
    assert a_file.read_text() == "keep me"


def test_out_holding_an_input_or_foreign_files_is_refused(setup, capsys):
    scores = setup["scores"](GOOD)
    # an earlier dataset whose images/ holds the candidates: replacing it would delete them
    (setup["out"] / "images").mkdir(parents=True)
    (setup["out"] / "summary.json").write_text("{}")
    for record in GOOD:
        path = setup["out"] / "images" / record["image"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48)).save(path)
    before = tree(setup["out"])
    code, output = run_cli(["pick", str(setup["out"] / "images"), str(setup["layouts"]), "--scores", str(scores),
                            "--out", str(setup["out"])], capsys)  # fmt: skip
    assert_one_line_error(code, output, "--out", "images")
    assert tree(setup["out"]) == before
    # a folder with a COCO file of the user's own, not an earlier pick output
    other = setup["tmp"] / "mine"
    other.mkdir()
    (other / "annotations.json").write_text('{"mine": true}')
    code, output = pick(setup, scores, capsys, out=other)
    assert_one_line_error(code, output, "annotations.json", "not an earlier clis pick output")
    assert (other / "annotations.json").read_text() == '{"mine": true}'


def test_a_second_writer_on_the_same_out_is_refused(setup, capsys):
    from clis.outputs import OutputLock

    with OutputLock(setup["out"]):
        code, output = pick(setup, setup["scores"](GOOD), capsys)
    assert_one_line_error(code, output, "another clis run is writing it")
    assert not setup["out"].exists()


def test_an_earlier_pick_output_is_replaced_and_other_files_in_it_are_kept(setup, capsys):
    code, output = pick(setup, setup["scores"](GOOD), capsys, "--top", "2")
    assert code == 0, output
    (setup["out"] / "notes.txt").write_text("mine")
    code, output = pick(setup, setup["scores"](GOOD), capsys)
    assert code == 0, output
    assert sorted(p.name for p in (setup["out"] / "images").iterdir()) == ["pets_0.png", "tea_1.png"]
    assert (setup["out"] / "notes.txt").read_text() == "mine" and leftovers(setup) == []


# -- items 14/15: plain text, and JSON that breaks Python's parser ------------------------------------------


def test_brackets_in_out_and_ids_print_literally(setup, capsys):
    out = setup["tmp"] / "ds[/x]no[red]such"
    code, output = pick(setup, setup["scores"](GOOD), capsys, out=out)
    assert code == 0, output
    assert f"dataset: {out / 'annotations.json'}" in output


HUGE_INT = '{"layout_id": "tea", "image": "tea/0.png", "clis": 1' + "0" * 5000 + "}"


@pytest.mark.parametrize("line", ["[" * 100_000 + "]" * 100_000, HUGE_INT], ids=["deep", "huge-int"])
def test_deep_or_huge_json_in_scores_is_one_line(setup, capsys, line):
    scores = setup["scores"]([GOOD[0], line + "\n"])
    code, output = pick(setup, scores, capsys)
    assert_one_line_error(code, output, "scores.jsonl: line 2")


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage\n", None], ids=["binary", "dev-zero"])
def test_binary_or_device_scores_file_is_one_line(setup, capsys, content):
    if content is None:
        scores = Path("/dev/zero")
    else:
        scores = setup["tmp"] / "bin.jsonl"
        scores.write_bytes(content)
    code, output = pick(setup, scores, capsys)
    assert_one_line_error(code, output, str(scores))


def test_inputs_are_never_modified(setup, capsys):
    scores = setup["scores"](GOOD)
    before = {p: tree(p) if p.is_dir() else p.read_bytes() for p in (setup["cand"], setup["layouts"], scores)}
    code, output = pick(setup, scores, capsys, "--top", "2")
    assert code == 0, output
    assert {p: tree(p) if p.is_dir() else p.read_bytes() for p in before} == before
