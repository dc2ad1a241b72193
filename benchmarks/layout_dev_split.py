"""How the pair prior's settings were chosen: cross-validation on the pool's own scenes.

NSR-1K's ``"sub-type": "real"`` records are an evaluation set, so nothing may be chosen on
them. This script measures on what the embedded pool is built from instead: the template
records of ``counting.val.json`` with 2-6 objects of at least 2 labels are split into 5 folds
**by COCO image** (NSR-1K holds several records of one image, with the same boxes); each
fold is scored by a pair prior whose pool is every allowed record (counting templates and
``spatial.*``) of the *other* folds' images. Records of evaluation images are never used.

For each setting it prints the win rate of the real layout over its vertical flip and over
its box swap (ties half, the twins of ``clis bench layouts``) and the share of real layouts
and twins scoring >= 50; ``--pool-fractions`` also subsamples the pool images to show how the
win rates grow with the pool (a guide to what a larger pool, such as COCO train2017, buys).

Usage::

    python benchmarks/layout_dev_split.py                         # the chosen settings
    python benchmarks/layout_dev_split.py --strengths 5,10,20,40 --pool-fractions 0.25,0.5,1
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.layout_twins import flip, swap  # noqa: E402
from clis.formats import read_layouts  # noqa: E402
from clis.layout_score.embedded_pool import EVALUATION_SUBTYPE, NSR_FILES  # noqa: E402
from clis.layout_score.scene_prior import DEFAULT_STRENGTH, DEFAULT_TEMPERATURE, ScenePrior  # noqa: E402

FOLDS = 5


def scene(layout) -> list:
    return [(o.label, list(o.bbox)) for o in layout.objects]


def win_rate(real: list[float], twin: list[float]) -> float:
    return float(np.mean([1.0 if a > b + 1e-9 else 0.5 if abs(a - b) <= 1e-9 else 0.0 for a, b in zip(real, twin)]))


def load(nsr_dir: Path) -> tuple[list, list]:
    """(development layouts, every allowed layout), both as (image id, layout)."""
    records = []
    for name in NSR_FILES:
        records += [(layout.model_extra.get("image_id"), layout) for layout in read_layouts(nsr_dir / name).layouts]
    held_out = {image for image, layout in records if layout.model_extra.get("sub-type") == EVALUATION_SUBTYPE}
    allowed = [(image, layout) for image, layout in records if image not in held_out]
    development = [(image, layout) for image, layout in allowed
                   if layout.model_extra.get("type") == "template" and layout.model_extra.get("sub-type") is not None
                   and 2 <= len(layout.objects) <= 6 and len(set(layout.labels)) >= 2]
    return development, allowed


def cross_validate(development, allowed, strength: float, fraction: float, seed: int) -> dict:
    images = sorted({image for image, _ in development})
    random.Random(seed).shuffle(images)
    fold_of = {image: k % FOLDS for k, image in enumerate(images)}
    pool_images = sorted({image for image, _ in allowed})
    random.Random(seed + 1).shuffle(pool_images)
    kept = set(pool_images[:max(1, int(round(fraction * len(pool_images))))])
    scores: dict[str, list[float]] = {"real": [], "flip": [], "swap": []}
    for k in range(FOLDS):
        pool = [scene(layout) for image, layout in allowed
                if image in kept and fold_of.get(image, -1) != k]
        prior = ScenePrior(pool, strength=strength, temperature=DEFAULT_TEMPERATURE)
        for image, layout in development:
            if fold_of[image] != k:
                continue
            twins = {"flip": flip(layout), "swap": swap(layout)}
            if any(t is None for t in twins.values()):
                continue
            scores["real"].append(prior.score(scene(layout)).score)
            for name, twin in twins.items():
                scores[name].append(prior.score(scene(twin)).score)
    real = scores["real"]
    return {"n": len(real), "flip": win_rate(real, scores["flip"]), "swap": win_rate(real, scores["swap"]),
            "real>=50": float(np.mean(np.array(real) >= 50)),
            "flip>=50": float(np.mean(np.array(scores["flip"]) >= 50)),
            "swap>=50": float(np.mean(np.array(scores["swap"]) >= 50))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nsr", type=Path, default=ROOT.parent / "shared" / "data" / "nsr-1k",
                        help="The NSR-1K folder (counting.val.json, spatial.*.json).")
    parser.add_argument("--strengths", default=str(DEFAULT_STRENGTH), help="Comma list of smoothing strengths.")
    parser.add_argument("--pool-fractions", default="1", help="Comma list of shares of the pool images to keep.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (args.nsr / "counting.val.json").is_file():
        sys.exit(f"{args.nsr}: no NSR-1K files here; pass --nsr")
    development, allowed = load(args.nsr)
    print(f"development layouts: {len(development)} from {len({i for i, _ in development})} COCO images; "
          f"allowed pool layouts: {len(allowed)}")
    print(f"{'strength':>8} {'pool':>5} {'n':>4} {'flip':>6} {'swap':>6} {'real>=50':>9} {'flip>=50':>9} {'swap>=50':>9}")
    for strength in (float(s) for s in args.strengths.split(",")):
        for fraction in (float(f) for f in args.pool_fractions.split(",")):
            started = time.perf_counter()
            r = cross_validate(development, allowed, strength, fraction, args.seed)
            print(f"{strength:>8g} {fraction:>5.2f} {r['n']:>4} {r['flip']:>6.3f} {r['swap']:>6.3f} "
                  f"{r['real>=50']:>9.3f} {r['flip>=50']:>9.3f} {r['swap>=50']:>9.3f}"
                  f"   ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
