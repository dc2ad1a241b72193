"""CLIS-I: does a generated image match its layout?

Region-grounded CLIP (global caption score, per-object region and grounding terms) backed by
an optional open-vocabulary detector. ``docs/clis-i.md`` has the formulas and the reasoning.

Entry points:

* :class:`ImageScorer` (``engine``): the batched pipeline over (image, layout) candidates;
* :mod:`clis.image_score.functional`: each formula as a plain tensor function;
* :class:`ImageScoreConfig` (``config``): every weight and setting as plain data.

Most users want :class:`clis.scorer.Scorer`, which also loads the models and adds CLIS-L; a
training loop wants :class:`clis.metrics.CLISScore`, the torchmetrics metric over this engine.
"""

from clis.image_score.config import DEFAULT_DISTRACTORS, DetectionConfig, ImageScoreConfig, ImageScoreWeights
from clis.image_score.detection import Detections, Detector
from clis.image_score.engine import Candidate, ImageScorer, error_record
from clis.image_score.images import DEFAULT_MAX_PIXELS, ImageReadError, open_image
from clis.image_score.text_cache import TextEmbeddingCache

__all__ = [
    "DEFAULT_DISTRACTORS", "DEFAULT_MAX_PIXELS", "Candidate", "DetectionConfig", "Detections",
    "Detector", "ImageReadError", "ImageScoreConfig", "ImageScoreWeights", "ImageScorer", "TextEmbeddingCache",
    "error_record", "open_image",
]
