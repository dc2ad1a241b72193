"""Model specs, loading and caching.

>>> from clis.models import load_model, DEFAULT_TEXT_EMBEDDER
>>> load_model(DEFAULT_TEXT_EMBEDDER, "text-embedding").task
'text-embedding'

See ``docs/models.md`` for the spec grammar, caching and offline behaviour.
"""

from clis.models.loaders import TASKS
from clis.models.registry import (
    DEFAULT_CLIP,
    DEFAULT_DETECTOR,
    DEFAULT_LLM,
    DEFAULT_SAM,
    DEFAULT_TEXT_EMBEDDER,
    OWLV2_DETECTOR,
    KnownModel,
    LoadedModel,
    fetch_model,
    known_models,
    load_model,
    locate_model,
)
from clis.models.spec import ModelSpec, parse_spec

__all__ = [
    "DEFAULT_CLIP", "DEFAULT_DETECTOR", "DEFAULT_LLM", "DEFAULT_SAM", "DEFAULT_TEXT_EMBEDDER", "OWLV2_DETECTOR",
    "TASKS", "KnownModel", "LoadedModel", "ModelSpec", "fetch_model", "known_models", "load_model",
    "locate_model", "parse_spec",
]
