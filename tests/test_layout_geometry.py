"""CLIS-L geometric prior: the per-example formulas against values worked out by hand.

Notation: boxes are [x, y, w, h]; c(.) is the centre; d = c(o) - c(s).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from clis.layout_score.geometry import (
    direction_score, example_score, iou, pair_features, penalty, relation_from_geometry,
    relation_is_mirror_symmetric, relative_distance, sim,
)
from clis.layout_score.pool import CategoryMatcher, Pool, PoolExample
from clis.layout_score.prior import GeometricPrior, GeometryResult, layout_geometry

# Generated pair G: a cup above a table.
G_S, G_O = (0.4, 0.3, 0.2, 0.2), (0.1, 0.5, 0.8, 0.5)
# Pool example E of the same relation.
E_S, E_O = (0.3, 0.2, 0.2, 0.4), (0.2, 0.5, 0.6, 0.4)


def test_sim_hand_values():
    assert float(sim(2.0, 3.0)) == pytest.approx(1 - 1 / 3)  # 1 - |2-3| / 3
    assert float(sim(0.0, 0.0)) == 1.0  # both below 1e-10
    assert float(sim(0.0, 5.0)) == 0.0  # 1 - 5/5
    assert float(sim(4e-11, 5e-11)) == 1.0  # a + b = 9e-11 < 1e-10
    assert float(sim(0.5, 0.5)) == 1.0
    assert float(sim(3.0, 1.0)) == float(sim(1.0, 3.0))  # symmetric


def test_penalty_hand_values():
    # p(x) = x for x >= 0.03, else -(1 + 0.03)(1 - x/0.03) + 0.03
    assert float(penalty(0.5)) == 0.5
    assert float(penalty(0.03)) == pytest.approx(0.03)
    assert float(penalty(0.0)) == pytest.approx(-1.0)  # -(1.03)(1) + 0.03
    assert float(penalty(0.015)) == pytest.approx(-0.485)  # -(1.03)(0.5) + 0.03 = -0.515 + 0.03
    assert float(penalty(0.01, t=0.02)) == pytest.approx(-0.49)  # -(1.02)(0.5) + 0.02


def test_features_of_generated_pair_by_hand():
    f = pair_features(G_S, G_O)
    # areas 0.2*0.2 = 0.04 and 0.8*0.5 = 0.4 -> ratio 0.1
    assert f.area_ratio[0] == pytest.approx(0.1)
    # x overlap [0.4,0.6] & [0.1,0.9] = 0.2, y overlap [0.3,0.5] & [0.5,1.0] = 0 -> IoU 0
    assert f.iou[0] == pytest.approx(0.0)
    # centres (0.5, 0.4) and (0.5, 0.75): d = (0, 0.35), |d| = 0.35
    assert f.direction[0] == pytest.approx([0.0, 0.35])
    # diagonals sqrt(0.08) = 0.282843 and sqrt(0.89) = 0.943398, mean 0.613120 -> RD = 0.35 / 0.613120
    assert f.rd[0] == pytest.approx(0.35 / ((math.sqrt(0.08) + math.sqrt(0.89)) / 2))
    assert f.rd[0] == pytest.approx(0.570850, abs=1e-6)


def test_iou_and_rd_of_pool_example_by_hand():
    # x overlap [0.3,0.5] & [0.2,0.8] = 0.2, y overlap [0.2,0.6] & [0.5,0.9] = 0.1 -> 0.02
    # union 0.08 + 0.24 - 0.02 = 0.30 -> IoU 1/15
    assert iou(E_S, E_O)[0] == pytest.approx(1 / 15)
    # centres (0.4, 0.4) and (0.5, 0.7): |d| = sqrt(0.1) = 0.316228
    # diagonals sqrt(0.2) = 0.447214 and sqrt(0.52) = 0.721110, mean 0.584162 -> RD 0.541336
    assert relative_distance(E_S, E_O)[0] == pytest.approx(0.541336, abs=1e-6)


def test_example_score_by_hand():
    e = example_score(pair_features(G_S, G_O), pair_features(E_S, E_O), mirror=True)
    # size: ratios 0.1 and 0.08/0.24 = 1/3 -> 1 - (1/3 - 0.1)/(1/3) = 1 - 0.7 = 0.3
    assert e.size[0] == pytest.approx(0.3)
    # dist: sim(IoU 0, 1/15) = 0; sim(RD 0.570850, 0.541336) = 1 - 0.029514/0.570850 = 0.948298
    #       mean = 0.474149
    assert e.dist[0] == pytest.approx(0.474149, abs=1e-5)
    # dir: d = (0, 0.35), d' = (0.1, 0.3): cos = 0.105 / (0.35 * 0.316228) = 0.948683 -> 0.974342
    #      mirrored d' = (-0.1, 0.3) gives the same cosine because d has no x part
    assert e.dir[0] == pytest.approx(0.974342, abs=1e-6)
    # no term below t = 0.03, so no penalty: (0.5*0.3 + 0.474149 + 0.8*0.974342) / 2.3
    #   = (0.15 + 0.474149 + 0.779473) / 2.3 = 1.403622 / 2.3 = 0.610270
    assert e.score[0] == pytest.approx(0.610270, abs=1e-5)


def test_swapped_pool_example_is_penalised_by_hand():
    # The example with subject and object swapped vertically: E_O' above, d' = (0, -0.35).
    swapped_s, swapped_o = (0.4, 0.5, 0.2, 0.2), (0.1, 0.0, 0.8, 0.5)
    e = example_score(pair_features(G_S, G_O), pair_features(swapped_s, swapped_o), mirror=True)
    # size: same ratio 0.1 -> 1; IoU 0 vs 0 -> 1; centres (0.5,0.6) and (0.5,0.25): |d'| = 0.35, same
    # diagonals -> RD equal -> 1; dist = 1
    assert e.size[0] == pytest.approx(1.0) and e.dist[0] == pytest.approx(1.0)
    # dir: cos = -1 -> 0 (mirroring x changes nothing) -> p(0) = -1
    assert e.dir[0] == pytest.approx(0.0)
    # score = (0.5*1 + 1 + 0.8*(-1)) / 2.3 = 0.7 / 2.3 = 0.304348
    assert e.score[0] == pytest.approx(0.7 / 2.3)
    same = example_score(pair_features(G_S, G_O), pair_features(G_S, G_O), mirror=True)
    assert same.score[0] == pytest.approx(1.0)
    assert e.score[0] < same.score[0]


def test_direction_zero_vector_rules():
    assert direction_score([0, 0], [0, 0], mirror=False)[0] == 1.0  # both zero
    assert direction_score([0, 0], [1, 0], mirror=True)[0] == 0.0  # only one zero
    assert direction_score([1, 0], [0, 0], mirror=True)[0] == 0.0
    # perpendicular: cos 0 -> 0.5
    assert direction_score([1, 0], [0, 2], mirror=False)[0] == pytest.approx(0.5)


def test_mirror_rule_depends_on_left_right_in_relation():
    # A subject left of its object (d = (+0.3, 0)) against an example on the other side (d' = (-0.3, 0)).
    s, o = (0.1, 0.4, 0.2, 0.2), (0.4, 0.4, 0.2, 0.2)
    s2, o2 = (0.4, 0.4, 0.2, 0.2), (0.1, 0.4, 0.2, 0.2)
    assert relation_is_mirror_symmetric("next to") and not relation_is_mirror_symmetric("Left of")
    assert not relation_is_mirror_symmetric("to the right of")
    mirrored = example_score(pair_features(s, o), pair_features(s2, o2), mirror=True)
    strict = example_score(pair_features(s, o), pair_features(s2, o2), mirror=False)
    # Mirrored d' = (0.3, 0) equals d -> dir 1; all other terms equal -> score 1.
    assert mirrored.dir[0] == pytest.approx(1.0) and mirrored.score[0] == pytest.approx(1.0)
    # Without mirroring cos = -1 -> dir 0 -> p = -1 -> score (0.5 + 1 - 0.8) / 2.3 = 0.304348
    assert strict.dir[0] == pytest.approx(0.0) and strict.score[0] == pytest.approx(0.7 / 2.3)


def test_scale_invariance_of_features():
    # Pixels of a 512 x 512 canvas and normalised coordinates give the same features.
    a = pair_features(G_S, G_O)
    b = pair_features(np.array(G_S) * 512, np.array(G_O) * 512)
    for name in ("area_ratio", "iou", "rd"):
        assert getattr(a, name) == pytest.approx(getattr(b, name))


def test_relation_words_from_geometry():
    words = relation_from_geometry(
        [[0.4, 0.1, 0.2, 0.2], [0.4, 0.7, 0.2, 0.2], [0.0, 0.4, 0.2, 0.2], [0.8, 0.4, 0.2, 0.2],
         [0.3, 0.3, 0.1, 0.1], [0.0, 0.0, 1.0, 1.0]],
        [[0.1, 0.4, 0.8, 0.3], [0.1, 0.3, 0.8, 0.3], [0.4, 0.4, 0.2, 0.2], [0.4, 0.4, 0.2, 0.2],
         [0.2, 0.2, 0.5, 0.5], [0.2, 0.2, 0.5, 0.5]],
    )
    assert words == ["above", "below", "left of", "right of", "inside", "surrounding"]


def _pool(examples):
    return Pool([PoolExample(subject=s, relation=r, object=o, subject_box=list(sb), object_box=list(ob))
                 for s, r, o, sb, ob in examples])


def test_percentile_aggregation_by_hand():
    # Three matching examples: identical (score 1), E (0.610270) and the swapped twin (0.304348).
    swapped = ((0.4, 0.5, 0.2, 0.2), (0.1, 0.0, 0.8, 0.5))
    pool = _pool([("cup", "on", "table", G_S, G_O), ("cup", "on", "table", E_S, E_O),
                  ("cup", "on", "table", *swapped), ("dog", "on", "table", G_S, G_O)])
    prior = GeometricPrior(pool, CategoryMatcher(), threshold=0.8, percentile=50)
    result = prior.score_pair("cup", "on", "table", G_S, G_O)
    # The dog example does not match (exact matching: "dog" != "cup"); median of the 3 is 0.610270.
    assert result.matches == 3
    assert result.score == pytest.approx(61.0270, abs=1e-3)
    assert result.confidence == pytest.approx(3.0)  # 3 examples with label similarity 1 * 1
    assert result.terms == pytest.approx({"size": 0.3, "dist": 0.474149, "dir": 0.974342}, abs=1e-4)
    # 98th percentile with linear interpolation: sorted (0.304348, 0.610270, 1.0),
    # rank 0.98 * 2 = 1.96 -> 0.610270 + 0.96 * (1 - 0.610270) = 0.984411
    high = GeometricPrior(pool, CategoryMatcher(), percentile=98).score_pair("cup", "on", "table", G_S, G_O)
    assert high.score == pytest.approx(98.4411, abs=1e-3)


def test_unknown_pairs_are_not_zero():
    pool = _pool([("cup", "on", "table", G_S, G_O)])
    prior = GeometricPrior(pool, CategoryMatcher())
    no_relation = prior.score_pair("cup", "under", "table", G_S, G_O)
    no_label = prior.score_pair("bird", "on", "table", G_S, G_O)
    assert no_relation.score is None and "no example of relation 'under'" in no_relation.unknown
    assert no_label.score is None and "similar" in no_label.unknown
    # The layout score ignores unknown pairs instead of counting them as 0.
    known = prior.score_pair("cup", "on", "table", G_S, G_O)
    assert layout_geometry([known, no_relation, no_label]) == pytest.approx(100.0)
    assert layout_geometry([no_relation]) is None


def test_confidence_weighted_layout_mean_by_hand():
    # (80 * 3 + 40 * 1) / (3 + 1) = 280 / 4 = 70
    results = [GeometryResult("on", 80.0, 3, 3.0), GeometryResult("on", 40.0, 1, 1.0)]
    assert layout_geometry(results) == pytest.approx(70.0)


def test_negative_pair_scores_clip_to_zero():
    # Example: a small box just below the centre of a full-canvas box.
    #   size: ratio 0.01 / 1 = 0.01 vs 0.04 / 0.4 = 0.1 -> 1 - 0.09 / 0.1 = 0.1 (no penalty)
    #   IoU 0.01 (inside) vs 0 -> sim 0
    #   RD: centres (0.5, 0.505) and (0.5, 0.5) -> 0.005 / ((sqrt(0.02) + sqrt(2)) / 2)
    #       = 0.005 / 0.777817 = 0.006428 vs 0.570850 -> sim = 0.006428 / 0.570850 = 0.011261
    #   dist = (0 + 0.011261) / 2 = 0.005630 -> x/t = 0.187680
    #       -> p = -(1.03)(1 - 0.187680) + 0.03 = -0.836690 + 0.03 = -0.806690
    #   dir: d' = (0, -0.005) against d = (0, 0.35): cos -1 -> 0 -> p = -1
    #   score = (0.5 * 0.1 - 0.806690 - 0.8 * 1) / 2.3 = -1.556690 / 2.3 = -0.676821 -> clipped to 0
    example = ((0.45, 0.455, 0.1, 0.1), (0.0, 0.0, 1.0, 1.0))
    unclipped = example_score(pair_features(G_S, G_O), pair_features(*example), mirror=True)
    assert unclipped.size[0] == pytest.approx(0.1)
    assert unclipped.dist[0] == pytest.approx(0.005630, abs=1e-6)
    assert unclipped.dir[0] == pytest.approx(0.0)
    assert unclipped.score[0] == pytest.approx(-0.676821, abs=1e-6)
    pool = _pool([("cup", "on", "table", *example)])
    result = GeometricPrior(pool, CategoryMatcher()).score_pair("cup", "on", "table", G_S, G_O)
    assert result.score == 0.0


def test_unicode_labels_match_exactly():
    pool = _pool([("猫", "auf", "Sofa", G_S, G_O)])
    result = GeometricPrior(pool, CategoryMatcher()).score_pair("猫", "AUF", "sofa", G_S, G_O)
    assert result.score == pytest.approx(100.0)


def test_mirror_rule_end_to_end_on_a_diagonal():
    # Generated: centres (0.2, 0.2) -> (0.5, 0.5), d = (0.3, 0.3). Example: centres (0.5, 0.2) ->
    # (0.2, 0.5), d' = (-0.3, 0.3). Same box sizes, IoU 0 and RD on both sides -> size = dist = 1.
    s, o = (0.1, 0.1, 0.2, 0.2), (0.4, 0.4, 0.2, 0.2)
    s2, o2 = (0.4, 0.1, 0.2, 0.2), (0.1, 0.4, 0.2, 0.2)
    pool = _pool([("cup", "next to", "plate", s2, o2), ("cup", "left of", "plate", s2, o2)])
    prior = GeometricPrior(pool, CategoryMatcher())
    # "next to" names no side: mirrored d' = (0.3, 0.3) = d -> cos 1 -> dir 1 -> score 1
    beside = prior.score_pair("cup", "next to", "plate", s, o)
    assert beside.terms == pytest.approx({"size": 1.0, "dist": 1.0, "dir": 1.0})
    assert beside.score == pytest.approx(100.0)
    # "left of" names a side: cos = (-0.09 + 0.09) / 0.18 = 0 -> dir 0.5
    # -> score (0.5 + 1 + 0.8 * 0.5) / 2.3 = 1.9 / 2.3 = 0.826087
    left = prior.score_pair("cup", "left of", "plate", s, o)
    assert left.terms == pytest.approx({"size": 1.0, "dist": 1.0, "dir": 0.5})
    assert left.score == pytest.approx(82.6087, abs=1e-4)


class FakeEmbedder:
    """Unit vectors whose dot products are the similarities a test wants (one axis per label)."""

    def __init__(self, vectors):
        self.vectors = vectors

    def encode(self, labels):
        import torch

        return torch.tensor([self.vectors[label] for label in labels], dtype=torch.float64)


def _axis(size, **parts):
    vector = [0.0] * size
    for index, value in parts.items():
        vector[int(index[1:])] = value
    return vector


def test_similarity_threshold_and_confidence_weighting_by_hand():
    root = math.sqrt
    vectors = {
        "cup": _axis(9, i0=1.0),
        "mug": _axis(9, i0=0.9, i1=root(1 - 0.81)),  # cos(cup, mug) = 0.9
        "glass": _axis(9, i0=0.8, i2=0.6),  # cos(cup, glass) = 0.8: at the threshold, matches
        "bowl": _axis(9, i0=0.79, i3=root(1 - 0.79 ** 2)),  # cos(cup, bowl) = 0.79: below, no match
        "table": _axis(9, i4=1.0),
        "dog": _axis(9, i5=1.0),
        "puppy": _axis(9, i5=0.8, i6=0.6),  # cos(dog, puppy) = 0.8
        "cat": _axis(9, i7=1.0),
        "kitten": _axis(9, i7=0.9, i8=root(1 - 0.81)),  # cos(cat, kitten) = 0.9
    }
    swapped = ((0.4, 0.5, 0.2, 0.2), (0.1, 0.0, 0.8, 0.5))
    pool = _pool([("mug", "on", "table", G_S, G_O), ("glass", "on", "table", E_S, E_O),
                  ("bowl", "on", "table", *swapped), ("puppy", "near", "kitten", *swapped)])
    prior = GeometricPrior(pool, CategoryMatcher(FakeEmbedder(vectors)), threshold=0.8, percentile=50)
    on = prior.score_pair("cup", "on", "table", G_S, G_O)
    # mug (score 1) and glass (0.610270) match, bowl (0.304348) does not: median (1 + 0.610270) / 2
    assert on.matches == 2
    assert on.score == pytest.approx(80.5135, abs=1e-3)
    assert on.confidence == pytest.approx(0.9 * 1 + 0.8 * 1)  # 1.7
    near = prior.score_pair("dog", "near", "cat", G_S, G_O)
    # Each label passes 0.8 on its own, though their product 0.8 * 0.9 = 0.72 does not.
    assert near.matches == 1 and near.confidence == pytest.approx(0.72)
    assert near.score == pytest.approx(100 * 0.7 / 2.3)  # the swapped twin: 30.4348
    # (80.5135 * 1.7 + 30.4348 * 0.72) / (1.7 + 0.72) = (136.8730 + 21.9130) / 2.42 = 65.6141
    assert layout_geometry([on, near]) == pytest.approx(65.6141, abs=1e-3)
