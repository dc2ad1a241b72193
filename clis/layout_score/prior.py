"""The geometric prior: score a generated (subject, relation, object) pair against the pool.

A pool example matches when its relation is the same (after normalisation) and both its
labels are at least ``threshold`` similar to the pair's labels. The pair's score is the
``percentile``-th percentile of its matching examples' scores (robust to a noisy pool, unlike
the maximum); its confidence is the summed category similarity of the matching examples,
where one example's similarity is ``sim(subject labels) * sim(object labels)``.

Example:
    >>> from clis.layout_score.pool import Pool, PoolExample, CategoryMatcher
    >>> pool = Pool([PoolExample(subject="cup", relation="on", object="table",
    ...                          subject_box=[0.4, 0.3, 0.2, 0.2], object_box=[0.1, 0.5, 0.8, 0.5])])
    >>> prior = GeometricPrior(pool, CategoryMatcher())
    >>> prior.score_pair("cup", "on", "table", [0.4, 0.3, 0.2, 0.2], [0.1, 0.5, 0.8, 0.5]).score
    100.0
    >>> prior.score_pair("cup", "under", "table", [0.4, 0.3, 0.2, 0.2], [0.1, 0.5, 0.8, 0.5]).unknown
    "the pool has no example of relation 'under'"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from clis.layout_score.geometry import example_score, pair_features, relation_is_mirror_symmetric
from clis.layout_score.pool import CategoryMatcher, Pool, normalize_text


@dataclass
class GeometryResult:
    """One pair's geometric prior; ``score`` is None and ``unknown`` says why when nothing matched."""

    relation: str
    score: Optional[float] = None
    matches: int = 0
    confidence: float = 0.0
    terms: Optional[dict] = None
    unknown: Optional[str] = None

    def to_dict(self) -> dict:
        return {
            "relation": self.relation,
            "score": None if self.score is None else round(self.score, 4),
            "matches": self.matches,
            "confidence": round(self.confidence, 4),
            "terms": self.terms,
            "unknown": self.unknown,
        }


class GeometricPrior:
    """Pairs against a :class:`Pool`; see the module docstring for the matching rule."""

    def __init__(self, pool: Pool, matcher: CategoryMatcher, threshold: float = 0.8, percentile: float = 98.0):
        self.pool = pool
        self.matcher = matcher
        self.threshold = threshold
        self.percentile = percentile

    def score_pair(self, subject: str, relation: str, obj: str, subject_box: Sequence[float],
                   object_box: Sequence[float]) -> GeometryResult:
        relation = normalize_text(relation)
        group = self.pool.by_relation.get(relation)
        if group is None:
            return GeometryResult(relation, unknown=f"the pool has no example of relation {relation!r}")
        subject_sim = self.matcher.similarity(subject, group.labels, key=relation)[group.subject_index]
        object_sim = self.matcher.similarity(obj, group.labels, key=relation)[group.object_index]
        matching = np.flatnonzero((subject_sim >= self.threshold) & (object_sim >= self.threshold))
        if matching.size == 0:
            return GeometryResult(
                relation, unknown=f"no pool example of {relation!r} has labels similar to ({subject!r}, {obj!r}) "
                f"(threshold {self.threshold})"
            )
        scores = example_score(pair_features(subject_box, object_box), group.features.take(matching),
                               mirror=relation_is_mirror_symmetric(relation))
        value = float(np.percentile(scores.score, self.percentile))
        # The terms shown are those of the matching example whose score is nearest the percentile.
        nearest = int(np.argmin(np.abs(scores.score - value)))
        terms = {name: round(float(getattr(scores, name)[nearest]), 4) for name in ("size", "dist", "dir")}
        confidence = float((subject_sim[matching] * object_sim[matching]).sum())
        # Scores below 0 (all terms near zero, penalised) are clipped: every reported score is 0..100.
        return GeometryResult(relation, 100.0 * min(max(value, 0.0), 1.0), int(matching.size), confidence, terms)


def layout_geometry(results: Sequence[GeometryResult]) -> Optional[float]:
    """Confidence-weighted mean of the known pairs' scores (0..100); None when none is known.

    >>> layout_geometry([GeometryResult("on", 80.0, 1, 3.0), GeometryResult("on", 40.0, 1, 1.0),
    ...                  GeometryResult("on", unknown="no example")])
    70.0
    """
    known = [r for r in results if r.score is not None and r.confidence > 0]
    if not known:
        return None
    total = sum(r.confidence for r in known)
    return sum(r.score * r.confidence for r in known) / total
