"""DEMO AND TEST ONLY: draws a labelled coloured shape in every box.

These images are not training data. They exist so that the whole chain (plan -> generate ->
score -> pick) can be shown and tested on a machine without diffusion weights, and so that
every pixel of a candidate is known: the shape of object ``i`` fills (most of) its box.
The manifest marks runs of this adapter with ``"demo_only": true``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from clis.errors import InputError
from clis.layout import Layout

from generators.base import DEFAULT_SIZE, GeneratorAdapter


def label_colour(label: str) -> tuple[int, int, int]:
    """A stable, fairly saturated colour per label (same label, same colour, every run)."""
    digest = hashlib.sha256(label.lower().encode()).digest()
    return tuple(64 + b % 160 for b in digest[:3])  # type: ignore[return-value]


class ShapesGenerator(GeneratorAdapter):
    """Labelled ellipses/rectangles on a plain background. Demo/test only, not training data.

    The seed varies the background shade and jitters each shape by up to ``jitter`` of its box,
    so the N candidates of a layout differ a little, reproducibly.
    """

    name = "shapes"
    demo_only = True

    def __init__(self, width: int = DEFAULT_SIZE, height: int = DEFAULT_SIZE, jitter: float = 0.08):
        super().__init__(width, height)
        if not 0 <= jitter < 0.5:
            raise InputError(f"shapes: jitter must be in [0, 0.5), got {jitter}")
        self.jitter = float(jitter)

    def generate(self, layout: Layout, seeds: Sequence[int]) -> list[Image.Image]:
        return [self._draw(layout, int(seed)) for seed in seeds]

    def _draw(self, layout: Layout, seed: int) -> Image.Image:
        rng = np.random.default_rng(seed)
        shade = int(rng.integers(200, 250))
        image = Image.new("RGB", (self.width, self.height), (shade, shade, shade))
        draw = ImageDraw.Draw(image)
        font = ImageFont.load_default()
        # Big boxes first so that small objects stay visible on top of them.
        for obj in sorted(layout.objects, key=lambda o: -o.area):
            x, y, w, h = obj.pixel_box(self.width, self.height)
            dx, dy = rng.uniform(-self.jitter, self.jitter, size=2) * (w, h)
            box = (x + dx, y + dy, x + dx + w, y + dy + h)
            colour = label_colour(obj.label)
            if int(hashlib.sha256(obj.label.encode()).digest()[3]) % 2:
                draw.ellipse(box, fill=colour, outline=(0, 0, 0))
            else:
                draw.rectangle(box, fill=colour, outline=(0, 0, 0))
            draw.text((box[0] + 2, box[1] + 2), obj.phrase, fill=(0, 0, 0), font=font)
        return image

    def config(self) -> dict[str, Any]:
        return {**super().config(), "jitter": self.jitter, "note": "demo/test only: labelled shapes, not training data"}
