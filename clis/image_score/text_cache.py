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
    scoring against a silently shortened caption.
    """

    def __init__(self, encode: EncodeFn, model_key: str, path: Optional[str | Path] = None, batch_size: int = 256):
        self._encode = encode
        self.model_key = model_key
        self.batch_size = batch_size
        self._memory: dict[str, Tensor] = {}
        self.truncated: set[str] = set()
        self.encoded = 0  # texts run through the model (cache misses), for manifests and tests
        self._db: Optional[sqlite3.Connection] = None
        if path is not None:
            path = Path(path).expanduser()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(str(path))
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS text_embeddings ("
                    "key TEXT PRIMARY KEY, dim INTEGER NOT NULL, truncated INTEGER NOT NULL, vector BLOB NOT NULL)"
                )
                self._db.commit()
            except sqlite3.Error as exc:
                raise InputError(f"{path}: cannot use as an embedding cache: {exc}") from exc

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self.model_key}\0{text}".encode()).hexdigest()

    def _load_from_disk(self, texts: list[str]) -> None:
        if self._db is None or not texts:
            return
        keys = {self._key(t): t for t in texts}
        for start in range(0, len(texts), 500):
            chunk = list(keys)[start : start + 500]
            rows = self._db.execute(
                f"SELECT key, dim, truncated, vector FROM text_embeddings WHERE key IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
            for key, dim, truncated, blob in rows:
                vector = np.frombuffer(blob, dtype=np.float32)
                if vector.shape[0] != dim:
                    continue  # a damaged row is simply recomputed
                text = keys[key]
                self._memory[text] = torch.from_numpy(vector.copy())
                if truncated:
                    self.truncated.add(text)

    def _store(self, texts: list[str], features: Tensor, truncated: list[bool]) -> None:
        if self._db is None:
            return
        rows = [
            (self._key(t), int(f.shape[0]), int(tr), f.numpy().astype(np.float32).tobytes())
            for t, f, tr in zip(texts, features, truncated)
        ]
        self._db.executemany("INSERT OR REPLACE INTO text_embeddings VALUES (?, ?, ?, ?)", rows)
        self._db.commit()

    def get(self, texts: Sequence[str], device: torch.device | str = "cpu") -> Tensor:
        """``[len(texts), D]`` unit-norm embeddings, encoding only texts never seen before."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._memory))
        self._load_from_disk(missing)
        missing = [t for t in missing if t not in self._memory]
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            with torch.inference_mode():
                features, truncated = self._encode(chunk)
            features = features.float()
            features = (features / features.norm(dim=-1, keepdim=True)).cpu()
            self.encoded += len(chunk)
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
