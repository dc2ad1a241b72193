"""The detector term of every judge: one detector pass per image, one found / IoU / count per object.

The judges differ in how they read an image (CLIP crops, a VLM's answers), but they share the
detector check, so it lives here once: :class:`DetectionTerms` batches the images, queries
each with its layout's labels (or phrases), and matches detections to layout boxes.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

import torch
from PIL import Image

from clis.image_score.config import DetectionConfig
from clis.image_score.detection import Detector
from clis.image_score.functional import match_detections, round_score, xywh_to_xyxy
from clis.image_score.images import one_line
from clis.layout import Layout



class DetectionTerms:
    """Detector outputs turned into per-object terms; a no-op without a detector."""

    def __init__(self, detector: Optional[Detector], config: DetectionConfig, batch_size: Optional[int] = None):
        self.detector = detector
        self.config = config
        if batch_size is None:
            # A GPU takes many images per pass; on CPU larger batches only hold more memory.
            on_gpu = str(getattr(detector, "device", "cpu")).startswith("cuda")
            batch_size = 16 if on_gpu else 4
        self.batch_size = max(1, int(batch_size))

    def query(self, obj: Any) -> str:
        return obj.label if self.config.query == "label" else obj.phrase

    def queries(self, layout: Layout) -> list[str]:
        return list(dict.fromkeys(self.query(o) for o in layout.objects))

    def check_queries(self, layouts: Iterable[Layout]) -> None:
        """Note which queries of ``layouts`` the detector will cut (see ``Detector.truncation``)."""
        if self.detector is not None:
            self.detector.check_queries(list(dict.fromkeys(self.query(o) for lay in layouts for o in lay.objects)))

    def detect(self, images: Sequence[Image.Image], layouts: Sequence[Layout], names: Sequence[Optional[str]],
               prepared: Optional[Sequence[Optional[dict]]] = None) -> list[Optional[dict | str]]:
        """Detections per image: a dict by query, None without a detector, or a one-line error
        (``names`` label the images in it). ``prepared``: ``Detector.prepare_image`` per image.

        Images are batched by size, ``batch_size`` at a time: same-size images need no padding,
        so a batch's detections equal those of each image alone.
        """
        if self.detector is None:
            return [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(image.size, []).append(i)
        found: list[Optional[dict | str]] = [None] * len(images)
        for members in by_size.values():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                for i, result in zip(chunk, self._detect_chunk(images, layouts, names, prepared, chunk)):
                    found[i] = result
        return found

    def _detect_chunk(self, images, layouts, names, prepared, chunk: list[int]) -> list[dict | str]:
        queries = [self.queries(layouts[i]) for i in chunk]
        extra = None if prepared is None else [prepared[i] for i in chunk]
        try:
            if extra is None or all(e is None for e in extra):
                return self.detector.detect([images[i] for i in chunk], queries)
            return self.detector.detect([images[i] for i in chunk], queries, extra)
        except Exception:  # noqa: BLE001 -- find the image that breaks the batch, keep the rest
            results: list[dict | str] = []
            for i, image_queries in zip(chunk, queries):
                try:
                    results.extend(self.detector.detect([images[i]], [image_queries]))
                except Exception as exc:  # noqa: BLE001 -- one image must not stop the run
                    results.append(f"{names[i]}: detector failed: {one_line(exc)}")
            return results

    def terms(self, layout: Layout, detections: Optional[dict]) -> list[Optional[dict]]:
        """Per object: found / iou / score / count / expected_count / count_match (None without a detector)."""
        if detections is None:
            return [None] * len(layout.objects)
        terms: list[Optional[dict]] = [{} for _ in layout.objects]
        groups: dict[str, list[int]] = {}
        for k, obj in enumerate(layout.objects):
            groups.setdefault(self.query(obj), []).append(k)
        for query, members in groups.items():
            found = detections[query]
            boxes = xywh_to_xyxy(torch.tensor([layout.objects[k].bbox for k in members], dtype=torch.float32))
            index, ious = match_detections(boxes, found.boxes)
            for row, k in enumerate(members):
                matched = int(index[row]) >= 0
                terms[k] = {
                    "found": matched,
                    "iou": round_score(float(ious[row])) if matched else 0.0,
                    "score": round_score(float(found.scores[index[row]])) if matched else None,
                    "count": found.count,
                    "expected_count": len(members),
                    "count_match": found.count == len(members),
                }
        return terms
