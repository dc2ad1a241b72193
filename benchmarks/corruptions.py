"""Controlled corruptions of an (image, layout) pair, each at three severities.

Layout side (the image stays, the layout it is scored against changes):

* ``shift``: the target box moves by 0.25, 0.5, 1.0 times its own size, diagonally toward
  the side of the canvas with more room (then clamped inside the canvas);
* ``scale``: the target box grows by 1.5x, 2x, 3x per side around its centre (clamped);
* ``swap_boxes``: the target box and the box farthest from it move 1/3, 2/3 and all of the
  way to each other's place (severity 3 is a full swap);
* ``swap_labels``: the text (label, attributes, description) of 2, 3 and 4 objects with
  different phrases is rotated, boxes stay; levels a layout has too few objects for are
  skipped.

Image side (the layout stays):

* ``drop``: the target object is removed from the image by blurring its box (radius 5% and
  15% of the box diagonal) and, at severity 3, by filling it with the median colour of a
  ring of background around it, then softening the seam; the layout still lists it;
* ``blur``: Gaussian blur of the whole image, radius 0.5%, 1%, 2% of its longer side;
* ``noise``: additive Gaussian noise with sigma 15, 35, 70 (of 255), seeded;
* ``occlude``: a mid-grey patch centred on the target box covering 25%, 50%, 100% of it.

The *target* object of an image is the smallest object whose box covers at most half the
canvas (else the smallest object): small objects are the ones a metric most easily misses.

Example:
    >>> from PIL import Image
    >>> from clis.layout import Layout
    >>> layout = Layout.model_validate({"id": "t", "objects": [
    ...     {"id": "a", "label": "cup", "bbox": [0.1, 0.1, 0.2, 0.2]},
    ...     {"id": "b", "label": "table", "bbox": [0.0, 0.5, 1.0, 0.5]}]})
    >>> image, moved = apply("shift", 3, Image.new("RGB", (64, 64)), layout, seed=0)
    >>> [round(v, 3) for v in moved.get_object("a").bbox]
    [0.3, 0.3, 0.2, 0.2]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from clis.layout import Layout, LayoutObject

LEVELS = (1, 2, 3)


@dataclass(frozen=True)
class Corruption:
    """One kind of corruption: its side and the physical size of each severity level."""

    kind: str
    side: str  # "layout" or "image"
    severities: tuple[float, float, float]
    unit: str


CORRUPTIONS: dict[str, Corruption] = {
    c.kind: c
    for c in (
        Corruption("shift", "layout", (0.25, 0.5, 1.0), "fraction of box size"),
        Corruption("scale", "layout", (1.5, 2.0, 3.0), "side factor"),
        Corruption("swap_boxes", "layout", (1 / 3, 2 / 3, 1.0), "fraction of the way"),
        Corruption("swap_labels", "layout", (2, 3, 4), "objects relabelled"),
        Corruption("drop", "image", (0.05, 0.15, 1.0), "blur radius / box diagonal (1 = background fill)"),
        Corruption("blur", "image", (0.005, 0.01, 0.02), "radius / longer image side"),
        Corruption("noise", "image", (15.0, 35.0, 70.0), "sigma of 255"),
        Corruption("occlude", "image", (0.25, 0.5, 1.0), "fraction of box area"),
    )
}


class NotApplicable(Exception):
    """This corruption level cannot be made for this layout (too few objects, say)."""


def target_object(layout: Layout) -> LayoutObject:
    """The smallest object covering at most half the canvas, else the smallest object."""
    small = [o for o in layout.objects if o.area <= 0.5]
    return min(small or layout.objects, key=lambda o: o.area)


def _clamp_box(x: float, y: float, w: float, h: float) -> list[float]:
    """Keep the size (capped at the canvas) and move the box inside the canvas."""
    w, h = min(w, 1.0), min(h, 1.0)
    x = min(max(x, 0.0), 1.0 - w)
    y = min(max(y, 0.0), 1.0 - h)
    return [x, y, w, h]


def _with_objects(layout: Layout, objects: list[dict], suffix: str) -> Layout:
    """A validated copy with new objects and a distinct id (scorers cache by layout id)."""
    data = layout.model_dump()
    data["objects"] = objects
    data["id"] = f"{layout.id}~{suffix}"
    return Layout.model_validate(data)


def _replace_boxes(layout: Layout, boxes: dict[str, list[float]], suffix: str) -> Layout:
    objects = [{**o.model_dump(), "bbox": boxes.get(o.id, list(o.bbox))} for o in layout.objects]
    return _with_objects(layout, objects, suffix)


def shift_box(layout: Layout, object_id: str, fraction: float, suffix: str = "shift") -> Layout:
    """Move one box by ``fraction`` of its width and height, toward the roomier side."""
    obj = layout.get_object(object_id)
    x, y, w, h = obj.bbox
    cx, cy = obj.center
    dx = fraction * w * (1 if cx <= 0.5 else -1)
    dy = fraction * h * (1 if cy <= 0.5 else -1)
    return _replace_boxes(layout, {object_id: _clamp_box(x + dx, y + dy, w, h)}, suffix)


def scale_box(layout: Layout, object_id: str, factor: float, suffix: str = "scale") -> Layout:
    """Grow one box by ``factor`` per side around its centre."""
    obj = layout.get_object(object_id)
    cx, cy = obj.center
    w, h = obj.bbox[2] * factor, obj.bbox[3] * factor
    return _replace_boxes(layout, {object_id: _clamp_box(cx - w / 2, cy - h / 2, w, h)}, suffix)


def swap_boxes(layout: Layout, object_id: str, fraction: float, suffix: str = "swap_boxes") -> Layout:
    """Move the target box and the box farthest from it ``fraction`` of the way to each other."""
    if len(layout.objects) < 2:
        raise NotApplicable("needs two objects")
    a = layout.get_object(object_id)
    b = max((o for o in layout.objects if o.id != object_id), key=lambda o: math.dist(o.center, a.center))
    mix = lambda p, q: _clamp_box(*[(1 - fraction) * u + fraction * v for u, v in zip(p, q)])  # noqa: E731
    return _replace_boxes(layout, {a.id: mix(a.bbox, b.bbox), b.id: mix(b.bbox, a.bbox)}, suffix)


def swap_labels(layout: Layout, object_id: str, count: int, suffix: str = "swap_labels") -> Layout:
    """Rotate the text of ``count`` objects with distinct phrases (the target first)."""
    chosen: list[LayoutObject] = []
    for obj in [layout.get_object(object_id)] + sorted(layout.objects, key=lambda o: -o.area):
        if obj.phrase not in {c.phrase for c in chosen}:
            chosen.append(obj)
    if len(chosen) < count:
        raise NotApplicable(f"needs {count} objects with different phrases")
    chosen = chosen[:count]
    text_fields = ("label", "attributes", "description")
    texts = [{k: getattr(o, k) for k in text_fields} for o in chosen]
    rotated = {o.id: texts[(i + 1) % count] for i, o in enumerate(chosen)}
    objects = [{**o.model_dump(), **rotated.get(o.id, {})} for o in layout.objects]
    return _with_objects(layout, objects, suffix)


def _pixel_box(obj: LayoutObject, size: tuple[int, int]) -> tuple[int, int, int, int]:
    x, y, w, h = obj.pixel_box(*size)
    x0, y0 = max(int(round(x)), 0), max(int(round(y)), 0)
    x1, y1 = min(int(round(x + w)), size[0]), min(int(round(y + h)), size[1])
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def drop_object(image: Image.Image, obj: LayoutObject, strength: float) -> Image.Image:
    """Blur the object's box away (``strength`` = radius / box diagonal), or at ``strength >= 1``
    fill it with the median colour of the background ring around it."""
    image = image.convert("RGB")
    x0, y0, x1, y1 = _pixel_box(obj, image.size)
    diag = math.hypot(x1 - x0, y1 - y0)
    out = image.copy()
    if strength < 1:
        region = image.crop((x0, y0, x1, y1)).filter(ImageFilter.GaussianBlur(strength * diag))
        out.paste(region, (x0, y0))
        return out
    pad = max(int(0.1 * diag), 2)
    ring = np.asarray(image.crop((max(x0 - pad, 0), max(y0 - pad, 0),
                                  min(x1 + pad, image.width), min(y1 + pad, image.height))))
    mask = np.ones(ring.shape[:2], dtype=bool)
    ix0, iy0 = x0 - max(x0 - pad, 0), y0 - max(y0 - pad, 0)
    mask[iy0:iy0 + (y1 - y0), ix0:ix0 + (x1 - x0)] = False
    colour = np.median(ring[mask], axis=0) if mask.any() else np.median(np.asarray(image).reshape(-1, 3), axis=0)
    ImageDraw.Draw(out).rectangle((x0, y0, x1 - 1, y1 - 1), fill=tuple(int(c) for c in colour))
    # soften the seam so the fill reads as background, not as a new grey object
    seam = out.crop((max(x0 - pad, 0), max(y0 - pad, 0), min(x1 + pad, out.width), min(y1 + pad, out.height)))
    out.paste(seam.filter(ImageFilter.GaussianBlur(pad / 2)), (max(x0 - pad, 0), max(y0 - pad, 0)))
    return out


def blur_image(image: Image.Image, fraction: float) -> Image.Image:
    """Gaussian blur with radius ``fraction`` of the longer side."""
    return image.convert("RGB").filter(ImageFilter.GaussianBlur(fraction * max(image.size)))


def add_noise(image: Image.Image, sigma: float, seed: int) -> Image.Image:
    """Additive Gaussian noise of ``sigma`` (0..255 scale), clipped, reproducible by ``seed``."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    noisy = pixels + np.random.default_rng(seed).normal(0.0, sigma, pixels.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def occlude_object(image: Image.Image, obj: LayoutObject, fraction: float) -> Image.Image:
    """A mid-grey rectangle centred on the box, covering ``fraction`` of its area."""
    out = image.convert("RGB").copy()
    x0, y0, x1, y1 = _pixel_box(obj, out.size)
    side = math.sqrt(fraction)
    w, h = (x1 - x0) * side, (y1 - y0) * side
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    ImageDraw.Draw(out).rectangle((cx - w / 2, cy - h / 2, cx + w / 2 - 1, cy + h / 2 - 1), fill=(128, 128, 128))
    return out


def apply(kind: str, level: int, image: Image.Image, layout: Layout, seed: int = 0) -> tuple[Image.Image, Layout]:
    """The corrupted ``(image, layout)`` pair for ``kind`` at ``level`` (1..3).

    Raises :class:`NotApplicable` when the layout cannot take this corruption.
    """
    corruption = CORRUPTIONS[kind]
    severity = corruption.severities[level - 1]
    target = target_object(layout)
    suffix = f"{kind}-{level}"
    if kind == "shift":
        return image, shift_box(layout, target.id, severity, suffix)
    if kind == "scale":
        return image, scale_box(layout, target.id, severity, suffix)
    if kind == "swap_boxes":
        return image, swap_boxes(layout, target.id, severity, suffix)
    if kind == "swap_labels":
        return image, swap_labels(layout, target.id, int(severity), suffix)
    if kind == "drop":
        return drop_object(image, target, severity), layout
    if kind == "blur":
        return blur_image(image, severity), layout
    if kind == "noise":
        return add_noise(image, severity, seed), layout
    if kind == "occlude":
        return occlude_object(image, target, severity), layout
    raise KeyError(kind)
