"""The VLM judges of CLIS-I: ``vqa`` (P("Yes") per region) and ``acp`` (the paper's describe-and-rate).

Both read a candidate the same way: the whole image, and per layout object the whole image
with the object's box named in the VLM's grounding syntax ("in context") and the box's crop.
Each of those gives a term on 0..100:

* ``vqa``: 100 * P("Yes") of a yes/no question (:mod:`clis.image_score.judges.prompts`),
  P normalised over Yes and No;
* ``acp``: the VLM describes what it sees in at most 50 words, the rater compares the
  description with the caption (whole image) or the object's phrase (box), 0..5, times 20.

Then, with the weights of :class:`clis.image_score.config.ImageScoreWeights`,
``S_k = (context * X_k + crop * C_k + detection * D_k) / (sum of the weights in use)``
(``D_k`` = 100 * IoU of the matched detection, only with a detector) and
``CLIS-I = (global * G + instances * mean_k S_k) / (global + instances)``, as for ``clip``.

A candidate one of whose questions failed (after the client's retries, or a rating that did
not parse after its new-seed tries) becomes an error record; the run goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional

from PIL import Image

from clis.image_score.config import ImageScoreConfig
from clis.image_score.crops import crop_pixels
from clis.image_score.detection import Detector
from clis.image_score.detection_terms import DetectionTerms
from clis.image_score.engine import Candidate, error_record, image_reference
from clis.image_score.functional import clis_i, round_score, weighted_mean
from clis.image_score.images import DEFAULT_MAX_PIXELS, ImageReadError, one_line, open_image, prefetch_map
from clis.image_score.judges import prompts
from clis.image_score.judges.rater import Rater, Rating, rating_score
from clis.layout import Layout
from clis.vlm.base import RequestFailed, VLMRequest, box_text

# P(Yes) values keep two more decimals than the 0..100 terms made from them.
P_DECIMALS = 6


@dataclass
class _Opened:
    candidate: Candidate
    image: Optional[Image.Image] = None
    crops: list[Image.Image] = field(default_factory=list)
    error: Optional[str] = None

    @property
    def name(self) -> Optional[str]:
        return image_reference(self.candidate.image)


@dataclass
class _Question:
    """One request of a candidate: which term it is for (``global``, or an object index and part)."""

    owner: int  # index of the candidate in its chunk
    term: tuple  # ("global",) or (object index, "context" | "crop")
    request: VLMRequest
    intended: str  # the text the answer is checked against


class VLMJudge:
    """Shared pipeline of the VLM judges; subclasses say how a question becomes a 0..100 term."""

    name = ""

    def __init__(self, vlm: Any, config: Optional[ImageScoreConfig] = None, detector: Optional[Detector] = None,
                 batch_size: int = 32, num_workers: int = 2, max_pixels: int = DEFAULT_MAX_PIXELS,
                 detector_batch_size: int = 4, answer_cache: Optional[Any] = None):
        self.vlm = vlm
        self.answer_cache = answer_cache
        self.config = config or ImageScoreConfig()
        self.detector = detector
        self.detection = DetectionTerms(detector, self.config.detection, detector_batch_size)
        self.batch_size = max(1, int(batch_size))
        self.num_workers = num_workers
        self.max_pixels = max_pixels
        grounding = self.config.judge.grounding
        self.grounding = vlm.grounding if grounding == "auto" else grounding
        self.logit_scale = None  # the manifest's grounding_logit_scale: a CLIP notion

    # -- what each judge asks, and how its answers become terms ---------------------------------

    def templates(self) -> tuple[str, str, str]:
        """(whole image, box in context, crop) prompt templates."""
        raise NotImplementedError

    def answer(self, questions: list[_Question]) -> list[Any]:
        """One answer per question: ``(term on 0..100, judge's own detail)`` or a RequestFailed."""
        raise NotImplementedError

    def manifest(self) -> dict[str, Any]:
        judge = self.config.judge
        return {
            "name": self.name, "vlm": self.vlm.describe(), "grounding": self.grounding,
            "prompts": prompts.manifest(self.name),
            "decoding": {"max_new_tokens": judge.max_new_tokens, "temperature": judge.temperature, "seed": judge.seed},
        }

    def stats(self) -> dict[str, int]:
        """Requests answered from the answer cache and asked of the models during this run."""
        return {"vlm_cached": getattr(self.vlm, "hits", 0), "vlm_asked": getattr(self.vlm, "asked", 0)}

    def close(self) -> None:
        self.vlm.close()
        if self.answer_cache is not None:
            self.answer_cache.close()

    # -- the pipeline -------------------------------------------------------------------------

    def check_detector_queries(self, layouts: Iterable[Layout]) -> None:
        self.detection.check_queries(layouts)

    def prepare(self, candidate: Candidate) -> _Opened:
        """Decode the image and cut one crop per object; failures become an error, not an exception."""
        try:
            image = open_image(candidate.image, self.max_pixels)
            crops = [
                image.crop(crop_pixels(obj.bbox, image.width, image.height, self.config.crop_margin,
                                       self.config.min_crop_pixels))
                for obj in candidate.layout.objects
            ]
        except ImageReadError as exc:
            return _Opened(candidate, error=str(exc))
        except Exception as exc:  # noqa: BLE001 -- a box off the image: this candidate fails, the run goes on
            return _Opened(candidate, error=f"{image_reference(candidate.image)}: {one_line(exc)}")
        return _Opened(candidate, image, crops)

    def questions(self, owner: int, opened: _Opened) -> list[_Question]:
        whole, in_context, crop = self.templates()
        layout = opened.candidate.layout
        asked = []
        if layout.caption.strip():
            asked.append(_Question(owner, ("global",), VLMRequest(opened.image, prompts.fill(whole, caption=layout.caption)),
                                   layout.caption))
        for k, obj in enumerate(layout.objects):
            box = box_text(obj.bbox, self.grounding)
            asked.append(_Question(owner, (k, "context"),
                                   VLMRequest(opened.image, prompts.fill(in_context, box=box, phrase=obj.phrase)),
                                   obj.phrase))
            asked.append(_Question(owner, (k, "crop"), VLMRequest(opened.crops[k], prompts.fill(crop, phrase=obj.phrase)),
                                   obj.phrase))
        return asked

    def _score_chunk(self, chunk: list[_Opened]) -> list[dict]:
        ready = [i for i, p in enumerate(chunk) if p.error is None]
        asked = [q for i in ready for q in self.questions(i, chunk[i])]
        answers = self.answer(asked) if asked else []
        by_owner: dict[int, dict[tuple, Any]] = {i: {} for i in ready}
        for question, answer in zip(asked, answers):
            by_owner[question.owner][question.term] = answer
        found = self.detection.detect([chunk[i].image for i in ready], [chunk[i].candidate.layout for i in ready],
                                      [chunk[i].name for i in ready])
        detections = dict(zip(ready, found))
        records = []
        for i, opened in enumerate(chunk):
            layout = opened.candidate.layout
            if opened.error is not None:
                records.append(error_record(layout.id, opened.name, opened.error))
            elif isinstance(detections[i], str):
                records.append(error_record(layout.id, opened.name, detections[i]))
            else:
                records.append(self._record(opened, by_owner[i], detections[i]))
            opened.image, opened.crops = None, []  # free the pixels as soon as the chunk is done
        return records

    def _failure(self, opened: _Opened, answers: dict[tuple, Any]) -> Optional[str]:
        for term, answer in answers.items():
            if isinstance(answer, RequestFailed):
                if term == ("global",):
                    what = "the whole image"
                else:
                    what = f"object {opened.candidate.layout.objects[term[0]].id!r} ({'in context' if term[1] == 'context' else 'crop'})"
                return f"{opened.name}: {self.name} judge: {what}: {answer.reason}"
        return None

    def _record(self, opened: _Opened, answers: dict[tuple, Any], detections: Optional[dict]) -> dict:
        layout = opened.candidate.layout
        failure = self._failure(opened, answers)
        if failure is not None:
            return error_record(layout.id, opened.name, failure)
        weights = self.config.weights
        global_term = answers.get(("global",))
        global_score = None if global_term is None else global_term[0]
        detection_terms = self.detection.terms(layout, detections)
        instances, scores = [], []
        for k, obj in enumerate(layout.objects):
            context, context_detail = answers[(k, "context")]
            crop, crop_detail = answers[(k, "crop")]
            det = detection_terms[k]
            score = weighted_mean([context, crop, None if det is None else 100.0 * det["iou"]],
                                  [weights.context, weights.crop, weights.detection])
            scores.append(score)
            instances.append({
                "object_id": obj.id, "label": obj.label, "phrase": obj.phrase, "bbox": list(obj.bbox),
                "region": None, "grounding": None, "detection": det, "score": round_score(score),
                "context": round_score(context), "crop": round_score(crop),
                self.name: {"context": context_detail, "crop": crop_detail},
            })
        try:
            image_score = clis_i(global_score, scores, (weights.global_, weights.instances))
        except ValueError:  # no caption and a zero instance weight: nothing left to score with
            image_score = None
        return {
            "layout_id": layout.id, "image": opened.name, "clis": round_score(image_score), "clis_i": round_score(image_score),
            "clis_l": None, "global": round_score(global_score), "instances": instances, "error": None,
            "judge": {"name": self.name, "global": None if global_term is None else global_term[1]},
        }

    def _chunk_size(self) -> int:
        """Candidates per chunk: enough questions to keep a batch (or a server's slots) busy."""
        return max(1, self.batch_size // 4, self.config.judge.concurrency)

    def score_candidates(self, candidates: Iterable[Candidate]) -> Iterator[dict]:
        """Records in input order; the questions of several candidates go to the VLM together."""
        chunk: list[_Opened] = []
        size = self._chunk_size()
        for opened in prefetch_map(self.prepare, candidates, self.num_workers, depth=max(8, 2 * self.num_workers)):
            chunk.append(opened)
            if len(chunk) >= size:
                yield from self._score_chunk(chunk)
                chunk = []
        if chunk:
            yield from self._score_chunk(chunk)


class VQAJudge(VLMJudge):
    """Each term is 100 * P("Yes"); the judge's own detail is that probability."""

    name = "vqa"

    def templates(self) -> tuple[str, str, str]:
        return prompts.ASK_IMAGE, prompts.ASK_BOX, prompts.ASK_CROP

    def answer(self, questions: list[_Question]) -> list[Any]:
        out: list[Any] = []
        for question, p in zip(questions, self.vlm.yes_probability([q.request for q in questions])):
            if isinstance(p, RequestFailed):
                out.append(p)
            elif question.term == ("global",):
                out.append((100.0 * p, {"p_yes": round_score(p, P_DECIMALS)}))
            else:
                out.append((100.0 * p, round_score(p, P_DECIMALS)))
        return out


class ACPJudge(VLMJudge):
    """The VLM describes, the rater rates the description against the intended text (x 20)."""

    name = "acp"

    def __init__(self, vlm: Any, rater: Rater, **options: Any):
        super().__init__(vlm, **options)
        self.rater = rater

    def templates(self) -> tuple[str, str, str]:
        return prompts.DESCRIBE_IMAGE, prompts.DESCRIBE_BOX, prompts.DESCRIBE_CROP

    def answer(self, questions: list[_Question]) -> list[Any]:
        seed = self.config.judge.seed
        descriptions = self.vlm.generate([q.request for q in questions], seed)
        described = [i for i, d in enumerate(descriptions) if not isinstance(d, RequestFailed)]
        ratings = self.rater.rate_many([(questions[i].intended, descriptions[i]) for i in described], seed)
        out: list[Any] = list(descriptions)
        for i, rating in zip(described, ratings):
            if isinstance(rating, RequestFailed):
                out[i] = rating
            else:
                out[i] = (rating_score(rating), self._detail(descriptions[i], rating))
        return out

    @staticmethod
    def _detail(description: str, rating: Rating) -> dict[str, Any]:
        return {"description": description, "rating": rating.score, "explanation": rating.explanation}

    def manifest(self) -> dict[str, Any]:
        return {**super().manifest(), "rater": self.rater.describe(), "rating_attempts": self.rater.attempts}

    def stats(self) -> dict[str, int]:
        return {**super().stats(), "rater_cached": self.rater.hits, "rater_asked": self.rater.asked}

    def close(self) -> None:
        self.rater.close()
        super().close()
