"""The reference pool of real layouts: its file format, loading, and category matching.

A pool file is JSON Lines (optionally gzip-compressed, ``.jsonl.gz``). The first line is a
header, every later line one real example, of either kind:

* a **relation example** (the paper's prior): two labelled boxes and the relation between them;
* a **scene** (the pair prior, format 2): every labelled box of one real image, normalised
  to that image (``[x, y, w, h]`` in 0..1), relations or not::

    {"clis_pool": 2, "sources": ["vg:relationships.json"], "examples": 2, "scenes": 1}
    {"subject": "cup", "relation": "on", "object": "table", "subject_box": [120, 80, 40, 50], "object_box": [20, 120, 400, 200], "source": "vg:1/4711"}
    {"subject": "man", "relation": "riding", "object": "horse", "subject_box": [0.3, 0.1, 0.2, 0.4], "object_box": [0.2, 0.3, 0.5, 0.5]}
    {"scene": [["cat", [0.3, 0.2, 0.3, 0.3]], ["bed", [0.0, 0.4, 1.0, 0.6]]], "source": "coco:7"}

Relation-example boxes are ``[x, y, w, h]`` with the origin at the top left, in any unit
shared by the two boxes of an example (pixels of the source image, or normalised to a square
canvas): every feature of the paper's prior is unchanged by uniform scaling. Labels and
relations are compared after lower-casing and collapsing white space. ``source`` is optional
provenance; the header may carry more of it (``provenance``, ``licence``). Format 1 files
(relation examples only) are read too.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "pool.jsonl"
    >>> _ = write_pool([PoolExample(subject="cup", relation="on", object="table",
    ...                             subject_box=[4, 2, 2, 2], object_box=[1, 4, 8, 5])], path)
    >>> pool = Pool.load(path)
    >>> pool.relations, len(pool)
    (['on'], 1)
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterable, Optional, Sequence

import numpy as np
from annotated_types import Len
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from clis import jsonio
from clis.errors import InputError
from clis.layout_score.geometry import PairFeatures, pair_features

POOL_FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


class PoolFileError(InputError):
    """A pool file is missing, is not a pool, or has a malformed record."""


def normalize_text(text: str) -> str:
    """Lower-case and collapse white space: ``" Next  To"`` -> ``"next to"`` (any script)."""
    return " ".join(text.lower().split())


class PoolExample(BaseModel):
    """One real (subject, relation, object) example with its two boxes."""

    model_config = ConfigDict(extra="allow")

    subject: str = Field(min_length=1)
    relation: str = Field(min_length=1)
    object: str = Field(min_length=1)
    subject_box: Annotated[list[float], Len(min_length=4, max_length=4)]
    object_box: Annotated[list[float], Len(min_length=4, max_length=4)]
    source: Optional[str] = None

    @field_validator("subject", "relation", "object")
    @classmethod
    def _normalised(cls, text: str) -> str:
        text = normalize_text(text)
        if not text:
            raise ValueError("is blank")
        return text

    @field_validator("subject_box", "object_box")
    @classmethod
    def _positive_size(cls, box: list[float]) -> list[float]:
        return _usable_box(box)


def _usable_box(box: list[float]) -> list[float]:
    """``box`` if its values are finite and its width and height positive, else ``ValueError``."""
    if not all(np.isfinite(box)):
        raise ValueError(f"box {box} has a non-finite value")
    if box[2] <= 0 or box[3] <= 0:
        raise ValueError(f"box {box} is degenerate: width and height must be > 0")
    return box


class PoolScene(BaseModel):
    """Every labelled box of one real image, normalised to the image (``[x, y, w, h]`` in 0..1)."""

    model_config = ConfigDict(extra="allow")

    scene: list[tuple[str, Annotated[list[float], Len(min_length=4, max_length=4)]]] = Field(min_length=1)
    source: Optional[str] = None

    @field_validator("scene")
    @classmethod
    def _objects(cls, objects: list) -> list:
        cleaned = []
        for label, box in objects:
            label = normalize_text(label)
            if not label:
                raise ValueError("a label is blank")
            cleaned.append((label, _usable_box(box)))
        return cleaned


def _open_text(path: Path, mode: str):
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, mode.replace("t", "") + "b"), encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def write_pool(examples: Iterable[PoolExample | PoolScene], path: str | Path, sources: Sequence[str] = (),
               header: Optional[dict] = None) -> int:
    """Write a pool file (header + one line per relation example or scene); return the number
    of lines after the header. ``header`` adds keys (provenance, licence) to the header.

    The header's counts are written last-known-good: lines are streamed to a temporary file
    first so a crash never leaves a pool whose header lies.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = path.with_name(path.name + ".part")
    counts = {"examples": 0, "scenes": 0}
    try:
        with _open_text(body, "wt") as handle:
            for example in examples:
                handle.write(example.model_dump_json(exclude_none=True) + "\n")
                counts["scenes" if isinstance(example, PoolScene) else "examples"] += 1
    except BaseException:
        body.unlink(missing_ok=True)  # a failed build leaves nothing behind
        raise
    count = counts["examples"] + counts["scenes"]
    header = {"clis_pool": POOL_FORMAT_VERSION, "sources": list(sources), **counts, **(header or {})}
    with _open_text(path, "wt") as out, _open_text(body, "rt") as lines:
        out.write(jsonio.dumps(header, ensure_ascii=False) + "\n")
        for line in lines:
            out.write(line)
    body.unlink()
    return count


def _field_name(error: dict) -> str:
    return ".".join(str(part) for part in error["loc"]) or "record"


def read_pool_examples(path: str | Path) -> tuple[dict, list[PoolExample]]:
    """The header and validated relation examples of a pool file (see :func:`read_pool`)."""
    header, examples, _ = read_pool(path)
    return header, examples


def read_pool(path: str | Path) -> tuple[dict, list[PoolExample], list[PoolScene]]:
    """The header, relation examples and scenes of a pool file; ``PoolFileError`` names file,
    line and field."""
    path = Path(path)
    if not path.exists():
        raise PoolFileError(f"{path}: pool file not found")
    try:
        jsonio.check_input_file(path, "pool file")  # not /dev/zero, a FIFO or a folder
    except InputError as exc:
        raise PoolFileError(str(exc)) from None
    examples: list[PoolExample] = []
    scenes: list[PoolScene] = []
    header: Optional[dict] = None
    try:
        with _open_text(path, "rt") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                if header is None:
                    header = _parse_header(path, line)
                    continue
                try:
                    record = jsonio.loads(line)
                except json.JSONDecodeError as exc:
                    raise PoolFileError(f"{path}: line {line_number}: invalid JSON: {exc.msg}") from None
                except jsonio.JSONError as exc:
                    raise PoolFileError(f"{path}: line {line_number}: invalid JSON: {exc}") from None
                is_scene = isinstance(record, dict) and "scene" in record
                try:
                    if is_scene:
                        scenes.append(PoolScene.model_validate(record))
                    else:
                        examples.append(PoolExample.model_validate(record))
                except ValidationError as exc:
                    error = exc.errors()[0]
                    message = error["msg"].removeprefix("Value error, ")
                    what = f"scene {len(scenes) + 1}" if is_scene else f"example {len(examples) + 1}"
                    raise PoolFileError(
                        f"{path}: line {line_number} ({what}): field '{_field_name(error)}': {message}"
                    ) from None
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        raise PoolFileError(f"{path}: cannot read pool file: {exc}") from None
    if header is None:
        raise PoolFileError(f"{path}: empty file: a pool starts with a header line like {{\"clis_pool\": 1}}")
    return header, examples, scenes


def _parse_header(path: Path, line: str) -> dict:
    try:
        header = jsonio.loads(line)
    except json.JSONDecodeError as exc:
        raise PoolFileError(f"{path}: line 1: invalid JSON: {exc.msg}") from None
    except jsonio.JSONError as exc:
        raise PoolFileError(f"{path}: line 1: invalid JSON: {exc}") from None
    if not isinstance(header, dict) or "clis_pool" not in header:
        raise PoolFileError(
            f"{path}: line 1: not a CLIS pool file (the first line must be a header like "
            "{\"clis_pool\": 1}; make one with `clis pool build`)"
        )
    if header["clis_pool"] not in READABLE_VERSIONS:
        raise PoolFileError(f"{path}: line 1: field 'clis_pool': unsupported pool format version {header['clis_pool']!r}")
    return header


@dataclass
class RelationExamples:
    """All examples of one relation: label indices into ``labels`` and precomputed features."""

    labels: list[str]
    subject_index: np.ndarray
    object_index: np.ndarray
    features: PairFeatures


class Pool:
    """A loaded pool, grouped by relation with every example's geometric features precomputed."""

    def __init__(self, examples: Sequence[PoolExample], path: Optional[Path] = None, header: Optional[dict] = None,
                 scenes: Sequence[PoolScene] = ()):
        self.path = path
        self.header = header or {}
        self.size = len(examples)
        self.scenes = list(scenes)
        grouped: dict[str, list[PoolExample]] = {}
        for example in examples:
            grouped.setdefault(example.relation, []).append(example)
        self.by_relation: dict[str, RelationExamples] = {}
        for relation, group in grouped.items():
            labels = sorted({e.subject for e in group} | {e.object for e in group})
            position = {label: i for i, label in enumerate(labels)}
            features = pair_features([e.subject_box for e in group], [e.object_box for e in group])
            self.by_relation[relation] = RelationExamples(
                labels,
                np.array([position[e.subject] for e in group], dtype=np.int64),
                np.array([position[e.object] for e in group], dtype=np.int64),
                features,
            )

    @classmethod
    def load(cls, path: str | Path) -> "Pool":
        header, examples, scenes = read_pool(path)
        return cls(examples, Path(path), header, scenes)

    def __len__(self) -> int:
        """Relation examples plus scenes."""
        return self.size + len(self.scenes)

    @property
    def relations(self) -> list[str]:
        return sorted(self.by_relation)

    def counts(self) -> dict[str, int]:
        """Examples per relation, most common first."""
        counts = {r: len(g.subject_index) for r, g in self.by_relation.items()}
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    def fingerprint(self) -> dict:
        info = {"examples": self.size, "scenes": len(self.scenes), "relations": len(self.by_relation),
                "sources": self.header.get("sources", [])}
        if self.path is not None:
            digest = hashlib.sha256()
            with open(self.path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            info.update(path=str(self.path), sha256=digest.hexdigest())
        return info


class CategoryMatcher:
    """Label similarity for matching a generated pair's labels with pool labels.

    With a text embedder it is the cosine similarity of the label embeddings (cached per
    label); without one (``embedder=None``) it is 1 for identical normalised labels, else 0.
    """

    def __init__(self, embedder=None):
        self.embedder = embedder
        self._vectors: dict[str, np.ndarray] = {}
        self._matrices: dict[str, np.ndarray] = {}  # stacked candidate vectors per caller key
        self._results: dict[tuple[str, str], np.ndarray] = {}

    def _embed(self, labels: Sequence[str]) -> np.ndarray:
        missing = [label for label in dict.fromkeys(labels) if label not in self._vectors]
        if missing:
            vectors = self.embedder.encode(missing).cpu().numpy().astype(np.float64)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.where(norms > 0, norms, 1.0)
            self._vectors.update(zip(missing, vectors))
        return np.stack([self._vectors[label] for label in labels])

    def similarity(self, label: str, candidates: Sequence[str], key: Optional[str] = None) -> np.ndarray:
        """Similarity of ``label`` to each of ``candidates`` (normalised labels), in [-1, 1].

        ``key`` names a candidate list that does not change (a pool relation): its stacked
        vectors and the results per label are then cached, since the same labels come back
        layout after layout.
        """
        label = normalize_text(label)
        if key is not None and (key, label) in self._results:
            return self._results[(key, label)]
        if self.embedder is None:
            result = np.array([1.0 if c == label else 0.0 for c in candidates])
        else:
            query = self._embed([label])[0]
            if key is None:
                matrix = self._embed(list(candidates))
            else:
                if key not in self._matrices:
                    self._matrices[key] = self._embed(list(candidates))
                matrix = self._matrices[key]
            result = matrix @ query
        if key is not None:
            self._results[(key, label)] = result
        return result
