"""Model specs, loading and caching.

>>> from clis.models import load_model, DEFAULT_TEXT_EMBEDDER
>>> load_model(DEFAULT_TEXT_EMBEDDER, "text-embedding").task
'text-embedding'

See ``docs/models.md`` for the spec grammar, caching and offline behaviour.

The default specs are plain constants; everything else is imported on first use, so that
reading a default (``clis --help`` does) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from clis.models.defaults import (
    DEFAULT_CLIP,
    DEFAULT_DETECTOR,
    DEFAULT_GLIGEN,
    DEFAULT_LLM,
    DEFAULT_SAM,
    DEFAULT_SD,
    DEFAULT_TEXT_EMBEDDER,
    OWLV2_DETECTOR,
)

# public name -> the submodule that defines it (imported on first access)
_LAZY = {
    "TASKS": "loaders",
    "KnownModel": "inventory",
    "LoadedModel": "registry",
    "fetch_model": "registry",
    "known_models": "inventory",
    "load_model": "registry",
    "locate_model": "inventory",
    "ModelSpec": "spec",
    "parse_spec": "spec",
}

if TYPE_CHECKING:
    from clis.models.loaders import TASKS
    from clis.models.inventory import KnownModel, known_models, locate_model
    from clis.models.registry import LoadedModel, fetch_model, load_model
    from clis.models.spec import ModelSpec, parse_spec


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "DEFAULT_CLIP", "DEFAULT_DETECTOR", "DEFAULT_GLIGEN", "DEFAULT_LLM", "DEFAULT_SAM", "DEFAULT_SD",
    "DEFAULT_TEXT_EMBEDDER", "OWLV2_DETECTOR",
    "TASKS", "KnownModel", "LoadedModel", "ModelSpec", "fetch_model", "known_models", "load_model",
    "locate_model", "parse_spec",
]
