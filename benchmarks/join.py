"""Read user tables (CSV) and join them to scored candidates, failing loudly on mismatches.

A join that silently drops rows biases a study, so every id in a user table must match
exactly one scored candidate (or layout); otherwise the error names the file, the row and
the id. Image ids match the ``image`` field of scores.jsonl as written, or the same file
spelled absolute instead of relative (to the working directory), or, when that finds nothing,
by trailing path components (``tea/0.png`` matches ``out/images/tea/0.png``) if
exactly one candidate ends that way.
"""

from __future__ import annotations

import io
import os
from pathlib import Path, PurePosixPath
from typing import Iterable

import numpy as np
import pandas as pd

from clis.errors import InputError
from clis.jsonio import read_text


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV file with a header row; ids stay strings."""
    path = Path(path)
    # One line for a missing, non-regular (/dev/zero, a FIFO), oversized or binary file.
    text = read_text(path, "CSV table")
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: not a readable CSV table ({str(exc).splitlines()[0]})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise InputError(f"{path}: no data rows")
    return frame


def require_columns(frame: pd.DataFrame, columns: Iterable[str], path: str | os.PathLike) -> None:
    """Fail naming the first missing column and the columns that do exist."""
    for column in columns:
        if column not in frame.columns:
            raise InputError(
                f"{path}: missing column {column!r} (columns are: {', '.join(map(str, frame.columns))})"
            )


def numeric_column(frame: pd.DataFrame, column: str, path: str | os.PathLike) -> pd.Series:
    """``frame[column]`` as floats; a cell that is not a finite number is an error naming its row.

    Row numbers count data rows from 1 after the header, as a spreadsheet shows them + 1.
    """
    values = pd.to_numeric(frame[column].astype(str).str.strip(), errors="coerce").astype(float)
    # inf, -inf and 1e309 parse as numbers but would turn every correlation into NaN.
    bad = ~np.isfinite(values.to_numpy())
    if bad.any():
        i = int(bad.nonzero()[0][0])
        what = "is not a number" if np.isnan(values.iloc[i]) else "is not a finite number"
        raise InputError(f"{path}: row {i + 1}, column {column!r}: {_cell_text(frame[column].iloc[i])} {what}")
    return values


def _cell_text(value: object, limit: int = 60) -> str:
    """A cell as it is quoted in one-line errors: a 5,000-digit cell is cut, not printed whole."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(str(value)):,} characters)"


def check_unique(values: pd.Series, column: str, path: str | os.PathLike) -> None:
    """Fail on the first duplicated id, naming both rows."""
    seen: dict[str, int] = {}
    for i, value in enumerate(values):
        if value in seen:
            raise InputError(f"{path}: row {i + 1}, column {column!r}: duplicated id {value!r} (first at row {seen[value] + 1})")
        seen[value] = i


def _suffix_index(images: Iterable[str]) -> dict[tuple[str, ...], list[str]]:
    index: dict[tuple[str, ...], list[str]] = {}
    for image in images:
        parts = PurePosixPath(str(image).replace("\\", "/")).parts
        for k in range(1, len(parts) + 1):
            index.setdefault(tuple(parts[-k:]), []).append(image)
    return index


class ImageMatcher:
    """Maps image ids written in a user table to the ``image`` values of scored candidates."""

    def __init__(self, images: Iterable[str], scores_path: str | os.PathLike):
        self.images = list(images)
        self.scores_path = scores_path
        self.exact = set(self.images)
        self._suffixes: dict[tuple[str, ...], list[str]] | None = None
        self._absolutes: dict[str, str] | None = None

    def _absolute(self) -> dict[str, str]:
        if self._absolutes is None:
            paths: dict[str, list[str]] = {}
            for image in self.images:
                paths.setdefault(os.path.abspath(image), []).append(image)
            self._absolutes = {p: names[0] for p, names in paths.items() if len(names) == 1}
        return self._absolutes

    def match(self, image_id: str, where: str) -> str:
        """The scored image that ``image_id`` names; ``where`` (file, row, column) prefixes errors."""
        key = str(image_id).strip()
        if not key:
            raise InputError(f"{where}: empty image id")
        if key in self.exact:
            return key
        # The same file spelled once absolute and once relative (to this directory).
        absolute = self._absolute().get(os.path.abspath(key))
        if absolute is not None:
            return absolute
        if self._suffixes is None:
            self._suffixes = _suffix_index(self.images)
        parts = PurePosixPath(key.replace("\\", "/")).parts
        found = sorted(set(self._suffixes.get(tuple(p for p in parts if p not in (".", "")), [])))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise InputError(f"{where}: image {key!r} is ambiguous in {self.scores_path} (matches {found[0]!r}, {found[1]!r}, ...)")
        raise InputError(f"{where}: image {key!r} matches no scored candidate in {self.scores_path}")


def check_scores_unique(scores: pd.DataFrame, scores_path: str | os.PathLike) -> None:
    """A scores file must not list the same image twice: joins would double count it."""
    duplicated = scores["image"][scores["image"].duplicated()]
    if not duplicated.empty:
        raise InputError(f"{scores_path}: image {duplicated.iloc[0]!r} is scored twice")
