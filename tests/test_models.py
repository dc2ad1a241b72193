"""Model specs, the registry, tiny test models, ClipEncoder and `clis models`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clis.errors import ModelSpecError, ModelUnavailableError
from clis.models import TASKS, fetch_model, known_models, load_model, locate_model, parse_spec
from clis.models.clip import ClipEncoder

# ---------------------------------------------------------------------------------------------
# spec parsing


@pytest.mark.parametrize(
    "text, kind, backend, repo, revision",
    [
        ("hf:openai/clip-vit-base-patch32", "hf_hub", "hf", "openai/clip-vit-base-patch32", None),
        ("hf:org/name@v1.0", "hf_hub", "hf", "org/name", "v1.0"),
        ("open_clip:ViT-B-32/laion2b_s34b_b79k", "open_clip_tag", "open_clip", "ViT-B-32", "laion2b_s34b_b79k"),
        ("open_clip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "open_clip_hub", "open_clip",
         "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", None),
        ("embedded:smollm2", "embedded", "embedded", "smollm2", None),
        ("embedded:minilm", "embedded", "embedded", "minilm", None),
    ],
)
def test_parse_remote_specs(text, kind, backend, repo, revision):
    spec = parse_spec(text)
    assert (spec.kind, spec.backend, spec.repo, spec.revision) == (kind, backend, repo, revision)
    assert spec.path is None and spec.is_hub == (backend != "embedded")


def test_parse_local_specs(tmp_path):
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text("{}")
    (hf_dir / "weights.safetensors").write_bytes(b"")
    oc_dir = tmp_path / "oc"
    oc_dir.mkdir()
    (oc_dir / "open_clip_config.json").write_text("{}")
    (oc_dir / "ckpt.pt").write_bytes(b"")

    assert parse_spec(str(hf_dir)).kind == "hf_dir"
    assert parse_spec(f"hf:{hf_dir}").kind == "hf_dir"
    assert parse_spec(str(hf_dir / "weights.safetensors")).kind == "hf_file"
    assert parse_spec(str(oc_dir)).kind == "open_clip_dir"
    assert parse_spec(f"open_clip:{oc_dir}").kind == "open_clip_dir"
    assert parse_spec(str(oc_dir / "ckpt.pt")).kind == "open_clip_file"
    tagged = parse_spec(f"open_clip:ViT-B-32/{oc_dir / 'ckpt.pt'}")
    assert (tagged.kind, tagged.repo, tagged.path) == ("open_clip_tag", "ViT-B-32", oc_dir / "ckpt.pt")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty model spec"),
        ("openai/clip-vit-base-patch32", "hf:openai/clip-vit-base-patch32"),  # suggests the prefix
        ("embedded:gpt5", "unknown embedded model"),
        ("open_clip:ViT-B-32", "open_clip:ARCH/PRETRAINED"),
        ("hf:not a repo", "hf:ORG/NAME"),
        ("hf:org/name@", "hf:ORG/NAME@REVISION"),
        ("/no/such/model.safetensors", "no such file"),
        ("clip", "expected one of"),
    ],
)
def test_parse_errors_name_the_expected_form(text, fragment):
    with pytest.raises(ModelSpecError) as info:
        parse_spec(text)
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_local_paths_without_config_are_rejected(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelSpecError, match="has no config.json or open_clip_config.json"):
        parse_spec(str(bare))
    with pytest.raises(ModelSpecError, match="looked beside it"):
        parse_spec(str(bare / "model.safetensors"))
    (bare / "notes.txt").write_text("x")
    with pytest.raises(ModelSpecError, match="not a checkpoint"):
        parse_spec(str(bare / "notes.txt"))


# ---------------------------------------------------------------------------------------------
# registry: every tiny model kind loads from disk through the spec path


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8))


def test_tiny_clip_models_load_and_encode(tiny_models, image):
    for name in ("hf_clip", "open_clip"):
        loaded = load_model(tiny_models[name], "clip")
        assert loaded.backend == ("open_clip" if name == "open_clip" else "hf")
        assert not loaded.model.training
        encoder = ClipEncoder(loaded)
        pixels = encoder.preprocess([image, image.convert("L")])
        assert pixels.shape == (2, 3, encoder.image_size, encoder.image_size) == (2, 3, 32, 32)
        assert encoder.encode_images(pixels).shape == (2, 16)
        feats, truncated = encoder.encode_texts(["a red cup", "a dog on a sofa", "x"])
        assert feats.shape == (3, 16) and truncated == [False, False, False]
        empty, flags = encoder.encode_texts([])
        assert empty.shape == (0, encoder.embed_dim) == (0, 16) and flags == []
        assert encoder.encode_images(encoder.preprocess([])).shape == (0, 16)


def test_tiny_detectors_forward(tiny_models, image):
    gdino = load_model(tiny_models["grounding_dino"], "detector")
    inputs = gdino.processor(images=image, text="a cat. a dog.", return_tensors="pt")
    with torch.no_grad():
        out = gdino.model(**inputs)
    queries = gdino.model.config.num_queries
    assert out.pred_boxes.shape == (1, queries, 4)
    result = gdino.processor.post_process_grounded_object_detection(
        out, inputs.input_ids, threshold=0.0, text_threshold=0.0, target_sizes=[image.size[::-1]]
    )[0]
    assert result["boxes"].shape[1] == 4

    owl = load_model(tiny_models["owlv2"], "detector")
    inputs = owl.processor(text=[["a cat", "a dog"]], images=image, return_tensors="pt")
    with torch.no_grad():
        out = owl.model(**inputs)
    patches = (32 // 8) ** 2
    assert out.logits.shape == (1, patches, 2) and out.pred_boxes.shape == (1, patches, 4)


def test_tiny_causal_lm_chat_and_logits(tiny_models):
    lm = load_model(tiny_models["causal_lm"], "causal-lm")
    tok = lm.processor
    prompt = tok.apply_chat_template([{"role": "user", "content": "Is the cup on the table?"}],
                                     add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|assistant|>\n") and "Is the cup on the table?" in prompt
    assert tok.eos_token and tok.pad_token
    batch = tok(["The cup is on the table.", "a cat"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = lm.model(**batch).logits
    assert logits.shape == (2, batch.input_ids.shape[1], len(tok))


def test_tiny_sam_box_prompt(tiny_models, image):
    sam = load_model(tiny_models["sam"], "sam")
    inputs = sam.processor(images=image, input_boxes=[[[8, 8, 40, 30]]], return_tensors="pt")
    with torch.no_grad():
        out = sam.model(**inputs)
    masks = sam.processor.image_processor.post_process_masks(
        out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
    )
    assert masks[0].shape[-2:] == (image.height, image.width)


@pytest.mark.parametrize(
    "name, task, fragment",
    [
        ("hf_clip", "detector", "'clip' model, but task 'detector'"),
        ("grounding_dino", "clip", "'grounding-dino' model, but task 'clip'"),
        ("sam", "causal-lm", "not a causal language model"),
        ("owlv2", "text-embedding", "not a text encoder"),
        ("open_clip", "detector", "serves task 'clip'"),
        ("hf_clip", "segmentation", "unknown model task"),
    ],
)
def test_task_mismatch_is_a_clear_error(tiny_models, name, task, fragment):
    with pytest.raises(ModelSpecError, match=fragment):
        load_model(tiny_models[name], task)


def test_tasks_constant_lists_every_task():
    assert set(TASKS) == {"clip", "detector", "causal-lm", "text-embedding", "sam", "vlm"}


# ---------------------------------------------------------------------------------------------
# ClipEncoder against direct model calls


def test_hf_clip_encoder_matches_clipmodel(tiny_models, image):
    from transformers import CLIPModel, CLIPProcessor

    encoder = ClipEncoder(load_model(tiny_models["hf_clip"], "clip"))
    model = CLIPModel.from_pretrained(tiny_models["hf_clip"]).eval()
    processor = CLIPProcessor.from_pretrained(tiny_models["hf_clip"])
    texts = ["a red cup on a table", "a cat"]
    inputs = processor(text=texts, images=[image], return_tensors="pt", padding=True)
    with torch.no_grad():
        want_img = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
        want_txt = model.get_text_features(input_ids=inputs["input_ids"],
                                           attention_mask=inputs["attention_mask"]).pooler_output
    pixels = encoder.preprocess([image])
    torch.testing.assert_close(pixels, inputs["pixel_values"])
    torch.testing.assert_close(encoder.encode_images(pixels), want_img)
    got_txt, _ = encoder.encode_texts(texts)
    torch.testing.assert_close(got_txt, want_txt)
    assert encoder.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()))


def test_open_clip_encoder_matches_open_clip(tiny_models, image):
    import open_clip

    encoder = ClipEncoder(load_model(tiny_models["open_clip"], "clip"))
    name = f"local-dir:{tiny_models['open_clip']}"
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    tokenizer = open_clip.get_tokenizer(name)
    model.eval()
    with torch.no_grad():
        want_img = model.encode_image(preprocess(image).unsqueeze(0))
        want_txt = model.encode_text(tokenizer(["a red cup"]))
    torch.testing.assert_close(encoder.encode_images(encoder.preprocess([image])), want_img)
    torch.testing.assert_close(encoder.encode_texts(["a red cup"])[0], want_txt)


def test_both_backends_tokenise_like_clip(tiny_models):
    """The HF tokenizer built from open_clip's BPE file gives the same ids as open_clip's."""
    import open_clip

    hf = load_model(tiny_models["hf_clip"], "clip").processor.tokenizer
    simple = open_clip.get_tokenizer(f"local-dir:{tiny_models['open_clip']}")
    text = "A photo of two red cups, on a wooden table!"
    want = simple([text])[0]
    want = want[: int((want != 0).sum())].tolist()
    assert hf(text)["input_ids"] == want


def test_long_text_is_truncated_and_flagged(tiny_models):
    long_text = " ".join(["red"] * 80)  # 80 words + start/end tokens > 77
    edge_text = " ".join(["red"] * 75)  # exactly 77 tokens: fits
    for name in ("hf_clip", "open_clip"):
        encoder = ClipEncoder(load_model(tiny_models[name], "clip"))
        feats, truncated = encoder.encode_texts([long_text, edge_text, "red"])
        assert truncated == [True, False, False]
        # Truncation keeps the first 77 tokens, so a longer tail cannot change the embedding.
        longer, _ = encoder.encode_texts([long_text + " blue green cat"])
        torch.testing.assert_close(longer[0], feats[0])


def test_encoder_refuses_non_clip_models(tiny_models):
    with pytest.raises(ModelSpecError, match="not 'clip'"):
        ClipEncoder(load_model(tiny_models["causal_lm"], "causal-lm"))


# ---------------------------------------------------------------------------------------------
# checkpoint files, safety and fingerprints


def test_checkpoint_file_beside_config(tiny_models, tmp_path, image):
    from safetensors.torch import load_file

    src = Path(tiny_models["hf_clip"])
    folder = tmp_path / "clip-copy"
    shutil.copytree(src, folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").rename(folder / "finetuned.safetensors")
    torch.save(state, folder / "finetuned.pt")  # plain tensors: allowed under weights_only=True

    reference = ClipEncoder(load_model(str(src), "clip"))
    pixels = reference.preprocess([image])
    want = reference.encode_images(pixels)
    for name in ("finetuned.safetensors", "finetuned.pt"):
        loaded = load_model(str(folder / name), "clip")
        torch.testing.assert_close(ClipEncoder(loaded).encode_images(pixels), want)
        assert loaded.fingerprint["files"].keys() == {name}


def test_pickled_code_is_refused(tiny_models, tmp_path):
    folder = tmp_path / "evil"
    shutil.copytree(tiny_models["hf_clip"], folder)
    (folder / "model.safetensors").unlink()
    torch.save({"weights": Path("/etc/passwd")}, folder / "evil.pt")  # an arbitrary object
    with pytest.raises(ModelSpecError, match="safely"):
        load_model(str(folder / "evil.pt"), "clip")


def test_mismatched_checkpoint_is_reported(tiny_models, tmp_path):
    folder = tmp_path / "mismatch"
    shutil.copytree(tiny_models["hf_clip"], folder)
    torch.save({"something.else": torch.zeros(2)}, folder / "other.pt")
    with pytest.raises(ModelSpecError, match="does not match config.json"):
        load_model(str(folder / "other.pt"), "clip")


def test_open_clip_checkpoint_forms(tiny_models, tmp_path, image):
    src = Path(tiny_models["open_clip"])
    reference = ClipEncoder(load_model(str(src), "clip"))
    pixels = reference.preprocess([image])
    want = reference.encode_images(pixels)
    ckpt = src / "open_clip_model.safetensors"
    got = ClipEncoder(load_model(str(ckpt), "clip")).encode_images(pixels)
    torch.testing.assert_close(got, want)


def test_fingerprint_is_sha256_of_weights(tiny_models):
    import hashlib

    loaded = load_model(tiny_models["sam"], "sam")
    weights = Path(tiny_models["sam"]) / "model.safetensors"
    assert loaded.fingerprint["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert loaded.fingerprint["spec"] == tiny_models["sam"]
    json.dumps(loaded.fingerprint)  # must be plain data for manifests


def test_dtype_and_device_are_applied(tiny_models):
    loaded = load_model(tiny_models["causal_lm"], "causal-lm", dtype="bfloat16")
    assert loaded.dtype == torch.bfloat16 == next(loaded.model.parameters()).dtype
    assert loaded.device == "cpu"
    with pytest.raises(ModelSpecError, match="unknown dtype"):
        load_model(tiny_models["causal_lm"], "causal-lm", dtype="int3")


# ---------------------------------------------------------------------------------------------
# offline behaviour


@pytest.fixture
def empty_offline_hub(monkeypatch, tmp_path):
    """Offline, with an empty Hugging Face cache (huggingface_hub reads the path at call time)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    return tmp_path


@pytest.mark.parametrize(
    "spec, task",
    [
        ("hf:clis-tests/surely-not-cached-model-7f3a", "clip"),
        ("hf:clis-tests/surely-not-cached-model-7f3a@v2", "detector"),
        ("open_clip:ViT-B-32/laion2b_s34b_b79k", "clip"),
        ("open_clip:hf-hub:clis-tests/surely-not-cached-open-clip", "clip"),
    ],
)
def test_offline_missing_hub_model_says_how_to_get_it(empty_offline_hub, spec, task):
    with pytest.raises(ModelUnavailableError) as info:
        load_model(spec, task)
    message = str(info.value)
    assert "\n" not in message
    assert spec in message and "not in the local cache" in message
    assert f"clis models fetch {spec}" in message and "local path" in message
    with pytest.raises(ModelUnavailableError, match="clis models fetch"):
        fetch_model(spec)
    assert locate_model(spec) is None


def test_cached_hub_snapshot_loads_offline_with_its_commit(empty_offline_hub, tiny_models):
    """A snapshot laid out like huggingface_hub's cache loads offline and reports its commit."""
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = Path(constants.HF_HUB_CACHE) / "models--clis-tests--tiny-sam"
    shutil.copytree(tiny_models["sam"], repo_dir / "snapshots" / commit)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    loaded = load_model("hf:clis-tests/tiny-sam", "sam")
    assert loaded.fingerprint == {"spec": "hf:clis-tests/tiny-sam", "repo": "clis-tests/tiny-sam", "revision": commit}
    assert locate_model("hf:clis-tests/tiny-sam") == repo_dir / "snapshots" / commit
    assert fetch_model("hf:clis-tests/tiny-sam") == repo_dir / "snapshots" / commit


# ---------------------------------------------------------------------------------------------
# embedded models


def test_embedded_minilm_is_a_real_sentence_encoder():
    from clis.models.text import TextEmbedder

    embedder = TextEmbedder(load_model("embedded:minilm", "text-embedding"))
    vectors = embedder.encode(["dog", "puppy", "airplane"])
    assert vectors.shape == (3, 384)
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(3))
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.1


def test_minilm_matches_sentence_transformers():
    """Independent reference: the sentence-transformers pipeline declared in the model folder."""
    from sentence_transformers import SentenceTransformer

    from clis.models.embedded import embedded_source
    from clis.models.text import TextEmbedder

    texts = ["a cup on a table", "a red car"]
    want = SentenceTransformer(str(embedded_source("minilm")), device="cpu").encode(texts, convert_to_tensor=True)
    got = TextEmbedder(load_model("embedded:minilm", "text-embedding")).encode(texts)
    torch.testing.assert_close(got, want.float(), atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_embedded_smollm2_converts_once_and_prefers_plausible_sentences(clis_cache_dir, monkeypatch):
    lm = load_model("embedded:smollm2", "causal-lm")  # the one slow GGUF read + conversion
    converted = list((clis_cache_dir / "embedded").glob("smollm2-*/model.safetensors"))
    assert len(converted) == 1 and lm.backend == "gguf"

    def loglik(text: str) -> float:
        ids = lm.processor(text, return_tensors="pt").input_ids
        with torch.no_grad():
            logits = lm.model(ids).logits[0, :-1].log_softmax(-1)
        return float(logits.gather(1, ids[0, 1:, None]).sum())

    assert loglik("The cup is on the table.") > loglik("The table is on the cup.")

    # A second load must come from the converted safetensors, never from the GGUF again.
    from transformers import AutoModelForCausalLM

    original = AutoModelForCausalLM.from_pretrained.__func__

    def no_gguf(cls, *args, **kwargs):
        assert "gguf_file" not in kwargs, "the GGUF was read again"
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(no_gguf))
    warm = load_model("embedded:smollm2", "causal-lm")
    ids = lm.processor("A cat sits on a sofa.", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(warm.model(ids).logits, lm.model(ids).logits)


# ---------------------------------------------------------------------------------------------
# inventory and CLI


def test_known_models_cover_every_default():
    from clis import models

    rows = {row.spec: row for row in known_models()}
    for const in ("DEFAULT_CLIP", "DEFAULT_DETECTOR", "OWLV2_DETECTOR", "DEFAULT_LLM", "DEFAULT_TEXT_EMBEDDER",
                  "DEFAULT_SAM", "DEFAULT_GLIGEN", "DEFAULT_SD"):
        assert getattr(models, const) in rows
    assert rows["embedded:minilm"].available and rows["embedded:minilm"].task == "text-embedding"
    assert rows["embedded:smollm2"].available
    assert rows[models.DEFAULT_GLIGEN].task == rows[models.DEFAULT_SD].task == "generator"
    assert all(row.task in (*TASKS, "generator") for row in rows.values())


def test_open_clip_cache_files_of_known_models_match_open_clip():
    """known_models() finds open_clip tags without importing open_clip; its file list must be open_clip's."""
    from clis.models import hub, inventory, parse_spec

    for spec, _task, _role, _description, files in inventory._KNOWN:
        if parse_spec(spec).kind == "open_clip_tag":
            _, cfg = hub.open_clip_tag_config(parse_spec(spec))
            assert list(files) == hub._open_clip_candidates(cfg), spec


def test_cli_models_list_and_fetch(tiny_models, empty_offline_hub):
    from typer.testing import CliRunner

    from clis.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    assert "embedded:minilm" in result.output and "hf:openai/clip-vit-base-patch32" in result.output
    assert "text-embedding" in result.output
    result = runner.invoke(app, ["models", "list", "--json"])
    rows = {row["spec"]: row for row in json.loads(result.output)}
    assert rows["embedded:minilm"]["available"] is True and rows["embedded:minilm"]["location"]
    assert rows["hf:openai/clip-vit-base-patch32"]["available"] is False  # the hub cache is empty here

    result = runner.invoke(app, ["models", "fetch", tiny_models["sam"]])
    assert result.exit_code == 0 and "tiny-sam" in result.output

    result = runner.invoke(app, ["models", "fetch", "hf:clis-tests/surely-not-cached-model-7f3a"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "clis models fetch" in result.output
    result = runner.invoke(app, ["models", "fetch", "nonsense"])
    assert result.exit_code == 2 and "expected one of" in result.output
