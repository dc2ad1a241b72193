"""Reference pools: the file format, the three sources, category matching, clear errors."""

from __future__ import annotations

import gzip
import json

import pytest
from typer.testing import CliRunner

from clis.cli import app
from clis.layout_score.pool import (
    CategoryMatcher, Pool, PoolExample, PoolFileError, PoolScene, read_pool, read_pool_examples, write_pool,
)
from clis.layout_score.pool_sources import (
    BuildReport, examples_from_coco, examples_from_file, examples_from_visual_genome,
)

runner = CliRunner()

VG = [
    {"image_id": 1, "relationships": [
        {"relationship_id": 10, "predicate": "ON",
         "subject": {"object_id": 1, "name": "Cup", "x": 40, "y": 20, "w": 20, "h": 20},
         "object": {"object_id": 2, "names": ["table"], "x": 10, "y": 40, "w": 80, "h": 40}},
        {"relationship_id": 11, "predicate": "riding",
         "subject": {"object_id": 3, "names": ["man"], "x": 30, "y": 0, "w": 20, "h": 40},
         "object": {"object_id": 4, "name": "horse", "x": 20, "y": 30, "w": 60, "h": 50}},
        # broken: no box on the object -> skipped and reported, the build goes on
        {"relationship_id": 12, "predicate": "on", "subject": {"name": "hat", "x": 1, "y": 1, "w": 2, "h": 2},
         "object": {"name": "man"}},
    ]},
    {"image_id": 2, "relationships": [
        {"relationship_id": 20, "predicate": "next  to",
         "subject": {"name": "犬", "x": 0, "y": 50, "w": 30, "h": 30},
         "object": {"name": "cat", "x": 60, "y": 50, "w": 30, "h": 30}},
    ]},
]

COCO = {
    "images": [{"id": 7, "width": 100, "height": 100, "file_name": "7.jpg"}],
    "categories": [{"id": 1, "name": "cup"}, {"id": 2, "name": "dining table"}, {"id": 3, "name": "person"}],
    "annotations": [
        {"id": 1, "image_id": 7, "category_id": 1, "bbox": [40, 10, 20, 20], "iscrowd": 0},
        {"id": 2, "image_id": 7, "category_id": 2, "bbox": [10, 50, 80, 40], "iscrowd": 0},
        {"id": 3, "image_id": 7, "category_id": 3, "bbox": [0, 0, 100, 100], "iscrowd": 1},
    ],
}


def relation_examples(items):
    return [item for item in items if isinstance(item, PoolExample)]


def scenes(items):
    return [item for item in items if isinstance(item, PoolScene)]


def write_json(path, data):
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_visual_genome_source(tmp_path):
    report = BuildReport()
    examples = list(examples_from_file(write_json(tmp_path / "relationships.json", VG), report))
    assert [(e.subject, e.relation, e.object) for e in examples] == [
        ("cup", "on", "table"), ("man", "riding", "horse"), ("犬", "next to", "cat")]
    assert examples[0].subject_box == [40, 20, 20, 20] and examples[0].object_box == [10, 40, 80, 40]
    assert examples[0].source == "vg:1/10"
    assert sum(report.skipped.values()) == 1
    assert "relationship 2" in report.first_problems[0] and "'x'/'y'/'w'/'h'" in report.first_problems[0]


def test_coco_source_reads_relations_from_geometry():
    report = BuildReport()
    items = list(examples_from_coco(COCO, "coco.json", report))
    # cup centre (50, 20), table centre (50, 70): the cup is above; the crowd person is skipped.
    assert sorted((e.subject, e.relation, e.object) for e in relation_examples(items)) == [
        ("cup", "above", "dining table"), ("dining table", "below", "cup")]
    # One scene for the 100 x 100 image, largest object first, boxes divided by the image size.
    [scene] = scenes(items)
    assert scene.scene == [("dining table", [0.1, 0.5, 0.8, 0.4]), ("cup", [0.4, 0.1, 0.2, 0.2])]
    assert scene.source == "coco:7"
    assert not report.skipped


def test_coco_min_area_and_max_objects():
    report = BuildReport()
    # the cup covers 400 / 10000 = 4% of the image: dropped at min_area 0.05 -> no pair left,
    # and the scene holds the table alone
    for items in (list(examples_from_coco(COCO, "coco.json", report, min_area=0.05)),
                  list(examples_from_coco(COCO, "coco.json", report, max_objects=1))):
        assert relation_examples(items) == []
        assert [s.scene for s in scenes(items)] == [[("dining table", [0.1, 0.5, 0.8, 0.4])]]


def test_coco_boolean_in_bbox_is_not_a_number():
    # JSON true would pass as the number 1; the cup is skipped, so no pair is left.
    data = json.loads(json.dumps(COCO))
    data["annotations"][0]["bbox"] = [40, True, 20, 20]
    report = BuildReport()
    assert relation_examples(examples_from_coco(data, "coco.json", report)) == []
    assert report.first_problems == ["coco.json: annotation 1: field 'bbox': expected [x, y, w, h] numbers, "
                                     "got [40, True, 20, 20]"]


def test_visual_genome_records_named_by_image_id_and_position():
    data = [
        "not an image",
        {"image_id": 5, "relationships": {"oops": 1}},
        {"image_id": 6, "relationships": [
            {"predicate": "on", "subject": {"name": "cup", "x": True, "y": 0, "w": 1, "h": 1},
             "object": {"name": "table", "x": 0, "y": 1, "w": 2, "h": 2}}]},
    ]
    report = BuildReport()
    assert list(examples_from_visual_genome(data, "vg.json", report)) == []
    assert report.first_problems == [
        "vg.json: images[0]: not an object",
        "vg.json: image 5 (images[1]): field 'relationships': expected a list",
        "vg.json: image 6 (images[2]) relationship 0: field 'x'/'y'/'w'/'h': missing or not a number",
    ]


def _coco_with(**changes):
    data = json.loads(json.dumps(COCO))
    for path, value in changes.items():
        *parents, key = path.split("__")
        target = data
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(key) if key.isdigit() else key] = value
    return data


@pytest.mark.parametrize("changes, message", [
    ({"categories": 5}, "top level: field 'categories': expected a list, got int"),
    ({"images": {"id": 7}}, "top level: field 'images': expected a list, got dict"),
    ({"categories__1": "table"}, "categories[1]: expected an object, got str"),
    ({"categories__0__id": [1]}, "categories[0]: field 'id': expected a number or string, got [1]"),
    ({"categories__2__name": None}, "categories[2]: field 'name': expected a string, got None"),
    ({"images__0__width": "abc"}, "image 7 (images[0]): field 'width': expected a positive number, got 'abc'"),
    ({"images__0__height": False}, "image 7 (images[0]): field 'height': expected a positive number, got False"),
    ({"images__0__id": {"n": 7}}, "images[0]: field 'id': expected a number or string, got {'n': 7}"),
])
def test_cli_pool_build_malformed_coco(tmp_path, changes, message):
    source = write_json(tmp_path / "instances.json", _coco_with(**changes))
    result = runner.invoke(app, ["pool", "build", str(source), "--from", "coco", "--min-area", "0.01",
                                 "--out", str(tmp_path / "p.jsonl")])
    assert result.exit_code == 2, result.output
    assert f"{source}: {message}" in result.output
    assert "unexpected" not in result.output and "Traceback" not in result.output


def test_coco_annotation_with_unusable_ids_is_skipped():
    data = _coco_with(annotations__0__category_id=[1], annotations__1__image_id=[7])
    report = BuildReport()
    assert list(examples_from_coco(data, "coco.json", report)) == []
    assert report.first_problems == ["coco.json: annotation 1: field 'category_id': unknown category [1]",
                                     "coco.json: annotation 2: field 'image_id': expected a number or string, "
                                     "got [7]"]


def test_layouts_source(tmp_path):
    layouts = [{"id": "tea", "width": 200, "height": 100, "objects": [
        {"id": "cup-1", "label": "cup", "bbox": [0.4, 0.3, 0.2, 0.2]},
        {"id": "table-1", "label": "table", "bbox": [0.1, 0.5, 0.8, 0.5]}],
        "relations": [{"subject": ["cup-1"], "relation": "on", "object": ["table-1"]}]}]
    report = BuildReport()
    items = list(examples_from_file(write_json(tmp_path / "layouts.json", layouts), report))
    examples = relation_examples(items)
    assert len(examples) == 1
    # scaled to the 200 x 100 canvas: [0.4*200, 0.3*100, 0.2*200, 0.2*100]
    assert examples[0].subject_box == pytest.approx([80, 30, 40, 20])
    # the scene keeps the normalised boxes
    assert [s.scene for s in scenes(items)] == [[("cup", [0.4, 0.3, 0.2, 0.2]), ("table", [0.1, 0.5, 0.8, 0.5])]]
    assert report.scenes == {"layouts:layouts.json": 1} and report.examples == {"layouts:layouts.json": 1}


@pytest.mark.parametrize("name", ["pool.jsonl", "pool.jsonl.gz"])
def test_round_trip(tmp_path, name):
    examples = [PoolExample(subject="Cup", relation="On", object="table", subject_box=[1, 2, 3, 4],
                            object_box=[0, 0, 9, 9], source="x"),
                PoolExample(subject="猫", relation="on", object="sofa", subject_box=[0, 0, 1, 1], object_box=[0, 1, 2, 2])]
    path = tmp_path / name
    assert write_pool(examples, path, sources=["a.json"]) == 2
    header, back = read_pool_examples(path)
    assert header == {"clis_pool": 2, "sources": ["a.json"], "examples": 2, "scenes": 0}
    assert [e.model_dump(exclude_none=True) for e in back] == [e.model_dump(exclude_none=True) for e in examples]
    assert back[0].subject == "cup" and back[0].relation == "on"
    pool = Pool.load(path)
    assert pool.counts() == {"on": 2} and pool.fingerprint()["sha256"]
    if name.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            assert json.loads(handle.readline())["clis_pool"] == 2


@pytest.mark.parametrize("lines, message", [
    (['{"subject": "cup"}'], "line 1: not a CLIS pool file"),
    (['{"clis_pool": 9}'], "field 'clis_pool': unsupported"),
    (['{"clis_pool": 1}', '{"subject": "cup", "relation": "on", "object": "table", "subject_box": [0, 0, 1], '
      '"object_box": [0, 0, 1, 1]}'], "line 2 (example 1): field 'subject_box'"),
    (['{"clis_pool": 1}', '{"subject": "cup", "relation": "on", "subject_box": [0, 0, 1, 1], '
      '"object_box": [0, 0, 1, 1]}'], "line 2 (example 1): field 'object'"),
    (['{"clis_pool": 1}', '{"subject": "cup", "relation": "on", "object": "t", "subject_box": [0, 0, 0, 1], '
      '"object_box": [0, 0, 1, 1]}'], "field 'subject_box': box [0.0, 0.0, 0.0, 1.0] is degenerate"),
    (['{"clis_pool": 1}', '{not json'], "line 2: invalid JSON"),
    ([], "empty file"),
])
def test_malformed_pool_names_file_line_and_field(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(PoolFileError) as info:
        Pool.load(path)
    assert str(path) in str(info.value) and message in str(info.value)
    assert "\n" not in str(info.value)


def test_text_embedding_matching(clis_cache_dir):
    from clis.models import DEFAULT_TEXT_EMBEDDER, load_model
    from clis.models.text import TextEmbedder

    matcher = CategoryMatcher(TextEmbedder(load_model(DEFAULT_TEXT_EMBEDDER, "text-embedding")))
    sims = matcher.similarity("Dog", ["dog", "airplane", "puppy"])
    assert sims[0] == pytest.approx(1.0, abs=1e-5)  # normalised label, same text
    assert sims[1] < 0.8 and sims[2] > sims[1]  # unrelated labels fall below the default threshold
    exact = CategoryMatcher().similarity("Dog", ["dog", "puppy"])
    assert exact.tolist() == [1.0, 0.0]


def test_cli_pool_build_and_info(tmp_path):
    vg = write_json(tmp_path / "relationships.json", VG)
    coco = write_json(tmp_path / "instances.json", COCO)
    out = tmp_path / "pool.jsonl"
    result = runner.invoke(app, ["pool", "build", str(vg), str(coco), "--out", str(out)])
    assert result.exit_code == 0, result.output
    pool = Pool.load(out)
    # 3 VG relations + 2 COCO pairs, and the COCO image's scene
    assert pool.size == 5 and len(pool.scenes) == 1 and len(pool) == 6
    assert pool.counts()["on"] == 1 and pool.counts()["above"] == 1
    assert "skipped" in result.output
    again = runner.invoke(app, ["pool", "build", str(vg), "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output
    info = runner.invoke(app, ["pool", "info", str(out)])
    assert info.exit_code == 0 and "riding" in info.output


def test_cli_pool_build_errors(tmp_path):
    missing = runner.invoke(app, ["pool", "build", str(tmp_path / "nope.json"), "--out", str(tmp_path / "p.jsonl")])
    assert missing.exit_code == 2 and "nope.json: file not found" in missing.output
    broken = tmp_path / "broken.json"
    broken.write_text('[{"image_id": 1, "relationships": [', encoding="utf-8")
    result = runner.invoke(app, ["pool", "build", str(broken), "--out", str(tmp_path / "p.jsonl")])
    assert result.exit_code == 2 and "broken.json: line 1" in result.output and "Traceback" not in result.output
    assert list(tmp_path.glob("p.jsonl*")) == []  # no half-written pool
    empty = write_json(tmp_path / "single.json", {"images": [], "categories": [], "annotations": []})
    nothing = runner.invoke(app, ["pool", "build", str(empty), "--out", str(tmp_path / "p.jsonl")])
    assert nothing.exit_code == 2 and "no examples" in nothing.output
    assert not (tmp_path / "p.jsonl").exists()


def test_scene_round_trip_and_format_1_still_read(tmp_path):
    path = tmp_path / "pool.jsonl.gz"
    items = [PoolScene(scene=[("Cat", [0.3, 0.2, 0.3, 0.3]), ("bed", [0.0, 0.4, 1.0, 0.6])], source="coco:1"),
             PoolExample(subject="cat", relation="on", object="bed", subject_box=[3, 2, 3, 3], object_box=[0, 4, 10, 6])]
    assert write_pool(items, path, header={"licence": "CC BY 4.0"}) == 2
    header, examples, back = read_pool(path)
    assert header["scenes"] == 1 and header["examples"] == 1 and header["licence"] == "CC BY 4.0"
    assert back[0].scene == [("cat", [0.3, 0.2, 0.3, 0.3]), ("bed", [0.0, 0.4, 1.0, 0.6])]
    old = tmp_path / "v1.jsonl"
    old.write_text('{"clis_pool": 1}\n' + examples[0].model_dump_json() + "\n", encoding="utf-8")
    assert Pool.load(old).counts() == {"on": 1} and Pool.load(old).scenes == []


def test_malformed_scene_names_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"clis_pool": 2}\n{"scene": [["cat", [0.1, 0.1, 0.0, 0.2]]]}\n', encoding="utf-8")
    with pytest.raises(PoolFileError) as info:
        Pool.load(path)
    assert f"{path}: line 2 (scene 1): field 'scene': box [0.1, 0.1, 0.0, 0.2] is degenerate" in str(info.value)
