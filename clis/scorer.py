"""The Python API of ``clis score``: build a :class:`Scorer` once, score pairs or whole folders.

Example:
    >>> import tempfile
    >>> from PIL import Image
    >>> from clis.layout import Layout
    >>> from clis.scorer import Scorer, ScoreConfig
    >>> from clis.testing import build_tiny_hf_clip
    >>> config = ScoreConfig(image_model=build_tiny_hf_clip(tempfile.mkdtemp()), detector="none", layout_score=False)
    >>> scorer = Scorer(config)
    >>> layout = Layout.model_validate({"id": "cup", "caption": "a red cup", "objects": [
    ...     {"id": "cup-1", "label": "cup", "attributes": ["red"], "bbox": [0.2, 0.2, 0.5, 0.5]}]})
    >>> record = scorer.score(Image.new("RGB", (64, 64), "red"), layout)
    >>> record["clis"] == record["clis_i"], record["clis_l"], record["error"]
    (True, None, None)

``score_folder`` writes ``scores.jsonl`` incrementally (one flushed line per candidate) with a
manifest beside it, so an interrupted run loses nothing and ``resume=True`` continues it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import secrets
import time
import tomllib
from array import array
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import clis
from clis import jsonio
from clis.engines.config import EngineConfig
from clis.errors import InputError, ModelUnavailableError, unavailable_with_remedy
from clis.files import SeenCandidates, atomic_writer, write_text_atomic
from clis.image_score.config import JUDGE_TERMS, ImageScoreConfig, unread_weights
from clis.image_score.detection import Detector
from clis.image_score.engine import Candidate, ImageScorer, autocast_dtype_of, error_record, image_reference
from clis.image_score.functional import weighted_mean
from clis.image_score.images import DEFAULT_MAX_PIXELS, ImageInput, one_line
from clis.image_score.text_cache import TextEmbeddingCache, model_key
from clis.layout import Layout, layout_sha256
from clis.models.cache import weights_identity
from clis.outputs import OutputLock

RECORD_KEYS = ("layout_id", "image", "clis", "clis_i", "clis_l", "global", "instances", "error")
# Written after RECORD_KEYS, but not required of a record: files of clis 0.x before it was
# added are still read (their records are rescored on --resume, as they cannot be checked).
# It is the layout's ``clis.layout.layout_sha256``, so a resumed run can tell a layout that
# changed under the same id (null for a layout that failed validation).
LAYOUT_HASH_KEY = "layout_sha256"
# Written last, by the VLM judges only: the judge's name and its whole-image terms
# (``docs/clis-i.md``). Records of the clip judge do not have it.
JUDGE_KEY = "judge"
# How every line clis writes begins (json.dumps of a dict whose first key is layout_id).
RECORD_START = b'{"layout_id": '

# Settings that decide how a run goes, not what it computes, so a resumed run may change them:
# max_pixels only decides which images become error records, and those are retried anyway.
# layout_scores only says where CLIS-L comes from: its manifest is compared under "models".
# engine only says where the model work runs (--engine ray writes the same records).
RUN_ONLY_SETTINGS = ("device", "batch_size", "num_workers", "max_pixels", "embedding_cache", "layout_scores", "engine")
# The same within the judge's settings (its models are compared by fingerprint under "models").
JUDGE_RUN_ONLY = ("concurrency", "retries", "timeout", "cache", "vlm", "vlm_model", "rater", "rater_model")
# Settings naming models: a resumed run compares the models' fingerprints under "models" instead,
# so a model folder that moved (same weights, new path) still matches.
MODEL_SETTINGS = ("image_model", "detector", "layout")

# What `clis generate` writes into a candidates folder (see docs/pipeline.md).
GENERATION_MANIFEST = "manifest.json"
GENERATION_FORMAT = "clis-candidates/1"

DEVICE_TYPES = ("cpu", "cuda", "mps")
DTYPES = ("float16", "bfloat16", "float32")

# Layouts whose CLIS-L is computed together, just ahead of their candidates' images. Within a
# chunk the LLM statements of all its layouts are batched (a layout has tens of them, so 256
# layouts fill the LLM's batches many times over); across chunks only the chunk's results are
# held (about 56-258 KiB per layout), not the whole run's, and the first records are written
# after one chunk instead of after every layout of the run.
LAYOUT_CHUNK = 256
# Score fields whose values a run keeps (8 bytes per candidate each) for its summary.
SUMMARY_FIELDS = ("clis", "clis_i", "clis_l", "global")


class CombineWeights(BaseModel):
    """``clis = (image * clis_i + layout * clis_l) / (image + layout)`` when clis_l exists."""

    model_config = ConfigDict(extra="forbid")

    image: float = Field(0.5, ge=0)
    layout: float = Field(0.5, ge=0)

    @model_validator(mode="after")
    def _some_weight(self) -> "CombineWeights":
        if self.image + self.layout <= 0:
            raise ValueError("combine: image + layout must be > 0")
        return self


def read_config_data(path: str | Path) -> dict[str, Any]:
    """The table of settings in a ``.json``, ``.toml`` or ``.yaml`` config file, parsed by the
    suffix's parser; a file that does not parse, or holds no table, is one line."""
    path = Path(path)
    text = jsonio.read_text(path, "config file")
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = jsonio.loads(text)
    except Exception as exc:  # each parser has its own error type; all mean "bad syntax"
        raise InputError(f"{path}: cannot parse config file: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a config file must hold a table/object of settings")
    return data


class ScoreConfig(ImageScoreConfig):
    """Everything ``clis score`` needs, as plain data (JSON, TOML or YAML file, or keywords).

    Inherits the CLIS-I settings (``weights``, ``crop_margin``, ``distractors``, ...) from
    :class:`clis.image_score.config.ImageScoreConfig` and adds the models and the run settings.
    ``layout`` is passed to ``clis.layout_score.LayoutScoreConfig`` unchanged.
    """

    image_model: str = Field(default_factory=lambda: _default("DEFAULT_CLIP"))
    detector: str = Field(default_factory=lambda: _default("DEFAULT_DETECTOR"))  # a spec, or "none"
    device: str = "cpu"
    dtype: Optional[str] = None
    batch_size: int = Field(32, ge=1)
    # Decoding and cropping run in these loader threads; with fewer than the cores a GPU waits
    # on the CPU side. Capped: beyond 8, threads contend for the GIL more than they decode.
    num_workers: int = Field(default_factory=lambda: min(8, usable_cores()), ge=0)
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)
    embedding_cache: Optional[str] = None  # SQLite file for text embeddings shared across runs
    layout_scores: Optional[str] = None  # `clis score-layouts` output to take CLIS-L from, not computed
    layout_score: bool = True
    layout: dict[str, Any] = Field(default_factory=dict)
    combine: CombineWeights = Field(default_factory=CombineWeights)
    engine: EngineConfig = Field(default_factory=EngineConfig)

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: Optional[str]) -> Optional[str]:
        from clis.errors import ModelSpecError
        from clis.models.loaders import torch_dtype

        try:
            torch_dtype(value)  # the names load_model reads, "bf16" and "fp16" too
        except ModelSpecError:
            raise ValueError(f"{value!r} is not a dtype; use {', '.join(DTYPES)}") from None
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        import torch

        try:
            device = torch.device(value)
        except (RuntimeError, ValueError):
            device = None
        if device is None or device.type not in DEVICE_TYPES:
            raise ValueError(f"{value!r} is not a device; use cpu, cuda, cuda:N or mps")
        return value

    @model_validator(mode="after")
    def _judge_detector(self) -> "ScoreConfig":
        # The paper's protocol has no detector term: --judge acp reproduces it unless a
        # detector is asked for by name.
        if self.judge.name == "acp" and "detector" not in self.model_fields_set:
            self.detector = "none"
        # Each judge reads its own instance terms; with the detector off, its weight drops out.
        used = [*JUDGE_TERMS[self.judge.name], *(("detection",) if self.detector_enabled else ())]
        if sum(getattr(self.weights, name) for name in used) <= 0:
            raise ValueError(f"weights: {' + '.join(used)} must be > 0 for --judge {self.judge.name}"
                             + ("" if self.detector_enabled else " without a detector"))
        return self

    @property
    def detector_enabled(self) -> bool:
        return self.detector.strip().lower() not in ("", "none", "off")

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> "ScoreConfig":
        """Read a ``.json``, ``.toml`` or ``.yaml`` config; keyword overrides win over the file.

        A ``pick`` table in the file holds ``clis pick``'s thresholds (``PickConfig.from_file``,
        written by ``clis bench calibrate``); scoring leaves it to pick, so one file serves both."""
        path = Path(path)
        data = read_config_data(path)
        data.pop("pick", None)
        if "judge" in data and not isinstance(data["judge"], dict):
            # Merged with the judge flags, a bare name would be replaced, not kept.
            raise InputError(f"{path}: judge: expected a table of judge settings, such as judge = {{name = \"vqa\"}}, "
                             f"not {data['judge']!r}")
        return cls.checked(_deep_merge(data, overrides), source=str(path))

    @classmethod
    def checked(cls, data: dict[str, Any], source: str = "config") -> "ScoreConfig":
        """Validate ``data``; errors become one InputError line naming the field.

        Every number must be finite: a weight of ``inf`` made every score NaN, and TOML and
        YAML both spell ``nan`` and ``inf``."""
        bad = _non_finite(data)
        if bad is not None:
            raise InputError(f"{source}: {bad[0]}: {bad[1]!r} is not a finite number")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
            raise InputError(f"{source}: {where}: {first['msg']}{more}") from None


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, as a container or ``taskset`` sets it),
    not every core of the machine that ``os.cpu_count`` reports."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _non_finite(value: Any, where: str = "", seen: Optional[set[int]] = None) -> Optional[tuple[str, Any]]:
    """``(dotted field, value)`` of the first NaN or infinite number in nested settings, or None.

    Each container is visited once: YAML aliases can make a config of a few hundred bytes a
    tree of 10**30 nodes that share the same few lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "(top level)", value
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    seen = set() if seen is None else seen
    if id(value) in seen:
        return None
    seen.add(id(value))
    for key, item in items:
        found = _non_finite(item, f"{where}.{key}" if where else str(key), seen)
        if found is not None:
            return found
    return None


def _default(name: str) -> str:
    import clis.models

    return getattr(clis.models, name)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def manifest_path(out: str | Path) -> Path:
    """The manifest that sits next to a scores file: ``<out>.manifest.json``."""
    return Path(f"{out}.manifest.json")


def check_layouts_in_canvas(layouts: Sequence[Layout], source: str = "layouts") -> None:
    """Reject layouts whose objects all miss the image, before any model is loaded."""
    for index, layout in enumerate(layouts):
        inside = False
        for obj in layout.objects:
            x0, y0, x1, y1 = obj.xyxy
            if min(x1, 1.0) > max(x0, 0.0) and min(y1, 1.0) > max(y0, 0.0):
                inside = True
                break
        if not inside:
            raise InputError(
                f"{source}: layout {layout.id!r} (record {index}): objects[*].bbox: every object lies outside "
                "the image (boxes are normalised [x, y, w, h] in 0..1)"
            )


def _as_record(raw: bytes) -> dict:
    """One line of a scores file as a score record, or ValueError saying why it is not one."""
    try:
        record = jsonio.loads(raw)
    except jsonio.JSONError as exc:
        raise ValueError(str(exc)) from None
    except ValueError:
        raise ValueError("not valid JSON") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    missing = [key for key in RECORD_KEYS if key not in record]
    if missing:
        raise ValueError(f"field {missing[0]!r} missing")
    if not isinstance(record["layout_id"], str):
        raise ValueError("field 'layout_id': not a string")
    for key in ("image", "error"):
        if record[key] is not None and not isinstance(record[key], str):
            raise ValueError(f"field {key!r}: not a string or null")
    return record


def read_scores(path: str | Path) -> list[dict]:
    """The records of an existing scores.jsonl, for ``--resume`` (:func:`iter_scores`, as a list)."""
    return [record for _, record in iter_scores(path)]


def iter_scores(path: str | Path) -> Iterator[tuple[int, dict]]:
    """``(byte offset of its line, record)`` for each record of an existing scores.jsonl, read
    one line at a time, so ``--resume`` can keep a record's place in the file instead of the record.

    A last line without its newline is what an interruption leaves mid-write: it is not a
    record, and its candidate is scored again (the caller has checked the run's manifest
    first, so a file that clis never wrote is not taken for a cut-off one). Any other line
    that is not a score record, and a candidate listed twice (two runs that wrote into one
    file), stop with an InputError naming the line, because resuming rewrites the file and
    would destroy whatever that line holds.
    """
    hint = "--resume will not rewrite the file (pass --overwrite to replace it, or use another --out)"
    seen = SeenCandidates(path, f"as when two runs write one file; {hint}")
    offset = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            at, offset = offset, offset + len(raw)
            if not raw.endswith(b"\n"):
                # What an interruption cuts short is the start of a record, as clis writes them;
                # anything else (a one-line layouts file beside a copied manifest) is not ours.
                if not raw.startswith(RECORD_START):
                    raise InputError(f"{path}: line {number}: not a clis score record; {hint}")
                break
            if not raw.strip():
                continue
            try:
                record = _as_record(raw)
            except ValueError as exc:
                raise InputError(f"{path}: line {number}: {exc}, so this is not a clis score record; {hint}") from None
            seen.add(record, number)
            yield at, record


def _line(record: dict) -> bytes:
    """A record as clis writes it: one JSON line (ASCII: json.dumps escapes the rest)."""
    return (jsonio.dumps(record) + "\n").encode("ascii")


@dataclasses.dataclass
class ScoreRun:
    """What :meth:`Scorer.score_folder` did: counts, the first error and the summary's values,
    never the records themselves, which are in ``out``; iterating a run reads them back from
    there, in input order (without ``out`` they had nowhere else to go and are kept).

    ``values`` holds, for each of :data:`SUMMARY_FIELDS`, the non-null scores of every candidate
    (resumed ones too) as a compact array of floats, in no particular order.
    """

    out: Optional[Path]
    total: int
    resumed: int = 0
    scored: int = 0
    failed: int = 0
    first_error: Optional[str] = None
    missing: list[str] = dataclasses.field(default_factory=list)
    status: str = "running"
    values: dict[str, array] = dataclasses.field(default_factory=lambda: {key: array("d") for key in SUMMARY_FIELDS})
    _kept: Optional[list[Optional[dict]]] = dataclasses.field(default=None, repr=False)
    _first_error_at: int = dataclasses.field(default=-1, repr=False)

    def add(self, position: int, record: dict) -> None:
        """Count ``record``, the candidate at ``position`` in input order."""
        if record["error"] is None:
            self.scored += 1
        else:
            self.failed += 1
            if self._first_error_at < 0 or position < self._first_error_at:
                self.first_error, self._first_error_at = record["error"], position
        for key, values in self.values.items():
            if record.get(key) is not None:
                values.append(record[key])
        if self._kept is not None:
            self._kept[position] = record

    def records(self) -> Iterator[dict]:
        """The run's records in input order, one at a time (read from ``out``)."""
        if self._kept is not None:
            yield from (record for record in self._kept if record is not None)
            return
        if self.out is None:
            return
        if _is_parquet(self.out) and self.status == "complete":
            from clis.scoretable import iter_parquet_records

            yield from iter_parquet_records(self.out)
            return
        with open(journal_path(self.out), "rb") as handle:
            for raw in handle:
                if raw.strip():
                    yield jsonio.loads(raw)

    def __iter__(self) -> Iterator[dict]:
        return self.records()


def _is_parquet(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".parquet"


def journal_path(out: str | Path) -> Path:
    """The JSONL file a run appends to: ``out`` itself, or for a Parquet ``out`` the
    resumable ``<out>.partial.jsonl`` beside it, turned into the Parquet file at the end."""
    return Path(f"{out}.partial.jsonl") if _is_parquet(out) else Path(out)


def resume_signature(manifest: dict) -> dict:
    """What a resumed run must share with the run it continues: models, weights and settings."""
    settings = manifest.get("settings") if isinstance(manifest.get("settings"), dict) else {}
    skipped = RUN_ONLY_SETTINGS + MODEL_SETTINGS
    signature = {
        "models": weights_identity(manifest.get("models")),
        "weights": manifest.get("weights"),
        "settings": {k: v for k, v in settings.items() if k not in skipped},
    }
    judge = signature["settings"].pop("judge", None)
    judge = judge if isinstance(judge, dict) else {"name": "clip"}
    if judge.get("name") != "clip":
        # The clip judge reads none of the judge's settings, so a run from before judges existed
        # resumes as one of today's clip runs.
        signature["settings"]["judge"] = {k: v for k, v in judge.items() if k not in JUDGE_RUN_ONLY}
    # Each judge's instance weights are the only ones that change its numbers.
    unused = unread_weights(judge["name"]) if judge.get("name") in JUDGE_TERMS else ()
    for group, key in ((signature["weights"], "clis_i"), (signature["settings"], "weights")):
        if isinstance(group, dict) and isinstance(group.get(key), dict):
            group[key] = {k: v for k, v in group[key].items() if k not in unused}
    return json.loads(json.dumps(signature, default=str))  # tuples, numbers: as the JSON file has them


def judge_name(manifest: dict) -> str:
    """The judge a manifest's run used (runs from before judges existed used clip)."""
    settings = manifest.get("settings") if isinstance(manifest.get("settings"), dict) else {}
    judge = settings.get("judge") if isinstance(settings.get("judge"), dict) else {}
    name = judge.get("name", "clip")
    return name if isinstance(name, str) else repr(name)


def check_same_judge(previous_manifest: Path, earlier: dict, judge: str) -> None:
    """InputError (one line) when the run ``earlier`` (a manifest) used another judge than ``judge``."""
    if judge_name(earlier) != judge:
        raise InputError(f"{previous_manifest}: --resume needs the judge of the run it continues: the earlier run used "
                         f"--judge {judge_name(earlier)}, this one --judge {judge}; drop --resume (or pass --overwrite) "
                         "or use another --out")


def _differences(then: Any, now: Any, where: str = "") -> Iterator[tuple[str, Any, Any]]:
    """``(dotted field, value then, value now)`` for every leaf that differs."""
    if isinstance(then, dict) and isinstance(now, dict):
        for key in list(dict.fromkeys([*then, *now])):
            yield from _differences(then.get(key), now.get(key), f"{where}.{key}" if where else str(key))
    elif then != now:
        yield where, then, now


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str)  # a manifest's values, which may hold NaN from before
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_resumable(previous_manifest: Path, current: dict) -> dict:
    """The earlier run's manifest; InputError (one line) when it used other models, weights or settings."""
    hint = "drop --resume (or pass --overwrite) or use another --out"
    try:
        earlier = jsonio.loads(previous_manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"{previous_manifest}: missing, so the models and settings of the earlier run cannot be checked; {hint}"
        ) from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONError are ValueErrors
        raise InputError(f"{previous_manifest}: unreadable ({one_line(exc)}); {hint}") from None
    if not isinstance(earlier, dict):
        raise InputError(f"{previous_manifest}: not a clis score manifest (not a JSON object); {hint}")
    check_same_judge(previous_manifest, earlier, judge_name(current))
    changes = list(_differences(resume_signature(earlier), resume_signature(current)))
    if changes:
        field, then, now = changes[0]
        more = f" (and {len(changes) - 1} more differences)" if len(changes) > 1 else ""
        raise InputError(
            f"{previous_manifest}: --resume needs the models and settings of the run it continues, but {field} "
            f"differs ({_short(then)} then, {_short(now)} now){more}; {hint}"
        )
    return earlier


def _resolved(path: str, base: str | Path) -> str:
    """``path`` as an absolute, symlink-free path, a relative one taken from ``base``."""
    return os.path.realpath(os.path.join(base, path))


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, before any model is loaded."""
    import torch

    kind = torch.device(device)
    if kind.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r}: no CUDA GPU is available here; use --device cpu")
        count = torch.cuda.device_count()
        if kind.index is not None and kind.index >= count:
            raise InputError(f"device {device!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif kind.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {device!r}: Apple MPS is not available here; use --device cpu")


def read_generation(images_dir: str | Path, layouts: Sequence[Layout] = ()) -> tuple[Optional[dict], list[str]]:
    """What `clis generate` recorded about the candidates in ``images_dir``, and warnings.

    Scoring does not depend on it: without the file this is ``(None, [])``, and a file that
    cannot be read only gives a warning. ``layouts_differ`` lists the ``layouts`` whose hash is
    not the one recorded for their id: their images were made from another version of them.
    """
    path = Path(images_dir) / GENERATION_MANIFEST
    if not path.is_file():
        return None, []
    skip = "generation info not recorded"
    try:
        raw = path.read_bytes()
        data = jsonio.loads(raw)
    except (OSError, ValueError) as exc:
        return None, [f"{path}: unreadable generation manifest ({one_line(exc)}); {skip}"]
    if not isinstance(data, dict) or data.get("format") != GENERATION_FORMAT:
        return None, [f"{path}: field 'format': not a {GENERATION_FORMAT} manifest; {skip}"]
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    generation = {
        "manifest": str(path),
        "sha256": hashlib.sha256(raw).hexdigest(),  # pins the per-image seeds listed in that file
        "generator": data.get("generator"),
        "model": config.get("model"),
        "config": config,
        "n": data.get("n"),
        "seed": data.get("seed"),
        "demo_only": data.get("demo_only"),
        "layouts": data.get("layouts"),
        "layouts_sha256": data.get("layouts_sha256"),
        "clis_version": data.get("clis_version"),
        "layouts_differ": _layouts_differ(data.get("items"), layouts),
    }
    warnings = []
    if generation["demo_only"] is True:
        warnings.append(
            f"{path}: made by the {generation['generator']!r} generator, which is demo_only: these images are "
            "for demos and tests, not training data"
        )
    differ = generation["layouts_differ"]
    if differ:
        shown = ", ".join(differ[:3]) + (", …" if len(differ) > 3 else "")
        warnings.append(
            f"{_count(len(differ), 'layout')} {'differs' if len(differ) == 1 else 'differ'} from the ones "
            f"{images_dir} was generated from ({shown}); their boxes may not match the images (listed in the "
            "manifest under run.generation.layouts_differ)"
        )
    return generation, warnings


def _layouts_differ(items: Any, layouts: Sequence[Layout]) -> list[str]:
    """Ids of ``layouts`` whose ``layout_sha256`` is not the one the candidates manifest has for that id.

    Layouts the manifest does not list, and items without a hash (older manifests), cannot be
    compared and are left out; a hand-written manifest may hold anything, so odd items are skipped.
    """
    recorded = {
        item["layout_id"]: item["layout_sha256"]
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, dict) and isinstance(item.get("layout_id"), str) and isinstance(item.get("layout_sha256"), str)
    }  # fmt: skip
    return [layout.id for layout in layouts if layout.id in recorded and recorded[layout.id] != layout_sha256(layout)]


def _with_invalid(
    layouts: Sequence[Layout], invalid: Sequence[Any]
) -> tuple[list[Layout], dict[str, str], dict[str, int]]:
    """Layouts plus stand-ins for the invalid records, in file order; each invalid record's key
    and reason; and the file index of every key, which puts the records in file order.

    A stand-in carries only the id and listed images, which is all candidate discovery reads,
    so an invalid layout still claims its images (they are not orphans) and each gets a record.
    An invalid record without a usable id is keyed ``record <index>`` (``InvalidLayout.key``)
    and gets one record without an image.
    """
    invalid_at = {bad.index: bad for bad in invalid}
    rejected = {bad.key: bad.error for bad in invalid}
    file_index = {bad.key: bad.index for bad in invalid}
    merged: list[Layout] = []
    valid = iter(layouts)
    for index in range(len(layouts) + len(invalid)):
        bad = invalid_at.get(index)
        if bad is None:
            layout = next(valid)
            merged.append(layout)
            file_index[layout.id] = index
        elif bad.layout_id is not None:
            merged.append(bad.stand_in(bad.layout_id))
    return merged, rejected, file_index


def check_ray_installed() -> None:
    """InputError (one line) when ``--engine ray`` is asked for and Ray is not installed."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise InputError(RAY_MISSING)


RAY_MISSING = "--engine ray needs Ray, which is not installed here: pip install 'clis[ray]'"


def _parquet_to_journal(parquet: Path, journal: Path) -> None:
    """The records of a finished Parquet run as the JSONL journal a resumed run continues."""
    from clis.scoretable import iter_parquet_records

    with atomic_writer(journal) as handle:
        for record in iter_parquet_records(parquet):
            handle.write(_line(record))


def _journal_to_parquet(journal: Path, parquet: Path) -> None:
    """A finished run's journal, copied record by record into ``parquet`` (replaced whole); the
    caller removes the journal once the manifest says the run is complete."""
    from clis.scoretable import ParquetRecordWriter

    tmp = parquet.with_name(f".{os.getpid()}-{secrets.token_hex(4)}.{parquet.name}")  # still a .parquet name
    try:
        with ParquetRecordWriter(tmp) as writer, open(journal, "rb") as lines:
            for raw in lines:
                if raw.strip():
                    writer.write(jsonio.loads(raw))
        os.replace(tmp, parquet)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Scorer:
    """Loads the CLIP model, the detector and (when available) the CLIS-L scorer once.

    Args:
        config: a :class:`ScoreConfig`; keyword arguments override its fields.

    Raises:
        ModelUnavailableError: weights missing offline; the message names the flag to pass.
    """

    def __init__(self, config: Optional[ScoreConfig] = None, **overrides: Any):
        # Only what was set: defaults that depend on other fields (the acp judge's detector) are
        # then worked out again with the overrides.
        base = config.model_dump(by_alias=True, exclude_unset=True) if config is not None else {}
        self.config = ScoreConfig.checked(_deep_merge(base, overrides)) if overrides or config is None else config
        cfg = self.config
        # Under Ray the actors run the models on cfg.device; the driver's copies only give the
        # fingerprints and the tokenizer checks, so they stay on the CPU of a head node that may
        # have no GPU.
        on_driver_only = cfg.engine.name == "ray"
        if not on_driver_only:
            check_device(cfg.device)
        self.detector: Optional[Detector] = None
        self.encoder = None
        self.text_cache: Optional[TextEmbeddingCache] = None
        if cfg.engine.name == "ray":
            check_ray_installed()
            from clis.engines.stages import worker_device

            # The actors' device is checked now (a GPU device needs GPUs per worker), not once
            # --out has been rewritten and the run has started.
            worker_device(cfg.engine, str(cfg.device))
        # With the clip judge, --dtype is the autocast dtype of the forwards, and the weights stay
        # float32 (half-precision weights would also round every LayerNorm and softmax); a VLM
        # judge's dtype is its weights' dtype.
        weights_dtype = None if cfg.judge.name == "clip" else cfg.dtype
        if cfg.judge.name == "clip":
            from clis.models.clip import ClipEncoder

            clip = _load_or_explain(
                cfg.image_model, "clip", cfg, "CLIP weights",
                f"pass --image-model PATH with a local CLIP folder or checkpoint, or run `clis models fetch "
                f"{cfg.image_model}` on a connected machine", dtype=weights_dtype, cpu=on_driver_only,
            )
            self.encoder = ClipEncoder(clip)
        if cfg.detector_enabled:
            detector = _load_or_explain(
                cfg.detector, "detector", cfg, "detector weights",
                f"pass --detector PATH, --detector none, or run `clis models fetch {cfg.detector}`", dtype=weights_dtype,
                cpu=on_driver_only,
            )
            self.detector = Detector(detector, cfg.detection)
        if self.encoder is not None:
            fingerprint = clip.fingerprint or {"spec": clip.spec}
            autocast = autocast_dtype_of(cfg.dtype)
            if autocast is not None:
                # Vectors from half-precision forwards must not be handed to a float32 run that
                # shares the --embedding-cache file (float32 runs keep the keys they always had).
                fingerprint = {**fingerprint, "autocast": str(autocast)}
            self.text_cache = TextEmbeddingCache(
                self.encoder.encode_texts, model_key(fingerprint), cfg.embedding_cache,
                lengths=self.encoder.token_counts,
            )
            self.image_scorer: Any = ImageScorer(
                self.encoder, self.detector, cfg, text_cache=self.text_cache, batch_size=cfg.batch_size,
                num_workers=cfg.num_workers, max_pixels=cfg.max_pixels, autocast_dtype=cfg.dtype,
            )
        else:
            from clis.image_score.judges import load_vlm_judge

            # Under Ray the driver's judge only gives fingerprints, as the CLIP copy above does.
            self.image_scorer = load_vlm_judge(cfg.model_copy(update={"device": "cpu"}) if on_driver_only else cfg,
                                               self.detector)
        self.layout_scorer = self._load_layout_scorer()
        self._clis_l: dict[str, Optional[float]] = {}
        self.layout_errors: dict[str, str] = {}
        # Caption / object phrase -> longer than the CLIP text context (cut before encoding)?
        self._captions_cut: dict[str, bool] = {}
        self._phrases_cut: dict[str, bool] = {}
        self.generation: Optional[dict] = None
        self._generation_warnings: list[str] = []
        self._resume_warnings: list[str] = []
        self._layout_hashes: dict[str, str] = {}
        self.started = _now()

    # -- CLIS-L ---------------------------------------------------------------------------------

    def _load_layout_scorer(self) -> Any:
        if not self.config.layout_score:
            return None
        try:
            from clis.layout_score import LayoutScoreConfig, LayoutScorer
        except ImportError:
            return None  # CLIS-L is not part of this installation: clis equals clis_i
        if self.config.layout_scores:
            from clis.layout_score.precomputed import PrecomputedLayoutScores

            try:
                settings = LayoutScoreConfig(**self.config.layout)
            except (TypeError, ValueError) as exc:
                raise InputError(f"layout settings: {' '.join(str(exc).split())}") from None
            return PrecomputedLayoutScores(self.config.layout_scores, settings)
        from clis.layout_score.cache import DEFAULT_CACHE, disabled_by_env

        # --embedding-cache FILE also holds the CLIS-L results (another table), unless
        # CLIS_LAYOUT_CACHE=off; without it, the LayoutScorer's default file.
        embedding_cache = self.config.embedding_cache
        cache = Path(embedding_cache) if embedding_cache and not disabled_by_env() else DEFAULT_CACHE
        try:
            return LayoutScorer(LayoutScoreConfig(**self.config.layout), cache=cache)
        except ModelUnavailableError as exc:
            raise ModelUnavailableError(f"{exc} (or pass --no-layout-score to score images only)") from None
        except (TypeError, ValueError) as exc:
            raise InputError(f"layout settings: {' '.join(str(exc).split())}") from None

    def layout_scores(
        self, layouts: Sequence[Layout], progress: Optional[Callable[[str, int, int], None]] = None
    ) -> dict[str, Optional[float]]:
        """CLIS-L per layout id (None when layout scoring is off or failed for that layout).

        Each layout is scored once per Scorer; ``progress(stage, done, total)`` is passed on to
        ``LayoutScorer.score_layouts``. Failures are kept in ``layout_errors``.
        """
        todo = list({layout.id: layout for layout in layouts if layout.id not in self._clis_l}.values())
        if todo and self.layout_scorer is not None:
            for result in self.layout_scorer.score_layouts(todo, progress=progress):
                self._clis_l[result.id] = result.clis_l
                if result.error:
                    self.layout_errors[result.id] = result.error
        for layout in todo:
            self._clis_l.setdefault(layout.id, None)
        return {layout.id: self._clis_l[layout.id] for layout in layouts}

    def _combine(self, record: dict, clis_l: Optional[float]) -> dict:
        record["clis_l"] = None if clis_l is None else round(float(clis_l), 4)
        if record["clis_i"] is None:
            record["clis"] = None
        else:
            weights = self.config.combine
            record["clis"] = round(weighted_mean([record["clis_i"], record["clis_l"]], [weights.image, weights.layout]), 4)
        combined = {**{key: record[key] for key in RECORD_KEYS},
                    LAYOUT_HASH_KEY: self._layout_hashes.get(record["layout_id"])}
        if JUDGE_KEY in record:
            combined[JUDGE_KEY] = record[JUDGE_KEY]
        return combined

    # -- texts longer than the CLIP context --------------------------------------------------------

    def _check_truncation(self, layouts: Sequence[Layout]) -> None:
        """Note which captions and object phrases CLIP will cut (each distinct text tokenized once),
        and which queries the detector will."""
        self.image_scorer.check_detector_queries(layouts)
        if self.encoder is None:
            return  # a VLM judge: no CLIP text context to fit into
        captions = list(dict.fromkeys(lay.caption for lay in layouts if lay.caption.strip()))
        captions = [text for text in captions if text not in self._captions_cut]
        phrases = list(dict.fromkeys(obj.phrase for lay in layouts for obj in lay.objects))
        phrases = [text for text in phrases if text not in self._phrases_cut]
        if not captions and not phrases:
            return
        flags = self.encoder.truncated(captions + phrases)
        self._captions_cut.update(zip(captions, flags[: len(captions)]))
        self._phrases_cut.update(zip(phrases, flags[len(captions) :]))

    def _truncated_texts(self) -> list[str]:
        if self.text_cache is None:
            return []
        if self.config.engine.name == "ray":
            # The actors encode the texts, so the driver's cache saw none of them: the texts the
            # image stage encodes are worked out here instead, as ImageScorer picks them (captions;
            # unless global-only, the phrases and the distractors too).
            cut = {text for text, was_cut in self._captions_cut.items() if was_cut}
            # (Nothing checked: no candidate was scored, and nothing was encoded.)
            if not getattr(self.image_scorer, "global_only", False) and (self._captions_cut or self._phrases_cut):
                cut.update(text for text, was_cut in self._phrases_cut.items() if was_cut)
                distractors = [text for text in dict.fromkeys(self.config.distractors) if text.strip()]
                if distractors:
                    cut.update(text for text, was_cut in zip(distractors, self.encoder.truncated(distractors)) if was_cut)
            return sorted(cut)
        return sorted(self.text_cache.truncated)

    def truncation(self) -> dict:
        """Captions and object phrases of the scored layouts that were cut to the CLIP context
        (and, with a detector, the queries cut to its text limit)."""
        found = {
            "context_length": None if self.encoder is None else self.encoder.context_length,
            "captions": sorted(text for text, cut in self._captions_cut.items() if cut),
            "phrases": sorted(text for text, cut in self._phrases_cut.items() if cut),
        }
        if self.detector is not None:
            found["detector"] = self.detector.truncation()
        return found

    def warnings(self) -> list[str]:
        """One line per thing the user should know about the last run (no "warning:" prefix)."""
        lines = list(self._generation_warnings) + list(self._resume_warnings)
        cut = self.truncation()
        if cut["captions"] or cut["phrases"]:
            lines.append(
                f"{_count(len(cut['captions']), 'caption')} and {_count(len(cut['phrases']), 'object phrase')} are "
                f"longer than the CLIP text context ({cut['context_length']} tokens) and were cut to it, keeping the "
                "end token; the manifest lists them under \"truncation\""
            )
        detector_cut = self.detector.truncation_warning() if self.detector is not None else None
        if detector_cut:
            lines.append(detector_cut)
        return lines

    # -- scoring --------------------------------------------------------------------------------

    def score(self, image: ImageInput, layout: Layout) -> dict:
        """One scores.jsonl record for ``image`` (a path or PIL image) against ``layout``."""
        return next(self.score_pairs([(image, layout)]))

    def _image_records(self, candidates: Iterable[Candidate]) -> Iterator[dict]:
        """CLIS-I records of ``candidates``, in input order, not yet combined with CLIS-L: the one
        place where the configured engine runs the image models."""
        if self.config.engine.name == "ray":
            try:
                from clis.engines.ray_engine import RayEngine
            except ModuleNotFoundError as exc:
                if exc.name is not None and exc.name.split(".")[0] == "ray":
                    raise InputError(RAY_MISSING) from None
                raise
            yield from RayEngine(self.config.engine).image_records(self, candidates)
        else:
            yield from self.image_scorer.score_candidates(candidates)

    def score_pairs(self, pairs: Iterable[tuple[ImageInput, Layout]]) -> Iterator[dict]:
        """Records for ``(image, layout)`` pairs, in order, batched across pairs."""

        def candidates() -> Iterator[Candidate]:
            for image, layout in pairs:
                if layout.id not in self._clis_l:
                    self.layout_scores([layout])
                if layout.id not in self._layout_hashes:
                    self._layout_hashes[layout.id] = layout_sha256(layout)
                self._check_truncation([layout])
                yield Candidate(image, layout)

        for record in self._image_records(candidates()):
            yield self._combine(record, self._clis_l[record["layout_id"]])

    def _folder_records(self, todo: Sequence[tuple[int, str, Layout]],
                        on_layout_progress: Optional[Callable[[str, int, int], None]]) -> Iterator[tuple[int, dict]]:
        """``(position, combined record)`` for ``todo`` (position in the run, image, layout), in order.

        CLIS-L is computed for :data:`LAYOUT_CHUNK` layouts at a time as the image stage reaches
        them, and a layout's CLIS-L and hash are dropped once its last record is out: ``todo``
        holds each layout's candidates together (the run's order is the layouts file's), so
        the Scorer holds a chunk or two of layouts, however long the run. ``on_layout_progress``
        sees the chunks as one run: layouts out of all of them, and the LLM statements so far.
        """
        layouts = list({layout.id: layout for _, _, layout in todo}.values())
        live: set[str] = set()  # this run's layouts whose CLIS-L and hash the Scorer holds
        before = {"layouts": 0, "done": 0, "total": 0}  # progress of the chunks already scored
        statements = [0, 0]  # the current chunk's (done, total) LLM statements

        def chunk_progress(stage: str, done: int, total: int) -> None:
            if on_layout_progress is None:
                return
            if stage == "layouts":
                on_layout_progress(stage, before["layouts"] + done, len(layouts))
            elif stage == "statements":
                statements[:] = [done, total]
                on_layout_progress(stage, before["done"] + done, before["total"] + total)
            else:
                on_layout_progress(stage, done, total)

        position_of = {layout.id: index for index, layout in enumerate(layouts)}
        scored_upto = 0

        def score_chunk_from(index: int) -> None:
            # On the record side, not the candidate side: an engine may read every candidate
            # before the first record comes back (Ray builds its dataset first), and CLIS-L
            # must still be held for a chunk or two of layouts only.
            nonlocal scored_upto
            chunk = layouts[index : index + LAYOUT_CHUNK]
            statements[:] = [0, 0]
            self.layout_scores(chunk, progress=chunk_progress)
            before["layouts"] += len(chunk)
            before["done"] += statements[0]
            before["total"] += statements[1]
            for lay in chunk:
                self._layout_hashes[lay.id] = layout_sha256(lay)
                live.add(lay.id)
            scored_upto = index + len(chunk)

        def forget(layout_id: str) -> None:
            live.discard(layout_id)
            self._clis_l.pop(layout_id, None)
            self._layout_hashes.pop(layout_id, None)

        keys = iter(todo)
        current = None
        try:
            for record in self._image_records(Candidate(image, layout) for _, image, layout in todo):
                position, _, layout = next(keys)
                if layout.id != current:
                    if current is not None:
                        forget(current)  # its last candidate is out: the image stage is past it
                    current = layout.id
                    if position_of[layout.id] >= scored_upto:
                        score_chunk_from(position_of[layout.id])
                yield position, self._combine(record, self._clis_l[layout.id])
        finally:
            for layout_id in list(live):
                forget(layout_id)

    def score_folder(
        self,
        images_dir: str | Path,
        layouts: Sequence[Layout] | str | Path,
        out: Optional[str | Path] = None,
        resume: bool = False,
        on_record: Optional[Callable[[dict], None]] = None,
        on_start: Optional[Callable[[int, int], None]] = None,
        layouts_source: Optional[str] = None,
        on_layout_progress: Optional[Callable[[str, int, int], None]] = None,
        invalid: Sequence[Any] = (),
    ) -> ScoreRun:
        """Score every candidate image of ``layouts`` found in ``images_dir`` (see clis.discovery).

        With ``out`` set, records are appended to it one flushed line at a time, and a manifest is
        written next to it at the start and updated at the end. ``resume=True`` keeps the
        successful records already in ``out``, drops failed ones and a line cut short by an
        interruption, scores the rest, and finally rewrites the file in input order; it refuses
        (InputError) when ``out`` holds lines that are not score records or was made with other
        models or settings. An ``out`` ending in ``.parquet`` is written at the end from the
        journal ``<out>.partial.jsonl`` (:func:`journal_path`), which is what an interrupted run
        leaves and a resumed one continues. ``on_start(total, already_done)`` and
        ``on_record(record)`` let a caller show progress; ``on_layout_progress`` is passed to
        CLIS-L scoring, which runs once per layout, :data:`LAYOUT_CHUNK` layouts at a time, just
        ahead of their images; ``layouts_source`` names the layouts file in messages and the
        manifest. Warnings for the user (truncated texts, demo-only candidates) are in
        :meth:`warnings`. ``invalid`` takes the layout records of the file that failed validation
        (:class:`clis.formats.InvalidLayout`, as ``read_layouts`` gives them): each of their
        candidates gets an error record naming the problem, in file order, and is never scored.

        Memory stays that of a batch of records however many candidates there are: records go
        to ``out`` as they come, and resuming and reordering copy lines by their place in the file.
        Returns a :class:`ScoreRun` (counts, the first error, the summary's values); iterating it
        reads the records back from ``out``, in input order. Without ``out`` the records have
        nowhere else to go, and the run keeps them.
        """
        from clis.discovery import discover_candidates

        if not isinstance(layouts, (list, tuple)):
            from clis.formats import load_layouts

            layouts_source = str(layouts)
            layouts = load_layouts(layouts)
        layouts_source = layouts_source or "layouts"
        check_layouts_in_canvas(layouts, layouts_source)
        by_id = {layout.id: layout for layout in layouts}
        claimants, rejected, file_index = _with_invalid(layouts, invalid)
        discovery = discover_candidates(images_dir, claimants)
        discovery.missing = [layout_id for layout_id in discovery.missing if layout_id in by_id]
        order: list[tuple[str, Optional[str]]] = [(layout_id, str(path)) for layout_id, path in discovery.pairs()]
        order += [(layout_id, None) for layout_id in rejected if layout_id not in discovery.candidates]
        order.sort(key=lambda key: file_index[key[0]])  # stable: candidates keep their order
        self.invalid_layouts = dict(rejected)
        self.discovery = discovery
        self.layouts_source = layouts_source
        self.run_images = str(images_dir)
        self.generation, self._generation_warnings = read_generation(images_dir, layouts)
        self._check_truncation([by_id[layout_id] for layout_id in dict.fromkeys(lid for lid, _ in order) if layout_id in by_id])

        run = ScoreRun(out=Path(out) if out is not None else None, total=len(order), missing=list(discovery.missing))
        if run.out is None:
            run._kept = [None] * len(order)
            self._score_into(run, None, resume, images_dir, layouts_source, order, by_id, rejected, on_record,
                             on_start, on_layout_progress)
            return run
        run.out.parent.mkdir(parents=True, exist_ok=True)
        # Two runs appending to one file would each exit 0 with the other's lines mixed in.
        with OutputLock(run.out):
            journal = journal_path(run.out)
            copied = journal != run.out and resume and run.out.exists() and not journal.exists()
            if copied:
                # A finished Parquet run: its records are the done ones. Its settings are checked
                # first, so a refused resume leaves no journal behind.
                earlier_run = check_resumable(manifest_path(run.out), self.manifest()).get("run")
                status = earlier_run.get("status") if isinstance(earlier_run, dict) else None
                if status != "complete":
                    # The manifest is of a run that never wrote this Parquet file (an --overwrite
                    # cut short, whose journal is gone): the file's records may be of other settings.
                    raise InputError(
                        f"{manifest_path(run.out)}: its run did not finish (status {status!r}) and its journal "
                        f"{journal.name} is gone, so the records in {run.out} may be of another run; pass "
                        "--overwrite or use another --out"
                    )
                _parquet_to_journal(run.out, journal)
            try:
                self._score_into(run, journal, resume, images_dir, layouts_source, order, by_id, rejected, on_record,
                                 on_start, on_layout_progress)
            except InputError:
                if copied and run.status == "running":
                    # Refused before the run wrote its manifest: the Parquet file and its manifest
                    # are as they were. Later, the journal holds the Parquet's records and the new ones.
                    journal.unlink(missing_ok=True)
                raise
        return run

    def _score_into(self, run: ScoreRun, out_path: Optional[Path], resume: bool, images_dir: str | Path,
                    layouts_source: str, order: list[tuple[str, Optional[str]]], by_id: dict[str, Layout],
                    rejected: dict[str, str], on_record: Optional[Callable[[dict], None]],
                    on_start: Optional[Callable[[int, int], None]],
                    on_layout_progress: Optional[Callable[[str, int, int], None]]) -> None:
        """The scoring loop of ``score_folder``, run while ``out_path`` (when set) is locked.

        ``offsets[i]`` is where the record of ``order[i]`` starts in ``out_path`` (-1: none
        yet): all the run keeps of its records, 8 bytes a candidate."""
        self._resume_warnings = []
        offsets = array("q", [-1]) * len(order)
        end = 0  # bytes in out_path
        if out_path is not None:
            if resume and out_path.exists():
                kept = self._resumable_records(out_path, manifest_path(run.out or out_path), order, by_id,
                                               set(rejected))
                # Drop failed records and a torn last line now, in input order, with this run's
                # spelling of the image paths; they are scored again below.
                with open(out_path, "rb") as earlier, atomic_writer(out_path) as handle:
                    for position in sorted(kept):
                        earlier.seek(kept[position])
                        record = {**jsonio.loads(earlier.readline()), "image": order[position][1]}
                        line = _line(record)
                        handle.write(line)
                        offsets[position], end = end, end + len(line)
                        run.add(position, record)
                run.resumed = len(kept)
                del kept
            elif not resume or not out_path.exists():
                out_path.write_bytes(b"")
        self._run_state = {
            "images": str(images_dir), "layouts": layouts_source, "cwd": os.getcwd(), "candidates": len(order),
            "resumed": run.resumed, "status": "running",
        }
        if out_path is not None:
            self.write_manifest(run.out or out_path)
        n_invalid = sum(1 for layout_id, _ in order if layout_id in rejected)
        todo = [(position, path, by_id[layout_id]) for position, (layout_id, path) in enumerate(order)
                if offsets[position] < 0 and layout_id not in rejected]
        handle = open(out_path, "ab") if out_path is not None else None

        def keep(position: int, record: dict) -> None:
            nonlocal end
            if handle is not None:
                line = _line(record)
                handle.write(line)
                offsets[position], end = end, end + len(line)
            run.add(position, record)

        try:
            if on_start is not None:
                on_start(len(order), run.resumed + n_invalid)
            for position, (layout_id, path) in enumerate(order):
                if layout_id in rejected:
                    keep(position, {**error_record(layout_id, path, f"invalid layout: {rejected[layout_id]}"),
                                    LAYOUT_HASH_KEY: None})
            for position, record in self._folder_records(todo, on_layout_progress):
                keep(position, record)
                if handle is not None:
                    handle.flush()
                if on_record is not None:
                    on_record(record)
        except BaseException:
            self._run_state["status"] = run.status = "interrupted"
            raise
        else:
            self._run_state["status"] = run.status = "complete"
        finally:
            if handle is not None:
                handle.close()
            self._run_state.update(scored=run.scored, failed=run.failed)
            if out_path is not None:
                if (run.resumed or n_invalid) and run.status == "complete":
                    # back to input order after a resume, or with invalid layouts' records written first
                    with open(out_path, "rb") as written, atomic_writer(out_path) as ordered:
                        for offset in offsets:
                            if offset >= 0:
                                written.seek(offset)
                                ordered.write(written.readline())
                finished = run.out is not None and out_path != run.out and run.status == "complete"
                if finished:
                    # Parquet first, then the manifest that calls it complete, then the journal goes:
                    # cut short anywhere, the journal still holds every record and --resume continues it.
                    _journal_to_parquet(out_path, run.out)
                self.write_manifest(run.out or out_path)
                if finished:
                    out_path.unlink()

    def _resumable_records(self, out_path: Path, manifest_file: Path, order: list[tuple[str, Optional[str]]],
                           by_id: dict[str, Layout], invalid: set[str]) -> dict[int, int]:
        """Successful records of an earlier run in ``out_path`` that are still candidates: the
        candidate's position in ``order`` -> the byte offset of its record in ``out_path``.

        Images are matched by their resolved path, so resuming with the folder spelled another
        way (absolute instead of relative) finds them; kept records take this run's spelling.
        A record of a layout that changed since (its ``layout_sha256`` differs, or is not
        recorded) is scored again. Raises InputError before anything is rewritten when the file
        or its run do not fit: a non-empty file without its manifest (it may be anything, such
        as the layouts file itself), other models or settings, and records of layouts that this
        run's layouts file does not have, which rewriting the file would drop.
        """
        if out_path.stat().st_size == 0:
            return {}
        # The manifest first: without it, a one-line file without a newline would be taken
        # for a cut-off record and replaced.
        earlier_run = check_resumable(manifest_file, self.manifest()).get("run")
        known = set(by_id) | invalid | set(self._layout_hashes)
        here = os.getcwd()
        # Relative paths of the earlier run are relative to its working directory; manifests from
        # before "cwd" was recorded are taken to share this one.
        earlier_cwd = earlier_run.get("cwd") if isinstance(earlier_run, dict) else None
        earlier_cwd = earlier_cwd if isinstance(earlier_cwd, str) else here
        current = {(layout_id, _resolved(path, here)): position for position, (layout_id, path) in enumerate(order)
                   if layout_id in by_id and path is not None}
        hashes: dict[str, str] = {}  # this run's layout_sha256, of the layouts the file has records of
        done: dict[int, int] = {}
        strangers: dict[str, None] = {}
        changed: set[str] = set()
        gone = 0
        for offset, record in iter_scores(out_path):
            layout_id = record["layout_id"]
            if layout_id not in known:
                strangers[layout_id] = None
                continue
            if strangers or record["error"] is not None or record["image"] is None:
                continue  # once a stranger is found, the rest is only read for its other strangers and bad lines
            position = current.get((layout_id, _resolved(record["image"], earlier_cwd)))
            if position is None:
                gone += 1
                continue
            if layout_id not in hashes:
                hashes[layout_id] = layout_sha256(by_id[layout_id])
            if record.get(LAYOUT_HASH_KEY) != hashes[layout_id]:
                changed.add(layout_id)
            else:
                done[position] = offset
        if strangers:
            first = next(iter(strangers))
            raise InputError(
                f"{out_path}: holds records of {_count(len(strangers), 'layout')} that {self.layouts_source} does not "
                f"have (first: {first!r}), which --resume would drop; resume with the layouts file of the "
                "earlier run, or pass --overwrite or another --out"
            )
        if changed:
            shown = ", ".join(repr(x) for x in sorted(changed)[:3]) + (", ..." if len(changed) > 3 else "")
            self._resume_warnings.append(
                f"{out_path}: {_count(len(changed), 'layout')} changed since the earlier run or cannot be checked "
                f"(no layout_sha256 in its records): {shown}; their candidates were scored again"
            )
        if gone:
            self._resume_warnings.append(
                f"{out_path}: {_count(gone, 'record')} of images no longer among the candidates in {self.run_images} "
                "were dropped"
            )
        return done


    # -- provenance -----------------------------------------------------------------------------

    def manifest(self) -> dict:
        """Tool version, model specs and fingerprints, weights, settings and times of this run."""
        import torch

        cfg = self.config
        data: dict[str, Any] = {
            "tool": "clis",
            "version": clis.__version__,
            "created": self.started,
            "updated": _now(),
            "models": {
                "image_model": None if self.encoder is None else {"spec": cfg.image_model,
                                                                  **(self.encoder.loaded.fingerprint or {})},
                "judge": None if self.encoder is not None else self.image_scorer.manifest(),
                "detector": None if self.detector is None else {"spec": cfg.detector, **(self.detector.loaded.fingerprint or {})},
                "layout": self.layout_scorer.manifest() if self.layout_scorer is not None else None,
            },
            "weights": {
                "clis_i": cfg.weights.for_judge(cfg.judge.name),
                "clis": cfg.combine.model_dump(),
                "detection_used": self.detector is not None,
                "layout_score_used": self.layout_scorer is not None,
            },
            "settings": cfg.model_dump(mode="json", by_alias=True),
            "grounding_logit_scale": self.image_scorer.logit_scale,
            "truncated_texts": self._truncated_texts(),
            "truncation": self.truncation(),
            "environment": {"python": platform.python_version(), "torch": torch.__version__, "device": cfg.device},
        }
        state = getattr(self, "_run_state", None)
        if state is not None:
            data["run"] = dict(state)
            discovery = getattr(self, "discovery", None)
            if discovery is not None:
                data["run"]["layouts_without_images"] = list(discovery.missing)
                data["run"]["orphan_images"] = [str(p) for p in discovery.orphans]
            data["run"]["layout_score_errors"] = dict(self.layout_errors)
            data["run"]["generation"] = self.generation
            if self.encoder is None:
                data["run"]["judge_requests"] = self.image_scorer.stats()
        return data

    def write_manifest(self, out: str | Path) -> Path:
        return write_text_atomic(manifest_path(out), jsonio.dumps(self.manifest(), indent=2))

    def close(self) -> None:
        if self.text_cache is not None:
            self.text_cache.close()
        else:
            self.image_scorer.close()
        if self.layout_scorer is not None and hasattr(self.layout_scorer, "close"):
            self.layout_scorer.close()


def _load_or_explain(spec: str, task: str, cfg: ScoreConfig, what: str, remedy: str,
                     dtype: Optional[str] = None, cpu: bool = False) -> Any:
    """``load_model`` (on cfg.device, or the CPU with ``cpu``) whose missing-weights error names
    the flag that fixes it, on one line."""
    from clis.models import load_model

    try:
        return load_model(spec, task, device="cpu" if cpu else cfg.device, dtype=dtype)
    except ModelUnavailableError as exc:
        raise unavailable_with_remedy(exc, f"{what} for {spec} are not available", remedy) from None
