"""clis pick: selection rules, COCO writer with score fields, SAM masks, CLI."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from pycocotools.coco import COCO

from clis.errors import InputError
from clis.formats import save_layouts
from clis.layout import Layout
from clis.pick import PickConfig, select, surviving_relations, write_dataset
from pipeline_helpers import assert_mask_in_box, run_cli, spy_on_sam_prompts

LAYOUTS = [
    Layout.model_validate(d)
    for d in [
        {"id": "tea", "caption": "a cup on a table", "objects": [
            {"id": "cup-1", "label": "cup", "bbox": [0.25, 0.5, 0.5, 0.25]},
            {"id": "table-1", "label": "table", "bbox": [0.0, 0.75, 1.0, 0.25]}],
         "relations": [{"subject": ["cup-1"], "relation": "on", "object": ["table-1"]}]},
        {"id": "pets", "caption": "a cat and a dog", "objects": [
            {"id": "cat-1", "label": "cat", "bbox": [0.0, 0.0, 0.5, 0.5]},
            {"id": "dog-1", "label": "dog", "bbox": [0.5, 0.5, 0.5, 0.5]}]},
        {"id": "odd", "caption": "a lamp on a cat", "objects": [
            {"id": "lamp-1", "label": "lamp", "bbox": [0.1, 0.1, 0.2, 0.2]}]},
    ]
]  # fmt: skip


def rec(layout_id, image, clis, instances, clis_l=70.0, error=None):
    return {
        "layout_id": layout_id, "image": image, "clis": clis, "clis_i": clis, "clis_l": clis_l, "global": 30.0,
        "instances": [{"object_id": o, "score": s, "region": 25.0, "grounding": 80.0, "detection": None} for o, s in instances],
        "error": error,
    }  # fmt: skip


RECORDS = [
    rec("tea", "tea/0.png", 70.0, [("cup-1", 80.0), ("table-1", 59.9)]),
    rec("tea", "tea/1.png", 75.0, [("cup-1", 60.0), ("table-1", 61.0)]),  # best; 60.0 == threshold passes
    rec("tea", "tea/2.png", 65.0, [("cup-1", 99.0), ("table-1", 99.0)]),
    rec("pets", "pets/0.png", 80.0, [("cat-1", 10.0), ("dog-1", 20.0)]),  # best, but nothing survives
    rec("pets", "pets/1.png", None, [], error="cannot open image"),
    rec("odd", "odd/0.png", 90.0, [("lamp-1", 95.0)], clis_l=49.0),  # implausible layout
]


def test_selection_rules_top1():
    selection = select(RECORDS, LAYOUTS, PickConfig(top=1, min_instance=60, min_layout=50))
    assert [(k.image, [o.id for o in k.objects], k.rank) for k in selection.kept] == [("tea/1.png", ["cup-1", "table-1"], 1)]
    assert [(d["image"], d["reason"]) for d in selection.dropped_images] == [
        ("tea/0.png", "not in the top 1"),
        ("tea/2.png", "not in the top 1"),
        ("pets/0.png", "no instance at or above --min-instance"),
        ("pets/1.png", "scoring failed"),
        ("odd/0.png", "layout below --min-layout"),
    ]
    assert [(d["object_id"], d["score"]) for d in selection.dropped_instances] == [("cat-1", 10.0), ("dog-1", 20.0)]
    summary = selection.summary(PickConfig())
    assert (summary["images_kept"], summary["images_dropped"], summary["instances_kept"]) == (1, 5, 2)
    assert summary["layouts_without_image"] == ["odd", "pets"]


def test_selection_top2_drops_weak_instances_and_ranks_by_clis_i():
    records = [dict(r) for r in RECORDS]
    records[0]["clis_i"] = 99.0  # ranked first by clis_i, third by clis
    selection = select(records, LAYOUTS, PickConfig(top=2, rank_by="clis_i"))
    assert [(k.image, [o.id for o in k.objects]) for k in selection.kept] == [
        ("tea/0.png", ["cup-1"]),
        ("tea/1.png", ["cup-1", "table-1"]),
    ]
    assert ("tea", "tea/0.png", "table-1") in {(d["layout_id"], d["image"], d["object_id"]) for d in selection.dropped_instances}
    # Without CLIS-L a layout is not filtered by --min-layout.
    no_l = [rec("odd", "odd/0.png", 90.0, [("lamp-1", 95.0)], clis_l=None)]
    assert len(select(no_l, LAYOUTS, PickConfig()).kept) == 1


def test_global_only_records_keep_every_object_and_rank_by_clis():
    # What `--weight instances=0 --detector none` writes: instances with null scores.
    records = [rec("tea", "tea/0.png", 40.0, [("cup-1", None), ("table-1", None)]),
               rec("tea", "tea/1.png", 55.0, [("cup-1", None), ("table-1", None)]),
               rec("pets", "pets/0.png", 50.0, [("cat-1", 10.0), ("dog-1", None)])]  # one score: filtered as usual
    selection = select(records, LAYOUTS, PickConfig(top=1, min_instance=60))
    assert [(k.image, [o.id for o in k.objects]) for k in selection.kept] == [("tea/1.png", ["cup-1", "table-1"])]
    assert [(d["image"], d["reason"]) for d in selection.dropped_images] == [
        ("tea/0.png", "not in the top 1"), ("pets/0.png", "no instance at or above --min-instance")]


def test_bad_settings_are_input_errors():
    with pytest.raises(InputError, match="--top"):
        PickConfig(top=0)
    with pytest.raises(InputError, match="--rank-by"):
        PickConfig(rank_by="fid")
    for option in ("min_instance", "min_layout"):
        for value in (float("nan"), -0.5, 100.5):
            with pytest.raises(InputError, match=f"--{option.replace('_', '-')} must be a score in 0..100"):
                PickConfig(**{option: value})
        PickConfig(**{option: 0.0}), PickConfig(**{option: 100.0})  # the ends are allowed


def test_cli_pick_rejects_nan_thresholds_in_one_line(tmp_path, capsys):
    candidates = _candidates(tmp_path / "cand")
    layouts = save_layouts(LAYOUTS, tmp_path / "layouts.json")
    scores = tmp_path / "scores.jsonl"
    scores.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    for option in ("--min-instance", "--min-layout"):
        code, output = run_cli(
            ["pick", str(candidates), str(layouts), "--scores", str(scores), "--out", str(tmp_path / "ds"), option, "nan"],
            capsys,
        )
        assert code == 2 and f"{option} must be a score in 0..100, got nan" in output and "Traceback" not in output
        assert not (tmp_path / "ds" / "annotations.json").exists()


def test_relations_of_dropped_objects_are_dropped():
    layout = Layout.model_validate({"id": "g", "caption": "two cats on a sofa by a lamp", "objects": [
        {"id": i, "label": i[:-2], "bbox": [0.1, 0.1, 0.2, 0.2]} for i in ("cat-1", "cat-2", "sofa-1", "lamp-1")],
        "relations": [{"subject": ["cat-1", "cat-2"], "relation": "on", "object": ["sofa-1"]},
                      {"subject": ["sofa-1"], "relation": "next to", "object": ["lamp-1"]}]})  # fmt: skip
    kept = [o for o in layout.objects if o.id in ("cat-2", "sofa-1")]
    # cat-1 leaves the group; the lamp's relation loses its object and goes.
    assert [r.model_dump(include={"subject", "relation", "object"}) for r in surviving_relations(layout, kept)] == [
        {"subject": ["cat-2"], "relation": "on", "object": ["sofa-1"]}
    ]


def _candidates(root, size=(64, 48)):
    for record in RECORDS:
        path = root / record["image"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (200, 100, 50)).save(path)
    return root


def test_coco_output_has_pixel_boxes_and_score_fields(tmp_path):
    candidates = _candidates(tmp_path / "cand")
    selection = select(RECORDS, LAYOUTS, PickConfig(top=2))
    write_dataset(selection, tmp_path / "ds", candidates)
    coco = COCO(str(tmp_path / "ds" / "annotations.json"))
    images = coco.loadImgs(coco.getImgIds())
    assert sorted(im["file_name"] for im in images) == ["tea_0.png", "tea_1.png"]
    for image in images:
        assert (tmp_path / "ds" / "images" / image["file_name"]).is_file()
        assert (image["width"], image["height"]) == (64, 48)
        assert image["clis_layout_id"] == "tea"
    best = next(im for im in images if im["file_name"] == "tea_1.png")
    assert (best["clis"], best["clis_rank"]) == (75.0, 1)
    anns = {a["clis_object_id"]: a for a in coco.loadAnns(coco.getAnnIds(imgIds=[best["id"]]))}
    # cup-1 [0.25, 0.5, 0.5, 0.25] on 64 x 48 pixels
    assert anns["cup-1"]["bbox"] == pytest.approx([16.0, 24.0, 32.0, 12.0])
    assert anns["cup-1"]["clis_score"] == 60.0 and anns["table-1"]["clis_score"] == 61.0
    assert coco.loadCats(anns["cup-1"]["category_id"])[0]["name"] == "cup"
    second = next(im for im in images if im["file_name"] == "tea_0.png")
    assert [a["clis_object_id"] for a in coco.loadAnns(coco.getAnnIds(imgIds=[second["id"]]))] == ["cup-1"]
    # The table was dropped from tea_0.png, so "cup on table" must not be stored with it.
    assert best["clis_relations"] == [{"subject": ["cup-1"], "relation": "on", "object": ["table-1"]}]
    assert second["clis_relations"] == []


def test_cli_pick_with_scores_and_sam_masks(tiny_models, tmp_path, capsys, monkeypatch):
    candidates = _candidates(tmp_path / "cand")
    layouts = save_layouts(LAYOUTS, tmp_path / "layouts.json")
    scores = tmp_path / "scores.jsonl"
    scores.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    out = tmp_path / "ds"
    prompts = spy_on_sam_prompts(monkeypatch)
    code, output = run_cli(
        ["pick", str(candidates), str(layouts), "--scores", str(scores), "--out", str(out),
         "--masks", "sam", "--sam-model", tiny_models["sam"]], capsys,
    )  # fmt: skip
    assert code == 0, output
    assert "not in the top 1" in output and "layout below --min-layout" in output
    # The one kept image, tea/1.png (64 x 48), prompts SAM with its two boxes as pixel xyxy:
    # cup-1 [0.25, 0.5, 0.5, 0.25] -> x 16..48, y 24..36; table-1 [0, 0.75, 1, 0.25] -> x 0..64, y 36..48.
    assert prompts == [[[[16.0, 24.0, 48.0, 36.0], [0.0, 36.0, 64.0, 48.0]]]]
    coco = COCO(str(out / "annotations.json"))
    for ann in coco.loadAnns(coco.getAnnIds()):
        mask = coco.annToMask(ann)
        assert mask.shape == (48, 64) and ann["area"] == float(mask.sum())
        assert_mask_in_box(mask, ann["bbox"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images_dropped_by_reason"] == {
        "not in the top 1": 2, "no instance at or above --min-instance": 1,
        "scoring failed": 1, "layout below --min-layout": 1,
    }  # fmt: skip
    assert summary["masks"]["spec"] == tiny_models["sam"]


def test_cli_pick_warns_when_the_dataset_is_empty_and_says_which_threshold(tmp_path, capsys):
    candidates = _candidates(tmp_path / "cand")
    layouts = save_layouts(LAYOUTS, tmp_path / "layouts.json")
    scores = tmp_path / "scores.jsonl"
    scores.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    # --min-layout 75 drops every layout (CLIS-L 70, 70, 49; pets/1 failed): exit 0, with a warning.
    code, output = run_cli(["pick", str(candidates), str(layouts), "--scores", str(scores),
                            "--out", str(tmp_path / "ds"), "--min-layout", "75"], capsys)
    assert code == 0, output
    warning = next(line for line in output.splitlines() if line.startswith("warning: no image kept"))
    assert "3 of 3 layouts (5 of 6 candidates) dropped by --min-layout 75 (CLIS-L below 75)" in warning
    assert "1 of 6 candidates failed scoring" in warning
    # --min-instance 100: every top-ranked candidate loses all its instances.
    code, output = run_cli(["pick", str(candidates), str(layouts), "--scores", str(scores),
                            "--out", str(tmp_path / "ds2"), "--min-instance", "100", "--min-layout", "0"], capsys)
    assert code == 0, output
    assert "warning: no image kept" in output and "dropped by --min-instance 100" in output
    assert "instances of the top-ranked candidates below --min-instance 100" in output
    # A pick that keeps something says nothing of the kind.
    code, output = run_cli(["pick", str(candidates), str(layouts), "--scores", str(scores),
                            "--out", str(tmp_path / "ds3")], capsys)
    assert code == 0 and "no image kept" not in output


def _pick_scoring_itself(tiny_models, tmp_path, capsys, *options: str):
    """``clis pick`` on fresh candidates with no --scores (tiny CLIP, no detector, no CLIS-L)."""
    candidates = _candidates(tmp_path / "cand")
    layouts = save_layouts(LAYOUTS, tmp_path / "layouts.json")
    out = tmp_path / "ds"
    code, output = run_cli(
        ["pick", str(candidates), str(layouts), "--out", str(out), "--image-model", tiny_models["hf_clip"],
         "--detector", "none", "--no-layout-score", *options], capsys,
    )  # fmt: skip
    return code, output, out


def test_cli_pick_loads_sam_before_scoring(tiny_models, tmp_path, capsys):
    code, output, out = _pick_scoring_itself(
        tiny_models, tmp_path, capsys, "--masks", "sam", "--sam-model", str(tmp_path / "no-sam")
    )
    assert code == 2 and "no-sam" in output and "Traceback" not in output
    assert not (out / "scores.jsonl").exists()  # failed before scoring a single candidate


def test_missing_default_sam_names_the_sam_model_option(tiny_models, tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    from clis.models import DEFAULT_SAM

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    code, output, out = _pick_scoring_itself(tiny_models, tmp_path, capsys, "--masks", "sam")
    assert code == 2 and "Traceback" not in output
    assert f"--sam-model {DEFAULT_SAM}" in output and "--sam-model SPEC" in output
    assert f"clis models fetch {DEFAULT_SAM}" in output


def test_cli_pick_scores_candidates_itself(tiny_models, tmp_path, capsys):
    code, output, out = _pick_scoring_itself(tiny_models, tmp_path, capsys, "--min-instance", "0", "--min-layout", "0")
    assert code == 0, output
    scored = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert len(scored) == len(RECORDS)
    # Threshold 0 keeps every instance of each layout's best candidate: one image per layout.
    coco = COCO(str(out / "annotations.json"))
    assert sorted(im["clis_layout_id"] for im in coco.loadImgs(coco.getImgIds())) == ["odd", "pets", "tea"]


def test_cli_pick_bad_scores_line_is_one_line_error(tmp_path, capsys):
    candidates = _candidates(tmp_path / "cand")
    layouts = save_layouts(LAYOUTS, tmp_path / "layouts.json")
    scores = tmp_path / "scores.jsonl"
    scores.write_text(json.dumps(RECORDS[0]) + "\n{broken\n")
    code, output = run_cli(["pick", str(candidates), str(layouts), "--scores", str(scores), "--out", str(tmp_path / "ds")], capsys)
    assert code == 2 and "scores.jsonl: line 2" in output and "Traceback" not in output
    scores.write_text(json.dumps({"image": "x.png"}) + "\n")
    code, output = run_cli(["pick", str(candidates), str(layouts), "--scores", str(scores), "--out", str(tmp_path / "ds")], capsys)
    assert code == 2 and "line 1: field 'layout_id'" in output


def test_cli_pick_warns_like_score_and_marks_demo_only_datasets(tiny_models, tmp_path, capsys):
    long_caption = "a small red cup standing on a wooden kitchen table " * 10  # about 100 tokens, CLIP reads 77
    layouts = save_layouts([LAYOUTS[0].model_copy(update={"caption": long_caption}), LAYOUTS[1]], tmp_path / "layouts.json")
    candidates = tmp_path / "cand"
    code, output = run_cli(["generate", str(layouts), "-g", "shapes", "--n", "2", "--out", str(candidates)], capsys)
    assert code == 0, output
    code, output = run_cli(
        ["pick", str(candidates), str(layouts), "--out", str(tmp_path / "ds"), "--image-model", tiny_models["hf_clip"],
         "--detector", "none", "--no-layout-score"], capsys,
    )  # fmt: skip
    assert code == 0, output
    warnings = [line for line in output.splitlines() if line.startswith("warning:")]
    # Random tiny models keep nothing at the default thresholds: that is said first.
    empty, *warnings = warnings
    assert empty.startswith("warning: no image kept") and "--min-instance 60" in empty
    assert len(warnings) == 2 and "'shapes' generator, which is demo_only" in warnings[0]
    assert warnings[1].startswith("warning: 1 caption and 0 object phrases are longer than the CLIP text context")
    generation = json.loads((tmp_path / "ds" / "summary.json").read_text())["generation"]
    assert generation["generator"] == "shapes" and generation["demo_only"] is True
    # Picking from those scores again (no scoring now) marks the new dataset the same way.
    code, output = run_cli(
        ["pick", str(candidates), str(layouts), "--scores", str(tmp_path / "ds" / "scores.jsonl"),
         "--out", str(tmp_path / "ds2")], capsys,
    )  # fmt: skip
    assert code == 0, output
    assert [line for line in output.splitlines() if line.startswith("warning:")] == [empty, warnings[0]]
    assert json.loads((tmp_path / "ds2" / "summary.json").read_text())["generation"]["demo_only"] is True
