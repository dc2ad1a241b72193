"""Records/s of ``--engine local`` against ``--engine ray --workers W``, and Ray's fixed start-up cost.

Writes N synthetic candidates (PNG images with K boxed objects, one layout each), builds a CLIP
with random weights (``--model tiny``: clis.testing's 32-pixel CLIP, which times the engine's own
overhead; ``--model vit-b-32``: transformers' ``CLIPConfig()``, the ViT-B/32 shape, which times
real work), and scores them with the detector off and no CLIS-L, through ``Scorer.image_scorer``
(local) and ``RayEngine.image_records`` (ray).

Figures:

* ``ray_init_s``: ``ray.init`` of a local Ray sized to ``--workers`` CPUs;
* ``first_actor_s``: one row through an actor pool of one whose stage loads nothing (a new worker
  process, its imports of clis, the round trip), the cost every Ray Data run pays once;
* ``first_image_actor_s``: one candidate through an ImageStage actor (the above plus torch,
  transformers and the model loaded in the worker);
* per engine: ``wall_s`` from the call to the last record (for ray, with its actors' start-up)
  and ``records_per_s`` = N / wall_s; for ray also ``without_start_up_records_per_s``, N over
  wall_s less first_image_actor_s (an estimate of the rate once the actors are up);
* ``largest_difference``: the largest absolute difference of any number of the two engines'
  records, and where.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_engines.py --candidates 48 --workers 2 --model vit-b-32
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from clis.engines.stages import Stage

LABELS = ["cup", "dog", "cat", "car", "tree", "lamp", "chair", "bird", "bottle", "book", "clock", "vase"]


class Nothing(Stage):
    """A stage that loads nothing: what is left of an actor's start-up is Ray's own cost."""

    def process(self, rows: list[dict]) -> list[dict]:
        return [{"pid": os.getpid()} for _ in rows]


def write_candidates(folder: Path, n: int, objects: int, seed: int = 0) -> list:
    """``n`` (image path, Layout) pairs: 256x256 PNGs with ``objects`` filled boxes each."""
    from clis.image_score.engine import Candidate
    from clis.layout import Layout

    rng = random.Random(seed)
    candidates = []
    for i in range(n):
        image = Image.new("RGB", (256, 256), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        boxes = []
        for k in range(objects):
            x, y = rng.uniform(0, 0.6), rng.uniform(0, 0.6)
            w, h = rng.uniform(0.15, 0.4), rng.uniform(0.15, 0.4)
            draw.rectangle([x * 256, y * 256, (x + w) * 256, (y + h) * 256], fill=tuple(rng.randrange(256) for _ in range(3)))
            boxes.append({"id": f"o{k}", "label": rng.choice(LABELS), "bbox": [x, y, w, h]})
        path = folder / f"c{i:05d}.png"
        image.save(path)
        caption = " and ".join(f"a {box['label']}" for box in boxes)
        candidates.append(Candidate(str(path), Layout.model_validate({"id": f"c{i:05d}", "caption": caption,
                                                                      "objects": boxes})))
    return candidates


def build_model(kind: str, folder: Path) -> str:
    from clis.testing import build_tiny_hf_clip

    if kind == "tiny":
        return build_tiny_hf_clip(folder)
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from clis.testing import _clip_tokenizer

    target = folder / "random-vit-b-32"
    torch.manual_seed(0)
    CLIPModel(CLIPConfig()).eval().save_pretrained(target, safe_serialization=True)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=_clip_tokenizer(target, 77)).save_pretrained(target)
    return str(target)


def largest_difference(a, b, where: str = "") -> tuple[float, str]:
    """The largest absolute difference between two records' numbers, and where it is (inf when
    the records differ otherwise)."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(a - b), where
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return max((largest_difference(a[k], b[k], f"{where}.{k}") for k in a), default=(0.0, where))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return max((largest_difference(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b))),
                   default=(0.0, where))
    return (0.0, where) if a == b else (math.inf, where)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=48)
    parser.add_argument("--objects", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8, help="candidates per Ray batch, rows per forward")
    parser.add_argument("--model", choices=("tiny", "vit-b-32"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    args = parser.parse_args()

    # The workers import this module (the Nothing stage) by name, from the repository root.
    root = str(Path(__file__).resolve().parent.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    sys.path.insert(0, root)
    import ray

    from benchmarks.bench_engines import Nothing as ImportableNothing
    from clis.engines import EngineConfig
    from clis.engines.ray_engine import RayEngine, map_stage
    from clis.scorer import ScoreConfig, Scorer

    work = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    model = build_model(args.model, work)
    (work / "images").mkdir()
    candidates = write_candidates(work / "images", args.candidates, args.objects)
    scorer = Scorer(ScoreConfig(image_model=model, detector="none", layout_score=False, batch_size=args.batch_size,
                                num_workers=1, device=args.device))
    figures: dict = {"candidates": args.candidates, "objects": args.objects, "workers": args.workers,
                     "model": args.model, "device": args.device, "gpus_per_worker": args.gpus_per_worker, "threads_per_process": os.environ.get("OMP_NUM_THREADS"),
                     "cpus": os.cpu_count()}

    started = time.perf_counter()
    local = list(scorer.image_scorer.score_candidates(candidates))
    wall = time.perf_counter() - started
    figures["local"] = {"wall_s": round(wall, 2), "records_per_s": round(len(local) / wall, 2)}

    started = time.perf_counter()
    gpus = {"num_gpus": math.ceil(args.workers * args.gpus_per_worker)} if args.gpus_per_worker else {}
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, **gpus)
    figures["ray_init_s"] = round(time.perf_counter() - started, 2)
    engine = EngineConfig(name="ray", workers=args.workers, gpus_per_worker=args.gpus_per_worker)
    first_engine = EngineConfig(name="ray", workers=1, gpus_per_worker=args.gpus_per_worker)
    started = time.perf_counter()
    list(map_stage(ImportableNothing, {}, [{}], 1, EngineConfig(name="ray", workers=1)))
    figures["first_actor_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    list(RayEngine(first_engine).image_records(scorer, candidates[:1]))
    figures["first_image_actor_s"] = round(time.perf_counter() - started, 2)

    started = time.perf_counter()
    first = None
    remote = []
    for record in RayEngine(engine).image_records(scorer, candidates):
        remote.append(record)
        first = first or time.perf_counter()
    end = time.perf_counter()
    figures["ray"] = {"wall_s": round(end - started, 2), "records_per_s": round(len(remote) / (end - started), 2),
                      "first_record_s": round(first - started, 2),
                      "without_start_up_records_per_s": round(len(remote) / max(1e-9, end - started - figures["first_image_actor_s"]), 2)}
    difference, where = largest_difference(local, remote)
    figures["largest_difference"] = {"value": difference, "at": where}
    ray.shutdown()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
