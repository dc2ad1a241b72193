"""CLIS as a torchmetrics metric: score generated images against their layouts inside a
training or evaluation loop, on one device or across DDP ranks.

:class:`CLISScore` is a ``torchmetrics.Metric``. ``update(images, layouts)`` scores a batch
with the CLIS-I engine (:class:`clis.image_score.engine.ImageScorer`) and appends one row per
sample and one row per layout object to list states reduced by concatenation, so the
per-sample and per-object values survive a DDP sync; ``compute()`` returns the means and
those rows. :func:`clis_score` is the one-call functional twin. ``docs/metrics.md`` covers
the loops, Lightning, and what is synced.

Example:
    >>> import tempfile
    >>> from PIL import Image
    >>> from clis.metrics import CLISScore
    >>> from clis.testing import build_tiny_hf_clip
    >>> metric = CLISScore(image_model=build_tiny_hf_clip(tempfile.mkdtemp()), detector="none")
    >>> layout = {"id": "cup", "caption": "a red cup", "objects": [
    ...     {"id": "cup-1", "label": "cup", "attributes": ["red"], "bbox": [0.2, 0.2, 0.5, 0.5]}]}
    >>> metric.update([Image.new("RGB", (64, 64), "red")] * 2, [layout, layout])
    >>> result = metric.compute()
    >>> int(result["n"]), int(result["failed"]), result["per_sample"]["clis_i"].shape
    (2, 0, torch.Size([2]))
    >>> bool(0.0 <= result["clis_i"] <= 100.0)
    True
"""

from __future__ import annotations

import logging
import math
import numbers
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from PIL import Image
from pydantic import ValidationError
from torch import Tensor
from torchmetrics import Metric

from clis.errors import InputError
from clis.image_score.config import ImageScoreConfig
from clis.image_score.detection import Detector
from clis.image_score.engine import Candidate, ImageScorer, error_record
from clis.image_score.functional import weighted_mean
from clis.layout import Layout

logger = logging.getLogger(__name__)

# One row per sample. Integers first: they identify the row after a sync across ranks.
SAMPLE_INT_STATES = ("sample_id", "rank", "failed")
SAMPLE_FLOAT_STATES = ("clis", "clis_i", "clis_l", "global", "instance")
# One row per layout object: which sample (and rank) it belongs to, its position in that
# layout's ``objects``, and its terms (``docs/clis-i.md``).
INSTANCE_INT_STATES = ("sample_id", "rank", "object_index")
INSTANCE_FLOAT_STATES = ("score", "region", "grounding", "detection")
# Scores are bookkeeping, not model tensors: float64 keeps the records' four decimals exactly,
# whatever dtype the training loop runs the metric in.
FLOAT = torch.float64
INT = torch.int64

ImageBatch = Union[Tensor, Sequence[Union[Image.Image, str, Path, Tensor]]]
LayoutBatch = Sequence[Union[Layout, Mapping[str, Any]]]


class _Shared:
    """Holds the scorer so that ``Metric.clone()`` (a deepcopy) shares the loaded models
    instead of copying the weights: clones differ only in their states."""

    def __init__(self, scorer: ImageScorer):
        self.scorer = scorer

    def __deepcopy__(self, memo: dict) -> "_Shared":
        return self


# -- inputs --------------------------------------------------------------------------------------


def image_from_tensor(image: Tensor) -> Image.Image:
    """One ``[3, H, W]`` tensor as an RGB PIL image.

    ``uint8`` values are pixel values 0..255. Floating-point values are read as 0..1 (what
    ``torchvision.transforms.ToTensor`` makes) and quantised to 8 bits, as a saved PNG would
    be; values outside 0..1, such as normalised pixels, are refused rather than clipped,
    since clipping would score a different image. CLIP's own transform then runs on the PIL
    image, exactly as for an image read from a file.

    Example:
        >>> image_from_tensor(torch.ones(3, 2, 4)).getpixel((0, 0)), image_from_tensor(torch.ones(3, 2, 4)).size
        ((255, 255, 255), (4, 2))
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise InputError(f"image tensor of shape {tuple(image.shape)}: expected [3, H, W] (RGB, channels first)")
    image = image.detach().cpu()
    if image.dtype == torch.uint8:
        pixels = image
    elif image.is_floating_point():
        if not bool(torch.isfinite(image).all()):
            raise ValueError("image tensor has NaN or infinite values")
        low, high = float(image.min()), float(image.max())
        if low < 0.0 or high > 1.0:
            raise InputError(
                f"float image tensor has values in [{low:.3g}, {high:.3g}]; floating-point images are read as 0..1 "
                "(undo any normalisation first, or pass uint8 0..255)"
            )
        pixels = (image.float() * 255.0).round().to(torch.uint8)
    else:
        raise InputError(f"image tensor of dtype {image.dtype}: expected uint8 (0..255) or floating point (0..1)")
    return Image.fromarray(pixels.permute(1, 2, 0).contiguous().numpy(), mode="RGB")


def _image_list(images: ImageBatch) -> list[Any]:
    if isinstance(images, Tensor):
        if images.ndim == 3:
            return [images]
        if images.ndim != 4:
            raise InputError(f"images tensor of shape {tuple(images.shape)}: expected [B, 3, H, W] or [3, H, W]")
        return list(images.unbind(0))
    if isinstance(images, (str, Path, Image.Image)):
        return [images]
    return list(images)


def _as_input(image: Any) -> Any:
    """What the engine reads: a PIL image or a path (ValueError: this sample's image is unusable)."""
    if isinstance(image, Tensor):
        return image_from_tensor(image)
    if isinstance(image, (Image.Image, str, Path)):
        return image
    raise InputError(f"image of type {type(image).__name__}: expected a PIL image, a path or a [3, H, W] tensor")


def _as_layout(layout: Any) -> Layout:
    """A validated Layout (ValueError with a one-line reason when the record is invalid)."""
    if isinstance(layout, Layout):
        return layout
    if not isinstance(layout, Mapping):
        raise InputError(f"layout of type {type(layout).__name__}: expected a clis.layout.Layout or a dict")
    try:
        parsed = Layout.model_validate(dict(layout))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ValueError(f"{where}: {first['msg']}") from None
    problems = parsed.problems()
    if problems:
        raise ValueError(f"{problems[0][0]}: {problems[0][1]}")
    return parsed


def _layout_name(layout: Any, index: int) -> str:
    if isinstance(layout, Layout):
        return layout.id
    if isinstance(layout, Mapping) and isinstance(layout.get("id"), str):
        return layout["id"]
    return f"record {index}"


def _per_sample(values: Any, n: int, what: str, kind: type) -> list:
    """``values`` (None, a sequence or a 1-D tensor) as a list of ``n`` entries."""
    if values is None:
        return [None] * n
    if isinstance(values, Tensor):
        values = values.detach().cpu().reshape(-1).tolist()
    values = list(values)
    if len(values) != n:
        raise InputError(f"{what}: {len(values)} values for {n} images")
    out = []
    for i, value in enumerate(values):
        if value is None or (kind is float and isinstance(value, numbers.Real) and math.isnan(value)):
            out.append(None)
        elif kind is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
            out.append(int(value))
        elif (kind is float and isinstance(value, numbers.Real) and not isinstance(value, bool)
              and math.isfinite(value)):
            out.append(float(value))
        else:
            raise InputError(f"{what}[{i}]: {value!r} is not {'an integer' if kind is int else 'a finite number'}")
    return out


# -- building the scorer -------------------------------------------------------------------------


def build_image_scorer(
    image_model: Any = None,
    detector: Any = "none",
    weights: Optional[Mapping[str, float]] = None,
    config: Optional[Union[ImageScoreConfig, Mapping[str, Any]]] = None,
    device: str = "cpu",
    dtype: Optional[str] = None,
    batch_size: int = 32,
    num_workers: int = 2,
    **settings: Any,
) -> ImageScorer:
    """An :class:`ImageScorer` from a model spec or path (loaded as ``clis score`` loads it),
    a :class:`ClipEncoder`, or an ``ImageScorer`` (returned as it is).

    ``weights`` and ``config`` take the CLIS-I settings of :class:`ImageScoreConfig`;
    ``settings`` any further ``clis.scorer.ScoreConfig`` field (``max_pixels``,
    ``embedding_cache``, ...). Bad settings are one :class:`InputError` line naming the field.
    """
    if isinstance(image_model, ImageScorer):
        if weights or config or settings:
            raise InputError("image_model is an ImageScorer: its own config applies; pass weights/config only "
                             "with a model spec or a ClipEncoder")
        return image_model
    from clis.models.clip import ClipEncoder
    from clis.scorer import Scorer

    data: dict[str, Any] = {}
    if config is not None:
        data.update(config.model_dump(by_alias=True) if isinstance(config, ImageScoreConfig) else dict(config))
    if weights:
        data["weights"] = {**data.get("weights", {}), **dict(weights)}
    data.update(settings, device=device, dtype=dtype, batch_size=batch_size, num_workers=num_workers,
                layout_score=False)
    given = detector if isinstance(detector, Detector) else None
    data["detector"] = "none" if given is not None or detector is None else str(detector)
    if isinstance(image_model, ClipEncoder):
        data["image_model"] = image_model.loaded.spec
        cfg = _checked(data)
        encoder, text_cache = image_model, None
        if given is None and cfg.detector_enabled:
            given = _load_detector(cfg)
    else:
        if image_model is not None:
            data["image_model"] = str(image_model)
        cfg = _checked(data)
        # Scorer is the one place that loads models for `clis score`: same specs, same messages.
        loaded = Scorer(cfg)
        if given is None:
            return loaded.image_scorer
        encoder, text_cache = loaded.encoder, loaded.text_cache
    # As Scorer does: --dtype is the autocast dtype of the clip judge's forwards, passed only when set.
    autocast = {"autocast_dtype": cfg.dtype} if cfg.dtype is not None else {}
    return ImageScorer(encoder, given, cfg, text_cache=text_cache, batch_size=cfg.batch_size,
                       num_workers=cfg.num_workers, max_pixels=cfg.max_pixels, **autocast)


def _checked(data: dict[str, Any]) -> Any:
    from clis.scorer import ScoreConfig

    cfg = ScoreConfig.checked(data, source="CLISScore")
    if cfg.judge.name != "clip":
        # The VLM judges ask a VLM and a rater per object: far too slow inside a loop.
        raise InputError(f"CLISScore: judge.name: {cfg.judge.name!r} is for `clis score --judge`; the metric "
                         "scores with the clip judge")
    return cfg


def _load_detector(cfg: Any) -> Detector:
    from clis.models import load_model

    # float32 weights, as Scorer loads them for the clip judge: ``dtype`` is the autocast dtype.
    return Detector(load_model(cfg.detector, "detector", device=cfg.device), cfg.detection)


def _combine_weights(combine: Any) -> tuple[float, float]:
    from clis.scorer import CombineWeights

    try:
        found = combine if isinstance(combine, CombineWeights) else CombineWeights.model_validate(combine or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InputError(f"combine.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    return found.image, found.layout


def _nan(value: Optional[float]) -> float:
    return math.nan if value is None else float(value)


# -- the metric ----------------------------------------------------------------------------------


class CLISScore(Metric):
    """CLIS of generated images against their layouts, accumulated over batches and ranks.

    Args:
        image_model: a CLIP model spec or local path (default: ``clis score``'s), a loaded
            :class:`clis.models.clip.ClipEncoder`, or a ready :class:`ImageScorer`.
        detector: ``"none"`` (the default: a detector costs about 30 CLIP passes per image), a
            detector spec or path, or a :class:`clis.image_score.detection.Detector`.
        weights: CLIS-I weights (``{"global": 0.5, "instances": 0.5, "region": ...}``).
        config: other CLIS-I settings, an :class:`ImageScoreConfig` or its dict.
        combine: ``{"image": w, "layout": w}`` for ``clis`` when ``clis_l`` is passed.
        device, dtype, batch_size, num_workers: where and how the models run, as ``clis score``'s
            ``--device``, ``--dtype`` (the autocast dtype of the forwards), ``--batch-size`` and
            ``--num-workers``.
        settings: further ``clis.scorer.ScoreConfig`` fields (``max_pixels``, ``embedding_cache``).
        kwargs: ``torchmetrics.Metric`` options (``sync_on_compute``, ``dist_sync_on_step``,
            ``process_group``, ``compute_on_cpu``, ``dist_sync_fn``).

    The models are not metric states and not submodules: they are not in ``state_dict()``,
    clones share them, and ``.to(device)`` moves them along with the states (a dtype cast
    does not reach them).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 100.0

    def __init__(
        self,
        image_model: Any = None,
        detector: Any = "none",
        weights: Optional[Mapping[str, float]] = None,
        config: Optional[Union[ImageScoreConfig, Mapping[str, Any]]] = None,
        combine: Optional[Mapping[str, float]] = None,
        device: str = "cpu",
        dtype: Optional[str] = None,
        batch_size: int = 32,
        num_workers: int = 2,
        settings: Optional[Mapping[str, Any]] = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self._shared = _Shared(build_image_scorer(
            image_model, detector, weights, config, device=device, dtype=dtype, batch_size=batch_size,
            num_workers=num_workers, **dict(settings or {}),
        ))
        self._combine = _combine_weights(combine)
        self._state_dtypes: dict[str, torch.dtype] = {}
        for prefix, ints, floats in (("", SAMPLE_INT_STATES, SAMPLE_FLOAT_STATES),
                                     ("instance_", INSTANCE_INT_STATES, INSTANCE_FLOAT_STATES)):
            for name in ints + floats:
                self.add_state(prefix + name, default=[], dist_reduce_fx="cat")
                self._state_dtypes[prefix + name] = INT if name in ints else FLOAT
        # Default sample ids count this rank's samples over the metric's life. ``reset()`` does
        # not restart them: ``forward()`` resets the states before every batch.
        self._next_id = 0
        self.to(self.scorer.encoder.device)

    @property
    def scorer(self) -> ImageScorer:
        """The CLIS-I engine (shared by clones)."""
        return self._shared.scorer

    def _apply(self, fn: Any, exclude_state: Sequence[str] = "") -> "CLISScore":
        # ``module.to(torch.float16)`` (Lightning's and Fabric's "16-true" precision) passes
        # Metric's dtype guard, which only recognises ``.half()`` and the like, and would cast the
        # float64 score states to float16 (71.2345 becomes 71.25). Torchmetrics moves every state
        # but ours; ours follow the device only, keeping their declared dtypes.
        ours = tuple(getattr(self, "_state_dtypes", ()))
        this = super()._apply(fn, tuple(exclude_state) + ours)
        for name in ours:
            if name in exclude_state:
                continue
            value = getattr(this, name)
            if isinstance(value, Tensor):
                setattr(this, name, value.to(this.device))
            else:
                setattr(this, name, [v.to(this.device) for v in value])
        # the cached compute() went through ``fn`` too: computed again, from the exact states
        this._computed = None
        # Follow the states' device only: a dtype cast meant for the training model must not
        # reach CLIP (Metric guards its own states the same way, see Metric.set_dtype).
        models = [self.scorer.encoder.model]
        if self.scorer.detector is not None:
            models.append(self.scorer.detector.model)
        for model in models:
            if next(model.parameters()).device != this.device:
                model.to(this.device)
        return this

    def _rank(self) -> int:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return int(dist.get_rank(self.process_group)) if self.process_group is not None else int(dist.get_rank())
        return 0

    def _append(self, name: str, values: list) -> None:
        getattr(self, name).append(torch.tensor(values, dtype=self._state_dtypes[name], device=self.device))

    def update(
        self,
        images: ImageBatch,
        layouts: LayoutBatch,
        sample_ids: Optional[Union[Sequence[int], Tensor]] = None,
        clis_l: Optional[Union[Sequence[Optional[float]], Tensor]] = None,
    ) -> None:
        """Score ``images[i]`` against ``layouts[i]`` and keep the results.

        Args:
            images: a ``[B, 3, H, W]`` tensor (uint8 0..255, or float 0..1, see
                :func:`image_from_tensor`), or a list of PIL images, paths or ``[3, H, W]`` tensors.
            layouts: one :class:`clis.layout.Layout` or layout dict per image.
            sample_ids: one integer per image that identifies it across ranks (a dataset
                index); by default this rank's running count, so ``(rank, sample_id)`` is unique.
            clis_l: precomputed CLIS-L per image (``clis score-layouts``; None where unknown),
                combined into ``clis`` as ``clis score`` does.

        A sample whose image or layout is unusable gets NaN scores and ``failed = 1``; the
        reason is logged. A wrong type or shape of the whole batch is an :class:`InputError`.
        """
        items = _image_list(images)
        layouts = [layouts] if isinstance(layouts, (Layout, Mapping)) else list(layouts)
        n = len(items)
        if len(layouts) != n:
            raise InputError(f"update: {n} images but {len(layouts)} layouts")
        ids = _per_sample(sample_ids, n, "sample_ids", int)
        layout_scores = _per_sample(clis_l, n, "clis_l", float)
        ids = [self._next_id + i if given is None else given for i, given in enumerate(ids)]
        self._next_id += n

        records: list[Optional[dict]] = [None] * n
        todo: list[tuple[int, Candidate]] = []
        for i, (image, layout) in enumerate(zip(items, layouts)):
            try:
                todo.append((i, Candidate(_as_input(image), _as_layout(layout))))
            except InputError as exc:  # a wrong type or value range: the caller's code, not this sample
                raise InputError(f"update: sample {i}: {exc}") from None
            except ValueError as exc:  # this sample only: it gets NaN scores and the loop goes on
                records[i] = error_record(_layout_name(layout, i), None, " ".join(str(exc).split()))
        for (i, _), record in zip(todo, self.scorer.score_candidates(c for _, c in todo)):
            records[i] = record

        rank = self._rank()
        rows: dict[str, list] = {name: [] for name in self._state_dtypes}
        for i, record in enumerate(records):
            if record["error"] is not None:
                logger.warning("CLISScore: sample %s (layout %s) failed: %s", ids[i], record["layout_id"],
                               record["error"])
            instances = record["instances"]
            # Global-only scoring (no instance weight, no detector) lists the objects without scores.
            scores = [inst["score"] for inst in instances if inst.get("score") is not None]
            clis_i = record["clis_i"]
            if clis_i is None or layout_scores[i] is None:
                clis = clis_i
            else:
                clis = weighted_mean([clis_i, layout_scores[i]], self._combine)
            rows["sample_id"].append(ids[i])
            rows["rank"].append(rank)
            rows["failed"].append(int(record["error"] is not None))
            rows["clis"].append(_nan(clis))
            rows["clis_i"].append(_nan(clis_i))
            rows["clis_l"].append(_nan(layout_scores[i]))
            rows["global"].append(_nan(record["global"]))
            rows["instance"].append(sum(scores) / len(scores) if scores else math.nan)
            for k, inst in enumerate(instances):
                det = inst.get("detection")
                rows["instance_sample_id"].append(ids[i])
                rows["instance_rank"].append(rank)
                rows["instance_object_index"].append(k)
                rows["instance_score"].append(_nan(inst["score"]))
                rows["instance_region"].append(_nan(inst.get("region")))
                rows["instance_grounding"].append(_nan(inst.get("grounding")))
                rows["instance_detection"].append(math.nan if det is None else 100.0 * float(det["iou"]))
        for name, values in rows.items():
            self._append(name, values)

    def sync(self, dist_sync_fn: Any = None, process_group: Any = None, should_sync: bool = True,
             distributed_available: Any = None) -> None:
        # A rank without samples would send torchmetrics' stand-in, an empty tensor of the
        # metric's float dtype, against the other ranks' int64 ids; an empty tensor of each
        # state's own dtype keeps every all_gather consistent.
        # Only where a sync will happen (torchmetrics' own test): outside DDP, compute() on an
        # empty metric would otherwise leave an empty tensor in every list state.
        available = distributed_available if distributed_available is not None else self.distributed_available_fn
        if should_sync and callable(available) and available():
            for name, dtype in self._state_dtypes.items():
                value = getattr(self, name)
                if isinstance(value, list) and not value:
                    value.append(torch.empty(0, dtype=dtype, device=self.device))
        super().sync(dist_sync_fn, process_group, should_sync, distributed_available)

    def _column(self, name: str) -> Tensor:
        value = getattr(self, name)
        if isinstance(value, Tensor):
            return value
        if not value:
            return torch.empty(0, dtype=self._state_dtypes[name], device=self.device)
        return torch.cat(value)

    def compute(self) -> dict[str, Any]:
        """Means over the samples that have each score, counts, and every row.

        Returns a dict: ``clis``, ``clis_i``, ``global``, ``instance`` (the mean per-sample
        instance score) and ``clis_l`` as scalar means that skip NaN (NaN when no sample has
        one); ``n`` and ``failed`` counts; ``per_sample`` (``sample_id``, ``rank``, ``failed``
        and each score, one entry per sample) and ``per_instance`` (``sample_id``, ``rank``,
        ``object_index`` into the layout's ``objects``, ``score``, ``region``,
        ``grounding``, ``detection``), in update order, rank 0's rows first after a sync.
        """
        per_sample = {name: self._column(name) for name in SAMPLE_INT_STATES + SAMPLE_FLOAT_STATES}
        per_instance = {name: self._column("instance_" + name) for name in INSTANCE_INT_STATES + INSTANCE_FLOAT_STATES}
        out: dict[str, Any] = {name: per_sample[name].nanmean() if per_sample[name].numel() else
                               torch.tensor(math.nan, dtype=FLOAT, device=self.device)
                               for name in SAMPLE_FLOAT_STATES}
        out["n"] = torch.tensor(per_sample["sample_id"].numel(), device=self.device)
        out["failed"] = per_sample["failed"].sum()
        out["per_sample"] = per_sample
        out["per_instance"] = per_instance
        return out


def clis_score(
    images: ImageBatch,
    layouts: LayoutBatch,
    image_model: Any = None,
    detector: Any = "none",
    sample_ids: Optional[Union[Sequence[int], Tensor]] = None,
    clis_l: Optional[Union[Sequence[Optional[float]], Tensor]] = None,
    **options: Any,
) -> dict[str, Any]:
    """:class:`CLISScore` for one call: build, ``update`` once, ``compute`` (the same dict).

    ``options`` are :class:`CLISScore`'s other arguments. To score many batches with one
    model, build ``CLISScore`` once, or pass a loaded ``ClipEncoder`` as ``image_model``.

    Example:
        >>> import tempfile, torch
        >>> from clis.metrics import clis_score
        >>> from clis.testing import build_tiny_hf_clip
        >>> layout = {"id": "cat", "caption": "a cat", "objects": [
        ...     {"id": "cat-1", "label": "cat", "bbox": [0.2, 0.2, 0.6, 0.6]}]}
        >>> images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
        >>> out = clis_score(images, [layout, layout], image_model=build_tiny_hf_clip(tempfile.mkdtemp()),
        ...                  clis_l=[80.0, None])
        >>> out["per_instance"]["object_index"].tolist(), out["per_sample"]["clis_l"].isnan().tolist()
        ([0, 0], [False, True])
    """
    metric = CLISScore(image_model, detector, **options)
    metric.update(images, layouts, sample_ids=sample_ids, clis_l=clis_l)
    return metric.compute()
