"""InstanceDiffusion (Wang et al., CVPR 2024), the ACP paper's generator, run from a user's checkout.

diffusers has no InstanceDiffusion pipeline, and the research code needs its own environment
(CUDA, its pinned packages, a 1.5 GB checkpoint). So this adapter does not import it: it writes
the layout in the checkout's input format (caption, pixel ``[x, y, w, h]`` boxes and one
caption per instance) and runs the checkout's own ``inference.py`` with the checkout's
interpreter. Point at the checkout with ``--instancediffusion-dir`` or the
``CLIS_INSTANCEDIFFUSION_DIR`` environment variable, and at its Python with
``--instancediffusion-python`` / ``CLIS_INSTANCEDIFFUSION_PYTHON`` if it lives in another venv.

The script draws the starting noise of all N images of a layout from one seed, so a layout's N
candidates are one run seeded with the layout's first candidate seed; the manifest records
that seed for each of them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from clis import jsonio
from clis.errors import InputError
from clis.formats import layout_to_instancediffusion
from clis.layout import Layout

from generators.base import DEFAULT_SIZE, GenerationError, GeneratorAdapter, check_finite

CHECKOUT_ENV = "CLIS_INSTANCEDIFFUSION_DIR"
PYTHON_ENV = "CLIS_INSTANCEDIFFUSION_PYTHON"
# InstanceDiffusion is an SD 1.5 model sampled at 512x512 (64x64 latents, fixed in its script).
NATIVE_SIZE = 512
HOW_TO_GET_IT = (
    "clone https://github.com/frank-xwang/InstanceDiffusion, install its requirements, put "
    "instancediffusion_sd15.pth under its pretrained/ folder (see its README, 'Inference'), then pass "
    f"--instancediffusion-dir PATH or set {CHECKOUT_ENV}"
)


def instancediffusion_input(layout: Layout, size: int = NATIVE_SIZE) -> dict[str, Any]:
    """The layout in InstanceDiffusion's ``--input_json`` format (pixel xywh on a size x size canvas).

    Written by ``clis.formats.layout_to_instancediffusion`` (the ``instancediffusion`` format of
    ``clis.formats``) without the ``clis_*`` fields; a layout without a caption gets its objects'
    phrases as the caption, and an anno without a mask gets ``mask: []`` (boxes only).

    >>> from clis.layout import Layout
    >>> layout = Layout.model_validate({"id": "t", "caption": "a red cup", "objects": [
    ...     {"id": "cup-1", "label": "cup", "attributes": ["red"], "bbox": [0.25, 0.5, 0.5, 0.25]}]})
    >>> instancediffusion_input(layout)["annos"]
    [{'bbox': [128.0, 256.0, 256.0, 128.0], 'caption': 'red cup', 'category_name': 'cup', 'mask': []}]
    """
    data = layout_to_instancediffusion(layout, size=(size, size), clis_fields=False)
    if not data["caption"]:
        data["caption"] = ", ".join(o.phrase for o in layout.objects)
    for anno in data["annos"]:
        anno.setdefault("mask", [])
    return data


class InstanceDiffusionGenerator(GeneratorAdapter):
    """Runs ``inference.py`` of an InstanceDiffusion checkout once per layout."""

    name = "instancediffusion"

    def __init__(
        self,
        instancediffusion_dir: str | Path | None = None,
        instancediffusion_python: str | None = None,
        ckpt: str = "pretrained/instancediffusion_sd15.pth",
        test_config: str = "configs/test_box.yaml",
        guidance: float = 7.5,
        alpha: float = 0.8,
        mis: float = 0.36,
        cascade_strength: float = 0.0,
        width: int = DEFAULT_SIZE,
        height: int = DEFAULT_SIZE,
    ):
        super().__init__(width, height)
        if (width, height) != (NATIVE_SIZE, NATIVE_SIZE):
            raise InputError(f"instancediffusion generates {NATIVE_SIZE}x{NATIVE_SIZE} images only, got {width}x{height}")
        for flag, value in (("--guidance", guidance), ("alpha", alpha), ("mis", mis), ("cascade_strength", cascade_strength)):
            check_finite(flag, value)
        checkout = instancediffusion_dir or os.environ.get(CHECKOUT_ENV)
        if not checkout:
            raise InputError(f"generator 'instancediffusion' needs a checkout of InstanceDiffusion: {HOW_TO_GET_IT}")
        self.checkout = Path(checkout).expanduser().resolve()
        if not (self.checkout / "inference.py").is_file():
            raise InputError(f"{self.checkout}: not an InstanceDiffusion checkout (no inference.py): {HOW_TO_GET_IT}")
        if not (self.checkout / ckpt).is_file():
            raise InputError(f"{self.checkout / ckpt}: InstanceDiffusion checkpoint not found: {HOW_TO_GET_IT}")
        self.python = instancediffusion_python or os.environ.get(PYTHON_ENV) or sys.executable
        self.ckpt, self.test_config = ckpt, test_config
        self.guidance, self.alpha, self.mis, self.cascade_strength = guidance, alpha, mis, cascade_strength

    def command(self, input_json: Path, output: Path, n: int, seed: int) -> list[str]:
        return [
            self.python, "inference.py",
            "--input_json", str(input_json),
            "--output", str(output),
            "--num_images", str(n),
            "--seed", str(seed),
            "--guidance_scale", str(self.guidance),
            "--alpha", str(self.alpha),
            "--mis", str(self.mis),
            # The refiner (cascade_strength > 0) downloads SDXL; off unless asked for.
            "--cascade_strength", str(self.cascade_strength),
            "--test_config", self.test_config,
            "--ckpt", self.ckpt,
        ]  # fmt: skip

    def seeds_used(self, seeds: Sequence[int]) -> list[int]:
        return [int(seeds[0])] * len(seeds)

    def generate(self, layout: Layout, seeds: Sequence[int]) -> list[Image.Image]:
        with tempfile.TemporaryDirectory(prefix="clis-instdiff-") as tmp:
            input_json, output = Path(tmp) / "input.json", Path(tmp) / "out"
            input_json.write_text(jsonio.dumps(instancediffusion_input(layout)), encoding="utf-8")
            done = subprocess.run(
                self.command(input_json, output, len(seeds), int(seeds[0])),
                cwd=self.checkout, capture_output=True, text=True,
            )  # fmt: skip
            if done.returncode != 0:
                tail = " | ".join(done.stderr.strip().splitlines()[-3:])
                raise GenerationError(f"InstanceDiffusion inference.py exited with {done.returncode}: {tail}")
            # The script writes <output>/<run folder>/<k>.png (and <k>_boxes.png previews).
            found = sorted(
                (p for p in output.rglob("*.png") if re.fullmatch(r"\d+", p.stem)), key=lambda p: int(p.stem)
            )
            if len(found) != len(seeds):
                raise GenerationError(f"InstanceDiffusion wrote {len(found)} images, expected {len(seeds)}")
            images = []
            for path in found:
                with Image.open(path) as im:
                    images.append(im.convert("RGB"))
            return images

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "checkout": str(self.checkout),
            "python": self.python,
            "ckpt": self.ckpt,
            "test_config": self.test_config,
            "guidance": self.guidance,
            "steps": 50,  # fixed in the checkout's inference.py
            "alpha": self.alpha,
            "mis": self.mis,
            "cascade_strength": self.cascade_strength,
            "seeding": "one run per layout: all N starting noises drawn from the layout's first seed",
        }
