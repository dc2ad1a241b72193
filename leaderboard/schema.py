"""Reader for benchmark result files of schema ``clis.bench/1`` (see ``docs/results-schema.md``).

The leaderboard parses result files itself, with pydantic models of the documented schema,
instead of importing ``benchmarks``: the dependency points from ``benchmarks`` to
``leaderboard``, never back.

Example:
    >>> import json, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "result.json"
    >>> _ = path.write_text(json.dumps({
    ...     "schema": "clis.bench/1", "study": "compare", "clis_version": "0.1.0",
    ...     "metrics": [{"key": "clis_mean", "label": "CLIS (mean)"}],
    ...     "rows": [{"name": "gligen", "values": {"clis_mean": {"value": 61.2, "ci_low": 58.9, "ci_high": 63.4}}}],
    ... }))
    >>> result = load_result(path)
    >>> result.rows[0].values["clis_mean"].value
    61.2
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from clis import jsonio
from clis.errors import InputError

SCHEMA = "clis.bench/1"
SCHEMA_FAMILY = "clis.bench/"
# Written into every site ``clis leaderboard build`` makes. A scan of folders skips a built
# site: its ``data/`` holds copies of the result files it was built from, not submissions.
SITE_MARKER = ".clis-leaderboard"


class ResultFileError(InputError):
    """A result file is missing, is not JSON, has another schema version or fails validation."""


class Interval(BaseModel):
    """One figure of a row with its bootstrap interval (the interval may be absent)."""

    model_config = ConfigDict(extra="allow")

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None

    @field_validator("value", "ci_low", "ci_high")
    @classmethod
    def _finite(cls, number: float | None) -> float | None:
        # NaN/inf would sort and print unpredictably; a figure that does not apply is null.
        if number is not None and not math.isfinite(number):
            raise ValueError("must be a finite number or null")
        return number


class MetricDef(BaseModel):
    """Definition of one key used in the rows' ``values``."""

    model_config = ConfigDict(extra="allow")

    key: str = Field(min_length=1)
    label: str | None = None
    description: str = ""
    higher_is_better: bool = True

    @property
    def title(self) -> str:
        return self.label or self.key


class ResultRow(BaseModel):
    """One compared thing: a generator (``compare``) or a score column (other studies)."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    n_images: int | None = None
    n_layouts: int | None = None
    values: dict[str, Interval] = Field(default_factory=dict)
    scores_file: str | None = None
    layouts_file: str | None = None
    images_root: str | None = None
    # The models this row's scores were made with (a study that read scores takes them from
    # each scores file's manifest); may nest, e.g. the layout scorer's whole manifest.
    models: dict[str, Any] = Field(default_factory=dict)


class InputRecord(BaseModel):
    """An input the study read, with its checksum, so a reader can check it has the same data."""

    model_config = ConfigDict(extra="allow")

    role: str | None = None
    name: str | None = None
    path: str | None = None
    sha256: str | None = None


class BenchResult(BaseModel):
    """A whole ``clis.bench/1`` result file."""

    model_config = ConfigDict(extra="allow")

    schema_: str = Field(alias="schema")
    study: str = Field(min_length=1)
    clis_version: str | None = None
    created: str | None = None
    inputs: list[InputRecord] = Field(default_factory=list)
    models: dict[str, Any] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)
    metrics: list[MetricDef]
    rows: list[ResultRow]
    tables: dict[str, Any] = Field(default_factory=dict)
    figures: list[str] = Field(default_factory=list)
    # The manifest of a scorer the study ran itself (models with fingerprints, the layout
    # scorer's manifest, weights, settings, environment); null when it read scores.
    scorer: dict[str, Any] | None = None

    # Where the file was read from; relative paths in rows are resolved against its folder.
    source: Path | None = Field(default=None, exclude=True)

    def resolve(self, relative: str | None) -> Path | None:
        """A path written in the file (relative to the file's folder) as a usable path."""
        if not relative:
            return None
        path = Path(relative)
        if path.is_absolute() or self.source is None:
            return path
        return self.source.parent / path

    def metric(self, key: str) -> MetricDef:
        for metric in self.metrics:
            if metric.key == key:
                return metric
        return MetricDef(key=key)


def _location(loc: tuple[Any, ...], raw: dict[str, Any]) -> str:
    """``("rows", 1, "values", "clis_mean", "value")`` -> ``rows[1] 'gligen': values.clis_mean.value``."""
    parts: list[str] = []
    record = ""
    for i, item in enumerate(loc):
        if isinstance(item, int):
            if parts:
                parts[-1] += f"[{item}]"
            else:
                parts.append(f"[{item}]")
            if i == 1 and loc[0] == "rows":
                rows = raw.get("rows")
                if isinstance(rows, list) and item < len(rows) and isinstance(rows[item], dict):
                    name = rows[item].get("name")
                    if isinstance(name, str):
                        record = f" ({name!r})"
        else:
            parts.append(str(item))
    if not parts:
        return "(top level)"
    if record and len(parts) > 1:
        return f"{parts[0]}{record}: {'.'.join(parts[1:])}"
    return ".".join(parts) + record


def parse_result(raw: Any, source: Path | str) -> BenchResult:
    """Validate an already-decoded result document; errors name the file, record and field."""
    source = Path(source)
    if not isinstance(raw, dict):
        raise ResultFileError(f"{source}: not a benchmark result file (expected a JSON object with 'schema')")
    schema = raw.get("schema")
    if schema != SCHEMA:
        if schema is None:
            raise ResultFileError(f"{source}: no 'schema' field; expected a benchmark result file of schema {SCHEMA!r}")
        raise ResultFileError(
            f"{source}: schema {schema!r} is not supported; this leaderboard reads {SCHEMA!r} "
            "(rerun the benchmark with a matching clis version)"
        )
    try:
        result = BenchResult.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise ResultFileError(f"{source}: {_location(first['loc'], raw)}: {first['msg']}{more}") from None
    problems = _unknown_metric_keys(result)
    if problems:
        raise ResultFileError(f"{source}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    result.source = source
    return result


def _unknown_metric_keys(result: BenchResult) -> list[str]:
    # Every key in `values` must be defined in `metrics` (the schema says so); an undefined key
    # would be a column without a definition, which defeats reproducibility.
    defined = {m.key for m in result.metrics}
    problems = []
    for i, row in enumerate(result.rows):
        for key in row.values:
            if key not in defined:
                problems.append(f"rows[{i}] ({row.name!r}): values.{key}: not defined in 'metrics'")
    return problems


def read_json(path: Path, what: str = "result file") -> Any:
    """Decode a JSON file strictly (``clis.jsonio``: no NaN or Infinity, no 100k-deep nesting or
    5,000-digit integers, no binary files or devices); every failure is a one-line
    ``ResultFileError`` naming the file."""
    if not path.exists() and not path.is_symlink():
        raise ResultFileError(f"{path}: no such file")
    try:
        text = jsonio.read_text(path, what)
    except InputError as exc:
        raise ResultFileError(str(exc)) from None
    try:
        return jsonio.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultFileError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except jsonio.JSONError as exc:
        raise ResultFileError(f"{path}: not valid JSON ({exc})") from None


def load_result(path: Path | str) -> BenchResult:
    """Read and validate one ``clis.bench/1`` result file."""
    path = Path(path)
    return parse_result(read_json(path), path)


def is_result_document(raw: Any) -> bool:
    """True for any ``clis.bench/*`` document, known version or not (used when scanning folders)."""
    return isinstance(raw, dict) and isinstance(raw.get("schema"), str) and raw["schema"].startswith(SCHEMA_FAMILY)


def collect_result_files(paths: list[Path]) -> list[Path]:
    """Expand folders into the result files they hold (``*.json`` with a ``clis.bench/*`` schema).

    Files named explicitly are kept as they are (and validated later); in folders, JSON files
    that are not benchmark results (layouts, manifests, anything unreadable) are skipped, and
    so are the sites built there.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            for candidate in sorted(path.rglob("*.json")):
                parts = candidate.relative_to(path).parts
                if any(part.startswith(".") for part in parts):
                    continue  # hidden: e.g. a submission still being staged by `add`
                if any((path.joinpath(*parts[:i]) / SITE_MARKER).exists() for i in range(1, len(parts))):
                    continue
                try:
                    raw = jsonio.loads(jsonio.read_text(candidate))
                except (InputError, ValueError):
                    continue
                if is_result_document(raw):
                    found.append(candidate)
        else:
            found.append(path)
    return found
