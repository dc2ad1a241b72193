"""The generator adapter interface: one layout and N seeds in, N images out.

An adapter wraps one way of making candidate images for a layout (a diffusion pipeline, a
research checkout, a compositor). It knows nothing about files: ``clis generate`` (see
:mod:`generators.runner`) decides the seeds, writes ``<out>/<layout_id>/<k>.png`` and records
``adapter.config()`` in the manifest so a run can be reproduced and scored.

Example:
    >>> from clis.layout import Layout
    >>> from generators import create_generator
    >>> layout = Layout.model_validate({"id": "tea", "caption": "a red cup on a table", "objects": [
    ...     {"id": "cup-1", "label": "cup", "bbox": [0.4, 0.3, 0.2, 0.2]},
    ...     {"id": "table-1", "label": "table", "bbox": [0.1, 0.5, 0.8, 0.5]}]})
    >>> shapes = create_generator("shapes", width=64, height=64)
    >>> images = shapes.generate(layout, candidate_seeds(0, "tea", 2))
    >>> [im.size for im in images]
    [(64, 64), (64, 64)]
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from PIL import Image

from clis.errors import InputError
from clis.layout import Layout

DEFAULT_SIZE = 512
# The canvas cap of ``clis generate --max-pixels``: the figure ``clis score --max-pixels`` caps
# images at (clis.image_score.images.DEFAULT_MAX_PIXELS, which imports torch with its package;
# a test keeps the two equal). One RGB canvas of it is 120 MB; 100000x100000 would be 30 GB.
MAX_PIXELS = 40_000_000


def check_canvas(width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse, as one-line InputError, a canvas with no pixels or more than ``max_pixels``.

    >>> check_canvas(100_000, 100_000)
    Traceback (most recent call last):
    ...
    clis.errors.InputError: --width x --height 100000x100000 = 10000000000 pixels exceeds the limit of 40000000 (raise it with --max-pixels)
    """
    if max_pixels < 1:
        raise InputError(f"--max-pixels must be >= 1, got {max_pixels}")
    if width <= 0 or height <= 0:
        raise InputError(f"--width and --height must be positive, got {width}x{height}")
    if width * height > max_pixels:
        raise InputError(
            f"--width x --height {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
            "(raise it with --max-pixels)"
        )


def candidate_seeds(base_seed: int, layout_id: str, n: int) -> list[int]:
    """The seeds of a layout's ``n`` candidates.

    Seeds are derived from ``(base_seed, layout_id, k)`` rather than counted up, so candidate k of
    a layout gets the same seed whatever the order of the layouts file, whether the run was
    resumed, and however many candidates were asked for; and two layouts never share noise.

    >>> candidate_seeds(0, "tea", 3) == candidate_seeds(0, "tea", 5)[:3]
    True
    >>> candidate_seeds(0, "tea", 1) != candidate_seeds(0, "cake", 1)
    True
    """
    seeds = []
    for k in range(n):
        digest = hashlib.sha256(f"{base_seed}:{layout_id}:{k}".encode()).digest()
        seeds.append(int.from_bytes(digest[:4], "big") & 0x7FFFFFFF)
    return seeds


def check_finite(flag: str, value: float | None) -> None:
    """Refuse nan, inf and 1e309 for a float option: they would reach the pipeline as garbage
    and make the manifest invalid JSON."""
    if value is not None and not math.isfinite(value):
        raise InputError(f"{flag} must be a finite number, got {value}")


class GenerationError(Exception):
    """One layout could not be generated; the run records the message and goes on."""


class GeneratorAdapter(ABC):
    """Turns a layout and N seeds into N images of ``width`` x ``height``.

    Subclasses set ``name`` (the ``--generator`` value), ``demo_only`` when the images are not
    fit for training data, and implement :meth:`generate` and :meth:`config`. Their
    ``__init__`` keyword arguments are the options ``clis generate`` passes through
    (``model``, ``steps``, ``guidance``, ``device`` ...); :func:`generators.create_generator`
    rejects options an adapter does not take.
    """

    name: ClassVar[str] = ""
    demo_only: ClassVar[bool] = False

    def __init__(self, width: int = DEFAULT_SIZE, height: int = DEFAULT_SIZE):
        if width <= 0 or height <= 0:
            raise InputError(f"--width and --height must be positive, got {width}x{height}")
        self.width = int(width)
        self.height = int(height)

    @abstractmethod
    def generate(self, layout: Layout, seeds: Sequence[int]) -> list[Image.Image]:
        """Return one RGB image per seed; the same seed must give the same image."""

    def seeds_used(self, seeds: Sequence[int]) -> list[int]:
        """The seed that actually determines each image (recorded in the manifest).

        Adapters that draw a whole batch from one seed override this.
        """
        return [int(s) for s in seeds]

    def config(self) -> dict[str, Any]:
        """Plain data recorded in the manifest: everything needed to reproduce the images."""
        return {"width": self.width, "height": self.height}

    def close(self) -> None:
        """Release models or files; called once when the run ends."""
