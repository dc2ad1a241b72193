"""Peak memory of ``clis score`` against the number of candidates: it should stay flat.

For each size N, a fresh Python process runs ``clis score IMAGES LAYOUTS --out scores.jsonl
--csv scores.csv`` (the command itself, summary table included) with a tiny random CLIP
(``clis.testing.build_tiny_hf_clip``), ``--detector none`` and ``--no-layout-score``, and reports
its peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and wall time. The model
is a few MB, so what grows with N is the run's own bookkeeping: with O(batch) records the figures
stay flat (the issue asks for max/min within 20% from 2k to 50k candidates).

The candidates are hard links to a 32x32 PNG (``images/<layout>/<k>.png``, ``--per-layout`` per
layout; a new copy every 10,000 links, as file systems cap an inode's links). That is honest for
memory: clis opens, decodes and crops each path on its own (no cache by file), and the page cache
that the shared inode saves is not part of a process's RSS.
Layouts draw their captions and phrases from a few labels, so the text-embedding memo stays small:
it grows with distinct texts, not with candidates, and is not what this measures.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_memory.py --sizes 2000 20000 50000
    # the same figures for another checkout (e.g. ``git worktree add /tmp/before HEAD``):
    PYTHONPATH=/tmp/before python benchmarks/bench_memory.py --sizes 20000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LABELS = ["cup", "dog", "cat", "car", "tree", "lamp", "chair", "bird"]
LINKS_PER_FILE = 10_000


def make_candidates(root: Path, n: int, per_layout: int) -> tuple[Path, Path]:
    """``root/n<N>/images`` (N hard links to one PNG) and its layouts.json; reused when present."""
    from PIL import Image

    folder = root / f"n{n}"
    images, layouts_file = folder / "images", folder / "layouts.json"
    if layouts_file.is_file():
        return images, layouts_file
    folder.mkdir(parents=True, exist_ok=True)
    source, links = folder / "one.png", 0
    Image.new("RGB", (32, 32), (200, 40, 40)).save(source)
    layouts = []
    for index in range((n + per_layout - 1) // per_layout):
        layout_id = f"L{index:06d}"
        first, second = LABELS[index % len(LABELS)], LABELS[(index // len(LABELS)) % len(LABELS)]
        layouts.append({"id": layout_id, "caption": f"a {first} and a {second}", "objects": [
            {"id": "a", "label": first, "bbox": [0.1, 0.1, 0.4, 0.4]},
            {"id": "b", "label": second, "bbox": [0.5, 0.5, 0.4, 0.4]}]})
        (images / layout_id).mkdir(parents=True, exist_ok=True)
        for k in range(min(per_layout, n - index * per_layout)):
            if links == LINKS_PER_FILE:  # file systems cap an inode's links (ext4: 65,000)
                source, links = folder / f"one-{index}.png", 0
                Image.new("RGB", (32, 32), (200, 40, 40)).save(source)
            os.link(source, images / layout_id / f"{k}.png")
            links += 1
    layouts_file.write_text(json.dumps(layouts))
    return images, layouts_file


def child(args: argparse.Namespace) -> None:
    """One ``clis score`` run in this process; prints one JSON line of its figures."""
    import resource

    import clis
    from clis.cli import main

    out = Path(args.workdir) / f"n{args.child}" / "out"
    out.mkdir(exist_ok=True)
    images, layouts = Path(args.workdir) / f"n{args.child}" / "images", Path(args.workdir) / f"n{args.child}" / "layouts.json"
    argv = ["score", str(images), str(layouts), "--out", str(out / "scores.jsonl"), "--csv", str(out / "scores.csv"),
            "--image-model", args.clip, "--detector", "none", "--no-layout-score", "--overwrite",
            "--batch-size", str(args.batch_size)]
    start = time.perf_counter()
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    lines = sum(1 for _ in open(out / "scores.jsonl", "rb"))
    print(json.dumps({"candidates": args.child, "records": lines, "exit": code, "peak_rss_mb": peak_kib / 1024,
                      "seconds": seconds, "clis": str(Path(clis.__file__).parent)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000, 50000])
    parser.add_argument("--per-layout", type=int, default=4, help="candidates per layout (4 in the paper)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workdir", help="where candidates are made (kept, and reused by later runs)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--clip", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args)
        return
    from clis.testing import build_tiny_hf_clip

    root = Path(args.workdir or tempfile.mkdtemp(prefix="clis-bench-memory-"))
    root.mkdir(parents=True, exist_ok=True)
    clip = build_tiny_hf_clip(root / "models")
    rows = []
    for n in args.sizes:
        make_candidates(root, n, args.per_layout)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "CLIS_CACHE_DIR": str(root / "cache"), "CLIS_LAYOUT_CACHE": "off"}
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(n), "--workdir", str(root), "--clip", clip,
             "--batch-size", str(args.batch_size)],
            capture_output=True, text=True, env=env,
        )
        figures = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not figures:
            sys.exit(f"size {n}: the run failed (exit {done.returncode}): {done.stderr[-2000:]}")
        rows.append(json.loads(figures[-1]))
        row = rows[-1]
        if row["exit"] not in (0, None) or row["records"] != n:
            sys.exit(f"size {n}: clis score exited {row['exit']} with {row['records']} records")
    print(f"clis from {rows[0]['clis']}; {args.per_layout} candidates per layout, tiny CLIP, no detector, no CLIS-L")
    print(f"{'candidates':>10}  {'peak RSS MB':>11}  {'seconds':>8}  {'records/s':>9}")
    for row in rows:
        print(f"{row['candidates']:>10}  {row['peak_rss_mb']:>11.1f}  {row['seconds']:>8.1f}  "
              f"{row['candidates'] / row['seconds']:>9.1f}")
    peaks = [row["peak_rss_mb"] for row in rows]
    print(f"peak RSS max/min: {max(peaks) / min(peaks):.3f} (flat within 20% is <= 1.20)")
    if len(rows) > 1:
        # What the ratio hides behind the fixed cost of torch and the model: memory per candidate.
        small, large = rows[0], rows[-1]
        growth = (large["peak_rss_mb"] - small["peak_rss_mb"]) * 2**20 / (large["candidates"] - small["candidates"])
        print(f"growth: {growth:.0f} bytes per candidate from {small['candidates']} to {large['candidates']}")


if __name__ == "__main__":
    main()
