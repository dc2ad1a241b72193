"""The whole Auto Cherry-Picker chain offline: plan -> generate -> score -> pick.

Plans come from the tiny local LM (which fails, and must fail gracefully) and from a local
OpenAI-compatible server; candidates from tiny GLIGEN (64x64, 2 steps), copy-paste and
shapes; scores from a tiny CLIP; masks from a tiny SAM. The expected survivors are computed
here from the scores file, independently of ``clis.pick``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from clis.formats import load_layouts
from generators.testing import build_tiny_gligen
from pipeline_helpers import ChatServer, careful_planner, run_cli

CONCEPTS = [["cat", "sofa", "lamp"], {"concepts": ["person", "horse"], "count": 2}]


def expected_selection(scores: list[dict], min_instance: float) -> tuple[dict, set]:
    """Best candidate per layout by clis (first wins ties), then instances >= min_instance."""
    best: dict[str, dict] = {}
    for record in scores:
        if record["error"] is None and (record["layout_id"] not in best or record["clis"] > best[record["layout_id"]]["clis"]):
            best[record["layout_id"]] = record
    kept, dropped = {}, set()
    for layout_id, record in best.items():
        survivors = {i["object_id"] for i in record["instances"] if i["score"] >= min_instance}
        dropped |= {(layout_id, i["object_id"]) for i in record["instances"] if i["score"] < min_instance}
        if survivors:
            kept[layout_id] = (record["image"], survivors)
    return kept, dropped


def _cutouts(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for label in ("cat", "sofa", "lamp", "person", "horse"):
        (root / label).mkdir(parents=True)
        pixels = np.concatenate([rng.integers(0, 256, (24, 24, 3)), np.full((24, 24, 1), 255)], axis=2)
        Image.fromarray(pixels.astype(np.uint8), "RGBA").save(root / label / "0.png")
    return root


@pytest.mark.slow
def test_plan_generate_score_pick(tiny_models, tmp_path_factory, tmp_path, capsys):
    concepts = tmp_path / "concepts.json"
    concepts.write_text(json.dumps(CONCEPTS))

    # 1. Plan. In json mode the tiny random LM cannot write JSON: error records and exit 1, no crash.
    code, output = run_cli(
        ["plan", str(concepts), "--out", str(tmp_path / "tiny.json"), "--llm", tiny_models["causal_lm"],
         "--mode", "json", "--retries", "0", "--max-new-tokens", "8"], capsys,
    )  # fmt: skip
    assert code == 1 and "Traceback" not in output
    with ChatServer(careful_planner) as server:
        code, output = run_cli(["plan", str(concepts), "--out", str(tmp_path / "layouts.json"), "--llm", server.url], capsys)
    assert code == 0, output
    layouts_path = tmp_path / "layouts.json"
    layouts = {layout.id: layout for layout in load_layouts(layouts_path)}
    assert len(layouts) == 3

    # 2. Generate with three adapters.
    gligen = build_tiny_gligen(tmp_path_factory.getbasetemp() / "tiny-generators")
    size = ["--width", "64", "--height", "64", "--n", "2"]
    runs = {
        "gligen": ["-g", "gligen", "--model", gligen, "--steps", "2", *size],
        "copy-paste": ["-g", "copy-paste", "--cutouts", str(_cutouts(tmp_path / "cutouts")), *size],
        "shapes": ["-g", "shapes", *size],
    }
    for name, options in runs.items():
        code, output = run_cli(["generate", str(layouts_path), "--out", str(tmp_path / name), *options], capsys)
        assert code == 0, output
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        assert manifest["summary"]["images"] == 6 and manifest["generator"] == name

    # 3. Score and 4. pick the GLIGEN candidates (with SAM masks).
    scores_path = tmp_path / "scores.jsonl"
    code, output = run_cli(
        ["score", str(tmp_path / "gligen"), str(layouts_path), "--out", str(scores_path),
         "--image-model", tiny_models["hf_clip"], "--detector", "none", "--no-layout-score", "--quiet"], capsys,
    )  # fmt: skip
    assert code == 0, output
    scores = [json.loads(line) for line in scores_path.read_text().splitlines()]
    assert len(scores) == 6 and all(r["error"] is None for r in scores)
    # A threshold inside the observed range, so that some instances survive and some do not.
    instance_scores = sorted(i["score"] for r in scores for i in r["instances"])
    threshold = float(np.median(instance_scores))
    assert instance_scores[0] < threshold <= instance_scores[-1]
    out = tmp_path / "dataset"
    code, output = run_cli(
        ["pick", str(tmp_path / "gligen"), str(layouts_path), "--scores", str(scores_path), "--out", str(out),
         "--min-instance", str(threshold), "--masks", "sam", "--sam-model", tiny_models["sam"]], capsys,
    )  # fmt: skip
    assert code == 0, output

    kept, dropped = expected_selection(scores, threshold)
    coco = COCO(str(out / "annotations.json"))
    images = coco.loadImgs(coco.getImgIds())
    assert {im["clis_layout_id"]: Path(im["clis_source"]).resolve() for im in images} == {
        layout_id: Path(image).resolve() for layout_id, (image, _) in kept.items()
    }
    for image in images:
        layout = layouts[image["clis_layout_id"]]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        assert {a["clis_object_id"] for a in anns} == kept[layout.id][1]
        for ann in anns:
            x, y, w, h = layout.get_object(ann["clis_object_id"]).bbox
            assert ann["bbox"] == pytest.approx([x * 64, y * 64, w * 64, h * 64])
            assert coco.loadCats(ann["category_id"])[0]["name"] == layout.get_object(ann["clis_object_id"]).label
            assert ann["clis_score"] >= threshold
            assert coco.annToMask(ann).shape == (64, 64)
        assert (out / "images" / image["file_name"]).read_bytes() == Path(image["clis_source"]).read_bytes()
    summary = json.loads((out / "summary.json").read_text())
    # Dropped instances are exactly those of the best candidates scoring under the threshold.
    assert {(d["layout_id"], d["object_id"]) for d in summary["dropped_instances"]} == dropped
    assert summary["images_kept"] == len(kept)
    assert summary["images_dropped_by_reason"].get("not in the top 1") == 3

    # The other two generators' candidates go through pick the same way (scores from CLIP).
    for name in ("copy-paste", "shapes"):
        code, output = run_cli(
            ["pick", str(tmp_path / name), str(layouts_path), "--out", str(tmp_path / f"ds-{name}"),
             "--image-model", tiny_models["hf_clip"], "--detector", "none", "--no-layout-score",
             "--min-instance", "0"], capsys,
        )  # fmt: skip
        assert code == 0, output
        assert len(COCO(str(tmp_path / f"ds-{name}" / "annotations.json")).getImgIds()) == 3
