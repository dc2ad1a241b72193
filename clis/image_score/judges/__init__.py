"""CLIS-I judges: who reads the images (``docs/clis-i.md``).

* ``clip`` (default): :class:`clis.image_score.engine.ImageScorer`, CLIP crops, grounding and detector;
* ``vqa``: :class:`VQAJudge`, P("Yes") of a VLM per image, box in context and crop;
* ``acp``: :class:`ACPJudge`, the paper's protocol: VLM descriptions rated by an LLM.

Every judge has the same face: ``score_candidates(candidates)`` yields scores.jsonl records in
input order, ``check_detector_queries(layouts)``, ``manifest()`` and ``close()``.
:func:`load_vlm_judge` builds a VLM judge from a :class:`clis.scorer.ScoreConfig`, with its
models and the answer cache; :class:`clis.scorer.Scorer` is the one caller.
"""

from __future__ import annotations

from typing import Any, Optional

from clis.errors import ModelUnavailableError, unavailable_with_remedy
from clis.image_score.judges.answers import AnswerCache, CachedVLM, run_cache_path
from clis.image_score.judges.vlm_judges import ACPJudge, VLMJudge, VQAJudge


def load_vlm_judge(cfg: Any, detector: Optional[Any] = None) -> VLMJudge:
    """The ``vqa`` or ``acp`` judge of ``cfg`` (a ScoreConfig), its VLM (and rater) loaded once.

    Raises:
        ModelUnavailableError: weights missing offline or a server that cannot be reached; the
            message names the flag that fixes it.
    """
    from clis.models.defaults import DEFAULT_VLM
    from clis.vlm import is_served, make_vlm

    judge = cfg.judge
    spec = judge.vlm or DEFAULT_VLM
    path = run_cache_path(judge.cache, cfg.embedding_cache)
    cache = AnswerCache(path) if path is not None else None
    try:
        try:
            vlm = make_vlm(spec, judge.vlm_model, device=cfg.device, dtype=cfg.dtype,
                           max_new_tokens=judge.max_new_tokens, temperature=judge.temperature,
                           batch_size=cfg.batch_size, concurrency=judge.concurrency, retries=judge.retries,
                           timeout=judge.timeout, grounding=judge.grounding)
        except ModelUnavailableError as exc:
            remedy = ("check the server URL" if is_served(spec) else
                      f"pass --vlm PATH with a local model folder, --vlm http://HOST:PORT/v1 --vlm-model NAME for a "
                      f"served model, or run `clis models fetch {spec}` on a connected machine")
            raise unavailable_with_remedy(exc, f"VLM {spec} is not available", remedy) from None
        options = dict(config=cfg, detector=detector, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                       max_pixels=cfg.max_pixels)
        if judge.name == "vqa":
            return VQAJudge(CachedVLM(vlm, cache), answer_cache=cache, **options)
        from clis.image_score.judges.rater import Rater

        try:
            rater = Rater(judge.rater, judge.rater_model, mode=judge.rater_mode, temperature=judge.temperature,
                          max_new_tokens=judge.max_new_tokens, device=cfg.device, timeout=judge.timeout,
                          concurrency=judge.concurrency, attempts=judge.rating_attempts, retries=judge.retries,
                          cache=cache)
        except ModelUnavailableError as exc:
            vlm.close()
            raise unavailable_with_remedy(exc, f"rater {judge.rater} is not available",
                                          "pass --rater with a local model folder or an http(s):// endpoint") from None
        return ACPJudge(CachedVLM(vlm, cache), rater, answer_cache=cache, **options)
    except BaseException:
        if cache is not None:
            cache.close()
        raise


__all__ = ["ACPJudge", "AnswerCache", "CachedVLM", "VLMJudge", "VQAJudge", "load_vlm_judge"]
