"""The work a Ray actor does (``--engine ray``): a :class:`Stage` is built once per actor and then
fed batches of rows, so its models load once, not once per batch.

A row is a JSON-able dict. A stage returns one JSON-able result per row, in row order, and says
what the result of a row is when its worker failed on it (:meth:`Stage.failure`), so a candidate
that cannot be processed becomes an error record instead of ending the run.

Example:
    >>> class Double(Stage):
    ...     def process(self, rows):
    ...         return [{"twice": 2 * row["x"]} for row in rows]
    ...     @staticmethod
    ...     def failure(row, reason):
    ...         return {"twice": None, "error": reason}
    >>> run_stage_locally(Double, {}, [{"x": 1}, {"x": 2}], batch_size=1)
    [{'twice': 2}, {'twice': 4}]
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from clis.errors import InputError
from clis.layout import Layout


def worker_device(engine: Any, device: str) -> Optional[str]:
    """The device a worker of ``engine`` (an EngineConfig) runs ``--device device`` on, when it is not
    ``device`` itself; InputError when the workers would have no GPU for it.

    Example:
        >>> from clis.engines.config import EngineConfig
        >>> worker_device(EngineConfig(name="ray", gpus_per_worker=1), "cuda:3")
        'cuda'
    """
    if not device.startswith("cuda"):
        return None
    if engine.gpus_per_worker <= 0:
        raise InputError(f"--device {device} with --engine ray needs --gpus-per-worker > 0 (a worker sees only the "
                         "GPUs Ray gives it)")
    return "cuda"  # Ray sets CUDA_VISIBLE_DEVICES to the worker's own GPUs, so cuda:3 is not there


class Stage:
    """Base of a stage: ``__init__(**kwargs)`` loads the models, :meth:`process` uses them."""

    def process(self, rows: list[dict]) -> list[dict]:
        raise NotImplementedError

    @staticmethod
    def failure(row: dict, reason: str) -> dict:
        """The result of ``row`` when its worker died on it, or raised scoring it alone."""
        raise NotImplementedError


def run_stage_locally(stage_cls: type[Stage], stage_kwargs: dict, rows: Iterable[dict], batch_size: int) -> list[dict]:
    """The local twin of :func:`clis.engines.ray_engine.map_stage`: the same results in this process
    (what the Ray tests compare against, and a way to debug a stage without Ray)."""
    stage = stage_cls(**stage_kwargs)
    rows = list(rows)
    results: list[dict] = []
    for start in range(0, len(rows), max(1, batch_size)):
        results.extend(stage.process(rows[start:start + batch_size]))
    return results


class ImageStage(Stage):
    """CLIS-I records (uncombined: ``clis_l`` None) of candidate rows ``{"layout", "image"}``.

    ``config`` is the driver's ``ScoreConfig`` as a dict (``model_dump(by_alias=True,
    exclude_unset=True)``). The actor scores images only: CLIS-L and the combine stay with the
    driver's Scorer. Decoding, crops and the CLIP transform run in the actor's own loader threads
    (``num_workers``), next to the encoder: the transform is the encoder's, and the float32
    pixels it makes (about 3 MB per candidate at 4 objects) would cost more to ship through the
    object store than the decode they save. Rows of a manifest carry ``layout_id`` instead of
    ``layout``; ``layouts_file`` then names the layouts (on a filesystem the workers share).
    """

    def __init__(self, config: dict, device: Optional[str] = None, layouts_file: Optional[str] = None):
        from clis.scorer import ScoreConfig, Scorer

        data = {**config, "layout_score": False, "layout_scores": None}
        if "engine" in ScoreConfig.model_fields:
            data["engine"] = {"name": "local"}  # the actor is where the local path runs
        if device is not None:
            data["device"] = device
        self.scorer = Scorer(ScoreConfig.checked(data, source="--engine ray worker settings"))
        self.layouts: dict[str, Layout] = {}
        if layouts_file is not None:
            from clis.formats import load_layouts

            self.layouts = {layout.id: layout for layout in load_layouts(layouts_file)}

    def _layout(self, row: dict) -> Layout:
        if "layout" in row:
            return Layout.model_validate(row["layout"])
        return self.layouts[row["layout_id"]]

    def process(self, rows: list[dict]) -> list[dict]:
        from clis.image_score.engine import Candidate

        candidates = [Candidate(row["image"], self._layout(row)) for row in rows]
        return list(self.scorer.image_scorer.score_candidates(candidates))

    @staticmethod
    def failure(row: dict, reason: str) -> dict:
        from clis.image_score.engine import error_record

        layout_id = row["layout"]["id"] if "layout" in row else row["layout_id"]
        return error_record(layout_id, row["image"], reason)


class LayoutStage(Stage):
    """``clis score-layouts`` records (``LayoutScore.to_dict()``) of rows ``{"layout"}``; the
    actor builds the LayoutScorer (LLM, text embedder, pool) once."""

    def __init__(self, config: dict):
        from clis.layout_score import LayoutScoreConfig, LayoutScorer

        self.scorer = LayoutScorer(LayoutScoreConfig(**config))

    def process(self, rows: list[dict]) -> list[dict]:
        layouts = [Layout.model_validate(row["layout"]) for row in rows]
        return [result.to_dict() for result in self.scorer.score_layouts(layouts)]

    @staticmethod
    def failure(row: dict, reason: str) -> dict:
        return {"id": row["layout"]["id"], "clis_l": None, "llm": None, "geometry": None, "pairs": [],
                "unknown_pairs": 0, "notes": [], "manifest": None, "error": reason}

