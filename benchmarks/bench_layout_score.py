"""Speed of CLIS-L with the default LLM (embedded SmolLM2-135M) on CPU: layouts per second.

Scores the plausible and implausible layouts of ``tests/data/layout_pairs.json`` (two objects
each), optionally repeated with jittered boxes and with extra objects so that fewer statements
repeat, in one ``LayoutScorer.score_layouts`` call: every statement of the run goes through
the model in shared, length-sorted batches. Prints the load time, layouts/s, distinct LLM
queries/s and, for the unjittered pairs, the accuracy (plausible layout scored higher).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_layout_score.py
    python benchmarks/bench_layout_score.py --copies 4 --objects 4 --batch-size 64 --threads 2
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

PAIRS = Path(__file__).resolve().parent.parent / "tests" / "data" / "layout_pairs.json"
EXTRA_LABELS = ["chair", "window", "plant", "rug", "picture frame", "curtain", "basket", "bench"]


def jittered(record: dict, rng: random.Random, extra: int) -> dict:
    """A copy of a layout with boxes nudged by up to 3% and ``extra`` objects added."""
    record = json.loads(json.dumps(record))
    for obj in record["objects"]:
        x, y, w, h = obj["bbox"]
        dx, dy = rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03)
        obj["bbox"] = [min(max(x + dx, 0.0), 1 - w), min(max(y + dy, 0.0), 1 - h), w, h]
    for k in range(extra):
        w, h = rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3)
        record["objects"].append({"id": f"extra-{k}", "label": rng.choice(EXTRA_LABELS),
                                  "bbox": [rng.uniform(0, 1 - w), rng.uniform(0, 1 - h), w, h]})
    record["id"] += f"-j{rng.randrange(10**6)}"
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm", default=None, help="Causal LM spec (default: clis.models.DEFAULT_LLM).")
    parser.add_argument("--copies", type=int, default=1, help="Extra jittered copies of every layout.")
    parser.add_argument("--objects", type=int, default=2, help="Objects per jittered copy (2 = no extras).")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from clis.layout import Layout
    from clis.layout_score import LayoutScoreConfig, LayoutScorer
    from clis.models import DEFAULT_LLM

    pairs = json.loads(PAIRS.read_text(encoding="utf-8"))["pairs"]
    records = [p[key] for p in pairs for key in ("plausible", "implausible")]
    rng = random.Random(args.seed)
    records += [jittered(r, rng, max(args.objects - 2, 0)) for _ in range(args.copies) for r in records]
    layouts = [Layout.model_validate(r) for r in records]

    started = time.perf_counter()
    # cache=None: this measures scoring, not reading the CLIS-L cache of an earlier run
    scorer = LayoutScorer(LayoutScoreConfig(llm=args.llm or DEFAULT_LLM, batch_size=args.batch_size), cache=None)
    load_s = time.perf_counter() - started

    started = time.perf_counter()
    results = scorer.score_layouts(layouts)
    score_s = time.perf_counter() - started
    queries = len(scorer.log_likelihood.cache)
    n_pairs = sum(len(r.pairs) for r in results)

    wins = sum(results[2 * i].clis_l > results[2 * i + 1].clis_l for i in range(len(pairs)))
    print(f"model            {scorer.config.llm} (threads={torch.get_num_threads()}, batch={args.batch_size})")
    print(f"load             {load_s:.1f} s")
    print(f"layouts          {len(layouts)} ({n_pairs} object pairs, {queries} distinct LLM queries)")
    print(f"scoring          {score_s:.1f} s")
    print(f"layouts/s        {len(layouts) / score_s:.2f}")
    print(f"queries/s        {queries / score_s:.1f}")
    print(f"accuracy         {wins}/{len(pairs)} plausible layouts scored higher ({wins / len(pairs):.1%})")


if __name__ == "__main__":
    main()
