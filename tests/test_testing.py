"""clis.testing: the tiny models work for the offline demo, and `python -m clis.testing` builds them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from pipeline_helpers import run_cli


@pytest.mark.parametrize("size", [(64, 64), (32, 32), (256, 64)], ids=["square-64", "square-32", "wide-4to1"])
def test_tiny_grounding_dino_scores_an_image_alone_in_its_batch(tiny_models, tmp_path, capsys, size):
    """A square 64 px image alone in a detector batch used to end in a 1x1 feature map, where
    GroupNorm fails ("Expected more than 1 value per channel"): every candidate failed."""
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", size, (120, 30, 60)).save(images / "tea.png")
    layouts = tmp_path / "layouts.json"
    layouts.write_text(json.dumps([{"id": "tea", "caption": "a red cup", "objects": [
        {"id": "cup-1", "label": "cup", "bbox": [0.25, 0.25, 0.5, 0.5]}]}]))
    out = tmp_path / "scores.jsonl"
    code, output = run_cli(["score", str(images), str(layouts), "--out", str(out), "--no-layout-score", "-q",
                            "--image-model", tiny_models["hf_clip"], "--detector", tiny_models["grounding_dino"]],
                           capsys)
    record = json.loads(out.read_text().splitlines()[0])
    assert code == 0 and record["error"] is None, (output, record["error"])
    assert record["instances"][0]["detection"] is not None


def test_python_m_clis_testing_builds_the_tiny_models_and_prints_their_specs(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "CLIS_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-m", "clis.testing", str(tmp_path / "tiny"), "--json"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    specs = json.loads(result.stdout)
    assert set(specs) == {"hf_clip", "open_clip", "grounding_dino", "owlv2", "causal_lm", "sam", "vlm"}
    for spec in specs.values():
        assert os.path.dirname(spec) == str(tmp_path / "tiny") and os.listdir(spec)
    # Without --json: one "name: spec" line each, then example commands that use them.
    result = subprocess.run([sys.executable, "-m", "clis.testing", str(tmp_path / "tiny")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"hf_clip: {specs['hf_clip']}" in result.stdout
    assert f"--image-model {specs['hf_clip']}" in result.stdout and "clis score" in result.stdout
    assert "clis bench corrupt" in result.stdout and "clis pick" in result.stdout


def test_python_m_clis_testing_needs_a_folder():
    result = subprocess.run([sys.executable, "-m", "clis.testing"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "usage" in result.stderr.lower()
