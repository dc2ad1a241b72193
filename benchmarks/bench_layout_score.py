"""Speed of CLIS-L on CPU, per source configuration: layouts per second.

Three configurations of :class:`clis.layout_score.LayoutScorer` (``--sources``, default all):

* ``llm``: LLM plausibility only, the path before the pool priors existed
  (``LayoutScoreConfig(llm=<LLM>, pool=None)``, LLM default ``clis.models.DEFAULT_LLM``,
  the embedded SmolLM2-135M): every object pair goes to the model;
* ``pool``: the pair prior and the relation prior over the embedded pool, no LLM
  (``LayoutScoreConfig(llm="none")``);
* ``default``: ``LayoutScoreConfig()`` (with ``--llm``: that LLM): the pool priors, plus
  the LLM for the pairs with a label the pool does not know.

Each runs on two sets of layouts:

* (a) ``pairs``: the plausible and implausible layouts of ``tests/data/layout_pairs.json``
  (two objects each, textbook labels, many unknown to the pool), plus ``--copies`` jittered
  copies of each with ``--objects`` objects (extra objects from a fixed label list);
* (b) ``nsr``: real COCO layouts of NSR-1K's ``counting.val.json`` (``--nsr``) with
  ``--nsr-objects`` objects (default 4), only the records whose ``"sub-type"`` is not
  ``"real"`` (those are NSR-1K's evaluation set and never used here). If fewer than 40 such
  layouts exist, the ones with one object more and less are taken too, and the script says
  so. Skipped with a message if the file is missing. (These records are also in the
  embedded pool; that does not change the speed, and no accuracy is reported on them.)

Every (configuration, set) gets a fresh scorer without the on-disk result cache
(``cache=None``) and one ``score_layouts`` call, so every statement of the run goes through
the model in shared, length-sorted batches and nothing is reused between measurements.
Printed per run: the load time (models and pool), layouts scored (object pairs, pairs the
LLM was asked about, mean share of labels the pool knows), distinct LLM queries
(``len(scorer.log_likelihood.cache)``, when an LLM is loaded), the scoring time and
layouts/s; for (a) also the share of pairs where the plausible layout scored higher. A
summary table and the targets follow: the ``pool`` configuration at >= 50 layouts/s and
``default`` at >= 3x the layouts/s of ``llm``, both on the ``nsr`` set (layouts of
``--nsr-objects`` objects).

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/bench_layout_score.py
    python benchmarks/bench_layout_score.py --copies 1 --objects 4 --sources pool,default
    python benchmarks/bench_layout_score.py --batch-size 64 --threads 2 --nsr path/to/counting.val.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
PAIRS = ROOT / "tests" / "data" / "layout_pairs.json"
NSR_DEFAULT = "../shared/data/nsr-1k/counting.val.json"  # relative to the repository root
EVALUATION_SUBTYPE = "real"
MIN_NSR_LAYOUTS = 40
EXTRA_LABELS = ["chair", "window", "plant", "rug", "picture frame", "curtain", "basket", "bench"]
SOURCES = {
    "llm": "LLM only (pool=None)",
    "pool": "pair prior + relation prior (llm='none')",
    "default": "LayoutScoreConfig() (pool priors; LLM for labels unknown to the pool)",
}
POOL_TARGET = 50.0  # layouts/s of the pool priors
SPEEDUP_TARGET = 3.0  # default over LLM only


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


def pair_layouts(copies: int, objects: int, seed: int) -> tuple[list, int, str]:
    """Set (a): the layouts, how many pairs lead them (plausible, implausible alternating), a description."""
    from clis.layout import Layout

    pairs = json.loads(PAIRS.read_text(encoding="utf-8"))["pairs"]
    records = [p[key] for p in pairs for key in ("plausible", "implausible")]
    rng = random.Random(seed)
    extra = max(objects - 2, 0)
    records += [jittered(r, rng, extra) for _ in range(copies) for r in records]
    about = f"{2 * len(pairs)} two-object layouts of {PAIRS.relative_to(ROOT)}"
    if copies:
        about += f" + {copies} jittered cop{'y' if copies == 1 else 'ies'} of each with {max(objects, 2)} objects"
    return [Layout.model_validate(r) for r in records], len(pairs), about


def nsr_layouts(path: Path, objects: int) -> tuple[list, str]:
    """Set (b): the non-evaluation NSR-1K layouts with ``objects`` objects (widened to +-1 if too few)."""
    from clis.formats import read_layouts

    report = read_layouts(path)
    usable = [layout for layout in report.layouts
              if (layout.model_extra or {}).get("sub-type") != EVALUATION_SUBTYPE]
    counts = {objects}
    chosen = [layout for layout in usable if len(layout.objects) == objects]
    about = f"{len(chosen)} layouts with {objects} objects"
    if len(chosen) < MIN_NSR_LAYOUTS:
        counts = {n for n in (objects - 1, objects, objects + 1) if n >= 2}
        chosen = [layout for layout in usable if len(layout.objects) in counts]
        by_count = ", ".join(f"{sum(len(l.objects) == n for l in chosen)} with {n}" for n in sorted(counts))
        about = (f"only {about} (< {MIN_NSR_LAYOUTS}): took the ones with one object more and less too: "
                 f"{len(chosen)} layouts ({by_count})")
    about += (f" of {path}, sub-type != {EVALUATION_SUBTYPE!r} "
              f"({len(report.layouts) - len(usable)} evaluation records left out)")
    return chosen, about


def make_config(source: str, llm: str, batch_size: int):
    from clis.layout_score import LayoutScoreConfig

    if source == "llm":
        return LayoutScoreConfig(llm=llm, pool=None, batch_size=batch_size)
    if source == "pool":
        return LayoutScoreConfig(llm="none", batch_size=batch_size)
    return LayoutScoreConfig(llm=llm, batch_size=batch_size)


def measure(source: str, llm: str, batch_size: int, layouts: list, n_pairs: Optional[int]) -> dict:
    """Load a fresh scorer, score ``layouts`` in one call, print and return the figures."""
    from clis.layout_score import LayoutScorer

    started = time.perf_counter()
    # cache=None: this measures scoring, not reading the CLIS-L cache of an earlier run
    scorer = LayoutScorer(make_config(source, llm, batch_size), cache=None)
    load_s = time.perf_counter() - started

    started = time.perf_counter()
    results = scorer.score_layouts(layouts)
    score_s = time.perf_counter() - started

    errors = [r for r in results if r.error is not None]
    object_pairs = sum(len(r.pairs) for r in results)
    asked = sum(1 for r in results for p in r.pairs if p["statements"])
    coverages = [r.label_coverage for r in results if r.label_coverage is not None]
    queries = len(scorer.log_likelihood.cache) if scorer.log_likelihood is not None else None
    rate = len(layouts) / score_s if score_s > 0 else float("inf")

    print(f"  load             {load_s:.1f} s")
    line = f"  layouts          {len(layouts)} ({object_pairs} object pairs"
    if scorer.llm_model is not None:
        line += f", {asked} with LLM statements"
    if coverages:
        line += f", labels known to the pool: {sum(coverages) / len(coverages):.0%} on average"
    print(line + ")")
    if errors:
        print(f"  errors           {len(errors)} (first: {errors[0].error})")
    if queries is None:
        print("  LLM queries      - (no LLM loaded)")
    else:
        print(f"  LLM queries      {queries} distinct ({queries / score_s:.1f}/s)")
    print(f"  scoring          {score_s:.2f} s")
    print(f"  layouts/s        {rate:.2f}")
    figures = {"load_s": load_s, "score_s": score_s, "layouts": len(layouts), "rate": rate, "queries": queries}
    if n_pairs:
        wins = ties = 0
        for i in range(n_pairs):
            good, bad = results[2 * i].clis_l, results[2 * i + 1].clis_l
            if good is None or bad is None:
                continue
            wins += good > bad + 1e-9
            ties += abs(good - bad) <= 1e-9
        print(f"  accuracy         {wins}/{n_pairs} plausible layouts scored higher ({wins / n_pairs:.1%}), "
              f"{ties} ties")
        figures["accuracy"] = wins / n_pairs
    scorer.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", default=None,
                        help="Causal LM spec for the llm and default configurations (default: clis.models.DEFAULT_LLM).")
    parser.add_argument("--sources", default=",".join(SOURCES),
                        help=f"Comma list of configurations to measure, of {', '.join(SOURCES)} (default: all).")
    parser.add_argument("--copies", type=int, default=1, help="Extra jittered copies of every layout of set (a).")
    parser.add_argument("--objects", type=int, default=2,
                        help="Objects per jittered copy of set (a) (2 = no extras).")
    parser.add_argument("--nsr", default=NSR_DEFAULT,
                        help="NSR-1K counting.val.json for set (b), relative to the repository root unless "
                             f"absolute (default: {NSR_DEFAULT}); skipped if missing.")
    parser.add_argument("--nsr-objects", type=int, default=4, help="Objects per layout of set (b) (default 4).")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    unknown = [s for s in sources if s not in SOURCES]
    if unknown or not sources:
        parser.error(f"--sources: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(SOURCES)}")

    import torch

    torch.set_num_threads(args.threads)
    from clis.models import DEFAULT_LLM

    llm = args.llm or DEFAULT_LLM
    sets = []
    pairs_set, n_pairs, about = pair_layouts(args.copies, args.objects, args.seed)
    sets.append(("pairs", pairs_set, n_pairs, about))
    nsr_path = Path(args.nsr)
    if not nsr_path.is_absolute():
        nsr_path = ROOT / nsr_path
    if nsr_path.is_file():
        nsr_set, about = nsr_layouts(nsr_path, args.nsr_objects)
        sets.append(("nsr", nsr_set, None, about))
    else:
        print(f"set (b) skipped: {nsr_path} not found (--nsr)")

    print(f"threads={torch.get_num_threads()}, batch={args.batch_size}, LLM {llm}")
    for name, layouts, _, about in sets:
        print(f"set {name}: {about}")
    figures: dict[tuple[str, str], dict] = {}
    for name, layouts, pairs, _ in sets:
        for source in sources:
            print(f"\n[{name}] {source}: {SOURCES[source]}")
            figures[name, source] = measure(source, llm, args.batch_size, layouts, pairs)

    print("\nsummary (layouts/s)")
    print("  set      " + "".join(f"{s:>10}" for s in sources))
    for name, *_ in sets:
        print(f"  {name:<9}" + "".join(f"{figures[name, s]['rate']:>10.2f}" for s in sources))

    print(f"\ntargets (set nsr, {args.nsr_objects}-object layouts)")
    nsr = {s: f for (name, s), f in figures.items() if name == "nsr"}
    if not nsr:
        print("  not checked: set (b) was not run")
        return
    if "pool" in nsr:
        rate = nsr["pool"]["rate"]
        verdict = "met" if rate >= POOL_TARGET else "NOT met"
        print(f"  pool priors >= {POOL_TARGET:.0f} layouts/s: {rate:.2f} layouts/s -> {verdict}")
    else:
        print("  pool priors: not run (--sources)")
    if "default" in nsr and "llm" in nsr:
        ratio = nsr["default"]["rate"] / nsr["llm"]["rate"]
        verdict = "met" if ratio >= SPEEDUP_TARGET else "NOT met"
        print(f"  default >= {SPEEDUP_TARGET:.0f}x LLM only: {nsr['default']['rate']:.2f} vs "
              f"{nsr['llm']['rate']:.2f} layouts/s = {ratio:.1f}x -> {verdict}")
    else:
        print("  default vs LLM only: needs both in --sources")


if __name__ == "__main__":
    main()
