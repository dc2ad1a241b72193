"""The pair prior (clis.layout_score.scene_prior), the NSR-1K reader and the embedded pool."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pytest
from scipy.stats import norm

from clis.formats import validate_file
from clis.layout import Layout
from clis.layout_score import LayoutScoreConfig, LayoutScorer
from clis.layout_score.embedded_pool import DEFAULT_POOL, EVALUATION_SUBTYPE, resolve_pool
from clis.layout_score.pool import CategoryMatcher, Pool
from clis.layout_score.scene_prior import (
    MIN_BANDWIDTH, PAIR_FEATURES, UNARY_FEATURES, ScenePrior, pair_features, unary_features,
)

# The features a vertical flip changes (y -> 1 - y - h): heights and height differences.
FLIP_CHANGES = {"cy", "top", "bottom", "dy", "top_gap", "bottom_gap"}

# Skies sit at the top, roads at the bottom; skies are wide and short. Five slightly varied scenes.
SCENES = [[("sky", [0.0, 0.0, 1.0, 0.3 + d]), ("road", [0.1 - d, 0.6 + d, 0.8, 0.3]), ("car", [0.4, 0.55, 0.2, 0.15 + d])]
          for d in (0.0, 0.02, 0.04, 0.06, 0.08)]
SCENE = [("sky", [0.0, 0.0, 1.0, 0.34]), ("road", [0.05, 0.64, 0.8, 0.3]), ("car", [0.4, 0.55, 0.2, 0.2])]


def flip(scene):
    return [(label, [x, 1 - y - h, w, h]) for label, (x, y, w, h) in scene]


def mirror(scene):
    return [(label, [1 - x - w, y, w, h]) for label, (x, y, w, h) in scene]


def test_features_by_hand():
    # box [0.2, 0.1, 0.4, 0.5]: centre (0.4, 0.35), area 0.2, aspect 0.8
    f = unary_features([[0.2, 0.1, 0.4, 0.5]])
    assert {k: float(v[0]) for k, v in f.items()} == pytest.approx(
        {"cy": 0.35, "top": 0.1, "bottom": 0.6, "log_area": math.log(0.2), "log_aspect": math.log(0.8),
         "cx_offset": 0.1})
    # a [0, 0, 0.4, 0.4] and b [0.2, 0.2, 0.4, 0.4]: overlap 0.2 x 0.2 = 0.04, union 0.28
    p = pair_features([[0.0, 0.0, 0.4, 0.4]], [[0.2, 0.2, 0.4, 0.4]])
    assert {k: float(v[0]) for k, v in p.items()} == pytest.approx(
        {"log_area_ratio": 0.0, "dy": 0.2, "top_gap": 0.2, "bottom_gap": 0.2, "abs_dx": 0.2, "iou": 0.04 / 0.28})
    assert set(UNARY_FEATURES) | set(PAIR_FEATURES) == set(MIN_BANDWIDTH)


def test_object_density_is_the_smoothed_kernel_mixture():
    # One label seen twice (cy 0.2 and 0.3) among four objects; compare p / q with scipy's normal pdf.
    scenes = [[("kite", [0.4, 0.15, 0.1, 0.1]), ("dog", [0.1, 0.7, 0.2, 0.2])],
              [("kite", [0.5, 0.25, 0.1, 0.1]), ("dog", [0.6, 0.6, 0.2, 0.2])]]
    prior = ScenePrior(scenes, strength=2.0)
    x = 0.22
    kite = np.array([0.2, 0.3])
    blind = np.array([0.2, 0.8, 0.3, 0.7])
    h_kite = max(1.06 * kite.std() * 2 ** -0.2, MIN_BANDWIDTH["cy"])
    h_all = max(1.06 * blind.std() * 4 ** -0.2, MIN_BANDWIDTH["cy"])
    g = norm.pdf(x, blind, h_all).mean()
    g_flipped = norm.pdf(x, 1 - blind, h_all).mean()
    p = (2 * norm.pdf(x, kite, h_kite).mean() + 2.0 * g) / (2 + 2.0)
    q = (g + g_flipped) / 2
    _, terms = prior.objects.evidence({"kite": 1.0}, {f: 0.22 if f == "cy" else 0.5 for f in UNARY_FEATURES}, 2.0)
    assert terms["cy"] == pytest.approx(math.log(p) - math.log(q), rel=1e-9)


def test_real_scene_beats_its_flip_and_its_swap():
    # A pool of five scenes is only heard over the label-blind density with light smoothing.
    prior = ScenePrior(SCENES, strength=1.0)
    real = prior.score(SCENE)
    swapped = list(SCENE)
    swapped[0], swapped[2] = ("sky", SCENE[2][1]), ("car", SCENE[0][1])  # the sky gets the car's box
    assert real.score > 50
    assert prior.score(flip(SCENE)).score < 50
    assert prior.score(swapped).score < 50
    assert real.evidence > prior.score(flip(SCENE)).evidence


def test_mirror_and_object_order_do_not_matter():
    prior = ScenePrior(SCENES)
    base = prior.score(SCENE).score
    assert prior.score(mirror(SCENE)).score == pytest.approx(base, abs=1e-9)
    assert prior.score(SCENE[::-1]).score == pytest.approx(base, abs=1e-9)


def test_labels_the_pool_does_not_know_give_no_evidence_on_what_a_flip_keeps():
    # p = g for an unknown label, and q = g for a feature a flip leaves alone: those terms are 0.
    prior = ScenePrior(SCENES)  # no embedder: exact labels only
    result = prior.score([("zebra", [0.1, 0.2, 0.3, 0.3]), ("kettle", [0.5, 0.5, 0.2, 0.2])])
    assert result.unknown_labels == ["zebra", "kettle"]
    for obj in result.objects:
        assert obj["matches"] == []
        for name, term in obj["terms"].items():
            if name not in FLIP_CHANGES:
                assert term == 0.0


class FixedEmbedder:
    """Label vectors given by hand: 'automobile' is 0.96 similar to 'car', far from the rest."""

    VECTORS = {"car": [1.0, 0.0, 0.0], "automobile": [0.96, 0.28, 0.0], "sky": [0.0, 1.0, 0.0],
               "road": [0.0, 0.0, 1.0]}

    def encode(self, labels):
        import torch

        return torch.tensor([self.VECTORS[label] for label in labels])


def test_unknown_labels_borrow_from_similar_pool_labels():
    prior = ScenePrior(SCENES, CategoryMatcher(FixedEmbedder()), threshold=0.8)
    assert prior.match("Automobile") == pytest.approx({"car": 0.96})
    renamed = [(("automobile" if label == "car" else label), box) for label, box in SCENE]
    with_car = prior.score(SCENE)
    borrowed = prior.score(renamed)
    assert borrowed.unknown_labels == []
    assert 50 < borrowed.score and abs(borrowed.score - with_car.score) < abs(with_car.score - 50)


def test_scorer_reports_the_pair_prior_per_object_and_pair(tmp_path):
    from clis.layout_score.pool import PoolScene, write_pool

    pool = tmp_path / "scenes.jsonl"
    write_pool([PoolScene(scene=scene) for scene in SCENES], pool)
    scorer = LayoutScorer(LayoutScoreConfig(llm="none", pool=str(pool), text_embedder="none"), cache=None)
    layout = Layout.model_validate({"id": "street", "objects": [
        {"id": f"{label}-1", "label": label, "bbox": box} for label, box in SCENE]})
    [result] = scorer.score_layouts([layout])
    direct = ScenePrior(SCENES, strength=scorer.config.pair_strength, temperature=scorer.config.pair_temperature)
    assert result.pair_prior == pytest.approx(direct.score(SCENE).score)
    assert result.clis_l == result.pair_prior and result.llm is None and result.geometry is None
    record = result.to_dict()
    assert [o["label"] for o in record["objects"]] == ["sky", "road", "car"]
    assert all(len(p["pair_prior_evidence"]) == 2 for p in record["pairs"]) and len(record["pairs"]) == 3


def test_nsr_records_read_as_layouts(tmp_path):
    path = tmp_path / "nsr.json"
    path.write_text(json.dumps([
        {"id": 5, "image_id": 9, "prompt": "two dogs and a cat", "sub-type": "real", "type": "mscoco",
         "object_list": [["dog", [0.1, 0.5, 0.3, 0.3]], ["dog", [0.5, 0.5, 0.3, 0.3]], ["cat", [0.4, 0.1, 0.2, 0.2]]]},
        {"id": 6, "image_id": 10, "prompt": "a cup to the left of a bowl", "relation": "left",
         "obj1": ["cup", [0.1, 0.4, 0.2, 0.2]], "obj2": ["bowl", [0.6, 0.4, 0.3, 0.2]]},
        {"id": 7, "prompt": "broken", "object_list": [["dog", [0.0, 0.0, 0.0, 0.0]]]},
        {"id": 8, "prompt": "bad word", "relation": "behind", "obj1": ["a", [0, 0, 0.1, 0.1]], "obj2": ["b", [0, 0, 0.1, 0.1]]},
    ]), encoding="utf-8")
    report = validate_file(path)
    assert report.format == "nsr"
    counting, spatial = report.layouts
    assert [o.id for o in counting.objects] == ["dog-1", "dog-2", "cat-1"]
    assert counting.caption == "two dogs and a cat" and counting.model_extra["sub-type"] == "real"
    assert spatial.relations[0].relation == "left of" and spatial.relations[0].subject == ["cup-1"]
    assert spatial.model_extra["nsr_relation"] == "left"
    assert [bad.layout_id for bad in report.invalid] == ["7", "8"]
    assert "objects[0].bbox" in report.invalid[0].problems[0] and "degenerate" in report.invalid[0].problems[0]
    assert "field relation: expected one of" in report.invalid[1].problems[0]


def test_embedded_pool_ships_provenance_and_no_evaluation_record():
    path = resolve_pool(DEFAULT_POOL)
    pool = Pool.load(path)
    assert len(pool.scenes) > 1000 and pool.size > 500
    assert "CC BY 4.0" in pool.header["licence"] and "MIT" in pool.header["licence"]
    assert "NSR-1K" in pool.header["provenance"]
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        sources = [json.loads(line).get("source", "") for line in handle][1:]
    assert sources and all(source.startswith("layout:") for source in sources)
    assert (path.parent / "README.md").exists()


NSR_DIR = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / "nsr-1k"


@pytest.mark.skipif(not NSR_DIR.is_dir(), reason="needs ../shared/data/nsr-1k")
def test_embedded_pool_holds_no_evaluation_layout():
    records = json.loads((NSR_DIR / "counting.val.json").read_text(encoding="utf-8"))
    evaluation = [r for r in records if r.get("sub-type") == EVALUATION_SUBTYPE]
    assert len(evaluation) == 351

    def boxes(objects):
        return tuple(sorted(tuple(round(v, 6) for v in box) for _, box in objects))

    pool = Pool.load(resolve_pool(DEFAULT_POOL))
    scenes = {boxes(scene.scene) for scene in pool.scenes}
    assert not any(boxes(r["object_list"]) in scenes for r in evaluation)
    # the template records of the evaluation images are held out too (they may repeat its boxes)
    images = {r["image_id"] for r in evaluation}
    same_image = [r for r in records if r["image_id"] in images and r.get("sub-type") != EVALUATION_SUBTYPE]
    assert same_image and not any(boxes(r["object_list"]) in scenes for r in same_image)


def test_pool_cli_builds_scenes_from_nsr_records_and_shows_the_embedded_pool(tmp_path):
    from typer.testing import CliRunner

    from clis.cli import app

    source = tmp_path / "nsr.json"
    source.write_text(json.dumps([
        {"id": 1, "image_id": 3, "prompt": "a cat and a bed", "type": "template", "sub-type": "two-categories",
         "object_list": [["cat", [0.3, 0.2, 0.3, 0.3]], ["bed", [0.0, 0.4, 1.0, 0.6]]]},
        {"id": 2, "image_id": 4, "prompt": "a cup left of a bowl", "relation": "left",
         "obj1": ["cup", [0.1, 0.4, 0.2, 0.2]], "obj2": ["bowl", [0.6, 0.4, 0.3, 0.2]]},
    ]), encoding="utf-8")
    runner = CliRunner()
    out = tmp_path / "pool.jsonl.gz"
    built = runner.invoke(app, ["pool", "build", str(source), "--out", str(out)])
    assert built.exit_code == 0, built.output
    pool = Pool.load(out)
    assert [s.scene for s in pool.scenes] == [[("cat", [0.3, 0.2, 0.3, 0.3]), ("bed", [0.0, 0.4, 1.0, 0.6])],
                                             [("cup", [0.1, 0.4, 0.2, 0.2]), ("bowl", [0.6, 0.4, 0.3, 0.2])]]
    assert pool.counts() == {"left of": 1}
    shown = runner.invoke(app, ["pool", "info", "embedded:nsr1k"])
    assert shown.exit_code == 0 and "licence: NSR-1K: MIT" in shown.output and "scenes: 1368" in shown.output
    unknown = runner.invoke(app, ["pool", "info", "embedded:nope"])
    assert unknown.exit_code == 2 and "unknown embedded pool 'embedded:nope'" in unknown.output


@pytest.mark.parametrize("args, field", [
    (["--weights", "llm=inf"], "weights.llm"),
    (["--weights", "pair_prior=nan"], "weights.pair_prior"),
])
def test_score_layouts_refuses_weights_that_are_not_finite(tmp_path, args, field):
    from typer.testing import CliRunner

    from clis.cli import app

    layouts = tmp_path / "l.json"
    layouts.write_text(json.dumps([{"id": "a", "objects": [{"id": "cat-1", "label": "cat", "bbox": [0.1, 0.1, 0.3, 0.3]}]}]),
                       encoding="utf-8")
    out = tmp_path / "o.jsonl"
    result = CliRunner().invoke(app, ["score-layouts", str(layouts), "--out", str(out), *args])
    assert result.exit_code == 2 and f"options: {field}:" in result.output and "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("setting", ["pair_strength", "pair_temperature"])
def test_pair_prior_settings_must_be_finite(setting):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        LayoutScoreConfig(llm="none", **{setting: float("inf")})
