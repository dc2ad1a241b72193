"""CLIS-L results kept across runs, so each layout is scored once per settings.

CLIS-L reads only part of a layout: each object's id, label and box (in order), the relations
(subjects, relation words, objects, in order) and the canvas ``width`` / ``height``. It never
reads the caption, attributes, descriptions, images or extra keys. :func:`layout_key` hashes
exactly those fields, so a copy of a layout with another caption, or the same layout paired
with a corrupted image, has the same key, while a moved box does not.

The settings are the scorer's manifest id (``LayoutScorer.manifest()["id"]``), a digest of the
models with their fingerprints, the pool file's hash, the weights and every prompt template.
A row is therefore only read back by a scorer that would compute the same result.

Rows live in one SQLite table (``clis_l_scores_v2``) of ``<cache_dir>/layout_scores.sqlite``
(``$CLIS_CACHE_DIR``, else ``~/.cache/clis``). ``CLIS_LAYOUT_CACHE=off`` turns the cache off;
``CLIS_LAYOUT_CACHE=PATH`` uses another file. The file is in WAL mode, so several processes
can read and write it at once.

Example:
    >>> import tempfile, pathlib
    >>> from clis.layout import Layout
    >>> layout = Layout.model_validate({"id": "tea", "caption": "tea time", "objects": [
    ...     {"id": "cup-1", "label": "cup", "bbox": [0.4, 0.3, 0.2, 0.2]}]})
    >>> recaptioned = layout.model_copy(update={"caption": "another caption"})
    >>> layout_key(layout) == layout_key(recaptioned)
    True
    >>> cache = LayoutScoreCache(pathlib.Path(tempfile.mkdtemp()) / "layouts.sqlite")
    >>> cache.put_many([(layout_key(layout), "m1", {"id": "tea", "clis_l": 50.0}, {"clis_l": 50.0})])
    1
    >>> hit = cache.get_many([layout_key(recaptioned)], "m1")[layout_key(recaptioned)]
    >>> hit.record["clis_l"], cache.get_many([layout_key(layout)], "m2")
    (50.0, {})
    >>> cache.close()
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable, NamedTuple, Optional, Sequence

from clis.errors import InputError
from clis.layout import Layout

ENV_VAR = "CLIS_LAYOUT_CACHE"
FILE_NAME = "layout_scores.sqlite"
TABLE = "clis_l_scores_v2"
OFF_VALUES = ("off", "none", "no", "0", "false")
KEY_VERSION = "clis-l-layout/1"  # bump when CLIS-L starts reading another layout field
_CHUNK = 500  # keys per SELECT (SQLite's host-parameter limit is 999 on old builds)
_BUSY_TIMEOUT_S = 30.0


class _DefaultCache:
    def __repr__(self) -> str:
        return "DEFAULT_CACHE"


# ``LayoutScorer(cache=DEFAULT_CACHE)``: the file of :func:`default_path` (none when it says off).
DEFAULT_CACHE = _DefaultCache()


def layout_key(layout: Layout) -> str:
    """sha256 of exactly the layout fields CLIS-L reads (see the module docstring).

    Object and relation order are kept: they decide the order of the record's pairs. Box
    numbers are compared as floats, so ``1`` and ``1.0`` give the same key.
    """
    content = {
        "version": KEY_VERSION,
        "width": layout.width,
        "height": layout.height,
        "objects": [[o.id, o.label, [float(v) for v in o.bbox]] for o in layout.objects],
        "relations": [[list(r.subject), r.relation, list(r.object)] for r in layout.relations],
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def disabled_by_env() -> bool:
    """True when ``$CLIS_LAYOUT_CACHE`` is ``off`` (or ``none``, ``no``, ``0``, ``false``)."""
    return os.environ.get(ENV_VAR, "").strip().lower() in OFF_VALUES


def default_path() -> Optional[Path]:
    """The cache file to use when none is given: ``$CLIS_LAYOUT_CACHE`` if it names a file,
    None if it says ``off``, else ``<cache_dir>/layout_scores.sqlite``."""
    value = os.environ.get(ENV_VAR, "").strip()
    if value.lower() in OFF_VALUES:
        return None
    if value:
        return Path(value).expanduser()
    from clis.models.cache import cache_dir

    return cache_dir() / FILE_NAME


class CachedScore(NamedTuple):
    """One stored result: the ``LayoutScore.to_dict()`` record, and the unrounded score of
    each source (``clis_l``, ``llm``, ``geometry``, ``pair_prior``) so a hit equals the
    computed result exactly."""

    record: dict
    scores: dict


class LayoutScoreCache:
    """CLIS-L records in SQLite, keyed by (:func:`layout_key`, CLIS-L manifest id).

    Raises:
        InputError: one line naming the file, when it cannot be created, opened or read as
            an SQLite database (a corrupt file, a folder, no permission).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser()
        self._db: Optional[sqlite3.Connection] = None
        self._lock = threading.Lock()  # one connection, usable from any thread, one at a time
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=_BUSY_TIMEOUT_S, check_same_thread=False)
            # WAL lets readers and one writer of several processes work at the same time; on a
            # file system without shared memory SQLite keeps its default journal, which is fine.
            self._db.execute("PRAGMA journal_mode=WAL").fetchone()
            with self._db:
                self._db.execute(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
                    "layout_key TEXT NOT NULL, manifest_id TEXT NOT NULL, record TEXT NOT NULL, "
                    "scores TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (layout_key, manifest_id))"
                )
            self._db.execute(f"SELECT layout_key, manifest_id, record, scores FROM {TABLE} LIMIT 0")
        except (OSError, sqlite3.Error) as exc:
            self.close()
            raise self._error(exc) from None

    def _error(self, exc: BaseException) -> InputError:
        reason = " ".join(str(getattr(exc, "strerror", None) or exc).split()) or type(exc).__name__
        return InputError(
            f"{self.path}: cannot use as the CLIS-L cache ({reason}); delete or move the file, "
            f"or set {ENV_VAR}=off (or {ENV_VAR}=OTHER_FILE)"
        )

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise InputError(f"{self.path}: the CLIS-L cache was closed")
        return self._db

    def get_many(self, keys: Sequence[str], manifest_id: str) -> dict[str, CachedScore]:
        """The stored results of ``keys`` made with settings ``manifest_id``; absent keys are misses.

        A row that no longer parses counts as a miss (and is overwritten by the next put).
        """
        db = self._connection()
        wanted = list(dict.fromkeys(keys))
        found: dict[str, CachedScore] = {}
        try:
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start:start + _CHUNK]
                with self._lock:
                    rows = db.execute(
                        f"SELECT layout_key, record, scores FROM {TABLE} "
                        f"WHERE manifest_id = ? AND layout_key IN ({','.join('?' * len(chunk))})",
                        [manifest_id, *chunk],
                    ).fetchall()
                for key, text, scores_text in rows:
                    try:
                        record, scores = json.loads(text), json.loads(scores_text)
                    except ValueError:
                        continue
                    if isinstance(record, dict) and isinstance(scores, dict):
                        found[key] = CachedScore(record, scores)
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        return found

    def put_many(self, entries: Iterable[tuple[str, str, dict, dict]]) -> int:
        """Store ``(layout_key, manifest_id, record, scores)`` rows in one transaction; returns
        how many were written. ``scores`` holds the unrounded score of each source, by name."""
        now = time.time()
        rows = [
            (key, manifest_id, json.dumps(record, ensure_ascii=False, separators=(",", ":")),
             json.dumps(scores, separators=(",", ":")), now)
            for key, manifest_id, record, scores in entries
        ]
        if not rows:
            return 0
        db = self._connection()
        try:
            with self._lock, db:
                db.executemany(f"INSERT OR REPLACE INTO {TABLE} VALUES (?, ?, ?, ?, ?)", rows)
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        return len(rows)

    def __len__(self) -> int:
        try:
            with self._lock:
                return int(self._connection().execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0])
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> "LayoutScoreCache":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
