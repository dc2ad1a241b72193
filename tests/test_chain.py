"""The whole Auto Cherry-Picker chain offline: plan -> generate -> score -> pick.

Plans come from the tiny local LM in guided mode and from a local OpenAI-compatible server,
and both feed generation; candidates from tiny GLIGEN (64x64, 2 steps), copy-paste and
shapes; scores from a tiny CLIP (CLIS-I) and the tiny LM (CLIS-L); masks from a tiny SAM. The
expected survivors are computed here from the scores file, independently of ``clis.pick``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from clis.formats import load_layouts, save_layouts
from generators.testing import build_tiny_gligen
from pipeline_helpers import ChatServer, assert_mask_in_box, careful_planner, run_cli, spy_on_sam_prompts

CONCEPTS = [["cat", "sofa", "lamp"], {"concepts": ["person", "horse"], "count": 2}]
# The tiny LM plans the same scenes under its own ids, so both plans fit in one layouts file.
LM_CONCEPTS = [
    {"concepts": ["cat", "sofa", "lamp"], "id": "lm-home"},
    {"concepts": ["person", "horse"], "count": 2, "id": "lm-farm"},
]


def expected_selection(scores: list[dict], min_instance: float, min_layout: float) -> tuple[dict, set, set]:
    """Layouts under min_layout go whole; of the rest, the best candidate by clis (first wins
    ties), then its instances >= min_instance. Returns (kept, dropped instances, dropped layouts)."""
    low = {r["layout_id"] for r in scores if r["clis_l"] < min_layout}
    best: dict[str, dict] = {}
    for record in scores:
        if record["layout_id"] in low or record["error"] is not None:
            continue
        if record["layout_id"] not in best or record["clis"] > best[record["layout_id"]]["clis"]:
            best[record["layout_id"]] = record
    kept, dropped = {}, set()
    for layout_id, record in best.items():
        survivors = {i["object_id"] for i in record["instances"] if i["score"] >= min_instance}
        dropped |= {(layout_id, i["object_id"]) for i in record["instances"] if i["score"] < min_instance}
        if survivors:
            kept[layout_id] = (record["image"], survivors)
    return kept, dropped, low


def _cutouts(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for label in ("cat", "sofa", "lamp", "person", "horse"):
        (root / label).mkdir(parents=True)
        pixels = np.concatenate([rng.integers(0, 256, (24, 24, 3)), np.full((24, 24, 1), 255)], axis=2)
        Image.fromarray(pixels.astype(np.uint8), "RGBA").save(root / label / "0.png")
    return root


def _plan(tmp_path: Path, tiny_models: dict, capsys) -> Path:
    """Plan with the tiny LM (guided) and with the local server; one layouts file of both."""
    (tmp_path / "lm-concepts.json").write_text(json.dumps(LM_CONCEPTS))
    code, output = run_cli(
        ["plan", str(tmp_path / "lm-concepts.json"), "--out", str(tmp_path / "lm.json"), "--llm", tiny_models["causal_lm"],
         "--mode", "guided", "--retries", "1"], capsys,
    )  # fmt: skip
    assert code == 0, output
    (tmp_path / "concepts.json").write_text(json.dumps(CONCEPTS))
    with ChatServer(careful_planner) as server:
        code, output = run_cli(
            ["plan", str(tmp_path / "concepts.json"), "--out", str(tmp_path / "server.json"), "--llm", server.url], capsys
        )
    assert code == 0, output
    lm, served = load_layouts(tmp_path / "lm.json"), load_layouts(tmp_path / "server.json")
    assert [layout.id for layout in lm] == ["lm-home-0", "lm-farm-0", "lm-farm-1"] and len(served) == 3
    assert [[o.label for o in layout.objects] for layout in lm] == [
        ["cat", "sofa", "lamp"], ["person", "horse"], ["person", "horse"]
    ]  # fmt: skip
    return save_layouts([*lm, *served], tmp_path / "layouts.json")


@pytest.mark.slow
def test_plan_generate_score_pick(tiny_models, tmp_path_factory, tmp_path, capsys, monkeypatch):
    # 1. Plan.
    layouts_path = _plan(tmp_path, tiny_models, capsys)
    layouts = {layout.id: layout for layout in load_layouts(layouts_path)}
    assert len(layouts) == 6

    # 2. Generate with three adapters, from both plans.
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
        assert manifest["summary"]["images"] == 12 and manifest["generator"] == name

    # 3. Score the GLIGEN candidates: CLIS-I from the tiny CLIP, CLIS-L from the tiny LM.
    scores_path = tmp_path / "scores.jsonl"
    (tmp_path / "score.json").write_text(json.dumps({"layout": {"llm": tiny_models["causal_lm"], "text_embedder": "none"}}))
    code, output = run_cli(
        ["score", str(tmp_path / "gligen"), str(layouts_path), "--out", str(scores_path), "--config", str(tmp_path / "score.json"),
         "--image-model", tiny_models["hf_clip"], "--detector", "none", "--quiet"], capsys,
    )  # fmt: skip
    assert code == 0, output
    scores = [json.loads(line) for line in scores_path.read_text().splitlines()]
    assert len(scores) == 12 and all(r["error"] is None for r in scores)
    # Thresholds inside the observed ranges, so that some instances and layouts survive and some do not.
    instance_scores = sorted(i["score"] for r in scores for i in r["instances"])
    min_instance = float(np.median(instance_scores))
    assert instance_scores[0] < min_instance <= instance_scores[-1]
    layout_scores = sorted({r["clis_l"] for r in scores})
    assert len(layout_scores) >= 2, layout_scores
    min_layout = (layout_scores[0] + layout_scores[1]) / 2  # drops the least plausible layout(s) only

    # 4. Pick, with SAM masks.
    out = tmp_path / "dataset"
    prompts = spy_on_sam_prompts(monkeypatch)
    code, output = run_cli(
        ["pick", str(tmp_path / "gligen"), str(layouts_path), "--scores", str(scores_path), "--out", str(out),
         "--min-instance", str(min_instance), "--min-layout", str(min_layout),
         "--masks", "sam", "--sam-model", tiny_models["sam"]], capsys,
    )  # fmt: skip
    assert code == 0, output

    kept, dropped, low = expected_selection(scores, min_instance, min_layout)
    assert low and kept  # the layout threshold really cut, and something is left
    coco = COCO(str(out / "annotations.json"))
    images = coco.loadImgs(coco.getImgIds())
    assert {im["clis_layout_id"]: Path(im["clis_source"]).resolve() for im in images} == {
        layout_id: Path(image).resolve() for layout_id, (image, _) in kept.items()
    }
    expected_prompts = []
    for image in images:
        layout = layouts[image["clis_layout_id"]]
        assert image["clis_l"] >= min_layout
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        assert {a["clis_object_id"] for a in anns} == kept[layout.id][1]
        # SAM is prompted with the surviving boxes, in layout order, as pixel xyxy.
        expected_prompts.append(
            [[x * 64, y * 64, (x + w) * 64, (y + h) * 64] for x, y, w, h in
             (o.bbox for o in layout.objects if o.id in kept[layout.id][1])]
        )  # fmt: skip
        for ann in anns:
            x, y, w, h = layout.get_object(ann["clis_object_id"]).bbox
            assert ann["bbox"] == pytest.approx([x * 64, y * 64, w * 64, h * 64])
            assert coco.loadCats(ann["category_id"])[0]["name"] == layout.get_object(ann["clis_object_id"]).label
            assert ann["clis_score"] >= min_instance
            mask = coco.annToMask(ann)
            assert mask.shape == (64, 64) and ann["area"] == float(mask.sum())
            assert_mask_in_box(mask, ann["bbox"])
        assert (out / "images" / image["file_name"]).read_bytes() == Path(image["clis_source"]).read_bytes()
    assert len(prompts) == len(expected_prompts)
    for got, want in zip(prompts, expected_prompts):
        assert got[0] == [pytest.approx(box) for box in want]
    summary = json.loads((out / "summary.json").read_text())
    # Dropped instances are exactly those of the best candidates scoring under the threshold;
    # dropped layouts exactly those whose CLIS-L is under --min-layout (both candidates each).
    assert {(d["layout_id"], d["object_id"]) for d in summary["dropped_instances"]} == dropped
    assert {d["layout_id"] for d in summary["dropped_images"] if d["reason"] == "layout below --min-layout"} == low
    assert summary["images_dropped_by_reason"]["layout below --min-layout"] == 2 * len(low)
    assert summary["images_kept"] == len(kept)
    assert summary["images_dropped_by_reason"].get("not in the top 1") == 6 - len(low)

    # The other two generators' candidates go through pick the same way (scores from CLIP).
    for name in ("copy-paste", "shapes"):
        code, output = run_cli(
            ["pick", str(tmp_path / name), str(layouts_path), "--out", str(tmp_path / f"ds-{name}"),
             "--image-model", tiny_models["hf_clip"], "--detector", "none", "--no-layout-score",
             "--min-instance", "0"], capsys,
        )  # fmt: skip
        assert code == 0, output
        assert len(COCO(str(tmp_path / f"ds-{name}" / "annotations.json")).getImgIds()) == 6
