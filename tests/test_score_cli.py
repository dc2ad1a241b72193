"""`clis score` and the Scorer API end to end: output format, weights, resume, bad input."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from clis.cli import app
from clis.formats import load_layouts
from clis.layout import layout_sha256

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TOP_KEYS = ["layout_id", "image", "clis", "clis_i", "clis_l", "global", "instances", "error", "layout_sha256"]
INSTANCE_KEYS = {"object_id", "label", "phrase", "bbox", "region", "grounding", "detection", "score"}
DETECTION_KEYS = {"found", "iou", "score", "count", "expected_count", "count_match"}

runner = CliRunner()


def run_clis(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-c", "from clis.cli import main; main()", *args],
        capture_output=True, text=True, env=env, timeout=300, cwd=ROOT,
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def example_run(tiny_models, tmp_path_factory):
    """`clis score examples/images examples/layouts.json` with tiny CLIP + OWLv2, as a user runs it.

    (The tiny Grounding DINO's path is covered in test_image_score.py, test_testing.py and below.)"""
    out = tmp_path_factory.mktemp("score") / "scores.jsonl"
    result = run_clis(
        "score", str(EXAMPLES / "images"), str(EXAMPLES / "layouts.json"), "--out", str(out),
        "--csv", str(out.with_suffix(".csv")), "--image-model", tiny_models["hf_clip"],
        "--detector", tiny_models["owlv2"], "--no-layout-score", "--batch-size", "8",
    )
    return result, out


def test_examples_end_to_end_output_format(example_run):
    result, out = example_run
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "7 candidates: 7 scored, 0 failed" in result.stdout
    layouts = load_layouts(EXAMPLES / "layouts.json")
    records = read_jsonl(out)
    # One line per candidate, in input order (each example layout has one image).
    assert [r["layout_id"] for r in records] == [lay.id for lay in layouts]
    for record, layout in zip(records, layouts):
        assert list(record) == TOP_KEYS
        assert record["layout_sha256"] == layout_sha256(layout)  # what --resume compares
        assert record["error"] is None and Path(record["image"]).stem == layout.id
        assert record["clis_l"] is None and record["clis"] == record["clis_i"]
        assert [i["object_id"] for i in record["instances"]] == [o.id for o in layout.objects]
        for instance, obj in zip(record["instances"], layout.objects):
            assert set(instance) == INSTANCE_KEYS
            assert instance["bbox"] == obj.bbox and instance["phrase"] == obj.phrase
            assert set(instance["detection"]) == DETECTION_KEYS
            for key in ("region", "grounding", "score"):
                assert 0.0 <= instance[key] <= 100.0
            # The documented instance formula with the default weights 0.2 / 0.4 / 0.4.
            expected = 0.2 * instance["region"] + 0.4 * instance["grounding"] + 0.4 * 100 * instance["detection"]["iou"]
            assert instance["score"] == pytest.approx(expected, abs=1e-3)
        mean_instance = sum(i["score"] for i in record["instances"]) / len(record["instances"])
        assert record["clis_i"] == pytest.approx(0.5 * record["global"] + 0.5 * mean_instance, abs=1e-3)


def test_examples_manifest_and_csv(example_run, tiny_models):
    _, out = example_run
    manifest = json.loads(Path(f"{out}.manifest.json").read_text())
    assert manifest["tool"] == "clis" and manifest["version"]
    assert manifest["models"]["image_model"]["spec"] == tiny_models["hf_clip"]
    assert len(manifest["models"]["image_model"]["sha256"]) == 64
    assert len(manifest["models"]["detector"]["sha256"]) == 64
    assert manifest["weights"]["clis_i"] == {"global": 0.5, "instances": 0.5, "region": 0.2, "grounding": 0.4,
                                              "detection": 0.4}
    assert manifest["run"]["status"] == "complete" and manifest["run"]["scored"] == 7
    assert manifest["created"] and manifest["updated"]
    with open(out.with_suffix(".csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    records = read_jsonl(out)
    assert [r["image"] for r in rows] == [r["image"] for r in records]
    assert [float(r["clis"]) for r in rows] == [r["clis"] for r in records]


def test_detector_failure_on_one_image_is_recorded_and_the_run_goes_on(tiny_models, tmp_path, monkeypatch):
    # The detector fails on the camera layout (the one whose queries name a tripod), in a batch
    # and alone: its candidate becomes an error record, the other six are scored.
    from clis.image_score.detection import Detector

    detect = Detector.detect

    def failing_detect(self, images, queries):
        if any("tripod" in q for q in queries):
            raise RuntimeError("Expected more than 1 value per channel")
        return detect(self, images, queries)

    monkeypatch.setattr(Detector, "detect", failing_detect)
    out = tmp_path / "s.jsonl"
    result = runner.invoke(app, ["score", str(EXAMPLES / "images"), str(EXAMPLES / "layouts.json"), "--out", str(out),
                                 "--image-model", tiny_models["hf_clip"], "--detector", tiny_models["grounding_dino"],
                                 "--no-layout-score", "--batch-size", "1", "-q"])
    assert result.exit_code == 1 and "1 of 7 candidates failed" in result.output
    records = read_jsonl(out)
    failed = [r for r in records if r["error"] is not None]
    assert [r["layout_id"] for r in failed] == ["camera"] and "detector failed" in failed[0]["error"]
    for record in records:
        if record["error"] is None:
            assert all(set(i["detection"]) == DETECTION_KEYS for i in record["instances"])


def test_weights_from_flags_and_config_file(tiny_models, tmp_path):
    config = tmp_path / "clis.toml"
    config.write_text(
        f'image_model = "{tiny_models["hf_clip"]}"\ndetector = "none"\nlayout_score = false\n'
        "[weights]\nglobal = 1.0\ninstances = 0.0\n"
    )
    out = tmp_path / "s.jsonl"
    result = runner.invoke(app, ["score", str(EXAMPLES / "images"), str(EXAMPLES / "layouts.json"),
                                 "--config", str(config), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    for record in read_jsonl(out):
        assert record["clis_i"] == record["global"]  # instances weighted 0
        assert all(i["detection"] is None for i in record["instances"])
    # A flag wins over the file: only instances count now, grounding only.
    result = runner.invoke(app, ["score", str(EXAMPLES / "images"), str(EXAMPLES / "layouts.json"),
                                 "--config", str(config), "--out", str(out), "--overwrite", "-q",
                                 "--weight", "global=0", "--weight", "instances=1", "--weight", "region=0"])
    assert result.exit_code == 0, result.output
    for record in read_jsonl(out):
        for instance in record["instances"]:
            assert instance["score"] == pytest.approx(instance["grounding"], abs=1e-3)
    manifest = json.loads(Path(f"{out}.manifest.json").read_text())
    assert manifest["weights"]["clis_i"]["global"] == 0 and manifest["weights"]["clis_i"]["region"] == 0


@pytest.mark.parametrize("args, message", [
    (["--weight", "colour=1"], "--weight 'colour=1': expected NAME=VALUE"),
    (["--weight", "global=lots"], "is not a number"),
    (["--weight", "global=-1"], "weights.global"),
    (["--crop-margin", "5"], "crop_margin"),
])
def test_bad_options_are_one_line_errors(args, message, tmp_path):
    result = runner.invoke(app, ["score", str(EXAMPLES / "images"), str(EXAMPLES / "layouts.json"),
                                 "--out", str(tmp_path / "s.jsonl"), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_existing_output_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "s.jsonl"
    out.write_text('{"layout_id": "x"}\n')
    result = runner.invoke(app, ["score", str(EXAMPLES / "images"), str(EXAMPLES / "layouts.json"), "--out", str(out)])
    assert result.exit_code == 2 and "--resume" in result.output and "--overwrite" in result.output
    assert out.read_text() == '{"layout_id": "x"}\n'


def test_missing_default_weights_say_what_to_do(tmp_path):
    result = run_clis("score", str(EXAMPLES / "images"), str(EXAMPLES / "layouts.json"), "--out",
                      str(tmp_path / "s.jsonl"), env_extra={"HF_HOME": str(tmp_path / "hf"),
                                                            "CLIS_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip() and "Loading" not in line]
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert "--image-model PATH" in lines[0] and "clis models fetch" in lines[0]
    assert "Traceback" not in result.stderr


def test_layout_outside_image_fails_before_any_model_loads(tmp_path):
    bad = [{"id": "a", "caption": "x", "objects": [{"id": "o", "label": "cup", "bbox": [1.2, 0.1, 0.3, 0.3]}]}]
    layouts = tmp_path / "layouts.json"
    layouts.write_text(json.dumps(bad))
    (tmp_path / "images").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "a.png")
    # A model path that does not exist: had any model been loaded, the error would name it.
    result = runner.invoke(app, ["score", str(tmp_path / "images"), str(layouts), "--out", str(tmp_path / "s.jsonl"),
                                 "--image-model", str(tmp_path / "no-such-model")])
    assert result.exit_code == 2
    assert str(layouts) in result.output and "bbox" in result.output and "no-such-model" not in result.output
    assert not (tmp_path / "s.jsonl").exists()


def test_check_layouts_in_canvas_on_constructed_layout():
    from clis.errors import InputError
    from clis.layout import Layout, LayoutObject
    from clis.scorer import check_layouts_in_canvas

    outside = LayoutObject.model_construct(id="o", label="cup", bbox=[1.1, 1.1, 0.2, 0.2], attributes=[])
    partly = LayoutObject.model_construct(id="p", label="cup", bbox=[0.9, 0.9, 0.2, 0.2], attributes=[])
    with pytest.raises(InputError, match=r"layout 'a' \(record 0\): objects\[\*\]\.bbox: every object lies outside"):
        check_layouts_in_canvas([Layout.model_construct(id="a", caption="", objects=[outside], relations=[])])
    check_layouts_in_canvas([Layout.model_construct(id="b", caption="", objects=[outside, partly], relations=[])])


def _bad_input_folder(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (60, 60), "red").save(images / "good.png")
    Image.new("RGB", (200, 200), "red").save(images / "huge.png")  # 40000 px > --max-pixels 10000
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    jpeg = images / "cut.jpg"
    Image.new("RGB", (60, 60), "blue").save(jpeg, quality=90)
    jpeg.write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 2])
    (images / "text.jpg").write_text("this is not an image")
    ids = ["good", "huge", "corrupt", "cut", "text"]
    records = [{"id": i, "caption": "a red cup", "objects": [{"id": "cup-1", "label": "cup", "bbox": [0.2, 0.2, 0.5, 0.5]}]}
               for i in ids]
    records.append({"id": "gone", "caption": "a cup", "images": ["gone.png"],
                    "objects": [{"id": "cup-1", "label": "cup", "bbox": [0.2, 0.2, 0.5, 0.5]}]})
    layouts = tmp_path / "layouts.json"
    layouts.write_text(json.dumps(records))
    return images, layouts


def test_bad_images_become_error_records_and_the_run_goes_on(tiny_models, tmp_path):
    images, layouts = _bad_input_folder(tmp_path)
    out = tmp_path / "s.jsonl"
    result = runner.invoke(app, ["score", str(images), str(layouts), "--out", str(out), "--max-pixels", "10000",
                                 "--image-model", tiny_models["hf_clip"], "--detector", "none", "--no-layout-score"])
    assert result.exit_code == 1
    assert "5 of 6 candidates failed" in result.output and "Traceback" not in result.output
    by_id = {r["layout_id"]: r for r in read_jsonl(out)}
    assert by_id["good"]["error"] is None and by_id["good"]["clis"] is not None
    expected = {"huge": "exceeds the limit of 10000", "corrupt": "not an image file", "cut": "corrupt or truncated",
                "text": "not an image file", "gone": "file not found"}
    for layout_id, reason in expected.items():
        record = by_id[layout_id]
        assert reason in record["error"] and "\n" not in record["error"]
        assert record["clis"] is None and record["clis_i"] is None and record["instances"] == []
    assert json.loads(Path(f"{out}.manifest.json").read_text())["run"]["failed"] == 5


def test_resume_after_interruption(tiny_models, tmp_path):
    from clis.scorer import ScoreConfig, Scorer

    images = tmp_path / "images"
    shutil.copytree(EXAMPLES / "images", images)
    config = ScoreConfig(image_model=tiny_models["hf_clip"], detector=tiny_models["owlv2"], layout_score=False,
                         batch_size=4)
    scorer = Scorer(config)
    reference = list(scorer.score_folder(images, EXAMPLES / "layouts.json"))

    out = tmp_path / "s.jsonl"
    seen: list[dict] = []

    def interrupt_after_three(record: dict) -> None:
        seen.append(record)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        scorer.score_folder(images, EXAMPLES / "layouts.json", out=out, on_record=interrupt_after_three)
    assert read_jsonl(out) == reference[:3]
    assert json.loads(Path(f"{out}.manifest.json").read_text())["run"]["status"] == "interrupted"
    with open(out, "a") as handle:  # a line cut short by the interruption
        handle.write('{"layout_id": "camera", "image": "')

    rescored: list[dict] = []
    records = list(Scorer(config).score_folder(images, EXAMPLES / "layouts.json", out=out, resume=True,
                                               on_record=rescored.append))
    assert len(rescored) == 4  # only the candidates that were not finished
    assert records == reference and read_jsonl(out) == reference
    run = json.loads(Path(f"{out}.manifest.json").read_text())["run"]
    assert run["status"] == "complete" and run["resumed"] == 3 and run["scored"] == 7


def test_resume_retries_failed_candidates(tiny_models, tmp_path):
    images, layouts = _bad_input_folder(tmp_path)
    out = tmp_path / "s.jsonl"
    args = ["score", str(images), str(layouts), "--out", str(out), "--image-model", tiny_models["hf_clip"],
            "--detector", "none", "--no-layout-score", "-q"]
    assert runner.invoke(app, args).exit_code == 1
    Image.new("RGB", (60, 60), "green").save(images / "gone.png")  # the user supplies the missing file
    result = runner.invoke(app, [*args, "--resume"])
    assert result.exit_code == 1 and "3 of 6 candidates failed" in result.output
    records = read_jsonl(out)
    assert [r["layout_id"] for r in records] == ["good", "huge", "corrupt", "cut", "text", "gone"]
    assert records[-1]["error"] is None and records[1]["error"] is None  # huge passes the default limit


def test_python_api_pairs_and_metric_class(tiny_models):
    from clis.metrics import CLISScore
    from clis.scorer import ScoreConfig, Scorer

    layouts = load_layouts(EXAMPLES / "layouts.json")[:3]
    scorer = Scorer(ScoreConfig(image_model=tiny_models["hf_clip"], detector="none", layout_score=False))
    pairs = [(EXAMPLES / "images" / f"{lay.id}.jpg", lay) for lay in layouts]
    batched = list(scorer.score_pairs(pairs))
    single = [scorer.score(image, lay) for image, lay in pairs]
    assert [r["clis"] for r in batched] == pytest.approx([r["clis"] for r in single], abs=1e-3)
    metric = CLISScore(image_model=scorer.encoder, detector="none")
    metric.update([p for p, _ in pairs], [lay for _, lay in pairs])
    summary = metric.compute()
    assert int(summary["n"]) == 3 and int(summary["failed"]) == 0
    assert summary["clis_i"] == pytest.approx(sum(r["clis_i"] for r in batched) / 3, abs=1e-3)
    assert not math.isnan(summary["global"])


def test_layout_score_is_combined_when_clis_l_is_available(tiny_models, tmp_path):
    pytest.importorskip("clis.layout_score")
    config = tmp_path / "clis.json"
    config.write_text(json.dumps({"image_model": tiny_models["hf_clip"], "detector": "none",
                                  "layout": {"llm": tiny_models["causal_lm"], "text_embedder": "none"},
                                  "combine": {"image": 0.75, "layout": 0.25}}))
    out = tmp_path / "s.jsonl"
    result = runner.invoke(app, ["score", str(EXAMPLES / "images"), str(EXAMPLES / "layouts.json"),
                                 "--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = read_jsonl(out)
    for record in records:
        assert 0.0 <= record["clis_l"] <= 100.0
        assert record["clis"] == pytest.approx(0.75 * record["clis_i"] + 0.25 * record["clis_l"], abs=1e-3)
    manifest = json.loads(Path(f"{out}.manifest.json").read_text())
    assert manifest["weights"]["clis"] == {"image": 0.75, "layout": 0.25}
    assert manifest["weights"]["layout_score_used"] is True
    assert manifest["models"]["layout"]["llm"]["spec"] == tiny_models["causal_lm"]
    # --no-layout-score turns it off: clis falls back to clis_i.
    result = runner.invoke(app, ["score", str(EXAMPLES / "images"), str(EXAMPLES / "layouts.json"),
                                 "--config", str(config), "--out", str(out), "--overwrite", "--no-layout-score"])
    assert result.exit_code == 0, result.output
    assert all(r["clis_l"] is None and r["clis"] == r["clis_i"] for r in read_jsonl(out))


# ---------------------------------------------------------------------------------------------
# Audit fixes: elongated images, truncation, resume safety, bad options, generation manifests


def _folder(tmp_path: Path, ids=("red", "blue"), caption="a cup", description=None) -> tuple[Path, Path]:
    """images/<id>.png (plain colours) and a layouts.json with one cup per layout."""
    images = tmp_path / "images"
    images.mkdir(parents=True)
    for layout_id in ids:
        Image.new("RGB", (48, 40), layout_id).save(images / f"{layout_id}.png")
    cup = {"id": "cup-1", "label": "cup", "bbox": [0.2, 0.2, 0.5, 0.5]}
    if description is not None:
        cup["description"] = description
    layouts = tmp_path / "layouts.json"
    layouts.write_text(json.dumps([{"id": i, "caption": caption, "objects": [cup]} for i in ids]))
    return images, layouts


def _score_args(images: Path, layouts: Path, out: Path, tiny_models: dict, *extra: str) -> list[str]:
    return ["score", str(images), str(layouts), "--out", str(out), "--image-model", tiny_models["hf_clip"],
            "--detector", "none", "--no-layout-score", "-q", *extra]


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_very_wide_image_is_an_error_record_and_the_run_goes_on(tiny_models, tmp_path):
    # 2,000,000 x 1 pixels passes the 40 M pixel limit, but resizing its short side to the model's
    # input would make a 2,000,000-times-wider image: billions of pixels.
    images, layouts = _folder(tmp_path, ids=("red", "white"))
    Image.new("RGB", (2_000_000, 1), "white").save(images / "white.png")
    out = tmp_path / "s.jsonl"
    result = runner.invoke(app, _score_args(images, layouts, out, tiny_models))
    assert result.exit_code == 1, result.output
    assert "1 of 2 candidates failed" in result.output and "Traceback" not in result.output
    red, wide = read_jsonl(out)
    assert red["error"] is None and red["clis"] is not None
    assert "2000000x1" in wide["error"] and "too elongated" in wide["error"] and wide["clis"] is None


def test_truncated_caption_and_phrase_are_reported(tiny_models, tmp_path):
    long_caption = "a small red cup standing on a wooden kitchen table " * 10  # about 100 tokens
    long_phrase = "a cup with " + "very " * 90 + "thin handles"
    images, layouts = _folder(tmp_path, caption=long_caption, description=long_phrase)
    out = tmp_path / "s.jsonl"
    result = runner.invoke(app, _score_args(images, layouts, out, tiny_models))
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if "context" in line]
    assert len(warning) == 1 and warning[0].startswith("warning: 1 caption and 1 object phrase")
    assert "77 tokens" in warning[0]
    truncation = json.loads(Path(f"{out}.manifest.json").read_text())["truncation"]
    assert truncation == {"context_length": 77, "captions": [long_caption], "phrases": [long_phrase]}
    assert all(list(record) == TOP_KEYS for record in read_jsonl(out))
    # Short texts: nothing to report.
    short_images, short_layouts = _folder(tmp_path / "short")
    result = runner.invoke(app, _score_args(short_images, short_layouts, tmp_path / "t.jsonl", tiny_models))
    assert result.exit_code == 0 and "context" not in result.output


@pytest.mark.parametrize("change, field", [
    (["--crop-margin", "0.3"], "settings.crop_margin"),
    (["--weight", "grounding=1"], "weights.clis_i.grounding"),
    (["--image-model", "open_clip"], "models.image_model"),
])
def test_resume_refuses_other_models_or_settings(tiny_models, tmp_path, change, field):
    images, layouts = _folder(tmp_path)
    out = tmp_path / "s.jsonl"
    assert runner.invoke(app, _score_args(images, layouts, out, tiny_models)).exit_code == 0
    before = out.read_text()
    if change[0] == "--image-model":
        change = ["--image-model", tiny_models["open_clip"]]
    result = runner.invoke(app, [*_score_args(images, layouts, out, tiny_models), "--resume", *change])
    assert result.exit_code == 2, result.output
    lines = _error_lines(result.output)
    assert len(lines) == 1 and f"{out}.manifest.json" in lines[0] and field in lines[0]
    assert "drop --resume" in lines[0] and "another --out" in lines[0]
    assert out.read_text() == before


def test_resume_accepts_run_only_settings_and_needs_the_earlier_manifest(tiny_models, tmp_path):
    images, layouts = _folder(tmp_path)
    out = tmp_path / "s.jsonl"
    assert runner.invoke(app, _score_args(images, layouts, out, tiny_models)).exit_code == 0
    before = out.read_text()
    # How the run goes (batch size, loader threads) does not change the numbers: resuming is fine.
    result = runner.invoke(app, [*_score_args(images, layouts, out, tiny_models), "--resume", "--batch-size", "3",
                                 "--num-workers", "0"])
    assert result.exit_code == 0, result.output
    assert json.loads(Path(f"{out}.manifest.json").read_text())["run"]["resumed"] == 2
    # Without the manifest nothing can be checked: refuse rather than guess.
    Path(f"{out}.manifest.json").unlink()
    result = runner.invoke(app, [*_score_args(images, layouts, out, tiny_models), "--resume"])
    assert result.exit_code == 2 and "missing" in _error_lines(result.output)[0]
    assert out.read_text() == before


@pytest.mark.parametrize("bad_line, problem", [
    ("this is a log line", "not valid JSON"),
    ('{"note": "kept by hand"}', "field 'layout_id' missing"),
    ('{"layout_id": "red", "clis": 1, "clis_i": 1, "clis_l": null, "global": 1, "instances": [], "error": null}',
     "field 'image' missing"),
])
def test_resume_refuses_lines_that_are_not_score_records(tiny_models, tmp_path, bad_line, problem):
    images, layouts = _folder(tmp_path)
    out = tmp_path / "s.jsonl"
    assert runner.invoke(app, _score_args(images, layouts, out, tiny_models)).exit_code == 0
    first, second = out.read_text().splitlines()
    out.write_text(f"{first}\n{bad_line}\n{second}\n")
    before = out.read_text()
    result = runner.invoke(app, [*_score_args(images, layouts, out, tiny_models), "--resume"])
    assert result.exit_code == 2, result.output
    lines = _error_lines(result.output)
    assert len(lines) == 1 and f"{out}: line 2: {problem}" in lines[0] and "Traceback" not in result.output
    assert out.read_text() == before  # nothing truncated


def test_resume_matches_images_however_the_folder_is_spelled(tiny_models, tmp_path, monkeypatch):
    from clis.scorer import ScoreConfig, Scorer

    images, layouts = _folder(tmp_path, ids=("red", "blue", "green"))
    config = ScoreConfig(image_model=tiny_models["hf_clip"], detector="none", layout_score=False)
    out = tmp_path / "s.jsonl"
    monkeypatch.chdir(tmp_path)
    first = list(Scorer(config).score_folder(Path("images"), layouts, out=out))
    assert [r["image"] for r in first] == [str(Path("images") / f"{i}.png") for i in ("red", "blue", "green")]
    monkeypatch.chdir(tmp_path.parent)  # another working directory, and an absolute folder
    rescored: list[dict] = []
    records = list(Scorer(config).score_folder(images.resolve(), layouts, out=out, resume=True,
                                               on_record=rescored.append))
    assert rescored == []  # every candidate was found in the earlier output
    spelled_now = [str(images.resolve() / f"{i}.png") for i in ("red", "blue", "green")]
    assert [r["image"] for r in read_jsonl(out)] == spelled_now
    assert [r["clis"] for r in records] == [r["clis"] for r in first]


@pytest.mark.parametrize("args, message", [
    (["--device", "bogus"], "device: Value error, 'bogus' is not a device"),
    (["--distractor", "background", "--distractor", " "], "distractor 1 is blank"),
])
def test_bad_device_and_blank_distractor_are_one_line_errors(tiny_models, tmp_path, args, message):
    images, layouts = _folder(tmp_path)
    result = runner.invoke(app, _score_args(images, layouts, tmp_path / "s.jsonl", tiny_models, *args))
    assert result.exit_code == 2, result.output
    lines = _error_lines(result.output)
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output


def test_cuda_without_a_gpu_is_a_one_line_error(tiny_models, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    images, layouts = _folder(tmp_path)
    result = runner.invoke(app, _score_args(images, layouts, tmp_path / "s.jsonl", tiny_models, "--device", "cuda"))
    assert result.exit_code == 2, result.output
    lines = _error_lines(result.output)
    assert len(lines) == 1 and "device 'cuda': no CUDA GPU" in lines[0] and "--device cpu" in lines[0]


def _generation_manifest(demo_only: bool) -> dict:
    """A candidates manifest as docs/pipeline.md describes it (written by hand, not by generators/)."""
    return {
        "format": "clis-candidates/1", "generator": "shapes", "config": {"width": 48, "height": 40},
        "n": 1, "seed": 7, "demo_only": demo_only, "layouts": "layouts.json", "layouts_sha256": "0" * 64,
        "clis_version": "0.1.0", "created": "2026-01-01T00:00:00+00:00",
        "items": [{"layout_id": "red", "status": "done", "error": None,
                   "images": [{"path": "red.png", "k": 0, "seed": 123, "width": 48, "height": 40}]}],
    }


def test_generation_manifest_is_recorded_and_demo_only_warned(tiny_models, tmp_path):
    images, layouts = _folder(tmp_path)
    (images / "manifest.json").write_text(json.dumps(_generation_manifest(demo_only=True)))
    out = tmp_path / "s.jsonl"
    result = runner.invoke(app, _score_args(images, layouts, out, tiny_models))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "demo_only" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning:") and "'shapes'" in warnings[0]
    generation = json.loads(Path(f"{out}.manifest.json").read_text())["run"]["generation"]
    assert generation["generator"] == "shapes" and generation["demo_only"] is True and generation["seed"] == 7
    assert generation["manifest"] == str(images / "manifest.json") and len(generation["sha256"]) == 64
    assert all(list(record) == TOP_KEYS for record in read_jsonl(out))  # the record keys stay fixed

    (images / "manifest.json").write_text(json.dumps(_generation_manifest(demo_only=False)))
    result = runner.invoke(app, [*_score_args(images, layouts, out, tiny_models), "--overwrite"])
    assert result.exit_code == 0 and "demo_only" not in result.output
    assert json.loads(Path(f"{out}.manifest.json").read_text())["run"]["generation"]["demo_only"] is False


@pytest.mark.parametrize("content, warning", [
    ("{not json", "unreadable generation manifest"),
    ('{"format": "something-else"}', "not a clis-candidates/1 manifest"),
    (None, None),
])
def test_generation_manifest_absent_or_malformed_does_not_stop_scoring(tiny_models, tmp_path, content, warning):
    images, layouts = _folder(tmp_path)
    if content is not None:
        (images / "manifest.json").write_text(content)
    out = tmp_path / "s.jsonl"
    result = runner.invoke(app, _score_args(images, layouts, out, tiny_models))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == (0 if warning is None else 1)
    if warning is not None:
        assert warning in warnings[0] and str(images / "manifest.json") in warnings[0]
    assert json.loads(Path(f"{out}.manifest.json").read_text())["run"]["generation"] is None


def test_layouts_changed_since_generation_are_warned_and_listed(tiny_models, tmp_path):
    _, layouts = _folder(tmp_path / "planned", ids=("red", "blue", "green"))
    candidates = tmp_path / "candidates"
    result = runner.invoke(app, ["generate", str(layouts), "-g", "shapes", "--n", "1", "--out", str(candidates)])
    assert result.exit_code == 0, result.output
    original = json.loads(layouts.read_text())
    # Re-planned after generation: red's cup moved, green's caption changed, blue kept.
    edited = json.loads(layouts.read_text())
    edited[0]["objects"][0]["bbox"] = [0.5, 0.5, 0.4, 0.4]
    edited[2]["caption"] = "a green mug"
    replanned = tmp_path / "replanned.json"
    replanned.write_text(json.dumps(edited))
    out = tmp_path / "s.jsonl"
    result = runner.invoke(app, _score_args(candidates, replanned, out, tiny_models))
    assert result.exit_code == 0, result.output
    differ = [line for line in result.output.splitlines() if "differ" in line]
    assert len(differ) == 1 and differ[0].startswith("warning: 2 layouts differ") and "(red, green)" in differ[0]
    assert json.loads(Path(f"{out}.manifest.json").read_text())["run"]["generation"]["layouts_differ"] == ["red", "green"]
    # The same layouts with other key order and spacing are the same layouts: no warning.
    reformatted = tmp_path / "reformatted.json"
    reformatted.write_text(json.dumps([dict(reversed(list(layout.items()))) for layout in original], indent=4))
    result = runner.invoke(app, [*_score_args(candidates, reformatted, out, tiny_models), "--overwrite"])
    assert result.exit_code == 0 and "differ" not in result.output, result.output
    assert json.loads(Path(f"{out}.manifest.json").read_text())["run"]["generation"]["layouts_differ"] == []
