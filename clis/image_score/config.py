"""CLIS-I settings as plain data: every weight and threshold lives here, none in the code.

The models themselves are chosen in :class:`clis.scorer.ScoreConfig`; this file only holds
what changes the numbers computed from their outputs, so it can be written verbatim into a
manifest and read back to reproduce a run.

Example:
    >>> from clis.image_score.config import ImageScoreConfig
    >>> cfg = ImageScoreConfig.model_validate({"weights": {"grounding": 2.0}, "crop_margin": 0.2})
    >>> cfg.weights.grounding, cfg.weights.region, cfg.crop_margin
    (2.0, 0.2, 0.2)
"""

from __future__ import annotations

from typing import Literal, Optional, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clis.models.defaults import DEFAULT_RATER

# Phrases that describe "no particular object". A crop that shows nothing but background
# should prefer these over the object's own description, which is what makes the grounding
# term punish empty or wrong regions even in a layout with a single object.
DEFAULT_DISTRACTORS = ("background", "empty space", "a blurry texture", "a plain surface")


class ImageScoreWeights(BaseModel):
    """Weights of the CLIS-I terms (see ``docs/clis-i.md`` for the formulas).

    Each group is normalised by its own sum, so only ratios matter; a weight of 0 drops a
    term. The detection weight only counts when a detector is configured.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # CLIS-I = (global * G + instances * mean_k S_k) / (global + instances); the paper uses 0.5/0.5.
    global_: float = Field(0.5, ge=0, alias="global")
    instances: float = Field(0.5, ge=0)
    # S_k = (region * R_k + grounding * P_k + detection * D_k) / (sum of the weights in use).
    region: float = Field(0.2, ge=0)
    grounding: float = Field(0.4, ge=0)
    detection: float = Field(0.4, ge=0)
    # The VLM judges (vqa, acp): S_k = (context * X_k + crop * C_k + detection * D_k) / (sum in use),
    # X_k asked about the box in the whole image, C_k about its crop. 0.8 / 0.2 is the paper's.
    context: float = Field(0.8, ge=0)
    crop: float = Field(0.2, ge=0)

    @model_validator(mode="after")
    def _some_weight(self) -> "ImageScoreWeights":
        if self.global_ + self.instances <= 0:
            raise ValueError("weights: global + instances must be > 0")
        if self.region + self.grounding + self.detection <= 0:
            raise ValueError("weights: region + grounding + detection must be > 0")
        if self.context + self.crop + self.detection <= 0:
            raise ValueError("weights: context + crop + detection must be > 0")
        return self

    def as_dict(self) -> dict[str, float]:
        return self.model_dump(by_alias=True)

    def for_judge(self, judge: str) -> dict[str, float]:
        """The weights that judge ``judge`` reads (the others cannot change its numbers)."""
        unused = unread_weights(judge)
        return {k: v for k, v in self.as_dict().items() if k not in unused}


class DetectionConfig(BaseModel):
    """How detector outputs become per-object found / IoU / count terms."""

    model_config = ConfigDict(extra="forbid")

    # Query the detector with each object's label ("cup") or its full phrase ("red cup").
    # Labels are the default: open-vocabulary detectors are strongest on category nouns, the
    # attributes are already checked by the CLIP region and grounding terms, and counts are
    # defined per label.
    query: Literal["label", "phrase"] = "label"
    # A detection counts when its score for a query reaches this value (Grounding DINO's
    # documented box threshold is 0.35, OWLv2's demo threshold 0.1-0.3).
    score_threshold: float = Field(0.3, ge=0, le=1)
    # Overlapping detections of the same query above this IoU are one object (NMS).
    nms_iou: float = Field(0.5, gt=0, le=1)


JudgeName = Literal["clip", "vqa", "acp"]
GroundingChoice = Literal["auto", "qwen", "qwen2", "plain"]
JUDGES: tuple[str, ...] = get_args(JudgeName)
GROUNDING_CHOICES: tuple[str, ...] = get_args(GroundingChoice)
# The instance terms each judge reads (besides detection, which every judge may combine).
JUDGE_TERMS = {"clip": ("region", "grounding"), "vqa": ("context", "crop"), "acp": ("context", "crop")}


def unread_weights(judge: str) -> tuple[str, ...]:
    """The instance-term weights that judge ``judge`` never reads: other judges' terms.

    >>> unread_weights("clip"), unread_weights("acp")
    (('context', 'crop'), ('region', 'grounding'))
    """
    return tuple(dict.fromkeys(t for terms in JUDGE_TERMS.values() for t in terms if t not in JUDGE_TERMS[judge]))


class JudgeConfig(BaseModel):
    """Which judge reads the images, and the VLM and rater it asks (``docs/clis-i.md``).

    ``clip`` needs none of the other fields. ``vqa`` and ``acp`` ask ``vlm`` (a model spec or
    an ``http(s)://`` OpenAI-compatible endpoint with ``vlm_model``); ``acp`` also asks
    ``rater``, any backend ``clis plan`` accepts.
    """

    model_config = ConfigDict(extra="forbid")

    name: JudgeName = "clip"
    vlm: Optional[str] = None
    vlm_model: Optional[str] = None
    rater: str = DEFAULT_RATER
    rater_model: Optional[str] = None
    # How the rater answers: "json" asks for {"score", "explanation"} as text; "guided" (local
    # models only) reads the score digit from the model's next-token probabilities, which a
    # 135M model cannot get wrong; "auto" is guided for local models up to 1B parameters.
    rater_mode: Literal["auto", "json", "guided"] = "auto"
    # The box syntax of the VLM's prompts: "auto" reads it from a local model's type (plain for
    # a server, which does not say what it runs).
    grounding: GroundingChoice = "auto"
    # Decoding of the VLM's descriptions and the rater's answers (0: greedy).
    max_new_tokens: int = Field(96, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0, le=5)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    # Attempts of one rating before its candidate becomes an error record (each with a new seed).
    rating_attempts: int = Field(2, ge=1, le=10)
    # Served models only: requests in flight, retries of a failed request, seconds per request.
    concurrency: int = Field(4, ge=1, le=256)
    retries: int = Field(3, ge=0, le=20)
    timeout: float = Field(120.0, gt=0)
    # SQLite file of the VLM's and the rater's answers; None: <cache dir>/judge_answers.sqlite
    # (or $CLIS_JUDGE_CACHE), "off": no cache.
    cache: Optional[str] = None


class ImageScoreConfig(BaseModel):
    """Everything that shapes the CLIS-I numbers for fixed models."""

    model_config = ConfigDict(extra="forbid")

    weights: ImageScoreWeights = Field(default_factory=ImageScoreWeights)
    # Context added around each box before cropping, as a fraction of the box side per side.
    crop_margin: float = Field(0.1, ge=0, le=2)
    # Crops smaller than this many pixels per side are enlarged (centred) so the encoder sees
    # enough of the surroundings to recognise anything at all.
    min_crop_pixels: int = Field(16, ge=1)
    # Multiplies 100*max(cos, 0) for the global and region terms, capped at 100. 1.0 gives
    # exactly torchmetrics' CLIPScore; 2.5 is the CLIP-S rescaling of Hessel et al. (2021).
    clip_scale: float = Field(1.0, gt=0)
    # Extra phrases the grounding softmax competes against (besides the layout's own).
    distractors: list[str] = Field(default_factory=lambda: list(DEFAULT_DISTRACTORS))
    # Temperature of the grounding softmax; None uses the model's learned logit scale.
    grounding_logit_scale: Optional[float] = Field(None, gt=0)
    detection: DetectionConfig = Field(default_factory=DetectionConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)

    @field_validator("distractors")
    @classmethod
    def _no_blank_distractor(cls, value: list[str]) -> list[str]:
        # A blank phrase has no text embedding (blank texts are never encoded), so it could not
        # compete in the grounding softmax.
        for index, phrase in enumerate(value):
            if not phrase.strip():
                raise ValueError(f"distractor {index} is blank; every distractor must name something")
        return value
