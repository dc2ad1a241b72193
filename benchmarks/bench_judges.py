"""Throughput and request counts of the CLIS-I judges (``clip``, ``vqa``, ``acp``) on one candidate set.

    OMP_NUM_THREADS=1 CLIS_JUDGE_CACHE=off python benchmarks/bench_judges.py [--candidates 24] [--objects 3]
    python benchmarks/bench_judges.py --served [--latency-ms 20]

Builds tiny random models in a temporary folder (:mod:`clis.testing`: a 32-wide CLIP, a
32-wide LLaVA and a 32-wide Llama), writes ``--candidates`` synthetic 128x128 PNG images with
``--objects`` boxed objects each, and scores them through :class:`clis.scorer.Scorer` with
each judge (``detector="none"``, no CLIS-L, the answer cache off):

* ``clip``: the tiny CLIP;
* ``vqa``: the tiny VLM in-process, P("Yes") per question;
* ``acp``: the tiny VLM describes, the tiny causal LM rates in guided mode.

The models are tiny and random: images/s measures the pipeline (decoding, crops, prompts,
batching, bookkeeping), not what a real VLM costs. Each row is timed on the wall clock after a
warm-up of one candidate on the same scorer. The request counts are measured, by counting the
requests that reach the VLM client and the rater (their methods wrapped on the instance),
checked against ``judge.stats()``, and printed next to the expected formula: ``vqa`` asks
``1 + 2K`` VLM questions per candidate with a caption (the whole image, then per object the
box in context and the crop); ``acp`` asks the same of the VLM and rates each of the ``1 + 2K``
descriptions once; ``clip`` asks none.

``--served`` adds the same for ``vqa`` and ``acp`` against a fake OpenAI-compatible server in
this process on 127.0.0.1 (VLM and rater on one server; the rater then answers in json mode),
which replies with a canned answer after ``--latency-ms``, at concurrency 1, 4 and 16. The
server counts the requests it holds at once ("max in flight"): images/s should grow with the
concurrency up to about ``concurrency * 1000 / latency_ms / requests per candidate`` (``acp``
describes a chunk of candidates, then rates it, so its requests come in two rounds). Client
and server share the interpreter (and its GIL), so the figures are a lower bound on the client:
at high concurrency the rate is bounded by that shared CPU time (compare the 0 ms rows of
``benchmarks/bench_vlm_client.py``, or pass ``--latency-ms 0``), not by requests in flight.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from benchmarks.fake_chat_server import FakeChatServer, start_server
from clis.layout import Layout
from clis.scorer import Scorer, ScoreConfig

CONCURRENCY = (1, 4, 16)

# -- data ---------------------------------------------------------------------------------------


def synthetic_candidates(folder: Path, n: int, k: int, size: int = 128, seed: int = 0) -> list[tuple[Path, Layout]]:
    """``n`` PNG files of ``size`` x ``size`` noise with ``k`` coloured rectangles, one layout each
    (the data of ``bench_image_score.py``)."""
    from benchmarks.bench_image_score import synthetic_dataset

    return [(c.image, c.layout) for c in synthetic_dataset(folder, n, k, size, per_layout=1, seed=seed)]


# -- counting -------------------------------------------------------------------------------------


class Counts:
    """Requests that reached the VLM client (``vlm``) and ratings the rater was asked (``rater``)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.vlm = 0
        self.rater = 0

    def add(self, what: str, n: int) -> None:
        with self.lock:
            setattr(self, what, getattr(self, what) + n)

    def reset(self) -> None:
        self.vlm = self.rater = 0


def _counted(method: Callable, counts: Counts, what: str, size: Callable[..., int]) -> Callable:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        counts.add(what, size(*args, **kwargs))
        return method(*args, **kwargs)

    return wrapper


def instrument(scorer: Scorer) -> Counts:
    """Wrap, on the instances, the methods through which the judge asks its models."""
    counts = Counts()
    judge = scorer.image_scorer
    vlm = getattr(judge, "vlm", None)
    if vlm is not None:
        inner = vlm.inner  # behind the CachedVLM: what is really asked of the model or server
        inner.generate = _counted(inner.generate, counts, "vlm", lambda requests, *a, **k: len(requests))
        inner.yes_probability = _counted(inner.yes_probability, counts, "vlm", lambda requests, *a, **k: len(requests))
    rater = getattr(judge, "rater", None)
    if rater is not None:
        rater._one = _counted(rater._one, counts, "rater", lambda *a, **k: 1)  # one rating asked (not cached)
    return counts


def judge_stats(scorer: Scorer) -> dict[str, int]:
    stats = getattr(scorer.image_scorer, "stats", None)
    return dict(stats()) if stats is not None else {}


# -- measuring --------------------------------------------------------------------------------------


def expected(judge: str, k: int) -> tuple[int, int]:
    """(VLM requests, rater requests) per candidate with a caption and ``k`` objects."""
    questions = 1 + 2 * k
    return {"clip": (0, 0), "vqa": (questions, 0), "acp": (questions, questions)}[judge]


def measure(config: ScoreConfig, pairs: list, server: Optional[FakeChatServer] = None) -> dict[str, Any]:
    """Score ``pairs`` once after a one-candidate warm-up; wall clock, counts and judge stats."""
    loading = time.perf_counter()
    scorer = Scorer(config)
    load_s = time.perf_counter() - loading
    try:
        counts = instrument(scorer)
        list(scorer.score_pairs(pairs[:1]))  # warm-up: first-call allocations, threads, sockets
        counts.reset()
        before = judge_stats(scorer)
        if server is not None:
            server.reset()
        started = time.perf_counter()
        records = list(scorer.score_pairs(pairs))
        seconds = time.perf_counter() - started
        after = judge_stats(scorer)
    finally:
        scorer.close()
    delta = {key: after[key] - before.get(key, 0) for key in after}
    return {
        "seconds": seconds, "load_s": load_s, "images_per_s": len(pairs) / seconds, "counts": counts,
        "errors": sum(r["error"] is not None for r in records), "stats": delta,
        "stats_agree": delta.get("vlm_asked", 0) == counts.vlm and delta.get("rater_asked", 0) == counts.rater,
        "max_in_flight": None if server is None else server.max_in_flight,
        "kinds": None if server is None else dict(server.kinds),
    }


def _per(n: int, candidates: int) -> str:
    return f"{n / candidates:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=24, help="candidate images (default 24)")
    parser.add_argument("--objects", type=int, default=3, help="objects per layout, K (default 3)")
    parser.add_argument("--size", type=int, default=128, help="side of the synthetic images (default 128)")
    parser.add_argument("--judges", default="clip,vqa,acp", help="in-process judges to run (default clip,vqa,acp)")
    parser.add_argument("--max-new-tokens", type=int, default=96,
                        help="longest description the VLM writes (acp; default 96, the judge's default)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--served", action="store_true", help="also vqa and acp against a fake server")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="the fake server's latency (default 20)")
    parser.add_argument("--json", action="store_true", help="also print every row as one JSON line")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import transformers

    transformers.utils.logging.disable_progress_bar()  # "Writing model shards" per tiny model
    transformers.utils.logging.set_verbosity_error()  # the tiny rater's 128-token limit: its prompts are longer

    root = Path(tempfile.mkdtemp(prefix="clis-bench-judges-"))
    try:
        run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(args: argparse.Namespace, root: Path) -> None:
    from clis.testing import build_tiny_causal_lm, build_tiny_hf_clip, build_tiny_llava

    n, k = args.candidates, args.objects
    built = time.perf_counter()
    models = {"hf_clip": build_tiny_hf_clip(root / "models"), "causal_lm": build_tiny_causal_lm(root / "models"),
              "vlm": build_tiny_llava(root / "models")}
    build_s = time.perf_counter() - built
    (root / "images").mkdir()
    pairs = synthetic_candidates(root / "images", n, k, args.size)
    print(f"{n} candidates, {args.size}x{args.size} PNG, K={k} objects each, detector none, no CLIS-L, answer cache "
          f"off; tiny random models built in {build_s:.1f} s under {root} (removed at exit)")
    print("tiny models: images/s measures the pipeline, not what a real VLM costs")
    print("requests per candidate: measured (counted at the VLM client / rater) vs expected (formula)\n")

    base = dict(image_model=models["hf_clip"], detector="none", layout_score=False)
    common = {"cache": "off", "max_new_tokens": args.max_new_tokens}
    judges = {
        "clip": {"name": "clip"},
        "vqa": {"name": "vqa", "vlm": models["vlm"], **common},
        "acp": {"name": "acp", "vlm": models["vlm"], "rater": models["causal_lm"], "rater_mode": "guided", **common},
    }
    rows = []
    header = ("judge", "images/s", "score s", "load s", "VLM/cand", "expected", "rater/cand", "expected", "stats()",
              "errors")
    print(" ".join(f"{h:>10}" for h in header))
    for name in [j.strip() for j in args.judges.split(",") if j.strip()]:
        result = measure(ScoreConfig(**base, judge=judges[name]), pairs)
        vlm_expected, rater_expected = expected(name, k)
        counts = result["counts"]
        print(f"{name:>10} {result['images_per_s']:>10.2f} {result['seconds']:>10.2f} {result['load_s']:>10.2f} "
              f"{_per(counts.vlm, n):>10} {vlm_expected:>10} {_per(counts.rater, n):>10} {rater_expected:>10} "
              f"{'agrees' if result['stats_agree'] else 'DIFFERS':>10} {result['errors']:>10}")
        rows.append({"mode": "in-process", "judge": name, **{key: v for key, v in result.items() if key != "counts"},
                     "vlm_requests": counts.vlm, "rater_requests": counts.rater})

    if args.served:
        print(f"\nserved: fake OpenAI-compatible server on 127.0.0.1 in this process, {args.latency_ms:g} ms per "
              "request; acp's rater on the same server (json mode)")
        header = ("judge", "concurrency", "images/s", "ideal", "score s", "in flight", "VLM/cand", "rater/cand",
                  "expected", "HTTP/cand", "errors")
        print(" ".join(f"{h:>11}" for h in header))
        server = start_server(args.latency_ms / 1000)
        try:
            for name in ("vqa", "acp"):
                vlm_expected, rater_expected = expected(name, k)
                for concurrency in CONCURRENCY:
                    judge = {"name": name, "vlm": server.url, "cache": "off", "concurrency": concurrency,
                             "retries": 0}
                    if name == "acp":
                        judge.update(rater=server.url, rater_mode="json")
                    result = measure(ScoreConfig(**base, judge=judge), pairs, server)
                    counts = result["counts"]
                    per_candidate = vlm_expected + rater_expected
                    ideal = concurrency * 1000 / args.latency_ms / per_candidate if args.latency_ms else float("inf")
                    http = sum(result["kinds"].values())
                    print(f"{name:>11} {concurrency:>11} {result['images_per_s']:>11.2f} {ideal:>11.2f} "
                          f"{result['seconds']:>11.2f} {result['max_in_flight']:>11} {_per(counts.vlm, n):>11} "
                          f"{_per(counts.rater, n):>11} {f'{vlm_expected}+{rater_expected}':>11} "
                          f"{_per(http, n):>11} {result['errors']:>11}")
                    rows.append({"mode": "served", "judge": name, "concurrency": concurrency, "ideal": ideal,
                                 **{key: v for key, v in result.items() if key != "counts"},
                                 "vlm_requests": counts.vlm, "rater_requests": counts.rater})
        finally:
            server.shutdown()
            server.server_close()

    if args.json:
        for row in rows:
            print(json.dumps(row, default=str))


if __name__ == "__main__":
    main()
