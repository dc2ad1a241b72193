"""``clis plan``: concepts -> scene graphs -> layouts, with an LLM (step 1-2 of Auto Cherry-Picker).

For each concept set (``["cat", "sofa", "lamp"]``) and each layout asked of it, the LLM first
writes a scene graph (attributes per object, relations, a caption naming every object), then
one normalised ``[x, y, w, h]`` box per object. Answers are repaired and validated
(:mod:`clis.planning.parse`); an unusable answer is retried with a new seed up to
``max_retries`` times, and a slot that still fails becomes an error record, not a crash. Boxes
are clamped to the canvas and every clamp is reported. With ``drafts > 1`` each slot is
drafted several times and the draft with the best CLIS-L score is kept.

Example:
    >>> from clis.plan import plan_layouts, read_concepts
    >>> class Canned:   # any object with chat(messages, seed) -> str
    ...     def chat(self, messages, seed):
    ...         if "Layout:" in messages[-1]["content"]:
    ...             return '{"boxes": {"cat-1": [0.2, 0.3, 0.3, 0.3], "sofa-1": [0.0, 0.4, 1.2, 0.6]}}'
    ...         return '{"objects": [{"id": "cat-1", "attributes": ["grey"]}], "caption": "A grey cat on a sofa."}'
    ...     def describe(self): return {"kind": "canned"}
    >>> result = plan_layouts(read_concepts([["cat", "sofa"]]), Canned())
    >>> result.layouts[0].objects[1].bbox, result.records[0]["clamped"]
    ([0.0, 0.4, 1.0, 0.6], ['sofa-1: box [0.0, 0.4, 1.2, 0.6] clamped to the canvas as [0.0, 0.4, 1.0, 0.6]'])
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from clis import jsonio
from clis.errors import InputError
from clis.layout import Layout, label_from_object_name
from clis.planning.backends import BackendError, ChatBackend
from clis.planning.parse import PlanParseError, parse_boxes, parse_scene_graph
from clis.planning.prompts import layout_messages, scene_graph_messages

DEFAULT_RETRIES = 3
# Failed answers are kept in the report (shortened) so a user can see what the model wrote.
_ANSWER_EXCERPT = 300


@dataclass
class ConceptSet:
    """One entry of the concepts file: its labels, how many layouts, and an id prefix."""

    index: int
    labels: list[str]
    count: int = 1
    name: str | None = None
    # Why this entry of the concepts file is unusable; a lenient run records it and goes on.
    error: str | None = None

    @property
    def object_ids(self) -> list[str]:
        seen: dict[str, int] = {}
        ids = []
        for label in self.labels:
            seen[label] = seen.get(label, 0) + 1
            ids.append(f"{label}-{seen[label]}")
        return ids

    @property
    def prefix(self) -> str:
        base = self.name or "-".join(dict.fromkeys(self.labels))
        slug = re.sub(r"[^A-Za-z0-9]+", "-", base).strip("-").lower()[:48] or "set"
        return slug if self.name else f"{self.index:03d}-{slug}"


def read_concepts(data: Any, source: str = "<concepts>", count: int = 1, strict: bool = True) -> list[ConceptSet]:
    """Concept sets from parsed JSON: a list whose items are a list of names, a comma-separated
    string, or ``{"concepts": [...], "count": n, "id": "prefix"}``. ``count`` is the default
    number of layouts per set. Names like ``cat-2`` are read as the label ``cat``.

    ``strict=False`` keeps going past a bad entry: it becomes a set with ``error`` set (and no
    labels), which ``plan_layouts`` records as a failed slot; InputError only when no entry is good.
    """
    if not isinstance(data, list):
        raise InputError(f"{source}: top level: expected a JSON list of concept sets")
    if not data:
        # An empty plan would still write an empty layouts file and exit 0, hiding the mistake.
        raise InputError(f"{source}: top level: no concept sets (expected a non-empty JSON list)")
    sets = []
    for i, item in enumerate(data):
        try:
            sets.append(_concept_set(i, item, source, count))
        except InputError as exc:
            if strict:
                raise
            sets.append(ConceptSet(index=i, labels=[], error=str(exc)))
    if sets and all(s.error for s in sets):
        raise InputError(sets[0].error + (f" (and {len(sets) - 1} more bad concept sets)" if len(sets) > 1 else ""))
    _refuse_repeated_ids(sets, source)
    return sets


def _refuse_repeated_ids(sets: Sequence[ConceptSet], source: str) -> None:
    """Two sets with one prefix would write the same layout ids, which every later command refuses.

    Refused, not renamed: the prefix is the user's own ``id`` (default ones hold the set's index
    and never meet), so only the user knows which set should be called what. Layout ids are
    ``PREFIX-SLOT`` with a digits-only slot, so two sets share a layout id exactly when they
    share a prefix, whatever their counts.
    """
    first: dict[str, ConceptSet] = {}
    for concept_set in sets:
        if concept_set.error is not None:
            continue
        other = first.setdefault(concept_set.prefix, concept_set)
        if other is not concept_set:
            names = " and ".join(
                f"id {s.name!r}" if s.name else f"the default prefix {s.prefix!r}" for s in (other, concept_set)
            )
            raise InputError(
                f"{source}: concept sets [{other.index}] and [{concept_set.index}] both make layout id "
                f"{concept_set.prefix + '-0'!r} ({names}); give each set its own 'id'"
            )


def _concept_set(i: int, item: Any, source: str, count: int) -> ConceptSet:
    """One entry of the concepts file, or InputError naming the file, the entry and the field."""
    where = f"{source}: concept set [{i}]"
    name, n = None, count
    if isinstance(item, dict):
        unknown = set(item) - {"concepts", "count", "id"}
        if unknown:
            raise InputError(f"{where}: unknown field {sorted(unknown)[0]!r} (fields: concepts, count, id)")
        name, n = item.get("id"), item.get("count", count)
        item = item.get("concepts")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise InputError(f"{where}: field 'id': expected a non-empty string")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise InputError(f"{where}: field 'count': expected an integer >= 1, got {n!r}")
    if isinstance(item, str):
        item = [part for part in item.split(",")]
    if not isinstance(item, list) or not item or not all(isinstance(c, str) and c.strip() for c in item):
        raise InputError(f"{where}: field 'concepts': expected a non-empty list of names")
    labels = [label_from_object_name(c).strip() for c in item]
    return ConceptSet(index=i, labels=labels, count=n, name=name)


def load_concepts(path: str | Path, count: int = 1, strict: bool = True) -> list[ConceptSet]:
    path = Path(path)
    return read_concepts(jsonio.read_json(path, "concepts file"), str(path), count, strict=strict)


def _seed(base: int, *parts: Any) -> int:
    digest = hashlib.sha256(":".join(map(str, (base, *parts))).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass
class Draft:
    layout: Layout | None
    error: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    clamped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    clis_l: float | None = None


def _ask(backend: ChatBackend, messages, parse, seeds: list[int], stage: str, draft: Draft):
    """Ask until ``parse`` accepts an answer; record every failed attempt in ``draft``."""
    for attempt_seed in seeds:
        answer = ""
        try:
            answer = backend.chat(messages, attempt_seed)
            return parse(answer)
        except (PlanParseError, BackendError) as exc:
            draft.attempts.append(
                {"stage": stage, "seed": attempt_seed, "error": str(exc), "answer": answer[:_ANSWER_EXCERPT]}
            )
    raise PlanParseError(f"{stage}: {draft.attempts[-1]['error']} (after {len(seeds)} attempts)")


def draft_layout(
    concept_set: ConceptSet, layout_id: str, backend: ChatBackend, seed: int, max_retries: int = DEFAULT_RETRIES
) -> Draft:
    """One scene graph + layout for ``concept_set``; failures are returned, not raised."""
    ids = concept_set.object_ids
    labels = dict(zip(ids, concept_set.labels))
    draft = Draft(layout=None)
    tries = max_retries + 1
    if getattr(backend, "mode", "json") == "guided":
        return _draft_guided(backend, ids, labels, layout_id, seed, tries, draft)
    try:
        scene, notes = _ask(
            backend, scene_graph_messages(ids), lambda text: parse_scene_graph(text, ids, labels),
            [_seed(seed, "scene", a) for a in range(tries)], "scene graph", draft,
        )  # fmt: skip
        draft.notes += notes
        boxes, clamped = _ask(
            backend, layout_messages(scene), lambda text: parse_boxes(text, ids, labels),
            [_seed(seed, "layout", a) for a in range(tries)], "layout", draft,
        )  # fmt: skip
        draft.clamped = clamped
        draft.layout = Layout.model_validate(
            {
                "id": layout_id,
                "caption": scene["caption"],
                "objects": [{**o, "bbox": boxes[o["id"]]} for o in scene["objects"]],
                "relations": scene["relations"],
            }
        )
    except PlanParseError as exc:
        draft.error = str(exc)
    except ValidationError as exc:
        first = exc.errors()[0]
        draft.error = f"layout invalid at {'.'.join(map(str, first['loc']))}: {first['msg']}"
    return draft


def _draft_guided(planner, ids, labels, layout_id: str, seed: int, tries: int, draft: Draft) -> Draft:
    """A draft from :class:`clis.planning.guided.GuidedPlanner`: the program owns the structure."""
    try:
        planned = planner.plan(ids, labels, seed, tries)
    except PlanParseError as exc:
        draft.error = str(exc)
        return draft
    draft.attempts += planned["failures"]
    draft.notes += planned["notes"]
    draft.clamped = planned["clamped"]
    try:
        draft.layout = Layout.model_validate({"id": layout_id, **planned["scene"]})
    except ValidationError as exc:
        first = exc.errors()[0]
        draft.error = f"layout invalid at {'.'.join(map(str, first['loc']))}: {first['msg']}"
    return draft


@dataclass
class PlanResult:
    layouts: list[Layout]
    records: list[dict[str, Any]]

    @property
    def summary(self) -> dict[str, int]:
        return {
            "slots": len(self.records),
            "ok": sum(r["status"] == "ok" for r in self.records),
            "failed": sum(r["status"] != "ok" for r in self.records),
            "clamped_boxes": sum(len(r["clamped"]) for r in self.records),
            "failed_attempts": sum(d["retries"] for r in self.records for d in r["drafts"]),
        }


def plan_layouts(
    concept_sets: Sequence[ConceptSet],
    backend: ChatBackend,
    drafts: int = 1,
    max_retries: int = DEFAULT_RETRIES,
    seed: int = 0,
    score_layout: Callable[[Layout], float | None] | None = None,
    on_slot: Callable[[dict[str, Any], Layout | None], None] | None = None,
) -> PlanResult:
    """Plan ``count`` layouts per concept set; keep the best of ``drafts`` by ``score_layout``.

    Returns the layouts that succeeded and one record per (set, slot), in order. ``score_layout``
    (CLIS-L, 0..100) is required when ``drafts > 1``. ``on_slot(record, layout)`` is called after
    each slot (``layout`` is None when it failed), so a caller can keep what was planned even
    if a later slot aborts the run.
    """
    if drafts < 1:
        raise InputError(f"--drafts must be >= 1, got {drafts}")
    if drafts > 1 and score_layout is None:
        raise InputError("--drafts > 1 needs a CLIS-L scorer to choose between drafts")
    layouts, records = [], []
    for concept_set in concept_sets:
        if concept_set.error is not None:
            record = {"set": concept_set.index, "concepts": [], "slot": 0, "layout_id": None, "status": "error",
                      "error": f"invalid concept set: {concept_set.error}", "clis_l": None, "clamped": [], "notes": [],
                      "chosen_draft": None, "drafts": []}
            records.append(record)
            if on_slot is not None:
                on_slot(record, None)
            continue
        for slot in range(concept_set.count):
            layout_id = f"{concept_set.prefix}-{slot}"
            made = [
                draft_layout(concept_set, layout_id, backend, _seed(seed, concept_set.index, slot, d), max_retries)
                for d in range(drafts)
            ]
            if score_layout is not None:
                for draft in made:
                    if draft.layout is not None:
                        draft.clis_l = score_layout(draft.layout)
            usable = [d for d in made if d.layout is not None]
            # Highest CLIS-L wins; the first draft wins ties (and unscored single drafts).
            best = max(usable, key=lambda d: -1.0 if d.clis_l is None else d.clis_l, default=None)
            record = {
                "set": concept_set.index,
                "concepts": concept_set.labels,
                "slot": slot,
                "layout_id": layout_id,
                "status": "ok" if best else "error",
                "error": None if best else made[-1].error,
                "clis_l": best.clis_l if best else None,
                "clamped": best.clamped if best else [],
                "notes": best.notes if best else [],
                "chosen_draft": made.index(best) if best else None,
                "drafts": [
                    {"status": "ok" if d.layout else "error", "error": d.error, "clis_l": d.clis_l,
                     "retries": len(d.attempts), "failed_attempts": d.attempts}
                    for d in made
                ],
            }  # fmt: skip
            if best:
                layouts.append(best.layout)
            records.append(record)
            if on_slot is not None:
                on_slot(record, best.layout if best else None)
    return PlanResult(layouts, records)
