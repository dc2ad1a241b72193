"""clis bench compare: hand-computed figures from small score files, and scoring a folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from benchmarks.cli import app
from benchmarks.compare import compare, parse_generator
from benchmarks.results import read_result
from benchmarks.stats import BootstrapConfig
from clis.errors import InputError

FAST = BootstrapConfig(n_resamples=200, seed=0)
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def schema_example() -> dict:
    """The example result file of docs/results-schema.md (a compare of scored folders)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "results-schema.md").read_text()
    return json.loads(text.split("```json\n", 1)[1].split("```", 1)[0])


def rec(layout_id, k, clis, inst, clis_l=None, det=None):
    instances = [{"object_id": f"o{i}", "label": "x", "phrase": "x", "bbox": [0, 0, 0.5, 0.5], "region": 25.0,
                  "grounding": 50.0, "detection": det, "score": s} for i, s in enumerate(inst)]
    return {"layout_id": layout_id, "image": f"{layout_id}/{k}.png", "clis": clis, "clis_i": clis, "clis_l": clis_l,
            "global": 30.0, "instances": instances, "error": None}


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture()
def two_generators(tmp_path):
    a = write(tmp_path / "a.jsonl", [
        rec("x", 0, 70.0, [65.0, 40.0], clis_l=80.0), rec("x", 1, 50.0, [55.0, 30.0], clis_l=80.0),
        rec("y", 0, 90.0, [90.0], clis_l=40.0), rec("y", 1, 60.0, [70.0], clis_l=40.0),
        rec("z", 0, 99.0, [99.0], clis_l=99.0),  # a layout generator b never drew
    ])
    b = write(tmp_path / "b.jsonl", [
        rec("x", 0, 80.0, [80.0, 80.0], det={"found": True, "iou": 0.5}),
        rec("y", 0, 40.0, [30.0], det={"found": False, "iou": None}),
    ])
    return a, b


def test_compare_figures_by_hand_on_shared_layouts(two_generators, tmp_path):
    a, b = two_generators
    result = compare([f"A={a}", f"B={b}"], tmp_path / "out", bootstrap=FAST)
    rows = {r.name: r for r in result.rows}
    A, B = rows["A"].values, rows["B"].values
    assert rows["A"].n_images == 4 and rows["A"].n_layouts == 2  # layout z is not shared
    assert A["clis_mean"].value == pytest.approx((70 + 50 + 90 + 60) / 4)
    assert A["clis_median"].value == pytest.approx((60 + 70) / 2)
    # best-of-N: x: 70 - 60 = 10, y: 90 - 75 = 15 -> 12.5
    assert A["best_of_n_gain"].value == pytest.approx(12.5)
    # passes: an instance >= 60 and clis_l >= 50: x/0 yes, x/1 no (55 < 60), y/* no (clis_l 40)
    assert A["pass_rate"].value == pytest.approx(0.25)
    assert A["instance_pass_rate"].value == pytest.approx((0.5 + 0 + 1 + 1) / 4)
    assert A["clis_l_mean"].value == pytest.approx(60.0)
    assert A["detection_iou_mean"].value is None  # no detector in a's records
    assert B["detection_iou_mean"].value == pytest.approx(0.25)  # x: 0.5, y: missed -> 0
    assert B["found_rate_mean"].value == pytest.approx(0.5)
    assert B["pass_rate"].value == pytest.approx(0.5)  # no clis_l: instance rule only
    assert B["best_of_n_gain"].value == 0.0  # one candidate per layout gains nothing
    for row in result.rows:
        for key, interval in row.values.items():
            if interval.ci_low is not None:
                assert interval.ci_low - 1e-9 <= interval.value <= interval.ci_high + 1e-9, (row.name, key)
    assert result.settings["n_common_layouts"] == 2
    assert rows["A"].scores_file == "../a.jsonl"
    assert (tmp_path / "out" / "compare.png").exists() and (tmp_path / "out" / "compare.svg").exists()
    table = pd.read_csv(tmp_path / "out" / "compare.csv")
    assert set(table["generator"]) == {"A", "B"}
    # the documented example has exactly the fields a real compare result has
    doc, real = schema_example(), json.loads((tmp_path / "out" / "result.json").read_text())
    assert set(doc) == set(real)
    for part in ("inputs", "metrics", "rows"):
        assert set(doc[part][0]) == set(real[part][0]), part
    assert set(doc["tables"]) == set(real["tables"])
    assert set(doc["tables"]["figures"][0]) == set(real["tables"]["figures"][0])


def test_compare_all_layouts_keeps_unshared_ones(two_generators, tmp_path):
    a, b = two_generators
    result = compare([f"A={a}", f"B={b}"], tmp_path / "out", common_only=False, bootstrap=FAST, plot=False)
    assert result.rows[0].n_layouts == 3
    assert result.rows[0].values["clis_mean"].value == pytest.approx((70 + 50 + 90 + 60 + 99) / 5)


def test_compare_input_errors(two_generators, tmp_path):
    a, b = two_generators
    with pytest.raises(InputError, match="generator name 'A' is used twice"):
        compare([f"A={a}", f"A={b}"], tmp_path / "o", bootstrap=FAST)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"generator 'E': .*empty has no scores\.jsonl; pass --layouts"):
        compare([f"E={tmp_path / 'empty'}"], tmp_path / "o", bootstrap=FAST)
    other = write(tmp_path / "c.jsonl", [rec("w", 0, 10.0, [10.0])])
    with pytest.raises(InputError, match="share no layout"):
        compare([f"A={a}", f"C={other}"], tmp_path / "o", bootstrap=FAST)
    assert parse_generator("runs/gligen/scores.jsonl") == ("scores", Path("runs/gligen/scores.jsonl"))
    assert parse_generator("runs/gligen") == ("gligen", Path("runs/gligen"))


@pytest.mark.skipif(not (EXAMPLES / "layouts.json").exists(), reason="examples not present")
def test_compare_scores_folders_without_score_files(tiny_models, tmp_path):
    layouts = json.loads((EXAMPLES / "layouts.json").read_text())[:2]
    (tmp_path / "layouts.json").write_text(json.dumps(layouts))
    for gen in ("g1", "g2"):
        for layout in layouts:
            source = next((EXAMPLES / "images").glob(f"{layout['id']}.*"))
            target = tmp_path / gen / layout["id"]
            target.mkdir(parents=True)
            shutil.copy(source, target / f"0{source.suffix}")
            shutil.copy(source, target / f"1{source.suffix}")
    res = CliRunner().invoke(app, [
        "compare", f"g1={tmp_path / 'g1'}", f"g2={tmp_path / 'g2'}", "--layouts", str(tmp_path / "layouts.json"),
        "-o", str(tmp_path / "out"), "--image-model", tiny_models["hf_clip"], "--detector", "none",
        "--no-layout-score", "--bootstrap", "100", "--no-plot",
    ])
    assert res.exit_code == 0, res.output
    result = read_result(tmp_path / "out" / "result.json")
    g1, g2 = result.rows
    assert (tmp_path / "out" / "g1" / "scores.jsonl").exists()
    assert g1.n_images == 4 and g1.n_layouts == 2
    assert g1.images_root == "../g1" and g1.layouts_file == "../layouts.json"
    # the same images scored by the same model: identical figures
    assert g1.values["clis_mean"].value == pytest.approx(g2.values["clis_mean"].value)
    # two identical candidates per layout: picking the best gains nothing
    assert g1.values["best_of_n_gain"].value == pytest.approx(0.0, abs=1e-6)
    assert result.models["image_model"] == tiny_models["hf_clip"]
    assert result.scorer["settings"]["detector"] == "none"
    # the scorer's manifest may grow with clis score's; what the example shows must be there
    assert set(schema_example()["scorer"]) <= set(result.scorer)
    assert g1.model_extra["models"]["image_model"] == tiny_models["hf_clip"]  # from the scores manifest


def test_compare_refuses_duplicated_candidates_and_counts_failed_ones(two_generators, tmp_path):
    a, b = two_generators
    lines = a.read_text().splitlines()
    doubled = write(tmp_path / "doubled.jsonl", [json.loads(line) for line in lines + lines[:1]])
    with pytest.raises(InputError, match=r"doubled\.jsonl: image 'x/0\.png' is scored twice"):
        compare([f"A={doubled}", f"B={b}"], tmp_path / "o", bootstrap=FAST, plot=False)
    failing = [json.loads(line) for line in lines]
    failing.append({**rec("x", 2, None, []), "error": "cannot open image"})
    failing.append({**rec("w", 0, None, []), "error": "cannot open image"})  # a layout with no scored candidate
    failing = write(tmp_path / "failing.jsonl", failing)
    result = compare([f"A={failing}", f"B={b}"], tmp_path / "o", bootstrap=FAST, plot=False)
    rows = {r.name: r for r in result.rows}
    assert rows["A"].model_extra["n_failed"] == 2 and rows["B"].model_extra["n_failed"] == 0
    assert rows["A"].n_images == 4  # the failed x/2 is left out of the figures
    assert rows["A"].values["clis_mean"].value == pytest.approx((70 + 50 + 90 + 60) / 4)
