"""Turn a model spec + task into a loaded model: the one entry point every metric uses.

``load_model(spec, task)`` parses the spec (:mod:`clis.models.spec`), finds the weights
locally or in the hub cache (downloading only when online), picks the model and processor
classes from the config and the task, and returns a :class:`LoadedModel` in eval mode with
a fingerprint for run manifests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from clis.errors import ModelSpecError
from clis.models import embedded, hub
from clis.models.cache import weights_fingerprint
from clis.models.inventory import KnownModel, known_models, locate_model  # noqa: F401 - re-exported
from clis.models.defaults import (  # noqa: F401 - re-exported, defined without torch
    DEFAULT_CLIP, DEFAULT_DETECTOR, DEFAULT_LLM, DEFAULT_SAM, DEFAULT_TEXT_EMBEDDER, OWLV2_DETECTOR,
)
from clis.models.loaders import check_task, load_hf_dir, load_open_clip, torch_dtype
from clis.models.spec import ModelSpec, parse_spec

_EMBEDDED_TASK = {"smollm2": "causal-lm", "minilm": "text-embedding"}


@dataclass
class LoadedModel:
    """A model ready for inference.

    Attributes:
        spec: the spec string it was loaded from.
        task: ``clip``, ``detector``, ``causal-lm``, ``text-embedding``, ``sam`` or ``vlm``.
        backend: ``open_clip``, ``hf`` or ``gguf`` (the embedded SmolLM2, read from its GGUF).
        model: the torch module, in eval mode, on ``device``.
        processor: HF processor / tokenizer; for open_clip ``{"preprocess", "tokenizer"}``.
        device, dtype: where the weights live.
        fingerprint: plain dict for manifests (spec, revision or sha256 of the weights).
        source: local folder or file the weights were read from.
    """

    spec: str
    task: str
    backend: str
    model: torch.nn.Module
    processor: Any
    device: str
    dtype: torch.dtype
    fingerprint: dict = field(default_factory=dict)
    source: Optional[Path] = None


def load_model(spec: str, task: str, device: str = "cpu", dtype: Any = None,
               trust_remote_code: bool = False) -> LoadedModel:
    """Load the model named by ``spec`` for ``task``.

    Args:
        spec: a model spec string (see ``docs/models.md``), e.g. ``hf:openai/clip-vit-base-patch32``,
            ``open_clip:ViT-B-32/laion2b_s34b_b79k``, ``embedded:minilm`` or a local path.
        task: ``clip``, ``detector``, ``causal-lm``, ``text-embedding``, ``sam`` or ``vlm``.
        device: torch device string.
        dtype: ``None`` (float32), a ``torch.dtype`` or a name like ``"float16"``.
        trust_remote_code: let transformers run code from the model repo. Off unless asked.

    Raises:
        ModelSpecError: the spec is malformed, or the model does not fit the task.
        ModelUnavailableError: hub weights are not cached and we are offline (or the download failed).

    Example:
        >>> from clis.models import load_model
        >>> m = load_model("embedded:minilm", "text-embedding")
        >>> m.backend, m.task
        ('hf', 'text-embedding')
    """
    check_task(task)
    parsed = parse_spec(spec)
    dtype = torch_dtype(dtype)
    # transformers draws a "Loading weights" bar per model; our own progress bars say enough.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if parsed.backend == "open_clip":
        loaded = _load_open_clip(parsed, task, device, dtype)
    elif parsed.backend == "embedded":
        loaded = _load_embedded(parsed, task, device, dtype)
    else:
        loaded = _load_hf(parsed, task, device, dtype, trust_remote_code)
    loaded.model.to(device)
    return loaded


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    for param in model.parameters():
        return param.dtype
    return torch.float32


def _load_hf(spec: ModelSpec, task: str, device: str, dtype, trust_remote_code: bool) -> LoadedModel:
    if spec.kind == "hf_hub":
        folder = hub.resolve_snapshot(spec)
        # The snapshot folder is named after the resolved commit hash.
        fingerprint = {"spec": spec.text, "repo": spec.repo, "revision": folder.name}
        weights_file = None
    elif spec.kind == "hf_dir":
        folder, weights_file = spec.path, None
        fingerprint = {"spec": spec.text, **weights_fingerprint(folder)}
    else:  # hf_file
        folder, weights_file = spec.path.parent, spec.path
        fingerprint = {"spec": spec.text, **weights_fingerprint(weights_file)}
    model, processor = load_hf_dir(folder, task, spec.text, dtype, trust_remote_code, weights_file)
    model.to(device)
    return LoadedModel(spec.text, task, "hf", model, processor, device, _model_dtype(model), fingerprint, folder)


def _load_open_clip(spec: ModelSpec, task: str, device: str, dtype) -> LoadedModel:
    if task != "clip":
        raise ModelSpecError(f"model {spec.text} is an open_clip model; it serves task 'clip', not {task!r}")
    checkpoint = None
    if spec.kind == "open_clip_tag":
        arch, _ = hub.open_clip_tag_config(spec)
        if spec.path is not None:
            name, pretrained, source = arch, str(spec.path), spec.path
            fingerprint = {"spec": spec.text, "architecture": arch, **weights_fingerprint(spec.path)}
        else:
            source = hub.fetch_open_clip_tag(spec)  # cached path, or download when online
            # Pass the tag, not the file: the tag also carries its preprocessing (mean/std,
            # resize mode), which open_clip only applies when it resolves the tag itself.
            name, pretrained = arch, spec.revision
            fingerprint = {"spec": spec.text, "architecture": arch, "pretrained": spec.revision,
                           **weights_fingerprint(source)}
    elif spec.kind == "open_clip_hub":
        source = hub.resolve_snapshot(spec, open_clip=True)
        name, pretrained = f"local-dir:{source}", None
        fingerprint = {"spec": spec.text, "repo": spec.repo, "revision": source.name}
    elif spec.kind == "open_clip_dir":
        source = spec.path
        name, pretrained = f"local-dir:{source}", None
        fingerprint = {"spec": spec.text, **weights_fingerprint(source)}
    else:  # open_clip_file: a checkpoint with open_clip_config.json beside it
        source = checkpoint = spec.path
        name, pretrained = f"local-dir:{spec.path.parent}", None
        fingerprint = {"spec": spec.text, **weights_fingerprint(spec.path)}
    model, processor = load_open_clip(name, pretrained, spec.text, device, dtype, checkpoint)
    return LoadedModel(spec.text, task, "open_clip", model, processor, device, _model_dtype(model), fingerprint,
                       Path(source))


def _load_embedded(spec: ModelSpec, task: str, device: str, dtype) -> LoadedModel:
    name = spec.repo
    if _EMBEDDED_TASK[name] != task:
        raise ModelSpecError(f"model {spec.text} serves task {_EMBEDDED_TASK[name]!r}, not {task!r}")
    source = embedded.require_source(name)
    if name == "minilm":
        folder, backend = source, "hf"
    else:
        folder, backend = embedded.ensure_smollm2_converted(), "gguf"
    model, processor = load_hf_dir(folder, task, spec.text, dtype)
    model.to(device)
    fingerprint = {"spec": spec.text, **weights_fingerprint(source)}
    return LoadedModel(spec.text, task, backend, model, processor, device, _model_dtype(model), fingerprint, folder)


# ---------------------------------------------------------------------------------------------
# fetch and inventory


def fetch_model(spec: str) -> Path:
    """Fill the local cache for ``spec`` so later loads work offline; return where it is.

    Hub specs download into the Hugging Face cache (safetensors preferred); open_clip tags use
    open_clip's downloader; ``embedded:smollm2`` runs its one-time conversion; local paths are
    returned as they are.
    """
    parsed = parse_spec(spec)
    if parsed.is_local and parsed.kind != "open_clip_tag":
        return parsed.path
    if parsed.kind == "hf_hub":
        return hub.download_snapshot(parsed)
    if parsed.kind == "open_clip_hub":
        return hub.download_snapshot(parsed, open_clip=True)
    if parsed.kind == "open_clip_tag":
        return parsed.path if parsed.path is not None else hub.fetch_open_clip_tag(parsed)
    if parsed.repo == "smollm2":
        return embedded.ensure_smollm2_converted()
    return embedded.require_source(parsed.repo)


# locate_model, KnownModel and known_models live in clis.models.inventory (no torch there).


__all__ = ["LoadedModel", "KnownModel", "load_model", "fetch_model", "locate_model", "known_models"]
