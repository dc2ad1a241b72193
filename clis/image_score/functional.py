"""The CLIS-I formulas as plain tensor functions (the functional twins of the scorer).

Everything here works on embeddings and boxes that are already computed, so each formula can
be checked by hand. ``docs/clis-i.md`` gives the reasoning behind each term.

Example:
    >>> import torch
    >>> from clis.image_score.functional import clip_alignment, grounding_probability
    >>> img = torch.tensor([[1.0, 0.0]]); txt = torch.tensor([[1.0, 1.0]])
    >>> clip_alignment(img, txt)             # 100 * cos(45 degrees)
    tensor([70.7107])
    >>> phrases = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> grounding_probability(img, phrases, torch.tensor([0]), logit_scale=1.0)  # 100 * e / (e + 1)
    tensor([73.1059])
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchvision.ops import box_iou

# Scores are written with this many decimals: far below any meaningful difference, and it
# keeps scores.jsonl readable.
DECIMALS = 4


def round_score(value: Optional[float], decimals: int = DECIMALS) -> Optional[float]:
    """``value`` as a record writes it: a float rounded to ``decimals``, or None.

    >>> round_score(71.234567), round_score(None), round_score(0.1234567, 6)
    (71.2346, None, 0.123457)
    """
    return None if value is None else round(float(value), decimals)


def normalize(features: Tensor) -> Tensor:
    """Rows scaled to unit L2 norm, the way CLIPScore normalises (no epsilon)."""
    return features / features.norm(p=2, dim=-1, keepdim=True)


def clip_alignment(image_features: Tensor, text_features: Tensor, scale: float = 1.0) -> Tensor:
    """CLIPScore per row: ``min(100, scale * 100 * max(cos(image, text), 0))``.

    With ``scale=1`` this is exactly torchmetrics' ``CLIPScore`` for one image-text pair.
    Rows of ``image_features`` and ``text_features`` are paired; neither needs to be
    normalised.

    Example:
        >>> clip_alignment(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.0, 1.0], [-1.0, 0.0]]))
        tensor([0., 0.])
        >>> clip_alignment(torch.tensor([[3.0, 4.0]]), torch.tensor([[3.0, 4.0]]), scale=2.5)
        tensor([100.])
    """
    cos = (normalize(image_features) * normalize(text_features)).sum(dim=-1)
    return (100.0 * scale * cos).clamp(min=0.0, max=100.0)


def grounding_probability(
    region_features: Tensor, phrase_features: Tensor, target: Tensor, logit_scale: float
) -> Tensor:
    """``100 * softmax_j(logit_scale * cos(region_i, phrase_j))[target_i]`` for each region.

    The probability that region ``i`` is described by its own phrase ``target[i]`` rather than
    by any other row of ``phrase_features`` (the layout's other phrases and the distractors).

    Example:
        >>> regions = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> phrases = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> grounding_probability(regions, phrases, torch.tensor([0, 0]), logit_scale=100.0).round()
        tensor([100.,   0.])
    """
    logits = logit_scale * normalize(region_features) @ normalize(phrase_features).T
    probs = logits.softmax(dim=-1)
    return 100.0 * probs.gather(1, target.view(-1, 1)).squeeze(1)


def weighted_mean(terms: Sequence[Optional[float]], weights: Sequence[float]) -> float:
    """``sum(w * t) / sum(w)`` over the terms that are not None (their weights drop out).

    Example:
        >>> round(weighted_mean([80.0, 40.0, None], [0.2, 0.4, 0.4]), 6)   # (16 + 16) / 0.6
        53.333333
    """
    used = [(t, w) for t, w in zip(terms, weights) if t is not None and w > 0]
    total = sum(w for _, w in used)
    if total <= 0:
        raise ValueError("weighted_mean: every term with a positive weight is missing")
    return sum(t * w for t, w in used) / total


def instance_score(
    region: float, grounding: float, detection: Optional[float], weights: Sequence[float] = (0.2, 0.4, 0.4)
) -> float:
    """``S_k``: weighted mean of region ``R_k``, grounding ``P_k`` and detection ``D_k``.

    ``detection`` is None when no detector is configured; its weight then drops out.

    Example:
        >>> round(instance_score(30.0, 90.0, 60.0), 6)   # (0.2*30 + 0.4*90 + 0.4*60) / 1.0
        66.0
        >>> round(instance_score(30.0, 90.0, None), 6)   # (0.2*30 + 0.4*90) / 0.6
        70.0
    """
    return weighted_mean([region, grounding, detection], weights)


def clis_i(
    global_score: Optional[float], instance_scores: Sequence[float], weights: Sequence[float] = (0.5, 0.5)
) -> float:
    """CLIS-I: weighted mean of the global term and the mean instance score.

    ``global_score`` is None for a layout without a caption; the instances then decide alone.

    Example:
        >>> clis_i(30.0, [70.0, 50.0])              # 0.5*30 + 0.5*60
        45.0
        >>> clis_i(None, [70.0, 50.0])
        60.0
    """
    mean_instance = sum(instance_scores) / len(instance_scores) if instance_scores else None
    return weighted_mean([global_score, mean_instance], weights)


def match_detections(object_boxes: Tensor, detection_boxes: Tensor) -> tuple[Tensor, Tensor]:
    """One-to-one assignment of layout boxes to detections that maximises the total IoU.

    Boxes are ``xyxy``. Returns ``(index, iou)`` per layout box: the matched detection's
    index (``-1`` when there are fewer detections than boxes) and its IoU. The Hungarian
    assignment (``scipy.optimize.linear_sum_assignment``) keeps two objects with the same
    label from both claiming the one detection that lies between them.

    Example:
        >>> objs = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
        >>> dets = torch.tensor([[0.5, 0.5, 1.0, 1.0]])
        >>> match_detections(objs, dets)
        (tensor([-1,  0]), tensor([0., 1.]))
    """
    n = object_boxes.shape[0]
    index = torch.full((n,), -1, dtype=torch.long)
    ious = torch.zeros(n)
    if n == 0 or detection_boxes.shape[0] == 0:
        return index, ious
    matrix = box_iou(object_boxes.float(), detection_boxes.float()).cpu()
    rows, cols = linear_sum_assignment(matrix.numpy().astype(np.float64), maximize=True)
    for r, c in zip(rows.tolist(), cols.tolist()):
        index[r] = c
        ious[r] = matrix[r, c]
    return index, ious


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """Normalised ``[x, y, w, h]`` (top-left origin) to ``[x0, y0, x1, y1]``."""
    x, y, w, h = boxes.unbind(-1)
    return torch.stack([x, y, x + w, y + h], dim=-1)
