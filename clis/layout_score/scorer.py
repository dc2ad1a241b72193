"""CLIS-L for whole layouts: LLM plausibility, the geometric prior, and their combination.

Example:
    >>> import tempfile
    >>> from clis.layout import Layout
    >>> from clis.testing import build_tiny_causal_lm
    >>> scorer = LayoutScorer(LayoutScoreConfig(llm=build_tiny_causal_lm(tempfile.mkdtemp())))
    >>> layout = Layout.model_validate({"id": "tea", "objects": [
    ...     {"id": "cup-1", "label": "cup", "bbox": [0.4, 0.3, 0.2, 0.2]},
    ...     {"id": "table-1", "label": "table", "bbox": [0.1, 0.5, 0.8, 0.5]}]})
    >>> result = scorer.score_layouts([layout])[0]
    >>> 0 <= result.clis_l <= 100, result.geometry is None
    (True, True)
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clis.errors import ClisError, InputError
from clis.layout import Layout, LayoutObject
from clis.layout_score.cache import DEFAULT_CACHE, CachedScore, LayoutScoreCache, default_path, layout_key
from clis.layout_score.llm import (
    ASPECT_WEIGHTS, SIZE_QUESTIONS, STATEMENT_CONTEXT, VERTICAL_TEMPLATES, Aspect, LogLikelihoodScorer,
    pair_llm_score, resolve_aspects, verbalise_pair,
)
from clis.layout_score.embedded_pool import DEFAULT_POOL, resolve_pool
from clis.layout_score.prior import GeometricPrior, GeometryResult, layout_geometry
from clis.layout_score.scene_prior import DEFAULT_STRENGTH, DEFAULT_TEMPERATURE, ScenePrior, prior_constants

NEUTRAL = 50.0
# Measured (docs/clis-l.md, section 3). On a development split of the embedded pool's real
# scenes the LLM lowered every win rate it was mixed into, so it only speaks for labels the
# pool does not know (its weight scales with their share, see combine); 8 was the smallest
# weight that let it carry the hand-made pairs of tests/data. The relation prior, where a
# layout has relations the pool knows, was as good as the pair prior and best mixed equally.
DEFAULT_WEIGHTS = {"llm": 8.0, "geometry": 1.0, "pair_prior": 1.0}
RELATED_PAIR_WEIGHT = 2.0  # pairs the layout names in a relation count twice in the LLM mean
_DISABLED = ("", "none", "off")


def _default(name: str) -> str:
    import clis.models

    return getattr(clis.models, name)


class LayoutWeights(BaseModel):
    """Weights of the sources in CLIS-L, normalised by the sum over the sources computed for a
    layout (see ``docs/clis-l.md`` for how the defaults were measured)."""

    model_config = ConfigDict(extra="forbid")

    # Finite: an infinite weight makes every weighted mean it enters NaN.
    llm: float = Field(DEFAULT_WEIGHTS["llm"], ge=0, allow_inf_nan=False)
    geometry: float = Field(DEFAULT_WEIGHTS["geometry"], ge=0, allow_inf_nan=False)
    pair_prior: float = Field(DEFAULT_WEIGHTS["pair_prior"], ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _some_weight(self) -> "LayoutWeights":
        if self.llm + self.geometry + self.pair_prior <= 0:
            raise ValueError("weights: llm + geometry + pair_prior must be > 0")
        return self


class LayoutScoreConfig(BaseModel):
    """CLIS-L settings as plain data (``clis score`` passes its ``layout`` table here).

    ``llm`` and ``text_embedder`` are model specs (None or ``"none"`` turns them off: no LLM
    score, or exact label matching); ``pool`` is a pool file or ``embedded:nsr1k`` (the default, shipped
    with clis), None for LLM plausibility only. A pool's scenes feed the pair prior, its
    relation examples the relation prior (``geometry``).
    """

    model_config = ConfigDict(extra="forbid")

    llm: Optional[str] = Field(default_factory=lambda: _default("DEFAULT_LLM"))
    pool: Optional[str] = DEFAULT_POOL
    text_embedder: Optional[str] = Field(default_factory=lambda: _default("DEFAULT_TEXT_EMBEDDER"))
    match_threshold: float = Field(0.8, ge=-1, le=1)
    percentile: float = Field(98.0, ge=0, le=100)
    weights: LayoutWeights = Field(default_factory=LayoutWeights)
    device: str = "cpu"
    batch_size: int = Field(32, ge=1)
    max_pairs: int = Field(28, ge=1)
    vertical_margin: float = Field(0.05, ge=0, le=1)
    size_ratio: float = Field(2.0, gt=1)
    pair_strength: float = Field(DEFAULT_STRENGTH, gt=0, allow_inf_nan=False)
    pair_temperature: float = Field(DEFAULT_TEMPERATURE, gt=0, allow_inf_nan=False)

    @field_validator("pool")
    @classmethod
    def _pool_off(cls, pool: Optional[str]) -> Optional[str]:
        return None if pool is None or pool.strip().lower() in _DISABLED else pool

    @property
    def llm_enabled(self) -> bool:
        return self.llm is not None and self.llm.strip().lower() not in _DISABLED

    @property
    def embedder_enabled(self) -> bool:
        return self.text_embedder is not None and self.text_embedder.strip().lower() not in _DISABLED

    @model_validator(mode="after")
    def _some_source(self) -> "LayoutScoreConfig":
        if not self.llm_enabled and not self.pool:
            raise ValueError("CLIS-L needs an LLM or a pool: llm and pool are both 'none'")
        return self


@dataclass
class LayoutScore:
    """CLIS-L of one layout. Scores are 0..100; a source's score is None when not computed.

    The sources: ``llm`` (LLM plausibility), ``geometry`` (the paper's prior over related
    pairs) and ``pair_prior`` (every object and pair against a pool's real scenes).
    """

    id: str
    clis_l: Optional[float]
    llm: Optional[float] = None
    geometry: Optional[float] = None
    pair_prior: Optional[float] = None
    pairs: list[dict] = field(default_factory=list)
    objects: list[dict] = field(default_factory=list)  # the pair prior's evidence per object
    label_coverage: Optional[float] = None  # share of objects whose label the pool's scenes know
    unknown_pairs: int = 0
    notes: list[str] = field(default_factory=list)
    manifest_id: Optional[str] = None
    manifest_summary: dict = field(default_factory=dict)
    error: Optional[str] = None

    def to_dict(self) -> dict:
        """The ``clis score-layouts`` JSONL record."""
        rounded = {k: None if v is None else round(float(v), 4) for k, v in
                   (("clis_l", self.clis_l), ("llm", self.llm), ("geometry", self.geometry),
                    ("pair_prior", self.pair_prior))}
        return {"id": self.id, **rounded, "pairs": self.pairs, "objects": self.objects,
                "label_coverage": None if self.label_coverage is None else round(self.label_coverage, 4),
                "unknown_pairs": self.unknown_pairs,
                "notes": self.notes, "manifest": {"id": self.manifest_id, **self.manifest_summary},
                "error": self.error}


@dataclass
class _PairPlan:
    subject: LayoutObject
    obj: LayoutObject
    relations: list[str]
    aspects: list[Aspect]
    geometry: list[GeometryResult] = field(default_factory=list)


def combine(llm: Optional[float], geometry: Optional[float], weights: LayoutWeights,
            pair_prior: Optional[float] = None, coverage: Optional[float] = None) -> Optional[float]:
    """Weighted mean of the sources that were computed (equal weights when every computed
    source has weight 0).

    ``coverage`` is the share of the layout's objects whose label the pair prior's pool
    knows: the pair prior then weighs ``weights.pair_prior * coverage`` and the LLM
    ``weights.llm * (1 - coverage)``, so the LLM speaks for the labels the pool cannot.

    >>> combine(80.0, 40.0, LayoutWeights(llm=0.75, geometry=0.25))
    70.0
    >>> combine(80.0, None, LayoutWeights())
    80.0
    >>> combine(None, 40.0, LayoutWeights(geometry=1.0, pair_prior=3.0), pair_prior=80.0)
    70.0
    >>> combine(20.0, None, LayoutWeights(llm=2.0, pair_prior=1.0), pair_prior=80.0, coverage=0.5)
    40.0
    """
    w_llm, w_pair = weights.llm, weights.pair_prior
    if coverage is not None:
        w_llm, w_pair = w_llm * (1.0 - coverage), w_pair * coverage
    values = ((llm, w_llm), (geometry, weights.geometry), (pair_prior, w_pair))
    parts = [(v, w) for v, w in values if v is not None and w > 0]
    if not parts:
        parts = [(v, 1.0) for v, _ in values if v is not None]
    if not parts:
        return None
    return sum(v * w for v, w in parts) / sum(w for _, w in parts)


class LayoutScorer:
    """Scores layouts with CLIS-L; loads its models once (see ``docs/clis-l.md``).

    ``cache`` keeps results across runs (``clis.layout_score.cache``): by default the file
    ``$CLIS_LAYOUT_CACHE`` names, else ``<cache_dir>/layout_scores.sqlite``, and none when
    ``CLIS_LAYOUT_CACHE=off``; a path or a :class:`LayoutScoreCache` uses that one; None turns
    it off. ``cache_hits`` / ``cache_misses`` count layouts read from / not found in it, and
    ``computed`` the distinct layouts actually scored.
    """

    def __init__(self, config: Optional[LayoutScoreConfig] = None, cache: Any = DEFAULT_CACHE):
        from clis.models import load_model

        self.config = config or LayoutScoreConfig()
        cfg = self.config
        if cache is DEFAULT_CACHE:
            cache = default_path()
        self._owns_cache = not isinstance(cache, LayoutScoreCache)
        # Opened before the models load, so an unusable cache file fails in a second, not a minute.
        self.cache: Optional[LayoutScoreCache] = (
            None if cache is None else cache if isinstance(cache, LayoutScoreCache) else LayoutScoreCache(cache))
        self.cache_hits = 0
        self.cache_misses = 0
        self.computed = 0
        self.llm_model = load_model(cfg.llm, "causal-lm", device=cfg.device) if cfg.llm_enabled else None
        self.log_likelihood = (
            LogLikelihoodScorer(self.llm_model.model, self.llm_model.processor, cfg.batch_size, cfg.device)
            if self.llm_model is not None else None
        )
        self.embedder_model = None
        self.prior: Optional[GeometricPrior] = None
        self.scene_prior: Optional[ScenePrior] = None
        if cfg.pool:
            from clis.layout_score.pool import CategoryMatcher, Pool

            pool = Pool.load(resolve_pool(cfg.pool))
            if len(pool) == 0:
                raise InputError(f"{cfg.pool}: the pool has no examples")
            embedder = None
            if cfg.embedder_enabled:
                from clis.models.text import TextEmbedder

                self.embedder_model = load_model(cfg.text_embedder, "text-embedding", device=cfg.device)
                embedder = TextEmbedder(self.embedder_model)
            matcher = CategoryMatcher(embedder)
            if pool.size:
                self.prior = GeometricPrior(pool, matcher, cfg.match_threshold, cfg.percentile)
            if pool.scenes:
                self.scene_prior = ScenePrior([scene.scene for scene in pool.scenes], matcher, cfg.match_threshold,
                                              cfg.pair_strength, cfg.pair_temperature)
            self.pool = pool
        self._manifest = self._build_manifest()

    # -- manifest ---------------------------------------------------------------------------------

    def _build_manifest(self) -> dict:
        cfg = self.config
        manifest = {
            "metric": "clis_l",
            "settings": cfg.model_dump(mode="json"),
            "llm": (self.llm_model.fingerprint or {"spec": self.llm_model.spec}) if self.llm_model else None,
            "text_embedder": (self.embedder_model.fingerprint or {"spec": self.embedder_model.spec})
            if self.embedder_model else None,
            "pool": self._pool_fingerprint() if self.config.pool else None,
            "pair_prior": prior_constants() if self.scene_prior else None,
            "prompts": {
                "statement_context": STATEMENT_CONTEXT,
                "vertical_templates": list(VERTICAL_TEMPLATES),
                "size_questions": [list(q) for q in SIZE_QUESTIONS],
                "aspect_weights": ASPECT_WEIGHTS,
                "related_pair_weight": RELATED_PAIR_WEIGHT,
            },
        }
        digest = hashlib.sha256(json.dumps(manifest, sort_keys=True, default=str).encode()).hexdigest()
        manifest["id"] = digest[:16]
        return manifest

    def _pool_fingerprint(self) -> dict:
        info = self.pool.fingerprint()
        if str(self.config.pool).startswith("embedded:"):
            info["path"] = self.config.pool  # where clis is installed must not change the manifest id
        return info

    def manifest(self) -> dict:
        """Models (with fingerprints), pool and settings of this scorer, plus a short ``id``."""
        return dict(self._manifest)

    def _summary(self) -> dict:
        return {"llm": self.config.llm if self.llm_model else None, "pool": self.config.pool,
                "weights": self.config.weights.model_dump()}

    def cache_info(self) -> dict:
        """Where results are cached (None: off) and the counters since this scorer was made."""
        return {"path": None if self.cache is None else str(self.cache.path), "hits": self.cache_hits,
                "misses": self.cache_misses, "computed": self.computed}

    def close(self) -> None:
        """Close the cache file if this scorer opened it (results are committed as they come)."""
        if self.cache is not None and self._owns_cache:
            self.cache.close()
        self.cache = None

    # -- scoring ----------------------------------------------------------------------------------

    def _canvas(self, layout: Layout) -> tuple[float, float]:
        return float(layout.width or 1), float(layout.height or 1)

    def _plan(self, layout: Layout) -> tuple[list[_PairPlan], list[str]]:
        """The pairs to judge: related pairs first, then the nearest other pairs, up to ``max_pairs``."""
        notes: list[str] = []
        by_id = {o.id: o for o in layout.objects}
        related: dict[tuple[str, str], list[str]] = {}
        for rel in layout.relations:
            for s, o in itertools.product(rel.subject, rel.object):
                if s in by_id and o in by_id and s != o:
                    related.setdefault((s, o), []).append(rel.relation)
        covered = {frozenset(k) for k in related}
        others = [(a.id, b.id) for a, b in itertools.combinations(layout.objects, 2)
                  if frozenset((a.id, b.id)) not in covered]
        others.sort(key=lambda ids: _centre_gap(by_id[ids[0]], by_id[ids[1]]))
        keys = list(related) + others
        if len(keys) > self.config.max_pairs:
            notes.append(f"{len(keys)} object pairs; judged the {self.config.max_pairs} named in relations or nearest")
            keys = keys[:self.config.max_pairs]
        width, height = self._canvas(layout)
        plans = []
        seen_unordered: set[frozenset] = set()
        for s, o in keys:
            subject, obj = by_id[s], by_id[o]
            # The LLM judges an unordered pair once, even when relations name it both ways.
            unordered = frozenset((s, o))
            asks_llm = self.llm_model is not None and unordered not in seen_unordered and self._llm_judges(
                subject.label, obj.label)
            aspects = [] if not asks_llm else verbalise_pair(
                subject.label, obj.label, subject.bbox, obj.bbox, self.config.vertical_margin, self.config.size_ratio)
            seen_unordered.add(unordered)
            plan = _PairPlan(subject, obj, related.get((s, o), []), aspects)
            if self.prior is not None:
                plan.geometry = [
                    self.prior.score_pair(subject.label, word, obj.label, subject.pixel_box(width, height),
                                          obj.pixel_box(width, height))
                    for word in plan.relations
                ]
            plans.append(plan)
        return plans, notes

    def _llm_judges(self, first: str, second: str) -> bool:
        """The LLM judges a pair unless the pool's scenes know both labels (it measured at
        chance on real layouts, where the pair prior is right far more often)."""
        return self.scene_prior is None or not (self.scene_prior.match(first) and self.scene_prior.match(second))

    def score_layouts(self, layouts: Sequence[Layout],
                      progress: Optional[Callable[[str, int, int], None]] = None) -> list[LayoutScore]:
        """CLIS-L for each layout, in order. All LLM statements of the call are batched together.

        ``progress(stage, done, total)`` is called as LLM batches and layouts finish. A layout
        whose scoring fails gets ``error`` set and null scores; the others go on.

        Layouts with the same content (:func:`clis.layout_score.cache.layout_key`) are scored
        once and each gets its own ``id`` back; results found in the cache are not recomputed,
        and new ones without ``error`` are stored there.
        """
        layouts = list(layouts)
        keys = [_content_key(layout) for layout in layouts]
        manifest_id = self._manifest["id"]
        stored: dict[str, CachedScore] = {}
        if self.cache is not None:
            stored = self.cache.get_many([k for k in dict.fromkeys(keys) if k is not None], manifest_id)
        planned: list[tuple[Layout, Optional[list[_PairPlan]], list[str], Optional[str]]] = []
        first_of: dict[str, int] = {}  # content key -> its entry in planned
        own: dict[int, int] = {}  # input position -> entry in planned, for layouts planned themselves
        for position, (layout, key) in enumerate(zip(layouts, keys)):
            if key in stored or (key is not None and key in first_of):
                continue
            own[position] = len(planned)
            if key is not None:
                first_of[key] = len(planned)
            planned.append(self._plan_safely(layout))
        for position, (layout, key) in enumerate(zip(layouts, keys)):
            # A failed plan's message may name its layout: a twin of it fails on its own.
            if position not in own and key in first_of and planned[first_of[key]][3] is not None:
                own[position] = len(planned)
                planned.append(self._plan_safely(layout))
        if self.log_likelihood is not None:
            aspects = [a for _, plans, _, _ in planned if plans for p in plans for a in p.aspects]
            queries = [q for a in aspects for c in a.comparisons for _, q in c.terms]
            total, done = self.log_likelihood.pending(queries), 0

            def on_batch(n: int) -> None:
                nonlocal done
                done += n
                if progress is not None:
                    progress("statements", done, total)

            resolve_aspects(aspects, lambda qs: self.log_likelihood(qs, on_batch=on_batch))
        finished = [
            LayoutScore(layout.id, None, notes=notes, error=error, manifest_id=manifest_id,
                        manifest_summary=self._summary())
            if error is not None else self._finish(layout, plans, notes)
            for layout, plans, notes, error in planned
        ]
        self.computed += len(planned)
        if self.cache is not None:
            self.cache.put_many(
                (key, manifest_id, finished[i].to_dict(),
                 {"clis_l": finished[i].clis_l, "llm": finished[i].llm, "geometry": finished[i].geometry,
                  "pair_prior": finished[i].pair_prior, "label_coverage": finished[i].label_coverage})
                for key, i in first_of.items() if finished[i].error is None
            )
        results = []
        for position, (layout, key) in enumerate(zip(layouts, keys)):
            if position in own:
                result = finished[own[position]]
            elif key in stored:
                result = self._from_cache(layout, stored[key])
            else:
                twin = finished[first_of[key]]
                result = dataclasses.replace(twin, id=layout.id, pairs=copy.deepcopy(twin.pairs),
                                             objects=copy.deepcopy(twin.objects),
                                             notes=list(twin.notes), manifest_summary=dict(twin.manifest_summary))
            results.append(result)
            if progress is not None:
                progress("layouts", position + 1, len(layouts))
        if self.cache is not None:
            hits = sum(1 for key in keys if key in stored)
            self.cache_hits += hits
            self.cache_misses += len(layouts) - hits
        return results

    def _plan_safely(self, layout: Layout) -> tuple[Layout, Optional[list[_PairPlan]], list[str], Optional[str]]:
        try:
            plans, notes = self._plan(layout)
            return layout, plans, notes, None
        except ClisError:
            raise
        except Exception as exc:  # noqa: BLE001 -- one bad layout must not stop the run
            return layout, None, [], f"{type(exc).__name__}: {exc}"

    def _from_cache(self, layout: Layout, hit: CachedScore) -> LayoutScore:
        """The stored result, as this layout's: its own id, this scorer's manifest."""
        record = hit.record
        return LayoutScore(
            layout.id, hit.scores.get("clis_l"), llm=hit.scores.get("llm"), geometry=hit.scores.get("geometry"),
            pair_prior=hit.scores.get("pair_prior"), pairs=copy.deepcopy(record.get("pairs") or []),
            objects=copy.deepcopy(record.get("objects") or []), label_coverage=hit.scores.get("label_coverage"),
            unknown_pairs=int(record.get("unknown_pairs") or 0),
            notes=list(record.get("notes") or []), manifest_id=self._manifest["id"],
            manifest_summary=self._summary(),
        )

    def _finish(self, layout: Layout, plans: list[_PairPlan], notes: list[str]) -> LayoutScore:
        result = LayoutScore(layout.id, None, notes=list(notes), manifest_id=self._manifest["id"],
                             manifest_summary=self._summary())
        if len(layout.objects) < 2:
            result.notes.append("one object: no pairs to judge; CLIS-L is the neutral 50")
            result.llm = NEUTRAL if self.llm_model else None
            result.clis_l = NEUTRAL
            return result
        llm_parts: list[tuple[float, float]] = []
        geometry_results: list[GeometryResult] = []
        for plan in plans:
            pair_llm = pair_llm_score(plan.aspects)
            if pair_llm is not None:
                llm_parts.append((pair_llm, RELATED_PAIR_WEIGHT if plan.relations else 1.0))
            geometry_results.extend(plan.geometry)
            result.pairs.append({
                "subject": plan.subject.id, "object": plan.obj.id,
                "subject_label": plan.subject.label, "object_label": plan.obj.label,
                "relations": plan.relations,
                "llm": None if pair_llm is None else round(pair_llm, 4),
                "statements": [a.to_dict() for a in plan.aspects],
                "geometry": [g.to_dict() for g in plan.geometry],
            })
        if self.llm_model is not None:
            if llm_parts:
                result.llm = sum(v * w for v, w in llm_parts) / sum(w for _, w in llm_parts)
            elif not any(self._llm_judges(p.subject.label, p.obj.label) for p in plans):
                result.notes.append("the pool knows every label: the LLM was not asked")
            else:
                result.llm = NEUTRAL
                result.notes.append("no pair has a clear vertical order or size difference: LLM score is the neutral 50")
        if self.prior is not None:
            result.unknown_pairs = sum(1 for g in geometry_results if g.score is None)
            result.geometry = layout_geometry(geometry_results)
            if geometry_results and result.unknown_pairs:
                result.notes.append(f"{result.unknown_pairs} of {len(geometry_results)} relation pairs unknown to the pool")
        if self.scene_prior is not None:
            self._add_pair_prior(layout, result)
        result.clis_l = combine(result.llm, result.geometry, self.config.weights, result.pair_prior,
                                result.label_coverage)
        return result

    def _add_pair_prior(self, layout: Layout, result: LayoutScore) -> None:
        """The pair prior of every object and ordered pair, attached to the record's pairs."""
        scene = self.scene_prior.score([(o.label, o.bbox) for o in layout.objects])
        result.pair_prior = scene.score
        evidence = {(layout.objects[p["first"]].id, layout.objects[p["second"]].id): p["evidence"]
                    for p in scene.pairs}
        for pair in result.pairs:
            pair["pair_prior_evidence"] = [evidence.get((pair["subject"], pair["object"])),
                                           evidence.get((pair["object"], pair["subject"]))]
        result.objects = scene.objects
        result.label_coverage = 1.0 - len(scene.unknown_labels) / len(layout.objects)
        if scene.unknown_labels:
            result.notes.append("labels unknown to the pool (pair prior uses label-blind statistics): "
                                + ", ".join(sorted(set(scene.unknown_labels))))


def _content_key(layout: Layout) -> Optional[str]:
    """The cache key of ``layout``; None for an object that is not a usable layout (it is
    scored, or fails, on its own and is never cached)."""
    try:
        return layout_key(layout)
    except Exception:  # noqa: BLE001 -- the scoring step reports what is wrong with it
        return None


def _centre_gap(a: LayoutObject, b: LayoutObject) -> float:
    (ax, ay), (bx, by) = a.center, b.center
    return (ax - bx) ** 2 + (ay - by) ** 2


def config_from_options(config: str | Path | None = None, **options: Any) -> LayoutScoreConfig:
    """:class:`LayoutScoreConfig` from a JSON settings file (optional) and command-line options:
    options that are not None win; ``weights`` may be ``--weights`` text; ``pool`` may be
    ``none``. Raises ``InputError`` in one line naming the file (or ``options``) and field."""
    from pydantic import ValidationError

    settings = load_config_file(config) if config else {}
    if isinstance(options.get("weights"), str):
        options["weights"] = parse_weights(options["weights"])
    settings.update({k: v for k, v in options.items() if v is not None})
    try:
        return LayoutScoreConfig(**settings)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "settings"
        raise InputError(f"{config or 'options'}: {where}: {error['msg'].removeprefix('Value error, ')}") from None
    except TypeError as exc:
        raise InputError(f"{config or 'options'}: {exc}") from None


def parse_weights(text: str) -> dict:
    """``"llm=0.7,geometry=0.3,pair_prior=1"`` or ``"0.7,0.3,1"`` (in that order) -> a dict of
    the weights given.

    >>> parse_weights("llm=0.7, pair_prior=0.3")
    {'llm': 0.7, 'pair_prior': 0.3}
    >>> parse_weights("1,0")
    {'llm': 1.0, 'geometry': 0.0}
    """
    parts = [p.strip() for p in text.split(",") if p.strip()]
    names = tuple(LayoutWeights.model_fields)
    weights: dict[str, float] = {}
    for i, part in enumerate(parts):
        name, _, value = part.rpartition("=")
        name = name.strip() or (names[i] if i < len(names) else "")
        if name not in names:
            raise InputError(f"--weights: unknown weight {name or part!r}; use "
                             + ",".join(f"{n}=VALUE" for n in names))
        try:
            weights[name] = float(value)
        except ValueError:
            raise InputError(f"--weights: {part!r}: {value.strip()!r} is not a number") from None
    return weights


def load_config_file(path: str | Path) -> dict:
    """CLIS-L settings from a JSON file (``{"llm": ..., "pool": ..., "weights": {...}}``)."""
    from clis import jsonio

    path = Path(path)
    data = jsonio.read_json(path, "CLIS-L config file")
    if not isinstance(data, dict):
        raise InputError(f"{path}: top level: CLIS-L settings must be a JSON object")
    return data
