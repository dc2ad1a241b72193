"""Parquet score files against scores.jsonl: write and read speed, size, and memory while writing.

Makes ``--records`` synthetic records in the shape ``clis score`` writes (``--objects``
instances each, with detection terms and random scores), then times, each on its own:

* JSONL: ``jsonio.dumps`` per line, and reading back with ``json.loads``;
* Parquet: :class:`clis.scoretable.ParquetRecordWriter` (``--row-group`` rows per group) and
  :func:`clis.scoretable.iter_parquet_records`.

The records are made while writing (one at a time, never a list of them), so the peak RSS
the script prints after each ``--records`` size shows what the writer holds. Printed: records/s
of each step, the file sizes and that peak RSS (it only grows, so a flat figure across sizes
means memory does not grow with the run).

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/bench_scoretable.py
    python benchmarks/bench_scoretable.py --records 2000,20000,50000 --objects 8 --row-group 1024
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clis import jsonio  # noqa: E402
from clis.scoretable import ParquetRecordWriter, iter_parquet_records  # noqa: E402


def records(n: int, objects: int, seed: int = 0) -> Iterator[dict]:
    rnd = random.Random(seed)

    def score(top: float = 100.0) -> float:
        return round(rnd.uniform(0, top), 4)

    for k in range(n):
        layout = f"layout-{k // 4}"
        instances = [{
            "object_id": f"obj-{j}", "label": "cup", "phrase": "a red cup", "bbox": [0.1, 0.2, 0.3, 0.4],
            "region": score(40), "grounding": score(),
            "detection": {"found": True, "iou": score(1), "score": score(1), "count": 1, "expected_count": 1,
                          "count_match": True},
            "score": score(),
        } for j in range(objects)]  # fmt: skip
        yield {"layout_id": layout, "image": f"images/{layout}/{k % 4}.png", "clis": score(), "clis_i": score(),
               "clis_l": score(), "global": score(40), "instances": instances, "error": None,
               "layout_sha256": f"{rnd.getrandbits(256):064x}"}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def run(n: int, objects: int, row_group: int, folder: Path) -> dict:
    jsonl, parquet = folder / f"s{n}.jsonl", folder / f"s{n}.parquet"
    # making the records costs the same for both formats: timed alone, then taken off
    make = timed(lambda: sum(1 for _ in records(n, objects)))

    def write_jsonl() -> None:
        with jsonl.open("w", encoding="utf-8") as handle:
            for record in records(n, objects):
                handle.write(jsonio.dumps(record) + "\n")

    def write_parquet() -> None:
        with ParquetRecordWriter(parquet, row_group_size=row_group) as writer:
            for record in records(n, objects):
                writer.write(record)

    def read_jsonl() -> None:
        with jsonl.open(encoding="utf-8") as handle:
            assert sum(1 for line in handle if json.loads(line)) == n

    def read_parquet() -> None:
        assert sum(1 for _ in iter_parquet_records(parquet)) == n

    out = {"records": n, "make_s": make}
    for name, step in (("jsonl_write", write_jsonl), ("jsonl_read", read_jsonl)):
        out[name] = n / max(timed(step) - (make if "write" in name else 0.0), 1e-9)
    out["parquet_write"] = n / max(timed(write_parquet) - make, 1e-9)
    out["rss_after_write_mb"] = peak_rss_mb()
    out["parquet_read"] = n / max(timed(read_parquet), 1e-9)
    out["jsonl_mib"], out["parquet_mib"] = jsonl.stat().st_size / 2**20, parquet.stat().st_size / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", default="2000,20000,50000", help="comma-separated run sizes")
    parser.add_argument("--objects", type=int, default=4, help="instances per record")
    parser.add_argument("--row-group", type=int, default=4096, help="rows per Parquet row group")
    args = parser.parse_args()
    sizes = [int(s) for s in args.records.split(",")]
    print(f"records of {args.objects} instances, Parquet row groups of {args.row_group} rows")
    print(f"{'records':>8} {'jsonl w/s':>10} {'parquet w/s':>12} {'jsonl r/s':>10} {'parquet r/s':>12} "
          f"{'jsonl MiB':>10} {'parquet MiB':>12} {'peak RSS MB':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            r = run(n, args.objects, args.row_group, Path(tmp))
            print(f"{n:>8} {r['jsonl_write']:>10.0f} {r['parquet_write']:>12.0f} {r['jsonl_read']:>10.0f} "
                  f"{r['parquet_read']:>12.0f} {r['jsonl_mib']:>10.1f} {r['parquet_mib']:>12.1f} "
                  f"{r['rss_after_write_mb']:>12.0f}")
            for path in Path(tmp).iterdir():
                os.remove(path)  # one size's files at a time on disk


if __name__ == "__main__":
    main()
