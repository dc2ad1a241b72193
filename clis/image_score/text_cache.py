"""Text embeddings computed once: an in-memory cache plus an optional on-disk SQLite store.

A scoring run sees the same few phrases ("red cup", the distractors) thousands of times, so
each distinct text is encoded once per run. With ``path`` set, embeddings also survive across
runs, keyed by a hash of the model fingerprint and the text, so a different checkpoint can
never read another model's vectors.

Example:
    >>> import torch
    >>> calls = []
    >>> def encode(texts):
    ...     calls.append(list(texts))
    ...     return torch.ones(len(texts), 2), [False] * len(texts)
    >>> cache = TextEmbeddingCache(encode, model_key="toy")
    >>> cache.get(["a", "b", "a"]).shape, cache.get(["b"]).shape, calls
    (torch.Size([3, 2]), torch.Size([1, 2]), [['a', 'b']])
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from clis.errors import InputError

EncodeFn = Callable[[list[str]], tuple[Tensor, list[bool]]]


def model_key(fingerprint: dict) -> str:
    """A stable short key for a model fingerprint dict (spec, revision or sha256)."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()[:32]


class TextEmbeddingCache:
    """Unit-normalised text embeddings, each text encoded at most once.

    ``encode`` maps a list of texts to ``(features [N, D], truncated [N])``. Texts the
    tokenizer had to cut are remembered in ``truncated`` so a run can report them instead of
    scoring against a silently shortened caption. A stored row that is not a unit vector of the
    model's width (``dim``: a blob cut short, a width another model wrote, NaN or inf) is
    damaged: its text is encoded again and the row overwritten, and ``damaged`` counts them.

    Texts to encode are sorted by ``lengths`` (token counts; characters by default) before
    they are cut into batches of ``batch_size``: a batch runs as long as its longest text, so
    short phrases no longer wait on a long caption's tokens.
    """

    def __init__(self, encode: EncodeFn, model_key: str, path: Optional[str | Path] = None, batch_size: int = 256,
                 dim: Optional[int] = None, lengths: Optional[Callable[[list[str]], list[int]]] = None):
        self._encode = encode
        self._lengths = lengths
        self.model_key = model_key
        self.batch_size = batch_size
        # Width of the model's embeddings; a stored row of another width is damage, not a vector.
        # Learnt from the first texts encoded when not given.
        self.dim = dim
        self._memory: dict[str, Tensor] = {}
        self.truncated: set[str] = set()
        self.encoded = 0  # texts run through the model (cache misses), for manifests and tests
        self.damaged = 0  # stored rows that were unusable, recomputed and overwritten
        self._db: Optional[sqlite3.Connection] = None
        self.path: Optional[Path] = None
        if path is not None:
            path = self.path = Path(path).expanduser()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(str(path))
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS text_embeddings ("
                    "key TEXT PRIMARY KEY, dim INTEGER NOT NULL, truncated INTEGER NOT NULL, vector BLOB NOT NULL)"
                )
                self._db.commit()
            except (sqlite3.Error, OSError) as exc:
                raise InputError(f"{path}: cannot use as an embedding cache: {exc}") from exc

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self.model_key}\0{text}".encode()).hexdigest()

    def _vector(self, dim: object, blob: object) -> Optional[Tensor]:
        """The stored unit vector, or None when the row is damaged (wrong size, NaN, not unit length)."""
        if not isinstance(blob, bytes) or not isinstance(dim, int) or len(blob) != 4 * dim or dim <= 0:
            return None
        if self.dim is not None and dim != self.dim:
            return None
        vector = np.frombuffer(blob, dtype=np.float32)
        # Rows are stored normalised, so any other length (NaN and inf included) is damage.
        norm = float(np.linalg.norm(vector.astype(np.float64)))
        if not np.isfinite(vector).all() or abs(norm - 1.0) > 1e-3:
            return None
        return torch.from_numpy(vector.copy())

    def _load_from_disk(self, texts: list[str]) -> None:
        if self._db is None or not texts:
            return
        keys = {self._key(t): t for t in texts}
        found: dict[str, tuple[Tensor, bool]] = {}
        for start in range(0, len(texts), 500):
            chunk = list(keys)[start : start + 500]
            try:
                rows = self._db.execute(
                    f"SELECT key, dim, truncated, vector FROM text_embeddings WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
            except sqlite3.Error as exc:
                raise InputError(f"{self.path}: cannot use as an embedding cache: {exc}") from None
            for key, dim, truncated, blob in rows:
                vector = self._vector(dim, blob) if isinstance(truncated, int) else None
                if vector is None:
                    self.damaged += 1
                    continue  # a damaged row is recomputed, and overwritten when stored
                found[keys[key]] = (vector, bool(truncated))
        if self.dim is None and found:
            # Without the model's width, trust only the width most stored rows share.
            widths = [vector.shape[0] for vector, _ in found.values()]
            common = max(set(widths), key=widths.count)
            self.damaged += sum(width != common for width in widths)
            found = {text: row for text, row in found.items() if row[0].shape[0] == common}
        for text, (vector, truncated) in found.items():
            self._memory[text] = vector
            if truncated:
                self.truncated.add(text)

    def _store(self, texts: list[str], features: Tensor, truncated: list[bool]) -> None:
        if self._db is None:
            return
        rows = [
            (self._key(t), int(f.shape[0]), int(tr), f.numpy().astype(np.float32).tobytes())
            for t, f, tr in zip(texts, features, truncated)
        ]
        try:
            self._db.executemany("INSERT OR REPLACE INTO text_embeddings VALUES (?, ?, ?, ?)", rows)
            self._db.commit()
        except sqlite3.Error as exc:
            raise InputError(f"{self.path}: cannot write to the embedding cache: {exc}") from None

    def get(self, texts: Sequence[str], device: torch.device | str = "cpu") -> Tensor:
        """``[len(texts), D]`` unit-norm embeddings, encoding only texts never seen before."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._memory))
        self._load_from_disk(missing)
        missing = [t for t in missing if t not in self._memory]
        if len(missing) > 1:
            sizes = self._lengths(missing) if self._lengths is not None else [len(t) for t in missing]
            missing = [t for _, t in sorted(zip(sizes, missing), key=lambda pair: pair[0])]
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            with torch.inference_mode():
                features, truncated = self._encode(chunk)
            features = features.float()
            features = (features / features.norm(dim=-1, keepdim=True)).cpu()
            self.encoded += len(chunk)
            if self.dim is None:
                self.dim = int(features.shape[1])
            for text, vector, cut in zip(chunk, features, truncated):
                self._memory[text] = vector
                if cut:
                    self.truncated.add(text)
            self._store(chunk, features, list(truncated))
        if not texts:
            return torch.empty(0, 0, device=device)
        return torch.stack([self._memory[t] for t in texts]).to(device)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
