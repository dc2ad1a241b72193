"""Region crops: the pixels of one layout box, with context, as a square encoder input.

A box is widened by ``margin`` times its width (height) on each side, enlarged to at least
``min_pixels`` per side, clipped to the image, then letterboxed: resized so its longer side
fills ``size`` and centred on a square of ``LETTERBOX_FILL``. Letterboxing keeps the object's
aspect ratio (squashing a tall rocket into a square changes what CLIP sees) without pulling in
the neighbouring objects that a square context window would add.

Example:
    >>> from PIL import Image
    >>> img = Image.new("RGB", (200, 100), "white")
    >>> crop_pixels([0.25, 0.5, 0.5, 0.5], 200, 100, margin=0.1)
    (40, 45, 160, 100)
    >>> region_crop(img, [0.25, 0.5, 0.5, 0.5], size=32, margin=0.1).size
    (32, 32)
"""

from __future__ import annotations

import math
from typing import Sequence

from PIL import Image

# The CLIP training mean (0.481, 0.458, 0.408) in 8-bit: padding normalises to about zero, so
# it adds no signal of its own to the embedding.
LETTERBOX_FILL = (123, 117, 104)


def crop_pixels(
    bbox: Sequence[float], width: int, height: int, margin: float = 0.1, min_pixels: int = 16
) -> tuple[int, int, int, int]:
    """Integer ``(left, top, right, bottom)`` pixel window for a normalised ``xywh`` box."""
    x, y, w, h = bbox
    cx, cy = (x + w / 2) * width, (y + h / 2) * height
    half_w = max(w * width * (1 + 2 * margin), min_pixels) / 2
    half_h = max(h * height * (1 + 2 * margin), min_pixels) / 2
    left = max(0, math.floor(cx - half_w))
    top = max(0, math.floor(cy - half_h))
    right = min(width, math.ceil(cx + half_w))
    bottom = min(height, math.ceil(cy + half_h))
    if right <= left or bottom <= top:
        raise ValueError(f"box {list(bbox)} lies outside the {width}x{height} image")
    return left, top, right, bottom


def letterbox(image: Image.Image, size: int) -> Image.Image:
    """Resize ``image`` so its longer side is ``size`` and centre it on a square canvas."""
    w, h = image.size
    scale = size / max(w, h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = image.resize((new_w, new_h), Image.BICUBIC)
    if (new_w, new_h) == (size, size):
        return resized
    canvas = Image.new("RGB", (size, size), LETTERBOX_FILL)
    canvas.paste(resized, ((size - new_w) // 2, (size - new_h) // 2))
    return canvas


def region_crop(
    image: Image.Image, bbox: Sequence[float], size: int, margin: float = 0.1, min_pixels: int = 16
) -> Image.Image:
    """The square ``size`` x ``size`` encoder input for one normalised ``xywh`` box."""
    window = crop_pixels(bbox, image.width, image.height, margin, min_pixels)
    return letterbox(image.crop(window), size)
