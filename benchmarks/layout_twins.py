"""Corrupted twins of a layout, for judging a layout score without any image.

A twin keeps the layout's objects, labels, caption and relations, and changes boxes only:
a flip of "cup on table" keeps the relation ``cup on table`` while the cup now hangs under
the table, which is a real contradiction a plausibility score should see. Boxes are the
normalised ``[x, y, w, h]`` of :mod:`clis.layout` and every twin is validated like any
layout.

==========  ==================  ==============================================================
corruption  severities          what changes
==========  ==================  ==============================================================
``flip``    none                every box flipped upside down: ``y -> 1 - y - h``
``swap``    none                the boxes of the two objects with different labels whose
                                areas differ most (largest ratio of areas) are exchanged
``scale``   1.5, 2, 3           one object's box grown by that factor per side about its
                                centre; the object is drawn among those that can grow 3x
                                (``w, h <= 1/3``), or, in a layout without one, among those
                                that can grow 1.5x (``w, h <= 2/3``), whose levels that would
                                not fit the canvas (``k w > 1`` or ``k h > 1``) are not
                                applicable: every scale twin is an exact ``k``-fold box. A box
                                that would cross an edge is moved back inside by the least
                                distance, its centre staying as close as the canvas allows
``shift``   0.1, 0.2, 0.4       one object moved that distance (normalised units: fractions of
                                the canvas width and height) in one random direction; object
                                and direction are drawn so the 0.4 move stays inside the
                                canvas, hence every level is an exact move along one line
``random``  none                every box put at a uniformly random place inside the canvas,
                                keeping its width and height
==========  ==================  ==============================================================

Randomness is drawn from a generator seeded by ``(seed, layout id, corruption)``
(SHA-256, not Python's salted ``hash``): the same seed gives the same twins on any machine
and in any order of layouts, another seed other twins. ``scale`` and ``shift`` use one
draw for all their levels (same object, same direction), so the levels form a ladder of
growing severity.

A corruption that does not apply, or would leave the layout as it is (a flip of boxes
symmetric about the horizontal midline, a swap with no two labels, no object small enough
to scale that much, no object with room to move), gives ``None``: the study counts it as not
applicable.

Twin ids are ``<id>~<corruption>`` or ``<id>~<corruption>@<severity>`` (``tea~scale@1.5``).

Example:
    >>> from clis.layout import Layout
    >>> layout = Layout.model_validate({"id": "tea", "objects": [
    ...     {"id": "cup-1", "label": "cup", "bbox": [0.4, 0.3, 0.2, 0.2]},
    ...     {"id": "table-1", "label": "table", "bbox": [0.1, 0.5, 0.8, 0.5]}],
    ...     "relations": [{"subject": "cup-1", "relation": "on", "object": "table-1"}]})
    >>> twin = flip(layout)
    >>> twin.id, [round(v, 3) for v in twin.get_object("cup-1").bbox], len(twin.relations)
    ('tea~flip', [0.4, 0.5, 0.2, 0.2], 1)
    >>> [t.twin_id for t in make_twins(layout, seed=0)][:4]
    ['tea~flip', 'tea~swap', 'tea~scale@1.5', 'tea~scale@2']
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from dataclasses import dataclass
from typing import Optional, Sequence

from benchmarks.corruptions import _clamp_box, _replace_boxes, scale_box
from clis.layout import Layout, LayoutObject

# Corruptions in report order, with their severities (empty: one twin without a level).
SEVERITIES: dict[str, tuple[float, ...]] = {
    "flip": (),
    "swap": (),
    "scale": (1.5, 2.0, 3.0),
    "shift": (0.1, 0.2, 0.4),
    "random": (),
}
CORRUPTIONS = tuple(SEVERITIES)
UNITS = {
    "scale": "factor per side, about the box centre",
    "shift": "distance in normalised units (fraction of the canvas)",
}
DESCRIPTIONS = {
    "flip": "every box flipped vertically, y -> 1 - y - h",
    "swap": "boxes of the two different-label objects whose areas differ most exchanged",
    "scale": "one small object scaled about its centre (exactly, else not applicable), kept inside the canvas",
    "shift": "one object moved in a random direction, kept inside the canvas",
    "random": "every box re-placed uniformly at random, size kept",
}

# Boxes closer than this (every coordinate) count as unchanged.
_SAME = 1e-9
# Angles tried for a shift before falling back to the farthest reachable corner.
_ANGLE_DRAWS = 256


@dataclass(frozen=True)
class Twin:
    """One corrupted twin of a layout; ``layout`` is None when the corruption did not apply."""

    source_id: str
    corruption: str
    severity: Optional[float]  # None for corruptions without levels
    level: int  # 0 without levels, else 1.. in order of severity
    layout: Optional[Layout]

    @property
    def twin_id(self) -> str:
        return twin_id(self.source_id, self.corruption, self.severity)


def format_severity(severity: float) -> str:
    """``1.5 -> "1.5"``, ``2.0 -> "2"``: how a severity is written in ids and tables."""
    return f"{severity:g}"


def twin_id(layout_id: str, corruption: str, severity: Optional[float] = None) -> str:
    """``tea~flip``, ``tea~scale@1.5``."""
    return f"{layout_id}~{corruption}" + ("" if severity is None else f"@{format_severity(severity)}")


def rng_for(layout: Layout, corruption: str, seed: int) -> random.Random:
    """The generator of one (seed, layout, corruption): stable across runs, orders and machines."""
    digest = hashlib.sha256(f"clis-layout-twins\0{seed}\0{layout.id}\0{corruption}".encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _same_boxes(a: Layout, b: Layout) -> bool:
    return all(max(abs(u - v) for u, v in zip(p.bbox, q.bbox)) < _SAME for p, q in zip(a.objects, b.objects))


def _changed(original: Layout, twin: Layout) -> Optional[Layout]:
    return None if _same_boxes(original, twin) else twin


def flip(layout: Layout) -> Optional[Layout]:
    """Every box flipped about the horizontal midline: ``[x, y, w, h] -> [x, 1 - y - h, w, h]``."""
    boxes = {o.id: _clamp_box(o.bbox[0], 1.0 - o.bbox[1] - o.bbox[3], o.bbox[2], o.bbox[3]) for o in layout.objects}
    return _changed(layout, _replace_boxes(layout, boxes, "flip"))


def swap_pair(layout: Layout) -> Optional[tuple[LayoutObject, LayoutObject]]:
    """The two objects with different labels whose areas differ most (largest area ratio);
    the first such pair in object order on a tie; None without two labels."""
    best: Optional[tuple[LayoutObject, LayoutObject]] = None
    best_ratio = -1.0
    for a, b in itertools.combinations(layout.objects, 2):
        if a.label == b.label:
            continue
        ratio = max(a.area, b.area) / min(a.area, b.area)
        if ratio > best_ratio:
            best, best_ratio = (a, b), ratio
    return best


def swap(layout: Layout) -> Optional[Layout]:
    """The boxes of :func:`swap_pair` exchanged (labels, attributes and relations stay)."""
    pair = swap_pair(layout)
    if pair is None:
        return None
    a, b = pair
    return _changed(layout, _replace_boxes(layout, {a.id: list(b.bbox), b.id: list(a.bbox)}, "swap"))


def _grows(obj: LayoutObject, factor: float) -> bool:
    """Whether the box, ``factor`` times as wide and high, still fits the canvas."""
    return obj.bbox[2] * factor <= 1.0 + _SAME and obj.bbox[3] * factor <= 1.0 + _SAME


def scale_target(layout: Layout, seed: int) -> Optional[LayoutObject]:
    """The object ``scale`` grows: drawn among those that fit the canvas at the largest factor,
    else among those that fit at the smallest; None when no object fits even that."""
    rng = rng_for(layout, "scale", seed)
    for factor in (max(SEVERITIES["scale"]), min(SEVERITIES["scale"])):
        fitting = [o for o in layout.objects if _grows(o, factor)]
        if fitting:
            return rng.choice(fitting)
    return None


def scale(layout: Layout, factor: float, seed: int) -> Optional[Layout]:
    """One object's box ``factor`` times as wide and as high about its centre, inside the canvas;
    None when the object :func:`scale_target` draws does not fit the canvas at ``factor``."""
    target = scale_target(layout, seed)
    if target is None or not _grows(target, factor):
        return None
    return _changed(layout, scale_box(layout, target.id, factor, f"scale@{format_severity(factor)}"))


def _room(obj: LayoutObject) -> tuple[float, float, float, float]:
    """How far the box can move left, right, up and down without leaving the canvas."""
    x, y, w, h = obj.bbox
    return max(x, 0.0), max(1.0 - x - w, 0.0), max(y, 0.0), max(1.0 - y - h, 0.0)


def _fits(obj: LayoutObject, dx: float, dy: float) -> bool:
    left, right, up, down = _room(obj)
    return -left - 1e-12 <= dx <= right + 1e-12 and -up - 1e-12 <= dy <= down + 1e-12


def shift_move(layout: Layout, seed: int) -> Optional[tuple[LayoutObject, float, float]]:
    """``(object, ux, uy)``: the object ``shift`` moves and the unit direction, or None.

    The object is drawn among those that can move the largest distance in some direction
    (the farthest corner of the box's feasible positions is at least that far); the angle is
    drawn uniformly until the largest move fits, falling back to the farthest corner's
    direction (which fits by construction).
    """
    largest = max(SEVERITIES["shift"])
    rng = rng_for(layout, "shift", seed)
    movable = []
    for obj in layout.objects:
        left, right, up, down = _room(obj)
        corner = max(((dx, dy) for dx in (-left, right) for dy in (-up, down)), key=lambda d: math.hypot(*d))
        if math.hypot(*corner) >= largest:
            movable.append((obj, corner))
    if not movable:
        return None
    obj, corner = rng.choice(movable)
    for _ in range(_ANGLE_DRAWS):
        angle = rng.uniform(0.0, 2.0 * math.pi)
        ux, uy = math.cos(angle), math.sin(angle)
        if _fits(obj, largest * ux, largest * uy):
            return obj, ux, uy
    norm = math.hypot(*corner)
    return obj, corner[0] / norm, corner[1] / norm


def shift(layout: Layout, distance: float, seed: int) -> Optional[Layout]:
    """One object moved ``distance`` along the direction of :func:`shift_move`."""
    move = shift_move(layout, seed)
    if move is None:
        return None
    obj, ux, uy = move
    x, y, w, h = obj.bbox
    box = _clamp_box(x + distance * ux, y + distance * uy, w, h)  # only rounding is clamped
    return _changed(layout, _replace_boxes(layout, {obj.id: box}, f"shift@{format_severity(distance)}"))


def random_boxes(layout: Layout, seed: int) -> Optional[Layout]:
    """Every box at a uniformly random position inside the canvas, width and height kept."""
    rng = rng_for(layout, "random", seed)
    boxes = {}
    for obj in layout.objects:
        _, _, w, h = obj.bbox
        w, h = min(w, 1.0), min(h, 1.0)
        boxes[obj.id] = [rng.uniform(0.0, 1.0 - w), rng.uniform(0.0, 1.0 - h), w, h]
    return _changed(layout, _replace_boxes(layout, boxes, "random"))


def corrupt(layout: Layout, corruption: str, severity: Optional[float] = None, seed: int = 0) -> Optional[Layout]:
    """The twin of ``layout`` for one corruption (and severity), or None when it does not apply."""
    if corruption not in SEVERITIES:
        raise KeyError(f"unknown corruption {corruption!r}; use any of {', '.join(CORRUPTIONS)}")
    if bool(SEVERITIES[corruption]) != (severity is not None):
        raise ValueError(f"{corruption}: severity {severity!r}; levels are {SEVERITIES[corruption] or 'none'}")
    if corruption == "flip":
        return flip(layout)
    if corruption == "swap":
        return swap(layout)
    if corruption == "scale":
        return scale(layout, severity, seed)
    if corruption == "shift":
        return shift(layout, severity, seed)
    return random_boxes(layout, seed)


def make_twins(layout: Layout, seed: int = 0, corruptions: Sequence[str] = CORRUPTIONS) -> list[Twin]:
    """Every twin of ``layout``, applicable or not, in the order of ``corruptions`` and severity."""
    twins = []
    for corruption in corruptions:
        levels = SEVERITIES[corruption]
        for level, severity in enumerate(levels or (None,), start=1 if levels else 0):
            twins.append(Twin(layout.id, corruption, severity, level, corrupt(layout, corruption, severity, seed)))
    return twins
