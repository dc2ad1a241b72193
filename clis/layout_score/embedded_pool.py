"""The pool shipped with clis, ``embedded:nsr1k``: real COCO layouts from NSR-1K.

A fresh install has no pool of its own users' data, so CLIS-L ships one: the scenes and
relation examples of NSR-1K (LayoutGPT, MIT licence; its boxes and captions come from the
MS-COCO annotations, CC BY 4.0), built by :func:`build_nsr_pool` from the published files
``counting.val.json``, ``spatial.train.json`` and ``spatial.val.json``.

The ``"sub-type": "real"`` records of ``counting.val.json`` are NSR-1K's evaluation set, on
which CLIS-L is validated (``clis bench layouts``). They are left out, and so is every other
record of the same COCO images (``image_id``), whose boxes could be the same boxes.

The file's header carries this provenance and the licences. A pool of COCO train2017 (about
118k images, 860k objects) is larger by three orders of magnitude; build one with::

    clis pool build instances_train2017.json --out coco-train2017.jsonl.gz

Example:
    >>> resolve_pool("embedded:nsr1k").name
    'nsr1k.jsonl.gz'
    >>> str(resolve_pool("my-pool.jsonl"))
    'my-pool.jsonl'
"""

from __future__ import annotations

import json
from pathlib import Path

from clis.errors import InputError

EMBEDDED_POOLS = {"nsr1k": "nsr1k.jsonl.gz"}
DEFAULT_POOL = "embedded:nsr1k"
DATA_DIR = Path(__file__).parent / "data"
NSR_FILES = ("counting.val.json", "spatial.train.json", "spatial.val.json")
EVALUATION_SUBTYPE = "real"
PROVENANCE = (
    "NSR-1K (github.com/weixi-feng/LayoutGPT, dataset/NSR-1K, commit fc31954962553e5b65bf267a904a6930d50b1f5e): "
    "counting.val.json without its 'sub-type': 'real' records (the evaluation set), spatial.train.json and "
    "spatial.val.json, without any record of an evaluation image (same image_id)"
)
LICENCE = "NSR-1K: MIT (LayoutGPT); boxes and captions from the MS-COCO annotations: CC BY 4.0"


def resolve_pool(spec: str | Path) -> Path:
    """The file of a pool spec: ``embedded:NAME`` for a shipped pool, else the path itself."""
    text = str(spec)
    if not text.startswith("embedded:"):
        return Path(text)
    name = text[len("embedded:"):]
    if name not in EMBEDDED_POOLS:
        raise InputError(f"unknown embedded pool {text!r}; shipped: "
                         + ", ".join(f"embedded:{n}" for n in EMBEDDED_POOLS))
    return DATA_DIR / EMBEDDED_POOLS[name]


def evaluation_image_ids(nsr_dir: str | Path) -> set:
    """The COCO ``image_id`` of every evaluation record of ``counting.val.json``."""
    from clis.layout_score.pool_sources import read_json

    path = Path(nsr_dir) / "counting.val.json"
    records = read_json(path)
    if not isinstance(records, list):
        raise InputError(f"{path}: top level: expected a list of NSR-1K records")
    return {r.get("image_id") for r in records if isinstance(r, dict) and r.get("sub-type") == EVALUATION_SUBTYPE}


def build_nsr_pool(nsr_dir: str | Path, out: str | Path) -> dict:
    """Write the embedded pool from the NSR-1K folder ``nsr_dir``; return the pool header."""
    from clis.layout_score.pool import read_pool, write_pool
    from clis.layout_score.pool_sources import BuildReport, examples_from_file

    nsr_dir = Path(nsr_dir)
    held_out = evaluation_image_ids(nsr_dir)
    report = BuildReport()

    def allowed(layout) -> bool:
        extra = layout.model_extra or {}
        return extra.get("sub-type") != EVALUATION_SUBTYPE and extra.get("image_id") not in held_out

    items = [item for name in NSR_FILES
             for item in examples_from_file(nsr_dir / name, report, kind="layouts", keep=allowed)]
    write_pool(items, out, sources=list(NSR_FILES),
               header={"provenance": PROVENANCE, "licence": LICENCE,
                       "held_out": f"{len(held_out)} evaluation images of counting.val.json",
                       "skipped": sum(report.skipped.values())})
    return read_pool(out)[0]


if __name__ == "__main__":  # python -m clis.layout_score.embedded_pool NSR_DIR [OUT]
    import sys

    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m clis.layout_score.embedded_pool NSR_1K_DIR [OUT]")
    target = Path(sys.argv[2]) if len(sys.argv) == 3 else resolve_pool(DEFAULT_POOL)
    try:
        print(json.dumps(build_nsr_pool(sys.argv[1], target), indent=2))
    except InputError as exc:
        sys.exit(f"error: {exc}")
