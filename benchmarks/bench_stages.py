"""Where a CLIS-I run spends its time: seconds and share per stage, one thread, one stage at a time.

On the synthetic candidates of ``bench_image_score`` (random open_clip ViT-B/32 by default), each
stage runs alone over all candidates, in this order:

* **decode**: ``open_image`` of every PNG file;
* **crops**: one letterboxed ``region_crop`` per object;
* **transform**: the CLIP transform of every whole image and crop (``encoder.preprocess``);
* **image encoder**: ``encode_images`` over those rows in batches of ``--batch-size``;
* **text encoder**: every distinct caption, phrase and distractor through a fresh
  ``TextEmbeddingCache`` (so each is encoded once, as in a run);
* **detector** (``--detector tiny|full``): the detector check of every image, four images per
  pass as the scorer does on CPU (``tiny``: the test suite's tiny Grounding DINO; ``full``: a
  random ``GroundingDinoConfig()``, the 172M-parameter Grounding-DINO-tiny shape, slow to build);
* **CLIS-L** (``--clis-l``): ``LayoutScorer`` with the embedded pool priors and no LLM, over
  the distinct layouts;
* **bookkeeping**: the main thread's own work in a run: batching, formulas and records. A
  sequential run (``ImageScorer.score_candidates``, no loader threads) records every model
  output; a second run replays them instead of running the models, and its time less decode,
  crops and transform is the bookkeeping. Replaying keeps the seconds of model noise out of it.

Decode, crops, transform and the replayed run take a fraction of a second: each is the best of
three timings, so one scheduling hiccup does not decide its figure.

The script uses only APIs that predate the speed work of issue 15, so the same file profiles an
older checkout (``PYTHONPATH=/path/to/checkout``).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_stages.py --images 16 --objects 4
    OMP_NUM_THREADS=1 python benchmarks/bench_stages.py --images 8 --detector tiny --clis-l
"""

from __future__ import annotations

import argparse
import inspect
import json
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.bench_image_score import random_clip, synthetic_dataset
from clis.image_score import ImageScoreConfig, ImageScorer, TextEmbeddingCache
from clis.image_score.crops import region_crop
from clis.image_score.detection import Detector
from clis.image_score.detection_terms import DetectionTerms
from clis.image_score.images import open_image
from clis.models.clip import ClipEncoder


def random_detector(kind: str):
    """A Grounding DINO with random weights: the tests' tiny one, or the full tiny-model shape."""
    from clis.models import load_model
    from clis.testing import build_tiny_grounding_dino

    folder = build_tiny_grounding_dino(tempfile.mkdtemp())
    loaded = load_model(folder, "detector")
    if kind == "full":
        from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection

        config = GroundingDinoConfig()
        # The tiny model's BERT vocabulary: the full-size text tower reads the same ids.
        config.text_config.vocab_size = max(config.text_config.vocab_size, loaded.processor.tokenizer.vocab_size)
        loaded.model = GroundingDinoForObjectDetection(config).eval()
    return Detector(loaded, ImageScoreConfig().detection)


class Replay:
    """An encoder or detector that records its outputs, then returns them again in call order."""

    METHODS = ("encode_images", "encode_texts", "detect", "prepare_image")

    def __init__(self, inner):
        self.inner, self.replaying = inner, False
        self.outputs: dict[str, list] = {name: [] for name in self.METHODS}
        self.position = dict.fromkeys(self.METHODS, 0)

    def __getattr__(self, name):
        if name in Replay.METHODS:
            return lambda *args, **kwargs: self._call(name, *args, **kwargs)
        return getattr(self.inner, name)

    def _call(self, name, *args, **kwargs):
        if self.replaying:
            self.position[name] += 1
            return self.outputs[name][self.position[name] - 1]
        out = getattr(self.inner, name)(*args, **kwargs)
        self.outputs[name].append(out)
        return out


class Stopwatch:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn):
        start = time.perf_counter()
        result = fn()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="ViT-B-32", help="open_clip architecture, or 'hf' for CLIPConfig()")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--objects", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--per-layout", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--detector", choices=["tiny", "full"], default=None)
    parser.add_argument("--clis-l", action="store_true", help="also time CLIS-L (pool priors, no LLM)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    encoder = ClipEncoder(random_clip(args.arch))
    detector = random_detector(args.detector) if args.detector else None
    candidates = synthetic_dataset(Path(tempfile.mkdtemp(prefix="clis-stages-")), args.images, args.objects,
                                   args.size, args.per_layout)
    config = ImageScoreConfig()
    size = encoder.image_size
    # Warm-up (lazy initialisation, first allocations), not timed.
    ImageScorer(encoder, detector, config=config, num_workers=0).score(candidates[0].image, candidates[0].layout)

    prep = []
    for _ in range(3):
        watch = Stopwatch()
        images = [watch.run("decode", lambda c=c: open_image(c.image, resize_side=size)) for c in candidates]
        crops = [watch.run("crops", lambda im=im, c=c: [
            region_crop(im, o.bbox, size, config.crop_margin, config.min_crop_pixels) for o in c.layout.objects])
            for im, c in zip(images, candidates)]
        rows = torch.cat([watch.run("transform", lambda im=im, cr=cr: encoder.preprocess([im, *cr]))
                          for im, cr in zip(images, crops)])
        prep.append(watch.seconds)
    watch = Stopwatch()
    watch.seconds = {name: min(p[name] for p in prep) for name in prep[0]}

    def encode_rows():
        with torch.inference_mode():
            for i in range(0, rows.shape[0], args.batch_size):
                encoder.encode_images(rows[i : i + args.batch_size])

    watch.run("image encoder", encode_rows)
    phrases = ImageScorer(encoder, config=config)._phrase_set
    texts = list(dict.fromkeys(t for c in candidates for t in [c.layout.caption, *phrases(c.layout)[0]]))
    options = {"lengths": encoder.token_counts} if "lengths" in inspect.signature(TextEmbeddingCache).parameters else {}
    watch.run("text encoder", lambda: TextEmbeddingCache(encoder.encode_texts, "stages", **options).get(texts))
    if detector is not None:
        terms = DetectionTerms(detector, config.detection, 4)
        names = [str(c.image) for c in candidates]
        watch.run("detector", lambda: terms.detect(images, [c.layout for c in candidates], names))
    if args.clis_l:
        from clis.layout_score import LayoutScoreConfig, LayoutScorer

        layouts = list({c.layout.id: c.layout for c in candidates}.values())
        scorer = LayoutScorer(LayoutScoreConfig(llm="none"), cache=None)
        watch.run("CLIS-L", lambda: scorer.score_layouts(layouts))

    encoder_replay = Replay(encoder)
    detector_replay = Replay(detector) if detector is not None else None

    def sequential_run():
        scorer = ImageScorer(encoder_replay, detector_replay, config=config, batch_size=args.batch_size, num_workers=0)
        records = list(scorer.score_candidates(candidates))
        assert all(r["error"] is None for r in records), records[0]["error"]

    start = time.perf_counter()
    sequential_run()
    sequential = time.perf_counter() - start
    for replay in (encoder_replay, detector_replay):
        if replay is not None:
            replay.replaying = True
    replayed = float("inf")
    for _ in range(3):
        for replay in (encoder_replay, detector_replay):
            if replay is not None:
                replay.position = dict.fromkeys(Replay.METHODS, 0)
        start = time.perf_counter()
        sequential_run()
        replayed = min(replayed, time.perf_counter() - start)
    stages = dict(watch.seconds)
    stages["bookkeeping"] = replayed - sum(stages[k] for k in ("decode", "crops", "transform"))
    total = sum(stages.values())
    figures = {
        "arch": args.arch, "images": args.images, "objects_per_image": args.objects, "rows": int(rows.shape[0]),
        "texts": len(texts), "detector": args.detector or "none", "sequential_run_s": round(sequential, 3),
        "replayed_run_s": round(replayed, 3),
        "stages": {k: {"s": round(v, 3), "share": round(v / total, 4), "ms_per_candidate": round(1e3 * v / args.images, 2)}
                   for k, v in stages.items()},
    }
    if args.json:
        print(json.dumps(figures))
        return
    for key, value in figures.items():
        if key != "stages":
            print(f"{key:>18}: {value}")
    print(f"{'stage':>18} {'seconds':>9} {'share':>7} {'ms/cand':>9}")
    for name, row in figures["stages"].items():
        print(f"{name:>18} {row['s']:>9.3f} {100 * row['share']:>6.1f}% {row['ms_per_candidate']:>9.2f}")


if __name__ == "__main__":
    main()
