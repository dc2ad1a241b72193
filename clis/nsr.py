"""NSR-1K (LayoutGPT's layout benchmark) records as layouts, read as published.

Two record shapes, both with normalised ``[x, y, w, h]`` boxes (origin top left):

* **counting** (``counting.*.json``): ``{"id", "image_id", "prompt", "object_list": [[label,
  box], ...], "num_object", "sub-type", "type"}``. Objects get ids ``<label>-<k>``, k counting
  per label from 1; the prompt is the caption.
* **spatial** (``spatial.*.json``): ``{"id", "image_id", "prompt", "obj1": [label, box],
  "obj2": [label, box], "relation", "type"}``: two objects and one relation, ``obj1`` being the
  subject. The relation word is mapped to the vocabulary ``clis pool build`` derives from COCO
  geometry (``NSR_RELATIONS``); the published word stays as ``nsr_relation``.

Every other key (``sub-type``, ``type``, ``image_id``, ``num_object``, ...) stays on the
layout as an extra key of the same name, so a study can select the ``"sub-type": "real"``
records (real COCO captions) or exclude them.

Example:
    >>> record = {"id": 7, "image_id": 1, "prompt": "a cat on a bed", "sub-type": "real",
    ...           "object_list": [["cat", [0.3, 0.2, 0.3, 0.3]], ["bed", [0.0, 0.4, 1.0, 0.6]]]}
    >>> converted, problems = nsr_record(record, 0)
    >>> [o["id"] for o in converted["objects"]], converted["sub-type"], problems
    (['cat-1', 'bed-1'], 'real', [])
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

# NSR-1K spatial words -> the words of clis pool build's COCO geometry ("left" = obj1 is left of obj2).
NSR_RELATIONS = {"left": "left of", "right": "right of", "top": "above", "bottom": "below", "next to": "next to"}

_COUNTING_OWN = frozenset({"id", "prompt", "object_list"})
_SPATIAL_OWN = frozenset({"id", "prompt", "obj1", "obj2", "relation"})


def is_nsr_item(item: Any) -> bool:
    """True for a record of either NSR-1K shape (and not a canonical layout)."""
    return isinstance(item, dict) and "objects" not in item and ("object_list" in item or "obj1" in item)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _entry(entry: Any, where: str, problems: list[tuple[str, str]]) -> tuple[str, list[float]] | None:
    if not (isinstance(entry, list) and len(entry) == 2):
        problems.append((where, "expected [label, [x, y, w, h]]"))
        return None
    label, box = entry
    if not (isinstance(label, str) and label.strip()):
        problems.append((f"{where}[0]", f"expected a label string, got {label!r}"))
        return None
    if not (isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box)):
        problems.append((f"{where}[1]", "expected [x, y, w, h] numbers"))
        return None
    return label, [float(v) for v in box]


def nsr_record(item: dict[str, Any], index: int) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    """The canonical layout record of one NSR-1K item, or None and its (field, problem) pairs.

    The box values themselves are checked by the layout model, which names the object.
    """
    problems: list[tuple[str, str]] = []
    spatial = "obj1" in item
    if spatial:
        entries = [_entry(item.get("obj1"), "obj1", problems), _entry(item.get("obj2"), "obj2", problems)]
        relation = item.get("relation")
        if not isinstance(relation, str) or relation.strip().lower() not in NSR_RELATIONS:
            problems.append(("relation", f"expected one of {', '.join(map(repr, NSR_RELATIONS))}, got {relation!r}"))
    else:
        objects = item.get("object_list")
        if not isinstance(objects, list) or not objects:
            problems.append(("object_list", "expected a non-empty list of [label, [x, y, w, h]]"))
            objects = []
        entries = [_entry(entry, f"object_list[{i}]", problems) for i, entry in enumerate(objects)]
    prompt = item.get("prompt", "")
    if not isinstance(prompt, str):
        problems.append(("prompt", f"expected a string, got {type(prompt).__name__}"))
    if problems:
        return None, problems
    counters: Counter[str] = Counter()
    converted = []
    for label, box in entries:
        counters[label] += 1
        converted.append({"id": f"{label}-{counters[label]}", "label": label, "bbox": box})
    layout_id = item.get("id", index)
    record: dict[str, Any] = {"id": str(layout_id) if _number(layout_id) or isinstance(layout_id, str) else layout_id,
                              "caption": prompt, "objects": converted}
    own = _SPATIAL_OWN if spatial else _COUNTING_OWN
    if spatial:
        word = item["relation"].strip().lower()
        record["relations"] = [{"subject": converted[0]["id"], "relation": NSR_RELATIONS[word],
                                "object": converted[1]["id"]}]
        record["nsr_relation"] = item["relation"]
    record.update({k: v for k, v in item.items() if k not in own})
    return record, problems
