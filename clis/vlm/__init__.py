"""Vision-language models for the VLM judges: in-process (transformers) or served (OpenAI-compatible).

:func:`make_vlm` is the one factory: an ``http(s)://`` spec gives an
:class:`clis.vlm.openai_vlm.OpenAIVLM`, anything else a model spec for
:class:`clis.vlm.transformers_vlm.TransformersVLM`. Both follow :class:`clis.vlm.base.VLMClient`.
"""

from __future__ import annotations

from typing import Any, Optional

from clis.errors import InputError
from clis.vlm.base import GROUNDING_SYNTAXES, RequestFailed, VLMClient, VLMRequest, box_text, grounding_syntax


def is_served(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def make_vlm(spec: str, model: Optional[str] = None, *, device: str = "cpu", dtype: Any = None,
             max_new_tokens: int = 96, temperature: float = 0.0, batch_size: int = 8, concurrency: int = 4,
             retries: int = 3, timeout: float = 120.0, grounding: str = "auto") -> VLMClient:
    """The VLM client for ``spec`` (see the module docstring); ``grounding="auto"`` keeps the model's own."""
    if is_served(spec):
        from clis.vlm.openai_vlm import OpenAIVLM

        return OpenAIVLM(spec, model=model, max_new_tokens=max_new_tokens, temperature=temperature,
                         concurrency=concurrency, retries=retries, timeout=timeout,
                         grounding="plain" if grounding == "auto" else grounding)
    if model is not None:
        raise InputError("--vlm-model names the model on a server; give it with an http(s):// --vlm URL")
    from clis.vlm.transformers_vlm import TransformersVLM

    client = TransformersVLM(spec, device=device, dtype=dtype, max_new_tokens=max_new_tokens,
                             temperature=temperature, batch_size=batch_size)
    if grounding != "auto":
        client.grounding = grounding
    return client


__all__ = ["GROUNDING_SYNTAXES", "RequestFailed", "VLMClient", "VLMRequest", "box_text", "grounding_syntax",
           "is_served", "make_vlm"]
