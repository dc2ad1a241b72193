"""Read ``scores.jsonl`` files (written by ``clis score``) into one pandas table.

Parquet score files (``clis score --out scores.parquet``, :mod:`clis.scoretable`) are read
the same way, row for line.

Each candidate becomes a row holding the composite scores and the baselines a study
compares them with, all derived from the record as documented in ``docs/ARCHITECTURE.md``:

============== ==========================================================================
column         meaning
============== ==========================================================================
clis           the composite score (0..100)
clis_i         image-layout agreement, CLIS-I (0..100)
clis_l         layout plausibility, CLIS-L (0..100)
global         CLIP score of the whole image against the caption (the usual CLIPScore)
region         mean over instances of region CLIP (each box against its phrase)
grounding      mean over instances of the grounding score
detection_iou  mean over instances of the detector's IoU with the box (0 where not found)
found_rate     fraction of instances the detector found
============== ==========================================================================

A column is NaN when the record does not carry it (no detector configured, CLIS-L off).
Failed candidates (``error`` set) are kept with ``error`` filled so studies can count them.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clis.errors import InputError
from clis.jsonio import JSONError, loads, read_text

# Score columns in display order: the composite first, then what it is built from.
SCORE_COLUMNS = ("clis", "clis_i", "clis_l", "global", "region", "grounding", "detection_iou", "found_rate")

SCORE_LABELS = {
    "clis": "CLIS",
    "clis_i": "CLIS-I",
    "clis_l": "CLIS-L",
    "global": "global CLIP",
    "region": "region CLIP",
    "grounding": "grounding",
    "detection_iou": "detection IoU",
    "found_rate": "found rate",
}

_TOP_LEVEL = ("clis", "clis_i", "clis_l", "global")


def _number(value: Any, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where}: expected a number or null, found {value!r}")
    return float(value)


def _instance_means(instances: list[Any], where: str) -> dict[str, float]:
    region, grounding, ious, found = [], [], [], []
    for k, inst in enumerate(instances):
        at = f"{where}, field 'instances[{k}]'"
        if not isinstance(inst, dict):
            raise InputError(f"{at}: expected an object")
        region.append(_number(inst.get("region"), f"{at}.region"))
        grounding.append(_number(inst.get("grounding"), f"{at}.grounding"))
        det = inst.get("detection")
        if isinstance(det, dict):
            is_found = bool(det.get("found"))
            found.append(1.0 if is_found else 0.0)
            iou = _number(det.get("iou"), f"{at}.detection.iou")
            # An object the detector missed overlaps its box by nothing.
            ious.append(iou if is_found and not math.isnan(iou) else 0.0)

    def nanmean(values: list[float]) -> float:
        arr = np.asarray(values, dtype=float)
        return float(np.nanmean(arr)) if arr.size and not np.all(np.isnan(arr)) else math.nan

    return {
        "region": nanmean(region),
        "grounding": nanmean(grounding),
        "detection_iou": nanmean(ious),
        "found_rate": nanmean(found),
    }


def record_to_row(record: dict[str, Any], where: str) -> dict[str, Any]:
    """One scores.jsonl record as a flat row (see the module docstring for the columns)."""
    for key in ("layout_id", "image"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise InputError(f"{where}: field '{key}' is missing or not a string")
    row: dict[str, Any] = {"layout_id": record["layout_id"], "image": record["image"]}
    row["error"] = record.get("error") or None
    for key in _TOP_LEVEL:
        row[key] = _number(record.get(key), f"{where}, field '{key}'")
    instances = record.get("instances") or []
    if not isinstance(instances, list):
        raise InputError(f"{where}: field 'instances' must be a list")
    row.update(_instance_means(instances, where))
    row["instance_scores"] = [
        float(i["score"]) for i in instances if isinstance(i, dict) and isinstance(i.get("score"), (int, float))
    ]
    # Extra top-level keys (a user's "generator" column, say) are kept for --by.
    for key, value in record.items():
        if key not in row and key != "instances" and isinstance(value, (str, int, float, bool)):
            row[key] = value
    return row


def _jsonl_records(path: Path):
    """``(line number, where, record)`` of each non-blank line of a scores.jsonl file."""
    # One line for a missing, non-regular (/dev/zero, a FIFO), oversized or binary file.
    text = read_text(path, "scores file")
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc.msg})") from None
        except JSONError as exc:  # NaN, Infinity, 1e309, 100k-deep nesting, 5000-digit integers
            raise InputError(f"{where}: {exc}") from None
        if not isinstance(record, dict):
            raise InputError(f"{where}: expected a JSON object per line")
        yield lineno, where, record


def _parquet_records(path: Path):
    """``(row number, where, record)`` of each row of a Parquet scores file."""
    from clis.scoretable import iter_parquet_rows

    for number, record in iter_parquet_rows(path):
        yield number, f"{path}: row {number}", record


def read_score_records(path: str | os.PathLike) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    """``(line number, record, flat row)`` of every record of a scores.jsonl file; errors name
    the file, the line and the field. A Parquet scores file (:mod:`clis.scoretable`) is read
    the same way by row: the numbers are row numbers, and errors name the row.

    A file that lists one image twice (two runs appended to one file) is refused: every
    study would count that candidate twice."""
    from clis.scoretable import is_parquet

    path = Path(path)
    parquet = is_parquet(path)
    unit = "rows" if parquet else "lines"
    out = []
    first_line: dict[str, int] = {}
    for lineno, where, record in (_parquet_records if parquet else _jsonl_records)(path):
        row = record_to_row(record, where)
        image = row["image"]
        key = os.path.abspath(image) if isinstance(image, str) else image  # "./a.png" is "a.png"
        if key in first_line:
            raise InputError(f"{path}: image {image!r} is scored twice ({unit} {first_line[key]} and {lineno}); "
                             "a scores file holds one record per image (did two runs write into it?)")
        first_line[key] = lineno
        out.append((lineno, record, row))
    if not out:
        raise InputError(f"{path}: no score records")
    return out


def read_scores(path: str | os.PathLike) -> pd.DataFrame:
    """Read a scores.jsonl (or Parquet scores) file into one row per candidate (see :func:`read_score_records`)."""
    return records_frame([row for _, _, row in read_score_records(path)])


def records_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows from :func:`record_to_row` as a DataFrame with every score column present."""
    frame = pd.DataFrame(rows)
    for column in SCORE_COLUMNS:
        if column not in frame:
            frame[column] = math.nan
    return frame


def present_score_columns(frame: pd.DataFrame) -> list[str]:
    """Score columns that hold at least one value (e.g. no detection columns without a detector)."""
    return [c for c in SCORE_COLUMNS if c in frame and frame[c].notna().any()]


def scored(frame: pd.DataFrame) -> pd.DataFrame:
    """Only candidates that were scored without error."""
    return frame[frame["error"].isna()] if "error" in frame else frame
