"""Strict JSON for every file a user hands to clis, and for every file clis writes.

Python's ``json`` module accepts ``NaN``, ``Infinity`` and ``1e999`` (as ``inf``), recurses
once per nesting level (a file nested 100k levels deep raises RecursionError), and raises on
integers of more than 4,300 digits with a message that names no file. ``loads`` turns all of
these into a ``JSONError`` (a ValueError, so every existing ``except ValueError`` handler
that names the file keeps working) with a message of one line; ``dumps`` refuses to write
``NaN``, which no other JSON reader (pandas, DuckDB, browsers) accepts.

Example:
    >>> loads('{"a": [1, 2.5]}')
    {'a': [1, 2.5]}
    >>> loads('{"a": NaN}')
    Traceback (most recent call last):
    ...
    clis.jsonio.JSONError: non-finite number NaN (JSON has no NaN or Infinity)
    >>> loads("[" * 100_000)
    Traceback (most recent call last):
    ...
    clis.jsonio.JSONError: nested too deeply (about 1000 levels or more)
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from clis.errors import InputError

# Python's recursion limit, which json's decoder reaches first: no real file comes near it.
MAX_DEPTH = sys.getrecursionlimit()
# A layouts file of one million layouts is about 1 GB; COCO's train2017 instances file is 450 MB.
# Override with CLIS_MAX_INPUT_BYTES.
DEFAULT_MAX_INPUT_BYTES = 4 * 1024**3

class JSONError(ValueError):
    """A JSON text that clis refuses; ``str()`` is one line, without the file name."""


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONError(f"number {text[:40]} is too large for a float (JSON numbers must be finite)")
    return value


def _no_constant(name: str) -> Any:
    raise JSONError(f"non-finite number {name} (JSON has no NaN or Infinity)")


def loads(text: str | bytes, finite: bool = True) -> Any:
    """``json.loads`` that refuses NaN, Infinity, numbers beyond a float, integers of more
    than ``sys.get_int_max_str_digits()`` digits and nesting deeper than ``MAX_DEPTH``, each
    as one-line ``JSONError``. Syntax errors stay ``json.JSONDecodeError`` (with line and column).

    ``finite=False`` lets NaN and Infinity through, for files that other tools write with them
    (transformers' ``config.json``), where clis reads no score."""
    hooks = {"parse_constant": _no_constant, "parse_float": _finite_float} if finite else {}
    try:
        return json.loads(text, **hooks)
    except RecursionError:
        pass
    except JSONError:
        raise
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # int() past the digit limit
        if "digits" in str(exc):
            limit = sys.get_int_max_str_digits()
            raise JSONError(f"an integer has more than {limit} digits") from None
        raise JSONError(" ".join(str(exc).split())) from None
    raise JSONError(f"nested too deeply (about {MAX_DEPTH} levels or more)")


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite JSON number, else None (strings, booleans, NaN,
    and integers too large for a float, which JSON allows).

    >>> finite_number(3), finite_number(True), finite_number("3"), finite_number(10**400)
    (3.0, None, None, None)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` with ``allow_nan=False``: a NaN that slipped through is a ValueError here,
    never a bare ``NaN`` in a file that pandas, DuckDB and browsers then refuse."""
    kwargs.setdefault("allow_nan", False)
    return json.dumps(value, **kwargs)


def max_input_bytes() -> int:
    import os

    raw = os.environ.get("CLIS_MAX_INPUT_BYTES")
    if raw:
        try:
            return max(1, int(raw))
        except ValueError:
            raise InputError(f"CLIS_MAX_INPUT_BYTES={raw!r}: not a whole number of bytes") from None
    return DEFAULT_MAX_INPUT_BYTES


def check_input_file(path: str | Path, what: str = "file") -> Path:
    """Refuse, as one-line InputError, a ``path`` that is missing, not a regular file
    (``/dev/zero``, a FIFO, a folder) or larger than ``max_input_bytes()``."""
    import stat

    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{path}: is a folder, not a {what}")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path}: not a regular file (a device, FIFO or socket); give a {what}")
    limit = max_input_bytes()
    if info.st_size > limit:
        raise InputError(
            f"{path}: {info.st_size:,} bytes is over the {limit:,}-byte limit for a {what}; "
            "split it, or raise CLIS_MAX_INPUT_BYTES"
        )
    return path


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of a user's file (a BOM is dropped), after ``check_input_file``; binary
    content is one line naming the first bad byte and its offset."""
    path = check_input_file(path, what)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); is it the right file?"
        ) from None


def read_json(path: str | Path, what: str = "JSON file", finite: bool = True) -> Any:
    """``loads(read_text(path), finite)`` with every failure one InputError naming ``path``."""
    text = read_text(path, what)
    try:
        return loads(text, finite)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}") from None
    except JSONError as exc:
        raise InputError(f"{path}: invalid JSON: {exc}") from None
