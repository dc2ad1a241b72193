"""Build torch modules from local files: transformers directories and open_clip checkpoints.

Every path through here is safe by default: safetensors are preferred, pickled checkpoints
are read with ``torch.load(weights_only=True)`` (transformers and open_clip do the same
internally), and ``trust_remote_code`` stays False unless the caller sets it.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Optional

import torch

from clis.errors import InputError, ModelSpecError
from clis.jsonio import read_json

TASKS = ("clip", "detector", "causal-lm", "text-embedding", "sam", "vlm")

# task -> {config model_type: (model class, processor class)}. Tasks not listed here
# (causal-lm, text-embedding, vlm) accept any model type their Auto class accepts.
HF_CLASSES: dict[str, dict[str, tuple[str, str]]] = {
    "clip": {"clip": ("CLIPModel", "CLIPProcessor")},
    "detector": {
        "grounding-dino": ("GroundingDinoForObjectDetection", "GroundingDinoProcessor"),
        "owlv2": ("Owlv2ForObjectDetection", "Owlv2Processor"),
        "owlvit": ("OwlViTForObjectDetection", "OwlViTProcessor"),
    },
    "sam": {"sam": ("SamModel", "SamProcessor")},
}
# Model types that are never a text encoder or a language model on their own.
_VISION_TYPES = {t for table in HF_CLASSES.values() for t in table}


def check_task(task: str) -> None:
    if task not in TASKS:
        raise ModelSpecError(f"unknown model task {task!r}; expected one of: {', '.join(TASKS)}")


def torch_dtype(dtype: Any) -> Optional[torch.dtype]:
    """Accept ``None``, a ``torch.dtype`` or a name like ``"float16"`` / ``"bf16"``."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
        "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
        "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    }
    key = str(dtype).lower().removeprefix("torch.")
    if key not in names:
        raise ModelSpecError(f"unknown dtype {dtype!r}; expected float32, float16 or bfloat16")
    return names[key]


def _read_json(path: Path, spec: str) -> dict:
    try:
        # transformers writes NaN and Infinity into configs with Python's json; no score is read here
        data = read_json(path, "model config", finite=False)
    except InputError as exc:
        raise ModelSpecError(f"model {spec}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelSpecError(f"model {spec}: {path}: not a JSON object of model settings")
    return data


def _broken_json(folder: Path) -> Optional[str]:
    """The first JSON file of ``folder`` that strict JSON refuses, as "path: reason", else None."""
    for path in sorted(folder.glob("*.json")):
        try:
            read_json(path, "model file", finite=False)
        except InputError as exc:
            return str(exc)
    return None


def _refusal(exc: BaseException) -> str:
    """The line of torch's weights_only refusal that says what it refused (a global, an opcode)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or line.startswith("Unsupported"):
            return line
    return lines[0] if lines else type(exc).__name__


def _pickled_checkpoint(folder: Path) -> Path:
    """The pickled weights file transformers reads from ``folder`` (the folder when unclear)."""
    found = sorted(p for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth"))
    preferred = [p for p in found if p.name.startswith("pytorch_model")]
    return (preferred or found or [folder])[0]


def hf_classes_for(folder: Path, task: str, spec: str) -> tuple[Any, Any, str]:
    """(model class, processor/tokenizer class, model_type) for a transformers folder and task."""
    import transformers
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES, MODEL_MAPPING_NAMES,
    )

    config = _read_json(folder / "config.json", spec)
    model_type = config.get("model_type")
    if not model_type or not isinstance(model_type, str):
        raise ModelSpecError(f"model {spec}: {folder / 'config.json'} has no model_type")
    if task in HF_CLASSES:
        table = HF_CLASSES[task]
        if model_type not in table:
            raise ModelSpecError(
                f"model {spec} is a {model_type!r} model, but task {task!r} needs one of: {', '.join(table)}"
            )
        model_name, processor_name = table[model_type]
        return getattr(transformers, model_name), getattr(transformers, processor_name), model_type
    if task == "causal-lm":
        if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            raise ModelSpecError(f"model {spec} is a {model_type!r} model, which is not a causal language model")
        return transformers.AutoModelForCausalLM, transformers.AutoTokenizer, model_type
    if task == "vlm":
        if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
            raise ModelSpecError(
                f"model {spec} is a {model_type!r} model, which is not an image-text-to-text (vision-language) model"
            )
        return transformers.AutoModelForImageTextToText, transformers.AutoProcessor, model_type
    # text-embedding
    if model_type in _VISION_TYPES or model_type not in MODEL_MAPPING_NAMES:
        raise ModelSpecError(f"model {spec} is a {model_type!r} model, which is not a text encoder")
    return transformers.AutoModel, transformers.AutoTokenizer, model_type


def load_hf_dir(folder: Path, task: str, spec: str, dtype: Optional[torch.dtype],
                trust_remote_code: bool = False, weights_file: Optional[Path] = None):
    """Load model + processor from a transformers directory (optionally a specific weights file)."""
    model_cls, processor_cls, _ = hf_classes_for(folder, task, spec)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        if weights_file is None:
            has_safe = any(folder.glob("*.safetensors"))
            # use_safetensors=True refuses to fall back to pickles when safetensors exist.
            model = model_cls.from_pretrained(folder, use_safetensors=True if has_safe else None, **kwargs)
        else:
            model = _from_config_and_file(model_cls, folder, weights_file, spec, kwargs)
        processor = processor_cls.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except ModelSpecError:
        raise
    except pickle.UnpicklingError as exc:  # torch.load(weights_only=True) refused a pickle
        checkpoint = weights_file or _pickled_checkpoint(folder)
        raise ModelSpecError(f"model {spec}: cannot read checkpoint {checkpoint} safely: {_refusal(exc)}") from exc
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # transformers' own message for a broken tokenizer or processor file names no file.
        broken = _broken_json(folder) if isinstance(exc, (ValueError, RecursionError)) else None
        raise ModelSpecError(f"model {spec}: cannot load from {folder}: {broken or first}") from exc
    return model.eval(), processor


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint file safely: safetensors directly, pickles with weights_only=True."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelSpecError(f"checkpoint {path} does not hold a state dict")
    return state


def _from_config_and_file(model_cls, folder: Path, weights_file: Path, spec: str, kwargs: dict):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder, trust_remote_code=kwargs["trust_remote_code"])
    if hasattr(model_cls, "from_config"):  # Auto classes
        model = model_cls.from_config(config, trust_remote_code=kwargs["trust_remote_code"])
    else:
        model = model_cls(config)
    try:
        state = read_state_dict(weights_file)
    except Exception as exc:  # noqa: BLE001 - e.g. a pickle that weights_only refuses
        raise ModelSpecError(f"model {spec}: cannot read checkpoint {weights_file} safely: {_refusal(exc)}") from exc
    missing, unexpected = model.load_state_dict(state, strict=False)
    model.tie_weights()
    tied = set(getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {list(unexpected)[:3]}"
        raise ModelSpecError(f"model {spec}: checkpoint {weights_file.name} does not match config.json ({detail})")
    if kwargs.get("dtype") is not None:
        model = model.to(kwargs["dtype"])
    return model


# ---------------------------------------------------------------------------------------------
# open_clip

_PRECISION = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", None: "fp32"}


def load_open_clip(name: str, pretrained: Optional[str], spec: str, device: str, dtype: Optional[torch.dtype],
                   checkpoint: Optional[Path] = None):
    """Create an open_clip model; ``name`` is an architecture, ``local-dir:DIR`` or ``hf-hub:ID``.

    ``checkpoint`` loads a specific file into the architecture of a ``local-dir:`` config.
    Returns ``(model, {"preprocess": transform, "tokenizer": tokenizer})``.
    """
    import open_clip

    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, device=device, precision=_PRECISION[dtype],
            load_weights=checkpoint is None, weights_only=True,
        )
        if checkpoint is not None:
            open_clip.load_checkpoint(model, str(checkpoint), weights_only=True)
            model.to(device=device, dtype=dtype or torch.float32)
        tokenizer = open_clip.get_tokenizer(name)
    except ModelSpecError:
        raise
    except Exception as exc:  # noqa: BLE001 - open_clip raises bare RuntimeError/ValueError/pickle errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelSpecError(f"model {spec}: open_clip could not load it: {first}") from exc
    return model.eval(), {"preprocess": preprocess, "tokenizer": tokenizer}
