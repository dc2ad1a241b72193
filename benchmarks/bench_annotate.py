"""How long the human-label tools take at a realistic labelling size (prints figures).

Builds a synthetic set of LAYOUTS layouts x N candidates x K objects (PNG candidates, a
scores.jsonl, and two annotators' labels in which "yes" grows more likely with the instance
score, and the second annotator flips 15% of the first one's answers), then times:

* ``clis annotate build`` (copying and hashing the images, writing the site),
* ``clis bench agreement`` and ``clis bench calibrate`` on both annotators' labels.

    python benchmarks/bench_annotate.py [--layouts 200] [--candidates 4] [--objects 4] [--bootstrap 1000]

The labels are synthetic: the figures say what the tools cost, not how well any metric agrees
with people.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

T = "2026-01-01T00:00:00Z"


def make_inputs(root: Path, n_layouts: int, n_candidates: int, n_objects: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    layouts, records = [], []
    cands = root / "cands"
    for i in range(n_layouts):
        lid = f"L{i:05d}"
        objects = [{"id": f"o{j}", "label": f"thing{j}", "bbox": [0.05 + 0.2 * j % 0.8, 0.1, 0.18, 0.3]}
                   for j in range(n_objects)]
        layouts.append({"id": lid, "caption": f"scene {i}", "objects": objects})
        clis_l = float(rng.uniform(20, 90))
        (cands / lid).mkdir(parents=True)
        for k in range(n_candidates):
            path = cands / lid / f"{k}.png"
            Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(path)
            scores = rng.uniform(20, 95, n_objects)
            records.append({"layout_id": lid, "image": str(path), "clis": float(scores.mean()),
                            "clis_i": float(scores.mean()), "clis_l": clis_l,
                            "global": float(rng.uniform(15, 35)), "error": None,
                            "instances": [{"object_id": f"o{j}", "score": float(s), "region": float(s + rng.normal(0, 15)),
                                           "grounding": float(s + rng.normal(0, 25)), "detection": None}
                                          for j, s in enumerate(scores)]})
    (root / "layouts.json").write_text(json.dumps(layouts))
    (root / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return {"layouts": layouts, "records": records}


def write_labels(root: Path, records: list[dict], site_id: str, seed: int = 1) -> list[Path]:
    rng = np.random.default_rng(seed)
    first = {}
    for r in records:
        for inst in r["instances"]:
            p_yes = 1 / (1 + np.exp(-(inst["score"] - 60) / 8))
            first[(r["layout_id"], r["image"], inst["object_id"])] = "yes" if rng.random() < p_yes else "no"
    paths = []
    for name, flip in (("alice", 0.0), ("bob", 0.15)):
        objects = [{"annotator": name, "layout_id": lid, "image": image, "object_id": oid,
                    "label": ({"yes": "no", "no": "yes"}[label] if rng.random() < flip else label), "time": T}
                   for (lid, image, oid), label in first.items()]
        best = {}
        for r in records:
            best.setdefault(r["layout_id"], r)
            if r["clis"] + rng.normal(0, 10) > best[r["layout_id"]]["clis"]:
                best[r["layout_id"]] = r
        layouts = [{"annotator": name, "layout_id": lid, "best": r["image"],
                    "plausible": "yes" if r["clis_l"] + rng.normal(0, 10) > 40 else "no", "time": T} for lid, r in best.items()]
        path = root / f"{name}.json"
        path.write_text(json.dumps({"format": "clis.labels/1", "site": {"id": site_id}, "annotators": [name],
                                    "exported": T, "objects": objects, "layouts": layouts}))
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layouts", type=int, default=200)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--objects", type=int, default=4)
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()

    from benchmarks.agreement import agreement
    from benchmarks.calibrate import calibrate
    from benchmarks.stats import BootstrapConfig
    from clis.annotate.site import build_site

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        data = make_inputs(root, args.layouts, args.candidates, args.objects)
        n_candidates = len(data["records"])
        n_objects = n_candidates * args.objects
        start = time.perf_counter()
        report = build_site(root / "cands", root / "layouts.json", root / "annot", scores=root / "scores.jsonl")
        built = time.perf_counter() - start
        labels = write_labels(root, data["records"], report.site["id"])
        config = BootstrapConfig(n_resamples=args.bootstrap)
        start = time.perf_counter()
        result = agreement(root / "scores.jsonl", labels, root / "agreement", bootstrap=config, plot=True)
        agreed = time.perf_counter() - start
        start = time.perf_counter()
        cal = calibrate(root / "scores.jsonl", labels, root / "calibrate", bootstrap=config, plot=True)
        calibrated = time.perf_counter() - start
        site_mb = sum(p.stat().st_size for p in (root / "annot").rglob("*") if p.is_file()) / 2**20

    print(f"{args.layouts} layouts x {args.candidates} candidates x {args.objects} objects "
          f"({n_candidates} candidates, {n_objects} objects, 2 annotators, bootstrap {args.bootstrap})")
    print(f"annotate build: {built:.2f} s ({n_candidates / built:.0f} candidates/s), site {site_mb:.1f} MB")
    print(f"bench agreement: {agreed:.2f} s for {2 * n_objects} object answers")
    print(f"bench calibrate: {calibrated:.2f} s")
    auc = next(r for r in result.rows if r.name == "instance_score").values["auc"]
    kappa = next(r for r in result.tables["inter_annotator"] if r["what"] == "objects (yes/no)"
                 and r["measure"] == "cohen_kappa")
    threshold = next(r for r in cal.rows if r.name == "min_instance").values
    print(f"(synthetic labels) instance-score AUC {auc.value:.3f} [{auc.ci_low:.3f}, {auc.ci_high:.3f}], "
          f"Cohen's kappa alice|bob {kappa['value']:.3f}, --min-instance {threshold['threshold'].value:.2f} "
          f"at precision {threshold['precision'].value:.3f}, recall {threshold['recall'].value:.3f}")


if __name__ == "__main__":
    main()
