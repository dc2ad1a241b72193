"""The fast paths of CLIS-I give the same numbers as the plain ones.

Text batches trimmed to their longest text against the full 77-token forward, length-sorted
text batches, global-only scoring, autocast, the letterboxed crops' transform, and the
detector's same-size batches against one image at a time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from clis.image_score import ImageScoreConfig, ImageScorer, TextEmbeddingCache
from clis.image_score.crops import region_crop
from clis.image_score.detection import Detector
from clis.image_score.detection_terms import DetectionTerms
from clis.image_score.config import DetectionConfig
from clis.layout import Layout

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"
TEXTS = ["a cup", "a red cup on a wooden table next to a small green plant", "dog",
         "word " * 90]  # the last one is cut to the context


@pytest.fixture(scope="module")
def encoders(tiny_models):
    from clis.models import load_model
    from clis.models.clip import ClipEncoder

    return {name: ClipEncoder(load_model(tiny_models[name], "clip")) for name in ("open_clip", "hf_clip")}


def _layout(caption="a red cup and a dog") -> Layout:
    return Layout.model_validate({"id": "x", "caption": caption, "objects": [
        {"id": "cup-1", "label": "cup", "attributes": ["red"], "bbox": [0.1, 0.1, 0.4, 0.5]},
        {"id": "dog-1", "label": "dog", "bbox": [0.5, 0.3, 0.4, 0.6]}]})


def test_open_clip_trimmed_texts_equal_the_full_context_forward(encoders):
    encoder = encoders["open_clip"]
    model, tokenizer = encoder.model, encoder._tokenizer
    tokens = tokenizer(TEXTS)
    seen = []
    hook = model.transformer.register_forward_pre_hook(lambda _, args, kwargs: seen.append(args[0].shape[1]),
                                                       with_kwargs=True)
    try:
        trimmed, truncated = encoder.encode_texts(TEXTS[:3])
        # The independent reference: open_clip's own forward on the 77-token padded ids.
        with torch.no_grad():
            padded = model.encode_text(tokens[:3])
    finally:
        hook.remove()
    longest = int((tokens[:3] != 0).sum(dim=1).max())
    assert seen[0] == longest < 77  # the batch ran only as long as its longest text
    assert truncated == [False, False, False]
    assert torch.allclose(trimmed, padded, atol=1e-5)
    # A text cut to the context keeps the full 77 tokens, and the same embedding.
    with torch.no_grad():
        full = model.encode_text(tokens)
    assert torch.allclose(encoder.encode_texts(TEXTS)[0], full, atol=1e-5)


def test_hf_clip_texts_pad_to_the_longest_and_equal_the_max_length_forward(encoders):
    encoder = encoders["hf_clip"]
    model, tokenizer = encoder.model, encoder._processor.tokenizer
    seen = []
    hook = model.text_model.register_forward_pre_hook(
        lambda _, args, kwargs: seen.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    try:
        trimmed, _ = encoder.encode_texts(TEXTS[:3])
    finally:
        hook.remove()
    batch = tokenizer(TEXTS[:3], padding="max_length", max_length=encoder.context_length, truncation=True,
                      return_tensors="pt")
    with torch.no_grad():
        padded = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    padded = padded if isinstance(padded, torch.Tensor) else padded.pooler_output
    assert seen[0] == int(batch["attention_mask"].sum(dim=1).max()) < encoder.context_length
    assert torch.allclose(trimmed, padded, atol=1e-5)


def test_cache_sorts_texts_by_length_and_maps_rows_back():
    batches = []

    def encode(texts):
        batches.append(list(texts))
        # Each text's vector is a function of the text alone: (length, first letter code).
        return torch.tensor([[float(len(t)), float(ord(t[0]))] for t in texts]), [False] * len(texts)

    texts = ["ccc", "a", "bbbbbb", "dd", "eeeee"]
    cache = TextEmbeddingCache(encode, "toy", batch_size=2, lengths=lambda ts: [len(t) for t in ts])
    rows = cache.get(texts)
    assert batches == [["a", "dd"], ["ccc", "eeeee"], ["bbbbbb"]]
    for text, row in zip(texts, rows):
        expected = torch.tensor([float(len(text)), float(ord(text[0]))])
        assert torch.allclose(row, expected / expected.norm())


class _Counting:
    """The encoder, counting the image rows and texts that reach it."""

    def __init__(self, encoder):
        self.inner, self.rows, self.texts = encoder, 0, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_images(self, pixels):
        self.rows += int(pixels.shape[0])
        return self.inner.encode_images(pixels)

    def encode_texts(self, texts):
        self.texts.extend(texts)
        return self.inner.encode_texts(texts)


def test_global_only_scoring_encodes_the_image_and_caption_alone(encoders):
    encoder = _Counting(encoders["hf_clip"])
    images = [EXAMPLES / "coffee.jpg", EXAMPLES / "coffee.jpg"]
    layouts = [_layout(), _layout("a dog in a park")]
    from clis.image_score import Candidate

    config = ImageScoreConfig.model_validate({"weights": {"global": 1.0, "instances": 0.0}})
    scorer = ImageScorer(encoder, config=config, num_workers=0)
    assert scorer.global_only
    fast = list(scorer.score_candidates([Candidate(i, lay) for i, lay in zip(images, layouts)]))
    assert encoder.rows == 2 and sorted(encoder.texts) == sorted(lay.caption for lay in layouts)
    # The full path (crops and phrases encoded) computes the same global term.
    full = list(ImageScorer(encoders["hf_clip"], num_workers=0).score_candidates(
        [Candidate(i, lay) for i, lay in zip(images, layouts)]))
    for quick, slow in zip(fast, full):
        assert quick["global"] == pytest.approx(slow["global"], abs=1e-4)
        assert quick["clis_i"] == pytest.approx(slow["global"], abs=1e-4)
        assert [i["object_id"] for i in quick["instances"]] == ["cup-1", "dog-1"]
        assert all(i["score"] is None and i["region"] is None for i in quick["instances"])


def test_bfloat16_autocast_runs_in_bfloat16_and_stays_close(encoders):
    encoder = encoders["open_clip"]
    dtypes = []
    hook = encoder.model.visual.transformer.register_forward_hook(lambda _, __, out: dtypes.append(out.dtype))
    try:
        half = ImageScorer(encoder, num_workers=0, autocast_dtype="bfloat16").score(EXAMPLES / "coffee.jpg", _layout())
    finally:
        hook.remove()
    full = ImageScorer(encoder, num_workers=0).score(EXAMPLES / "coffee.jpg", _layout())
    assert dtypes == [torch.bfloat16]
    # bfloat16 keeps 8 bits of mantissa (relative error 2^-9 per rounding); through a few layers
    # a cosine moves by about 1e-2, which is 2.5 points of a CLIPScore-scaled term (2.5 x 100 x cos).
    assert half["global"] == pytest.approx(full["global"], abs=2.5)
    assert half["clis_i"] == pytest.approx(full["clis_i"], abs=2.5)
    for a, b in zip(half["instances"], full["instances"]):
        assert a["grounding"] == pytest.approx(b["grounding"], abs=5.0)


@pytest.mark.parametrize("name", ["open_clip", "hf_clip"])
def test_letterboxed_crops_need_only_the_normalisation(encoders, name):
    """The crop is already square at the input size, so the CLIP transform leaves its pixels as
    they are: its output is the crop's pixels scaled to 0..1 and normalised."""
    import numpy as np

    encoder = encoders[name]
    size = encoder.image_size
    crop = region_crop(Image.open(EXAMPLES / "coffee.jpg").convert("RGB"), [0.1, 0.2, 0.3, 0.6], size)
    if name == "open_clip":
        norm = [t for t in encoder._preprocess.transforms if type(t).__name__ == "Normalize"][0]
        mean, std = norm.mean, norm.std
    else:
        mean, std = encoder._processor.image_processor.image_mean, encoder._processor.image_processor.image_std
    pixels = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255.0).permute(2, 0, 1)
    expected = (pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    assert torch.allclose(encoder.preprocess([crop])[0], expected, atol=1e-5)


@pytest.mark.parametrize("name", ["grounding_dino", "owlv2"])
def test_detector_batches_by_size_equal_one_image_at_a_time(tiny_models, name):
    from clis.models import load_model

    detector = Detector(load_model(tiny_models[name], "detector"), DetectionConfig(score_threshold=0.0))
    photo = Image.open(EXAMPLES / "coffee.jpg").convert("RGB")
    images = [photo.resize((96, 64)), photo.resize((64, 96)), photo.resize((96, 64)).rotate(180),
              photo.resize((64, 96)).rotate(180), photo.resize((96, 64)).transpose(Image.FLIP_LEFT_RIGHT)]
    layouts = [_layout()] * len(images)
    terms = DetectionTerms(detector, detector.config, batch_size=4)
    prepared = [detector.prepare_image(im) for im in images]
    batched = terms.detect(images, layouts, [f"img{i}" for i in range(len(images))], prepared)
    for image, found in zip(images, batched):
        alone = detector.detect([image], [terms.queries(_layout())])[0]
        assert set(found) == set(alone)
        for query in alone:
            assert found[query].boxes.shape == alone[query].boxes.shape
            assert torch.allclose(found[query].boxes, alone[query].boxes, atol=1e-5)
            assert torch.allclose(found[query].scores, alone[query].scores, atol=1e-5)
