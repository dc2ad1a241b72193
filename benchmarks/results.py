"""Writer and reader of benchmark result files, schema ``clis.bench/1``.

The schema is documented in ``docs/results-schema.md``; the leaderboard reads these files.
Fields may be added in a later minor change, never renamed: readers ignore what they do
not know and refuse a ``schema`` they do not know.

Example:
    >>> import tempfile, pathlib
    >>> from benchmarks.results import BenchResult, MetricDef, ResultRow, write_result, read_result
    >>> result = BenchResult(study="pairwise",
    ...     metrics=[MetricDef(key="agreement", label="Agreement", description="rate")],
    ...     rows=[ResultRow(name="clis", values={"agreement": {"value": 0.9, "ci_low": 0.6, "ci_high": 0.98}})])
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "result.json"
    >>> _ = write_result(result, path)
    >>> read_result(path).rows[0].values["agreement"].value
    0.9
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clis import __version__
from clis.errors import InputError

SCHEMA = "clis.bench/1"
KNOWN_SCHEMAS = (SCHEMA,)


class InputRef(BaseModel):
    """One input file of a study, with its content hash for reproducibility."""

    model_config = ConfigDict(extra="allow")

    role: str
    name: str | None = None
    path: str
    sha256: str | None = None


class MetricDef(BaseModel):
    """The meaning of one key used in the rows' ``values``."""

    model_config = ConfigDict(extra="allow")

    key: str
    label: str
    description: str = ""
    higher_is_better: bool = True


class Interval(BaseModel):
    """A figure with its confidence interval (null bounds where none applies)."""

    model_config = ConfigDict(extra="allow")

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None


class ResultRow(BaseModel):
    """One compared thing: a generator (``compare``) or a score column (other studies)."""

    model_config = ConfigDict(extra="allow")

    name: str
    n_images: int | None = None
    n_layouts: int | None = None
    values: dict[str, Interval] = Field(default_factory=dict)
    scores_file: str | None = None
    layouts_file: str | None = None
    images_root: str | None = None


class BenchResult(BaseModel):
    """The whole result file."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    schema_: str = Field(default=SCHEMA, alias="schema")
    study: str
    clis_version: str = __version__
    created: str = Field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    inputs: list[InputRef] = Field(default_factory=list)
    models: dict[str, Any] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)
    metrics: list[MetricDef] = Field(default_factory=list)
    rows: list[ResultRow] = Field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    figures: list[str] = Field(default_factory=list)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def input_ref(role: str, path: str | os.PathLike, result_path: str | os.PathLike, name: str | None = None) -> InputRef:
    """An :class:`InputRef` whose path is relative to the result file (hash of the file's bytes).

    Directories get no hash: their content is described by the files scored from them.
    """
    path = Path(path)
    sha = sha256_file(path) if path.is_file() else None
    return InputRef(role=role, name=name, path=relative_path(path, result_path), sha256=sha)


def relative_path(path: str | os.PathLike, result_path: str | os.PathLike) -> str:
    """``path`` written relative to the folder of ``result_path`` (POSIX separators)."""
    base = Path(result_path).resolve().parent
    try:
        return Path(os.path.relpath(Path(path).resolve(), base)).as_posix()
    except ValueError:  # another drive on Windows
        return Path(path).resolve().as_posix()


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null: JSON has no spelling for them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _json_safe(value.item())
    return value


def write_result(result: BenchResult, path: str | os.PathLike) -> Path:
    """Write ``result`` as indented JSON (strict: no NaN) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _json_safe(result.model_dump(mode="python", by_alias=True))
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)  # readers never see half a file
    return path


def read_result(path: str | os.PathLike) -> BenchResult:
    """Read a result file; a missing file, bad JSON or an unknown schema is an ``InputError``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: result file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a result file holds one JSON object, found {type(data).__name__}")
    schema = data.get("schema")
    if schema not in KNOWN_SCHEMAS:
        raise InputError(
            f"{path}: field 'schema' is {schema!r}; this version of clis reads {', '.join(KNOWN_SCHEMAS)}"
        )
    try:
        return BenchResult.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"{path}: field '{where}': {first['msg']}") from None


def models_from_manifest(scores_path: str | os.PathLike) -> dict[str, Any]:
    """Model specs from the manifest ``clis score`` writes beside a scores file (``{}`` if none).

    A result should say which models produced the scores it analyses.
    """
    path = Path(f"{scores_path}.manifest.json")
    try:
        models = json.loads(path.read_text(encoding="utf-8")).get("models") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    out: dict[str, Any] = {}
    for key, value in models.items():
        if isinstance(value, dict):
            out[key] = value.get("spec", value)
        else:
            out[key] = "none" if value is None else value
    return out
