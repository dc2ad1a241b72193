"""clis generate: adapters, seeding, manifest, resume, CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clis.discovery import discover_candidates
from clis.errors import InputError
from clis.formats import load_layouts, save_layouts
from clis.layout import Layout
from generators import candidate_seeds, create_generator
from generators.gligen import gligen_boxes
from generators.instancediffusion import CHECKOUT_ENV, instancediffusion_input
from generators.runner import generate_candidates, read_manifest
from generators.shapes import label_colour
from generators.testing import build_tiny_gligen, build_tiny_sd
from pipeline_helpers import run_cli

LAYOUTS = [
    {
        "id": "tea",
        "caption": "a red cup on a wooden table",
        "objects": [
            {"id": "cup-1", "label": "cup", "attributes": ["red"], "bbox": [0.375, 0.25, 0.25, 0.25]},
            {"id": "table-1", "label": "table", "attributes": ["wooden"], "bbox": [0.0, 0.5, 1.0, 0.5]},
        ],
    },
    {
        "id": "pets",
        "caption": "a cat next to a dog",
        "objects": [
            {"id": "cat-1", "label": "cat", "bbox": [0.0, 0.25, 0.5, 0.5]},
            {"id": "dog-1", "label": "dog", "bbox": [0.5, 0.25, 0.5, 0.5]},
        ],
    },
]


@pytest.fixture(scope="session")
def tiny_pipelines(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.getbasetemp() / "tiny-generators"
    return {"gligen": build_tiny_gligen(root), "sd": build_tiny_sd(root)}


@pytest.fixture
def layouts() -> list[Layout]:
    return [Layout.model_validate(d) for d in LAYOUTS]


def png_bytes(image: Image.Image, path: Path) -> bytes:
    image.save(path, format="PNG")
    return path.read_bytes()


def test_candidate_seeds_do_not_depend_on_n_or_order():
    assert candidate_seeds(7, "tea", 2) == candidate_seeds(7, "tea", 6)[:2]
    assert len(set(candidate_seeds(7, "tea", 6))) == 6
    assert candidate_seeds(7, "tea", 1) != candidate_seeds(8, "tea", 1)
    assert candidate_seeds(7, "tea", 1) != candidate_seeds(7, "pets", 1)


def test_shapes_same_seed_same_bytes_and_shape_in_its_box(layouts, tmp_path):
    shapes = create_generator("shapes", width=128, height=128)
    a, b = shapes.generate(layouts[0], [11, 11])
    c = shapes.generate(layouts[0], [12])[0]
    assert png_bytes(a, tmp_path / "a.png") == png_bytes(b, tmp_path / "b.png")
    assert png_bytes(a, tmp_path / "a.png") != png_bytes(c, tmp_path / "c.png")
    # cup-1 spans x 48..80, y 32..64 (jitter <= 8%): its centre (64, 48), below its text label,
    # shows the cup's colour; the table's centre shows the table's.
    assert a.getpixel((64, 48)) == label_colour("cup")
    assert a.getpixel((64, 100)) == label_colour("table")
    assert shapes.demo_only and "demo" in shapes.config()["note"]


def _write_cutouts(root: Path) -> Path:
    """cup: a red disc on a transparent square; table: an opaque brown image without alpha."""
    (root / "cup").mkdir(parents=True)
    (root / "table").mkdir()
    disc = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    yy, xx = np.mgrid[:40, :40]
    alpha = (((xx - 19.5) ** 2 + (yy - 19.5) ** 2) <= 15**2) * 255
    pixels = np.zeros((40, 40, 4), np.uint8)
    pixels[..., 0], pixels[..., 3] = 255, alpha
    Image.fromarray(pixels, "RGBA").save(root / "cup" / "disc.png")
    Image.new("RGB", (30, 20), (120, 70, 20)).save(root / "table" / "plain.jpg")
    return root


def test_copy_paste_from_rgba_folder(layouts, tmp_path):
    adapter = create_generator("copy-paste", cutouts=_write_cutouts(tmp_path / "cutouts"), width=64, height=64, flip=False)
    first, again = adapter.generate(layouts[0], [3]), adapter.generate(layouts[0], [3])
    assert png_bytes(first[0], tmp_path / "1.png") == png_bytes(again[0], tmp_path / "2.png")
    image = np.asarray(first[0]).astype(int)
    # cup box is x 24..40, y 16..32: the disc's centre is red, its transparent corner is not.
    assert tuple(image[24, 32]) == (255, 0, 0)
    assert tuple(image[16, 24]) != (255, 0, 0)
    # table box covers the lower half; the opaque table image fills it (JPEG: approximately).
    assert np.abs(image[48, 8] - (120, 70, 20)).max() <= 12


def test_copy_paste_from_coco_masks(tmp_path):
    photo = np.full((40, 60, 3), 255, np.uint8)
    photo[10:30, 20:40] = (0, 0, 255)  # a blue square, annotated by a polygon
    Image.fromarray(photo).save(tmp_path / "photo.png")
    coco = {
        "images": [{"id": 1, "file_name": "photo.png", "width": 60, "height": 40}],
        "categories": [{"id": 5, "name": "box"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [20, 10, 20, 20], "area": 400,
                         "iscrowd": 0, "segmentation": [[20, 10, 40, 10, 40, 30, 20, 30]]}],
    }  # fmt: skip
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    layout = Layout.model_validate(
        {"id": "b", "caption": "a box", "objects": [{"id": "box-1", "label": "boxes", "bbox": [0.25, 0.25, 0.5, 0.5]}]}
    )
    image = np.asarray(create_generator("copy-paste", cutouts=tmp_path / "coco.json", width=32, height=32).generate(layout, [0])[0])
    assert tuple(image[16, 16]) == (0, 0, 255)  # centre of the box: the cut-out (label matched across plural)


@pytest.mark.parametrize(
    "section, field, message",
    [("images", "file_name", r"coco.json: images\[0\]: field 'file_name': missing"),
     ("annotations", "bbox", r"coco.json: annotations\[0\]: field 'bbox': missing"),
     ("categories", "name", r"coco.json: categories\[0\]: field 'name': missing")],
)  # fmt: skip
def test_coco_cutouts_missing_a_field_are_one_line_errors(tmp_path, section, field, message):
    coco = {
        "images": [{"id": 1, "file_name": "photo.png", "width": 60, "height": 40}],
        "categories": [{"id": 5, "name": "box"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [20, 10, 20, 20], "area": 400,
                         "segmentation": [[20, 10, 40, 10, 40, 30, 20, 30]]}],
    }  # fmt: skip
    del coco[section][0][field]
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    with pytest.raises(InputError, match=message):
        create_generator("copy-paste", cutouts=tmp_path / "coco.json")


def test_copy_paste_errors_name_the_problem(layouts, tmp_path):
    with pytest.raises(InputError, match="--cutouts"):
        create_generator("copy-paste")
    with pytest.raises(InputError, match="does not take --cutouts"):
        create_generator("shapes", cutouts="x")
    with pytest.raises(InputError, match="unknown generator 'nope'"):
        create_generator("nope")


def test_gligen_boxes_are_xyxy_of_the_layout(layouts):
    phrases, boxes = gligen_boxes(layouts[0])
    assert phrases == ["red cup", "wooden table"]
    assert boxes == [[0.375, 0.25, 0.625, 0.5], [0.0, 0.5, 1.0, 1.0]]


def test_tiny_gligen_is_seeded_and_gets_phrases_and_xyxy_boxes(layouts, tiny_pipelines):
    adapter = create_generator("gligen", model=tiny_pipelines["gligen"], steps=2, width=64, height=64)
    calls = []
    pipeline = adapter.pipeline

    def recording_pipeline(**kwargs):
        calls.append(kwargs)
        return pipeline(**kwargs)

    adapter.pipeline = recording_pipeline
    a, b = adapter.generate(layouts[0], [5, 5])
    c = adapter.generate(layouts[0], [6])[0]
    assert a.size == (64, 64)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    assert calls[0]["gligen_boxes"] == [[0.375, 0.25, 0.625, 0.5], [0.0, 0.5, 1.0, 1.0]]
    assert calls[0]["gligen_phrases"] == ["red cup", "wooden table"]
    assert calls[0]["prompt"] == "a red cup on a wooden table"
    adapter.pipeline = pipeline
    config = adapter.config()
    assert config["pipeline"] == "StableDiffusionGLIGENPipeline" and config["steps"] == 2


def test_tiny_sd_baseline_sees_only_the_caption(layouts, tiny_pipelines):
    adapter = create_generator("sd", model=tiny_pipelines["sd"], steps=2, width=64, height=64)
    assert adapter.pipeline_inputs(layouts[0]) == {"prompt": "a red cup on a wooden table"}
    a, b = adapter.generate(layouts[0], [1, 1])
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_diffusers_not_installed_says_which_extra_to_install(monkeypatch, tmp_path, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "diffusers", None)  # "import diffusers" now fails as if absent
    layouts_path = save_layouts([Layout.model_validate(d) for d in LAYOUTS], tmp_path / "layouts.json")
    for name in ("gligen", "sd"):
        code, output = run_cli(["generate", str(layouts_path), "-g", name, "--out", str(tmp_path / name)], capsys)
        assert code == 2 and 'pip install "clis[diffusion]"' in output and "Traceback" not in output
        assert "unexpected" not in output


def test_missing_diffusion_weights_are_a_clear_error(tmp_path):
    from clis.errors import ModelUnavailableError

    with pytest.raises(ModelUnavailableError, match="--model"):
        create_generator("gligen", model=str(tmp_path / "no-such-model"), width=64, height=64)


def test_uncached_diffusion_weights_say_clis_models_fetch_in_one_line(monkeypatch, capsys, tmp_path):
    pytest.importorskip("diffusers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    layouts_path = save_layouts([Layout.model_validate(d) for d in LAYOUTS], tmp_path / "layouts.json")
    model = "clis-tests/surely-not-cached-gligen-7f3a"
    code, output = run_cli(["generate", str(layouts_path), "-g", "gligen", "--model", model,
                            "--out", str(tmp_path / "out"), "--width", "64", "--height", "64"], capsys)
    assert code == 2, output
    assert f"clis models fetch hf:{model}" in output and "--model" in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), output
    for stale in ("huggingface-cli", "stacktrace", "Traceback"):
        assert stale not in output


def test_pipeline_error_drops_pointers_to_an_unshown_stacktrace(tmp_path):
    from generators.diffusion import pipeline_unavailable_message

    diffusers_error = OSError(
        "Cannot load model org/name: the model is not fully cached locally (no snapshot) and an error occurred "
        "while trying to fetch metadata from the Hub. Please check out the root cause in the stacktrace above."
    )
    (tmp_path / "pipe").mkdir()
    message = pipeline_unavailable_message("sd", str(tmp_path / "pipe"), diffusers_error)
    assert "fetch metadata from the Hub" in message and "stacktrace" not in message
    assert "\n" not in message and "--model" in message
    assert "no such folder" in pipeline_unavailable_message("sd", str(tmp_path / "absent"), diffusers_error)


def test_default_pipelines_are_the_listed_specs():
    from clis.models import DEFAULT_GLIGEN, DEFAULT_SD, known_models
    from generators.gligen import DEFAULT_GLIGEN_MODEL
    from generators.sd import DEFAULT_SD_MODEL

    assert f"hf:{DEFAULT_GLIGEN_MODEL}" == DEFAULT_GLIGEN and f"hf:{DEFAULT_SD_MODEL}" == DEFAULT_SD
    assert {DEFAULT_GLIGEN, DEFAULT_SD} <= {row.spec for row in known_models()}


def test_instancediffusion_needs_a_checkout(monkeypatch, tmp_path):
    monkeypatch.delenv(CHECKOUT_ENV, raising=False)
    with pytest.raises(InputError, match="github.com/frank-xwang/InstanceDiffusion.*CLIS_INSTANCEDIFFUSION_DIR"):
        create_generator("instancediffusion")
    monkeypatch.setenv(CHECKOUT_ENV, str(tmp_path))
    with pytest.raises(InputError, match="no inference.py"):
        create_generator("instancediffusion")


# Mimics the command-line contract of InstanceDiffusion's inference.py: it reads --input_json
# and writes <output>/<run folder>/<k>.png plus a <k>_boxes.png preview.
FAKE_INFERENCE = """
import argparse, json, os
from PIL import Image
p = argparse.ArgumentParser()
for a in ["--input_json", "--output", "--test_config", "--ckpt"]: p.add_argument(a)
for a in ["--num_images", "--seed"]: p.add_argument(a, type=int)
for a in ["--guidance_scale", "--alpha", "--mis", "--cascade_strength"]: p.add_argument(a, type=float)
args = p.parse_args()
data = json.load(open(args.input_json))
json.dump({"input": data, "seed": args.seed, "n": args.num_images}, open("last_call.json", "w"))
folder = os.path.join(args.output, "gc7.5-seed%d-alpha0.8" % args.seed)
os.makedirs(folder)
for k in range(args.num_images):
    Image.new("RGB", (512, 512), (k, args.seed % 256, 0)).save(os.path.join(folder, "%d.png" % k))
    Image.new("RGB", (512, 512)).save(os.path.join(folder, "%d_boxes.png" % k))
"""


def test_instancediffusion_runs_the_checkout_script(layouts, tmp_path):
    checkout = tmp_path / "InstanceDiffusion"
    (checkout / "pretrained").mkdir(parents=True)
    (checkout / "pretrained" / "instancediffusion_sd15.pth").write_bytes(b"")
    (checkout / "inference.py").write_text(FAKE_INFERENCE)
    adapter = create_generator("instancediffusion", instancediffusion_dir=checkout)
    images = adapter.generate(layouts[0], [41, 42])
    call = json.loads((checkout / "last_call.json").read_text())
    assert call["seed"] == 41 and call["n"] == 2
    assert call["input"] == instancediffusion_input(layouts[0])
    assert call["input"]["annos"][0]["bbox"] == [192.0, 128.0, 128.0, 128.0]  # 0.375*512, 0.25*512, ...
    assert [im.getpixel((0, 0)) for im in images] == [(0, 41, 0), (1, 41, 0)]  # the k.png files, not previews
    assert adapter.seeds_used([41, 42]) == [41, 41]


def test_runner_writes_manifest_records_failures_and_resumes(layouts, tmp_path):
    broken = Layout.model_validate({"id": "lamp", "caption": "a lamp", "objects": [{"id": "lamp-1", "label": "lamp", "bbox": [0.1, 0.1, 0.2, 0.6]}]})
    adapter = create_generator("copy-paste", cutouts=_write_cutouts(tmp_path / "cutouts"), width=32, height=32)
    adapter_layouts = [layouts[0], broken]
    out = tmp_path / "cand"
    manifest = generate_candidates(adapter_layouts, adapter, out, n=3, seed=9)
    items = {i["layout_id"]: i for i in manifest["items"]}
    assert items["tea"]["status"] == "done" and [im["path"] for im in items["tea"]["images"]] == ["tea/0.png", "tea/1.png", "tea/2.png"]
    assert [im["seed"] for im in items["tea"]["images"]] == candidate_seeds(9, "tea", 3)
    assert items["lamp"]["status"] == "error" and "no cut-out for label 'lamp'" in items["lamp"]["error"]
    assert read_manifest(out)["summary"] == {"layouts": 2, "done": 1, "resumed": 0, "failed": 1, "images": 3}

    before = (out / "tea" / "1.png").read_bytes()
    os.utime(out / "tea" / "1.png", (1, 1))
    manifest = generate_candidates(adapter_layouts, adapter, out, n=3, seed=9, resume=True)
    assert manifest["summary"]["resumed"] == 1
    assert os.stat(out / "tea" / "1.png").st_mtime == 1  # untouched, not regenerated
    (out / "tea" / "2.png").unlink()
    generate_candidates(adapter_layouts, adapter, out, n=3, seed=9, resume=True)
    assert (out / "tea" / "1.png").read_bytes() == before  # same seed, same bytes
    with pytest.raises(InputError, match="seed changed"):
        generate_candidates(adapter_layouts, adapter, out, n=3, seed=10, resume=True)


def test_resume_regenerates_layouts_that_changed(layouts, tmp_path):
    adapter = create_generator("shapes", width=32, height=32)
    out = tmp_path / "cand"
    generate_candidates(layouts, adapter, out, n=2, seed=4)
    os.utime(out / "pets" / "0.png", (1, 1))
    # Same ids, but the cup moved: its old images show the old layout.
    moved = Layout.model_validate({**LAYOUTS[0], "objects": [{**LAYOUTS[0]["objects"][0], "bbox": [0.0, 0.0, 0.25, 0.25]},
                                                             LAYOUTS[0]["objects"][1]]})  # fmt: skip
    manifest = generate_candidates([moved, layouts[1]], adapter, out, n=2, seed=4, resume=True)
    items = {i["layout_id"]: i for i in manifest["items"]}
    assert items["pets"].get("resumed") and not items["tea"].get("resumed")
    assert os.stat(out / "pets" / "0.png").st_mtime == 1
    fresh = adapter.generate(moved, candidate_seeds(4, "tea", 2))
    for k in range(2):
        assert (out / "tea" / f"{k}.png").read_bytes() == png_bytes(fresh[k], tmp_path / "fresh.png")
    # A changed layout that now fails leaves no stale images behind for scoring to find.
    lamp = Layout.model_validate({**LAYOUTS[0], "objects": [{"id": "lamp-1", "label": "lamp", "bbox": [0.1, 0.1, 0.2, 0.2]}]})
    paste = create_generator("copy-paste", cutouts=_write_cutouts(tmp_path / "cutouts"), width=32, height=32)
    generate_candidates([layouts[0]], paste, tmp_path / "paste", n=2, seed=4)
    manifest = generate_candidates([lamp], paste, tmp_path / "paste", n=2, seed=4, resume=True)
    assert manifest["items"][0]["status"] == "error"
    assert not any((tmp_path / "paste" / "tea").iterdir())


def test_cli_generate_bad_size_is_one_line_error(tmp_path, capsys):
    layouts_path = save_layouts([Layout.model_validate(d) for d in LAYOUTS], tmp_path / "layouts.json")
    for option in ("--width", "--height"):
        code, output = run_cli(["generate", str(layouts_path), "-g", "shapes", "--out", str(tmp_path / "c"), option, "0"], capsys)
        assert code == 2 and "--width and --height must be positive" in output and "Traceback" not in output


def test_cli_generate_output_is_found_by_discovery(tmp_path, capsys):
    layouts_path = save_layouts([Layout.model_validate(d) for d in LAYOUTS], tmp_path / "layouts.json")
    out = tmp_path / "candidates"
    code, output = run_cli(["generate", str(layouts_path), "-g", "shapes", "--n", "2", "--out", str(out), "--width", "64", "--height", "64"], capsys)
    assert code == 0, output
    assert "demo" in output
    manifest = read_manifest(out)
    assert manifest["generator"] == "shapes" and manifest["demo_only"] is True and manifest["n"] == 2
    found = discover_candidates(out, load_layouts(layouts_path))
    assert {k: [p.name for p in v] for k, v in found.candidates.items()} == {"tea": ["0.png", "1.png"], "pets": ["0.png", "1.png"]}
    assert found.orphans == [] and found.missing == []

    code, output = run_cli(["generate", str(layouts_path), "-g", "copy-paste", "--out", str(out)], capsys)
    assert code == 2 and "--cutouts" in output and "Traceback" not in output
