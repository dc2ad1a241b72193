"""The pair prior of CLIS-L: every object and every object pair against real scenes.

The paper's prior (``clis.layout_score.prior``) only judges pairs that a relation word
names, but real layouts (COCO, and most generated ones) carry no relations. This prior needs
only labels and boxes. It learns from a pool's *scenes* (real images' labelled boxes) how
objects of a label are placed and sized, and how the boxes of two labels sit relative to
each other, and asks whether a layout looks like that.

**Features** of boxes ``[x, y, w, h]`` on a canvas normalised to 1 x 1 (``UNARY_FEATURES``,
``PAIR_FEATURES``):

* per object: centre height ``cy``, top edge ``y``, bottom edge ``y + h``, ``log(w h)``,
  ``log(w / h)`` and the horizontal distance of the centre from the middle, ``|cx - 1/2|``;
* per ordered pair (i, j): ``log(A_i / A_j)``, ``cy_j - cy_i``, the top-edge and bottom-edge
  differences, ``|cx_j - cx_i|`` and the IoU.

Horizontal features are taken unsigned because the mirror image of a photo is a photo.

**Densities.** Each feature gets a one-dimensional Gaussian kernel density (Scott's
bandwidth, at least ``MIN_BANDWIDTH``) per label (per object feature) and per ordered label
pair (per pair feature), estimated from the pool's scenes. Sparse labels back off to the
label-blind density ``g`` of all the pool's objects (or pairs) by additive smoothing::

    p(x | a) = (n_a k_a(x) + m g(x)) / (n_a + m)          m = ``strength``

A layout label that is not a pool label is matched to similar pool labels with the text
embedder (cosine >= ``threshold``, up to ``MATCH_TOP_K``, weighted by similarity); a label
that matches nothing has ``p = g``.

**Evidence.** The reference density of each feature is ``g`` made symmetric under a vertical
flip, ``q(x) = (g(x) + g_flip(x)) / 2``, ``g_flip`` being ``g``'s kernels on the flipped
samples (``cy -> 1 - cy``, bottom -> one minus the top, ``dy -> -dy``, ...); for a feature
that a flip leaves alone, ``q = g``. Under ``q`` nothing depends on labels, and nothing
changes when boxes are flipped or exchanged between objects, so ``log p - log q`` is the
evidence the labels give that the boxes are drawn as in real photos: positive for a real
scene, negative for one that contradicts what the pool knows of its labels, 0 where it knows
nothing. A layout's evidence is the mean over its objects of their summed object-feature
terms plus the mean over its ordered pairs of their summed pair-feature terms, and its
score is::

    pair_prior = 100 * sigmoid(evidence / temperature)

so **50 means no evidence either way**. ``strength`` and ``temperature`` were chosen on a
development split of the pool's own scenes (``docs/clis-l.md``), never on an evaluation set.

Example:
    >>> scenes = [[("sky", [0.0, 0.0, 1.0, 0.3 + d]), ("road", [0.0, 0.6 + d, 1.0, 0.3])]
    ...           for d in (0.0, 0.02, 0.04, 0.06, 0.08)]
    >>> prior = ScenePrior(scenes)
    >>> real = prior.score([("sky", [0.0, 0.0, 1.0, 0.35]), ("road", [0.0, 0.65, 1.0, 0.3])])
    >>> flipped = prior.score([("sky", [0.0, 0.65, 1.0, 0.35]), ("road", [0.0, 0.05, 1.0, 0.3])])
    >>> real.score > 50 > flipped.score
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from clis.layout_score.geometry import iou
from clis.layout_score.llm import sigmoid
from clis.layout_score.pool import CategoryMatcher, normalize_text

UNARY_FEATURES = ("cy", "top", "bottom", "log_area", "log_aspect", "cx_offset")
PAIR_FEATURES = ("log_area_ratio", "dy", "top_gap", "bottom_gap", "abs_dx", "iou")
MIN_BANDWIDTH = {"cy": 0.02, "top": 0.02, "bottom": 0.02, "log_area": 0.1, "log_aspect": 0.1, "cx_offset": 0.02,
                 "log_area_ratio": 0.1, "dy": 0.02, "top_gap": 0.02, "bottom_gap": 0.02, "abs_dx": 0.02,
                 "iou": 0.02}
DEFAULT_STRENGTH = 20.0
DEFAULT_TEMPERATURE = 1.2
MATCH_TOP_K = 3
_LOG_FLOOR = 1e-12

Scene = Sequence[tuple[str, Sequence[float]]]  # (label, normalised [x, y, w, h]) per object


def _boxes(boxes: Sequence[Sequence[float]]) -> np.ndarray:
    array = np.asarray(boxes, dtype=float).reshape(-1, 4)
    # Degenerate boxes cannot reach here through a Layout; the floor keeps a pool's logs finite.
    array[:, 2:] = np.maximum(array[:, 2:], 1e-6)
    return array


def unary_features(boxes: Sequence[Sequence[float]]) -> dict[str, np.ndarray]:
    """Object features of normalised ``[x, y, w, h]`` boxes, one value per box.

    >>> {k: round(float(v[0]), 4) for k, v in unary_features([[0.1, 0.2, 0.4, 0.2]]).items()}
    {'cy': 0.3, 'top': 0.2, 'bottom': 0.4, 'log_area': -2.5257, 'log_aspect': 0.6931, 'cx_offset': 0.2}
    """
    b = _boxes(boxes)
    return {
        "cy": b[:, 1] + b[:, 3] / 2,
        "top": b[:, 1],
        "bottom": b[:, 1] + b[:, 3],
        "log_area": np.log(b[:, 2] * b[:, 3]),
        "log_aspect": np.log(b[:, 2] / b[:, 3]),
        "cx_offset": np.abs(b[:, 0] + b[:, 2] / 2 - 0.5),
    }


def pair_features(first: Sequence[Sequence[float]], second: Sequence[Sequence[float]]) -> dict[str, np.ndarray]:
    """Features of ordered box pairs (row i of ``first`` with row i of ``second``).

    >>> f = pair_features([[0.0, 0.0, 0.5, 0.5]], [[0.5, 0.5, 0.5, 0.25]])
    >>> {k: round(float(v[0]), 4) for k, v in f.items()}
    {'log_area_ratio': 0.6931, 'dy': 0.375, 'bottom_gap': 0.25, 'top_gap': 0.5, 'abs_dx': 0.5, 'iou': 0.0}
    """
    a, b = _boxes(first), _boxes(second)
    return {
        "log_area_ratio": np.log(a[:, 2] * a[:, 3]) - np.log(b[:, 2] * b[:, 3]),
        "dy": (b[:, 1] + b[:, 3] / 2) - (a[:, 1] + a[:, 3] / 2),
        "bottom_gap": (b[:, 1] + b[:, 3]) - (a[:, 1] + a[:, 3]),
        "top_gap": b[:, 1] - a[:, 1],
        "abs_dx": np.abs((b[:, 0] + b[:, 2] / 2) - (a[:, 0] + a[:, 2] / 2)),
        "iou": iou(a, b),
    }


def _flip(boxes: np.ndarray) -> np.ndarray:
    flipped = boxes.copy()
    flipped[:, 1] = 1.0 - boxes[:, 1] - boxes[:, 3]
    return flipped


def prior_constants() -> dict:
    """What the pair prior computes besides its settings (for the scorer's manifest)."""
    return {"unary_features": list(UNARY_FEATURES), "pair_features": list(PAIR_FEATURES),
            "min_bandwidth": MIN_BANDWIDTH, "match_top_k": MATCH_TOP_K}


class _Density:
    """A one-dimensional Gaussian kernel density over fixed samples; the bandwidth is Scott's
    rule ``1.06 sd n^(-1/5)``, at least ``min_bandwidth``, unless given."""

    def __init__(self, samples: np.ndarray, min_bandwidth: float, bandwidth: Optional[float] = None):
        self.samples = np.asarray(samples, dtype=float)
        self.n = len(self.samples)
        spread = float(np.std(self.samples)) if self.n > 1 else 0.0
        scott = 1.06 * spread * self.n ** -0.2 if self.n else 0.0
        self.bandwidth = bandwidth if bandwidth is not None else max(scott, min_bandwidth)

    def __call__(self, x: float) -> float:
        if self.n == 0:
            return 0.0
        z = (x - self.samples) / self.bandwidth
        return float(np.exp(-0.5 * z * z).sum() / (self.n * self.bandwidth * math.sqrt(2 * math.pi)))


class _FeatureTable:
    """Densities of several features per group (a label or a label pair), plus the label-blind
    density of all samples and its flip-symmetric reference."""

    def __init__(self, names: Sequence[str], groups: dict, values: dict[str, np.ndarray],
                 flipped: dict[str, np.ndarray]):
        self.names = tuple(names)
        self.groups: dict = {}
        for key, index in groups.items():
            index = np.asarray(index, dtype=np.int64)
            self.groups[key] = (len(index), {f: _Density(values[f][index], MIN_BANDWIDTH[f]) for f in names})
        self.blind = {f: _Density(values[f], MIN_BANDWIDTH[f]) for f in names}
        # The flipped samples with the same bandwidth: for a feature a flip leaves alone, q = g exactly.
        self.blind_flipped = {f: _Density(flipped[f], MIN_BANDWIDTH[f], self.blind[f].bandwidth) for f in names}

    def evidence(self, weights: dict, x: dict[str, float], strength: float) -> tuple[float, dict[str, float]]:
        """``sum_f log p_f(x) - log q_f(x)`` with ``p`` the weighted, smoothed group mixture."""
        total, terms = 0.0, {}
        for name in self.names:
            value = x[name]
            blind = self.blind[name](value)
            count, mixture = 0.0, 0.0
            for key, weight in weights.items():
                n, densities = self.groups[key]
                count += weight * n
                mixture += weight * n * densities[name](value)
            p = (mixture + strength * blind) / (count + strength)
            q = 0.5 * (blind + self.blind_flipped[name](value))  # g made symmetric under a flip
            term = math.log(max(p, _LOG_FLOOR)) - math.log(max(q, _LOG_FLOOR))
            terms[name] = term
            total += term
        return total, terms


@dataclass
class SceneResult:
    """The pair prior of one layout: its score (0..100), its evidence, and the terms."""

    score: float
    evidence: float
    objects: list[dict] = field(default_factory=list)  # per object: label, matched pool labels, evidence
    pairs: list[dict] = field(default_factory=list)  # per ordered pair (i, j): evidence
    unknown_labels: list[str] = field(default_factory=list)


class ScenePrior:
    """The pair prior over ``scenes``: lists of (label, normalised box); see the module docstring."""

    def __init__(self, scenes: Sequence[Scene], matcher: Optional[CategoryMatcher] = None, threshold: float = 0.8,
                 strength: float = DEFAULT_STRENGTH, temperature: float = DEFAULT_TEMPERATURE):
        self.matcher = matcher or CategoryMatcher()
        self.threshold = threshold
        self.strength = strength
        self.temperature = temperature
        labels, boxes, first, second = [], [], [], []  # every object; every ordered pair within a scene
        for scene in scenes:
            members = range(len(labels), len(labels) + len(scene))
            for label, box in scene:
                labels.append(normalize_text(label))
                boxes.append(list(box))
            first += [i for i in members for j in members if i != j]
            second += [j for i in members for j in members if i != j]
        self.labels = sorted(set(labels))
        box_array = _boxes(boxes) if boxes else np.zeros((0, 4))
        by_label: dict[str, list[int]] = {}
        for i, label in enumerate(labels):
            by_label.setdefault(label, []).append(i)
        self.objects = _FeatureTable(UNARY_FEATURES, by_label, unary_features(box_array),
                                     unary_features(_flip(box_array)))
        by_pair: dict[tuple[str, str], list[int]] = {}
        for k, (i, j) in enumerate(zip(first, second)):
            by_pair.setdefault((labels[i], labels[j]), []).append(k)
        a, b = box_array[first], box_array[second]
        self.pairs = _FeatureTable(PAIR_FEATURES, by_pair, pair_features(a, b), pair_features(_flip(a), _flip(b)))
        self._matches: dict[str, dict[str, float]] = {}

    def match(self, label: str) -> dict[str, float]:
        """Pool labels standing in for ``label``, with weights: itself, else similar ones."""
        label = normalize_text(label)
        if label not in self._matches:
            if label in self.objects.groups:
                found = {label: 1.0}
            elif self.matcher.embedder is None or not self.labels:
                found = {}
            else:
                similarity = self.matcher.similarity(label, self.labels, key="scene-labels")
                order = np.argsort(-similarity)[:MATCH_TOP_K]
                found = {self.labels[i]: float(similarity[i]) for i in order if similarity[i] >= self.threshold}
            self._matches[label] = found
        return self._matches[label]

    def score(self, objects: Scene) -> SceneResult:
        """Score one layout given as (label, normalised box) per object."""
        labels = [label for label, _ in objects]
        boxes = _boxes([box for _, box in objects])
        matched = [self.match(label) for label in labels]
        unary = unary_features(boxes)
        result = SceneResult(score=50.0, evidence=0.0)
        object_evidence = []
        for i, label in enumerate(labels):
            value, terms = self.objects.evidence(matched[i], {f: float(unary[f][i]) for f in UNARY_FEATURES},
                                                 self.strength)
            object_evidence.append(value)
            result.objects.append({"label": label, "matches": sorted(matched[i]), "evidence": round(value, 4),
                                   "terms": {k: round(v, 4) for k, v in terms.items()}})
            if not matched[i]:
                result.unknown_labels.append(label)
        pair_evidence = []
        n = len(labels)
        order = [(i, j) for i in range(n) for j in range(n) if i != j]
        if order:
            features = pair_features(boxes[[i for i, _ in order]], boxes[[j for _, j in order]])
            for k, (i, j) in enumerate(order):
                weights = {(a, b): wa * wb for a, wa in matched[i].items() for b, wb in matched[j].items()
                           if (a, b) in self.pairs.groups}
                value, _ = self.pairs.evidence(weights, {f: float(features[f][k]) for f in PAIR_FEATURES},
                                               self.strength)
                pair_evidence.append(value)
                result.pairs.append({"first": i, "second": j, "evidence": round(value, 4)})
        evidence = float(np.mean(object_evidence)) if object_evidence else 0.0
        if pair_evidence:
            evidence += float(np.mean(pair_evidence))
        result.evidence = evidence
        result.score = 100.0 * sigmoid(evidence / self.temperature)
        return result
