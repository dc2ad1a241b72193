"""Issue 12 for `clis score`, `clis score-layouts` and `clis validate`: nothing the user gave is
lost, a second writer is refused, a resumed run notices changed layouts, and every hostile
input is one line with exit 2.

Each test was run against the code before its fix and failed there (the issue's numbers)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import pytest
from PIL import Image

from clis.layout import layout_sha256
from clis.outputs import OutputLock
from pipeline_helpers import run_cli


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _layouts(n: int = 3, caption: str = "a cup") -> list[dict]:
    return [{"id": f"l{i}", "caption": caption, "objects": [{"id": "cup", "label": "cup", "bbox": [0.1, 0.1, 0.5, 0.5]}]}
            for i in range(n)]


def _folder(tmp_path: Path, layouts: list[dict]) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    for layout in layouts:
        Image.new("RGB", (32, 32), "red").save(images / f"{layout['id']}.png")
    path = tmp_path / "layouts.json"
    path.write_text(json.dumps(layouts), encoding="utf-8")
    return images, path


def _score(images: Path, layouts: Path, out: Path, tiny_models: dict, *extra: str) -> list[str]:
    return ["score", str(images), str(layouts), "--out", str(out), "--image-model", tiny_models["hf_clip"],
            "--detector", "none", "--no-layout-score", "-q", *extra]


def _one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output and "unexpected" not in output, output
    return lines[0]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- 1. data loss ---------------------------------------------------------------------------------


def test_resume_into_the_layouts_file_itself_is_refused_and_leaves_it(tiny_models, tmp_path, capsys):
    # The case: one line without a trailing newline, once taken for a cut-off record.
    images, layouts = _folder(tmp_path, _layouts())
    before = _digest(layouts)
    code, output = run_cli(_score(images, layouts, layouts, tiny_models, "--resume"), capsys)
    assert code == 2 and "--out names the same file as LAYOUTS" in _one_error_line(output)
    assert _digest(layouts) == before


def test_resume_into_a_one_line_file_without_a_manifest_is_refused(tiny_models, tmp_path, capsys):
    images, layouts = _folder(tmp_path, _layouts())
    out = tmp_path / "notes.jsonl"
    out.write_text('{"my": "notes"}', encoding="utf-8")  # one line, no newline, no manifest
    code, output = run_cli(_score(images, layouts, out, tiny_models, "--resume"), capsys)
    assert code == 2 and "manifest.json: missing" in _one_error_line(output)
    assert out.read_text(encoding="utf-8") == '{"my": "notes"}'


def test_score_layouts_refuses_an_existing_out_and_its_own_input(tmp_path, capsys):
    _, layouts = _folder(tmp_path, _layouts())
    before = _digest(layouts)
    code, output = run_cli(["score-layouts", str(layouts), "--out", str(layouts), "--llm", "none", "-q"], capsys)
    assert code == 2 and "same file as LAYOUTS" in _one_error_line(output)
    other = tmp_path / "kept.jsonl"
    other.write_text("precious\n", encoding="utf-8")
    code, output = run_cli(["score-layouts", str(layouts), "--out", str(other), "--llm", "none", "-q"], capsys)
    assert code == 2 and "already exists" in _one_error_line(output)
    assert _digest(layouts) == before and other.read_text(encoding="utf-8") == "precious\n"


@pytest.mark.parametrize("csv_name", ["scores.jsonl", "scores.jsonl.manifest.json", "layouts.json"])
def test_csv_that_names_another_file_of_the_run_is_refused_before_scoring(tiny_models, tmp_path, capsys, csv_name):
    images, layouts = _folder(tmp_path, _layouts())
    before = _digest(layouts)
    out = tmp_path / "scores.jsonl"
    code, output = run_cli(_score(images, layouts, out, tiny_models, "--csv", str(tmp_path / csv_name)), capsys)
    assert code == 2 and "the same" in _one_error_line(output)
    assert not out.exists() and _digest(layouts) == before


def _a_folder(tmp_path: Path) -> Path:
    (tmp_path / "target").mkdir()
    return tmp_path / "target"


def _under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    return tmp_path / "afile" / "scores.jsonl"


@pytest.mark.parametrize("flag,target,message", [
    ("--out", _a_folder, "is a folder"),
    ("--csv", _a_folder, "is a folder"),
    ("--out", _under_a_file, "is a file, not a folder"),
    ("--csv", _under_a_file, "is a file, not a folder"),
    ("--out", lambda _: Path("/dev/full"), "not a regular file"),
])
def test_unusable_outputs_fail_before_any_model_loads(tmp_path, capsys, flag, target, message):
    images, layouts = _folder(tmp_path, _layouts())
    target = target(tmp_path)
    out = target if flag == "--out" else tmp_path / "scores.jsonl"
    args = ["score", str(images), str(layouts), "--out", str(out), "--image-model", "/no/such/model", "-q"]
    if flag == "--csv":
        args += ["--csv", str(target)]
    code, output = run_cli(args, capsys)
    line = _one_error_line(output)
    # The model path does not exist: had the run got that far, the error would name it.
    assert code == 2 and line.startswith(f"error: {flag} ") and message in line


def test_a_second_writer_on_the_same_out_is_refused(tiny_models, tmp_path, capsys):
    images, layouts = _folder(tmp_path, _layouts())
    out = tmp_path / "scores.jsonl"
    with OutputLock(out):  # stands for a run that is writing this file now
        code, output = run_cli(_score(images, layouts, out, tiny_models), capsys)
        assert code == 2 and "another clis run is writing it" in _one_error_line(output)
        code, output = run_cli(_score(images, layouts, out, tiny_models, "--overwrite"), capsys)
        assert code == 2 and "another clis run is writing it" in _one_error_line(output)
    assert not out.exists() or out.read_text() == ""
    code, _ = run_cli(_score(images, layouts, out, tiny_models), capsys)  # the lock went with its holder
    assert code == 0 and len(_records(out)) == 3
    assert not (tmp_path / ".scores.jsonl.lock").exists()


def test_resume_refuses_a_file_that_lists_one_image_twice(tiny_models, tmp_path, capsys):
    images, layouts = _folder(tmp_path, _layouts())
    out = tmp_path / "scores.jsonl"
    assert run_cli(_score(images, layouts, out, tiny_models), capsys)[0] == 0
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(lines + lines[:1]), encoding="utf-8")  # what two concurrent runs left
    before = _digest(out)
    code, output = run_cli(_score(images, layouts, out, tiny_models, "--resume"), capsys)
    assert code == 2 and "listed twice (first on line 1)" in _one_error_line(output)
    assert _digest(out) == before


def test_resume_rescores_layouts_that_changed_under_the_same_id(tiny_models, tmp_path, capsys):
    images, layouts = _folder(tmp_path, _layouts(3, caption="a cup"))
    out = tmp_path / "scores.jsonl"
    assert run_cli(_score(images, layouts, out, tiny_models), capsys)[0] == 0
    first = {r["layout_id"]: r for r in _records(out)}
    changed = _layouts(3, caption="a cup")
    changed[1]["caption"] = "a blue elephant on a bicycle"
    changed[2]["objects"][0]["bbox"] = [0.5, 0.5, 0.4, 0.4]
    layouts.write_text(json.dumps(changed), encoding="utf-8")
    code, output = run_cli(_score(images, layouts, out, tiny_models, "--resume"), capsys)
    assert code == 0, output
    assert "2 layouts changed since the earlier run" in output
    again = {r["layout_id"]: r for r in _records(out)}
    assert again["l0"] == first["l0"]  # kept as it was
    for layout_id, layout in (("l1", changed[1]), ("l2", changed[2])):
        from clis.layout import Layout

        assert again[layout_id]["layout_sha256"] == layout_sha256(Layout.model_validate(layout))
        assert again[layout_id]["layout_sha256"] != first[layout_id]["layout_sha256"]
    manifest = json.loads(Path(f"{out}.manifest.json").read_text(encoding="utf-8"))
    assert manifest["run"]["resumed"] == 1


def test_resume_with_half_of_the_layouts_is_refused_rather_than_dropping_records(tiny_models, tmp_path, capsys):
    images, layouts = _folder(tmp_path, _layouts(4))
    out = tmp_path / "scores.jsonl"
    assert run_cli(_score(images, layouts, out, tiny_models), capsys)[0] == 0
    before = _digest(out)
    half = tmp_path / "half.json"
    half.write_text(json.dumps(_layouts(2)), encoding="utf-8")
    code, output = run_cli(_score(images, half, out, tiny_models, "--resume"), capsys)
    line = _one_error_line(output)
    assert code == 2 and "holds records of 2 layouts" in line and "'l2'" in line
    assert _digest(out) == before


def test_score_layouts_resume_with_half_of_the_layouts_is_refused(tmp_path, capsys):
    _, layouts = _folder(tmp_path, _layouts(4))
    out = tmp_path / "layout_scores.jsonl"
    base = ["--llm", "none", "--text-embedder", "none", "-q"]
    assert run_cli(["score-layouts", str(layouts), "--out", str(out), *base], capsys)[0] == 0
    before = _digest(out)
    half = tmp_path / "half.json"
    half.write_text(json.dumps(_layouts(2)), encoding="utf-8")
    code, output = run_cli(["score-layouts", str(half), "--out", str(out), "--resume", *base], capsys)
    assert code == 2 and "'l2' is not in" in _one_error_line(output)
    assert _digest(out) == before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_marks_the_manifest_interrupted_and_says_so(tiny_models, tmp_path, capsys, monkeypatch, signum):
    from clis.scorer import Scorer

    images, layouts = _folder(tmp_path, _layouts(4))
    out = tmp_path / "scores.jsonl"
    real = Scorer._image_records  # the one seam every scoring run's records come through

    def signalled_after_the_first(self, candidates):
        for number, record in enumerate(real(self, candidates)):
            yield record
            if number == 0:
                os.kill(os.getpid(), signum)  # as `kill` or Ctrl-C would, mid-run

    monkeypatch.setattr(Scorer, "_image_records", signalled_after_the_first)
    code, output = run_cli(_score(images, layouts, out, tiny_models), capsys)
    assert code == 128 + signum
    assert output.count("interrupted (") == 1, output  # said once
    assert f"interrupted ({signal.Signals(signum).name}): the output written so far is kept" in output
    assert "Traceback" not in output
    manifest = json.loads(Path(f"{out}.manifest.json").read_text(encoding="utf-8"))
    assert manifest["run"]["status"] == "interrupted"
    assert len(_records(out)) == 1
    monkeypatch.setattr(Scorer, "_image_records", real)
    code, output = run_cli(_score(images, layouts, out, tiny_models, "--resume"), capsys)
    assert code == 0 and len(_records(out)) == 4
    assert signal.getsignal(signal.SIGTERM) is not None  # handlers were put back


# --- non-finite numbers and hostile files ---------------------------------------------------------


@pytest.mark.parametrize("extra,config,message", [
    (["--weight", "global=inf"], None, "--weight 'global=inf': 'inf' is not a finite number"),
    (["--weight", "layout=nan"], None, "is not a finite number"),
    ([], ("c.toml", "[weights]\nglobal = nan\n"), "weights.global: nan is not a finite number"),
    ([], ("c.yaml", "weights:\n  region: .inf\n"), "weights.region: inf is not a finite number"),
    ([], ("c.json", '{"weights": {"global": 1e999}}'), "too large for a float"),
    ([], ("c.json", '{"weights": {"global": NaN}}'), "non-finite number NaN"),
])
def test_non_finite_weights_are_refused(tiny_models, tmp_path, capsys, extra, config, message):
    images, layouts = _folder(tmp_path, _layouts(1))
    if config is not None:
        (tmp_path / config[0]).write_text(config[1], encoding="utf-8")
        extra = [*extra, "--config", str(tmp_path / config[0])]
    code, output = run_cli(_score(images, layouts, tmp_path / "s.jsonl", tiny_models, *extra), capsys)
    assert code == 2 and message in _one_error_line(output)
    assert not (tmp_path / "s.jsonl").exists()


def test_binary_config_is_one_line(tiny_models, tmp_path, capsys):
    images, layouts = _folder(tmp_path, _layouts(1))
    config = tmp_path / "c.json"
    config.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    code, output = run_cli(_score(images, layouts, tmp_path / "s.jsonl", tiny_models, "--config", str(config)), capsys)
    assert code == 2 and "not UTF-8 text (byte 0x89 at offset 0)" in _one_error_line(output)


@pytest.mark.parametrize("command", ["validate", "score", "score-layouts"])
@pytest.mark.parametrize("content,message", [
    ("[" * 100_000, "nested too deeply"),
    ('[{"id": "a", "objects": [{"id": "o", "label": "cup", "bbox": [0.1, 0.1, 0.5, ' + "1" * 5000 + "]}]}]",
     "more than 4300 digits"),
    ('[{"id": "a", "objects": [{"id": "o", "label": "cup", "bbox": [NaN, 0.1, 0.5, 0.5]}]}]', "non-finite number NaN"),
])
def test_hostile_json_is_one_line_for_every_layouts_reader(tiny_models, tmp_path, capsys, command, content, message):
    images, _ = _folder(tmp_path, _layouts(1))
    layouts = tmp_path / "hostile.json"
    layouts.write_text(content, encoding="utf-8")
    args = {"validate": ["validate", str(layouts)],
            "score": _score(images, layouts, tmp_path / "s.jsonl", tiny_models),
            "score-layouts": ["score-layouts", str(layouts), "--out", str(tmp_path / "l.jsonl"), "--llm", "none"]}
    code, output = run_cli(args[command], capsys)
    assert code == 2 and message in output and "Traceback" not in output and "unexpected" not in output
    if command != "validate":  # validate lists each problem, then its count
        _one_error_line(output)


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null", "/proc/self"])
def test_validate_refuses_what_is_not_a_regular_file(capsys, path):
    code, output = run_cli(["validate", path], capsys)
    assert code == 2 and ("not a regular file" in output or "is a folder" in output)


def test_an_oversized_layouts_file_is_refused_with_its_limit(tmp_path, capsys, monkeypatch):
    layouts = tmp_path / "big.json"
    layouts.write_text(json.dumps(_layouts(50)), encoding="utf-8")
    monkeypatch.setenv("CLIS_MAX_INPUT_BYTES", "1000")
    code, output = run_cli(["validate", str(layouts)], capsys)
    assert code == 2 and "over the 1,000-byte limit" in output


# --- what users type into ids, labels and paths ---------------------------------------------------


def test_markup_in_ids_and_paths_prints_literally(tiny_models, tmp_path, capsys):
    images, path = _folder(tmp_path, _layouts(1))
    layouts = [{**_layouts(1)[0], "id": "no[red]such[x]", "images": ["l0.png"]}]
    path.write_text(json.dumps(layouts), encoding="utf-8")
    out = tmp_path / "[bold]out[/bold]" / "s.jsonl"
    code, output = run_cli(["score", str(images), str(path), "--out", str(out), "--image-model", tiny_models["hf_clip"],
                            "--detector", "none", "--no-layout-score"], capsys)
    assert code == 0, output
    assert f"clis score -> {out}" in output.replace("\n", "")  # the table title, brackets and all
    assert _records(out)[0]["layout_id"] == "no[red]such[x]"
    missing = tmp_path / "no[red]such"
    code, output = run_cli(["score", str(missing), str(path), "--out", str(tmp_path / "t.jsonl")], capsys)
    assert code == 2 and "no[red]such: images folder not found" in _one_error_line(output)


def test_a_300_character_layout_id_fails_validation_not_the_scoring_run(tiny_models, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (32, 32), "red").save(images / "cand.png")
    layouts = [{**_layouts(1)[0], "id": "x" * 300, "images": ["cand.png"]}, _layouts(2)[1]]
    Image.new("RGB", (32, 32), "red").save(images / "l1.png")
    path = tmp_path / "layouts.json"
    path.write_text(json.dumps(layouts), encoding="utf-8")
    code, output = run_cli(["validate", str(path)], capsys)
    assert code == 2 and "is 300 bytes long: ids name image files" in output
    code, output = run_cli(_score(images, path, tmp_path / "s.jsonl", tiny_models), capsys)
    assert code == 1 and "Traceback" not in output and "unexpected" not in output
    records = _records(tmp_path / "s.jsonl")
    assert [r["layout_id"] for r in records] == ["x" * 300, "l1"]
    assert "300 bytes long" in records[0]["error"] and records[1]["error"] is None


def test_a_box_too_small_to_score_fails_validation(capsys, tmp_path):
    layouts = _layouts(1)
    layouts[0]["objects"][0]["bbox"] = [0.1, 0.1, 5e-324, 0.5]
    path = tmp_path / "layouts.json"
    path.write_text(json.dumps(layouts), encoding="utf-8")
    code, output = run_cli(["validate", str(path)], capsys)
    assert code == 2 and "width and height must be at least 1e-06 of the image" in output


def test_thousands_of_layouts_without_images_give_a_few_warnings_and_a_count(tiny_models, tmp_path, capsys):
    many = _layouts(500)
    images, path = _folder(tmp_path, many[:1])
    path.write_text(json.dumps(many), encoding="utf-8")
    code, output = run_cli(_score(images, path, tmp_path / "s.jsonl", tiny_models), capsys)
    assert code == 0, output
    warnings = [line for line in output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 11 and warnings[-1] == "warning: ... and 489 more warnings like these"
    manifest = json.loads((tmp_path / "s.jsonl.manifest.json").read_text(encoding="utf-8"))
    assert len(manifest["run"]["layouts_without_images"]) == 499  # the full list is kept there


# --- found by the adversarial pass over the fixes ---------------------------------------------------


@pytest.mark.parametrize("flag,name", [("--csv", "l0.png"), ("--out", "manifest.json")])
def test_an_output_may_not_replace_a_file_inside_images(tiny_models, tmp_path, capsys, flag, name):
    images, layouts = _folder(tmp_path, _layouts())
    (images / "manifest.json").write_text("{}", encoding="utf-8")  # as `clis generate` leaves it
    target = images / name
    before = _digest(target)
    out = target if flag == "--out" else tmp_path / "s.jsonl"
    extra = ["--csv", str(target)] if flag == "--csv" else []
    code, output = run_cli(_score(images, layouts, out, tiny_models, "--overwrite", *extra), capsys)
    assert code == 2 and "is a file inside IMAGES" in _one_error_line(output)
    assert _digest(target) == before


def test_an_existing_csv_needs_overwrite(tiny_models, tmp_path, capsys):
    images, layouts = _folder(tmp_path, _layouts())
    kept = tmp_path / "notes.csv"
    kept.write_text("mine\n", encoding="utf-8")
    code, output = run_cli(_score(images, layouts, tmp_path / "s.jsonl", tiny_models, "--csv", str(kept)), capsys)
    assert code == 2 and "--csv" in _one_error_line(output) and kept.read_text(encoding="utf-8") == "mine\n"


def test_the_lock_holds_through_a_symlink(tiny_models, tmp_path, capsys):
    images, layouts = _folder(tmp_path, _layouts())
    out = tmp_path / "scores.jsonl"
    out.write_text("", encoding="utf-8")
    link = tmp_path / "link.jsonl"
    link.symlink_to(out)
    with OutputLock(out):
        code, output = run_cli(_score(images, layouts, link, tiny_models, "--overwrite"), capsys)
    assert code == 2 and "another clis run is writing it" in _one_error_line(output)


def test_resume_refuses_one_image_spelled_two_ways(tiny_models, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    images, layouts = _folder(tmp_path, _layouts())
    out = tmp_path / "scores.jsonl"
    assert run_cli(_score(Path("images"), layouts, out, tiny_models), capsys)[0] == 0
    first = _records(out)[0]
    forged = {**first, "image": "./" + first["image"], "clis": 99.0}
    with open(out, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(forged) + "\n")
    before = _digest(out)
    code, output = run_cli(_score(Path("images"), layouts, out, tiny_models, "--resume"), capsys)
    assert code == 2 and "listed twice (first on line 1)" in _one_error_line(output)
    assert _digest(out) == before


def test_resume_over_a_one_line_file_beside_a_copied_manifest_is_refused(tiny_models, tmp_path, capsys):
    images, layouts = _folder(tmp_path, _layouts())
    out = tmp_path / "scores.jsonl"
    assert run_cli(_score(images, layouts, out, tiny_models), capsys)[0] == 0
    other = tmp_path / "one.json"
    other.write_text(json.dumps(_layouts()), encoding="utf-8")  # one line, no newline
    Path(f"{other}.manifest.json").write_text(Path(f"{out}.manifest.json").read_text(encoding="utf-8"))
    before = _digest(other)
    code, output = run_cli(_score(images, layouts, other, tiny_models, "--resume"), capsys)
    assert code == 2 and "line 1: not a clis score record" in _one_error_line(output)
    assert _digest(other) == before


def test_a_yaml_alias_bomb_in_config_is_checked_in_linear_time(tiny_models, tmp_path, capsys):
    lines = ["a0: &a0 [1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 30)]  # 10**30 leaves
    config = tmp_path / "bomb.yaml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    images, layouts = _folder(tmp_path, _layouts(1))
    code, output = run_cli(_score(images, layouts, tmp_path / "s.jsonl", tiny_models, "--config", str(config)), capsys)
    assert code == 2 and "bomb.yaml" in _one_error_line(output)  # a settings error, reached at once


@pytest.mark.parametrize("args", [["--format", "[/x]"], []])
def test_validate_prints_markup_in_options_and_labels_literally(tmp_path, capsys, args):
    layouts = _layouts(1)
    layouts[0]["objects"][0]["label"] = "cu[/p]"
    path = tmp_path / "[bold]layouts.json"
    path.write_text(json.dumps(layouts), encoding="utf-8")
    code, output = run_cli(["validate", str(path), *args], capsys)
    assert "Traceback" not in output and "unexpected" not in output
    if args:
        assert code == 2 and "unknown format '[/x]'" in _one_error_line(output)
    else:
        assert code == 0 and "cu[/p] (1)" in output and "[bold]layouts.json" in output
