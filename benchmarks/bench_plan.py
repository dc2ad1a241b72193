"""How often ``clis plan`` turns a concept set into a valid layout, and how fast (CPU, 1 thread).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.bench_plan [--llm embedded:smollm2] [--mode auto]

Prints one line per concept set (ok/failed, seconds, caption) and then the success rate and the
seconds per set. A set counts as a success when a layout passing the project's validation came
back and its caption names every object without repair.
"""

from __future__ import annotations

import argparse
import time

import torch

from clis.models import DEFAULT_LLM
from clis.plan import plan_layouts, read_concepts
from clis.planning.backends import make_backend
from clis.planning.parse import names_object

CONCEPT_SETS = [
    ["cat", "sofa", "lamp"],
    ["person", "horse"],
    ["cup", "table"],
    ["dog", "frisbee", "tree"],
    ["car", "road", "traffic light"],
    ["bird", "branch"],
    ["laptop", "desk", "chair"],
    ["boat", "river"],
    ["pizza", "plate", "knife"],
    ["man", "bicycle", "street"],
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", default=DEFAULT_LLM)
    parser.add_argument("--mode", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retries", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    backend = make_backend(args.llm, mode=args.mode)
    print(f"loaded {args.llm} ({getattr(backend, 'mode', 'json')} mode) in {time.perf_counter() - started:.1f} s")
    ok, times = 0, []
    for k, concepts in enumerate(CONCEPT_SETS):
        t0 = time.perf_counter()
        result = plan_layouts(read_concepts([concepts]), backend, max_retries=args.retries, seed=args.seed + k)
        times.append(time.perf_counter() - t0)
        record = result.records[0]
        layout = result.layouts[0] if result.layouts else None
        good = layout is not None and all(names_object(layout.caption, c) for c in concepts) and not any(
            n.startswith("caption repaired") for n in record["notes"]
        )
        ok += good
        detail = layout.caption if layout else record["error"]
        repaired = " (caption repaired)" if layout and not good else ""
        print(f"{'ok ' if good else 'BAD'} {times[-1]:5.1f} s  {', '.join(concepts)}: {detail}{repaired}")
        if layout:
            print("      " + "; ".join(f"{o.id} {o.attributes} {o.bbox}" for o in layout.objects)
                  + " | " + "; ".join(f"{r.subject[0]} {r.relation} {r.object[0]}" for r in layout.relations))
    n = len(CONCEPT_SETS)
    print(f"success {ok}/{n} = {100 * ok / n:.0f}%; {sum(times) / n:.1f} s per set (max {max(times):.1f} s)")


if __name__ == "__main__":
    main()
