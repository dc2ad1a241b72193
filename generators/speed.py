"""Print how fast the CPU adapters make candidates: ``python -m generators.speed``.

Times ``shapes`` and ``copy-paste`` (with synthetic RGBA cut-outs) on a three-object layout,
and the tiny random GLIGEN pipeline at 64x64 for 2 steps (pipeline overhead only: real
GLIGEN runs 50 steps at 512x512 on a GPU). Figures are images per second, best of 3 runs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from clis.layout import Layout

from generators import candidate_seeds, create_generator

LAYOUT = Layout.model_validate(
    {
        "id": "room",
        "caption": "a cat on a sofa next to a lamp",
        "objects": [
            {"id": "cat-1", "label": "cat", "bbox": [0.35, 0.35, 0.25, 0.2]},
            {"id": "sofa-1", "label": "sofa", "bbox": [0.1, 0.45, 0.7, 0.45]},
            {"id": "lamp-1", "label": "lamp", "bbox": [0.8, 0.1, 0.15, 0.7]},
        ],
    }
)


def images_per_second(adapter, n: int, repeats: int = 3) -> float:
    seeds = candidate_seeds(0, LAYOUT.id, n)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        adapter.generate(LAYOUT, seeds)
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--n", type=int, default=8)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        for label in ("cat", "sofa", "lamp"):
            (root / "cutouts" / label).mkdir(parents=True)
            pixels = np.concatenate([rng.integers(0, 256, (200, 200, 3)), np.full((200, 200, 1), 255)], axis=2)
            Image.fromarray(pixels.astype(np.uint8), "RGBA").save(root / "cutouts" / label / "0.png")
        from generators.testing import build_tiny_gligen

        rows = [
            ("shapes", args.size, images_per_second(create_generator("shapes", width=args.size, height=args.size), args.n)),
            ("copy-paste", args.size, images_per_second(
                create_generator("copy-paste", cutouts=root / "cutouts", width=args.size, height=args.size), args.n)),
            ("gligen (tiny, 2 steps)", 64, images_per_second(
                create_generator("gligen", model=build_tiny_gligen(root), steps=2, width=64, height=64), args.n)),
        ]  # fmt: skip
    print(f"{'generator':<24} {'size':>5} {'images/s':>9}  (CPU, 1 thread, n={args.n}, best of 3)")
    for name, size, rate in rows:
        print(f"{name:<24} {size:>5} {rate:>9.1f}")


if __name__ == "__main__":
    main()
