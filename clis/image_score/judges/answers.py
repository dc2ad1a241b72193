"""Answers of the VLM and the rater kept across runs, so a re-run or a resumed run asks nothing twice.

An answer is keyed by what decides it: the kind of question (free text, P(Yes), a rating),
the model's identity and decoding settings (its ``describe()``, with paths dropped where the
weights are hashed), the image's pixel digest (none for the rater), the full prompt and the
seed. Rows live in one SQLite table (``judge_answers_v1``) of
``<cache_dir>/judge_answers.sqlite``; ``CLIS_JUDGE_CACHE=off`` turns it off and
``CLIS_JUDGE_CACHE=PATH`` (or the judge's ``cache`` setting) uses another file. WAL mode, so
several processes share one file. Failed requests are never stored: they are asked again.

Example:
    >>> import tempfile, pathlib
    >>> cache = AnswerCache(pathlib.Path(tempfile.mkdtemp()) / "answers.sqlite")
    >>> key = answer_key("yes", {"kind": "test"}, None, "Is it red?", 0)
    >>> cache.put_many({key: 0.75}), list(cache.get_many([key, "other"]).values())
    (1, [0.75])
    >>> cache.close()
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Optional, Sequence

from clis.errors import InputError
from clis.models.cache import weights_identity
from clis.vlm.base import Probability, RequestFailed, VLMRequest, image_digest

ENV_VAR = "CLIS_JUDGE_CACHE"
FILE_NAME = "judge_answers.sqlite"
TABLE = "judge_answers_v1"
OFF_VALUES = ("off", "none", "no", "0", "false")
_CHUNK = 500
_GENERATION = ("max_new_tokens", "temperature")
_BUSY_TIMEOUT_S = 30.0


def answer_key(kind: str, model: Any, image: Optional[str], prompt: Any, seed: Optional[int]) -> str:
    """sha256 of everything that decides one answer (``image`` is a pixel digest or None)."""
    content = {"kind": kind, "model": weights_identity(model), "image": image, "prompt": prompt, "seed": seed}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def resolve_path(setting: Optional[str]) -> Optional[Path]:
    """The cache file a run uses: the setting, else ``$CLIS_JUDGE_CACHE``, else the cache dir's; None when off."""
    value = (setting if setting is not None else os.environ.get(ENV_VAR, "")).strip()
    if value.lower() in OFF_VALUES:
        return None
    if value:
        return Path(value).expanduser()
    from clis.models.cache import cache_dir

    return cache_dir() / FILE_NAME


def run_cache_path(judge_cache: Optional[str], embedding_cache: Optional[str]) -> Optional[Path]:
    """The answer cache of a run: the judge's ``cache`` setting, else ``--embedding-cache`` (which
    holds the answers in another table, as it holds CLIS-L results), else ``$CLIS_JUDGE_CACHE`` or
    the cache dir's file; None when off (``CLIS_JUDGE_CACHE=off`` also turns the shared file off)."""
    if judge_cache is None and embedding_cache and resolve_path(None) is not None:
        judge_cache = embedding_cache
    return resolve_path(judge_cache)


class AnswerCache:
    """``get_many(keys) -> {key: answer}`` and ``put_many({key: answer})`` over one SQLite file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()  # one connection, shared by the client's worker threads
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db: Optional[sqlite3.Connection] = sqlite3.connect(
                str(self.path), timeout=_BUSY_TIMEOUT_S, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL").fetchone()
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (key TEXT PRIMARY KEY, answer TEXT NOT NULL)")
            self._db.commit()
        except (sqlite3.Error, OSError) as exc:
            raise self._error(exc) from None

    def _error(self, exc: BaseException) -> InputError:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return InputError(f"{self.path}: cannot use the judge answer cache ({reason}); set {ENV_VAR}=off "
                          f"(or {ENV_VAR}=OTHER_FILE)")

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            if self._db is None:
                return found
            try:
                for start in range(0, len(unique), _CHUNK):
                    chunk = unique[start : start + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    rows = self._db.execute(f"SELECT key, answer FROM {TABLE} WHERE key IN ({marks})", chunk)
                    for key, answer in rows:
                        try:
                            found[key] = json.loads(answer)
                        except ValueError:
                            continue  # a damaged row is asked again, and then replaced
            except sqlite3.Error as exc:
                raise self._error(exc) from None
        return found

    def put_many(self, answers: dict[str, Any]) -> int:
        rows = [(key, json.dumps(value, ensure_ascii=False)) for key, value in answers.items()]
        if not rows:
            return 0
        with self._lock:
            if self._db is None:
                return 0
            try:
                self._db.executemany(f"INSERT OR REPLACE INTO {TABLE} (key, answer) VALUES (?, ?)", rows)
                self._db.commit()
            except sqlite3.Error as exc:
                raise self._error(exc) from None
        return len(rows)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


class CachedVLM:
    """A VLM client that asks its ``inner`` client only what ``cache`` does not hold yet.

    Counts what it served from the cache (``hits``) and what it asked (``asked``).
    """

    def __init__(self, inner: Any, cache: Optional[AnswerCache]):
        self.inner = inner
        self.cache = cache
        self.grounding = inner.grounding
        self.hits = 0
        self.asked = 0
        self._model = inner.describe()

    def _through_cache(self, kind: str, requests: Sequence[VLMRequest], seed: Optional[int], ask) -> list:
        # P(Yes) is read from one forward pass: the generation settings do not change it.
        model = self._model if kind != "yes" else {k: v for k, v in self._model.items() if k not in _GENERATION}
        # The whole image is in 1 + K of a candidate's questions: hash its pixels once.
        digests: dict[int, str] = {}
        for request in requests:
            if id(request.image) not in digests:
                digests[id(request.image)] = image_digest(request.image)
        keys = [answer_key(kind, model, digests[id(r.image)], r.prompt, seed) for r in requests]
        known = self.cache.get_many(keys) if self.cache is not None else {}
        missing = [i for i, key in enumerate(keys) if key not in known]
        answers: list[Any] = [known.get(key) for key in keys]
        if missing:
            fresh = ask([requests[i] for i in missing])
            for i, answer in zip(missing, fresh):
                answers[i] = answer
            if self.cache is not None:
                self.cache.put_many({keys[i]: a for i, a in zip(missing, fresh) if not isinstance(a, RequestFailed)})
        self.hits += len(keys) - len(missing)
        self.asked += len(missing)
        return answers

    def generate(self, requests: Sequence[VLMRequest], seed: int) -> list[Any]:
        return self._through_cache("generate", requests, seed, lambda todo: self.inner.generate(todo, seed))

    def yes_probability(self, requests: Sequence[VLMRequest]) -> list[Probability]:
        return self._through_cache("yes", requests, None, self.inner.yes_probability)

    def describe(self) -> dict[str, Any]:
        return self._model

    def close(self) -> None:
        self.inner.close()
