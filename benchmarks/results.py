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
from typing import Any, Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clis import __version__
from clis.discovery import is_image_file
from clis.errors import ClisError, InputError
from clis.jsonio import JSONError, dumps, loads, read_json, read_text
from clis.files import sha256_file
from clis.outputs import check_paths

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
    # How a study that scored images itself (corrupt, compare of folders) set up its scorer.
    scorer: dict[str, Any] | None = None


def check_study_paths(
    out_dir: str | os.PathLike,
    inputs: Mapping[str, str | os.PathLike | None],
    files: Iterable[str],
    folders: Iterable[str] = (),
) -> None:
    """Before any work: ``out_dir`` must be a folder (or nothing yet) that can be written, and
    none of the ``files`` (and ``folders``) a study writes into it may be one of its
    ``inputs`` (``{"SCORES": path, ...}``) or a folder, a device or unwritable.

    ``bench correlate out/result.json ...`` would otherwise replace its own scores file with
    the result, after the whole study ran."""
    out_dir = Path(out_dir)
    named = {flag: Path(p) for flag, p in inputs.items() if p is not None}
    check_paths(inputs=named, folders={"--out": out_dir})  # the folder itself first: its message is the clearest
    check_paths(
        inputs=named,
        outputs={f"--out ({name})": out_dir / name for name in files},
        folders={"--out": out_dir, **{f"--out ({name})": out_dir / name for name in folders}},
    )


def plot_files(*stems: str) -> list[str]:
    """The files :func:`benchmarks.plots.save` writes for these figure stems."""
    return [f"{stem}.{ext}" for stem in stems for ext in ("png", "svg")]


def sha256_folder(path: str | os.PathLike) -> tuple[str, int]:
    """Content hash of the image files under a folder (any depth), and their number.

    The SHA-256 of the text holding one ``<sha256 of the file>  <path relative to the
    folder>\n`` line per image file, sorted by path: what ``sha256sum`` prints, so the hash
    can be checked without clis. Only images count (a notes file added beside them does not
    change what a study saw). Every byte is read, which is quick for the small folders the
    studies take; a huge folder takes as long as reading it once.
    """
    root = Path(path)
    files = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if is_image_file(p))
    digest = hashlib.sha256()
    for relative, file in files:
        digest.update(f"{sha256_file(file)}  {relative}\n".encode("utf-8"))
    return digest.hexdigest(), len(files)


def input_ref(role: str, path: str | os.PathLike, result_path: str | os.PathLike, name: str | None = None) -> InputRef:
    """An :class:`InputRef` whose path is relative to the result file, with its content hash:
    of the file's bytes, or for a folder :func:`sha256_folder` (``n_files`` says how many
    images it covers)."""
    path = Path(path)
    ref = InputRef(role=role, name=name, path=relative_path(path, result_path))
    if path.is_file():
        ref.sha256 = sha256_file(path)
    elif path.is_dir():
        ref.sha256, ref.n_files = sha256_folder(path)
    return ref


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
    tmp.write_text(dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)  # readers never see half a file
    return path


def read_result(path: str | os.PathLike) -> BenchResult:
    """Read a result file; a missing file, bad JSON or an unknown schema is an ``InputError``."""
    path = Path(path)
    # Missing, non-regular (a FIFO), oversized or binary: one InputError naming the file.
    text = read_text(path, "result file")
    try:
        data = loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except JSONError as exc:  # NaN, Infinity, 100k-deep nesting, 5000-digit integers
        raise InputError(f"{path}: not valid JSON ({exc})") from None
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
    if not path.exists():
        return {}
    try:
        # read_json refuses a FIFO (which would block forever) or a 100k-deep file in one line.
        models = read_json(path, "manifest").get("models") or {}
        return model_specs(models)
    except (ClisError, AttributeError):
        return {}


def model_specs(models: dict[str, Any]) -> dict[str, Any]:
    """The ``models`` of a result from the ``models`` of a scorer manifest: each model's spec
    (fingerprints stay in the manifest), ``"none"`` for one not used; an entry without a
    spec (the layout scorer's manifest) is kept whole."""
    out: dict[str, Any] = {}
    for key, value in models.items():
        if isinstance(value, dict):
            out[key] = value.get("spec", value)
        else:
            out[key] = "none" if value is None else value
    return out


# Manifest keys that describe one scoring run rather than the scorer: a study's scorer may
# score several folders, each of which keeps its own manifest.
_RUN_KEYS = ("created", "updated", "run")


def scorer_provenance(scorer: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(models, scorer)`` entries of a result for a scorer a study ran itself.

    ``scorer`` is the scorer's manifest (:meth:`clis.scorer.Scorer.manifest`: model specs
    with fingerprints, the layout scorer's manifest, weights, settings, environment) less
    its per-run keys, so the result says exactly how its scores were made; ``models`` are
    the specs, as :func:`models_from_manifest` gives them for studies that read scores. A
    scorer without a manifest records its ``config`` if it has one, else nothing.
    """
    manifest = getattr(scorer, "manifest", None)
    if callable(manifest):
        data = {k: v for k, v in manifest().items() if k not in _RUN_KEYS}
        return model_specs(data.get("models") or {}), data
    config = getattr(scorer, "config", None)
    if hasattr(config, "model_dump"):
        return {}, {"settings": config.model_dump(mode="json", by_alias=True)}
    return {}, None
