"""The layout meta-evaluation (``clis bench layouts``): twins worked out by hand, the Wilson
interval against scipy and against its definition, win rates and τ of fake scorers whose
score is a known function of the layout, and the command end to end with the tiny LM."""

from __future__ import annotations

import json
import math
import random
from types import SimpleNamespace

import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from benchmarks.cli import app
from benchmarks.layout_twins import CORRUPTIONS, SEVERITIES, flip, make_twins, random_boxes, scale, shift, swap
from benchmarks.layouts import (
    SOURCES, layouts_study, parse_subset, select_layouts, wilson_interval, win_record,
)
from benchmarks.results import read_result
from benchmarks.stats import BootstrapConfig
from clis.errors import InputError
from clis.outputs import csv_safe
from clis.layout import Layout

FAST = BootstrapConfig(n_resamples=60, seed=0)


def make_layout(boxes, layout_id="t", labels=None, relations=()):
    labels = labels or [f"thing{i}" for i in range(len(boxes))]
    return Layout.model_validate({
        "id": layout_id, "caption": "c",
        "objects": [{"id": f"o{i}", "label": label, "bbox": list(box)} for i, (label, box) in enumerate(zip(labels, boxes))],
        "relations": list(relations)})


def boxes_of(layout):
    return {o.id: list(o.bbox) for o in layout.objects}


def changed_ids(a, b):
    return [o.id for o, p in zip(a.objects, b.objects) if any(abs(u - v) > 1e-12 for u, v in zip(o.bbox, p.bbox))]


def inside(box, tol=1e-9):
    x, y, w, h = box
    return x >= -tol and y >= -tol and x + w <= 1 + tol and y + h <= 1 + tol and w > 0 and h > 0


# --- the twins ----------------------------------------------------------------------------------


def test_flip_by_hand_keeps_relations_and_ids():
    relation = {"subject": ["o0"], "relation": "on", "object": ["o1"]}
    layout = make_layout([[0.1, 0.2, 0.3, 0.4], [0.0, 0.6, 1.0, 0.4]], labels=["cup", "table"], relations=[relation])
    twin = flip(layout)
    assert twin.get_object("o0").bbox == pytest.approx([0.1, 0.4, 0.3, 0.4])
    assert twin.get_object("o1").bbox == pytest.approx([0.0, 0.0, 1.0, 0.4])
    assert twin.id == "t~flip"
    assert [(r.subject, r.relation, r.object) for r in twin.relations] == [(["o0"], "on", ["o1"])]
    assert [o.label for o in twin.objects] == ["cup", "table"]


def test_flip_of_a_layout_symmetric_about_the_midline_is_not_applicable():
    assert flip(make_layout([[0.1, 0.25, 0.3, 0.5], [0.5, 0.0, 0.2, 1.0]])) is None


def test_swap_takes_the_most_differently_sized_pair_of_different_labels():
    # areas: a 0.01, b 0.5, c 0.04, d 0.25. The largest ratio overall is a/b (50), but both are
    # cats; among different labels it is a/d (25), ahead of b/c (12.5).
    layout = make_layout([[0.0, 0.0, 0.1, 0.1], [0.0, 0.5, 1.0, 0.5], [0.5, 0.0, 0.2, 0.2], [0.5, 0.2, 0.5, 0.5]],
                         labels=["cat", "cat", "dog", "tree"])
    twin = swap(layout)
    assert twin.id == "t~swap"
    assert twin.get_object("o0").bbox == [0.5, 0.2, 0.5, 0.5]
    assert twin.get_object("o3").bbox == [0.0, 0.0, 0.1, 0.1]
    assert changed_ids(layout, twin) == ["o0", "o3"]
    assert [o.label for o in twin.objects] == ["cat", "cat", "dog", "tree"]


def test_swap_needs_two_labels():
    assert swap(make_layout([[0, 0, 0.1, 0.1], [0.5, 0.5, 0.5, 0.5]], labels=["cat", "cat"])) is None


SMALL = [[0.1, 0.1, 0.2, 0.2], [0.6, 0.5, 0.25, 0.3], [0.0, 0.0, 1.0, 0.4]]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_scale_grows_exactly_one_small_object_about_its_centre(seed):
    layout = make_layout(SMALL)
    targets = set()
    for k in SEVERITIES["scale"]:
        twin = scale(layout, k, seed)
        assert twin.id == f"t~scale@{k:g}"
        (target,) = changed_ids(layout, twin)
        targets.add(target)
        old, new = layout.get_object(target).bbox, twin.get_object(target).bbox
        assert new[2:] == pytest.approx([old[2] * k, old[3] * k])  # exact k-fold: only w, h <= 1/3 are drawn
        assert inside(new)
        assert target != "o2"  # 1.0 wide: cannot grow 3x
    assert len(targets) == 1  # the same object at every level


def test_scale_keeps_the_centre_when_there_is_room_and_clamps_at_the_edge():
    layout = make_layout([[0.45, 0.45, 0.1, 0.1], [0.0, 0.0, 1.0, 0.5]])  # only o0 can grow 3x
    twin = scale(layout, 3.0, 0)
    assert twin.get_object("o0").bbox == pytest.approx([0.35, 0.35, 0.3, 0.3])
    corner = make_layout([[0.0, 0.0, 0.2, 0.2], [0.0, 0.5, 1.0, 0.5]])
    grown = scale(corner, 2.0, 0).get_object("o0").bbox  # centre 0.1 would put it at -0.1: moved in
    assert grown == pytest.approx([0.0, 0.0, 0.4, 0.4])


def test_scale_of_larger_objects_only_at_the_levels_that_fit():
    # nothing can grow 3x; both halves can grow 1.5x and 2x (0.5 x 2 = 1: exactly the canvas)
    layout = make_layout([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]])
    grown = {k: scale(layout, k, 0) for k in SEVERITIES["scale"]}
    assert grown[3.0] is None
    (target,) = changed_ids(layout, grown[1.5])
    assert changed_ids(layout, grown[2.0]) == [target]
    assert grown[1.5].get_object(target).bbox[2:] == pytest.approx([0.75, 0.75])
    assert grown[2.0].get_object(target).bbox == pytest.approx([0.0, 0.0, 1.0, 1.0])
    # a small object, when there is one, is preferred: every level applies
    mixed = make_layout([[0.0, 0.0, 0.5, 0.5], [0.6, 0.6, 0.3, 0.3]])
    assert all(changed_ids(mixed, scale(mixed, k, s)) == ["o1"] for k in SEVERITIES["scale"] for s in range(5))


def test_scale_without_an_object_that_can_grow_is_not_applicable():
    layout = make_layout([[0.0, 0.0, 0.7, 0.7], [0.2, 0.2, 0.8, 0.8]])
    assert all(scale(layout, k, 0) is None for k in SEVERITIES["scale"])


@pytest.mark.parametrize("seed", range(6))
def test_shift_moves_one_object_the_distance_along_one_direction_inside_the_canvas(seed):
    layout = make_layout(SMALL)
    moves = []
    for d in SEVERITIES["shift"]:
        twin = shift(layout, d, seed)
        (target,) = changed_ids(layout, twin)
        old, new = layout.get_object(target).bbox, twin.get_object(target).bbox
        assert new[2:] == old[2:] and inside(new)
        dx, dy = new[0] - old[0], new[1] - old[1]
        assert math.hypot(dx, dy) == pytest.approx(d)
        moves.append((target, dx / d, dy / d))
    assert len({m[0] for m in moves}) == 1
    assert all(m[1:] == pytest.approx(moves[0][1:]) for m in moves)


def test_shift_needs_room_to_move():
    full = make_layout([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.9, 0.9]])  # 0.1 of room at most
    assert shift(full, 0.1, 0) is None


def test_random_keeps_sizes_and_moves_every_box():
    layout = make_layout(SMALL)
    twin = random_boxes(layout, 0)
    assert twin.id == "t~random"
    for o, p in zip(layout.objects, twin.objects):
        assert p.bbox[2:] == o.bbox[2:] and inside(p.bbox)
    assert set(changed_ids(layout, twin)) == {"o0", "o1", "o2"}
    assert random_boxes(make_layout([[0, 0, 1, 1], [0, 0, 1, 1]]), 0) is None  # nowhere else to go


def test_twins_are_deterministic_per_seed_and_layout_id():
    layout = make_layout(SMALL)
    first = [(t.twin_id, None if t.layout is None else boxes_of(t.layout)) for t in make_twins(layout, seed=5)]
    again = [(t.twin_id, None if t.layout is None else boxes_of(t.layout)) for t in make_twins(layout, seed=5)]
    other = [(t.twin_id, None if t.layout is None else boxes_of(t.layout)) for t in make_twins(layout, seed=6)]
    assert first == again
    assert first != other
    renamed = make_layout(SMALL, layout_id="u")
    assert boxes_of(random_boxes(renamed, 5)) != boxes_of(random_boxes(layout, 5))
    assert [t for t, _ in first] == ["t~flip", "t~swap", "t~scale@1.5", "t~scale@2", "t~scale@3",
                                     "t~shift@0.1", "t~shift@0.2", "t~shift@0.4", "t~random"]


def test_every_twin_of_many_random_layouts_validates_and_stays_in_the_canvas():
    rng = random.Random(1)
    for i in range(150):
        boxes = []
        for _ in range(rng.randint(2, 6)):
            w, h = rng.uniform(0.02, 1.0), rng.uniform(0.02, 1.0)
            boxes.append([rng.uniform(0, 1 - w), rng.uniform(0, 1 - h), w, h])
        layout = make_layout(boxes, layout_id=f"r{i}", labels=[rng.choice("abc") for _ in boxes])
        for twin in make_twins(layout, seed=i):
            if twin.layout is None:
                continue
            again = Layout.model_validate(twin.layout.model_dump())
            assert again.id == twin.twin_id
            assert all(inside(o.bbox) for o in again.objects)
            assert changed_ids(layout, again)  # a twin always differs from its layout


# --- the Wilson interval ------------------------------------------------------------------------


@pytest.mark.parametrize("k,n,confidence", [(0, 5, 0.95), (3, 7, 0.95), (9, 10, 0.9), (10, 10, 0.99), (47, 100, 0.95)])
def test_wilson_matches_scipy_for_integer_counts(k, n, confidence):
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    assert wilson_interval(k / n, n, confidence) == pytest.approx((ref.low, ref.high))


def test_wilson_with_half_counted_ties_by_hand():
    # 2 wins and 1 tie of 4: p = 2.5 / 4 = 0.625. With z = 1.959964 (95%): z^2/n = 0.960365,
    # centre = (0.625 + 0.480182) / 1.960365 = 0.563764, half-width
    # = 1.959964 * sqrt(0.625 * 0.375 / 4 + 3.841459 / 64) / 1.960365
    # = 1.959964 * sqrt(0.058594 + 0.060023) / 1.960365 = 0.344337.
    low, high = wilson_interval(0.625, 4, 0.95)
    assert (low, high) == pytest.approx((0.563764 - 0.344337, 0.563764 + 0.344337), abs=3e-6)
    # Its definition: the bounds are the p whose score test is exactly at z.
    z = stats.norm.ppf(0.975)
    for p in (low, high):
        assert (0.625 - p) ** 2 == pytest.approx(z * z * p * (1 - p) / 4)
    assert wilson_interval(0.5, 0) == (None, None)


def test_win_record_counts_ties_half():
    record = win_record([3.0, 0.0, -2.0, 1e-12, 5.0], FAST, bootstrap=False)
    assert (record["n"], record["wins"], record["ties"], record["losses"]) == (5, 2, 2, 1)
    assert record["win_rate"] == pytest.approx(3 / 5)
    assert record["mean_margin"] == pytest.approx(6 / 5)


# --- selection ----------------------------------------------------------------------------------


def nsr_record(i, sub_type, objects):
    return {"id": i, "image_id": 100 + i, "prompt": f"prompt {i}", "object_list": objects,
            "num_object": len(objects), "sub-type": sub_type, "type": "counting"}


NSR = [
    nsr_record(1, "real", [["cat", [0.1, 0.1, 0.2, 0.2]], ["dog", [0.4, 0.5, 0.3, 0.4]]]),
    nsr_record(2, "single-category", [["cat", [0.1, 0.1, 0.2, 0.2]], ["cat", [0.5, 0.5, 0.2, 0.2]]]),
    nsr_record(3, "real", [["cup", [0.4, 0.3, 0.1, 0.1]]]),  # one object
    nsr_record(4, "real", [["cup", [0.4, 0.2, 0.1, 0.1]], ["cup", [0.6, 0.2, 0.1, 0.1]]]),  # one label
    nsr_record(5, "two-categories", [["kite", [0.1, 0.0, 0.1, 0.1]], ["tree", [0.5, 0.3, 0.4, 0.7]]]),
    nsr_record(6, "real", [["kite", [0.1, 0.0, 0.1, 0.1]], ["person", [0.5, 0.5, 0.2, 0.5]],
                           ["tree", [0.0, 0.3, 0.3, 0.7]]]),
]


@pytest.fixture()
def nsr_file(tmp_path):
    path = tmp_path / "counting.val.json"
    path.write_text(json.dumps(NSR), encoding="utf-8")
    return path


def test_selection_by_extra_key_objects_labels_and_limit(nsr_file):
    from clis.formats import read_layouts

    layouts = read_layouts(nsr_file).layouts
    kept, counts = select_layouts(layouts, parse_subset(["sub-type=real"]))
    assert [l.id for l in kept] == ["1", "6"]
    assert counts["dropped_subset"] == 2 and counts["dropped_objects"] == 1 and counts["dropped_labels"] == 1
    # a key given twice matches either value; two keys must both match; fields work too
    kept, _ = select_layouts(layouts, parse_subset(["sub-type=real", "sub-type=two-categories"]))
    assert [l.id for l in kept] == ["1", "5", "6"]
    kept, _ = select_layouts(layouts, parse_subset(["sub-type=real", "image_id=106"]))
    assert [l.id for l in kept] == ["6"]
    kept, _ = select_layouts(layouts, parse_subset(["caption=prompt 5"]))
    assert [l.id for l in kept] == ["5"]
    assert [l.id for l in select_layouts(layouts, max_objects=2)[0]] == ["1", "5"]
    assert [l.id for l in select_layouts(layouts, min_labels=1, limit=2)[0]] == ["1", "2"]
    with pytest.raises(InputError, match="KEY=VALUE"):
        parse_subset(["sub-type"])


# --- the study with fake scorers ----------------------------------------------------------------


class Heights:
    """CLIS-L = 100 - 100 x mean centre height (objects high in the picture score high); LLM =
    100 - 100 x the largest box area. Layouts whose id says so fail, or their random twins."""

    def __init__(self):
        self.calls = 0

    def score_layouts(self, layouts, progress=None):
        self.calls += 1
        out = []
        for layout in layouts:
            if layout.id.startswith("bad") or layout.id.endswith("~random"):
                out.append(SimpleNamespace(clis_l=None, llm=None, geometry=None, error="boom"))
                continue
            height = sum(o.center[1] for o in layout.objects) / len(layout.objects)
            out.append(SimpleNamespace(clis_l=100 - 100 * height, llm=100 - 100 * max(o.area for o in layout.objects),
                                       geometry=None, error=None))
        return out


FAKE_LAYOUTS = [
    # top-heavy: mean centre y 0.25 -> 75; flipped 0.75 -> 25: the real one wins
    {"id": "top", "objects": [{"id": "a", "label": "kite", "bbox": [0.1, 0.1, 0.2, 0.2]},
                              {"id": "b", "label": "bird", "bbox": [0.5, 0.2, 0.2, 0.2]}]},
    # bottom-heavy: 0.75 -> 25; flipped 0.25 -> 75: the real one loses
    {"id": "bottom", "objects": [{"id": "a", "label": "dog", "bbox": [0.1, 0.7, 0.2, 0.2]},
                                 {"id": "b", "label": "cat", "bbox": [0.5, 0.6, 0.2, 0.2]}]},
    # centres at 0.2 and 0.8 swap places under a flip: the mean, hence the score, is a tie (50)
    {"id": "even", "objects": [{"id": "a", "label": "cup", "bbox": [0.1, 0.1, 0.2, 0.2]},
                               {"id": "b", "label": "bowl", "bbox": [0.6, 0.7, 0.2, 0.2]}]},
    # every score of this one fails: left out of every comparison and counted
    {"id": "bad", "objects": [{"id": "a", "label": "cup", "bbox": [0.1, 0.1, 0.2, 0.2]},
                              {"id": "b", "label": "bowl", "bbox": [0.6, 0.7, 0.2, 0.2]}]},
    # one object: not selected (--min-objects 2)
    {"id": "lone", "objects": [{"id": "a", "label": "cup", "bbox": [0.1, 0.1, 0.2, 0.2]}]},
]


@pytest.fixture()
def fake_result(tmp_path):
    path = tmp_path / "layouts.json"
    path.write_text(json.dumps(FAKE_LAYOUTS), encoding="utf-8")
    scorer = Heights()
    result = layouts_study(path, tmp_path / "out", scorer=scorer, bootstrap=FAST, plot=False, threshold=60)
    return result, scorer, tmp_path / "out"


def by(records, **keys):
    found = [r for r in records if all(r[k] == v for k, v in keys.items())]
    assert len(found) == 1, (keys, found)
    return found[0]


def test_win_rates_ties_and_losses_of_a_known_score(fake_result):
    result, scorer, out = fake_result
    assert scorer.calls == 1  # real layouts and every twin in one call
    assert [row.name for row in result.rows] == ["clis_l", "llm"]  # geometry: no values, left out
    per_corruption = result.tables["per_corruption"]
    flip_ = by(per_corruption, source="clis_l", corruption="flip")
    assert (flip_["n"], flip_["wins"], flip_["ties"], flip_["losses"]) == (3, 1, 1, 1)
    assert flip_["win_rate"] == pytest.approx(0.5)
    assert flip_["n_missing"] == 1 and flip_["n_twins"] == 4  # the failing layout's flip
    # margins real - twin: top +50, bottom -50, even 0
    assert flip_["mean_margin"] == pytest.approx(0.0)
    # a score of the set of boxes cannot see which object sits in which box: every swap ties
    swap_ = by(per_corruption, source="clis_l", corruption="swap")
    assert (swap_["wins"], swap_["ties"], swap_["losses"]) == (0, 3, 0)
    # every random twin fails to score: all missing, none compared
    random_ = by(per_corruption, source="clis_l", corruption="random")
    assert random_["n"] == 0 and random_["n_missing"] == 4 and random_["win_rate"] is None
    assert result.settings["n_selected"] == 4 and result.settings["dropped_objects"] == 1
    assert result.settings["n_failed_layouts"] == 1
    row = next(r for r in result.rows if r.name == "clis_l")
    assert row.values["flip_win_rate"].value == pytest.approx(0.5)
    assert row.n_layouts == 3  # the failing layout has no score


def test_share_above_threshold_of_real_layouts_and_twins(fake_result):
    result, _, _ = fake_result
    shares = result.tables["threshold"]
    # threshold 60; real CLIS-L: top 75, bottom 25, even 50: 1 of 3
    real = by(shares, source="clis_l", group="real")
    assert (real["share"], real["n"], real["threshold"]) == (pytest.approx(1 / 3), 3, 60)
    ref = stats.binomtest(1, 3).proportion_ci(method="wilson")
    assert (real["ci_low"], real["ci_high"]) == pytest.approx((ref.low, ref.high))
    # flipped: 25, 75, 50; LLM (100 - 100 x 0.04 = 96 for all three): every real layout passes
    assert by(shares, source="clis_l", group="flip")["share"] == pytest.approx(1 / 3)
    assert by(shares, source="llm", group="real")["share"] == 1.0
    # the largest scale twins have an object 0.6 a side: LLM 64, above 60; at 1.5: 91
    assert by(shares, source="llm", group="scale@3")["share"] == 1.0


def test_kendall_tau_sign_of_scores_that_fall_and_rise_with_size(fake_result):
    result, _, out = fake_result
    per_corruption = result.tables["per_corruption"]
    # LLM here is 100 - 100 x the largest area. Both objects of each layout are 0.2 x 0.2; the
    # scaled one grows to 0.3, 0.4, 0.6 a side and becomes the largest: the score falls at every
    # level, τ = -1 for every layout.
    scale_llm = by(per_corruption, source="llm", corruption="scale")
    assert scale_llm["tau"] == pytest.approx(-1.0) and scale_llm["n_tau_layouts"] == 3
    # a shift changes no area: the LLM score is flat, τ undefined for every ladder
    shift_llm = by(per_corruption, source="llm", corruption="shift")
    assert shift_llm["tau"] is None and shift_llm["n_tau_layouts"] == 0 and shift_llm["n_tau_undefined"] == 3
    assert shift_llm["ties"] == shift_llm["n"] == 9
    levels = [r for r in result.tables["per_level"] if r["source"] == "llm" and r["corruption"] == "scale"]
    assert [r["severity"] for r in levels] == [1.5, 2.0, 3.0] and all(r["wins"] == 3 for r in levels)
    frame = pd.read_csv(out / "pairs.csv")
    scaled = frame[(frame["layout_id"] == "top") & (frame["corruption"] == "scale")]
    # 100 - 100 x 0.04 = 96 real; 100 - 100 x (0.2 k)^2 for the twins
    assert scaled["real_llm"].tolist() == pytest.approx([96.0] * 3)
    assert scaled["twin_llm"].tolist() == pytest.approx([91.0, 84.0, 64.0])


def test_result_is_leaderboard_ready(fake_result):
    from leaderboard.schema import load_result
    from leaderboard.table import build_boards

    result, _, out = fake_result
    parsed = load_result(out / "result.json")
    (board,) = build_boards([parsed])
    assert board.study == "layouts" and [r.name for r in board.rows]
    keys = {c.key for c in board.columns}
    assert {"win_rate", "tau", "real_pass_rate"} | {f"{c}_win_rate" for c in CORRUPTIONS} <= keys
    assert board.column("scale_tau").higher_is_better is False
    again = read_result(out / "result.json")
    assert again.study == "layouts" and again.inputs[0].role == "layouts" and len(again.inputs[0].sha256) == 64


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(tmp_path):
    layouts = [{"id": "=cmd", "objects": [{"id": "a", "label": "kite", "bbox": [0.1, 0.1, 0.2, 0.2]},
                                         {"id": "b", "label": "bird", "bbox": [0.5, 0.2, 0.2, 0.2]}]}]
    path = tmp_path / "layouts.json"
    path.write_text(json.dumps(layouts), encoding="utf-8")
    layouts_study(path, tmp_path / "out", scorer=Heights(), bootstrap=FAST, plot=False, corruptions=["flip"])
    frame = pd.read_csv(tmp_path / "out" / "pairs.csv")
    assert frame["layout_id"].tolist() == ["'=cmd"] and frame["twin_id"].tolist() == ["'=cmd~flip"]
    assert csv_safe("-2.5") == "-2.5" and csv_safe("@x") == "'@x" and csv_safe(3) == 3


# --- the command line ---------------------------------------------------------------------------


def test_cli_end_to_end_on_an_nsr_file_with_the_tiny_lm(tiny_models, nsr_file, tmp_path):
    out = tmp_path / "bench"
    res = CliRunner().invoke(app, ["layouts", str(nsr_file), "-o", str(out), "--subset", "sub-type=real",
                                   "--llm", tiny_models["causal_lm"], "--bootstrap", "60"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "result.json").read_text(encoding="utf-8"))
    assert data["schema"] == "clis.bench/1" and data["study"] == "layouts"
    assert data["settings"]["n_selected"] == 2 and data["settings"]["selection"]["subset"] == {"sub-type": ["real"]}
    assert {r["corruption"] for r in data["tables"]["per_corruption"]} == set(CORRUPTIONS)
    assert {m["key"] for m in data["metrics"]} >= {f"{c}_win_rate" for c in CORRUPTIONS} | {"scale_tau", "shift_tau"}
    names = [r["name"] for r in data["rows"]]
    assert names[:2] == ["clis_l", "llm"] and names == [s for s in SOURCES if s in names]
    assert data["models"]["layout"]["llm"]["spec"] == tiny_models["causal_lm"]
    frame = pd.read_csv(out / "pairs.csv")
    assert set(frame["layout_id"].astype(str)) == {"1", "6"}
    assert {f"{p}_{s}" for s in names for p in ("real", "twin", "margin")} <= set(frame.columns)
    assert data["settings"]["sources"] == names
    assert len(frame) == 2 * 9
    for name in ("layouts_win_rate", "layouts_scores", "layouts_severity"):
        assert (out / f"{name}.png").stat().st_size > 1000 and (out / f"{name}.svg").exists()
    lines = res.output.splitlines()
    rows = {line.split()[0]: line for line in lines if line.split() and line.split()[0] in
            {"real", *CORRUPTIONS, "scale@1.5", "scale@2", "scale@3", "shift@0.1", "shift@0.2", "shift@0.4"}}
    assert len(rows) == 12  # the real layouts, 5 corruptions, 6 severity levels
    assert all(len(line) <= 80 for line in rows.values())  # 3 sources fit 80 columns
    assert rows["flip"].split()[1:3] == ["2", "0"]  # 2 pairs, none not applicable
    assert "Kendall τ" in res.output


def test_cli_missing_file_is_a_one_line_error(tmp_path):
    res = CliRunner().invoke(app, ["layouts", str(tmp_path / "nope.json"), "-o", str(tmp_path / "out")])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nope.json" in lines[0]
    assert not (tmp_path / "out").exists()


def test_cli_selection_that_keeps_nothing_is_a_one_line_error(nsr_file, tmp_path):
    res = CliRunner().invoke(app, ["layouts", str(nsr_file), "-o", str(tmp_path / "out"), "--subset", "sub-type=fake"])
    assert res.exit_code == 2
    (line,) = res.output.strip().splitlines()
    assert "no layout left after selection" in line and "6 by --subset" in line


# --- review: hostile options --------------------------------------------------------------------


def test_a_corruption_named_twice_is_compared_once(tmp_path):
    path = tmp_path / "layouts.json"
    path.write_text(json.dumps(FAKE_LAYOUTS[:1]), encoding="utf-8")  # "top" only
    result = layouts_study(path, tmp_path / "out", scorer=Heights(), bootstrap=FAST, plot=False,
                           corruptions=["flip", "swap", "flip"])
    assert result.settings["corruptions"] == ["flip", "swap"]
    flips = [r for r in result.tables["per_corruption"] if r["source"] == "clis_l" and r["corruption"] == "flip"]
    assert [(r["n"], r["wins"]) for r in flips] == [(1, 1)]  # one layout, one flip twin: not two pairs
    assert next(r for r in result.rows if r.name == "clis_l").n_pairs == 2
    assert len(pd.read_csv(tmp_path / "out" / "pairs.csv")) == 2


@pytest.mark.parametrize("threshold", ["nan", "inf", "-inf"])
def test_a_threshold_that_is_not_a_finite_number_is_a_one_line_error(nsr_file, tmp_path, threshold):
    res = CliRunner().invoke(app, ["layouts", str(nsr_file), "-o", str(tmp_path / "out"), "--threshold", threshold])
    assert res.exit_code == 2, res.output
    (line,) = res.output.strip().splitlines()
    assert line.startswith("error: ") and "--threshold" in line
    assert not (tmp_path / "out").exists()


def test_result_tables_are_documented_field_for_field(fake_result):
    import re
    from pathlib import Path

    result, _, _ = fake_result
    schema = (Path(__file__).resolve().parents[1] / "docs" / "results-schema.md").read_text(encoding="utf-8")
    for name in ("per_corruption", "per_level", "threshold"):
        line = re.search(rf"^\| `layouts` \| `{name}` \| (.*) \|$", schema, re.M)
        assert line, name
        assert re.findall(r"`(\w+)`", line.group(1)) == list(result.tables[name][0]), name


def test_empty_corruption_list_and_bracketed_output_paths(tmp_path):
    from typer.testing import CliRunner

    from clis.cli import app

    layouts = tmp_path / "l.json"
    layouts.write_text(json.dumps([{"id": "a", "objects": [
        {"id": "cat-1", "label": "cat", "bbox": [0.1, 0.1, 0.3, 0.3]},
        {"id": "bed-1", "label": "bed", "bbox": [0.0, 0.5, 1.0, 0.5]}]}]), encoding="utf-8")
    runner = CliRunner()
    empty = runner.invoke(app, ["bench", "layouts", str(layouts), "-o", str(tmp_path / "o"), "--corruptions", ","])
    assert empty.exit_code == 2 and "--corruptions ',': name at least one" in empty.output
    out = tmp_path / "x[/]"
    done = runner.invoke(app, ["bench", "layouts", str(layouts), "-o", str(out), "--llm", "none", "--text-embedder",
                               "none", "--corruptions", "flip", "--no-plot", "--bootstrap", "50"])
    assert done.exit_code == 0, done.output
    assert f"result: {out / 'result.json'}" in done.output


def test_an_out_that_is_a_file_is_refused_before_any_scoring(tmp_path):
    from typer.testing import CliRunner

    from clis.cli import app

    layouts = tmp_path / "l.json"
    text = json.dumps([{"id": "a", "objects": [
        {"id": "cat-1", "label": "cat", "bbox": [0.1, 0.1, 0.3, 0.3]},
        {"id": "bed-1", "label": "bed", "bbox": [0.0, 0.5, 1.0, 0.5]}]}])
    layouts.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(app, ["bench", "layouts", str(layouts), "-o", str(layouts), "--llm", "none",
                                      "--text-embedder", "none", "--no-plot"])
    assert result.exit_code == 2, result.output
    assert f"{layouts}: --out names a file; it must be a folder" in result.output
    assert layouts.read_text(encoding="utf-8") == text
