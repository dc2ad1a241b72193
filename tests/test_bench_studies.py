"""correlate, pairwise, buckets and downstream on small hand-written files."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pycocotools.coco import COCO
from scipy import stats
from typer.testing import CliRunner

from benchmarks.buckets import assign_buckets, buckets, downstream, parse_edges
from benchmarks.cli import app
from benchmarks.correlate import correlate
from benchmarks.pairwise import pairwise
from benchmarks.results import read_result
from benchmarks.scorefile import read_scores
from benchmarks.stats import BootstrapConfig
from clis.errors import InputError

FAST = BootstrapConfig(n_resamples=200, seed=0)


def record(layout_id, image, clis, *, clis_i=None, glob=None, region=(), det=(), error=None):
    """A scores.jsonl record as `clis score` writes it (see docs/ARCHITECTURE.md)."""
    instances = []
    for k, r in enumerate(region):
        inst = {"object_id": f"o{k}", "label": "x", "phrase": "x", "bbox": [0.1, 0.1, 0.2, 0.2],
                "region": r, "grounding": None, "detection": None, "score": clis}
        if det:
            found, iou = det[k]
            inst["detection"] = {"found": found, "iou": iou, "score": 0.5, "count": int(found),
                                 "expected_count": 1, "count_match": found}
        instances.append(inst)
    return {"layout_id": layout_id, "image": image, "clis": clis, "clis_i": clis_i, "clis_l": None,
            "global": glob, "instances": instances, "error": error}


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


# --- reading scores -------------------------------------------------------------------------


def test_read_scores_derives_baselines_by_hand(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [
        record("a", "a/0.png", 70.0, glob=30.0, region=(20.0, 30.0), det=((True, 0.8), (False, None))),
        record("a", "a/1.png", None, error="cannot open image"),
    ])
    frame = read_scores(path)
    row = frame.iloc[0]
    assert row["region"] == pytest.approx(25.0)
    assert row["detection_iou"] == pytest.approx(0.4)  # a missed object overlaps by 0
    assert row["found_rate"] == pytest.approx(0.5)
    assert np.isnan(row["clis_l"])
    assert frame.iloc[1]["error"] == "cannot open image"


def test_read_scores_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(record("a", "a.png", 1.0)) + "\n{not json\n")
    with pytest.raises(InputError, match=r"s\.jsonl:2: not valid JSON"):
        read_scores(path)
    path.write_text(json.dumps({**record("a", "a.png", 1.0), "clis": "high"}) + "\n")
    with pytest.raises(InputError, match=r"s\.jsonl:1, field 'clis': expected a number"):
        read_scores(path)
    path.write_text(json.dumps({"image": "a.png"}) + "\n")
    with pytest.raises(InputError, match=r"s\.jsonl:1: field 'layout_id' is missing"):
        read_scores(path)


# --- correlate --------------------------------------------------------------------------------

CLIS = [50.0, 61.0, 58.0, 70.0, 77.0, 90.0, 66.0, 83.0]
GLOBAL = [30.0, 22.0, 25.0, 31.0, 24.0, 28.0, 29.0, 21.0]
RATING = [1, 3, 2, 4, 4, 5, 3, 4]


@pytest.fixture()
def rated(tmp_path):
    scores = write_jsonl(tmp_path / "scores.jsonl", [
        record(f"l{i // 2}", f"out/images/l{i // 2}/{i % 2}.png", c, glob=g) for i, (c, g) in enumerate(zip(CLIS, GLOBAL))
    ])
    # ids written as trailing path parts: they must still join
    lines = ["image,rating,generator"] + [f"l{i // 2}/{i % 2}.png,{r},{'g' + str(i % 2)}" for i, r in enumerate(RATING)]
    targets = write_csv(tmp_path / "ratings.csv", "\n".join(lines))
    return scores, targets


def test_correlate_reports_scipy_values_for_clis_and_baselines(rated, tmp_path):
    scores, targets = rated
    result = correlate(scores, targets, tmp_path / "out", bootstrap=FAST, by="generator")
    rows = {r.name: r for r in result.rows}
    assert set(rows) == {"clis", "global"}  # the only columns the records carry
    assert rows["clis"].values["spearman"].value == pytest.approx(stats.spearmanr(CLIS, RATING).statistic)
    assert rows["clis"].values["kendall"].value == pytest.approx(stats.kendalltau(CLIS, RATING).statistic)
    assert rows["global"].values["pearson"].value == pytest.approx(stats.pearsonr(GLOBAL, RATING).statistic)
    for row in result.rows:
        for interval in row.values.values():
            assert interval.ci_low <= interval.value <= interval.ci_high
    table = pd.DataFrame(result.tables["correlations"])
    g1 = table[(table.group == "g1") & (table.score == "clis") & (table.method == "spearman")]
    assert g1["value"].iloc[0] == pytest.approx(stats.spearmanr(CLIS[1::2], RATING[1::2]).statistic)
    on_disk = read_result(tmp_path / "out" / "result.json")
    assert on_disk.study == "correlate" and on_disk.settings["target"] == "rating"
    assert [i.role for i in on_disk.inputs] == ["scores", "targets"]
    assert on_disk.inputs[0].sha256 and len(on_disk.inputs[0].sha256) == 64
    for name in ("correlate.png", "correlate.svg"):
        assert name in on_disk.figures and (tmp_path / "out" / name).stat().st_size > 1000


def test_correlate_per_layout_uses_mean_or_max_of_candidates(rated, tmp_path):
    scores, _ = rated
    targets = write_csv(tmp_path / "acc.csv", "layout_id,ap\nl0,1.0\nl1,2.5\nl2,2.0\nl3,4.0")
    means = [np.mean(CLIS[2 * k:2 * k + 2]) for k in range(4)]
    maxes = [max(CLIS[2 * k:2 * k + 2]) for k in range(4)]
    ap = [1.0, 2.5, 2.0, 4.0]
    result = correlate(scores, targets, tmp_path / "o1", bootstrap=FAST, plot=False)
    assert result.settings["level"] == "layout"
    assert result.rows[0].values["pearson"].value == pytest.approx(stats.pearsonr(means, ap).statistic)
    result = correlate(scores, targets, tmp_path / "o2", bootstrap=FAST, plot=False, aggregate="max")
    assert result.rows[0].values["pearson"].value == pytest.approx(stats.pearsonr(maxes, ap).statistic)


@pytest.mark.parametrize("csv,message", [
    ("image,rating\nl0/0.png,1\nl9/0.png,2", r"ratings\.csv: row 2, column 'image': image 'l9/0\.png' matches no scored candidate in .*scores\.jsonl"),
    ("image,rating\nl0/0.png,1\nl0/0.png,2", r"ratings\.csv: row 2, column 'image': duplicated id 'l0/0\.png' \(first at row 1\)"),
    ("image,rating\n0.png,1", r"ratings\.csv: row 1, column 'image': image '0\.png' is ambiguous"),
    ("image,rating\nl0/0.png,good", r"ratings\.csv: row 1, column 'rating': 'good' is not a number"),
    ("picture,rating\nl0/0.png,1", r"ratings\.csv: needs an 'image' or a 'layout_id' column"),
    ("layout_id,ap\nl0,1\nnope,2", r"ratings\.csv: row 2, column 'layout_id': layout 'nope' has no candidates"),
])
def test_correlate_join_errors_are_precise(rated, tmp_path, csv, message):
    scores, _ = rated
    targets = write_csv(tmp_path / "ratings.csv", csv)
    with pytest.raises(InputError, match=message):
        correlate(scores, targets, tmp_path / "out", bootstrap=FAST, plot=False)


def test_correlate_cli_missing_column_is_one_line_exit_2(rated, tmp_path):
    scores, targets = rated
    runner = CliRunner()
    res = runner.invoke(app, ["correlate", str(scores), str(targets), "-o", str(tmp_path / "o"), "--target", "score"])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1
    assert "ratings.csv: missing column 'score'" in lines[0]
    assert "Traceback" not in res.output


def test_scores_listing_an_image_twice_is_an_error(tmp_path):
    scores = write_jsonl(tmp_path / "s.jsonl", [record("a", "a.png", 1.0), record("a", "a.png", 2.0)])
    targets = write_csv(tmp_path / "t.csv", "image,r\na.png,1")
    with pytest.raises(InputError, match=r"s\.jsonl: image 'a\.png' is scored twice"):
        correlate(scores, targets, tmp_path / "o", bootstrap=FAST, plot=False)


def test_correlate_image_level_keeps_extra_columns_and_checks_layout_ids(rated, tmp_path):
    scores, _ = rated
    lines = ["image,layout_id,rating,rater"] + [f"l{i // 2}/{i % 2}.png,l{i // 2},{r},r{i % 3}" for i, r in enumerate(RATING)]
    targets = write_csv(tmp_path / "t.csv", "\n".join(lines))
    result = correlate(scores, targets, tmp_path / "o", bootstrap=FAST, plot=False, by="rater")
    assert set(pd.DataFrame(result.tables["correlations"])["group"]) == {"all", "r0", "r1", "r2"}
    lines[3] = lines[3].replace(",l1,", ",l0,")  # l1/0.png said to belong to l0
    targets.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"t\.csv: row 3, column 'layout_id': 'l0' but .*scores\.jsonl scores image .*l1/0\.png"):
        correlate(scores, targets, tmp_path / "o", bootstrap=FAST, plot=False)


@pytest.mark.parametrize("csv,column", [
    # image level: the column would replace the CLIP baseline, or void every candidate
    ("image,rating,global\nl0/0.png,1,5\nl0/1.png,2,4\nl1/0.png,3,3", "global"),
    ("image,rating,error\nl0/0.png,1,x\nl0/1.png,2,y\nl1/0.png,3,z", "error"),
    ("image,rating,target\nl0/0.png,1,5\nl0/1.png,2,4\nl1/0.png,3,3", "target"),
    # layout level: pandas would refuse the join with "columns overlap"
    ("layout_id,ap,clis\nl0,1,5\nl1,2,4\nl2,3,3", "clis"),
    ("layout_id,ap,n_candidates\nl0,1,5\nl1,2,4\nl2,3,3", "n_candidates"),
])
def test_correlate_targets_column_named_like_a_score_is_an_error(rated, tmp_path, csv, column):
    scores, _ = rated
    targets = write_csv(tmp_path / "t.csv", csv)
    target = "ap" if csv.startswith("layout_id") else "rating"
    with pytest.raises(InputError, match=rf"t\.csv: column '{column}' clashes with the column of that name in the scores of .*scores\.jsonl"):
        correlate(scores, targets, tmp_path / "o", target=target, bootstrap=FAST, plot=False)


def test_correlate_layout_level_counts_failed_candidates_and_unscored_layouts(tmp_path):
    clis = {"l0": [50.0, None], "l1": [None, None], "l2": [70.0, 60.0], "l3": [80.0, 90.0], "l4": [40.0, 44.0]}
    records = [record(l, f"{l}/{k}.png", c, error=None if c is not None else "cannot open image")
               for l, values in clis.items() for k, c in enumerate(values)]
    scores = write_jsonl(tmp_path / "s.jsonl", records)
    targets = write_csv(tmp_path / "t.csv", "layout_id,ap\nl0,2\nl1,9\nl2,5\nl3,6\nl4,1")
    result = correlate(scores, targets, tmp_path / "o", bootstrap=FAST, plot=False)
    assert result.settings["n_failed_candidates"] == 3
    assert result.settings["unscored_layouts"] == ["l1"]
    row = result.rows[0]
    assert row.n_layouts == 4
    assert row.values["pearson"].value == pytest.approx(stats.pearsonr([50, 65, 85, 42], [2, 5, 6, 1]).statistic)


@pytest.mark.parametrize("csv", ["layout_id,ap\nl0,1\nl1,2", "image,rating\nl0/0.png,1\nl1/0.png,2"])
def test_correlate_with_every_candidate_failed_is_a_one_line_error(tmp_path, csv):
    scores = write_jsonl(tmp_path / "s.jsonl", [record(l, f"{l}/0.png", None, error="boom") for l in ("l0", "l1")])
    targets = write_csv(tmp_path / "t.csv", csv)
    with pytest.raises(InputError, match=r"s\.jsonl: none of the (layouts|images) named in .*t\.csv has a scored candidate \(2 failed\)"):
        correlate(scores, targets, tmp_path / "o", bootstrap=FAST, plot=False)


def test_correlate_by_a_score_record_key_at_layout_level(tmp_path):
    layouts = {f"l{k}": (f"g{k % 2}", [10.0 + 7 * k, 20.0 + 3 * k * k]) for k in range(8)}
    ap = [3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0, 6.0]
    records = [{**record(l, f"{l}/{i}.png", c), "generator": g} for l, (g, cs) in layouts.items() for i, c in enumerate(cs)]
    scores = write_jsonl(tmp_path / "s.jsonl", records)
    targets = write_csv(tmp_path / "t.csv", "layout_id,ap\n" + "\n".join(f"l{k},{a}" for k, a in enumerate(ap)))
    result = correlate(scores, targets, tmp_path / "o", by="generator", bootstrap=FAST)
    table = pd.DataFrame(result.tables["correlations"]).set_index(["group", "score", "method"])
    means = [np.mean(cs) for _, cs in layouts.values()]
    for g in (0, 1):
        want = stats.spearmanr(means[g::2], ap[g::2]).statistic
        assert table.at[(f"g{g}", "clis", "spearman"), "value"] == pytest.approx(want)
    records[1]["generator"] = "g1"  # l0's candidates now disagree on their generator
    write_jsonl(scores, records)
    with pytest.raises(InputError, match=r"s\.jsonl: layout 'l0' has candidates with different 'generator' values"):
        correlate(scores, targets, tmp_path / "o", by="generator", bootstrap=FAST, plot=False)


# --- pairwise ---------------------------------------------------------------------------------


@pytest.fixture()
def prefs(tmp_path):
    # clis:   a=80 b=60 c=60 d=90 e=50 ; global: a=20 b=25 c=25 d=21 e=30
    scores = write_jsonl(tmp_path / "scores.jsonl", [
        record("p", f"{n}.png", c, glob=g) for n, c, g in
        [("a", 80.0, 20.0), ("b", 60.0, 25.0), ("c", 60.0, 25.0), ("d", 90.0, 21.0), ("e", 50.0, 30.0)]
    ])
    choices = write_csv(tmp_path / "prefs.csv", """
image_a,image_b,chosen,rater
a.png,b.png,a,r1
d.png,e.png,a,r1
a.png,d.png,d.png,r2
b.png,e.png,a,r2
b.png,c.png,b,r1
e.png,a.png,b,r2
a.png,e.png,tie,r1
""")
    return scores, choices


def test_pairwise_agreement_by_hand_for_each_tie_policy(prefs, tmp_path):
    scores, choices = prefs
    # clis agrees on pairs 1,2,3,4,6 (5 of 5 decided); pair 5 (b vs c) is a score tie; pair 7 a human tie.
    # global agrees on none of 1,2,3,4,6 (20<25, 21<30, 20<21 ... d chosen over a: 21>20 agrees!)
    #   pair1 a(20) vs b(25) chosen a: no; pair2 d(21) vs e(30) chosen d: no; pair3 chosen d(21) vs a(20): yes;
    #   pair4 b(25) vs e(30) chosen b: no; pair6 chosen a(20) vs e(30): no; pair5 b=c tie.
    expected = {"drop": {"clis": (5, 5), "global": (1, 5)},
                "loss": {"clis": (5, 6), "global": (1, 6)},
                "half": {"clis": (5.5, 6), "global": (1.5, 6)}}
    for policy, want in expected.items():
        result = pairwise(scores, choices, tmp_path / policy, score_ties=policy, bootstrap=FAST, plot=False)
        rows = {r.name: r for r in result.rows}
        for name, (credit, n) in want.items():
            value = rows[name].values["agreement"]
            assert value.value == pytest.approx(credit / n)
            assert rows[name].model_extra["n_pairs"] == n
            assert value.ci_low <= value.value <= value.ci_high
            if policy != "half":
                ci = stats.binomtest(int(credit), n).proportion_ci(method="wilson")
                assert (value.ci_low, value.ci_high) == pytest.approx((ci.low, ci.high))
            else:  # from the tie lost to the tie won: pair 5 is the only score tie of either score
                lost = stats.binomtest(int(credit - 0.5), n).proportion_ci(method="wilson")
                won = stats.binomtest(int(credit + 0.5), n).proportion_ci(method="wilson")
                assert (value.ci_low, value.ci_high) == pytest.approx((lost.low, won.high))
        assert rows["clis"].model_extra["n_score_ties"] == 1
        assert result.settings["n_human_ties"] == 1


def test_pairwise_half_interval_does_not_collapse_when_every_pair_agrees(prefs, tmp_path):
    scores, _ = prefs
    choices = write_csv(tmp_path / "all.csv", "image_a,image_b,chosen\n" + "\n".join(
        ["a.png,b.png,a", "d.png,e.png,a", "a.png,d.png,b", "b.png,e.png,a", "e.png,a.png,b"]))
    result = pairwise(scores, choices, tmp_path / "o", score_ties="half", bootstrap=FAST, plot=False)
    clis = next(r for r in result.rows if r.name == "clis").values["agreement"]
    ci = stats.binomtest(5, 5).proportion_ci(method="wilson")
    assert (clis.value, clis.ci_low, clis.ci_high) == (1.0, pytest.approx(ci.low), pytest.approx(1.0))
    assert clis.ci_low < 0.6


def test_pairwise_by_group_and_figures(prefs, tmp_path):
    scores, choices = prefs
    result = pairwise(scores, choices, tmp_path / "o", by="rater", bootstrap=FAST)
    table = pd.DataFrame(result.tables["agreement"])
    r2 = table[(table.group == "r2") & (table.score == "global")].iloc[0]
    assert (r2["agreement"], r2["n_pairs"]) == (pytest.approx(1 / 3), 3)
    assert (tmp_path / "o" / "pairwise.png").exists() and (tmp_path / "o" / "pairwise.svg").exists()


@pytest.mark.parametrize("row,message", [
    ("a.png,zz.png,a", r"prefs\.csv: row 1, column 'image_b': image 'zz\.png' matches no scored candidate"),
    ("a.png,b.png,maybe", r"prefs\.csv: row 1, column 'chosen': 'maybe' is not 'a', 'b', 'tie'"),
    ("a.png,a.png,a", r"prefs\.csv: row 1: image_a and image_b are the same image"),
])
def test_pairwise_input_errors(prefs, tmp_path, row, message):
    scores, _ = prefs
    choices = write_csv(tmp_path / "prefs.csv", "image_a,image_b,chosen\n" + row)
    with pytest.raises(InputError, match=message):
        pairwise(scores, choices, tmp_path / "o", bootstrap=FAST, plot=False)


# --- buckets and downstream -------------------------------------------------------------------


def test_bucket_assignment_edges():
    values = pd.Series([69.9, 70.0, 74.99, 75.0, 84.0, 85.0, 85.1, float("nan")])
    assert assign_buckets(values, [70, 75, 80, 85]).tolist() == [None, "70-75", "70-75", "75-80", "80-85", "80-85", None, None]
    assert parse_edges("70, 75,80") == [70.0, 75.0, 80.0]
    with pytest.raises(InputError, match="must increase"):
        parse_edges("70,70,80")
    with pytest.raises(InputError, match="comma-separated numbers"):
        parse_edges("70;75")


@pytest.fixture()
def bucket_inputs(tmp_path):
    layouts = [
        {"id": "cat", "caption": "a cat", "objects": [{"id": "cat-1", "label": "cat", "bbox": [0.25, 0.5, 0.5, 0.25]}]},
        {"id": "tea", "caption": "a cup on a table", "objects": [
            {"id": "cup-1", "label": "cup", "bbox": [0.1, 0.1, 0.2, 0.2]},
            {"id": "table-1", "label": "table", "bbox": [0.0, 0.5, 1.0, 0.5]}]},
    ]
    (tmp_path / "layouts.json").write_text(json.dumps(layouts))
    images = tmp_path / "images"
    specs = [("cat", 0, 72.0), ("cat", 1, 78.0), ("cat", 2, 83.0), ("tea", 0, 71.0), ("tea", 1, 86.0), ("tea", 2, 60.0)]
    records = []
    for layout_id, k, score in specs:
        path = images / layout_id / f"{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (200, 100)).save(path)
        records.append(record(layout_id, f"images/{layout_id}/{k}.png", score))
    return write_jsonl(tmp_path / "scores.jsonl", records), tmp_path / "layouts.json"


def test_buckets_write_coco_subsets_that_pycocotools_reads(bucket_inputs, tmp_path):
    scores, layouts = bucket_inputs
    out = tmp_path / "b"
    result = buckets(scores, layouts, out, edges=[70, 75, 80, 85], bootstrap=FAST)
    counts = {r.name: r.n_images for r in result.rows}
    assert counts == {"70-75": 2, "75-80": 1, "80-85": 1}  # 86 and 60 fall outside
    assert result.settings["n_outside"] == 2
    subset = COCO(str(out / "bucket_70-75.json"))
    assert sorted(img["file_name"] for img in subset.dataset["images"]) == ["cat/0.png", "tea/0.png"]
    assert {c["name"] for c in subset.dataset["categories"]} == {"cat", "cup", "table"}
    cat_image = next(i for i in subset.dataset["images"] if i["clis_layout_id"] == "cat")
    assert (cat_image["width"], cat_image["height"]) == (200, 100)
    assert cat_image["clis_score"] == 72.0
    (ann,) = subset.loadAnns(subset.getAnnIds(imgIds=[cat_image["id"]]))
    assert ann["bbox"] == pytest.approx([50.0, 50.0, 100.0, 25.0])  # [0.25,0.5,0.5,0.25] on 200x100
    # one category list for every subset, so ids mean the same in all trained detectors
    other = json.loads((out / "bucket_80-85.json").read_text())
    assert other["categories"] == subset.dataset["categories"]
    assert len(other["annotations"]) == 1
    template = pd.read_csv(out / "downstream_template.csv")
    assert template["bucket"].tolist() == ["70-75", "75-80", "80-85"]
    assert (out / "buckets.png").exists() and (out / "buckets.svg").exists()
    assert read_result(out / "result.json").study == "buckets"


def test_buckets_thresholds_are_cumulative_and_best_only_keeps_one_per_layout(bucket_inputs, tmp_path):
    scores, layouts = bucket_inputs
    result = buckets(scores, layouts, tmp_path / "t", edges=[70, 80], mode="thresholds", bootstrap=FAST, plot=False)
    assert {r.name: r.n_images for r in result.rows} == {">=70": 5, ">=80": 2}
    result = buckets(scores, layouts, tmp_path / "o", edges=[70, 85], best_only=True, bootstrap=FAST, plot=False)
    assert {r.name: r.n_images for r in result.rows} == {"70-85": 1}  # best cat 83 in, best tea 86 out


def test_buckets_unknown_layout_is_an_error(bucket_inputs, tmp_path):
    scores, _ = bucket_inputs
    only_cat = tmp_path / "cat_only.json"
    only_cat.write_text(json.dumps([{"id": "cat", "objects": [{"id": "c", "label": "cat", "bbox": [0, 0, 1, 1]}]}]))
    with pytest.raises(InputError, match=r"scores\.jsonl: layout 'tea' .* is not in .*cat_only\.json"):
        buckets(scores, only_cat, tmp_path / "o", edges=[70, 80], bootstrap=FAST, plot=False)


def test_downstream_on_the_papers_bucket_table(tmp_path):
    results = write_csv(tmp_path / "ap.csv", "bucket,AP_r\n70-75,10.7\n75-80,11.5\n80-85,12.1")
    result = downstream(results, tmp_path / "d", bootstrap=FAST)
    (row,) = result.rows
    assert row.values["spearman"].value == pytest.approx(1.0)
    assert row.values["pearson"].value == pytest.approx(stats.pearsonr([72.5, 77.5, 82.5], [10.7, 11.5, 12.1]).statistic)
    assert row.values["gain"].value == pytest.approx(1.4)
    assert row.model_extra["monotonic"] is True
    assert (tmp_path / "d" / "downstream.png").exists() and (tmp_path / "d" / "downstream.svg").exists()


def test_downstream_series_and_non_monotonic(tmp_path):
    results = write_csv(tmp_path / "ap.csv", """
score,lo,hi,seed,AP_r
clis_l,70,75,0,11.0
clis_l,75,80,0,10.2
clis_l,80,85,0,11.4
clis_i,70,75,0,10.7
clis_i,75,80,0,11.5
clis_i,80,85,0,12.1
clis_i,80,85,1,12.3
""")
    result = downstream(results, tmp_path / "d", by="score", bootstrap=FAST)
    rows = {r.name: r for r in result.rows}
    assert rows["clis_l"].model_extra["monotonic"] is False
    assert rows["clis_i"].model_extra["monotonic"] is True
    assert rows["clis_i"].values["gain"].value == pytest.approx(12.2 - 10.7)
    per = pd.DataFrame(result.tables["per_bucket"])
    assert per[(per.series == "clis_i") & (per.x == 82.5)]["n"].iloc[0] == 2


@pytest.mark.parametrize("csv,labels", [
    ("lo,hi,AP_r\n70,75,10.7\n75,80,11.5\n80,85,12.1", ["70-75", "75-80", "80-85"]),
    ("threshold,AP_r\n70,10.7\n75.5,11.5\n80,12.1", [">=70", ">=75.5", ">=80"]),
])
def test_downstream_without_a_bucket_column_names_buckets_from_the_edges(tmp_path, csv, labels):
    results = write_csv(tmp_path / "ap.csv", csv)
    result = downstream(results, tmp_path / "d", bootstrap=FAST)
    assert [b["bucket"] for b in result.tables["per_bucket"]] == labels
    assert [b["metric"] for b in result.tables["per_bucket"]] == [10.7, 11.5, 12.1]
    # matplotlib writes every text it draws into the SVG as a comment: the bars are labelled
    svg = (tmp_path / "d" / "downstream.svg").read_text()
    for label in labels + ["10.7", "12.1"]:
        assert f"<!-- {html.escape(label)} -->" in svg


def test_downstream_needs_a_metric_column(tmp_path):
    results = write_csv(tmp_path / "ap.csv", "bucket,AP,AP50\n70-75,1,2\n75-80,2,3")
    with pytest.raises(InputError, match=r"ap\.csv: cannot tell which column is the metric .*AP, AP50"):
        downstream(results, tmp_path / "d", bootstrap=FAST, plot=False)


def test_cli_buckets_and_downstream_end_to_end(bucket_inputs, tmp_path):
    scores, layouts = bucket_inputs
    runner = CliRunner()
    res = runner.invoke(app, ["buckets", str(scores), "--layouts", str(layouts), "-o", str(tmp_path / "b"),
                              "--edges", "70,80,90", "--bootstrap", "100", "--no-plot"])
    assert res.exit_code == 0, res.output
    filled = pd.read_csv(tmp_path / "b" / "downstream_template.csv").assign(metric=[9.0, 10.0])
    filled.to_csv(tmp_path / "filled.csv", index=False)
    res = runner.invoke(app, ["downstream", str(tmp_path / "filled.csv"), "-o", str(tmp_path / "d"), "--no-plot"])
    assert res.exit_code == 0, res.output
    assert read_result(tmp_path / "d" / "result.json").rows[0].values["gain"].value == pytest.approx(1.0)
    res = runner.invoke(app, ["buckets", str(scores), "--layouts", str(layouts), "-o", str(tmp_path / "x"),
                              "--edges", "80,70"])
    assert res.exit_code == 2 and "edges must increase" in res.output
