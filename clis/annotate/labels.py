"""``clis.labels/1``: the labels that ``clis annotate`` sites export, read, checked and merged.

One export is one JSON object (see docs/annotate.md, "The export format")::

    {"format": "clis.labels/1", "site": {...}, "annotators": ["alice"], "exported": "...",
     "objects": [{"annotator", "layout_id", "image", "object_id", "label", "time"}, ...],
     "layouts": [{"annotator", "layout_id", "best", "plausible", "time"}, ...]}

:func:`read_labels` reads one or more such files (exports of single annotators, or files that
``clis annotate merge`` wrote) and merges them into one :class:`LabelSet`. Every problem is
one :class:`~clis.errors.InputError` line naming the file, the record (``objects[3]``) and the
field. Files of different sites (different ``site.id``) are refused, and so is an
(annotator, item) pair that two files answer differently.

Example:
    >>> import json, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "alice.json"
    >>> _ = path.write_text(json.dumps({"format": LABELS_FORMAT, "site": {"id": "ab12"},
    ...     "annotators": ["alice"], "exported": "2026-01-01T00:00:00Z",
    ...     "objects": [{"annotator": "alice", "layout_id": "tea", "image": "c/tea/0.png",
    ...                  "object_id": "cup-1", "label": "partly", "time": "2026-01-01T00:00:00Z"}],
    ...     "layouts": []}))
    >>> labels = read_labels([path])
    >>> labels.annotators, list(labels.objects["label"]), len(labels.layouts)
    (['alice'], ['partly'], 0)
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from clis import jsonio
from clis.errors import InputError

if TYPE_CHECKING:
    import pandas

LABELS_FORMAT = "clis.labels/1"
LABEL_VALUES = ("yes", "partly", "no")
PLAUSIBLE_VALUES = ("yes", "no")

OBJECT_COLUMNS = ("annotator", "layout_id", "image", "object_id", "label", "time")
LAYOUT_COLUMNS = ("annotator", "layout_id", "best", "plausible", "time")
TOP_KEYS = ("format", "site", "annotators", "exported", "objects", "layouts")

# What makes two records the same item, and what is their answer.
_OBJECT_KEY = ("annotator", "layout_id", "image", "object_id")
_OBJECT_ANSWER = ("label",)
_LAYOUT_KEY = ("annotator", "layout_id")
_LAYOUT_ANSWER = ("best", "plausible")


@dataclass
class LabelSet:
    """The labels of one site, from one or more files, merged."""

    site: dict
    annotators: list[str]
    objects: "pandas.DataFrame"  # columns: annotator, layout_id, image, object_id, label, time, where
    layouts: "pandas.DataFrame"  # columns: annotator, layout_id, best, plausible, time, where
    sources: list[str] = field(default_factory=list)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_time(value: str) -> dt.datetime:
    """An ISO-8601 time (``Z`` or an offset; a time without one is read as UTC), as UTC."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc)


def _check_time(value: Any, where: str, name: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{where}: field '{name}': expected an ISO-8601 time string, got {_shown(value)}")
    try:
        parse_time(value)
    except ValueError:
        raise InputError(f"{where}: field '{name}': not an ISO-8601 time: {_shown(value)}") from None
    return value


def _check_text(value: Any, where: str, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise InputError(f"{where}: field '{name}': expected a non-empty string, got {_shown(value)}")
    return value


def _check_record(record: Any, where: str, columns: tuple[str, ...], annotators: set[str]) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected a JSON object, got {_shown(record)}")
    for name in columns:
        if name not in record:
            raise InputError(f"{where}: field '{name}': missing")
    extra = sorted(set(record) - set(columns))
    if extra:
        raise InputError(f"{where}: field '{extra[0]}': unknown field (a {LABELS_FORMAT} record has {', '.join(columns)})")
    checked = {}
    for name in columns:
        value = record[name]
        if name == "time":
            checked[name] = _check_time(value, where, name)
        elif name == "label":
            if value not in LABEL_VALUES:
                raise InputError(f"{where}: field 'label': expected one of {', '.join(LABEL_VALUES)}, got {_shown(value)}")
            checked[name] = value
        elif name == "plausible":
            if value is not None and value not in PLAUSIBLE_VALUES:
                raise InputError(
                    f"{where}: field 'plausible': expected one of {', '.join(PLAUSIBLE_VALUES)} or null, got {_shown(value)}"
                )
            checked[name] = value
        elif name == "best":
            if value is not None and (not isinstance(value, str) or not value):
                raise InputError(f"{where}: field 'best': expected an image string or null, got {_shown(value)}")
            checked[name] = value
        else:
            checked[name] = _check_text(value, where, name)
    if checked["annotator"] not in annotators:
        raise InputError(f"{where}: field 'annotator': {checked['annotator']!r} is not listed in 'annotators'")
    if columns == LAYOUT_COLUMNS and checked["best"] is None and checked["plausible"] is None:
        raise InputError(f"{where}: field 'best': a layout record answers 'best' or 'plausible' (both are null)")
    return checked


def check_export(data: Any, source: str) -> dict[str, Any]:
    """``data`` (one parsed file) checked as ``clis.labels/1``; InputError naming ``source``,
    the record and the field. Returns the checked object (records as plain dicts)."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: not a {LABELS_FORMAT} file (expected a JSON object)")
    if data.get("format") != LABELS_FORMAT:
        raise InputError(f"{source}: field 'format': expected {LABELS_FORMAT!r}, got {_shown(data.get('format'))}")
    for name in TOP_KEYS:
        if name not in data:
            raise InputError(f"{source}: field '{name}': missing")
    site = data["site"]
    if not isinstance(site, dict):
        raise InputError(f"{source}: field 'site': expected an object, got {_shown(site)}")
    if not isinstance(site.get("id"), str) or not site["id"]:
        raise InputError(f"{source}: field 'site.id': expected a non-empty string, got {_shown(site.get('id'))}")
    annotators = data["annotators"]
    if not isinstance(annotators, list):
        raise InputError(f"{source}: field 'annotators': expected a list of strings, got {_shown(annotators)}")
    for k, name in enumerate(annotators):
        _check_text(name, source, f"annotators[{k}]")
    if len(set(annotators)) != len(annotators):
        raise InputError(f"{source}: field 'annotators': lists an annotator twice")
    _check_time(data["exported"], source, "exported")
    checked: dict[str, Any] = {"site": site, "annotators": list(annotators)}
    for part, columns, key in (("objects", OBJECT_COLUMNS, _OBJECT_KEY), ("layouts", LAYOUT_COLUMNS, _LAYOUT_KEY)):
        records = data[part]
        if not isinstance(records, list):
            raise InputError(f"{source}: field '{part}': expected a list of records, got {_shown(records)}")
        seen: dict[tuple, int] = {}
        rows = []
        for k, record in enumerate(records):
            row = _check_record(record, f"{source}: {part}[{k}]", columns, set(annotators))
            item = tuple(row[name] for name in key)
            if item in seen:
                raise InputError(
                    f"{source}: {part}[{k}]: field '{key[-1]}': the same item as {part}[{seen[item]}] "
                    f"({', '.join(f'{n}={row[n]!r}' for n in key)}); a file answers each item once"
                )
            seen[item] = k
            rows.append(row)
        checked[part] = rows
    return checked


def _merge_part(merged: dict[tuple, tuple[dict, str]], rows: list[dict], key: tuple[str, ...],
                answer: tuple[str, ...], part: str, source: str) -> None:
    for k, row in enumerate(rows):
        item = tuple(row[name] for name in key)
        if item not in merged:
            merged[item] = (row, f"{source}: {part}[{k}]")
            continue
        first, where = merged[item]
        for name in answer:
            if first[name] != row[name]:
                described = ", ".join(f"{n}={row[n]!r}" for n in key)
                raise InputError(
                    f"{source}: {part}[{k}]: field '{name}': {row[name]!r} conflicts with {first[name]!r} in {where} "
                    f"({described}); keep one of the two files' answers"
                )
        if parse_time(row["time"]) > parse_time(first["time"]):
            merged[item] = (row, f"{source}: {part}[{k}]")


def read_labels(paths: Sequence[str | os.PathLike]) -> LabelSet:
    """Read, check and merge one or more ``clis.labels/1`` files of one site."""
    import pandas as pd

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("no labels file given")
    site: dict | None = None
    site_source = ""
    annotators: set[str] = set()
    objects: dict[tuple, tuple[dict, str]] = {}
    layouts: dict[tuple, tuple[dict, str]] = {}
    for path in paths:
        source = str(path)
        checked = check_export(jsonio.read_json(path, "labels file"), source)
        if site is None:
            site, site_source = checked["site"], source
        elif checked["site"]["id"] != site["id"]:
            raise InputError(
                f"{source}: field 'site.id': {checked['site']['id']!r} is another site than {site['id']!r} of "
                f"{site_source}; labels of different sites cannot be merged"
            )
        annotators.update(checked["annotators"])
        _merge_part(objects, checked["objects"], _OBJECT_KEY, _OBJECT_ANSWER, "objects", source)
        _merge_part(layouts, checked["layouts"], _LAYOUT_KEY, _LAYOUT_ANSWER, "layouts", source)
    # ``where`` (file and record, "alice.json: objects[3]") lets readers name the record a
    # later check refuses; it is not part of the format and is never written.
    object_rows = [{**row, "where": where} for _, (row, where) in sorted(objects.items())]
    layout_rows = [{**row, "where": where} for _, (row, where) in sorted(layouts.items(), key=lambda kv: kv[0])]
    return LabelSet(
        site=site or {},
        annotators=sorted(annotators),
        # object columns throughout: an unanswered "best" stays None (pandas' string dtype would make it NaN)
        objects=pd.DataFrame(object_rows, columns=[*OBJECT_COLUMNS, "where"], dtype=object),
        layouts=pd.DataFrame(layout_rows, columns=[*LAYOUT_COLUMNS, "where"], dtype=object),
        sources=[str(p) for p in paths],
    )


def _cell(value: Any) -> Any:
    """A DataFrame cell as JSON: pandas' missing values (NaN, None, NA) become null."""
    try:
        import pandas as pd

        if value is None or (not isinstance(value, str) and pd.isna(value)):
            return None
    except (TypeError, ValueError):
        pass
    return value


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def labels_document(labels: LabelSet) -> dict[str, Any]:
    """The ``clis.labels/1`` object of ``labels`` (records sorted, annotators those present)."""
    objects = [{name: _cell(row[name]) for name in OBJECT_COLUMNS} for row in labels.objects.to_dict("records")]
    layouts = [{name: _cell(row[name]) for name in LAYOUT_COLUMNS} for row in labels.layouts.to_dict("records")]
    objects.sort(key=lambda r: tuple(str(r[n]) for n in _OBJECT_KEY))
    layouts.sort(key=lambda r: tuple(str(r[n]) for n in _LAYOUT_KEY))
    present = {r["annotator"] for r in objects} | {r["annotator"] for r in layouts} | set(labels.annotators)
    return {
        "format": LABELS_FORMAT,
        "site": labels.site,
        "annotators": sorted(present),
        "exported": now_iso(),
        "objects": objects,
        "layouts": layouts,
    }


def write_labels(labels: LabelSet, path: str | os.PathLike) -> None:
    """Write ``labels`` as one ``clis.labels/1`` file (atomically), checked as it is read back."""
    from clis.files import write_text_atomic

    document = labels_document(labels)
    check_export(document, str(path))  # never write a file that read_labels would refuse
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, jsonio.dumps(document, indent=1, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise InputError(f"--out {path}: cannot write the labels ({exc.strerror or exc})") from None
