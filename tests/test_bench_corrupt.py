"""The corruption study: the corruptions themselves, the sensitivity figures, and a run end to
end on the example photos with the tiny models."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from PIL import Image
from typer.testing import CliRunner

from benchmarks.cli import app
from benchmarks.corrupt import corrupt
from benchmarks.corruptions import CORRUPTIONS, NotApplicable, apply, target_object
from benchmarks.results import read_result
from benchmarks.stats import BootstrapConfig
from clis.layout import Layout

FAST = BootstrapConfig(n_resamples=100, seed=0)
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def make_layout(objects, layout_id="t"):
    return Layout.model_validate({"id": layout_id, "caption": "c", "objects": objects})


TWO = [
    {"id": "cup-1", "label": "cup", "attributes": ["red"], "bbox": [0.1, 0.1, 0.2, 0.2]},
    {"id": "table-1", "label": "table", "bbox": [0.0, 0.5, 1.0, 0.5]},
]


def iou(a, b):
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    iw = max(0.0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    ih = max(0.0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter)


# --- the corruptions ------------------------------------------------------------------------


def test_target_is_smallest_object_under_half_the_canvas():
    layout = make_layout([{"id": "big", "label": "a", "bbox": [0, 0, 1, 1]},
                          {"id": "mid", "label": "b", "bbox": [0, 0, 0.5, 0.5]},
                          {"id": "small", "label": "c", "bbox": [0.6, 0.6, 0.1, 0.1]}])
    assert target_object(layout).id == "small"


@pytest.mark.parametrize("level,fraction", [(1, 0.25), (2, 0.5), (3, 1.0)])
def test_shift_moves_box_by_fraction_of_its_size(level, fraction):
    _, moved = apply("shift", level, Image.new("RGB", (32, 32)), make_layout(TWO))
    box = moved.get_object("cup-1").bbox
    assert box == pytest.approx([0.1 + 0.2 * fraction, 0.1 + 0.2 * fraction, 0.2, 0.2])
    assert moved.get_object("table-1").bbox == [0.0, 0.5, 1.0, 0.5]
    assert moved.id != "t"  # scorers cache by layout id: a variant must not reuse the clean id


def test_scale_grows_around_centre_and_stays_in_canvas():
    _, grown = apply("scale", 2, Image.new("RGB", (32, 32)), make_layout(TWO))
    assert grown.get_object("cup-1").bbox == pytest.approx([0.0, 0.0, 0.4, 0.4])  # centre 0.2 -> clamped at 0
    _, grown = apply("scale", 3, Image.new("RGB", (32, 32)), make_layout(TWO))
    x, y, w, h = grown.get_object("cup-1").bbox
    assert (w, h) == pytest.approx((0.6, 0.6)) and x >= 0 and y >= 0


def test_swap_boxes_full_swap_and_interpolation():
    clean = make_layout(TWO)
    _, swapped = apply("swap_boxes", 3, Image.new("RGB", (8, 8)), clean)
    assert swapped.get_object("cup-1").bbox == pytest.approx(clean.get_object("table-1").bbox)
    assert swapped.get_object("table-1").bbox == pytest.approx(clean.get_object("cup-1").bbox)
    _, third = apply("swap_boxes", 1, Image.new("RGB", (8, 8)), clean)
    want = [a + (b - a) / 3 for a, b in zip(clean.get_object("cup-1").bbox, clean.get_object("table-1").bbox)]
    assert third.get_object("cup-1").bbox == pytest.approx(want)
    with pytest.raises(NotApplicable):
        apply("swap_boxes", 1, Image.new("RGB", (8, 8)), make_layout(TWO[:1]))


def test_swap_labels_rotates_text_not_boxes():
    clean = make_layout(TWO)
    _, swapped = apply("swap_labels", 1, Image.new("RGB", (8, 8)), clean)
    cup, table = swapped.get_object("cup-1"), swapped.get_object("table-1")
    assert (cup.phrase, table.phrase) == ("table", "red cup")
    assert cup.bbox == clean.get_object("cup-1").bbox
    with pytest.raises(NotApplicable):  # three distinct phrases needed at level 2
        apply("swap_labels", 2, Image.new("RGB", (8, 8)), clean)


def _photo(size=(64, 48), seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def test_occlude_paints_the_requested_share_of_the_box_grey():
    layout = make_layout([{"id": "o", "label": "x", "bbox": [0.25, 0.25, 0.5, 0.5]}])
    image = Image.new("RGB", (80, 80), (10, 200, 30))
    for level, share in ((1, 0.25), (2, 0.5), (3, 1.0)):
        out, same = apply("occlude", level, image, layout)
        grey = (np.asarray(out) == 128).all(axis=2)
        assert grey.sum() == pytest.approx(share * 40 * 40, rel=0.08)
        assert not grey[:20].any() and not grey[60:].any()  # nothing outside the box
        assert same is layout


def test_drop_changes_only_the_box_region_more_with_severity():
    layout = make_layout([{"id": "o", "label": "x", "bbox": [0.25, 0.25, 0.5, 0.5]}])
    image = _photo((80, 80))
    before = np.asarray(image).astype(float)
    changes = []
    for level in (1, 2, 3):
        out = np.asarray(apply("drop", level, image, layout)[0]).astype(float)
        assert np.array_equal(out[:10], before[:10]) and np.array_equal(out[:, :10], before[:, :10])
        changes.append(np.abs(out[20:60, 20:60] - before[20:60, 20:60]).mean())
    assert 0 < changes[0] < changes[1]
    filled = np.asarray(apply("drop", 3, image, layout)[0]).astype(float)
    assert filled[30:50, 30:50].std(axis=(0, 1)).max() < 2  # a flat fill, not the noise that was there


def test_noise_and_blur_grow_with_severity_and_noise_is_seeded():
    layout = make_layout(TWO)
    image = _photo((400, 300))  # blur radii are 2, 4 and 8 pixels at this size
    before = np.asarray(image).astype(float)
    for kind in ("noise", "blur"):
        diffs = [np.abs(np.asarray(apply(kind, level, image, layout, seed=3)[0]).astype(float) - before).mean()
                 for level in (1, 2, 3)]
        assert 0 < diffs[0] < diffs[1] < diffs[2], kind
    a = np.asarray(apply("noise", 2, image, layout, seed=5)[0])
    assert np.array_equal(a, np.asarray(apply("noise", 2, image, layout, seed=5)[0]))
    assert not np.array_equal(a, np.asarray(apply("noise", 2, image, layout, seed=6)[0]))


# --- sensitivity figures with a scorer whose answer is known ---------------------------------


class ReferenceScorer:
    """Scores a layout by its boxes' IoU with the clean boxes, and an image by its pixel
    closeness to the clean image: a metric whose sensitivity is known in advance."""

    def __init__(self, clean_layouts, clean_images):
        self.boxes = {l.id: {o.id: o.bbox for o in l.objects} for l in clean_layouts}
        self.pixels = {k: np.asarray(v, dtype=float) for k, v in clean_images.items()}

    def score_pairs(self, pairs):
        for image, layout in pairs:
            base = layout.id.split("~")[0]
            box_score = 100 * np.mean([iou(o.bbox, self.boxes[base][o.id]) for o in layout.objects])
            pixel_score = 100 - np.abs(np.asarray(image, dtype=float) - self.pixels[base]).mean()
            yield {"layout_id": layout.id, "image": None, "clis": (box_score + pixel_score) / 2,
                   "clis_i": pixel_score, "clis_l": box_score, "global": 42.0, "instances": [], "error": None}


@pytest.fixture()
def photo_folder(tmp_path):
    layouts = [
        {"id": "p0", "caption": "c", "objects": [
            {"id": "a", "label": "cup", "bbox": [0.1, 0.1, 0.2, 0.25]},
            {"id": "b", "label": "table", "bbox": [0.0, 0.5, 1.0, 0.5]},
            {"id": "c", "label": "lamp", "bbox": [0.6, 0.05, 0.3, 0.4]}]},
        {"id": "p1", "caption": "c", "objects": [
            {"id": "a", "label": "dog", "bbox": [0.5, 0.4, 0.3, 0.3]},
            {"id": "b", "label": "ball", "bbox": [0.1, 0.1, 0.15, 0.15]}]},
    ]
    (tmp_path / "layouts.json").write_text(json.dumps(layouts))
    (tmp_path / "images").mkdir()
    images = {}
    for k, layout in enumerate(layouts):
        images[layout["id"]] = _photo((64, 48), seed=k)
        images[layout["id"]].save(tmp_path / "images" / f"{layout['id']}.png")
    return tmp_path, [Layout.model_validate(l) for l in layouts], images


def test_sensitivity_figures_for_a_metric_with_known_behaviour(photo_folder, tmp_path):
    folder, layouts, images = photo_folder
    scorer = ReferenceScorer(layouts, images)
    result = corrupt(folder / "images", folder / "layouts.json", tmp_path / "out", scorer=scorer, bootstrap=FAST)
    per_kind = pd.DataFrame(result.tables["per_kind"]).set_index(["score", "kind"])
    for kind in ("shift", "scale", "swap_boxes"):
        assert per_kind.at[("clis_l", kind), "accuracy"] == 1.0
        if kind != "swap_boxes":  # IoU falls with every step
            assert per_kind.at[("clis_l", kind), "tau"] == pytest.approx(-1.0)
    # In p1 the two boxes stop overlapping their origins by severity 2, so severities 2 and 3
    # tie (IoU 0): tau-b of the ladder (0,1,2,3) vs (100, s1, s2, s2); p0 falls at every step.
    tied_ladder = stats.kendalltau([0, 1, 2, 3], [100, 50, 0, 0]).statistic
    assert per_kind.at[("clis_l", "swap_boxes"), "tau"] == pytest.approx((-1.0 + tied_ladder) / 2)
    for kind in ("shift", "scale", "swap_boxes", "swap_labels"):  # the image is untouched
        assert per_kind.at[("clis_i", kind), "n_ties"] == per_kind.at[("clis_i", kind), "n_pairs"]
    for kind in ("blur", "noise", "occlude", "drop"):
        assert per_kind.at[("clis_i", kind), "accuracy"] == 1.0
        assert per_kind.at[("clis_l", kind), "accuracy"] == 0.0  # the layout did not change: all ties
    # swap_labels changes only text; a box-only score cannot see it
    assert per_kind.at[("clis_l", "swap_labels"), "n_ties"] == per_kind.at[("clis_l", "swap_labels"), "n_pairs"]
    # level 2 of swap_labels needs three distinct phrases: only p0 has them, level 3 needs four
    per_level = pd.DataFrame(result.tables["per_level"]).set_index(["score", "kind", "level"])
    assert per_level.at[("clis", "swap_labels", 1), "n"] == 2
    assert per_level.at[("clis", "swap_labels", 2), "n"] == 1
    assert per_level.at[("clis", "swap_labels", 3), "n"] == 0
    row = next(r for r in result.rows if r.name == "global")
    assert row.values["accuracy"].value == 0.0  # a constant score never prefers the clean image
    # tau over all kinds pools the 16 (image, kind) ladders of clis_l: shift and scale fall at
    # every step (-1, both images), swap_boxes as above, the other 5 kinds leave it constant (0).
    tau = next(r for r in result.rows if r.name == "clis_l").values["tau"]
    assert tau.value == pytest.approx((-4 - 1 + tied_ladder) / 16)
    assert tau.ci_low is not None and tau.ci_low <= tau.value <= tau.ci_high
    schema = (ROOT / "docs" / "results-schema.md").read_text()
    for name, table in (("per_kind", result.tables["per_kind"]), ("per_level", result.tables["per_level"])):
        documented = re.findall(r"`(\w+)`", re.search(rf"^\| `corrupt` \| `{name}` \| (.*) \|$", schema, re.M).group(1))
        assert documented == list(table[0]), name
    variants = pd.read_csv(tmp_path / "out" / "variants.csv")
    assert len(variants) == 2 * (1 + 3 * 8) - 3  # p1 lacks swap_labels 2 and 3, p0 lacks level 3
    assert set(CORRUPTIONS) <= set(variants["kind"])


# --- end to end with the tiny models on the example photos ------------------------------------


@pytest.mark.skipif(not (EXAMPLES / "layouts.json").exists(), reason="examples not present")
def test_corrupt_end_to_end_on_example_photos_with_tiny_models(tiny_models, tmp_path):
    out = tmp_path / "corrupt"
    runner = CliRunner()
    res = runner.invoke(app, [
        "corrupt", str(EXAMPLES / "images"), str(EXAMPLES / "layouts.json"), "-o", str(out),
        "--image-model", tiny_models["hf_clip"], "--detector", tiny_models["grounding_dino"], "--no-layout-score",
        "--max-images", "3", "--bootstrap", "100", "--save-images",
    ])
    assert res.exit_code == 0, res.output
    # The table fits 80 columns: overall accuracy and τ per score, no truncated cells; the
    # per-kind figures are named as being in the files.
    assert "…" not in res.output and "swap_labels acc." not in res.output
    table = [line for line in res.output.splitlines() if line[:1] in "┏┃┡│└"]
    assert len(table) >= 5 and all(len(line) <= 80 for line in table), res.output
    assert "accuracy (all kinds)" in res.output and "τ (all kinds)" in res.output
    assert "per-kind accuracy and τ (8 kinds x 3 severities)" in " ".join(res.output.split())
    assert "variants.csv" in res.output
    result = read_result(out / "result.json")
    assert result.study == "corrupt"
    assert result.models["image_model"] == tiny_models["hf_clip"]
    names = {r.name for r in result.rows}
    assert {"clis", "clis_i", "global", "region", "grounding", "detection_iou", "found_rate"} <= names
    for row in result.rows:
        acc = row.values["accuracy"]
        assert 0.0 <= acc.ci_low <= acc.value <= acc.ci_high <= 1.0
        for kind in CORRUPTIONS:
            tau = row.values[f"{kind}_tau"].value
            assert tau is None or -1.0 <= tau <= 1.0
    # the image is untouched by layout-side corruptions, so the whole-image CLIP score cannot move
    glob = pd.DataFrame(result.tables["per_kind"]).set_index(["score", "kind"])
    for kind in ("shift", "scale", "swap_boxes", "swap_labels"):
        assert glob.at[("global", kind), "n_ties"] == glob.at[("global", kind), "n_pairs"]
    for name in ("corrupt.png", "corrupt.svg", "corrupt_accuracy.png", "corrupt_accuracy.svg"):
        assert (out / name).stat().st_size > 1000
    assert len(list((out / "variants").rglob("*.png"))) == result.settings["n_variants_scored"]


@pytest.mark.skipif(not (EXAMPLES / "layouts.json").exists(), reason="examples not present")
def test_corrupt_records_the_scorer_and_the_image_folder(tiny_models, tmp_path):
    pytest.importorskip("clis.layout_score")
    settings = {"image_model": tiny_models["hf_clip"], "detector": "none", "combine": {"image": 0.75, "layout": 0.25},
                "layout": {"llm": tiny_models["causal_lm"], "text_embedder": "none"}}
    result = corrupt(EXAMPLES / "images", EXAMPLES / "layouts.json", tmp_path / "out", score_config=settings,
                     kinds=["shift"], max_images=1, bootstrap=FAST, plot=False)
    assert result.models["image_model"] == tiny_models["hf_clip"] and result.models["detector"] == "none"
    scorer = read_result(tmp_path / "out" / "result.json").scorer
    assert scorer["settings"]["image_model"] == tiny_models["hf_clip"]
    assert scorer["weights"]["clis"] == {"image": 0.75, "layout": 0.25}
    assert scorer["weights"]["layout_score_used"] is True
    assert scorer["models"]["layout"]["llm"]["spec"] == tiny_models["causal_lm"]
    images = result.inputs[0]
    assert images.role == "images" and len(images.sha256) == 64
    assert images.model_extra["n_files"] == len([p for p in (EXAMPLES / "images").iterdir() if p.suffix == ".jpg"])


def test_corrupt_unknown_kind_is_a_one_line_error(tmp_path):
    res = CliRunner().invoke(app, ["corrupt", str(EXAMPLES / "images"), str(EXAMPLES / "layouts.json"),
                                   "-o", str(tmp_path), "--kinds", "shift,melt"])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == ["error: unknown corruption 'melt'; use any of " + ", ".join(CORRUPTIONS)]
