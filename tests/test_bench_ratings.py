"""``clis bench correlate`` on published human-rating tables (TIFA v1.0's JSON, DSG's Likert CSV),
the readers of benchmarks/ratings.py and the grouped bootstrap of benchmarks/stats.py.

The real files live in ``../shared/data`` (see its README for sources and licences); tests
that need them are skipped, with the reason, where that folder is absent. Reference figures
are computed here from the raw files with json/pandas + scipy/statsmodels, never through
the code under test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from benchmarks.cli import app
from benchmarks.correlate import correlate
from benchmarks.ratings import DSG_TO_TIFA_MODEL, read_ratings
from benchmarks.results import read_result
from benchmarks.stats import BootstrapConfig, correlation

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TIFA = DATA / "tifa160" / "human_annotations_with_scores.json"
DSG = DATA / "dsg-tifa160" / "tifa160-likert-anns.csv"
needs_tifa = pytest.mark.skipif(not TIFA.is_file(), reason=f"needs TIFA v1.0's human judgements at {TIFA}")
needs_dsg = pytest.mark.skipif(not DSG.is_file(), reason=f"needs DSG's TIFA160 Likert ratings at {DSG}")

FAST = BootstrapConfig(n_resamples=200, seed=0)
TIFA_METRICS = ["meteor", "bleu", "rouge", "spice", "clipscore_vitb32", "tifa_vilt", "tifa_git-large",
                "tifa_ofa-large", "tifa_blip2-flant5xl", "tifa_mplug-large"]


def tifa_records() -> dict:
    return json.loads(TIFA.read_text())


def table_of(result) -> pd.DataFrame:
    frame = pd.DataFrame(result.tables["correlations"])
    return frame[frame["group"] == "all"].set_index(["score", "method"])


def one_line_cli_error(args: list[str]) -> str:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1, res.output
    assert "Traceback" not in res.output
    return lines[0]


# --- TIFA alone: the published metric-vs-human table ------------------------------------------------


@needs_tifa
def test_tifa_alone_reproduces_metric_vs_human_correlations(tmp_path):
    result = correlate(TIFA, None, tmp_path / "o", bootstrap=FAST, plot=False)
    records = list(tifa_records().values())
    human = [r["human_avg"] for r in records]
    assert result.settings["target"] == "human_avg"
    assert result.settings["score_columns"] == TIFA_METRICS  # every metric column, no id or human_* column
    assert result.settings["group"] == "text_id" and result.settings["n_groups"] == 160
    table = table_of(result)
    for metric in TIFA_METRICS:
        values = [r[metric] for r in records]
        assert table.at[(metric, "spearman"), "value"] == pytest.approx(stats.spearmanr(values, human).statistic, abs=1e-12)
        assert table.at[(metric, "kendall"), "value"] == pytest.approx(stats.kendalltau(values, human).statistic, abs=1e-12)
        assert table.at[(metric, "pearson"), "value"] == pytest.approx(stats.pearsonr(values, human).statistic, abs=1e-12)
        for method in ("spearman", "kendall"):
            row = table.loc[(metric, method)]
            assert row["ci_low"] <= row["value"] <= row["ci_high"]
            assert row["n"] == 800


@needs_tifa
def test_tifa_as_written_on_the_command_line(tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["correlate", str(TIFA), "--target", "human_avg", "--score", "clipscore_vitb32",
                                   "--score", "tifa_mplug-large", "-o", str(out), "--bootstrap", "200"])
    assert res.exit_code == 0, res.output
    assert "text_id groups (160 groups)" in res.output
    result = read_result(out / "result.json")
    assert [row.name for row in result.rows] == ["clipscore_vitb32", "tifa_mplug-large"]
    assert result.inputs[0].role == "ratings" and result.settings["ratings_format"] == "tifa"
    assert (out / "correlate.png").is_file()
    records = list(tifa_records().values())
    want = stats.kendalltau([r["tifa_mplug-large"] for r in records], [r["human_avg"] for r in records]).statistic
    assert result.rows[1].values["kendall"].value == pytest.approx(want)


# --- the grouped bootstrap ------------------------------------------------------------------------


def test_grouped_bootstrap_resamples_whole_groups_with_known_extremes():
    # Group a rises (rho +1 on its own), group b falls (rho -1). A resample of two groups is
    # {a, a} (rho +1), {b, b} (rho -1) or {a, b} (the full value), each of the first two a
    # quarter of the time, so the 95% percentile interval runs exactly from -1 to +1. Rows
    # resampled one by one almost never come from one group only: that interval is narrower.
    x = list(range(20))
    y = list(range(10)) + list(range(19, 9, -1))
    groups = ["a"] * 10 + ["b"] * 10
    config = BootstrapConfig(n_resamples=1000, seed=0, method="percentile")
    est = correlation(x, y, "spearman", config, groups=groups)
    assert est.value == pytest.approx(stats.spearmanr(x, y).statistic)
    assert (est.ci_low, est.ci_high) == (-1.0, 1.0)
    assert est.ci_low <= est.value <= est.ci_high
    rows = correlation(x, y, "spearman", config, groups=[str(i) for i in range(20)])
    assert -1.0 < rows.ci_low <= rows.value <= rows.ci_high < 1.0


def test_grouped_bootstrap_through_correlate_and_settings(tmp_path):
    x = list(range(20))
    y = list(range(10)) + list(range(19, 9, -1))
    frame = pd.DataFrame({"image": [f"{i}.png" for i in x], "prompt": ["a"] * 10 + ["b"] * 10, "m": x, "human": y})
    path = tmp_path / "r.csv"
    frame.to_csv(path, index=False)
    config = BootstrapConfig(n_resamples=1000, seed=0, method="percentile")
    result = correlate(path, None, tmp_path / "o", target="human", score_columns=["m"], group="prompt",
                       bootstrap=config, plot=False)
    row = table_of(result).loc[("m", "spearman")]
    assert (row["ci_low"], row["ci_high"]) == (-1.0, 1.0)
    assert result.settings["group"] == "prompt" and result.settings["n_groups"] == 2
    ungrouped = correlate(path, None, tmp_path / "o2", target="human", score_columns=["m"], bootstrap=config, plot=False)
    assert ungrouped.settings["group"] is None and ungrouped.settings["bootstrap_unit"] == "row"
    assert table_of(ungrouped).at[("m", "spearman"), "ci_low"] > -1.0


# --- every reader layout gives the same result -------------------------------------------------------


@needs_tifa
def test_every_reader_format_gives_the_same_result(tmp_path):
    records = tifa_records()
    flat = {k: {f: v for f, v in r.items() if f != "human_scores"} for k, r in records.items()}
    frame = pd.DataFrame([{"key": k, **r} for k, r in flat.items()])
    files = {
        "json-dict": tmp_path / "dict.json",
        "json-list": tmp_path / "list.json",
        "csv": tmp_path / "table.csv",
        "parquet": tmp_path / "table.parquet",
    }
    files["json-dict"].write_text(json.dumps(flat))
    files["json-list"].write_text(json.dumps(list(flat.values())))
    frame.to_csv(files["csv"], index=False)
    frame.to_parquet(files["parquet"], index=False)
    tables = {}
    for layout, path in files.items():
        result = correlate(path, None, tmp_path / layout, bootstrap=FAST, plot=False,
                           score_columns=["clipscore_vitb32", "tifa_mplug-large"])
        assert result.settings["ratings_layout"] == layout and result.settings["ratings_format"] == "tifa"
        tables[layout] = table_of(result)[["value", "ci_low", "ci_high", "n"]]
    for layout, table in tables.items():
        pd.testing.assert_frame_equal(table, tables["json-dict"], check_exact=False, rtol=1e-12, obj=layout)
    # and the original file, with its list column, is the json-dict case
    original = correlate(TIFA, None, tmp_path / "orig", bootstrap=FAST, plot=False,
                         score_columns=["clipscore_vitb32", "tifa_mplug-large"])
    pd.testing.assert_frame_equal(table_of(original)[["value", "ci_low", "ci_high", "n"]], tables["json-dict"])


def test_json_dict_key_becomes_a_column_and_generic_tables_find_their_image_column(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"x/1.png": {"rating": 3, "m": 0.5}, "x/2.png": {"rating": 4, "m": 0.7}}))
    table = read_ratings(path)
    assert table.kind == "table" and table.image_column == "key"
    assert list(table.frame["key"]) == ["x/1.png", "x/2.png"]
    csv = tmp_path / "r.csv"
    csv.write_text("picture,rating\na.png,1\n")
    assert read_ratings(csv).image_column is None
    assert read_ratings(csv, image_column="picture").image_column == "picture"


# --- DSG's per-worker Likert CSV ------------------------------------------------------------------------


@needs_dsg
def test_dsg_aggregation_is_the_mean_answer_per_image():
    table = read_ratings(DSG)
    assert table.kind == "dsg-likert" and table.default_target == "answer" and table.group_column == "source_id"
    raw = pd.read_csv(DSG)
    want = raw.groupby(["source_id", "t2i_model"])["answer"].agg(["mean", "size"])
    got = table.frame.set_index(["source_id", "t2i_model"])
    assert len(got) == len(want) == 800
    got = got.loc[want.index]
    np.testing.assert_allclose(got["answer"].to_numpy(), want["mean"].to_numpy())
    assert (got["n_ratings"].to_numpy() == want["size"].to_numpy()).all()
    assert len(table.per_worker) == len(raw)


@needs_dsg
@needs_tifa
def test_dsg_ids_join_all_800_tifa_images_and_the_generator_mapping_fits():
    dsg = read_ratings(DSG)
    records = tifa_records()
    tifa_paths = {r["image_path"] for r in records.values()}
    assert set(dsg.frame["image_path"]) == tifa_paths and len(tifa_paths) == 800
    assert set(dsg.frame["key"]) == set(records)
    # The mapping of DSG's generator names to TIFA's: the mean Likert rating tracks TIFA's
    # human_avg far better under it than with any two generators swapped.
    raw = pd.read_csv(DSG).groupby(["source_id", "t2i_model"])["answer"].mean()

    def rho(mapping):
        human = [records[f"{s}_{mapping[m]}"]["human_avg"] for s, m in raw.index]
        return stats.spearmanr(human, raw.to_numpy()).statistic

    best = rho(DSG_TO_TIFA_MODEL)
    assert best > 0.8
    names = list(DSG_TO_TIFA_MODEL)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            swapped = dict(DSG_TO_TIFA_MODEL)
            swapped[names[i]], swapped[names[j]] = swapped[names[j]], swapped[names[i]]
            assert rho(swapped) < best - 0.05


@needs_dsg
@needs_tifa
def test_tifa_metrics_against_dsg_likert_with_fleiss_kappa(tmp_path):
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    result = correlate(TIFA, DSG, tmp_path / "o", score_columns=["tifa_mplug-large", "human_avg"], bootstrap=FAST,
                       plot=False)
    assert result.settings["target"] == "answer" and result.settings["group"] == "source_id"
    raw = pd.read_csv(DSG)
    pivot = raw.pivot_table(index=["source_id", "t2i_model"], columns="worker_id", values="answer").dropna()
    counts, _ = aggregate_raters(pivot.to_numpy().astype(int))
    want = fleiss_kappa(counts, method="fleiss")
    summary = {r["statistic"]: r for r in result.tables["inter_annotator"]}
    assert summary["fleiss_kappa"]["value"] == pytest.approx(want, abs=1e-12)
    assert summary["fleiss_kappa"]["n_images"] == len(pivot) == 796
    assert result.settings["inter_annotator"]["fleiss_kappa"] == pytest.approx(want)
    assert len(result.tables["inter_annotator_pairs"]) == 10
    # DSG's mean rating against TIFA's human_avg, image by image
    records = tifa_records()
    means = raw.groupby(["source_id", "t2i_model"])["answer"].mean()
    human = [records[f"{s}_{DSG_TO_TIFA_MODEL[m]}"]["human_avg"] for s, m in means.index]
    assert table_of(result).at[("human_avg", "spearman"), "value"] == pytest.approx(
        stats.spearmanr(human, means.to_numpy()).statistic)


# --- scores.jsonl from clis score, next to a published table ------------------------------------------------


@needs_tifa
def test_scores_jsonl_joins_tifa_by_trailing_path_and_sits_next_to_clipscore(tmp_path):
    records = tifa_records()
    rng = np.random.default_rng(1)
    lines = []
    clis = {}
    for key, r in records.items():
        value = float(20 * r["human_avg"] + rng.normal(0, 10))
        clis[r["image_path"]] = value
        lines.append(json.dumps({"layout_id": r["text_id"], "image": f"/data/tifa/{r['image_path']}", "clis": value,
                                 "clis_i": None, "clis_l": None, "global": None, "instances": [], "error": None}))
    scores = tmp_path / "scores.jsonl"
    scores.write_text("\n".join(lines) + "\n")
    result = correlate(scores, TIFA, tmp_path / "o", score_columns=["clipscore_vitb32"], bootstrap=FAST, plot=False)
    assert [row.name for row in result.rows] == ["clis", "clipscore_vitb32"]
    assert result.settings["group"] == "text_id"
    table = table_of(result)
    human = [r["human_avg"] for r in records.values()]
    want_clis = stats.spearmanr([clis[r["image_path"]] for r in records.values()], human).statistic
    want_clip = stats.spearmanr([r["clipscore_vitb32"] for r in records.values()], human).statistic
    assert table.at[("clis", "spearman"), "value"] == pytest.approx(want_clis)
    assert table.at[("clipscore_vitb32", "spearman"), "value"] == pytest.approx(want_clip)
    assert table.at[("clis", "spearman"), "n"] == 800


# --- bad inputs: one line, exit 2 -----------------------------------------------------------------------------


@pytest.mark.parametrize("name,text,message", [
    ("r.json", '{"a": {"image_path": "a.jpg", "text_id": "p", "human_avg": "high", "m": 1}}',
     r"r\.json: record 'a', field 'human_avg': 'high' is not a number"),
    ("r.json", '[{"image": "a.png", "h": 1, "m": 1}, 7]', r"r\.json: record 2: expected an object, found int"),
    ("r.json", '[{"image": "a.png", "h": 1, "m": {"x": 1}}]', r"r\.json: record 1, field 'm': a nested object"),
    ("r.json", '{"a": NaN}', r"r\.json: invalid JSON"),
    ("r.json", '[]', r"r\.json: no records"),
    ("r.csv", "image,h,m\na.png,1,2\na.png,2,3\n", r"r\.csv: row 2, column 'image': duplicated id 'a\.png' \(first at row 1\)"),
    ("r.csv", "image,h,m\na.png,1,2\nb.png,2,x\n", r"r\.csv: row 2, column 'm': 'x' is not a number"),
    ("r.csv", "image,h,m\na.png,1,2\n", r"r\.csv: missing column 'nope' \(named by --score"),
    ("r.parquet", "not parquet at all", r"r\.parquet: not a readable Parquet table"),
    ("dsg.csv", "t2i_model,source_id,worker_id,answer\nsd9,coco_1,w1,3\n", r"dsg\.csv: row 1, column 't2i_model': unknown generator 'sd9'"),
    ("dsg.csv", "t2i_model,source_id,worker_id,answer\nsd1dot1,coco_1,w1,3.5\n", r"dsg\.csv: row 1, column 'answer': '3\.5' is not a whole Likert rating"),
    ("dsg.csv", "t2i_model,source_id,worker_id,answer\nsd1dot1,coco_1,w1,3\nsd1dot1,coco_1,w1,4\n",
     r"dsg\.csv: row 2, column 'worker_id': worker 'w1' rates image 'coco_1_stable_diffusion_v1_1\.jpg' twice"),
])
def test_bad_ratings_tables_are_one_line_errors_with_exit_2(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    args = ["correlate", str(path), "-o", str(tmp_path / "o"), "--no-plot", "--bootstrap", "50"]
    if "image,h,m" in text or name == "r.parquet" or '"h"' in text:
        args += ["--target", "h", "--score", "nope" if "nope" in message else "m"]
    line = one_line_cli_error(args)
    assert line.startswith("error: ")
    assert re.search(message, line), line


def test_cli_errors_for_options_and_missing_pieces(tmp_path):
    csv = tmp_path / "r.csv"
    csv.write_text("image,h,m,prompt\na.png,1,2,p\nb.png,2,3,q\nc.png,3,1,q\n")
    base = ["correlate", str(csv), "-o", str(tmp_path / "o"), "--no-plot", "--bootstrap", "50"]
    assert "--group 'nope': no such column" in one_line_cli_error(base + ["--target", "h", "--group", "nope"])
    assert "cannot tell which column is the target" in one_line_cli_error(base)
    assert "--score 'h': that is the target" in one_line_cli_error(base + ["--target", "h", "--score", "h"])
    assert "missing column 'pic' (named by --image-column" in one_line_cli_error(base + ["--target", "h", "--image-column", "pic"])
    scores = tmp_path / "s.jsonl"
    scores.write_text(json.dumps({"layout_id": "l", "image": "a.png", "clis": 1.0}) + "\n")
    assert "a scores file holds no target" in one_line_cli_error(["correlate", str(scores), "-o", str(tmp_path / "o2")])
    only_ids = tmp_path / "ids.csv"
    only_ids.write_text("image,h\na.png,1\nb.png,2\nc.png,3\n")
    assert "no metric column to correlate with 'h'" in one_line_cli_error(
        ["correlate", str(only_ids), "-o", str(tmp_path / "o3"), "--target", "h"])
    res = CliRunner().invoke(app, base + ["--target", "h"])  # m is the one metric; prompt is text
    assert res.exit_code == 0, res.output


def test_image_column_option_joins_scores_and_groups_by_layout(tmp_path):
    clis = [50.0, 61.0, 58.0, 70.0, 77.0, 90.0, 66.0, 83.0]
    rating = [1, 3, 2, 4, 4, 5, 3, 4]
    scores = tmp_path / "scores.jsonl"
    scores.write_text("".join(json.dumps({"layout_id": f"l{i // 2}", "image": f"out/l{i // 2}/{i % 2}.png", "clis": c,
                                          "instances": [], "error": None}) + "\n" for i, c in enumerate(clis)))
    targets = tmp_path / "t.parquet"
    pd.DataFrame({"file": [f"l{i // 2}/{i % 2}.png" for i in range(8)], "rating": rating,
                  "m": [float(v) for v in range(8)]}).to_parquet(targets, index=False)
    result = correlate(scores, targets, tmp_path / "o", image_column="file", score_columns=["m"], bootstrap=FAST,
                       plot=False)
    assert result.settings["image_column"] == "file" and result.settings["group"] == "layout_id"
    assert result.settings["n_groups"] == 4 and result.settings["bootstrap_unit"] == "layout_id"
    table = table_of(result)
    assert table.at[("clis", "spearman"), "value"] == pytest.approx(stats.spearmanr(clis, rating).statistic)
    assert table.at[("m", "kendall"), "value"] == pytest.approx(stats.kendalltau(range(8), rating).statistic)
    with pytest.raises(Exception, match=r"t\.parquet: missing column 'image_id' \(named by --image-column"):
        correlate(scores, targets, tmp_path / "o", image_column="image_id", bootstrap=FAST, plot=False)
