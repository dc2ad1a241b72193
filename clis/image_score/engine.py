"""The CLIS-I pipeline: images and layouts in, one score record per candidate out.

Steps, in the order a candidate goes through them:

1. **load** (background threads): decode the image, cut one letterboxed crop per object and
   run the CLIP transform on the whole image and the crops;
2. **encode**: crops and whole images of many candidates go through the image encoder
   together, ``batch_size`` rows at a time; texts come from a :class:`TextEmbeddingCache`,
   so each distinct caption, phrase and distractor is encoded once per run;
3. **detect** (optional): one detector pass per image with all of its labels as queries;
4. **combine**: the formulas of :mod:`clis.image_score.functional`.

**Global-only scoring**: with a zero ``instances`` weight and no detector, only the whole image
and the caption are encoded (no crops, no phrases); the records still list the layout's objects,
with null region, grounding, detection and score.

**On a GPU**: ``autocast_dtype`` runs the forwards (image, text, detector) under
``torch.autocast`` while every formula reads float32; loaders pin their tensors so copies to
the device do not block; the detector's pass over a batch runs in a second thread while CLIP
encodes it (on CPU both would share the same cores, so they run one after the other).

Example:
    >>> import tempfile
    >>> from PIL import Image
    >>> from clis.layout import Layout
    >>> from clis.models import load_model
    >>> from clis.models.clip import ClipEncoder
    >>> from clis.testing import build_tiny_hf_clip
    >>> encoder = ClipEncoder(load_model(build_tiny_hf_clip(tempfile.mkdtemp()), "clip"))
    >>> layout = Layout.model_validate({"id": "x", "caption": "a red cup", "objects": [
    ...     {"id": "cup-1", "label": "cup", "attributes": ["red"], "bbox": [0.1, 0.1, 0.5, 0.5]}]})
    >>> record = ImageScorer(encoder).score(Image.new("RGB", (64, 64), "red"), layout)
    >>> sorted(record), record["instances"][0]["object_id"]
    (['clis', 'clis_i', 'clis_l', 'error', 'global', 'image', 'instances', 'layout_id'], 'cup-1')
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import torch
from PIL import Image
from torch import Tensor

from clis.image_score.config import ImageScoreConfig
from clis.image_score.crops import region_crop
from clis.image_score.detection import Detector
from clis.image_score.detection_terms import DetectionTerms
from clis.image_score.functional import (
    clip_alignment,
    clis_i,
    grounding_probability,
    instance_score,
    normalize,
    round_score,
)
from clis.image_score.images import (
    DEFAULT_MAX_PIXELS,
    ImageInput,
    ImageReadError,
    one_line,
    open_image,
    prefetch_map,
)
from clis.image_score.text_cache import TextEmbeddingCache, model_key
from clis.layout import Layout
from clis.models.loaders import torch_dtype


def autocast_dtype_of(dtype: Any) -> Optional[torch.dtype]:
    """The autocast dtype for a ``--dtype`` value: None (no autocast) for None and float32.

    Example:
        >>> autocast_dtype_of("bf16"), autocast_dtype_of("float32")
        (torch.bfloat16, None)
    """
    resolved = torch_dtype(dtype)
    return None if resolved in (None, torch.float32) else resolved


def image_reference(image: ImageInput) -> Optional[str]:
    """What goes into a record's ``image`` field: the path as given, or None for in-memory images."""
    if isinstance(image, Image.Image):
        return getattr(image, "filename", None) or None
    return str(image)


def error_record(layout_id: str, image: Optional[str], reason: str) -> dict[str, Any]:
    """The record of a candidate that could not be scored."""
    return {
        "layout_id": layout_id, "image": image, "clis": None, "clis_i": None, "clis_l": None,
        "global": None, "instances": [], "error": " ".join(reason.split()),
    }


@dataclass
class Candidate:
    """One (image, layout) pair to score."""

    image: ImageInput
    layout: Layout


@dataclass
class _Prepared:
    candidate: Candidate
    pil: Optional[Image.Image] = None
    pixels: Optional[Tensor] = None  # [1 + n_objects, 3, S, S]: whole image, then one crop per object
    error: Optional[str] = None
    extra: dict = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return 0 if self.pixels is None else int(self.pixels.shape[0])


class ImageScorer:
    """CLIS-I with a loaded CLIP encoder and an optional detector.

    Args:
        encoder: a :class:`clis.models.clip.ClipEncoder`.
        detector: a :class:`clis.image_score.detection.Detector`, or None to skip the check.
        config: weights and settings (:class:`ImageScoreConfig`).
        text_cache: reuse a cache across scorers; by default an in-memory one is created.
        batch_size: image rows (whole images plus crops) per encoder forward pass.
        num_workers: background threads that decode and crop images (0: in this thread).
        max_pixels: images with more pixels, or that the CLIP transform would enlarge past it
            (very elongated ones), are recorded as errors without being decoded.
        detector_batch_size: images per detector pass (None: 16 on CUDA, 4 on CPU).
        autocast_dtype: None, "float16", "bfloat16" (or a torch dtype) to run the forward
            passes under ``torch.autocast``; the weights keep their dtype.
    """

    def __init__(
        self,
        encoder: Any,
        detector: Optional[Detector] = None,
        config: Optional[ImageScoreConfig] = None,
        text_cache: Optional[TextEmbeddingCache] = None,
        batch_size: int = 32,
        num_workers: int = 2,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        detector_batch_size: Optional[int] = None,
        autocast_dtype: Any = None,
    ):
        self.encoder = encoder
        self.detector = detector
        self.config = config or ImageScoreConfig()
        self.batch_size = max(1, int(batch_size))
        self.num_workers = num_workers
        self.max_pixels = max_pixels
        self.detection = DetectionTerms(detector, self.config.detection, detector_batch_size)
        self.autocast_dtype = autocast_dtype_of(autocast_dtype)
        # No instance term and no detector: crops and phrases would be encoded for nothing.
        self.global_only = self.config.weights.instances == 0 and detector is None
        self._overlap: Optional[ThreadPoolExecutor] = None  # set while score_candidates runs
        if text_cache is None:
            fingerprint = getattr(encoder.loaded, "fingerprint", {}) or {"spec": encoder.loaded.spec}
            if self.autocast_dtype is not None:  # half-precision vectors are not the float32 ones
                fingerprint = {**fingerprint, "autocast": str(self.autocast_dtype)}
            counts = getattr(encoder, "token_counts", None)
            text_cache = TextEmbeddingCache(encoder.encode_texts, model_key(fingerprint),
                                            lengths=counts if callable(counts) else None)
        self.text_cache = text_cache
        if self.text_cache.dim is None:
            # So that a stored vector of another width is recomputed, not stacked into the scores.
            width = getattr(encoder, "embed_dim", None)
            self.text_cache.dim = width if isinstance(width, int) else None
        self.logit_scale = self.config.grounding_logit_scale or encoder.logit_scale

    @property
    def _device(self) -> torch.device:
        # Read each time: a metric's .to("cuda") moves the encoder after this scorer was built.
        return torch.device(getattr(self.encoder, "device", "cpu"))  # test doubles have none

    @property
    def _pin(self) -> bool:
        return self._device.type == "cuda" and torch.cuda.is_available()

    def _autocast(self, device: torch.device):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)

    # -- stage 1: load (runs in background threads) -------------------------------------------

    def prepare(self, candidate: Candidate) -> _Prepared:
        """Decode, crop and transform one candidate; failures become an error, not an exception.

        The letterboxed crops are already ``image_size`` square, so the CLIP transform's resize
        and centre crop leave them as they are (torchvision and Pillow return same-size images
        unchanged) and only its tensor conversion and normalisation do work on them.
        """
        size = self.encoder.image_size
        try:
            image = open_image(candidate.image, self.max_pixels, resize_side=size)
            crops = [] if self.global_only else [
                region_crop(image, obj.bbox, size, self.config.crop_margin, self.config.min_crop_pixels)
                for obj in candidate.layout.objects
            ]
            pixels = self.encoder.preprocess([image, *crops])
        except ImageReadError as exc:
            return _Prepared(candidate, error=str(exc))
        except Exception as exc:  # noqa: BLE001 -- a box off the image, a failing transform: the run goes on
            return _Prepared(candidate, error=f"{image_reference(candidate.image)}: {one_line(exc)}")
        extra = {}
        if self.detector is not None:
            try:
                extra["detector"] = self.detector.prepare_image(image)
            except Exception:  # noqa: BLE001 -- detect() processes it again and records why it fails
                extra["detector"] = None
        if self._pin:
            pixels = pixels.pin_memory()
        return _Prepared(candidate, pil=image if self.detector is not None else None, pixels=pixels, extra=extra)

    # -- stage 2-4: encode, detect, combine ---------------------------------------------------

    def _encode_pixels(self, parts: list[Tensor]) -> Tensor:
        if self._pin:  # pinned parts copy to the device without blocking; stack them there
            pixels = torch.cat([part.to(self._device, non_blocking=True) for part in parts])
        else:
            pixels = torch.cat(parts)
        chunks = []
        for start in range(0, pixels.shape[0], self.batch_size):
            with torch.inference_mode(), self._autocast(self._device):
                chunks.append(self.encoder.encode_images(pixels[start : start + self.batch_size]).float())
        return normalize(torch.cat(chunks)).cpu()

    def _phrase_set(self, layout: Layout) -> tuple[list[str], list[int]]:
        """The grounding vocabulary (layout phrases, then distractors) and each object's index in it."""
        phrases = list(dict.fromkeys(obj.phrase for obj in layout.objects))
        vocabulary = phrases + [d for d in self.config.distractors if d not in phrases]
        return vocabulary, [phrases.index(obj.phrase) for obj in layout.objects]

    def _detect(self, ready: list[_Prepared]) -> list[Optional[dict | str]]:
        """Detections per candidate: a dict, None without a detector, or a one-line error."""
        if self.detector is None:
            return [None] * len(ready)
        with self._autocast(torch.device(getattr(self.detector, "device", "cpu"))):
            return self.detection.detect([p.pil for p in ready], [p.candidate.layout for p in ready],
                                         [image_reference(p.candidate.image) for p in ready],
                                         [p.extra.get("detector") for p in ready])

    def check_detector_queries(self, layouts: Iterable[Layout]) -> None:
        """Note which detector queries of ``layouts`` the detector will cut (see ``Detector.truncation``)."""
        self.detection.check_queries(layouts)

    def _score_ready(self, ready: list[_Prepared]) -> list[dict]:
        pending = self._overlap.submit(self._detect, ready) if self._overlap is not None else None
        features = self._encode_pixels([p.pixels for p in ready])
        texts: list[str] = []
        for p in ready:
            texts.append(p.candidate.layout.caption)
            if not self.global_only:
                texts.extend(self._phrase_set(p.candidate.layout)[0])
        vocabulary = list(dict.fromkeys(t for t in texts if t.strip()))
        with self._autocast(self._device):
            text_features = dict(zip(vocabulary, self.text_cache.get(vocabulary)))
        detections = pending.result() if pending is not None else self._detect(ready)
        weights = self.config.weights
        records, row = [], 0
        for p, found in zip(ready, detections):
            layout = p.candidate.layout
            image_features = features[row : row + p.rows]
            row += p.rows
            if isinstance(found, str):
                records.append(error_record(layout.id, image_reference(p.candidate.image), found))
                continue
            global_score = None
            if layout.caption.strip():
                global_score = float(
                    clip_alignment(image_features[:1], text_features[layout.caption][None], self.config.clip_scale)[0]
                )
            if self.global_only:
                records.append(self._global_record(p, layout, global_score))
                continue
            phrases, targets = self._phrase_set(layout)
            phrase_features = torch.stack([text_features[t] for t in phrases])
            own = phrase_features[targets]
            crops = image_features[1:]
            region = clip_alignment(crops, own, self.config.clip_scale)
            grounding = grounding_probability(crops, phrase_features, torch.tensor(targets), self.logit_scale)
            detection_terms = self.detection.terms(layout, found)
            instances, instance_scores = [], []
            for k, obj in enumerate(layout.objects):
                det = detection_terms[k]
                score = instance_score(
                    float(region[k]), float(grounding[k]), None if det is None else 100.0 * det["iou"],
                    (weights.region, weights.grounding, weights.detection),
                )
                instance_scores.append(score)
                instances.append({
                    "object_id": obj.id, "label": obj.label, "phrase": obj.phrase, "bbox": list(obj.bbox),
                    "region": round_score(region[k]), "grounding": round_score(grounding[k]), "detection": det,
                    "score": round_score(score),
                })
            try:
                image_score = clis_i(global_score, instance_scores, (weights.global_, weights.instances))
            except ValueError:  # no caption and a zero instance weight: nothing left to score with
                image_score = None
            records.append({
                "layout_id": layout.id, "image": image_reference(p.candidate.image),
                "clis": round_score(image_score), "clis_i": round_score(image_score), "clis_l": None,
                "global": round_score(global_score), "instances": instances, "error": None,
            })
        return records

    def _global_record(self, p: _Prepared, layout: Layout, global_score: Optional[float]) -> dict:
        """The record of global-only scoring: the objects are listed, with no instance terms."""
        instances = [{
            "object_id": obj.id, "label": obj.label, "phrase": obj.phrase, "bbox": list(obj.bbox),
            "region": None, "grounding": None, "detection": None, "score": None,
        } for obj in layout.objects]
        return {
            "layout_id": layout.id, "image": image_reference(p.candidate.image),
            "clis": round_score(global_score), "clis_i": round_score(global_score), "clis_l": None,
            "global": round_score(global_score), "instances": instances, "error": None,
        }

    def _score_batch(self, batch: list[_Prepared]) -> list[dict]:
        ready = [p for p in batch if p.error is None]
        scored = iter(self._score_ready(ready)) if ready else iter(())
        records = []
        for p in batch:
            if p.error is not None:
                records.append(error_record(p.candidate.layout.id, image_reference(p.candidate.image), p.error))
            else:
                records.append(next(scored))
            p.pil = p.pixels = None  # free decoded pixels as soon as the batch is done
            p.extra.clear()
        return records

    def score_candidates(self, candidates: Iterable[Candidate]) -> Iterator[dict]:
        """Score candidates in input order; crops of several candidates share forward passes."""
        overlap = self.detector is not None and str(getattr(self.detector, "device", "cpu")).startswith("cuda")
        with contextlib.ExitStack() as stack:
            if overlap:
                self._overlap = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="clis-detector"))
                stack.callback(setattr, self, "_overlap", None)
            yield from self._score_stream(candidates)

    def _score_stream(self, candidates: Iterable[Candidate]) -> Iterator[dict]:
        batch: list[_Prepared] = []
        rows = 0
        for prepared in prefetch_map(self.prepare, candidates, self.num_workers, depth=max(8, 2 * self.num_workers)):
            # Close a batch before it overflows: a 35-row batch would cost a full forward pass
            # of 32 rows plus a nearly empty one of 3.
            if batch and rows + prepared.rows > self.batch_size:
                yield from self._score_batch(batch)
                batch, rows = [], 0
            batch.append(prepared)
            rows += prepared.rows
        if batch:
            yield from self._score_batch(batch)

    def score(self, image: ImageInput, layout: Layout) -> dict:
        """Score one image against one layout (see the module example)."""
        return next(self.score_candidates([Candidate(image, layout)]))
