"""ACP scene graphs as ACP's own stages write them, scored ACP items, and InstanceDiffusion input.

Every file here is written by these tests in the shapes the released ACP code produces.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from clis.discovery import discover_candidates
from clis.errors import LayoutFileError
from clis.formats import (
    detect_format,
    layout_to_instancediffusion,
    layouts_to_acp,
    layouts_to_instancediffusion,
    load_layouts,
    read_layouts,
    save_layouts,
    validate_file,
)
from clis.layout import Layout

# The 3-object scene, as the scene-graph step and then the layout step write it.
SCENE = {
    "caption": "a black cat sleeps on a red sofa beside a tall lamp",
    "attributes": [
        {"name": "cat-1", "attributes": "black, fluffy"},
        {"name": "sofa-1", "attributes": "red, leather"},
        {"name": "lamp-1", "attributes": "tall, brass"},
    ],
    "groups": [{"id": "group-1", "group": ["cat-1", "sofa-1"]}, {"id": "group-2", "group": ["lamp-1"]}],
    "layers of depth": {"Foreground": ["group-1"], "Background": ["group-2"]},
    "relations": [
        {"caption": "a cat sleeping on a sofa", "relations": [{"subject": ["cat-1"], "object": ["sofa-1"], "relation": "on"}]},
        {
            "caption": "a lamp beside the sofa, behind the cat",
            "relations": [
                {"subject": ["lamp-1"], "object": ["sofa-1"], "relation": "beside"},
                {"subject": ["lamp-1"], "object": ["cat-1"], "relation": "behind"},
            ],
        },
    ],
    "layout": [
        {"object": "cat-1", "bbox": [0.35, 0.4, 0.25, 0.2]},
        {"object": "sofa-1", "bbox": [0.1, 0.45, 0.7, 0.5]},
        {"object": "lamp-1", "bbox": [0.82, 0.05, 0.15, 0.9]},
    ],
}

# ACP's few-shot example mistakes: collar-4 for collar-2, woman-1 for person-1.
DANGLING = {
    "caption": "a woman walks a dog with a red collar down the steps",
    "attributes": [
        {"name": "person-1", "attributes": "smiling"},
        {"name": "dog-1", "attributes": "brown"},
        {"name": "collar-4", "attributes": "red"},
        {"name": "steps-4", "attributes": "stone"},
    ],
    "groups": [{"id": 1, "group": ["woman-1", "dog-1", "collar-2"]}, {"id": 2, "group": ["steps-4"]}],
    "layers of depth": {"Foreground": [1], "Background": [2, 3]},
    "relations": [
        {
            "caption": "a woman walking a dog",
            "relations": [
                {"subject": ["person-1"], "object": ["dog-1"], "relation": "walking"},
                {"subject": ["dog-1"], "object": ["collar-4"], "relation": "wearing"},
            ],
        },
        {"caption": "on the steps", "relations": [{"subject": ["woman-1", "dog-1"], "object": ["steps-4"], "relation": "on"}]},
    ],
    "layout": [
        {"object": "person-1", "bbox": [0.1, 0.1, 0.3, 0.8]},
        {"object": "dog-1", "bbox": [0.45, 0.5, 0.3, 0.3]},
        {"object": "collar-2", "bbox": [0.5, 0.52, 0.1, 0.05]},
        {"object": "steps-4", "bbox": [0.0, 0.7, 1.0, 0.3]},
    ],
}
DANGLING_FIELDS = [
    ("attributes[2].name", "collar-4"),
    ("relations[0].relations[1].object[0]", "collar-4"),
    ("relations[1].relations[0].subject[0]", "woman-1"),
    ("groups[0].group[0]", "woman-1"),
]

# A canonical layout with everything ACP has no field for.
CANONICAL = {
    "id": "tea",
    "caption": "a red cup on a wooden table",
    "width": 640,
    "height": 480,
    "images": ["tea/first.png"],
    "mood": {"light": "dusk"},
    "objects": [
        {"id": "cup-1", "label": "cup", "attributes": ["red", "tall, thin"], "bbox": [0.4, 0.3, 0.2, 0.2], "depth": 1},
        {"id": "table-1", "label": "table", "description": "a wooden table", "bbox": [0.1, 0.5, 0.8, 0.5]},
        {"id": "t2", "label": "teapot", "description": "", "bbox": [0.7, 0.2, 0.2, 0.3]},
    ],
    "relations": [{"subject": ["cup-1"], "relation": "on", "object": ["table-1"], "confidence": 0.5}],
}


def write(tmp_path: Path, data, name: str = "layouts.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def dumps(layouts: list[Layout]) -> list[dict]:
    return [layout.model_dump() for layout in layouts]


def touch_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)
    return path


# --- the scene graph -------------------------------------------------------------------


def test_real_shaped_scene_validates_and_its_relations_resolve(tmp_path):
    path = write(tmp_path, [SCENE])
    report = validate_file(path)
    assert report.ok, report.problems
    assert report.format == "acp"
    (layout,) = load_layouts(path)
    assert layout.id == "0"
    assert [(o.id, o.label, o.attributes) for o in layout.objects] == [
        ("cat-1", "cat", ["black", "fluffy"]),
        ("sofa-1", "sofa", ["red", "leather"]),
        ("lamp-1", "lamp", ["tall", "brass"]),
    ]
    assert [(r.subject, r.relation, r.object) for r in layout.relations] == [
        (["cat-1"], "on", ["sofa-1"]),
        (["lamp-1"], "beside", ["sofa-1"]),
        (["lamp-1"], "behind", ["cat-1"]),
    ]
    assert layout.problems() == []
    # groups, depth layers and the relation groups' captions stay on the layout
    assert layout.model_extra["groups"] == SCENE["groups"]
    assert layout.model_extra["layers of depth"] == SCENE["layers of depth"]
    assert [g["caption"] for g in layout.model_extra["acp_relation_groups"]] == [g["caption"] for g in SCENE["relations"]]
    assert [r.model_extra["acp_group"] for r in layout.relations] == [0, 1, 1]


def test_acp_to_canonical_to_acp_gives_the_same_items(tmp_path):
    second = {**copy.deepcopy(SCENE), "id": "named"}
    odd = copy.deepcopy(SCENE)
    # forms the default writer would not choose: kept as they were
    odd["attributes"] = [{"name": "lamp-1", "attributes": "brass,tall"}, {"name": "cat-1", "attributes": "black"}]
    odd["relations"].insert(1, {"caption": "nothing here", "relations": []})
    odd["relations"].append({"subject": "cat-1", "object": ["lamp-1"], "relation": "below", "confidence": 0.2})
    del odd["caption"]
    items = [SCENE, second, odd]
    layouts = load_layouts(write(tmp_path, items))
    assert [x.id for x in layouts] == ["0", "named", "2"]
    assert layouts[2].get_object("lamp-1").attributes == ["brass", "tall"]
    again = layouts_to_acp(layouts)
    assert again[0] == SCENE and again[1] == second
    odd_back = {**odd, "relations": copy.deepcopy(odd["relations"])}
    odd_back["relations"][-1]["subject"] = ["cat-1"]  # a single name comes back as a list
    assert again[2] == odd_back
    # through a file, and canonical JSON in between
    canonical = save_layouts(layouts, tmp_path / "canonical.json")
    acp = save_layouts(load_layouts(canonical), tmp_path / "acp.json", format="acp")
    assert json.loads(acp.read_text(encoding="utf-8")) == again
    assert dumps(load_layouts(acp)) == dumps(layouts)


def test_canonical_to_acp_to_canonical_keeps_model_dump(tmp_path):
    layouts = [Layout.model_validate(CANONICAL), Layout.model_validate({**CANONICAL, "id": "plain", "relations": []})]
    items = layouts_to_acp(layouts)
    # written in ACP's own shapes
    assert items[0]["attributes"][0] == {"name": "cup-1", "attributes": ["red", "tall, thin"]}  # a comma inside
    assert items[0]["attributes"][1] == {"name": "table-1", "attributes": ""}
    assert items[0]["layout"][2] == {"object": "t2", "bbox": [0.7, 0.2, 0.2, 0.3], "label": "teapot", "description": ""}
    assert items[0]["relations"] == [CANONICAL["relations"][0]]
    path = save_layouts(layouts, tmp_path / "acp.json", format="acp")
    assert dumps(load_layouts(path)) == dumps(layouts)


def test_flat_relations_and_older_attribute_forms_are_still_read(tmp_path):
    flat = {
        "id": "flat",
        "caption": "a cat on a sofa",
        "layout": [{"object": "cat-1", "bbox": [0.3, 0.3, 0.3, 0.3]}, {"object": "sofa-1", "bbox": [0.1, 0.4, 0.8, 0.5]}],
        "attributes": {"cat-1": ["black"], "sofa-1": "red, leather"},
        "relations": [{"subject": ["cat-1"], "relation": "on", "object": ["sofa-1"]}],
    }
    path = write(tmp_path, [flat])
    (layout,) = load_layouts(path)
    assert [(r.subject, r.relation, r.object) for r in layout.relations] == [(["cat-1"], "on", ["sofa-1"])]
    assert layout.get_object("sofa-1").attributes == ["red", "leather"]
    assert "acp_relation_groups" not in layout.model_extra
    assert layouts_to_acp([layout]) == [flat]  # the dict form of attributes is kept as it was


def test_names_resolve_ignoring_case_to_the_objects_own_id(tmp_path):
    item = copy.deepcopy(SCENE)
    item["relations"][0]["relations"][0] = {"subject": ["Cat-1"], "object": [" SOFA-1"], "relation": "on"}
    item["attributes"][2]["name"] = "LAMP-1"
    item["groups"][1]["group"] = ["Lamp-1"]
    item["layers of depth"] = {"Foreground": ["Group-1"], "Background": ["group-2"]}
    (layout,) = load_layouts(write(tmp_path, [item]))
    assert (layout.relations[0].subject, layout.relations[0].object) == (["cat-1"], ["sofa-1"])
    assert layout.get_object("lamp-1").attributes == ["tall", "brass"]
    assert layout.problems() == []
    # two objects that differ only in case: an exact name still resolves, a folded one does not
    twins = {"id": "twins", "caption": "two cats",
             "layout": [{"object": "Cat-1", "bbox": [0.1, 0.1, 0.2, 0.2]}, {"object": "cat-1", "bbox": [0.5, 0.5, 0.2, 0.2]}],
             "relations": [{"subject": ["Cat-1"], "object": ["cat-1"], "relation": "near"},
                           {"subject": ["CAT-1"], "object": ["cat-1"], "relation": "near"}]}  # fmt: skip
    path = write(tmp_path, [twins], "twins.json")
    assert validate_file(path).problems == [
        f"{path}: layout 0 (id 'twins'): field relations[1].subject[0]: "
        "name 'CAT-1' matches several objects when case is ignored (Cat-1, cat-1)"
    ]


def test_dangling_names_are_problems_of_their_own_layout(tmp_path):
    good = {**copy.deepcopy(SCENE), "id": "good"}
    path = write(tmp_path, [good, {**DANGLING, "id": "walk"}, {**copy.deepcopy(SCENE), "id": "good2"}])
    report = validate_file(path)
    known = "(known: person-1, dog-1, collar-2, steps-4)"
    expected = [f"{path}: layout 1 (id 'walk'): field {field}: names unknown object {name!r} {known}" for field, name in DANGLING_FIELDS]
    expected.append(f"{path}: layout 1 (id 'walk'): field layers of depth.Background[1]: names unknown group 3 (known groups: 1, 2)")
    assert report.problems == expected
    (bad,) = report.invalid
    assert (bad.index, bad.layout_id, bad.problems) == (1, "walk", expected)
    # The valid layouts still load for a run over every valid layout.
    lenient = read_layouts(path)
    assert [x.id for x in lenient.layouts] == ["good", "good2"]
    with pytest.raises(LayoutFileError):
        load_layouts(path)
    with pytest.raises(LayoutFileError):
        read_layouts(path, strict=True)


def test_a_dangling_layout_still_lists_its_other_problems(tmp_path):
    item = copy.deepcopy(DANGLING)
    item["layout"][1]["bbox"] = [0.9, 0.5, 0.3, 0.3]
    path = write(tmp_path, [item, SCENE])
    problems = validate_file(path).problems
    assert len(problems) == len(DANGLING_FIELDS) + 2
    assert any("field objects[1].bbox" in line and "ends outside the canvas" in line for line in problems)
    assert [x.id for x in read_layouts(path).layouts] == ["1"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"relations": [{"caption": "x", "relations": {"subject": ["cat-1"]}}]}, "field relations[0].relations: expected a list of relations, got dict"),
        ({"relations": [{"caption": "x", "relations": [{"subject": ["cat-1"], "object": ["sofa-1"]}]}]}, "field relations[0].relations[0].relation: required field is missing"),
        ({"relations": [{"subject": ["cat-1"], "relation": "on"}]}, "field relations[0].object: required field is missing"),
        ({"relations": [{"caption": "x", "relations": [{"subject": [], "object": ["sofa-1"], "relation": "on"}]}]}, "field relations[0].relations[0].subject: expected a list of object names, such as ['cat-1']"),
        ({"groups": {"id": 1}}, "field groups: expected a list of {id, group: [names]} items, got dict"),
        ({"layers of depth": ["group-1"]}, "field layers of depth: expected {layer: [group ids]}, got list"),
        ({"attributes": [{"name": "cat-1", "attributes": 3}]}, "field attributes[0].attributes: expected a string such as 'black, fluffy', got int"),
    ],
)
def test_malformed_acp_parts_name_the_acp_field(tmp_path, change, expected):
    path = write(tmp_path, [{**copy.deepcopy(SCENE), **change}])
    assert validate_file(path).problems == [f"{path}: layout 0: {expected}"]


# --- scored ACP items and their candidates ---------------------------------------------


def test_scored_items_keep_run_keys_and_their_img_dir_is_searched(tmp_path):
    images = tmp_path / "run"
    for k in (0, 1):
        touch_image(images / "scene0" / "gc5-seed0-alpha0.8" / f"{k}.png")
        touch_image(images / "scene0" / "gc5-seed0-alpha0.8" / f"{k}_xl_s0.4.png")  # refined copy
        touch_image(images / "scene0" / "gc5-seed0-alpha0.8" / f"{k}_boxes.png")  # box preview
    touch_image(images / "scene0" / "gc5-seed1-alpha0.8" / "10.png")
    touch_image(images / "scene0" / "gc5-seed1-alpha0.8" / "2.png")
    touch_image(images / "scene1" / "0.png")
    scored = {
        **copy.deepcopy(SCENE),
        "img_dir": "scene0",
        "img_path": "scene0/gc5-seed0-alpha0.8/1.png",
        "score": 71.5,
        "global_score": 80.0,
        "local_score_list": [70.0, 65.5, 79.0],
    }
    absolute = {**copy.deepcopy(SCENE), "id": "abs", "img_dir": str(images / "scene1")}
    path = write(tmp_path, [scored, absolute])
    assert validate_file(path).ok
    layouts = load_layouts(path)
    assert layouts[0].model_extra["local_score_list"] == [70.0, 65.5, 79.0]
    assert layouts_to_acp(layouts)[0] == scored  # the run keys come back too
    found = discover_candidates(images, layouts)
    rel = {key: [p.resolve().relative_to(images.resolve()).as_posix() for p in paths] for key, paths in found.candidates.items()}
    assert rel == {
        "0": ["scene0/gc5-seed0-alpha0.8/0.png", "scene0/gc5-seed0-alpha0.8/1.png",
              "scene0/gc5-seed1-alpha0.8/2.png", "scene0/gc5-seed1-alpha0.8/10.png"],
        "abs": ["scene1/0.png"],
    }  # fmt: skip
    assert found.orphans == [] and found.missing == [] and found.refused == []
    # the filter is a parameter: with none, the refined copies are candidates too
    assert len(discover_candidates(images, layouts, skip=()).candidates["0"]) == 8


@pytest.mark.parametrize("img_dir", ["../outside", "scene0/../../outside", "ABSOLUTE"])
def test_img_dir_outside_the_images_folder_is_refused(tmp_path, img_dir, caplog):
    images = tmp_path / "run"
    touch_image(images / "keep.png")
    touch_image(tmp_path / "outside" / "secret.png")
    if img_dir == "ABSOLUTE":
        img_dir = str(tmp_path / "outside")
    layout = Layout.model_validate({**json.loads(json.dumps(CANONICAL)), "id": "x", "images": None, "img_dir": img_dir})
    with caplog.at_level("WARNING"):
        found = discover_candidates(images, [layout])
    assert found.candidates == {} and found.missing == ["x"]
    ((layout_id, why),) = found.refused
    assert layout_id == "x" and "outside the images folder" in why and "\n" not in why
    assert any("outside the images folder" in r.getMessage() for r in caplog.records)


# --- InstanceDiffusion input -----------------------------------------------------------

# What ACP feeds InstanceDiffusion: normalised boxes on a 1.0 x 1.0 canvas, one caption per
# anno (the object's attribute text), optional location inputs.
ID_ITEM = {
    "caption": "a black cat sleeps on a red sofa",
    "width": 1.0,
    "height": 1.0,
    "annos": [
        {"bbox": [0.35, 0.4, 0.25, 0.2], "caption": "a black fluffy cat", "point": [0.47, 0.5]},
        {"bbox": [0.1, 0.45, 0.7, 0.5], "caption": "red leather sofa", "mask": [], "scribble": [[0.2, 0.5], [0.3, 0.6]]},
        {"bbox": [0.82, 0.05, 0.15, 0.9], "caption": "a lamp", "category_name": "floor lamp"},
        {"bbox": [0.0, 0.0, 0.1, 0.1], "caption": "another cat."},
    ],
}


def test_instancediffusion_input_is_read_with_documented_ids_and_labels(tmp_path):
    assert detect_format(ID_ITEM) == detect_format([ID_ITEM]) == "instancediffusion"
    path = write(tmp_path, [ID_ITEM])
    (layout,) = load_layouts(path)
    assert layout.id == "0" and layout.width is None
    assert [(o.id, o.label, o.description) for o in layout.objects] == [
        ("cat-1", "cat", "a black fluffy cat"),  # label: last word of the caption
        ("sofa-1", "sofa", "red leather sofa"),
        ("floor lamp-1", "floor lamp", "a lamp"),  # category_name wins
        ("cat-2", "cat", "another cat."),
    ]
    assert layout.objects[0].model_extra == {"point": [0.47, 0.5]}
    assert layout.objects[1].model_extra == {"mask": [], "scribble": [[0.2, 0.5], [0.3, 0.6]]}
    # back to InstanceDiffusion: what it holds comes back, plus each label as category_name
    back = layout_to_instancediffusion(layout, clis_fields=False)
    expected = copy.deepcopy(ID_ITEM)
    for anno, label in zip(expected["annos"], ["cat", "sofa", "floor lamp", "cat"]):
        anno["category_name"] = label
    assert back == expected
    # a pixel canvas: boxes are divided by it and the canvas is the layout's size
    pixel = {**ID_ITEM, "width": 512, "height": 256, "annos": [{"bbox": [128, 64, 256, 128], "caption": "a dog"}]}
    (dog,) = load_layouts(write(tmp_path, pixel, "pixel.json"))
    assert (dog.objects[0].bbox, dog.width, dog.height) == ([0.25, 0.25, 0.5, 0.5], 512, 256)


def test_canonical_acp_instancediffusion_round_trips(tmp_path):
    canonical = [Layout.model_validate(CANONICAL)]
    acp_layouts = load_layouts(write(tmp_path, [SCENE], "scene.json"))
    for layouts in (canonical, acp_layouts):
        via_id = save_layouts(layouts, tmp_path / "id.json", format="instancediffusion")
        assert detect_format(json.loads(via_id.read_text(encoding="utf-8"))) == "instancediffusion"
        assert dumps(load_layouts(via_id)) == dumps(layouts)
        via_acp = save_layouts(load_layouts(via_id), tmp_path / "acp.json", format="acp")
        assert dumps(load_layouts(via_acp)) == dumps(layouts)
        again = save_layouts(load_layouts(via_acp), tmp_path / "id2.json", format="instancediffusion")
        assert json.loads(again.read_text(encoding="utf-8")) == layouts_to_instancediffusion(layouts)
    # ACP -> canonical -> InstanceDiffusion -> canonical -> ACP is the ACP item again
    assert layouts_to_acp(load_layouts(tmp_path / "id.json")) == [SCENE]


def test_instancediffusion_problems_name_the_anno(tmp_path):
    bad = {"caption": "x", "width": 512, "height": 512, "annos": [
        {"bbox": [400, 0, 200, 100], "caption": "a dog"}, {"bbox": [0, 0, 10], "caption": "a cat"}, {"bbox": [0, 0, 10, 10], "caption": "..."}]}  # fmt: skip
    path = write(tmp_path, [bad, ID_ITEM])
    report = validate_file(path)
    assert [line.split(": field ")[1].split(":")[0] for line in report.problems] == [
        "annos[0].bbox", "annos[1].bbox", "annos[2].category_name"]  # fmt: skip
    assert all(line.startswith(f"{path}: layout 0: field annos[") for line in report.problems)
    assert [x.id for x in read_layouts(path).layouts] == ["1"]


def test_the_instancediffusion_generator_writes_through_clis_formats():
    from generators.instancediffusion import instancediffusion_input

    layout = Layout.model_validate(CANONICAL)
    written = instancediffusion_input(layout)
    expected = layout_to_instancediffusion(layout, size=(512, 512), clis_fields=False)
    assert written == {**expected, "annos": [{**a, "mask": []} for a in expected["annos"]]}


# --- the CLI ---------------------------------------------------------------------------


def test_clis_validate_lists_each_dangling_name_and_exits_2(tmp_path):
    path = write(tmp_path, [SCENE, DANGLING])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-c", "from clis.cli import main; main()", "validate", str(path)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if "names unknown object" in line]
    assert [(line.split(": field ")[1].split(":")[0], line.split("'")[-2]) for line in lines] == DANGLING_FIELDS
    assert all(line.startswith(f"{path}: layout 1: field ") for line in lines)
    assert "invalid (5 problems)" in result.stderr
