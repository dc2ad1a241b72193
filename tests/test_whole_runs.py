"""One bad layout never stops a run: every command runs the valid layouts of a file and turns
each invalid one into error records naming file, record and field (exit 1); ``--strict`` and a
file with no valid layout exit 2. ``clis score-layouts`` writes line by line and resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from clis.cli import app
from clis.formats import read_layouts, validate_file
from clis.errors import LayoutFileError

runner = CliRunner()

CAT = {"id": "cat-1", "label": "cat", "bbox": [0.1, 0.1, 0.5, 0.5]}
CUP, TABLE = [0.4, 0.3, 0.2, 0.2], [0.1, 0.5, 0.8, 0.5]
GOOD_A = {"id": "a", "caption": "a cat", "objects": [CAT]}
# x + w = 1.5: outside the canvas
BAD_BOX = {"id": "b", "caption": "a cat", "objects": [{**CAT, "bbox": [0.5, 0.1, 1.0, 0.5]}]}
GOOD_C = {"id": "c", "caption": "a cup on a table", "objects": [
    {"id": "cup-1", "label": "cup", "bbox": CUP}, {"id": "table-1", "label": "table", "bbox": TABLE}],
    "relations": [{"subject": ["cup-1"], "relation": "on", "object": ["table-1"]}]}
DUPLICATE_A = {**GOOD_A, "caption": "another"}
MIXED = [GOOD_A, BAD_BOX, GOOD_C, DUPLICATE_A, 7]


def write(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def mixed(tmp_path) -> tuple[Path, Path]:
    """A layouts file of 2 valid and 3 invalid records, and candidates for a, b (two) and c."""
    images = tmp_path / "images"
    (images / "b").mkdir(parents=True)
    for name, colour in (("a.png", "red"), ("b/0.png", "green"), ("b/1.png", "blue"), ("c.png", "white")):
        Image.new("RGB", (96, 80), colour).save(images / name)
    return images, write(tmp_path / "layouts.json", MIXED)


def test_read_layouts_keeps_the_valid_and_names_each_invalid(mixed):
    _, layouts = mixed
    report = read_layouts(layouts)
    assert [layout.id for layout in report.layouts] == ["a", "c"]
    assert [(bad.index, bad.layout_id) for bad in report.invalid] == [(1, "b"), (3, None), (4, None)]
    box, duplicate, not_object = (bad.error for bad in report.invalid)
    assert box.startswith(f"{layouts}: layout 1 (id 'b'): field objects[0].bbox: ") and "ends outside" in box
    assert duplicate == f"{layouts}: layout 3 (id 'a'): field id: duplicate layout id 'a' (first used by layout 0)"
    assert not_object == f"{layouts}: layout 4: expected an object, got int"
    assert [type(entry).__name__ for entry in report.in_file_order()] == [
        "Layout", "InvalidLayout", "Layout", "InvalidLayout", "InvalidLayout"]
    # validate stays strict: the same three problems, nothing dropped
    assert validate_file(layouts).problems == [box, duplicate, not_object]


def test_read_layouts_refuses_strict_no_valid_layout_and_broken_files(tmp_path):
    with pytest.raises(LayoutFileError, match="ends outside"):
        read_layouts(write(tmp_path / "mixed.json", [GOOD_A, BAD_BOX]), strict=True)
    with pytest.raises(LayoutFileError, match=r"\(and 1 more problems\)"):
        read_layouts(write(tmp_path / "none.json", [BAD_BOX, 7]))
    with pytest.raises(LayoutFileError, match="invalid JSON"):
        (tmp_path / "broken.json").write_text("[{", encoding="utf-8")
        read_layouts(tmp_path / "broken.json")


def test_coco_image_with_a_bad_annotation_is_one_invalid_layout(tmp_path):
    coco = {
        "images": [{"id": 1, "file_name": "one.jpg", "width": 100, "height": 100},
                   {"id": 2, "file_name": "two.jpg", "width": 100, "height": 100}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
                        {"id": 2, "image_id": 2, "category_id": 5, "bbox": [10, 10, 20, 20]}],
        "categories": [{"id": 1, "name": "dog"}],
    }
    report = read_layouts(write(tmp_path / "coco.json", coco))
    assert [layout.id for layout in report.layouts] == ["one"]
    assert [(bad.layout_id, bad.error) for bad in report.invalid] == [
        ("two", f"{tmp_path / 'coco.json'}: annotations[1]: field category_id: unknown category 5")]


def _score(images: Path, layouts: Path, out: Path, tiny_models: dict, *extra: str):
    return runner.invoke(app, ["score", str(images), str(layouts), "--out", str(out), "--image-model",
                               tiny_models["hf_clip"], "--detector", "none", "--no-layout-score", "-q", *extra])


def test_score_runs_every_valid_layout_and_records_each_invalid_one(mixed, tiny_models, tmp_path):
    images, layouts = mixed
    out = tmp_path / "scores.jsonl"
    result = _score(images, layouts, out, tiny_models)
    assert result.exit_code == 1, result.output
    assert "3 layouts are invalid and got error records" in result.output
    records = read_jsonl(out)
    # file order: a, b's two candidates, c, then the two records without a usable id
    assert [(r["layout_id"], Path(r["image"]).name if r["image"] else None) for r in records] == [
        ("a", "a.png"), ("b", "0.png"), ("b", "1.png"), ("c", "c.png"), ("record 3", None), ("record 4", None)]
    assert [r["error"] is None for r in records] == [True, False, False, True, False, False]
    assert all(r["clis"] is not None for r in records if r["error"] is None)
    bad = records[1]["error"]
    assert bad.startswith(f"invalid layout: {layouts}: layout 1 (id 'b'): field objects[0].bbox:")
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    assert manifest["run"]["orphan_images"] == []  # b's images are claimed, not orphans


def test_score_resume_keeps_the_valid_records_and_rewrites_invalid_ones(mixed, tiny_models, tmp_path):
    images, layouts = mixed
    out = tmp_path / "scores.jsonl"
    assert _score(images, layouts, out, tiny_models).exit_code == 1
    records = read_jsonl(out)
    records[0]["clis"] = 12.5  # a marker: a kept record is not scored again
    out.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    assert _score(images, layouts, out, tiny_models, "--resume").exit_code == 1
    again = read_jsonl(out)
    assert again[0]["clis"] == 12.5
    assert [r["layout_id"] for r in again] == [r["layout_id"] for r in records]


def test_score_strict_and_all_invalid_exit_2_before_loading_models(mixed, tmp_path):
    images, layouts = mixed
    out = tmp_path / "scores.jsonl"
    # a model path that does not exist: reaching the model loader would give another error
    args = ["score", str(images), str(layouts), "--out", str(out), "--image-model", str(tmp_path / "no-model")]
    result = runner.invoke(app, [*args, "--strict"])
    assert result.exit_code == 2 and "field objects[0].bbox" in result.output and "(and 2 more problems)" in result.output
    assert "[x, y, w, h]" in result.output  # the message is printed as text, not read as markup
    none_valid = write(tmp_path / "bad.json", [BAD_BOX])
    result = runner.invoke(app, ["score", str(images), str(none_valid), "--out", str(out)])
    assert result.exit_code == 2 and "ends outside" in result.output
    assert not out.exists()


def test_score_layouts_writes_an_error_row_for_the_bad_layout(mixed, tiny_models, tmp_path):
    _, layouts = mixed
    out = tmp_path / "layout_scores.jsonl"
    result = runner.invoke(app, ["score-layouts", str(layouts), "--out", str(out), "--llm", tiny_models["causal_lm"], "-q"])
    assert result.exit_code == 1, result.output
    rows = read_jsonl(out)
    assert [row["id"] for row in rows] == ["a", "b", "c", "record 3", "record 4"]
    assert [row["error"] is None for row in rows] == [True, False, True, False, False]
    assert rows[1]["error"].startswith(f"invalid layout: {layouts}: layout 1 (id 'b'): field objects[0].bbox:")
    assert rows[0]["clis_l"] == 50.0  # one object: the neutral score
    assert 0 <= rows[2]["clis_l"] <= 100
    strict = runner.invoke(app, ["score-layouts", str(layouts), "--out", str(tmp_path / "s.jsonl"),
                                 "--llm", tiny_models["causal_lm"], "--strict"])
    assert strict.exit_code == 2 and not (tmp_path / "s.jsonl").exists()


def test_score_layouts_resume_skips_finished_layouts(tiny_models, tmp_path):
    layouts = write(tmp_path / "layouts.json", [GOOD_A, GOOD_C])
    out = tmp_path / "layout_scores.jsonl"
    args = ["score-layouts", str(layouts), "--out", str(out), "--llm", tiny_models["causal_lm"], "-q"]
    assert runner.invoke(app, args).exit_code == 0
    first, second = read_jsonl(out)
    # As an interruption leaves it: c's line torn, a's carrying a marker value.
    out.write_text(json.dumps({**first, "clis_l": 12.5}) + "\n" + json.dumps(second)[:40], encoding="utf-8")
    assert runner.invoke(app, args).exit_code == 2  # exists: needs --resume or --overwrite
    result = runner.invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    again = read_jsonl(out)
    assert [row["id"] for row in again] == ["a", "c"]
    assert again[0]["clis_l"] == 12.5 and again[1] == second
    # a changed layout is scored again even on --resume
    moved = {**GOOD_C, "objects": [{**GOOD_C["objects"][0], "bbox": [0.0, 0.0, 0.2, 0.2]}, GOOD_C["objects"][1]]}
    write(layouts, [GOOD_A, moved])
    assert runner.invoke(app, [*args, "--resume"]).exit_code == 0
    assert read_jsonl(out)[0]["clis_l"] == 12.5 and read_jsonl(out)[1]["layout_key"] != second["layout_key"]
    # other settings: refused in one line, file untouched
    before = out.read_text(encoding="utf-8")
    refused = runner.invoke(app, [*args, "--resume", "--weights", "llm=1,geometry=0"])
    assert refused.exit_code == 2 and "other CLIS-L settings" in refused.output
    assert out.read_text(encoding="utf-8") == before


def test_score_layouts_keeps_finished_lines_when_interrupted(tiny_models, tmp_path, monkeypatch):
    from clis.layout_score import LayoutScorer

    layouts = write(tmp_path / "layouts.json", [GOOD_A, GOOD_C, {**GOOD_C, "id": "d"}])
    out = tmp_path / "layout_scores.jsonl"
    real = LayoutScorer.score_layouts
    calls = []

    def interrupt_on_third(self, layouts, progress=None):
        calls.append([layout.id for layout in layouts])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, layouts, progress=progress)

    monkeypatch.setattr(LayoutScorer, "score_layouts", interrupt_on_third)
    runner.invoke(app, ["score-layouts", str(layouts), "--out", str(out), "--llm", tiny_models["causal_lm"], "-q"])
    assert calls == [["a"], ["c"], ["d"]]  # one layout per call on the CPU
    assert [row["id"] for row in read_jsonl(out)] == ["a", "c"]


def test_pick_drops_invalid_layouts_with_their_reason(mixed, tiny_models, tmp_path):
    images, layouts = mixed
    scores = tmp_path / "scores.jsonl"
    _score(images, layouts, scores, tiny_models)
    out = tmp_path / "dataset"
    result = runner.invoke(app, ["pick", str(images), str(layouts), "--scores", str(scores), "--out", str(out),
                                 "--min-instance", "0", "--min-layout", "0"])
    assert result.exit_code == 1, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [(d["layout_id"], d["reason"]) for d in summary["dropped_images"]] == [
        ("b", "invalid layout"), ("b", "invalid layout"), ("record 3", "invalid layout"), ("record 4", "invalid layout")]
    assert [bad["index"] for bad in summary["invalid_layouts"]] == [1, 3, 4]
    kept = json.loads((out / "annotations.json").read_text())
    assert sorted(image["clis_layout_id"] for image in kept["images"]) == ["a", "c"]


def test_generate_makes_the_valid_layouts_and_records_the_invalid(mixed, tmp_path):
    _, layouts = mixed
    out = tmp_path / "candidates"
    result = runner.invoke(app, ["generate", str(layouts), "--generator", "shapes", "--n", "1", "--out", str(out),
                                 "--width", "64", "--height", "64"])
    assert result.exit_code == 1, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(item["layout_id"], item["status"]) for item in manifest["items"]] == [
        ("a", "done"), ("b", "error"), ("c", "done"), ("record 3", "error"), ("record 4", "error")]
    assert manifest["items"][1]["error"].startswith(f"invalid layout: {layouts}: layout 1 (id 'b')")
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["a", "c"]


def test_plan_goes_past_a_bad_concept_set(tmp_path):
    from clis.plan import read_concepts

    sets = read_concepts([["cat", "sofa"], {"concepts": []}, "dog"], "concepts.json", strict=False)
    assert [(s.labels, s.error) for s in sets] == [
        (["cat", "sofa"], None),
        ([], "concepts.json: concept set [1]: field 'concepts': expected a non-empty list of names"),
        (["dog"], None)]
    with pytest.raises(Exception, match=r"concept set \[1\]"):
        read_concepts([["cat"], {"concepts": []}], "concepts.json")
    with pytest.raises(Exception, match=r"\(and 1 more bad concept sets\)"):
        read_concepts([{"concepts": []}, 5], "concepts.json", strict=False)


def test_score_takes_precomputed_clis_l_and_refuses_other_settings(tiny_models, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a", "c"):
        Image.new("RGB", (96, 80), "red").save(images / f"{name}.png")
    layouts = write(tmp_path / "layouts.json", [GOOD_A, GOOD_C])
    clis_l_settings = write(tmp_path / "clis_l.json", {"llm": tiny_models["causal_lm"], "text_embedder": "none"})
    score_settings = write(tmp_path / "score.json", {"layout": {"llm": tiny_models["causal_lm"], "text_embedder": "none"}})
    precomputed = tmp_path / "layout_scores.jsonl"
    assert runner.invoke(app, ["score-layouts", str(layouts), "--out", str(precomputed), "--config", str(clis_l_settings),
                               "-q"]).exit_code == 0
    rows = read_jsonl(precomputed)
    base = ["score", str(images), str(layouts), "--image-model", tiny_models["hf_clip"], "--detector", "none",
            "--config", str(score_settings), "-q"]
    computed = tmp_path / "computed.jsonl"
    assert runner.invoke(app, [*base, "--out", str(computed)]).exit_code == 0
    # a marker in the file shows the value is read, not recomputed
    rows[1]["clis_l"] = 12.5
    precomputed.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    taken = tmp_path / "taken.jsonl"
    result = runner.invoke(app, [*base, "--out", str(taken), "--layout-scores", str(precomputed)])
    assert result.exit_code == 0, result.output
    by_computed, by_taken = read_jsonl(computed), read_jsonl(taken)
    assert by_taken[0]["clis_l"] == by_computed[0]["clis_l"] == 50.0  # one object: neutral
    assert by_taken[1]["clis_l"] == 12.5
    # clis = 0.5 * clis_i + 0.5 * clis_l (the default combination)
    assert by_taken[1]["clis"] == pytest.approx(0.5 * by_taken[1]["clis_i"] + 0.5 * 12.5, abs=1e-4)
    assert by_taken[1]["clis_i"] == by_computed[1]["clis_i"]

    other = write(tmp_path / "other.json", {"layout": {"llm": tiny_models["causal_lm"], "text_embedder": "none",
                                                       "weights": {"llm": 1.0, "geometry": 0.0}}})
    refused = runner.invoke(app, [*base[:-3], "--config", str(other), "--out", str(tmp_path / "x.jsonl"),
                                  "--layout-scores", str(precomputed)])
    assert refused.exit_code == 2
    assert "made with other CLIS-L settings: weights.llm is 8.0 there and 1.0 here" in refused.output
    moved = {**GOOD_C, "objects": [{**GOOD_C["objects"][0], "bbox": [0.0, 0.0, 0.2, 0.2]}, GOOD_C["objects"][1]]}
    write(layouts, [GOOD_A, moved])
    refused = runner.invoke(app, [*base, "--out", str(tmp_path / "y.jsonl"), "--layout-scores", str(precomputed)])
    assert refused.exit_code == 2 and "layout 'c': field layout_key: the line was scored from another version" in refused.output
    assert not (tmp_path / "x.jsonl").exists() and not (tmp_path / "y.jsonl").exists()
