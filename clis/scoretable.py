"""Parquet score files: ``scores.jsonl`` as a table, one row per candidate.

Every top-level key of a record (``docs/ARCHITECTURE.md``, "scores.jsonl") is a column, the
instances are one nested ``list<struct>`` column (the union of the fields of the CLIP scorer and
of the VLM judges), ``detection`` a nullable struct in each instance and ``judge`` a nullable
struct, so pandas, DuckDB and HF ``datasets`` read the file as it is::

    SELECT layout_id, clis FROM 'scores.parquet' ORDER BY clis DESC
    SELECT layout_id, i.object_id, i.score FROM 'scores.parquet', UNNEST(instances) AS t(i)

A typed table cannot tell an absent key from a null one, nor keep a record's key order or a key
that no column holds (a user's ``generator`` field). One bookkeeping column, ``_clis``, keeps
what reading back needs to give exactly the dict that ``json.loads`` gives for the record's
JSONL line:

- ``keys``: the record's keys in order, as JSON; a key whose value is an object is written
  ``[key, [its keys]]``, recursively, so ``{"judge": {"name": "vqa", "global": null}}`` has
  ``[["judge", ["name", "global"]]]``;
- ``instance_keys``: the same, one entry per instance;
- ``extra``: JSON of the values no column holds as they are (unknown keys, an integer in a
  float column, a string where a number belongs), null for records ``clis score`` writes.

The row carries its own description, so a copy that a query engine filters and writes again
(DuckDB ``COPY ... TO``) still reads back exactly. The Parquet key-value metadata names the
schema version, ``clis.schema = clis.scores/1``.

Reading validates what the JSONL path validates: no NaN or infinity anywhere, no value from
a column that JSON cannot hold (timestamps, bytes, decimals), UTF-8 strings, and a ``_clis``
whose every key is a column or an extra. Compression hides sizes, so a row group over a quarter of
``CLIS_MAX_INPUT_BYTES`` (uncompressed, by the metadata) or a row over 1/64 of it (decoded)
is refused, and rows are decoded in slices of at most that size.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "scores.parquet"
    >>> record = {"layout_id": "tea", "image": "images/tea/0.png", "clis": 71.2, "clis_i": 68.0,
    ...           "clis_l": 77.6, "global": 31.5, "error": None, "generator": "gligen",
    ...           "instances": [{"object_id": "cup-1", "score": 72.3, "detection": None}]}
    >>> with ParquetRecordWriter(path) as writer:
    ...     writer.write(record)
    >>> list(iter_parquet_records(path)) == [record]
    True
    >>> import pandas as pd
    >>> pd.read_parquet(path)[["layout_id", "clis"]].values.tolist()
    [['tea', 71.2]]
"""

from __future__ import annotations

import json
import math
import os
import stat
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clis import jsonio
from clis.errors import InputError

SCHEMA_VERSION = "clis.scores/1"
SCHEMA_KEY = b"clis.schema"
BOOKKEEPING = "_clis"
DEFAULT_ROW_GROUP = 4096
# Rows decoded at a time when reading: memory is one batch, whatever the file's size.
READ_BATCH = 1024

_DETECTION = pa.struct([
    ("found", pa.bool_()), ("iou", pa.float64()), ("score", pa.float64()), ("count", pa.int64()),
    ("expected_count", pa.int64()), ("count_match", pa.bool_()),
])  # fmt: skip
# An ACP term: the VLM's description and the rater's 0..5 rating of it.
_ACP_TERM = pa.struct([("description", pa.string()), ("rating", pa.float64()), ("explanation", pa.string())])
INSTANCE = pa.struct([
    ("object_id", pa.string()), ("label", pa.string()), ("phrase", pa.string()), ("bbox", pa.list_(pa.float64())),
    ("region", pa.float64()), ("grounding", pa.float64()), ("detection", _DETECTION), ("score", pa.float64()),
    # the VLM judges' terms (docs/clis-i.md, "Judges"): null in CLIP records
    ("context", pa.float64()), ("crop", pa.float64()),
    ("vqa", pa.struct([("context", pa.float64()), ("crop", pa.float64())])),
    ("acp", pa.struct([("context", _ACP_TERM), ("crop", _ACP_TERM)])),
])  # fmt: skip
# judge.global is {"p_yes"} for vqa and an ACP term for acp: one struct holds both.
JUDGE = pa.struct([
    ("name", pa.string()),
    ("global", pa.struct([("p_yes", pa.float64()), ("description", pa.string()), ("rating", pa.float64()),
                          ("explanation", pa.string())])),
])  # fmt: skip
_KEYS = pa.struct([("keys", pa.string()), ("instance_keys", pa.list_(pa.string())), ("extra", pa.string())])
SCHEMA = pa.schema(
    [
        ("layout_id", pa.string()), ("image", pa.string()),
        ("clis", pa.float64()), ("clis_i", pa.float64()), ("clis_l", pa.float64()), ("global", pa.float64()),
        ("instances", pa.list_(INSTANCE)), ("error", pa.string()), ("layout_sha256", pa.string()),
        ("judge", JUDGE), (BOOKKEEPING, _KEYS),
    ],
    metadata={SCHEMA_KEY: SCHEMA_VERSION.encode()},
)  # fmt: skip
_RECORD = pa.struct([field for field in SCHEMA if field.name not in (BOOKKEEPING, "instances")])
_MISSING = object()
# The deepest object a record holds is three levels down (instances[k].acp.context); a key
# shape nested deeper describes no column, and recursing into it could reach Python's limit.
MAX_SHAPE_DEPTH = 8


def is_parquet(path: str | os.PathLike) -> bool:
    """True for a ``.parquet`` name, or a file that starts with Parquet's ``PAR1`` magic.

    >>> is_parquet("runs/scores.parquet"), is_parquet("runs/scores.jsonl")
    (True, False)
    """
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return True
    try:
        # only a regular file is opened: opening a FIFO would wait for a writer
        if not stat.S_ISREG(path.stat().st_mode):
            return False
        with path.open("rb") as handle:
            return handle.read(4) == b"PAR1"
    except (OSError, ValueError):
        return False


def is_score_table(path: str | os.PathLike) -> bool:
    """True for a Parquet file that is a scores table (its ``clis.schema`` metadata, or the
    ``_clis`` column a copy keeps), as opposed to another Parquet table such as a ratings one."""
    if not is_parquet(path):
        return False
    try:
        schema = pq.read_schema(str(path))
    except (pa.ArrowException, OSError, ValueError):
        return False
    version = (schema.metadata or {}).get(SCHEMA_KEY, b"")
    return version.startswith(b"clis.scores/") or BOOKKEEPING in schema.names


# -- writing --------------------------------------------------------------------------------


# An encoder turns a value into ``(column value, exact, key shape)``: exact when the column gives
# the value back as it is (else the column gets what it can hold of it: an integer as a float,
# or null); the key shape (see the module docstring) for an object, else None. They are built
# once per column type: checking Python types is most of the cost of writing a row.
Encoder = Callable[[Any], tuple[Any, bool, Any]]


def _float(value: Any) -> tuple[Any, bool, Any]:
    if type(value) is float:
        if not math.isfinite(value):  # as jsonio.dumps: a NaN never reaches a scores file
            raise ValueError(f"non-finite number {value!r} in a score record")
        return value, True, None
    if value is None:
        return None, True, None
    number = jsonio.finite_number(value)
    return (number if number is not None and number == value else None), False, None


def _int(value: Any) -> tuple[Any, bool, Any]:
    if value is None or (type(value) is int and -(2**63) <= value < 2**63):
        return value, True, None
    return None, False, None


def _bool(value: Any) -> tuple[Any, bool, Any]:
    return (value, True, None) if value is None or type(value) is bool else (None, False, None)


def _str(value: Any) -> tuple[Any, bool, Any]:
    # JSON allows a lone surrogate (\ud800), which UTF-8 (and so Parquet) cannot hold
    if value is None or (type(value) is str and (value.isascii() or _utf8(value))):
        return value, True, None
    return None, False, None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _list_encoder(item: Encoder) -> Encoder:
    def encode(value: Any) -> tuple[Any, bool, Any]:
        if value is None:
            return None, True, None
        if type(value) is not list:
            return None, False, None
        out, exact = [], True
        for element in value:
            encoded, fits, _ = item(element)
            out.append(encoded)
            exact = exact and fits
        return out, exact, None

    return encode


def _struct_encoder(fields: dict[str, Encoder]) -> Encoder:
    def encode(value: Any) -> tuple[Any, bool, Any]:
        if value is None:
            return None, True, None
        if type(value) is not dict:
            return None, False, None
        out, shape = {}, []
        for key, item in value.items():
            field = fields.get(key)
            if field is None:
                return None, False, None
            encoded, exact, sub = field(item)
            if not exact:
                return None, False, None
            out[key] = encoded
            shape.append(key if sub is None else (key, sub))
        return out, True, tuple(shape)

    return encode


def _encoders(kind: pa.StructType) -> dict[str, Encoder]:
    return {field.name: _encoder(field.type) for field in kind}


def _encoder(kind: pa.DataType) -> Encoder:
    if pa.types.is_struct(kind):
        return _struct_encoder(_encoders(kind))
    if pa.types.is_list(kind):
        return _list_encoder(_encoder(kind.value_type))
    for test, encoder in ((pa.types.is_floating, _float), (pa.types.is_integer, _int), (pa.types.is_boolean, _bool),
                          (pa.types.is_string, _str)):
        if test(kind):
            return encoder
    raise TypeError(f"no encoding for {kind}")


def _keyed(obj: dict, fields: dict[str, Encoder], skip: str = "") -> tuple[dict, tuple, dict]:
    """``(column values, key shape, extras)`` of a record or instance: every key is in the
    shape, in order; a value that its column cannot give back exactly is also in extras."""
    out: dict[str, Any] = {}
    shape: list[Any] = []
    extra: dict[str, Any] = {}
    for key, item in obj.items():
        if type(key) is not str:
            raise TypeError(f"score record key {key!r} is not a string")
        field = fields.get(key)
        if key == skip or field is None:
            if key != skip:
                extra[key] = item
            shape.append(key)
            continue
        encoded, exact, sub = field(item)
        out[key] = encoded
        if exact:
            shape.append(key if sub is None else (key, sub))
        else:
            extra[key] = item
            shape.append(key)
    return out, tuple(shape), extra


@lru_cache(maxsize=4096)
def _shape_text(shape: tuple) -> str:
    return json.dumps(shape, ensure_ascii=False, separators=(",", ":"))


def encode_record(record: dict[str, Any]) -> dict[str, Any]:
    """The table row of ``record`` (a dict of :data:`SCHEMA`'s columns)."""
    if not isinstance(record, dict):
        raise TypeError(f"a score record is a dict, got {type(record).__name__}")
    row, shape, extra = _keyed(record, _RECORD_FIELDS, skip="instances")
    instances = record.get("instances", _MISSING)
    instance_keys = None
    if isinstance(instances, list) and all(isinstance(i, dict) for i in instances):
        encoded, instance_keys, instance_extra = [], [], {}
        for k, instance in enumerate(instances):
            values, keys, more = _keyed(instance, _INSTANCE_FIELDS)
            encoded.append(values)
            instance_keys.append(_shape_text(keys))
            if more:
                instance_extra[str(k)] = more
        row["instances"] = encoded
        extras = {"record": extra, "instances": instance_extra} if instance_extra else {"record": extra}
    else:
        row["instances"] = None
        if instances is not _MISSING:  # null, or not a list of objects: kept as it is
            extra["instances"] = instances
        extras = {"record": extra}
    has_extra = bool(extra) or len(extras) > 1
    row[BOOKKEEPING] = {
        "keys": _shape_text(shape), "instance_keys": instance_keys,
        "extra": jsonio.dumps(extras) if has_extra else None,
    }  # fmt: skip
    return row


_RECORD_FIELDS = _encoders(_RECORD)
_INSTANCE_FIELDS = _encoders(INSTANCE)


class ParquetRecordWriter:
    """Write score records to a Parquet file, ``row_group_size`` rows per row group.

    Rows are buffered and written a row group at a time, so memory holds one row group
    whatever the run's size. Writes to ``path`` itself (the caller replaces files atomically).
    Use as a context manager, or call :meth:`close`; a file closed without any record is a
    valid empty table.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "s.parquet"
    >>> with ParquetRecordWriter(path, row_group_size=2) as writer:
    ...     for n in range(5):
    ...         writer.write({"layout_id": "a", "image": f"{n}.png", "clis": float(n), "instances": []})
    >>> pq.ParquetFile(path).metadata.num_row_groups, writer.rows
    (3, 5)
    """

    def __init__(self, path: str | os.PathLike, row_group_size: int = DEFAULT_ROW_GROUP):
        if row_group_size < 1:
            raise ValueError(f"row_group_size must be >= 1, got {row_group_size}")
        self.path = Path(path)
        self.row_group_size = row_group_size
        self.rows = 0
        self._buffer: list[dict[str, Any]] = []
        # zstd: several times smaller than snappy on these repetitive rows, and every reader has it
        self._writer: Optional[pq.ParquetWriter] = pq.ParquetWriter(str(self.path), SCHEMA, compression="zstd")

    def write(self, record: dict[str, Any]) -> None:
        if self._writer is None:
            raise ValueError(f"{self.path}: the writer is closed")
        self._buffer.append(encode_record(record))
        self.rows += 1
        if len(self._buffer) >= self.row_group_size:
            self._flush()

    def write_many(self, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            self.write(record)

    def _flush(self) -> None:
        if self._buffer:
            table = pa.Table.from_pylist(self._buffer, schema=SCHEMA)
            self._writer.write_table(table, row_group_size=self.row_group_size)
            self._buffer = []

    def close(self) -> None:
        if self._writer is None:
            return
        try:
            self._flush()
        finally:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "ParquetRecordWriter":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


# -- reading --------------------------------------------------------------------------------


# Key lists of real records are a few hundred characters and repeat from row to row; a longer
# one is parsed without the cache, which would otherwise keep 4096 of them alive.
SHAPE_CACHE_CHARS = 4096


def _parsed_shape(text: str) -> list:
    if isinstance(text, str) and len(text) <= SHAPE_CACHE_CHARS:
        return _cached_shape(text)
    return _parse_shape(text)


@lru_cache(maxsize=4096)
def _cached_shape(text: str) -> list:
    return _parse_shape(text)


def _parse_shape(text: str) -> list:
    if not isinstance(text, str):
        raise ValueError("not a list of keys")
    shape = jsonio.loads(text)  # a JSONError (a ValueError) for 100k-deep nesting, not RecursionError
    if not isinstance(shape, list):
        raise ValueError("not a list of keys")
    return shape


def _restore(values: Any, shape: list, extra: dict, depth: int = 0) -> dict[str, Any]:
    """The dict a key shape describes, from the column values and the extras.

    Every key is a column (a struct field) or an extra: the writer puts any key that no
    column holds in the extras, so a key found in neither is a corrupt or cut-down copy,
    refused rather than read as null."""
    if depth > MAX_SHAPE_DEPTH:
        raise ValueError(f"keys nested more than {MAX_SHAPE_DEPTH} levels deep")
    if not isinstance(values, dict):
        values = {}
    out: dict[str, Any] = {}
    for entry in shape:
        if isinstance(entry, str):
            key, sub = entry, None
        elif isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) and isinstance(entry[1], list):
            key, sub = entry
        else:
            raise ValueError(f"bad key entry {str(entry)[:80]!r}")
        if key in extra:
            out[key] = extra[key]
        elif key not in values:
            raise ValueError(f"key {key[:80]!r} is neither a column of the table nor in '{BOOKKEEPING}.extra'")
        elif sub is not None:
            if not isinstance(values[key], dict):
                raise ValueError(f"key {key[:80]!r} is listed as an object but its column holds {values[key]!r:.80}")
            out[key] = _restore(values[key], sub, {}, depth + 1)
        else:
            out[key] = values[key]
    return out


def decode_row(row: dict[str, Any]) -> dict[str, Any]:
    """The score record of a table row; ValueError (``field: problem``) for a bad ``_clis``.

    A row without ``_clis`` (a table that another tool wrote) is taken as it is: each
    column is a key, null or not, but for the index pandas may store as a column."""
    keys = row.get(BOOKKEEPING)
    if keys is None:
        return {key: value for key, value in row.items()
                if key != BOOKKEEPING and not (key.startswith("__index_level_") and key.endswith("__"))}
    try:
        shape = _parsed_shape(keys["keys"])
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"field '{BOOKKEEPING}.keys': not the key list of a record: {exc}") from None
    try:
        extras = jsonio.loads(keys["extra"]) if keys.get("extra") is not None else {}
        if not isinstance(extras, dict) or not isinstance(extras.get("record", {}), dict) \
                or not isinstance(extras.get("instances", {}), dict):
            raise ValueError("not an object of record and instance extras")
    except ValueError as exc:
        raise ValueError(f"field '{BOOKKEEPING}.extra': {exc}") from None
    try:
        record = _restore(row, shape, extras.get("record", {}))
    except ValueError as exc:
        raise ValueError(f"field '{BOOKKEEPING}.keys': {exc}") from None
    if "instances" in record and "instances" not in extras.get("record", {}) and record["instances"] is not None:
        instances, instance_keys = record["instances"], keys.get("instance_keys") or []
        if len(instance_keys) != len(instances):
            raise ValueError(f"field '{BOOKKEEPING}.instance_keys': {len(instance_keys)} key lists for "
                             f"{len(instances)} instances")
        instance_extra = extras.get("instances", {})
        for k, more in instance_extra.items():
            if not (k.isdigit() and int(k) < len(instances) and isinstance(more, dict)):
                raise ValueError(f"field '{BOOKKEEPING}.extra': instance extras {k[:20]!r} are not an object of one "
                                 f"of the {len(instances)} instances")
        restored = []
        for k, (values, text) in enumerate(zip(instances, instance_keys)):
            try:
                restored.append(_restore(values, _parsed_shape(text), instance_extra.get(str(k), {})))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"field '{BOOKKEEPING}.instance_keys[{k}]': {exc}") from None
        record["instances"] = restored
    return record


def _open(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(str(path))
    except FileNotFoundError:
        raise InputError(f"{path}: scores file not found") from None
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({' '.join(str(exc).split())[:200]})") from None


def _check_columns(path: Path, parquet: pq.ParquetFile) -> dict[str, str]:
    """Refuse a table that is not a scores table; return the columns JSON cannot hold, with why."""
    metadata = parquet.schema_arrow.metadata or {}
    version = metadata.get(SCHEMA_KEY)
    if version is not None and version.decode("utf-8", "replace") != SCHEMA_VERSION:
        raise InputError(f"{path}: a scores table of schema {version.decode('utf-8', 'replace')!r}; this clis reads "
                         f"{SCHEMA_VERSION!r} (a newer clis wrote it?)")
    names = parquet.schema_arrow.names
    for column in ("layout_id", "image"):
        if column not in names:
            raise InputError(f"{path}: not a scores table: no column {column!r} (columns: "
                             f"{', '.join(names[:12])}{', ...' if len(names) > 12 else ''})")
    # A column of another type is refused where a record takes a value from it, not up front:
    # a copy may carry columns that no record names (DuckDB ``SELECT *, now() AS t``).
    return {field.name: problem for field in parquet.schema_arrow if (problem := _not_json(field.type, 0))}


def _not_json(kind: pa.DataType, depth: int) -> str:
    """Why a column of type ``kind`` cannot hold a JSON value, or "" when it can: a
    timestamp, bytes or a decimal would reach the readers as Python objects that no JSONL
    record has, and that ``parquet_to_jsonl`` cannot write."""
    if depth > MAX_SHAPE_DEPTH:
        return f"nested more than {MAX_SHAPE_DEPTH} levels deep"
    if pa.types.is_dictionary(kind):
        return _not_json(kind.value_type, depth)
    if pa.types.is_struct(kind):
        return next((p for p in (_not_json(f.type, depth + 1) for f in kind) if p), "")
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _not_json(kind.value_type, depth + 1)
    if (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)
            or kind in (pa.float32(), pa.float64(), pa.bool_(), pa.null())):
        return ""
    return f"type {kind} is not a JSON value"


def _row_group_limit() -> int:
    # A row group is decoded at once, and a value inflates several times as Python objects:
    # a quarter of the JSONL file limit (1 GiB by default) bounds one of them.
    return max(1, jsonio.max_input_bytes() // 4)


def _row_limit() -> int:
    # 64 MiB by default: a record of 10,000 instances takes about 3 MB
    return max(1, _row_group_limit() // 16)


def _slices(batch: pa.RecordBatch, first: int, limit: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    """``(first row number, rows)`` of ``batch`` in slices of at most ``limit`` Arrow bytes
    each, so that the Python objects made of one (several times its size) stay bounded;
    ValueError naming the row for one row that alone holds more. Dictionary and run-length
    encoding let a few KB of file decode to far more than the row group metadata claims
    (a 1 MB string in 300 rows: 11 KB of file, 1 MB claimed, 315 MB decoded)."""
    size = batch.nbytes  # of the slice, not of the buffers it shares with the whole batch
    if size <= limit:
        yield first, batch
    elif batch.num_rows == 1:
        raise ValueError(f"row {first}: {size:,} bytes once decoded, over the {limit:,}-byte limit of one row "
                         "(raise CLIS_MAX_INPUT_BYTES, 64x this limit, for such records)")
    else:
        half = batch.num_rows // 2
        yield from _slices(batch.slice(0, half), first, limit)
        yield from _slices(batch.slice(half), first + half, limit)


def _check_row_groups(path: Path, parquet: pq.ParquetFile) -> None:
    """Refuse a row group that claims more uncompressed bytes than the limit: zstd packs 400 MB
    of one repeated character into 23 KB, so the file size alone bounds nothing."""
    limit, first = _row_group_limit(), 1
    for index in range(parquet.metadata.num_row_groups):
        group = parquet.metadata.row_group(index)
        if group.num_rows < 0 or group.total_byte_size > limit:
            raise InputError(
                f"{path}: rows {first}..{first + max(group.num_rows, 1) - 1} (row group {index}) hold "
                f"{group.total_byte_size:,} bytes uncompressed, over the {limit:,}-byte limit of one row group; "
                "write it with smaller row groups, or raise CLIS_MAX_INPUT_BYTES (4x this limit)")
        first += group.num_rows


def _has_nonfinite(array: pa.Array) -> bool:
    """Whether a NaN or an infinity is anywhere in ``array``, nested values included."""
    kind = array.type
    if pa.types.is_floating(kind):
        return len(array) > 0 and pc.any(pc.invert(pc.is_finite(array))).as_py() is True
    if pa.types.is_struct(kind):
        return any(_has_nonfinite(child) for child in array.flatten())  # flatten() applies the parent's nulls
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _has_nonfinite(array.flatten())
    if pa.types.is_dictionary(kind):
        return _has_nonfinite(array.dictionary)
    return False


def _nonfinite_field(value: Any, where: str) -> Optional[tuple[str, float]]:
    """``(field, number)`` of the first NaN or infinity in a decoded record, else None."""
    if type(value) is float:
        return None if math.isfinite(value) else (where, value)
    if isinstance(value, dict):
        items = ((f"{where}.{key}" if where else key, item) for key, item in value.items())
    elif isinstance(value, list):
        items = ((f"{where}[{k}]", item) for k, item in enumerate(value))
    else:
        return None
    for name, item in items:
        found = _nonfinite_field(item, name)
        if found:
            return found
    return None


def _batch_rows(batch: pa.RecordBatch, first: int) -> list[dict[str, Any]]:
    try:
        return batch.to_pylist()
    except UnicodeDecodeError:
        # Parquet does not check that a string column is UTF-8; find the row and column
        for k in range(batch.num_rows):
            for name in batch.schema.names:
                try:
                    batch.column(name).slice(k, 1).to_pylist()
                except UnicodeDecodeError:
                    raise ValueError(f"row {first + k}: field {name!r}: a string that is not UTF-8") from None
        raise


def iter_parquet_rows(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(row number from 1, record)`` for each row of a Parquet scores file, read a batch of
    rows at a time. Not Parquet, a table without ``layout_id``/``image`` columns, a value from a
    column that JSON cannot hold, a row group or row over the size limits, a row whose ``_clis`` is corrupt, or a
    NaN or infinity anywhere (which no JSONL record can hold): one-line InputError naming the
    file (and the row and field). The records are not checked as scores here:
    :func:`clis.pick.check_score_record` does that."""
    path = Path(path)
    jsonio.check_input_file(path, "scores file")
    parquet = _open(path)
    unfit = _check_columns(path, parquet)
    _check_row_groups(path, parquet)
    number = 0
    try:
        for batch in _row_batches(path, parquet):
            try:
                rows = _batch_rows(batch, number + 1)
            except ValueError as exc:
                raise InputError(f"{path}: {exc}") from None
            # JSON has no NaN or Infinity, so a JSONL record cannot hold one: neither may a row.
            # One vectorised test per batch; only a batch that has one is searched row by row.
            nonfinite = any(_has_nonfinite(column) for column in batch.columns)
            for row in rows:
                number += 1
                try:
                    record = decode_row(row)
                except ValueError as exc:
                    raise InputError(f"{path}: row {number}: {exc}") from None
                bad = next((key for key in record if key in unfit), None) if unfit else None
                if bad is not None:
                    raise InputError(f"{path}: row {number}: field {bad[:80]!r}: its column's {unfit[bad]}; a scores "
                                     "table holds what JSON does (strings, numbers, booleans, lists, structs)")
                found = _nonfinite_field(record, "") if nonfinite else None
                if found:
                    raise InputError(f"{path}: row {number}: field {found[0]!r}: expected a finite number or null, "
                                     f"got {found[1]!r}")
                yield number, record
    except (pa.ArrowException, OSError) as exc:  # a truncated or corrupt row group
        raise InputError(f"{path}: row {number + 1}: cannot read the Parquet data "
                         f"({' '.join(str(exc).split())[:200]})") from None


def _row_batches(path: Path, parquet: pq.ParquetFile) -> Iterator[pa.RecordBatch]:
    """The rows in order, in batches of at most READ_BATCH rows that each decode to at most
    :func:`_row_limit` bytes: memory is one such batch, whatever the file's size."""
    limit, first = _row_limit(), 1
    for whole in parquet.iter_batches(batch_size=READ_BATCH):
        try:
            yield from (batch for _, batch in _slices(whole, first, limit))
        except ValueError as exc:
            raise InputError(f"{path}: {exc}") from None
        first += whole.num_rows


def iter_parquet_records(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The records of a Parquet scores file, in row order (see :func:`iter_parquet_rows`)."""
    for _, record in iter_parquet_rows(path):
        yield record


def record_unit(path: str | os.PathLike) -> str:
    """How an error names a record of ``path``: ``row`` in Parquet, ``line`` in JSONL."""
    return "row" if is_parquet(path) else "line"


def iter_score_records(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line or row number, record)`` from a scores file of either format, streamed.

    JSONL lines are parsed with :func:`clis.jsonio.loads`; a line that is not a JSON object is
    an InputError naming the file and line. Blank lines are skipped."""
    path = Path(path)
    if is_parquet(path):
        yield from iter_parquet_rows(path)
        return
    jsonio.check_input_file(path, "scores file")
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise InputError(f"{path}: line {number}: not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                record = jsonio.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}: line {number}: not JSON ({exc.msg})") from None
            except jsonio.JSONError as exc:
                raise InputError(f"{path}: line {number}: {exc}") from None
            if not isinstance(record, dict):
                raise InputError(f"{path}: line {number}: expected a JSON object")
            yield number, record


# -- conversion -----------------------------------------------------------------------------


def _distinct(src: Path, dst: Path) -> None:
    if dst.exists() and src.exists() and os.path.samefile(src, dst):
        raise InputError(f"{dst}: is the input {src}; write the conversion to another file")


def jsonl_to_parquet(src: str | os.PathLike, dst: str | os.PathLike, row_group_size: int = DEFAULT_ROW_GROUP) -> int:
    """Convert a scores.jsonl to a Parquet scores file, streamed; returns the records written.

    >>> import tempfile, pathlib
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (tmp / "s.jsonl").write_text('{"layout_id": "a", "image": "0.png", "clis": 50}\\n')
    >>> jsonl_to_parquet(tmp / "s.jsonl", tmp / "s.parquet"), parquet_to_jsonl(tmp / "s.parquet", tmp / "t.jsonl")
    (1, 1)
    >>> (tmp / "t.jsonl").read_text()
    '{"layout_id": "a", "image": "0.png", "clis": 50}\\n'
    """
    src, dst = Path(src), Path(dst)
    _distinct(src, dst)
    if is_parquet(src):
        raise InputError(f"{src}: already a Parquet file")
    with ParquetRecordWriter(dst, row_group_size) as writer:
        for _, record in iter_score_records(src):
            writer.write(record)
    return writer.rows


def parquet_to_jsonl(src: str | os.PathLike, dst: str | os.PathLike) -> int:
    """Write a Parquet scores file's records as scores.jsonl lines; returns the records written."""
    src, dst = Path(src), Path(dst)
    _distinct(src, dst)
    count = 0
    with dst.open("w", encoding="utf-8") as handle:
        for record in iter_parquet_records(src):
            handle.write(jsonio.dumps(record) + "\n")
            count += 1
    return count
