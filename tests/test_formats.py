"""Layout files: format detection, round trips and every class of validation error."""

from __future__ import annotations

import json

import pytest
from pycocotools.coco import COCO

from clis.errors import LayoutFileError
from clis.formats import (
    boxes_close,
    layouts_from_coco,
    layouts_to_acp,
    layouts_to_coco,
    load_layouts,
    save_layouts,
    validate_file,
)
from clis.layout import Layout, label_from_object_name

TEA = {
    "id": "tea",
    "caption": "a red cup on a wooden table, a cat beside it",
    "width": 640,
    "height": 480,
    "objects": [
        {"id": "cup-1", "label": "cup", "attributes": ["red"], "bbox": [0.4, 0.3, 0.2, 0.2]},
        {"id": "table-1", "label": "table", "attributes": ["wooden"], "bbox": [0.1, 0.5, 0.8, 0.5]},
        {"id": "cat-1", "label": "cat", "description": "a sleepy ginger cat", "bbox": [0.0, 0.0, 0.3, 0.45]},
    ],
    "relations": [
        {"subject": ["cup-1"], "relation": "on", "object": ["table-1"]},
        {"subject": ["cat-1"], "relation": "next to", "object": ["table-1"]},
    ],
}
SOLO = {"id": "solo", "caption": "猫", "objects": [{"id": "猫-1", "label": "猫", "bbox": [0.25, 0.25, 0.5, 0.5]}]}


def write(tmp_path, data, name="layouts.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def assert_same_layouts(a: list[Layout], b: list[Layout]) -> None:
    assert [x.id for x in a] == [y.id for y in b]
    for x, y in zip(a, b):
        assert x.caption == y.caption
        assert [(o.id, o.label, o.attributes) for o in x.objects] == [(o.id, o.label, o.attributes) for o in y.objects]
        for ox, oy in zip(x.objects, y.objects):
            assert boxes_close(ox.bbox, oy.bbox), (ox.bbox, oy.bbox)
        assert [(r.subject, r.relation, r.object) for r in x.relations] == [
            (r.subject, r.relation, r.object) for r in y.relations
        ]


def test_canonical_file_loads_with_derived_fields(tmp_path):
    layouts = load_layouts(write(tmp_path, [TEA, SOLO]))
    assert [layout.id for layout in layouts] == ["tea", "solo"]
    cup = layouts[0].get_object("cup-1")
    assert cup.phrase == "red cup"
    assert layouts[0].get_object("cat-1").phrase == "a sleepy ginger cat"
    assert cup.pixel_box(640, 480) == pytest.approx((256, 144, 128, 96))
    assert layouts[1].objects[0].label == "猫"


def test_wrapped_canonical_file(tmp_path):
    assert [x.id for x in load_layouts(write(tmp_path, {"layouts": [TEA]}))] == ["tea"]


def test_canonical_coco_round_trip(tmp_path):
    layouts = load_layouts(write(tmp_path, [TEA, SOLO]))
    coco_path = save_layouts(layouts, tmp_path / "coco.json", format="coco")
    # An independent reader must accept the file, with pixel boxes of the image size.
    coco = COCO(str(coco_path))
    assert len(coco.getImgIds()) == 2
    tea_anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert tea_anns[0]["bbox"] == pytest.approx([0.4 * 640, 0.3 * 480, 0.2 * 640, 0.2 * 480])
    solo_ann = coco.loadAnns(coco.getAnnIds(imgIds=[2]))[0]
    assert solo_ann["bbox"] == pytest.approx([128, 128, 256, 256])  # default 512 x 512 canvas
    assert_same_layouts(layouts, load_layouts(coco_path))


def test_canonical_acp_round_trip(tmp_path):
    layouts = load_layouts(write(tmp_path, [TEA, SOLO]))
    acp_path = save_layouts(layouts, tmp_path / "acp.json", format="acp")
    back = load_layouts(acp_path)
    # ACP has no descriptions, so compare everything else.
    assert_same_layouts(layouts, back)
    # and COCO -> ACP -> canonical keeps it too
    coco = layouts_to_coco(back)
    assert_same_layouts(layouts, load_layouts(write(tmp_path, layouts_to_acp(layouts_from_coco(coco)), "acp2.json")))


def test_acp_scene_graph_reader(tmp_path):
    items = [
        {
            "caption": "a cat on a sofa next to a lamp",
            "layout": [
                {"object": "cat-1", "bbox": [0.3, 0.35, 0.3, 0.3]},
                {"object": "sofa-1", "bbox": [0.1, 0.4, 0.8, 0.55]},
                {"object": "floor lamp-1", "bbox": [0.85, 0.1, 0.1, 0.8]},
            ],
            "attributes": {"cat-1": ["black", "fluffy"], "sofa-1": "red, leather"},
            "relations": [{"subject": ["cat-1"], "relation": "on", "object": ["sofa-1"]}],
            "groups": [["cat-1", "sofa-1"]],
            "depth": {"cat-1": 0},
        },
        {"id": "second", "caption": "a dog", "layout": [{"object": "dog-2", "bbox": [0.1, 0.1, 0.2, 0.2]}], "mood": "x"},
    ]
    layouts = load_layouts(write(tmp_path, items))
    assert [x.id for x in layouts] == ["0", "second"]  # id is the index unless given
    first = layouts[0]
    assert [o.label for o in first.objects] == ["cat", "sofa", "floor lamp"]
    assert first.get_object("cat-1").attributes == ["black", "fluffy"]
    assert first.get_object("sofa-1").attributes == ["red", "leather"]
    # Unknown keys are kept, never fatal.
    assert first.model_extra["groups"] == [["cat-1", "sofa-1"]]
    assert layouts[1].model_extra["mood"] == "x"


def test_single_acp_item_is_accepted(tmp_path):
    item = {"caption": "a dog", "layout": [{"object": "dog-1", "bbox": [0.1, 0.1, 0.2, 0.2]}]}
    assert load_layouts(write(tmp_path, item))[0].objects[0].label == "dog"


def test_coco_reader_normalises_pixel_boxes(tmp_path):
    coco = {
        "images": [{"id": 7, "file_name": "kitchen_07.jpg", "width": 640, "height": 480}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [64, 48, 320, 240], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [0, 0, 64, 48], "iscrowd": 0},
            {"id": 3, "image_id": 7, "category_id": 3, "bbox": [0, 0, 640, 480], "iscrowd": 1},
        ],
        "categories": [{"id": 3, "name": "bowl"}],
    }
    (layout,) = load_layouts(write(tmp_path, coco))
    assert layout.id == "kitchen_07"
    assert layout.images == ["kitchen_07.jpg"]
    assert [o.id for o in layout.objects] == ["bowl-1", "bowl-2"]  # crowd region skipped
    assert layout.objects[0].bbox == pytest.approx([0.1, 0.1, 0.5, 0.5])
    assert layout.objects[1].bbox == pytest.approx([0.0, 0.0, 0.1, 0.1])
    assert "bowl" in layout.caption


def test_label_from_object_name():
    assert label_from_object_name("cat-1") == "cat"
    assert label_from_object_name("t-shirt-12") == "t-shirt"
    assert label_from_object_name("t-shirt") == "t-shirt"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r["objects"][0].update(bbox=[0.5, 0.3, 0.6, 0.2]), "objects[0].bbox: box [0.5, 0.3, 0.6, 0.2] ends outside"),
        (lambda r: r["objects"][0].update(bbox=[-0.2, 0.3, 0.1, 0.2]), "objects[0].bbox: box [-0.2, 0.3, 0.1, 0.2] starts outside"),
        (lambda r: r["objects"][1].update(bbox=[0.1, 0.5, 0.0, 0.5]), "objects[1].bbox: box [0.1, 0.5, 0.0, 0.5] is degenerate"),
        (lambda r: r["objects"][1].update(bbox=[0.1, 0.5, 0.3]), "objects[1].bbox: List should have at least 4 items"),
        (
            lambda r: r["objects"].append({"id": "cup-1", "label": "mug", "bbox": [0.6, 0.3, 0.1, 0.1]}),
            "objects[3].id: duplicate object id 'cup-1' (first used by objects[0])",
        ),
        (lambda r: r["relations"][0].update(subject=["mug-1"]), "relations[0].subject: names unknown object 'mug-1'"),
        (lambda r: r["relations"][1].update(object=["chair-1"]), "relations[1].object: names unknown object 'chair-1'"),
        (lambda r: r.update(caption=5), "field caption: Input should be a valid string"),
        (lambda r: r["objects"][0].update(bbox=["0.4", 0.3, 0.2, 0.2]), "objects[0].bbox[0]: Input should be a valid number"),
        (lambda r: r["objects"][0].pop("label"), "objects[0].label: required field is missing"),
        (lambda r: r.update(objects=[], relations=[]), "field objects: List should have at least 1 item"),
    ],
)
def test_each_validation_error_is_one_precise_line(tmp_path, mutate, expected):
    record = json.loads(json.dumps(TEA))
    mutate(record)
    path = write(tmp_path, [SOLO, record])
    report = validate_file(path)
    assert len(report.problems) == 1, report.problems
    line = report.problems[0]
    assert "\n" not in line
    assert line.startswith(f"{path}: layout 1 (id 'tea'): field ")
    assert expected in line
    assert [x.id for x in report.layouts] == ["solo"]  # the valid record still parses
    with pytest.raises(LayoutFileError):
        load_layouts(path)


def test_duplicate_layout_ids(tmp_path):
    report = validate_file(write(tmp_path, [TEA, SOLO, TEA]))
    assert report.problems == [f"{tmp_path / 'layouts.json'}: layout 2 (id 'tea'): field id: duplicate layout id 'tea' (first used by layout 0)"]


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes('[{"id": "café"}]'.encode("latin-1"))
    report = validate_file(path)
    assert report.problems == [f"{path}: not valid UTF-8 (byte 0xe9 at offset 12); save the file as UTF-8"]


def test_invalid_json_and_wrong_top_level(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": "a",}]', encoding="utf-8")
    assert "line 1 column 13: invalid JSON" in validate_file(broken).problems[0]
    assert "not a layouts file" in validate_file(write(tmp_path, 42, "num.json")).problems[0]
    assert "not a layouts file" in validate_file(write(tmp_path, ["x"], "strs.json")).problems[0]


def test_record_that_is_not_an_object(tmp_path):
    path = write(tmp_path, [TEA, "oops"])
    assert validate_file(path).problems == [f"{path}: layout 1: expected an object, got str"]


def test_coco_errors_name_the_annotation(tmp_path):
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}, {"id": 2, "file_name": "b.jpg"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 9, "bbox": [0, 0, 10, 10]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10]},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [95, 0, 10, 10]},
        ],
        "categories": [{"id": 1, "name": "dog"}],
    }
    path = write(tmp_path, coco)
    problems = validate_file(path).problems
    assert f"{path}: annotations[0]: field category_id: unknown category 9" in problems
    assert f"{path}: annotations[1]: field bbox: expected [x, y, w, h] numbers" in problems
    assert any("images[1] (id 2): field width/height" in p for p in problems)
    assert any("layout 0 (id 'a'): field objects[0].bbox" in p and "ends outside" in p for p in problems)
