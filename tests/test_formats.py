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
# Everything COCO has no field for: several listed images, extra keys on the layout, an object
# and a relation, an empty caption and description, a canvas with only a width.
RICH = {
    "id": "rich",
    "caption": "",
    "width": 300,
    "images": ["rich/first.png", "elsewhere/second.jpg"],
    "mood": {"light": "dusk"},
    "objects": [
        {"id": "lamp-1", "label": "lamp", "description": "", "bbox": [0.1, 0.2, 0.3, 0.4], "depth": 2},
        {"id": "cat-1", "label": "cat", "bbox": [0.5, 0.5, 0.25, 0.5]},
    ],
    "relations": [{"subject": ["cat-1"], "relation": "under", "object": ["lamp-1"], "confidence": 0.5}],
}
EMPTY_LIST = {**SOLO, "id": "listed-none", "images": []}


def write(tmp_path, data, name="layouts.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def assert_identical_layouts(a: list[Layout], b: list[Layout]) -> None:
    """Every field and extra key equal; boxes to float rounding (they went through pixels)."""
    dumps_a, dumps_b = [x.model_dump() for x in a], [y.model_dump() for y in b]
    for da, db in zip(dumps_a, dumps_b):
        for oa, ob in zip(da["objects"], db["objects"]):
            assert boxes_close(oa.pop("bbox"), ob.pop("bbox"))
    assert dumps_a == dumps_b


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
    assert_identical_layouts(layouts, load_layouts(coco_path))


def test_canonical_coco_round_trip_keeps_every_field(tmp_path):
    layouts = load_layouts(write(tmp_path, [TEA, SOLO, RICH, EMPTY_LIST]))
    coco_path = save_layouts(layouts, tmp_path / "coco.json", format="coco")
    assert len(COCO(str(coco_path)).getImgIds()) == 4
    back = load_layouts(coco_path)
    assert_identical_layouts(layouts, back)
    # Read back, a layout without an images list gets none: its made-up file_name
    # must not become a candidate that does not exist.
    assert back[1].images is None and back[3].images == []
    assert (back[1].width, back[1].height) == (None, None)


def test_coco_canonical_coco_round_trip_keeps_ids(tmp_path):
    coco = {
        "images": [
            {"id": 397133, "file_name": "000000397133.jpg", "width": 640, "height": 427},
            {"id": 37777, "file_name": "000000037777.jpg", "width": 352, "height": 230},
        ],
        "annotations": [
            {"id": 1768, "image_id": 397133, "category_id": 18, "bbox": [10, 20, 100, 200], "iscrowd": 0},
            {"id": 2001, "image_id": 397133, "category_id": 1, "bbox": [0, 0, 64, 64], "iscrowd": 0},
            {"id": 95, "image_id": 37777, "category_id": 1, "bbox": [35.2, 23, 100, 50], "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
    }
    layouts = load_layouts(write(tmp_path, coco, "coco.json"))
    again = layouts_to_coco(layouts)
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in again["images"]] == [
        (i["id"], i["file_name"], i["width"], i["height"]) for i in coco["images"]
    ]
    assert sorted((c["id"], c["name"]) for c in again["categories"]) == [(1, "person"), (18, "dog")]
    by_id = {a["id"]: a for a in again["annotations"]}
    for original in coco["annotations"]:
        written = by_id[original["id"]]
        assert (written["image_id"], written["category_id"]) == (original["image_id"], original["category_id"])
        assert written["bbox"] == pytest.approx(original["bbox"])
    # and the layouts read from the written file are the same layouts, ids included
    assert_identical_layouts(layouts, load_layouts(write(tmp_path, again, "again.json")))


def test_coco_ids_that_collide_are_replaced_by_unused_ones():
    twins = [Layout.model_validate({**SOLO, "id": name, "clis_coco_image_id": 5}) for name in ("one", "two")]
    assert [i["id"] for i in layouts_to_coco(twins)["images"]] == [5, 1]


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
    # the file's own ids are kept, so writing COCO again can reuse them
    assert layout.model_extra["clis_coco_image_id"] == 7
    assert [(o.model_extra["clis_coco_annotation_id"], o.model_extra["clis_coco_category_id"]) for o in layout.objects] == [
        (1, 3), (2, 3)
    ]


def test_coco_images_without_annotations_are_skipped_and_counted(tmp_path, caplog):
    # Real COCO files have such images (48 in instances_val2017.json); they must not make
    # the whole file invalid.
    coco = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 100, "height": 100},
            {"id": 2, "file_name": "empty.jpg", "width": 100, "height": 100},
            {"id": 3, "file_name": "crowd.jpg", "width": 100, "height": 100},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "iscrowd": 0},
            {"id": 2, "image_id": 3, "category_id": 1, "bbox": [0, 0, 50, 50], "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "person"}],
    }
    path = write(tmp_path, coco)
    report = validate_file(path)
    assert report.ok and [x.id for x in report.layouts] == ["a"]
    assert len(report.warnings) == 1 and "\n" not in report.warnings[0]
    assert report.warnings[0].startswith(f"{path}: skipped 2 of 3 images")
    assert "image ids 2, 3" in report.warnings[0]
    assert report.summary()["warnings"] == 1
    with caplog.at_level("WARNING", logger="clis.formats"):
        assert [x.id for x in load_layouts(path)] == ["a"]
    assert "skipped 2 of 3 images" in caplog.text


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
        # wrong types inside relations are named, never a crash
        (lambda r: r["relations"][0].update(subject=5), "relations[0].subject: Input should be a valid list"),
        (lambda r: r["relations"][0].update(subject=[["cup-1"]]), "relations[0].subject[0]: Input should be a valid string"),
        (lambda r: r["relations"][1].update(object=[{"id": "table-1"}]), "relations[1].object[0]: Input should be a valid string"),
        (lambda r: r.update(images="tea.png"), "field images: Input should be a valid list"),
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


@pytest.mark.parametrize("layout_id", [".", "..", "../tea", "a/b", "a\\b"])
def test_layout_id_that_is_a_path_is_rejected(tmp_path, layout_id):
    # Candidates are found at images/<id>.<ext> and images/<id>/: such an id would leave the folder.
    path = write(tmp_path, [{**TEA, "id": layout_id}])
    (line,) = validate_file(path).problems
    assert line.startswith(f"{path}: layout 0 (id {layout_id!r}): field id: layout id {layout_id!r} cannot name image files")


COCO_OK = {
    "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}],
    "categories": [{"id": 1, "name": "dog"}],
}


def coco_with(part: str, index: int, **changes) -> dict:
    data = json.loads(json.dumps(COCO_OK))
    data[part][index].update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([{"caption": "a dog", "layout": 5}], "layout 0: field layout: expected a list of {object, bbox} items, got int"),
        ([{"caption": "a dog", "layout": ["dog-1"]}], "layout 0: field layout[0]: expected an object {object, bbox}, got str"),
        (
            [{"caption": "a dog", "layout": [{"object": 1, "bbox": [0.1, 0.1, 0.2, 0.2]}]}],
            "layout 0: field layout[0].object: expected a name such as 'cat-1', got int",
        ),
        ([{"id": [1], "layout": [{"object": "dog-1", "bbox": [0.1, 0.1, 0.2, 0.2]}]}], "layout 0: field id: expected a string or an integer, got list"),
        ({**COCO_OK, "images": 5}, "top level: field images: expected a list, got int"),
        ({**COCO_OK, "annotations": {"id": 1}}, "top level: field annotations: expected a list, got dict"),
        (coco_with("images", 0, id=[1]), "images[0]: field id: expected an integer id, got list"),
        (coco_with("annotations", 0, image_id=[1]), "annotations[0]: field image_id: expected an integer id, got list"),
        (coco_with("annotations", 0, image_id=2), "annotations[0]: field image_id: no image has id 2"),
        (coco_with("categories", 0, id=[1]), "categories[0]: field id/name: a category needs an id and a name"),
        (coco_with("annotations", 0, category_id=[1]), "annotations[0]: field category_id: expected an integer id, got list"),
        (coco_with("images", 0, file_name=5), "images[0] (id 1): field file_name: expected a string, got int"),
    ],
)
def test_wrong_types_in_acp_and_coco_files_are_one_precise_line(tmp_path, data, expected):
    path = write(tmp_path, data)
    report = validate_file(path)
    # An image whose id is unusable also leaves its annotation without an image: that second
    # line is true too, so only the first line is pinned.
    assert report.problems[0] == f"{path}: {expected}"
    assert all("\n" not in line for line in report.problems)
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
    path = write(tmp_path, [TEA, None], "null.json")
    assert validate_file(path).problems == [f"{path}: layout 1: expected an object, got NoneType"]
    acp = {"caption": "a dog", "layout": [{"object": "dog-1", "bbox": [0.1, 0.1, 0.2, 0.2]}]}
    path = write(tmp_path, [acp, None, {"caption": "x", "layout": 5}, acp], "acp.json")
    report = validate_file(path)
    assert report.problems == [
        f"{path}: layout 1: expected an object, got NoneType",
        f"{path}: layout 2: field layout: expected a list of {{object, bbox}} items, got int",
    ]
    assert [x.id for x in report.layouts] == ["0", "3"]  # the items after a broken one keep their index


def test_coco_errors_name_the_annotation(tmp_path):
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}, {"id": 2, "file_name": "b.jpg"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 9, "bbox": [0, 0, 10, 10]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10]},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [95, 0, 10, 10]},
            {"id": 4, "image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10]},
        ],
        "categories": [{"id": 1, "name": "dog"}],
    }
    path = write(tmp_path, coco)
    problems = validate_file(path).problems
    assert f"{path}: annotations[0]: field category_id: unknown category 9" in problems
    assert f"{path}: annotations[1]: field bbox: expected [x, y, w, h] numbers" in problems
    assert any("images[1] (id 2): field width/height" in p for p in problems)
    assert any("layout 0 (id 'a'): field objects[0].bbox" in p and "ends outside" in p for p in problems)
