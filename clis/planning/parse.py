"""Turn an LLM's answer into a checked scene graph and checked boxes.

LLMs, small ones especially, wrap JSON in prose or code fences, leave trailing commas, use
single quotes or stop mid-object. ``json_repair`` fixes those slips; what it cannot fix, and
answers that are valid JSON but the wrong content (a missing object, a caption that forgets
an object, a box that is not four numbers) raise :class:`PlanParseError`, which the planner
answers with a retry under a new seed.
"""

from __future__ import annotations

import math
import re
from typing import Any

import json_repair

# A box narrower or lower than this (after clamping) is not a usable object.
MIN_BOX_SIDE = 0.01


class PlanParseError(ValueError):
    """The answer cannot be used; the message says which part and why (one line)."""


def load_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in ``text``, repairing common slips.

    >>> load_json_object("Sure! ```json\\n{'caption': 'a cat', 'objects': [1, 2,],}\\n```")
    {'caption': 'a cat', 'objects': [1, 2]}
    """
    if not text or not text.strip():
        raise PlanParseError("empty answer")
    start = text.find("{")
    if start < 0:
        raise PlanParseError("no JSON object in the answer")
    try:
        data = json_repair.loads(text[start:])
    except (ValueError, RecursionError) as exc:  # json_repair gives up on some inputs
        raise PlanParseError(f"unrepairable JSON: {exc}") from None
    if isinstance(data, list):
        data = next((d for d in data if isinstance(d, dict)), None)
    if not isinstance(data, dict) or not data:
        raise PlanParseError("no JSON object in the answer")
    return data


def _text_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, dict):  # {"color": "red", "material": "ceramic"} -> its values
        value = list(value.values())
    if isinstance(value, list):
        return [str(v).strip() for v in value if isinstance(v, (str, int, float)) and str(v).strip()]
    return []


class IdResolver:
    """Maps what the model wrote (``"cat-1"``, ``"Cat 1"``, ``"cat"``) to the expected object id."""

    def __init__(self, object_ids: list[str], labels: dict[str, str]):
        self.ids = object_ids
        self.by_key = {self.key(i): i for i in object_ids}
        by_label: dict[str, list[str]] = {}
        for object_id in object_ids:
            by_label.setdefault(self.key(labels[object_id]), []).append(object_id)
        # A bare label is only unambiguous when one object has it.
        self.by_label = {k: v[0] for k, v in by_label.items() if len(v) == 1}

    @staticmethod
    def key(name: str) -> str:
        return re.sub(r"[\s_\-]+", "-", str(name).strip().lower())

    def __call__(self, name: Any) -> str | None:
        if not isinstance(name, (str, int)):
            return None
        key = self.key(str(name))
        return self.by_key.get(key) or self.by_label.get(key)


def names_object(caption: str, label: str) -> bool:
    """Whether ``caption`` mentions ``label`` (whole words, plural allowed).

    >>> names_object("Two cats sleep on a sofa.", "cat"), names_object("A catalogue.", "cat")
    (True, False)
    """
    words = r"[\s\-_]+".join(re.escape(w) for w in label.lower().split())
    return re.search(rf"\b{words}(s|es)?\b", caption.lower()) is not None


def parse_scene_graph(text: str, object_ids: list[str], labels: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Scene graph ``{"objects", "relations", "caption"}`` for ``object_ids``, and repair notes."""
    data = load_json_object(text)
    resolve = IdResolver(object_ids, labels)
    notes: list[str] = []

    attributes: dict[str, list[str]] = {}
    raw_objects = data.get("objects")
    if isinstance(raw_objects, dict):
        raw_objects = [{"id": k, "attributes": v} for k, v in raw_objects.items()]
    for raw in raw_objects if isinstance(raw_objects, list) else []:
        if not isinstance(raw, dict):
            continue
        object_id = resolve(raw.get("id", raw.get("name")))
        if object_id is None:
            notes.append(f"ignored unknown object {raw.get('id', raw.get('name'))!r}")
        elif object_id not in attributes:
            attributes[object_id] = _text_list(raw.get("attributes"))
    for object_id in object_ids:
        if object_id not in attributes:
            notes.append(f"{object_id}: no attributes given")

    relations = []
    raw_relations = data.get("relations")
    for raw in raw_relations if isinstance(raw_relations, list) else []:
        if not isinstance(raw, dict) or not isinstance(raw.get("relation"), str) or not raw["relation"].strip():
            notes.append(f"ignored malformed relation {raw!r}")
            continue
        sides = {}
        for side in ("subject", "object"):
            names = raw.get(side)
            names = names if isinstance(names, list) else [names]
            sides[side] = [resolve(n) for n in names]
        if not sides["subject"] or not sides["object"] or None in sides["subject"] + sides["object"]:
            notes.append(f"ignored relation naming unknown objects: {raw!r}")
            continue
        relations.append({"subject": sides["subject"], "relation": raw["relation"].strip(), "object": sides["object"]})

    caption = data.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        raise PlanParseError("scene graph has no caption")
    caption = " ".join(caption.split())
    unnamed = sorted({labels[i] for i in object_ids if not names_object(caption, labels[i])})
    if unnamed:
        raise PlanParseError(f"caption {caption!r} does not name: {', '.join(unnamed)}")
    objects = [{"id": i, "label": labels[i], "attributes": attributes.get(i, [])} for i in object_ids]
    return {"objects": objects, "relations": relations, "caption": caption}, notes


def clamp_box(box: list[float]) -> list[float]:
    """Clip an ``[x, y, w, h]`` box to the unit canvas; raise when too little is left.

    >>> clamp_box([0.8, -0.1, 0.4, 0.5])
    [0.8, 0.0, 0.2, 0.4]
    """
    x, y, w, h = box
    x0, y0 = min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)
    x1, y1 = min(max(x + w, 0.0), 1.0), min(max(y + h, 0.0), 1.0)
    clamped = [round(x0, 6), round(y0, 6), round(x1 - x0, 6), round(y1 - y0, 6)]
    if clamped[2] < MIN_BOX_SIDE or clamped[3] < MIN_BOX_SIDE:
        raise PlanParseError(f"box {box} lies (almost) outside the canvas")
    return clamped


def parse_boxes(text: str, object_ids: list[str], labels: dict[str, str]) -> tuple[dict[str, list[float]], list[str]]:
    """One clamped normalised ``[x, y, w, h]`` box per object id, and clamping notes."""
    data = load_json_object(text)
    resolve = IdResolver(object_ids, labels)
    raw = data.get("boxes", data.get("layout", data.get("objects", data)))
    pairs: list[tuple[Any, Any]] = []
    if isinstance(raw, dict):
        pairs = list(raw.items())
    elif isinstance(raw, list):
        pairs = [
            (r.get("id", r.get("name")), r.get("bbox", r.get("box")))
            for r in raw
            if isinstance(r, dict)
        ]
    boxes: dict[str, list[float]] = {}
    notes: list[str] = []
    for name, value in pairs:
        object_id = resolve(name)
        if object_id is None or object_id in boxes:
            continue
        if not (isinstance(value, list) and len(value) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            raise PlanParseError(f"{object_id}: box {value!r} is not four numbers [x, y, w, h]")
        box = [float(v) for v in value]
        if not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
            raise PlanParseError(f"{object_id}: box {value!r} has no area")
        clamped = clamp_box(box)
        if any(abs(a - b) > 1e-6 for a, b in zip(box, clamped)):
            notes.append(f"{object_id}: box {box} clamped to the canvas as {clamped}")
        boxes[object_id] = clamped
    missing = [i for i in object_ids if i not in boxes]
    if missing:
        raise PlanParseError(f"no box for {', '.join(missing)}")
    return boxes, notes
