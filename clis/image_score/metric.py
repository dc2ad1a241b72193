"""A small stateful metric over CLIS-I records, and its functional twin.

:class:`CLISImageScore` follows the torchmetrics pattern (``update`` / ``compute`` /
``reset``) without depending on torchmetrics: ``update`` scores a batch of images against
their layouts and keeps the per-sample records, which torchmetrics' CLIPScore cannot give.

Example:
    >>> import tempfile
    >>> from PIL import Image
    >>> from clis.layout import Layout
    >>> from clis.models import load_model
    >>> from clis.models.clip import ClipEncoder
    >>> from clis.testing import build_tiny_hf_clip
    >>> encoder = ClipEncoder(load_model(build_tiny_hf_clip(tempfile.mkdtemp()), "clip"))
    >>> layout = Layout.model_validate({"id": "x", "caption": "a cat", "objects": [
    ...     {"id": "cat-1", "label": "cat", "bbox": [0.2, 0.2, 0.6, 0.6]}]})
    >>> metric = CLISImageScore(encoder)
    >>> metric.update([Image.new("RGB", (64, 64), "gray")] * 2, [layout, layout])
    >>> result = metric.compute()
    >>> result["n"], 0.0 <= result["clis_i"] <= 100.0
    (2, True)
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

from clis.image_score.config import ImageScoreConfig
from clis.image_score.detection import Detector
from clis.image_score.engine import Candidate, ImageScorer
from clis.image_score.images import ImageInput
from clis.layout import Layout

SUMMARY_KEYS = ("clis_i", "global")


def clis_image_score(
    images: Sequence[ImageInput],
    layouts: Sequence[Layout],
    encoder: Any,
    detector: Optional[Detector] = None,
    config: Optional[ImageScoreConfig] = None,
    batch_size: int = 32,
) -> list[dict]:
    """Score ``images[i]`` against ``layouts[i]``; one scores.jsonl-shaped record each."""
    if len(images) != len(layouts):
        raise ValueError(f"clis_image_score: {len(images)} images but {len(layouts)} layouts")
    scorer = ImageScorer(encoder, detector, config, batch_size=batch_size)
    return list(scorer.score_candidates(Candidate(im, lay) for im, lay in zip(images, layouts)))


class CLISImageScore:
    """Accumulate CLIS-I over batches; ``compute()`` gives means, ``records`` every sample."""

    def __init__(self, encoder: Any, detector: Optional[Detector] = None,
                 config: Optional[ImageScoreConfig] = None, batch_size: int = 32):
        self.scorer = ImageScorer(encoder, detector, config, batch_size=batch_size)
        self.records: list[dict] = []

    def update(self, images: Sequence[ImageInput], layouts: Sequence[Layout]) -> None:
        if len(images) != len(layouts):
            raise ValueError(f"update: {len(images)} images but {len(layouts)} layouts")
        self.records.extend(self.scorer.score_candidates(Candidate(im, lay) for im, lay in zip(images, layouts)))

    def compute(self) -> dict[str, Any]:
        """Mean of each summary score over the samples that have it, the count and the failures."""
        out: dict[str, Any] = {"n": len(self.records), "failed": sum(r["error"] is not None for r in self.records)}
        for key in SUMMARY_KEYS:
            values = [r[key] for r in self.records if r[key] is not None]
            out[key] = sum(values) / len(values) if values else math.nan
        return out

    def reset(self) -> None:
        self.records = []
