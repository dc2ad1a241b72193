"""`clis validate`, `--help` and `--version` as a user runs them: exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from PIL import Image

from clis import __version__

GOOD = [{"id": "tea", "caption": "a cup on a table", "objects": [
    {"id": "cup-1", "label": "cup", "bbox": [0.4, 0.3, 0.2, 0.2]},
    {"id": "table-1", "label": "table", "bbox": [0.1, 0.5, 0.8, 0.5]}],
    "relations": [{"subject": ["cup-1"], "relation": "on", "object": ["table-1"]}]}]


def run_clis(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", "from clis.cli import main; main()", *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=120,
    )


def test_help_and_version():
    version = run_clis("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"clis {__version__}"
    helped = run_clis("--help")
    assert helped.returncode == 0
    assert "validate" in helped.stdout and "models" in helped.stdout


def test_valid_file_exits_zero_with_summary(tmp_path):
    path = tmp_path / "layouts.json"
    path.write_text(json.dumps(GOOD))
    result = run_clis("validate", str(path), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["layouts"], summary["objects"], summary["relations"], summary["problems"]) == (1, 2, 1, 0)


def test_broken_files_exit_two_with_one_line_per_problem(tmp_path):
    broken = json.loads(json.dumps(GOOD))
    broken[0]["objects"][0]["bbox"] = [0.9, 0.3, 0.2, 0.2]
    broken[0]["relations"][0]["object"] = ["desk-1"]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    result = run_clis("validate", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    problem_lines = [line for line in result.stderr.splitlines() if ": field " in line]
    assert len(problem_lines) == 2
    assert all(line.startswith(f"{path}: layout 0 (id 'tea'): field ") for line in problem_lines)
    assert "invalid (2 problems)" in result.stderr

    latin = tmp_path / "latin.json"
    latin.write_bytes("[{\"caption\": \"caf\u00e9\"}]".encode("latin-1"))
    result = run_clis("validate", str(latin))
    assert result.returncode == 2 and "not valid UTF-8" in result.stderr and "Traceback" not in result.stderr

    result = run_clis("validate", str(tmp_path / "missing.json"))
    assert result.returncode == 2 and "file not found" in result.stderr


def test_validate_reports_unmatched_images(tmp_path):
    path = tmp_path / "layouts.json"
    path.write_text(json.dumps(GOOD + [{**GOOD[0], "id": "lonely"}]))
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (4, 4)).save(images / "tea_0.png")
    Image.new("RGB", (4, 4)).save(images / "other.png")
    result = run_clis("validate", str(path), "--images", str(images), "--json")
    assert result.returncode == 0
    summary = json.loads(result.stdout)
    assert summary["candidates"] == 1
    assert summary["layouts_without_candidates"] == ["lonely"]
    assert summary["unmatched_files"] == [str(images / "other.png")]


def test_wrong_types_are_one_line_not_a_crash(tmp_path):
    broken = json.loads(json.dumps(GOOD))
    broken[0]["relations"][0]["subject"] = [["cup-1"]]  # unhashable where an id belongs
    path = tmp_path / "types.json"
    path.write_text(json.dumps(broken))
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": 5, "annotations": [], "categories": []}))
    for file, line in [
        (path, f"{path}: layout 0 (id 'tea'): field relations[0].subject[0]: Input should be a valid string"),
        (coco, f"{coco}: top level: field images: expected a list, got int"),
    ]:
        result = run_clis("validate", str(file))
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and "report it" not in result.stderr
        assert line in result.stderr.splitlines()


def test_coco_images_without_annotations_are_a_warning(tmp_path):
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10},
                   {"id": 2, "file_name": "b.jpg", "width": 10, "height": 10}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
        "categories": [{"id": 1, "name": "dog"}]}))
    result = run_clis("validate", str(coco), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["warnings"] == 1
    assert f"warning: {coco}: skipped 1 of 2 images" in result.stderr


def test_validate_reports_listed_files_not_found_and_nested_orphans(tmp_path):
    path = tmp_path / "layouts.json"
    path.write_text(json.dumps([{**GOOD[0], "images": ["tea/0.png", "tea/missing.png"]}]))
    images = tmp_path / "images"
    (images / "tea" / "old").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(images / "tea" / "0.png")
    Image.new("RGB", (4, 4)).save(images / "tea" / "old" / "1.png")
    result = run_clis("validate", str(path), "--images", str(images), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["listed_files_not_found"] == [str(images / "tea" / "missing.png")]
    assert summary["unmatched_files"] == [str(images / "tea" / "old" / "1.png")]
    text = run_clis("validate", str(path), "--images", str(images))
    assert f"warning: {images / 'tea' / 'missing.png'}: listed in images of layout 'tea' but not found" in text.stderr
