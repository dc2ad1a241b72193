"""Open-vocabulary detection for the CLIS-I detection check (Grounding DINO, OWLv2, OWL-ViT).

:class:`Detector` wraps a ``load_model(spec, "detector")`` result and answers one question per
image: for each text query, which boxes (normalised ``xyxy``) did the detector find, with what
scores? Each predicted box is assigned to the query it scores highest on, boxes below the
score threshold are dropped, and overlapping boxes of one query are merged by NMS, so the
number of boxes left is the detector's count for that query.

Scores are read straight from the model's logits rather than from the processors'
``post_process_*`` helpers: Grounding DINO's helper returns text spans that must be matched
back to queries by string, which breaks when two queries share words; here each query's score
is the maximum over its own tokens, located by the ``.`` separators of the prompt.

Each text encoder reads a fixed number of tokens: 16 for OWLv2 and OWL-ViT (start and end
tokens included), 256 for the released Grounding DINO models (for the whole prompt). A query
longer than that is cut to fit, keeping its first tokens, and remembered in
:attr:`Detector.truncated`, so a run reports it instead of failing every candidate.

The image half of the processor (:meth:`Detector.prepare_image`) runs per image, so a scoring
run calls it in its loader threads; :meth:`Detector.detect` then only tokenizes the prompts and
stacks the prepared pixels. Images of one size stack as they are; a batch of mixed sizes goes
back through the processor, which pads them to a common size (hence batching by image size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from PIL import Image
from torch import Tensor
from torchvision.ops import batched_nms, box_convert

from clis.image_score.config import DetectionConfig

# Grounding DINO's text encoder takes at most ``config.max_text_len`` tokens (256 for the
# released models); queries beyond that go to another pass.
GDINO_MAX_TOKENS = 256
# OWLv2 and OWL-ViT read 16 text tokens per query (``text_config.max_position_embeddings``).
OWL_MAX_TOKENS = 16


@dataclass
class Detections:
    """Boxes found for one query in one image, best first."""

    boxes: Tensor  # [M, 4] normalised xyxy
    scores: Tensor  # [M]

    @property
    def count(self) -> int:
        return int(self.boxes.shape[0])


def _clean_query(text: str) -> str:
    # "." separates queries in a Grounding DINO prompt, so it cannot appear inside one.
    return " ".join(text.replace(".", " ").lower().split()) or "object"


class Detector:
    """Run a transformers open-vocabulary detector on PIL images with per-image text queries."""

    def __init__(self, loaded: Any, config: DetectionConfig | None = None):
        self.loaded = loaded
        self.model = loaded.model
        self.processor = loaded.processor
        self.config = config or DetectionConfig()
        self.kind = getattr(self.model.config, "model_type", "")
        if self.kind not in ("grounding-dino", "owlv2", "owlvit"):
            raise ValueError(f"unsupported detector type {self.kind!r} (expected grounding-dino, owlv2 or owlvit)")
        # Query as given -> cut to the text limit? Cleaned query -> what the model is given.
        self._cut: dict[str, bool] = {}
        self._fitted: dict[str, str] = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def prepare_image(self, image: Image.Image) -> dict[str, Tensor]:
        """The image processor's tensors for one image (``pixel_values``, and ``pixel_mask`` for
        Grounding DINO), pinned when the detector is on CUDA so the copy does not block."""
        inputs = self.processor.image_processor(images=[image], return_tensors="pt")
        pin = self.device.type == "cuda" and torch.cuda.is_available()
        return {key: value.pin_memory() if pin else value for key, value in inputs.items() if isinstance(value, Tensor)}

    def detect(self, images: Sequence[Image.Image], queries: Sequence[Sequence[str]],
               prepared: Optional[Sequence[Optional[dict[str, Tensor]]]] = None) -> list[dict[str, Detections]]:
        """For each image, ``{query: Detections}`` for every one of its (distinct) queries.

        ``prepared``: :meth:`prepare_image` of each image, computed beforehand (in a loader
        thread); without it the images are processed here.
        """
        if len(images) != len(queries) or (prepared is not None and len(prepared) != len(images)):
            raise ValueError("detect: one list of queries per image is needed")
        if not images:
            return []
        for image_queries in queries:
            self.check_queries(image_queries)
        with torch.inference_mode():
            if self.kind == "grounding-dino":
                scores, boxes = self._grounding_dino(images, queries, prepared)
            else:
                scores, boxes = self._owl(images, queries, prepared)
        return [self._select(s, b, q) for s, b, q in zip(scores, boxes, queries)]

    def _image_inputs(self, images: Sequence[Image.Image], order: Sequence[int],
                      prepared: Optional[Sequence[Optional[dict[str, Tensor]]]]) -> dict[str, Tensor]:
        """Image tensors for ``images[i] for i in order``: the prepared ones stacked on the device
        when they share one shape, else one processor call that pads them to a common size."""
        parts = [prepared[i] for i in order] if prepared is not None else None
        if parts and all(part is not None for part in parts):
            keys = set(parts[0])
            if all(set(part) == keys and all(part[k].shape == parts[0][k].shape for k in keys) for part in parts):
                return {k: torch.cat([self._to_device({k: part[k]})[k] for part in parts]) for k in keys}
        inputs = self.processor.image_processor(images=[images[i] for i in order], return_tensors="pt")
        return self._to_device(inputs)

    # -- queries longer than the text encoder reads -------------------------------------------

    @property
    def text_tokens(self) -> int:
        """Tokens the text encoder reads: per query for OWL, per prompt for Grounding DINO."""
        if self.kind == "grounding-dino":
            return int(getattr(self.model.config, "max_text_len", GDINO_MAX_TOKENS))
        text_config = getattr(self.model.config, "text_config", None)
        return int(getattr(text_config, "max_position_embeddings", OWL_MAX_TOKENS))

    def _fit(self, query: str) -> str:
        """A cleaned ``query`` cut to the tokens one query may use, as text the tokenizer reads back."""
        if query in self._fitted:
            return self._fitted[query]
        tokenizer = self.processor.tokenizer
        # OWL: start and end tokens; Grounding DINO: [CLS], [SEP] and the "." after the query.
        budget = self.text_tokens - (3 if self.kind == "grounding-dino" else 2)

        def length(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

        ids = tokenizer(query, add_special_tokens=False, verbose=False)["input_ids"]
        fitted = query
        if len(ids) > budget:
            fitted = ""
            # Decoded word pieces can tokenize differently; drop tokens until the text fits.
            for keep in range(min(budget, len(ids)), 0, -1):
                text = _clean_query(tokenizer.decode(ids[:keep], skip_special_tokens=True))
                if length(text) <= budget:
                    fitted = text
                    break
            if not fitted:
                limit = self.text_tokens
                raise ValueError(f"detector query {query!r} cannot be cut to the detector's {limit} text tokens")
        self._fitted[query] = fitted
        return fitted

    def check_queries(self, queries: Sequence[str]) -> list[bool]:
        """Whether each query is longer than the detector reads (it is cut when detecting)."""
        flags = []
        for query in queries:
            if query not in self._cut:
                cleaned = _clean_query(query)
                try:
                    self._cut[query] = self._fit(cleaned) != cleaned
                except ValueError:  # detect() gives each of its candidates this error
                    self._cut[query] = True
            flags.append(self._cut[query])
        return flags

    @property
    def truncated(self) -> list[str]:
        """Queries seen so far that were cut to the text limit, sorted."""
        return sorted(query for query, cut in self._cut.items() if cut)

    def truncation(self) -> dict:
        """The manifest entry: the text limit and the queries cut to it."""
        return {"text_tokens": self.text_tokens, "queries": self.truncated}

    def truncation_warning(self) -> str | None:
        """One warning line when queries were cut, else None."""
        cut = self.truncated
        if not cut:
            return None
        noun, verb = ("detector query is", "was") if len(cut) == 1 else ("detector queries are", "were")
        limit = f"{self.text_tokens} tokens{' per prompt' if self.kind == 'grounding-dino' else ''}"
        return (
            f"{len(cut)} {noun} longer than the detector's text limit ({limit}) and {verb} cut to it, keeping "
            "the first tokens; the manifest lists them under \"truncation\""
        )

    # -- per-architecture forward passes: each returns, per image, scores [P, Q] and xyxy boxes [P, 4]

    def _to_device(self, inputs: Any) -> dict[str, Tensor]:
        moved = {}
        for key, value in inputs.items():
            if isinstance(value, Tensor):
                value = value.to(self.device, non_blocking=value.is_pinned())
                if value.is_floating_point():
                    value = value.to(self.dtype)
            moved[key] = value
        return moved

    def _gdino_chunks(self, queries: Sequence[str]) -> list[list[str]]:
        """Split queries into prompts that fit the text encoder."""
        tokenizer = self.processor.tokenizer
        limit = int(getattr(self.model.config, "max_text_len", GDINO_MAX_TOKENS))
        chunks: list[list[str]] = [[]]
        used = 2  # [CLS] and [SEP]
        for query in queries:
            cost = len(tokenizer.tokenize(query)) + 1  # its tokens and the "." after it
            if cost + 2 > limit:
                raise ValueError(f"detector query {query!r} is longer than the detector's {limit} text tokens")
            if chunks[-1] and used + cost > limit:
                chunks.append([])
                used = 2
            chunks[-1].append(query)
            used += cost
        return chunks

    def _gdino_token_spans(self, input_ids: list[int], n_queries: int) -> list[list[int]]:
        """Token positions of each query: the runs between [CLS], the "." separators and [SEP]."""
        tokenizer = self.processor.tokenizer
        separators = {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.convert_tokens_to_ids(".")}
        separators.discard(None)
        spans: list[list[int]] = []
        current: list[int] = []
        for position, token in enumerate(input_ids):
            if token in separators or token == tokenizer.pad_token_id:
                if current:
                    spans.append(current)
                    current = []
            else:
                current.append(position)
        if current:
            spans.append(current)
        if len(spans) != n_queries:
            raise RuntimeError(f"Grounding DINO prompt split into {len(spans)} phrases, expected {n_queries}")
        return spans

    def _grounding_dino(self, images: Sequence[Image.Image], queries: Sequence[Sequence[str]], prepared=None):
        jobs = []  # (image index, chunk of queries); long query lists need several prompts
        for i, image_queries in enumerate(queries):
            for chunk in self._gdino_chunks([self._fit(_clean_query(q)) for q in image_queries]):
                jobs.append((i, chunk))
        prompts = [". ".join(chunk) + "." for _, chunk in jobs]
        inputs = self.processor(text=prompts, return_tensors="pt", padding=True)
        outputs = self.model(**self._to_device(inputs), **self._image_inputs(images, [i for i, _ in jobs], prepared))
        probs = outputs.logits.float().sigmoid().cpu()  # [J, P, T]
        boxes = box_convert(outputs.pred_boxes.float().cpu(), "cxcywh", "xyxy").clamp(0, 1)
        parts: list[list[tuple[Tensor, Tensor]]] = [[] for _ in images]
        for j, (i, chunk) in enumerate(jobs):
            spans = self._gdino_token_spans(inputs["input_ids"][j].tolist(), len(chunk))
            chunk_scores = torch.stack([probs[j][:, span].max(dim=1).values for span in spans], dim=1)
            parts[i].append((chunk_scores, boxes[j]))
        scores_out, boxes_out = [], []
        for image_parts in parts:
            # Boxes of one prompt only have scores for that prompt's queries: a block-diagonal
            # score matrix over all of the image's queries.
            width = sum(s.shape[1] for s, _ in image_parts)
            rows, column = [], 0
            for chunk_scores, _ in image_parts:
                block = chunk_scores.new_zeros(chunk_scores.shape[0], width)
                block[:, column : column + chunk_scores.shape[1]] = chunk_scores
                column += chunk_scores.shape[1]
                rows.append(block)
            scores_out.append(torch.cat(rows))
            boxes_out.append(torch.cat([b for _, b in image_parts]))
        return scores_out, boxes_out

    def _owl(self, images: Sequence[Image.Image], queries: Sequence[Sequence[str]], prepared=None):
        text = [[self._fit(_clean_query(q)) for q in image_queries] for image_queries in queries]
        inputs = self.processor(text=text, return_tensors="pt")
        outputs = self.model(**self._to_device(inputs), **self._image_inputs(images, range(len(images)), prepared))
        probs = outputs.logits.float().sigmoid().cpu()  # [B, P, Qmax]
        boxes = box_convert(outputs.pred_boxes.float().cpu(), "cxcywh", "xyxy")
        scores_out, boxes_out = [], []
        for b, image in enumerate(images):
            image_boxes = boxes[b].clone()
            if self.kind == "owlv2":
                # OWLv2 pads every image to a square (bottom and right) before resizing, so its
                # boxes are fractions of the longer side; rescale them to fractions of each side.
                side = max(image.width, image.height)
                image_boxes[:, 0::2] *= side / image.width
                image_boxes[:, 1::2] *= side / image.height
            scores_out.append(probs[b, :, : len(queries[b])])
            boxes_out.append(image_boxes.clamp(0, 1))
        return scores_out, boxes_out

    def _select(self, scores: Tensor, boxes: Tensor, queries: Sequence[str]) -> dict[str, Detections]:
        """Assign boxes to their best query, threshold, NMS within each query."""
        result = {q: Detections(torch.zeros(0, 4), torch.zeros(0)) for q in queries}
        if scores.numel() == 0:
            return result
        best, owner = scores.max(dim=1)
        keep = best >= self.config.score_threshold
        best, owner, kept_boxes = best[keep], owner[keep], boxes[keep]
        if best.numel():
            order = batched_nms(kept_boxes, best, owner, self.config.nms_iou)
            best, owner, kept_boxes = best[order], owner[order], kept_boxes[order]
        for q_index, query in enumerate(queries):
            mine = owner == q_index
            result[query] = Detections(kept_boxes[mine], best[mine])
        return result
