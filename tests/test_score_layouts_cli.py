"""``clis score-layouts``: JSONL records in input order, the pool, combination weights, errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from clis.cli import app
from clis.layout_score import LayoutScoreConfig, LayoutScorer
from clis.layout_score.pool import PoolExample, write_pool

runner = CliRunner()

CUP, TABLE = [0.4, 0.3, 0.2, 0.2], [0.1, 0.5, 0.8, 0.5]
LAYOUTS = [
    {"id": "tea", "caption": "a cup on a table", "objects": [
        {"id": "cup-1", "label": "cup", "bbox": CUP}, {"id": "table-1", "label": "table", "bbox": TABLE}],
     "relations": [{"subject": ["cup-1"], "relation": "on", "object": ["table-1"]}]},
    {"id": "solo", "objects": [{"id": "cat-1", "label": "cat", "bbox": [0.2, 0.2, 0.5, 0.5]}]},
    {"id": "unknown-relation", "objects": [
        {"id": "cup-1", "label": "cup", "bbox": CUP}, {"id": "table-1", "label": "table", "bbox": TABLE}],
     "relations": [{"subject": ["cup-1"], "relation": "under", "object": ["table-1"]}]},
]


@pytest.fixture
def files(tmp_path):
    layouts = tmp_path / "layouts.json"
    layouts.write_text(json.dumps(LAYOUTS), encoding="utf-8")
    pool = tmp_path / "pool.jsonl"
    # Two examples of "on": the exact same geometry (score 1) and the vertically swapped one
    # (score 0.7 / 2.3, see test_layout_geometry). 98th percentile: 0.304348 + 0.98 * 0.695652 = 0.986087
    write_pool([PoolExample(subject="cup", relation="on", object="table", subject_box=CUP, object_box=TABLE),
                PoolExample(subject="cup", relation="on", object="table", subject_box=[0.4, 0.5, 0.2, 0.2],
                            object_box=[0.1, 0.0, 0.8, 0.5])], pool)
    return layouts, pool


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_score_layouts_with_pool(files, tiny_models, tmp_path):
    layouts, pool = files
    out = tmp_path / "scores.jsonl"
    result = runner.invoke(app, ["score-layouts", str(layouts), "--out", str(out), "--llm", tiny_models["causal_lm"],
                                 "--pool", str(pool), "--text-embedder", "none", "--weights", "llm=0.25,geometry=0.75"])
    assert result.exit_code == 0, result.output
    records = read_jsonl(out)
    assert [r["id"] for r in records] == ["tea", "solo", "unknown-relation"]
    tea, solo, unknown = records
    assert set(tea) >= {"id", "clis_l", "llm", "geometry", "pairs", "unknown_pairs", "manifest"}
    assert tea["geometry"] == pytest.approx(98.6087, abs=1e-3)
    # clis_l = 0.25 * llm + 0.75 * geometry
    assert tea["clis_l"] == pytest.approx(0.25 * tea["llm"] + 0.75 * tea["geometry"], abs=1e-3)
    pair = tea["pairs"][0]
    assert (pair["subject"], pair["object"], pair["relations"]) == ("cup-1", "table-1", ["on"])
    assert pair["statements"][0]["statement"] == "The cup is above the table."
    assert pair["geometry"][0]["matches"] == 2 and set(pair["geometry"][0]["terms"]) == {"size", "dist", "dir"}
    # one object: the documented neutral result
    assert solo["clis_l"] == 50.0 and solo["pairs"] == [] and "one object" in solo["notes"][0]
    # a relation the pool has never seen: unknown (not 0), geometry null, CLIS-L falls back to the LLM
    assert unknown["unknown_pairs"] == 1 and unknown["geometry"] is None
    assert unknown["clis_l"] == pytest.approx(unknown["llm"], abs=1e-3)
    assert "no example of relation 'under'" in result.output
    manifest = json.loads((tmp_path / "scores.jsonl.manifest.json").read_text(encoding="utf-8"))
    assert manifest["id"] == tea["manifest"]["id"] and manifest["pool"]["examples"] == 2
    # the weights given, and the default of the one not given
    assert manifest["settings"]["weights"] == {"llm": 0.25, "geometry": 0.75, "pair_prior": 1.0}


def test_pool_only_scoring(files):
    _, pool = files
    from clis.layout import Layout

    scorer = LayoutScorer(LayoutScoreConfig(llm="none", pool=str(pool), text_embedder="none", percentile=50))
    result = scorer.score_layouts([Layout.model_validate(LAYOUTS[0])])[0]
    # median of (1.0, 0.304348) = 0.652174
    assert result.llm is None and result.geometry == pytest.approx(65.2174, abs=1e-3)
    assert result.clis_l == result.geometry


def test_vertically_swapped_layout_scores_lower_geometrically(tmp_path):
    from clis.layout import Layout

    pool = tmp_path / "one.jsonl"
    write_pool([PoolExample(subject="cup", relation="on", object="table", subject_box=CUP, object_box=TABLE)], pool)
    scorer = LayoutScorer(LayoutScoreConfig(llm="none", pool=str(pool), text_embedder="none"))
    swapped = json.loads(json.dumps(LAYOUTS[0]))
    swapped["objects"][0]["bbox"], swapped["objects"][1]["bbox"] = [0.4, 0.5, 0.2, 0.2], [0.1, 0.0, 0.8, 0.5]
    good, bad = scorer.score_layouts([Layout.model_validate(LAYOUTS[0]), Layout.model_validate(swapped)])
    # identical to the only example -> 100; swapped: size 1, dist 1, dir 0 -> p = -1 -> 0.7 / 2.3
    assert good.clis_l == pytest.approx(100.0)
    assert bad.clis_l == pytest.approx(100 * 0.7 / 2.3)


@pytest.mark.parametrize("args, message", [
    (["--weights", "llm=a"], "--weights: 'llm=a': 'a' is not a number"),
    (["--weights", "colour=1"], "unknown weight 'colour'"),
    (["--llm", "none", "--pool", "none"], "needs an LLM or a pool"),
    (["--percentile", "120"], "percentile"),
])
def test_bad_options_give_one_line(files, tmp_path, args, message):
    layouts, _ = files
    result = runner.invoke(app, ["score-layouts", str(layouts), "--out", str(tmp_path / "o.jsonl"), *args])
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output


def test_malformed_pool_gives_one_line(files, tiny_models, tmp_path):
    layouts, _ = files
    bad = tmp_path / "bad_pool.jsonl"
    bad.write_text('{"clis_pool": 1}\n{"subject": "cup", "relation": "on", "object": "table", "subject_box": '
                   '"oops", "object_box": [0, 0, 1, 1]}\n', encoding="utf-8")
    result = runner.invoke(app, ["score-layouts", str(layouts), "--out", str(tmp_path / "o.jsonl"),
                                 "--llm", tiny_models["causal_lm"], "--pool", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}: line 2 (example 1): field 'subject_box'" in " ".join(result.output.split())


def test_bad_layouts_file(tmp_path, tiny_models):
    broken = tmp_path / "layouts.json"
    broken.write_text('[{"id": "x", "objects": [{"id": "a", "label": "cup", "bbox": [0.1, 0.1, 0]}]}]', encoding="utf-8")
    result = runner.invoke(app, ["score-layouts", str(broken), "--llm", tiny_models["causal_lm"],
                                 "--out", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2 and "layouts.json" in result.output and "bbox" in result.output
