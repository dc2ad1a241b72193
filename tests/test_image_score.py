"""CLIS-I: formulas, crops, equivalence with torchmetrics, grounding, detection, caching."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from clis.image_score import Candidate, ImageScoreConfig, ImageScorer, TextEmbeddingCache
from clis.image_score.crops import crop_pixels, region_crop
from clis.image_score.detection import Detections, Detector
from clis.image_score.functional import clip_alignment, grounding_probability, match_detections
from clis.image_score.images import ImageReadError, open_image
from clis.layout import Layout

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"


def _layout(objects, caption="a scene", layout_id="x") -> Layout:
    return Layout.model_validate({"id": layout_id, "caption": caption, "objects": objects})


# ---------------------------------------------------------------------------------------------
# A CLIP-shaped encoder whose embeddings are known by construction: an image embeds as its mean
# colour plus how dark it is, (R, G, B, 1 - max(R, G, B)); a text as the colour its first word
# names, anything else (the distractor "background") as the 4th axis.

_COLOURS = {"red": (1.0, 0.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0, 0.0), "blue": (0.0, 0.0, 1.0, 0.0)}


class ColourEncoder:
    image_size = 32
    logit_scale = 10.0

    def __init__(self):
        self.loaded = SimpleNamespace(spec="colour", fingerprint={"spec": "colour"})
        self.text_calls: list[list[str]] = []

    def preprocess(self, images):
        arrays = [
            np.asarray(im.convert("RGB").resize((32, 32), Image.NEAREST), dtype=np.float32) / 255.0 for im in images
        ]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)

    def encode_images(self, pixels):
        rgb = pixels.mean(dim=(2, 3))
        return torch.cat([rgb, 1 - rgb.max(dim=1, keepdim=True).values], dim=1)

    def encode_texts(self, texts):
        self.text_calls.append(list(texts))
        rows = [_COLOURS.get(t.split()[0], (0.0, 0.0, 0.0, 1.0)) for t in texts]
        return torch.tensor(rows), [False] * len(texts)


def _quadrants() -> Image.Image:
    """64x64: red top-left, green top-right, blue bottom-left, black bottom-right."""
    image = Image.new("RGB", (64, 64), "black")
    image.paste((255, 0, 0), (0, 0, 32, 32))
    image.paste((0, 255, 0), (32, 0, 64, 32))
    image.paste((0, 0, 255), (0, 32, 32, 64))
    return image


@pytest.fixture()
def colour_scorer():
    config = ImageScoreConfig(crop_margin=0.0, distractors=["background"])
    return ImageScorer(ColourEncoder(), config=config, num_workers=0)


def test_right_crop_scores_hand_computed_values(colour_scorer):
    layout = _layout([
        {"id": "r", "label": "square", "attributes": ["red"], "bbox": [0.0, 0.0, 0.5, 0.5]},
        {"id": "g", "label": "square", "attributes": ["green"], "bbox": [0.5, 0.0, 0.5, 0.5]},
    ], caption="red square")
    record = colour_scorer.score(_quadrants(), layout)
    red, green = record["instances"]
    # Each crop is one pure colour: cos = 1 with its own phrase.
    assert red["region"] == pytest.approx(100.0) and green["region"] == pytest.approx(100.0)
    # Vocabulary: red, green, background; own logit 10, the two others 0.
    expected_p = 100 * math.exp(10) / (math.exp(10) + 2)
    assert red["grounding"] == pytest.approx(expected_p, abs=1e-3)
    # S = (0.2 * 100 + 0.4 * P) / 0.6 without a detector.
    assert red["score"] == pytest.approx((0.2 * 100 + 0.4 * expected_p) / 0.6, abs=1e-3)
    # Whole image (0.25, 0.25, 0.25, 0.75) against "red" (1, 0, 0, 0): cos = 0.25 / sqrt(0.75).
    expected_global = 100 * 0.25 / math.sqrt(0.75)
    assert record["global"] == pytest.approx(expected_global, abs=1e-3)
    mean_instance = (red["score"] + green["score"]) / 2
    assert record["clis_i"] == pytest.approx(0.5 * expected_global + 0.5 * mean_instance, abs=1e-3)


def test_crop_of_the_right_object_beats_the_wrong_one(colour_scorer):
    right = _layout([
        {"id": "r", "label": "square", "attributes": ["red"], "bbox": [0.0, 0.0, 0.5, 0.5]},
        {"id": "b", "label": "square", "attributes": ["blue"], "bbox": [0.0, 0.5, 0.5, 0.5]},
    ])
    swapped = _layout([
        {"id": "r", "label": "square", "attributes": ["red"], "bbox": [0.0, 0.5, 0.5, 0.5]},
        {"id": "b", "label": "square", "attributes": ["blue"], "bbox": [0.0, 0.0, 0.5, 0.5]},
    ])
    good, bad = (colour_scorer.score(_quadrants(), lay) for lay in (right, swapped))
    for g, b in zip(good["instances"], bad["instances"]):
        assert g["region"] > b["region"] and g["grounding"] > b["grounding"] and g["score"] > b["score"]
    assert good["clis_i"] > bad["clis_i"]


def test_shifted_box_scores_lower(colour_scorer):
    scores = []
    for shift in (0.0, 0.125, 0.25):
        layout = _layout([{"id": "r", "label": "square", "attributes": ["red"], "bbox": [shift, 0.0, 0.5, 0.5]}])
        scores.append(colour_scorer.score(_quadrants(), layout)["instances"][0]["score"])
    assert scores[0] > scores[1] > scores[2]


def test_empty_region_prefers_a_distractor(colour_scorer):
    layout = _layout([{"id": "r", "label": "square", "attributes": ["red"], "bbox": [0.5, 0.5, 0.5, 0.5]}])
    instance = colour_scorer.score(_quadrants(), layout)["instances"][0]
    # The black crop embeds as (0, 0, 0, 1): logit 0 for "red square", 10 for "background".
    assert instance["region"] == 0.0
    assert instance["grounding"] == pytest.approx(100 / (1 + math.exp(10)), abs=1e-4)


def test_each_distinct_text_is_encoded_once(colour_scorer):
    layout = _layout([
        {"id": "a", "label": "square", "attributes": ["red"], "bbox": [0.0, 0.0, 0.5, 0.5]},
        {"id": "b", "label": "square", "attributes": ["red"], "bbox": [0.5, 0.0, 0.5, 0.5]},
    ], caption="red squares")
    list(colour_scorer.score_candidates([Candidate(_quadrants(), layout)] * 5))
    encoded = [t for call in colour_scorer.encoder.text_calls for t in call]
    assert sorted(encoded) == sorted(["red squares", "red square", "background"])


def test_disk_cache_survives_across_instances(tmp_path):
    path = tmp_path / "emb.sqlite"
    first = ColourEncoder()
    cache = TextEmbeddingCache(first.encode_texts, "colour", path)
    vectors = cache.get(["red cup", "blue cup"])
    cache.close()
    second = ColourEncoder()
    again = TextEmbeddingCache(second.encode_texts, "colour", path)
    assert torch.allclose(again.get(["blue cup", "red cup"]), vectors.flip(0))
    assert second.text_calls == []
    other_model = TextEmbeddingCache(second.encode_texts, "another-model", path)
    other_model.get(["red cup"])
    assert second.text_calls == [["red cup"]]


# ---------------------------------------------------------------------------------------------
# Formulas against independent references


def test_grounding_probability_matches_scipy_softmax():
    from scipy.special import softmax

    generator = torch.Generator().manual_seed(0)
    regions, phrases = torch.randn(3, 8, generator=generator), torch.randn(5, 8, generator=generator)
    target = torch.tensor([0, 4, 2])
    got = grounding_probability(regions, phrases, target, logit_scale=7.0)
    r, p = regions.numpy(), phrases.numpy()
    cos = (r / np.linalg.norm(r, axis=1, keepdims=True)) @ (p / np.linalg.norm(p, axis=1, keepdims=True)).T
    expected = 100 * softmax(7.0 * cos, axis=1)[np.arange(3), target.numpy()]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_clip_alignment_clamps_and_scales():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    assert clip_alignment(a, b).tolist() == pytest.approx([0.0, 100.0, 100 / math.sqrt(2)])
    assert clip_alignment(a, b, scale=2.5).tolist() == pytest.approx([0.0, 100.0, 100.0])


def test_match_detections_is_one_to_one_and_maximises_iou():
    objects = torch.tensor([[0.0, 0.0, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]])
    detections = torch.tensor([[0.5, 0.5, 0.9, 0.9], [0.0, 0.0, 0.2, 0.4], [0.55, 0.5, 0.9, 0.9]])
    index, iou = match_detections(objects, detections)
    assert index.tolist() == [1, 0]
    assert iou.tolist() == pytest.approx([0.5, 1.0])  # 0.08 / 0.16 for the half-width box


def test_crop_geometry_and_letterbox():
    assert crop_pixels([0.0, 0.0, 0.5, 0.5], 100, 100, margin=0.0) == (0, 0, 50, 50)
    assert crop_pixels([0.4, 0.4, 0.2, 0.2], 100, 100, margin=0.5) == (30, 30, 70, 70)
    assert crop_pixels([0.5, 0.5, 0.01, 0.01], 100, 100, margin=0.0, min_pixels=10) == (45, 45, 56, 56)
    image = Image.new("RGB", (100, 50), (255, 0, 0))
    crop = region_crop(image, [0.0, 0.0, 1.0, 1.0], size=20, margin=0.0)
    assert crop.size == (20, 20)
    assert crop.getpixel((10, 10)) == (255, 0, 0)  # content is centred
    assert crop.getpixel((10, 0)) != (255, 0, 0)  # the letterbox band above it is not


# ---------------------------------------------------------------------------------------------
# Bad images


def test_open_image_failures(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), "red").save(good)
    assert open_image(good).size == (40, 30)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[:60])
    text = tmp_path / "text.jpg"
    text.write_text("not an image")
    cases = {
        tmp_path / "missing.png": "file not found",
        truncated: "corrupt or truncated",
        text: "not an image",
        tmp_path: "not a regular file",
    }
    for path, reason in cases.items():
        with pytest.raises(ImageReadError, match=reason):
            open_image(path)
    with pytest.raises(ImageReadError, match="exceeds the limit of 1000"):
        open_image(good, max_pixels=1000)


def test_elongated_images_are_refused_from_their_size_alone(tmp_path):
    # 4000 x 1 has few pixels, but a transform that resizes the short side to 32 makes it
    # 128000 x 32 = 4,096,000 pixels.
    strip = tmp_path / "strip.png"
    Image.new("RGB", (4000, 1), "white").save(strip)
    assert open_image(strip, max_pixels=5_000_000, resize_side=32).size == (4000, 1)
    with pytest.raises(ImageReadError, match=r"4000x1 is too elongated .*4096000 pixels, past the limit of 4000000"):
        open_image(strip, max_pixels=4_000_000, resize_side=32)
    with pytest.raises(ImageReadError, match="too elongated"):  # in-memory images too
        open_image(Image.new("RGB", (1, 4000)), max_pixels=4_000_000, resize_side=32)


def test_any_failure_while_preparing_an_image_becomes_its_error_record():
    class BrokenTransform(ColourEncoder):
        def preprocess(self, images):
            if images[0].getpixel((0, 0)) == (0, 0, 255):
                raise RuntimeError("transform ran out of memory")
            return super().preprocess(images)

    scorer = ImageScorer(BrokenTransform(), config=ImageScoreConfig(distractors=["background"]), num_workers=0)
    layout = _layout([{"id": "o", "label": "square", "attributes": ["red"], "bbox": [0.1, 0.1, 0.5, 0.5]}])
    red, blue = Image.new("RGB", (40, 40), "red"), Image.new("RGB", (40, 40), "blue")
    records = list(scorer.score_candidates([Candidate(blue, layout), Candidate(red, layout)]))
    assert records[0]["error"].endswith("transform ran out of memory") and records[0]["clis"] is None
    assert records[1]["error"] is None and records[1]["clis"] is not None


def test_blank_distractors_are_rejected():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="distractor 1 is blank"):
        ImageScoreConfig(distractors=["background", "  "])


# ---------------------------------------------------------------------------------------------
# Real (tiny) models


@pytest.fixture(scope="module")
def hf_clip(tiny_models):
    from clis.models import load_model
    from clis.models.clip import ClipEncoder

    return ClipEncoder(load_model(tiny_models["hf_clip"], "clip"))


class _TensorFeatures(torch.nn.Module):
    """transformers 5's ``get_*_features`` return an output object whose ``pooler_output`` is the
    projected embedding; torchmetrics 1.9 expects the tensor itself. Its documented hook for
    "compatible" models takes any object with these two methods."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.config = model.config

    def get_image_features(self, *args, **kwargs):
        out = self.inner.get_image_features(*args, **kwargs)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def get_text_features(self, *args, **kwargs):
        out = self.inner.get_text_features(*args, **kwargs)
        return out if isinstance(out, torch.Tensor) else out.pooler_output


def test_global_term_equals_torchmetrics_clipscore(hf_clip):
    from torchmetrics.multimodal import CLIPScore

    model, processor = _TensorFeatures(hf_clip.model), hf_clip.loaded.processor
    scorer = ImageScorer(hf_clip, num_workers=0)
    photos = sorted(EXAMPLES.glob("*.jpg"))
    captions = ["a red cup", "tree", "an astronaut", "two dogs on a sofa", "the", "cat", "a horse"]
    positives = 0
    for photo, other in zip(photos, captions):
        image = Image.open(photo).convert("RGB")
        for caption in ("the sky", other):
            layout = _layout([{"id": "o", "label": "cup", "bbox": [0.1, 0.1, 0.5, 0.5]}], caption=caption)
            ours = scorer.score(image, layout)["global"]
            metric = CLIPScore(model_name_or_path=lambda: (model, processor))
            metric.update(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1), caption)
            reference = float(metric.compute())
            assert ours == pytest.approx(reference, abs=1e-3)
            positives += reference > 0
    assert positives >= 3  # the comparison covered non-clamped values, not only zeros


def test_long_caption_is_cut_keeping_its_end_token(tiny_models):
    """Within the context our global term is torchmetrics' CLIPScore (test above). Beyond it we
    score the caption's first tokens *with* the end token CLIP pools at; torchmetrics cuts the
    token ids and loses that token, as docs/clis-i.md explains."""
    from torchmetrics.multimodal import CLIPScore

    from clis.models import load_model
    from clis.models.clip import ClipEncoder

    # The tiny random CLIP puts photos and long texts at negative cosines, where both scores
    # clamp to 0 and agree trivially. Flipping its text projection (any weights must give the
    # same equivalence) makes those cosines positive.
    encoder = ClipEncoder(load_model(tiny_models["hf_clip"], "clip"))
    with torch.no_grad():
        encoder.model.text_projection.weight.neg_()
    model, processor = _TensorFeatures(encoder.model), encoder.loaded.processor
    tokenizer = processor.tokenizer
    image = Image.open(EXAMPLES / "coffee.jpg").convert("RGB")
    pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)

    def torchmetrics_score(caption: str) -> float:
        metric = CLIPScore(model_name_or_path=lambda: (model, processor))
        metric.update(pixels, caption)
        return float(metric.compute())

    scorer = ImageScorer(encoder, num_workers=0)
    long_captions = ["a red cup on a wooden table " * 15, "two dogs asleep under a green sofa " * 15]
    assert encoder.truncated([*long_captions, "a red cup"]) == [True, True, False]
    ours = []
    for caption in long_captions:
        # The same caption cut by hand to the context, end token kept: it fits, so torchmetrics
        # scores it exactly as CLIP sees it.
        ids = tokenizer(caption, truncation=True, max_length=encoder.context_length)["input_ids"]
        cut = tokenizer.decode(ids, skip_special_tokens=True)
        assert tokenizer(cut)["input_ids"] == ids and ids[-1] == tokenizer.eos_token_id
        layout = _layout([{"id": "o", "label": "cup", "bbox": [0.1, 0.1, 0.5, 0.5]}], caption=caption)
        ours.append(scorer.score(image, layout)["global"])
        reference = torchmetrics_score(cut)
        assert reference > 0 and ours[-1] == pytest.approx(reference, abs=1e-3)
    # torchmetrics without the end token pools the start token instead, which is the same for
    # every text: two unrelated long captions get one score, where ours tell them apart.
    with pytest.warns(UserWarning, match="longer than"):
        theirs = [torchmetrics_score(caption) for caption in long_captions]
    assert theirs[0] == theirs[1] and ours[0] != pytest.approx(ours[1], abs=1e-3)


@pytest.mark.parametrize("name", ["grounding_dino", "owlv2"])
def test_detector_boxes_match_transformers_post_processing(tiny_models, name):
    """Our box geometry (incl. OWLv2's square padding) against transformers' own helpers."""
    from clis.models import load_model

    detector = Detector(load_model(tiny_models[name], "detector"))
    image = Image.open(EXAMPLES / "coffee.jpg").convert("RGB")  # 512x341: OWLv2 pads it
    processor = detector.processor
    size = [(image.height, image.width)]
    with torch.inference_mode():
        if name == "grounding_dino":
            _, boxes = detector._grounding_dino([image], [["cup", "saucer"]])
            inputs = processor(images=[image], text=["cup. saucer."], return_tensors="pt")
            ref = processor.post_process_grounded_object_detection(
                detector.model(**inputs), inputs["input_ids"], threshold=0.0, text_threshold=0.0, target_sizes=size
            )[0]
        else:
            _, boxes = detector._owl([image], [["cup", "saucer"]])
            inputs = processor(text=[["cup", "saucer"]], images=[image], return_tensors="pt")
            ref = processor.image_processor.post_process_object_detection(
                detector.model(**inputs), threshold=0.0, target_sizes=size
            )[0]
    theirs = ref["boxes"].float().clone()
    theirs[:, 0::2] = theirs[:, 0::2].clamp(0, image.width)
    theirs[:, 1::2] = theirs[:, 1::2].clamp(0, image.height)
    ours = boxes[0] * torch.tensor([image.width, image.height] * 2)
    assert ours.shape == theirs.shape and ours.shape[0] > 0
    assert torch.allclose(ours, theirs, atol=1e-2)


@pytest.mark.parametrize("name", ["grounding_dino", "owlv2"])
def test_detection_terms_on_real_image(tiny_models, hf_clip, name):
    from clis.image_score.config import DetectionConfig
    from clis.models import load_model

    detector = Detector(load_model(tiny_models[name], "detector"), DetectionConfig(score_threshold=0.0))
    scorer = ImageScorer(hf_clip, detector, num_workers=0)
    layout = _layout([
        {"id": "eye-1", "label": "eye", "bbox": [0.3, 0.28, 0.16, 0.22]},
        {"id": "eye-2", "label": "eye", "bbox": [0.64, 0.35, 0.12, 0.2]},
        {"id": "nose-1", "label": "nose", "bbox": [0.51, 0.72, 0.14, 0.17]},
    ], caption="a cat")
    record = scorer.score(EXAMPLES / "chelsea.jpg", layout)
    eye1, eye2, nose = record["instances"]
    for instance, expected in ((eye1, 2), (eye2, 2), (nose, 1)):
        det = instance["detection"]
        assert set(det) == {"found", "iou", "score", "count", "expected_count", "count_match"}
        assert det["expected_count"] == expected
        assert det["count_match"] == (det["count"] == expected)
        assert 0.0 <= det["iou"] <= 1.0
        assert det["found"] == (det["score"] is not None)
        region, grounding = instance["region"], instance["grounding"]
        assert instance["score"] == pytest.approx((0.2 * region + 0.4 * grounding + 0.4 * 100 * det["iou"]), abs=1e-3)
    assert eye1["detection"]["count"] == eye2["detection"]["count"]
    # One-to-one matching: as many eyes are found as there are eye detections, at most two.
    found_eyes = eye1["detection"]["found"] + eye2["detection"]["found"]
    assert found_eyes == min(2, eye1["detection"]["count"])
    assert nose["detection"]["found"] == (nose["detection"]["count"] >= 1)


def test_detection_terms_with_hand_made_detections(hf_clip):
    class FixedDetector:
        def detect(self, images, queries):
            boxes = torch.tensor([[0.1, 0.1, 0.3, 0.3], [0.6, 0.6, 0.8, 0.8]])
            return [{"eye": Detections(boxes, torch.tensor([0.9, 0.8])), "nose": Detections(torch.zeros(0, 4), torch.zeros(0))}]

    scorer = ImageScorer(hf_clip, FixedDetector(), num_workers=0)
    layout = _layout([
        {"id": "e1", "label": "eye", "bbox": [0.6, 0.6, 0.2, 0.2]},   # exactly the 2nd detection
        {"id": "e2", "label": "eye", "bbox": [0.1, 0.1, 0.1, 0.2]},   # half of the 1st detection
        {"id": "n", "label": "nose", "bbox": [0.4, 0.4, 0.2, 0.2]},
    ])
    e1, e2, n = scorer.score(Image.new("RGB", (50, 50)), layout)["instances"]
    assert e1["detection"] == {"found": True, "iou": 1.0, "score": 0.8, "count": 2, "expected_count": 2, "count_match": True}
    assert e2["detection"]["iou"] == pytest.approx(0.5) and e2["detection"]["score"] == pytest.approx(0.9)
    assert n["detection"] == {"found": False, "iou": 0.0, "score": None, "count": 0, "expected_count": 1, "count_match": False}


def test_open_clip_backend_scores(tiny_models):
    from clis.models import load_model
    from clis.models.clip import ClipEncoder

    encoder = ClipEncoder(load_model(tiny_models["open_clip"], "clip"))
    layout = _layout([{"id": "o", "label": "cup", "bbox": [0.1, 0.1, 0.5, 0.5]}])
    record = ImageScorer(encoder, num_workers=0).score(EXAMPLES / "coffee.jpg", layout)
    assert record["error"] is None and 0.0 <= record["clis_i"] <= 100.0
