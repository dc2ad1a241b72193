"""The geometric prior of CLIS-L: how much a box pair looks like a real example of its relation.

Every function here takes plain numbers or numpy arrays (element-wise), so the same code
scores one pool example in a test and a million examples in a run.

For a generated pair (s, o) and a pool example (s', o') of the same relation, with boxes
``[x, y, w, h]`` and centres ``(x + w/2, y + h/2)``:

* ``sim(a, b) = 1`` if ``a + b < 1e-10``, else ``1 - |a - b| / max(a, b)``
* ``size = sim(area(s)/area(o), area(s')/area(o'))``
* ``dist = mean(sim(IoU(s, o), IoU(s', o')), sim(RD(s, o), RD(s', o')))`` where RD is the
  centre distance over the mean of the two box diagonals
* ``dir = (cos(d, d') + 1) / 2`` with ``d = centre(o) - centre(s)``; 1 if both vectors are
  zero, 0 if only one is; for relations without "left"/"right" in them ``d'`` mirrored in x
  is tried too and the larger value kept (photos are mirror-symmetric)
* ``p(x) = x`` if ``x >= t`` else ``-(1 + t)(1 - x/t) + t`` with ``t = 0.03``
* ``score = (0.5 p(size) + 1.0 p(dist) + 0.8 p(dir)) / 2.3``

Example:
    >>> s, o = (0.4, 0.3, 0.2, 0.2), (0.1, 0.5, 0.8, 0.5)
    >>> f = pair_features(s, o)
    >>> round(float(f.area_ratio[0]), 4)   # 0.04 / 0.4
    0.1
    >>> round(float(example_score(f, f, mirror=True).score[0]), 4)   # identical pairs agree fully
    1.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

ArrayLike = Union[float, Sequence[float], np.ndarray]

SIM_EPS = 1e-10
PENALTY_THRESHOLD = 0.03
TERM_WEIGHTS = {"size": 0.5, "dist": 1.0, "dir": 0.8}


def sim(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Similarity of two non-negative feature values: 1 when equal, 0 when one is 0.

    >>> float(sim(0.25, 0.5))   # 1 - 0.25 / 0.5
    0.5
    >>> float(sim(0.0, 0.0))
    1.0
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    top = np.maximum(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = 1.0 - np.abs(a - b) / top
    return np.where(a + b < SIM_EPS, 1.0, value)


def penalty(x: ArrayLike, t: float = PENALTY_THRESHOLD) -> np.ndarray:
    """Map ``[0, t]`` linearly onto ``[-1, t]`` and keep ``x >= t``: near-zero terms hurt.

    >>> float(penalty(0.0)), float(penalty(0.03)), float(penalty(0.5))
    (-1.0, 0.03, 0.5)
    """
    x = np.asarray(x, dtype=float)
    return np.where(x >= t, x, -(1.0 + t) * (1.0 - x / t) + t)


def _as_boxes(boxes: ArrayLike) -> np.ndarray:
    return np.asarray(boxes, dtype=float).reshape(-1, 4)


def areas(boxes: ArrayLike) -> np.ndarray:
    b = _as_boxes(boxes)
    return b[:, 2] * b[:, 3]


def centres(boxes: ArrayLike) -> np.ndarray:
    b = _as_boxes(boxes)
    return b[:, :2] + b[:, 2:] / 2.0


def iou(s: ArrayLike, o: ArrayLike) -> np.ndarray:
    """Intersection over union of ``[x, y, w, h]`` boxes (row by row)."""
    s, o = _as_boxes(s), _as_boxes(o)
    left = np.maximum(s[:, 0], o[:, 0])
    top = np.maximum(s[:, 1], o[:, 1])
    right = np.minimum(s[:, 0] + s[:, 2], o[:, 0] + o[:, 2])
    bottom = np.minimum(s[:, 1] + s[:, 3], o[:, 1] + o[:, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    union = areas(s) + areas(o) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def relative_distance(s: ArrayLike, o: ArrayLike) -> np.ndarray:
    """Distance between the box centres divided by the mean of the two box diagonals."""
    s, o = _as_boxes(s), _as_boxes(o)
    gap = np.linalg.norm(centres(o) - centres(s), axis=1)
    mean_diagonal = (np.hypot(s[:, 2], s[:, 3]) + np.hypot(o[:, 2], o[:, 3])) / 2.0
    return np.divide(gap, mean_diagonal, out=np.zeros_like(gap), where=mean_diagonal > 0)


@dataclass
class PairFeatures:
    """Scale-free features of (subject, object) box pairs; each field has one value per pair.

    ``direction`` is ``centre(object) - centre(subject)``, shape ``[N, 2]``.
    """

    area_ratio: np.ndarray
    iou: np.ndarray
    rd: np.ndarray
    direction: np.ndarray

    def __len__(self) -> int:
        return len(self.area_ratio)

    def take(self, index: np.ndarray) -> "PairFeatures":
        return PairFeatures(self.area_ratio[index], self.iou[index], self.rd[index], self.direction[index])


def pair_features(subject: ArrayLike, obj: ArrayLike) -> PairFeatures:
    """Features of one or many (subject, object) box pairs.

    Boxes may be in any unit as long as both boxes of a pair share it: every feature is
    unchanged by scaling the pair uniformly (pixels and normalised square canvases agree).
    """
    s, o = _as_boxes(subject), _as_boxes(obj)
    object_area = areas(o)
    ratio = np.divide(areas(s), object_area, out=np.zeros_like(object_area), where=object_area > 0)
    return PairFeatures(ratio, iou(s, o), relative_distance(s, o), centres(o) - centres(s))


def direction_score(d: ArrayLike, d_ref: ArrayLike, mirror: bool) -> np.ndarray:
    """``(cos(d, d') + 1) / 2``; 1 if both vectors are 0, 0 if only one is.

    With ``mirror`` the reference vector flipped in x is tried as well and the larger value kept.

    >>> direction_score([0, 1], [0, 1], mirror=False).tolist()
    [1.0]
    >>> direction_score([1, 0], [-1, 0], mirror=True).tolist()   # mirrored: same direction
    [1.0]
    """
    d = np.asarray(d, dtype=float).reshape(-1, 2)
    d_ref = np.asarray(d_ref, dtype=float).reshape(-1, 2)
    value = _half_cosine(d, d_ref)
    if mirror:
        value = np.maximum(value, _half_cosine(d, d_ref * np.array([-1.0, 1.0])))
    return value


def _half_cosine(d: np.ndarray, d_ref: np.ndarray) -> np.ndarray:
    norm, norm_ref = np.linalg.norm(d, axis=1), np.linalg.norm(d_ref, axis=1)
    zero, zero_ref = norm < SIM_EPS, norm_ref < SIM_EPS
    denominator = np.where(zero | zero_ref, 1.0, norm * norm_ref)
    cosine = np.clip((d * d_ref).sum(axis=1) / denominator, -1.0, 1.0)
    value = (cosine + 1.0) / 2.0
    value = np.where(zero & zero_ref, 1.0, value)
    return np.where(zero ^ zero_ref, 0.0, value)


def relation_is_mirror_symmetric(relation: str) -> bool:
    """Relations that do not name a side ("on", "next to") hold in the mirrored image too."""
    words = relation.lower()
    return "left" not in words and "right" not in words


@dataclass
class ExampleScore:
    """Per-example terms (raw, before the penalty) and the combined, penalised score."""

    size: np.ndarray
    dist: np.ndarray
    dir: np.ndarray
    score: np.ndarray


def example_score(generated: PairFeatures, examples: PairFeatures, mirror: bool,
                  t: float = PENALTY_THRESHOLD) -> ExampleScore:
    """Score a generated pair (one row of ``generated``) against every row of ``examples``."""
    size = sim(generated.area_ratio, examples.area_ratio)
    dist = (sim(generated.iou, examples.iou) + sim(generated.rd, examples.rd)) / 2.0
    direction = direction_score(np.broadcast_to(generated.direction, examples.direction.shape),
                                examples.direction, mirror)
    total = sum(TERM_WEIGHTS.values())
    score = (TERM_WEIGHTS["size"] * penalty(size, t) + TERM_WEIGHTS["dist"] * penalty(dist, t)
             + TERM_WEIGHTS["dir"] * penalty(direction, t)) / total
    return ExampleScore(size, dist, direction, score)


def relation_from_geometry(subject: ArrayLike, obj: ArrayLike) -> list[str]:
    """Relation words for box pairs without annotated relations (COCO instances).

    ``"inside"`` / ``"surrounding"`` when one box contains the other, else the side the
    subject lies on as seen from the object: ``"left of"``, ``"right of"``, ``"above"``,
    ``"below"`` (the vocabulary of scene-graph-to-image work on COCO). Image y grows downwards.

    >>> relation_from_geometry([[0.4, 0.1, 0.2, 0.2]], [[0.1, 0.5, 0.8, 0.4]])
    ['above']
    """
    s, o = _as_boxes(subject), _as_boxes(obj)
    s_inside_o = ((s[:, 0] >= o[:, 0]) & (s[:, 1] >= o[:, 1]) & (s[:, 0] + s[:, 2] <= o[:, 0] + o[:, 2])
                  & (s[:, 1] + s[:, 3] <= o[:, 1] + o[:, 3]))
    o_inside_s = ((o[:, 0] >= s[:, 0]) & (o[:, 1] >= s[:, 1]) & (o[:, 0] + o[:, 2] <= s[:, 0] + s[:, 2])
                  & (o[:, 1] + o[:, 3] <= s[:, 1] + s[:, 3]))
    d = centres(s) - centres(o)  # where the subject sits, seen from the object
    words = []
    for i in range(len(s)):
        if s_inside_o[i]:
            words.append("inside")
        elif o_inside_s[i]:
            words.append("surrounding")
        elif abs(d[i, 0]) >= abs(d[i, 1]):
            words.append("left of" if d[i, 0] < 0 else "right of")
        else:
            words.append("above" if d[i, 1] < 0 else "below")
    return words
