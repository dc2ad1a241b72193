"""Where CLIS keeps things between runs, and cheap file fingerprints.

* ``cache_dir()``: ``$CLIS_CACHE_DIR`` if set, else ``~/.cache/clis``. Holds converted embedded
  models and the hash cache. Hub downloads stay in the Hugging Face cache (``$HF_HOME``), so
  weights fetched by ``clis models fetch`` are shared with every other transformers tool.
* ``file_sha256(path)``: sha256 of a file, remembered by (path, size, mtime) in
  ``<cache_dir>/hashes.json`` so a 500 MB checkpoint is hashed once, not on every run.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from clis.errors import InputError
from clis.files import sha256_file
from clis.jsonio import dumps, read_json

_HASHES_FILE = "hashes.json"
_lock = threading.Lock()


def cache_dir() -> Path:
    """The CLIS cache directory (created on first use).

    Example:
        >>> cache_dir().is_dir()
        True
    """
    root = os.environ.get("CLIS_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "clis")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_offline() -> bool:
    """True when the user asked for no network (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``).

    Read at call time, not import time, so tests and CLI flags that set the variable late work.
    """
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - huggingface_hub is a core dependency
        return False


def _read_hashes(store: Path) -> dict:
    if not store.exists():
        return {}
    try:
        data = read_json(store, "hash cache")
    except InputError:
        # A corrupt hash cache (binary, nested too deeply, not JSON) only costs a re-hash.
        return {}
    if not isinstance(data, dict):
        return {}
    return {key: entry for key, entry in data.items() if isinstance(entry, dict)}


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of ``path``, cached by absolute path, size and mtime.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.bin"; _ = p.write_bytes(b"abc")
        >>> file_sha256(p)[:16]
        'ba7816bf8f01cfea'
    """
    path = Path(path).resolve()
    stat = path.stat()
    key = str(path)
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    store = cache_dir() / _HASHES_FILE
    with _lock:
        known = _read_hashes(store).get(key)
        if (known and known.get("size") == stamp["size"] and known.get("mtime_ns") == stamp["mtime_ns"]
                and isinstance(known.get("sha256"), str)):
            return known["sha256"]
    digest = sha256_file(path)
    with _lock:
        hashes = _read_hashes(store)
        hashes[key] = {**stamp, "sha256": digest}
        try:
            _write_atomic(store, dumps(hashes, indent=0, sort_keys=True))
        except OSError:
            pass  # a read-only cache must not stop scoring; we just hash again next time
    return digest


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def weights_fingerprint(path: str | Path) -> dict:
    """Fingerprint of a checkpoint file or of every weights file in a directory.

    Returns ``{"path": ..., "sha256": ..., "files": {name: sha256}}``; for several files
    ``sha256`` is the digest of the sorted ``name:digest`` lines, so any change shows.
    """
    path = Path(path)
    if path.is_file():
        files = {path.name: file_sha256(path)}
    else:
        files = {
            p.relative_to(path).as_posix(): file_sha256(p)
            for p in sorted(path.rglob("*"))
            if p.is_file() and p.suffix in WEIGHT_SUFFIXES
        }
    if len(files) == 1:
        combined = next(iter(files.values()))
    else:
        combined = hashlib.sha256("".join(f"{n}:{d}\n" for n, d in sorted(files.items())).encode()).hexdigest()
    return {"path": str(path.resolve()), "sha256": combined, "files": files}


def weights_identity(value: Any) -> Any:
    """Model fingerprints reduced to what identifies the weights (hash, or repo and revision).

    Paths and specs are dropped where a hash or revision is known, so a model folder that moved
    or a spec spelled differently still counts as the same model; ``id`` keys are digests that
    include those paths.
    """
    if isinstance(value, dict):
        if "sha256" in value or "revision" in value:
            return {k: v for k, v in value.items() if k not in ("spec", "path", "files")}
        return {k: weights_identity(v) for k, v in value.items() if k not in ("path", "id")}
    if isinstance(value, list):
        return [weights_identity(v) for v in value]
    return value
