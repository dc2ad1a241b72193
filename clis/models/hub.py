"""Hugging Face hub and open_clip downloads: find what is cached, fetch what is not.

Everything lands in the standard caches (``$HF_HOME`` for the hub, ``~/.cache/clip`` for
open_clip's URL downloads) so a cache filled by ``clis models fetch`` on a connected machine
can be copied to an offline one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from clis.errors import ModelSpecError, ModelUnavailableError
from clis.models.cache import is_offline
from clis.models.spec import ModelSpec

# Only what transformers needs to load a model: configs, tokenizer files and one weights
# format. Repos often also carry TF/Flax/ONNX copies that would multiply the download.
_HF_BASE_PATTERNS = ["*.json", "*.txt", "*.model", "*.jinja", "*.tiktoken"]
_HF_SAFE_WEIGHTS = ["*.safetensors"]
_HF_PICKLE_WEIGHTS = ["*.bin", "*.pt", "*.pth"]
_OPEN_CLIP_BASE = ["open_clip_config.json", "*.txt", "tokenizer*", "special_tokens_map.json", "vocab*", "merges*"]
_OPEN_CLIP_SAFE = ["open_clip_model.safetensors", "open_clip_pytorch_model.safetensors"]
_OPEN_CLIP_PICKLE = ["open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth"]
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def not_cached_message(spec: str, why: str = "it is not in the local cache and HF_HUB_OFFLINE is set") -> str:
    """The one-line message every 'weights missing' error uses."""
    return (
        f"model {spec} is unavailable: {why}; run `clis models fetch {spec}` on a connected machine "
        "to fill the cache (then copy the Hugging Face cache here), or pass a local path instead"
    )


def _has_weights(folder: Path) -> bool:
    return any(p.suffix in _WEIGHT_SUFFIXES for p in folder.rglob("*") if p.is_file())


def cached_snapshot(repo: str, revision: Optional[str] = None) -> Optional[Path]:
    """The cached snapshot folder of a hub repo if it holds weights, else None (no network)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, FileNotFoundError, OSError):
        return None
    except Exception:  # noqa: BLE001 - any other cache oddity means "not usable offline"
        return None
    return folder if folder.is_dir() and _has_weights(folder) else None


def download_snapshot(spec: ModelSpec, open_clip: bool = False) -> Path:
    """Download a hub repo's loadable files (safetensors preferred) and return the snapshot folder."""
    from huggingface_hub import snapshot_download

    if is_offline():
        cached = cached_snapshot(spec.repo, spec.revision)
        if cached is None:
            raise ModelUnavailableError(not_cached_message(spec.text))
        return cached
    base, safe, pickle = (
        (_OPEN_CLIP_BASE, _OPEN_CLIP_SAFE, _OPEN_CLIP_PICKLE) if open_clip
        else (_HF_BASE_PATTERNS, _HF_SAFE_WEIGHTS, _HF_PICKLE_WEIGHTS)
    )
    try:
        folder = Path(snapshot_download(spec.repo, revision=spec.revision, allow_patterns=base + safe))
        if not _has_weights(folder):
            # No safetensors published: fall back to pickled weights (loaded with weights_only=True).
            folder = Path(snapshot_download(spec.repo, revision=spec.revision, allow_patterns=base + pickle))
    except ModelUnavailableError:
        raise
    except Exception as exc:  # noqa: BLE001 - network, auth, missing repo: all one line for the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelUnavailableError(not_cached_message(spec.text, f"download failed ({reason})")) from exc
    if not _has_weights(folder):
        raise ModelUnavailableError(f"model {spec.text}: the hub repo {spec.repo} has no weights file that CLIS can load")
    return folder


def resolve_snapshot(spec: ModelSpec, open_clip: bool = False) -> Path:
    """Cached snapshot if present, else download it (or raise when offline)."""
    cached = cached_snapshot(spec.repo, spec.revision)
    if cached is not None:
        return cached
    return download_snapshot(spec, open_clip=open_clip)


# ---------------------------------------------------------------------------------------------
# open_clip pretrained tags (e.g. ViT-B-32/laion2b_s34b_b79k): open_clip downloads them itself.


def open_clip_tag_config(spec: ModelSpec) -> tuple[str, dict]:
    """(cleaned architecture name, open_clip pretrained config) for an ``open_clip:ARCH/TAG`` spec."""
    import open_clip

    arch = spec.repo.replace("/", "-")
    if arch not in open_clip.list_models():
        raise ModelSpecError(f"model spec {spec.text!r}: open_clip has no architecture {arch!r}")
    if spec.path is not None:
        return arch, {}
    cfg = open_clip.get_pretrained_cfg(arch, spec.revision)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise ModelSpecError(f"model spec {spec.text!r}: unknown pretrained tag {spec.revision!r} for {arch}; known: {tags}")
    return arch, cfg


def _open_clip_candidates(cfg: dict) -> list[tuple[str, str]]:
    """(repo, filename) pairs open_clip would download for a tag, safetensors first."""
    hub = cfg.get("hf_hub", "")
    if not hub:
        return []
    repo, filename = os.path.split(hub)
    filename = filename or "open_clip_pytorch_model.bin"
    safe = filename.rsplit(".", 1)[0] + ".safetensors"
    return [(repo, safe), (repo, filename)]


def cached_open_clip_tag(spec: ModelSpec) -> Optional[Path]:
    """Local checkpoint file for an open_clip tag, if already downloaded (no network)."""
    from huggingface_hub import try_to_load_from_cache

    _, cfg = open_clip_tag_config(spec)
    if "file" in cfg:
        return Path(cfg["file"]) if os.path.isfile(cfg["file"]) else None
    for repo, filename in _open_clip_candidates(cfg):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    url = cfg.get("url", "")
    if url:
        # open_clip's own URL cache (download_pretrained_from_url's default).
        target = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if target.is_file():
            return target
    return None


def fetch_open_clip_tag(spec: ModelSpec) -> Path:
    """Download an open_clip tag's checkpoint (open_clip's own downloader) and return its path."""
    from open_clip.pretrained import download_pretrained

    cached = cached_open_clip_tag(spec)
    if cached is not None:
        return cached
    if is_offline():
        raise ModelUnavailableError(not_cached_message(spec.text))
    _, cfg = open_clip_tag_config(spec)
    try:
        target = download_pretrained(cfg)
    except Exception as exc:  # noqa: BLE001
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelUnavailableError(not_cached_message(spec.text, f"download failed ({reason})")) from exc
    if not target:
        raise ModelUnavailableError(f"model {spec.text}: open_clip knows no download location for this tag")
    return Path(target)
