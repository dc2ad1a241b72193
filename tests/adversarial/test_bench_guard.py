"""``clis bench ...`` under attack (issue 12): scores files that list an image twice, a bootstrap
that cannot fit in memory, non-finite numbers in options and files, user text that rich or
matplotlib would read as markup, unreadable files, outputs that are inputs, and one bad image
in ``bench corrupt``.

Each refusal is one line, exit 2, before any work, and leaves every input as it was.
"""

from __future__ import annotations

import json
import os
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.results import read_result
from benchmarks.scorefile import read_scores
from benchmarks.stats import MAX_RESAMPLES, BootstrapConfig, mean
from clis.errors import InputError
from pipeline_helpers import run_cli

from .conftest import run_forked

LAYOUTS = [{"id": f"l{i}", "caption": "a cat", "objects": [
    {"id": "cat-1", "label": "cat", "bbox": [0.25, 0.5, 0.5, 0.25]}]} for i in range(6)]
SCORES = [50.0, 61.0, 58.0, 70.0, 77.0, 90.0]
RATINGS = [1, 3, 2, 4, 4, 5]


def record(i: int, clis: float | str = None) -> dict:
    value = SCORES[i] if clis is None else clis
    return {"layout_id": f"l{i}", "image": f"images/l{i}/0.png", "clis": value, "clis_i": None, "clis_l": None,
            "global": 20.0 + i % 3, "error": None,
            "instances": [{"object_id": "cat-1", "label": "cat", "phrase": "cat", "bbox": [0.25, 0.5, 0.5, 0.25],
                           "region": value, "grounding": None, "detection": None, "score": value}]}


def jsonl(records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    """Scores of six candidates with their images, layouts, ratings, preferences and a
    downstream table, in ``tmp_path`` (the working folder, as the ``image`` fields are relative)."""
    monkeypatch.chdir(tmp_path)
    for i in range(6):
        path = tmp_path / "images" / f"l{i}" / "0.png"
        path.parent.mkdir(parents=True)
        Image.new("RGB", (32, 32), (40 * i, 90, 160)).save(path)
    (tmp_path / "layouts.json").write_text(json.dumps(LAYOUTS))
    (tmp_path / "scores.jsonl").write_text(jsonl(record(i) for i in range(6)))
    (tmp_path / "ratings.csv").write_text(
        "image,rating\n" + "".join(f"images/l{i}/0.png,{r}\n" for i, r in enumerate(RATINGS)))
    (tmp_path / "prefs.csv").write_text(
        "image_a,image_b,chosen\nimages/l0/0.png,images/l1/0.png,b\nimages/l2/0.png,images/l3/0.png,b\n"
        "images/l5/0.png,images/l4/0.png,a\n")
    (tmp_path / "downstream.csv").write_text("bucket,map\n70-75,0.30\n75-80,0.32\n80-85,0.35\n")
    return tmp_path


FAST = ["--no-plot", "--bootstrap", "50"]


def study(name: str, out: str = "out", scores: str = "scores.jsonl") -> list[str]:
    """``bench NAME`` on the fixture's inputs, with ``scores`` as its scores file."""
    return {
        "correlate": ["bench", "correlate", scores, "ratings.csv"],
        "pairwise": ["bench", "pairwise", scores, "prefs.csv"],
        "buckets": ["bench", "buckets", scores, "--layouts", "layouts.json", "--edges", "50,70,90"],
        "compare": ["bench", "compare", f"gen={scores}"],
    }[name] + ["-o", out, *FAST]


def refused(code: int, output: str, *named: str) -> str:
    """Exit 2 and one line naming each of ``named``; returns that line."""
    assert code == 2, output
    assert "Traceback" not in output and "unexpected" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    for text in named:
        assert text in lines[0], output
    return lines[0]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- item 4: one image listed twice -------------------------------------------------------------


@pytest.mark.parametrize("name", ["buckets", "correlate", "pairwise", "compare"])
def test_a_scores_file_listing_an_image_twice_is_refused_naming_file_line_and_image(inputs, capsys, name):
    # Two runs appended the same six records to one file.
    (inputs / "twice.jsonl").write_text(jsonl([record(i) for i in range(6)] * 2))
    code, output = run_cli(study(name, scores="twice.jsonl"), capsys)
    refused(code, output, "twice.jsonl", "'images/l0/0.png'", "lines 1 and 7")
    assert not (inputs / "out").exists()


def test_read_scores_refuses_the_second_record_of_an_image(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(jsonl([record(0), record(1), {**record(0), "clis": 12.0}]))
    with pytest.raises(InputError, match=r"s\.jsonl: image 'images/l0/0\.png' is scored twice \(lines 1 and 3\)"):
        read_scores(path)


# --- item 10: the bootstrap is bounded ----------------------------------------------------------


@pytest.mark.parametrize("name", ["buckets", "correlate", "pairwise", "compare"])
def test_a_bootstrap_past_the_maximum_is_one_line_before_any_work(inputs, capsys, name):
    argv = study(name)
    argv[argv.index("--bootstrap") + 1] = "100000000"
    code, output = run_cli(argv, capsys)
    refused(code, output, "--bootstrap 100000000", f"{MAX_RESAMPLES:,}")
    assert not (inputs / "out").exists()


def test_bootstrap_config_refuses_too_many_resamples_and_a_nan_confidence():
    assert BootstrapConfig(n_resamples=MAX_RESAMPLES).n_resamples == MAX_RESAMPLES
    with pytest.raises(InputError, match="--bootstrap"):
        BootstrapConfig(n_resamples=MAX_RESAMPLES + 1)
    with pytest.raises(InputError, match="--confidence"):
        BootstrapConfig(confidence=float("nan"))


def test_a_large_sample_is_resampled_in_batches_of_bounded_memory():
    # Unbatched, BCa's jackknife of 6,000 values alone holds 6,000 x 5,999 floats (0.3 GB) at
    # once, on top of the resamples: a bucket of 100,000 candidates would need 80 GB.
    values = np.random.default_rng(0).normal(size=6000)
    tracemalloc.start()
    try:
        est = mean(values, BootstrapConfig(n_resamples=200))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert est.ci_low < est.value < est.ci_high
    assert peak < 250 * 1024**2, f"{peak / 1024**2:.0f} MiB"


# --- item 11: non-finite numbers ----------------------------------------------------------------


@pytest.mark.parametrize("bad", ["inf", "-inf", "1e309", "Infinity"])
def test_a_non_finite_rating_is_refused_naming_row_and_column(inputs, capsys, bad):
    lines = (inputs / "ratings.csv").read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + f",{bad}"
    (inputs / "ratings.csv").write_text("\n".join(lines) + "\n")
    code, output = run_cli(study("correlate"), capsys)
    refused(code, output, "ratings.csv: row 3, column 'rating'", "finite")


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "1e309"])
@pytest.mark.parametrize("name", ["correlate", "buckets", "compare"])
def test_a_non_finite_score_in_a_scores_file_is_refused_naming_the_line(inputs, capsys, bad, name):
    lines = [json.dumps(record(i)) for i in range(6)]
    lines[2] = lines[2].replace('"clis": 58.0', f'"clis": {bad}')
    (inputs / "bad.jsonl").write_text("\n".join(lines) + "\n")
    code, output = run_cli(study(name, scores="bad.jsonl"), capsys)
    refused(code, output, "bad.jsonl:3")


@pytest.mark.parametrize("edges", ["nan,20", "70,inf", "-inf,70", "1e309", "70,nan,80"])
def test_non_finite_bucket_edges_are_refused(inputs, capsys, edges):
    argv = study("buckets")
    argv[argv.index("--edges") + 1] = edges
    code, output = run_cli(argv, capsys)
    refused(code, output, "--edges", "finite")
    assert not (inputs / "out").exists()


@pytest.mark.parametrize(("option", "value"), [("--min-instance", "nan"), ("--min-instance", "inf"),
                                               ("--min-layout", "nan"), ("--min-layout", "-inf")])
def test_non_finite_compare_thresholds_are_refused(inputs, capsys, option, value):
    code, output = run_cli(study("compare") + [option, value], capsys)
    refused(code, output, f"{option} {value}", "finite")


def test_an_infinite_tie_tolerance_is_refused(inputs, capsys):
    code, output = run_cli(study("pairwise") + ["--tie-tolerance", "inf"], capsys)
    refused(code, output, "--tie-tolerance inf", "finite")
    code, output = run_cli(["bench", "corrupt", "images", "layouts.json", "-o", "out", "--tie-tolerance", "inf",
                            "--detector", "none", "--no-layout-score", *FAST], capsys)
    refused(code, output, "--tie-tolerance inf", "finite")


@pytest.mark.parametrize(("table", "named"), [
    ("bucket,map\n70-75,0.3\n75-80,inf\n", "row 2, column 'map'"),
    ("bucket,map\n70-75,0.3\n" + "7" * 400 + "-80,0.4\n", "row 2"),
    ("lo,hi,map\n70,75,0.3\n75,1e309,0.4\n", "row 2, column 'hi'"),
])
def test_non_finite_numbers_in_a_downstream_table_are_refused(inputs, capsys, table, named):
    (inputs / "downstream.csv").write_text(table)
    code, output = run_cli(["bench", "downstream", "downstream.csv", "-o", "out", *FAST], capsys)
    refused(code, output, "downstream.csv", named, "finite")


# --- item 14: user text is plain text -----------------------------------------------------------


def test_compare_names_print_as_written(inputs, capsys):
    code, output = run_cli(["bench", "compare", "no[red]such=scores.jsonl", "[/x]=scores.jsonl",
                            "-o", "out[/]", *FAST], capsys)
    assert code == 0, output
    assert "no[red]such" in output and "[/x]" in output
    assert "out[/]/result.json" in output


def test_downstream_series_and_metric_names_print_as_written(inputs, capsys):
    (inputs / "downstream.csv").write_text(
        "bucket,[/b]map,run\n" + "".join(f"{b},{v},{s}\n" for s in ("[bold]a", "b") for b, v in
                                         (("70-75", 0.3), ("75-80", 0.32), ("80-85", 0.35))))
    code, output = run_cli(["bench", "downstream", "downstream.csv", "-o", "out", "--by", "run", *FAST], capsys)
    assert code == 0, output
    assert "[bold]a" in output and "[/b]map gain" in output


def test_names_with_a_dollar_sign_are_plotted_as_text(inputs, capsys):
    # Matplotlib reads $...$ as TeX: '$\bad{$' failed inside savefig, after the whole study.
    code, output = run_cli(["bench", "compare", "$\\bad{$=scores.jsonl", "a$b=scores.jsonl", "-o", "out",
                            "--bootstrap", "50"], capsys)
    assert code == 0, output
    assert (inputs / "out" / "compare.png").stat().st_size > 1000


# --- items 15 and 19: every file through clis.jsonio ---------------------------------------------

BROKEN_SCORES = {
    "binary": b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00binary",
    "deep": ("[" * 100_000 + "]" * 100_000 + "\n").encode(),
    "digits": (json.dumps(record(0)).replace('"global": 20.0', '"global": ' + "7" * 5000) + "\n").encode(),
}


@pytest.mark.parametrize("case", sorted(BROKEN_SCORES))
@pytest.mark.parametrize("name", ["correlate", "pairwise", "buckets", "compare"])
def test_an_unreadable_scores_file_is_one_line_naming_it(inputs, capsys, name, case):
    (inputs / "broken.jsonl").write_bytes(BROKEN_SCORES[case])
    code, output = run_cli(study(name, scores="broken.jsonl"), capsys)
    refused(code, output, "broken.jsonl")


@pytest.mark.parametrize("argv", [
    ["bench", "correlate", "scores.jsonl", "TABLE"],
    ["bench", "pairwise", "scores.jsonl", "TABLE"],
    ["bench", "downstream", "TABLE"],
])
def test_a_binary_csv_table_is_one_line_naming_it(inputs, capsys, argv):
    (inputs / "table.csv").write_bytes(b"image,rating\n\xff\xfe\x00\x01,3\n")
    code, output = run_cli([a.replace("TABLE", "table.csv") for a in argv] + ["-o", "out", *FAST], capsys)
    refused(code, output, "table.csv", "UTF-8")


@pytest.mark.parametrize("special", ["dev_zero", "fifo"])
@pytest.mark.parametrize("argv", [
    ["bench", "correlate", "FILE", "ratings.csv"],
    ["bench", "correlate", "scores.jsonl", "FILE"],
    ["bench", "buckets", "FILE", "--layouts", "layouts.json"],
    ["bench", "downstream", "FILE"],
])
def test_a_device_or_fifo_is_refused_as_not_a_regular_file(inputs, argv, special):
    if special == "fifo":
        path = inputs / "pipe"
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    run = run_forked([str(path) if a == "FILE" else a for a in argv] + ["-o", str(inputs / "out"), *FAST],
                     timeout=60)
    assert run.code == 2, run.describe()
    assert len(run.lines) == 1 and str(path) in run.lines[0] and "regular file" in run.lines[0], run.describe()


@pytest.mark.parametrize("manifest", ["deep", "fifo"])
def test_a_broken_manifest_beside_the_scores_is_ignored(inputs, manifest):
    path = inputs / "scores.jsonl.manifest.json"
    if manifest == "fifo":
        os.mkfifo(path)  # reading it would wait for a writer forever
    else:
        path.write_text('{"models": ' + "[" * 100_000 + "]" * 100_000 + "}")
    run = run_forked(["bench", "correlate", "scores.jsonl", "ratings.csv", "-o", str(inputs / "out"), *FAST],
                     timeout=60)
    assert run.code == 0, run.describe()
    assert read_result(inputs / "out" / "result.json").models == {}


def test_a_deeply_nested_result_file_is_one_input_error(tmp_path):
    path = tmp_path / "result.json"
    path.write_text('{"schema": "clis.bench/1", "study": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(InputError, match=r"result\.json: not valid JSON \(nested too deeply"):
        read_result(path)


@pytest.mark.parametrize("candidate", ["bomb", "fifo"])
def test_buckets_reads_no_more_than_a_candidate_image_header(inputs, candidate):
    path = inputs / "images" / "l3" / "0.png"
    path.unlink()
    if candidate == "fifo":
        os.mkfifo(path)  # Image.open would wait for a writer forever
    else:
        path.write_bytes(png_header_only(100_000, 100_000))
    run = run_forked(study("buckets", out=str(inputs / "out")), timeout=60)
    assert run.code == 0, run.describe()
    coco = json.loads((inputs / "out" / "bucket_50-70.json").read_text())
    assert {image["clis_layout_id"] for image in coco["images"]} == {"l0", "l1", "l2"}


# --- item 17: outputs checked before any work ----------------------------------------------------


@pytest.mark.parametrize("name", ["../escaped", "a/b", ".."])
def test_a_generator_name_that_is_no_folder_name_is_refused_before_scoring(inputs, capsys, name):
    (inputs / "gen").mkdir()
    Image.new("RGB", (32, 32)).save(inputs / "gen" / "l0.png")
    code, output = run_cli(["bench", "compare", f"{name}=gen", "--layouts", "layouts.json", "-o", "out/study",
                            "--detector", "none", "--no-layout-score", *FAST], capsys)
    refused(code, output, "plain folder name")
    assert not (inputs / "out").exists() and not (inputs / "escaped").exists()


@pytest.mark.parametrize(("argv", "inside"), [
    (["bench", "correlate", "out/result.json", "ratings.csv"], "result.json"),
    (["bench", "compare", "gen=out/compare.csv"], "compare.csv"),
    (["bench", "buckets", "out/buckets.csv", "--layouts", "layouts.json", "--edges", "50,70,90"], "buckets.csv"),
    (["bench", "buckets", "out/bucket_50-70.json", "--layouts", "layouts.json", "--edges", "50,70,90"],
     "bucket_50-70.json"),
    (["bench", "downstream", "out/result.json"], "result.json"),
])
def test_an_input_that_the_study_would_write_over_is_refused_and_kept(inputs, capsys, argv, inside):
    # The study would replace its own input with what it writes, after all the work.
    (inputs / "out").mkdir()
    source = "downstream.csv" if argv[1] == "downstream" else "scores.jsonl"
    (inputs / "out" / inside).write_bytes((inputs / source).read_bytes())
    before = snapshot(inputs)
    code, output = run_cli(argv + ["-o", "out", *FAST], capsys)
    refused(code, output, f"out/{inside}")
    assert snapshot(inputs) == before


@pytest.mark.parametrize("name", ["correlate", "pairwise", "buckets", "compare"])
def test_an_out_below_a_file_or_with_a_folder_as_result_json_is_refused_before_work(inputs, capsys, name):
    code, output = run_cli(study(name, out="scores.jsonl/study"), capsys)
    refused(code, output, "scores.jsonl is a file")
    (inputs / "out" / "result.json").mkdir(parents=True)
    code, output = run_cli(study(name), capsys)
    refused(code, output, "out/result.json", "folder")


# --- item 21: bench corrupt goes on past an image it cannot read ---------------------------------


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` pixels in a few bytes: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) \
        + chunk(b"IEND", b"")


class PixelScorer:
    """Stands in for clis.scorer.Scorer: the mean pixel as every score, no model."""

    def __init__(self, config):
        self.config = config

    def score_pairs(self, pairs):
        for image, layout in pairs:
            value = float(np.asarray(image, dtype=float).mean() / 2.55)
            yield {"layout_id": layout.id, "image": None, "clis": value, "clis_i": value, "clis_l": None,
                   "global": value, "instances": [], "error": None}


@pytest.fixture
def corrupt_inputs(inputs, monkeypatch):
    monkeypatch.setattr("clis.scorer.Scorer", PixelScorer)
    (inputs / "images" / "l2" / "0.png").write_bytes(png_header_only(100_000, 100_000))
    return inputs


def test_corrupt_records_a_decompression_bomb_as_a_failed_image_and_goes_on(corrupt_inputs, capsys):
    before = snapshot(corrupt_inputs / "images")
    code, output = run_cli(["bench", "corrupt", "images", "layouts.json", "-o", "out[/x]", "--kinds", "blur,shift",
                            "--detector", "none", "--no-layout-score", *FAST], capsys)
    assert code == 0, output
    warnings = [line for line in output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "1 of 6 images" in warnings[0] and "l2/0.png" in warnings[0], output
    assert "out[/x]/result.json" in output  # the path in the note printed as written
    result = read_result(corrupt_inputs / "out[/x]" / "result.json")
    assert result.settings["n_failed_images"] == 1
    failed = result.settings["failed_images"]
    assert failed[0]["image"].endswith("l2/0.png") and failed[0]["layout_id"] == "l2"
    assert "pixels" in failed[0]["error"]
    assert {row.n_images for row in result.rows} == {5}  # the bomb is in no figure
    assert snapshot(corrupt_inputs / "images") == before


def test_corrupt_with_every_image_unreadable_is_one_line(corrupt_inputs, capsys):
    for i in range(6):
        (corrupt_inputs / "images" / f"l{i}" / "0.png").write_bytes(b"not a png")
    code, output = run_cli(["bench", "corrupt", "images", "layouts.json", "-o", "out", "--kinds", "blur",
                            "--detector", "none", "--no-layout-score", *FAST], capsys)
    refused(code, output, "none of the 6 images could be scored")


def test_corrupt_refuses_an_out_that_is_its_image_folder_before_scoring(corrupt_inputs, capsys):
    before = snapshot(corrupt_inputs)
    code, output = run_cli(["bench", "corrupt", "images", "layouts.json", "-o", "images", "--kinds", "blur",
                            "--detector", "none", "--no-layout-score", *FAST], capsys)
    refused(code, output, "--out", "IMAGES")
    assert snapshot(corrupt_inputs) == before
