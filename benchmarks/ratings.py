"""Read human-rating tables as they are published: JSON (a list of records or a dict of
records), CSV and Parquet, with TIFA's and DSG's layouts recognised by their columns.

:func:`read_ratings` returns a :class:`Ratings`: the table, which column names the image,
which groups images by prompt, the target a recognised format rates images by, and for a
per-worker table (DSG's Likert CSV) the individual ratings kept for agreement.

=============== ============================================================================
recognised as   when the columns include
=============== ============================================================================
``tifa``        ``text_id``, ``image_path``, ``human_avg`` (TIFA v1.0's
                ``human_annotations_with_scores.json``): image column ``image_path``, group
                ``text_id``, target ``human_avg``; a ``generator`` column is derived from
                each image id (``coco_669925_mini_dalle`` -> ``mini_dalle``)
``dsg-likert``  ``t2i_model``, ``source_id``, ``worker_id``, ``answer`` (DSG's
                ``tifa160-likert-anns.csv``, one row per image and worker): the ``answer``
                of each image is averaged over its workers; the image gets TIFA's id
                (``image_path`` = ``<source_id>_<generator>.jpg``, ``key`` without
                ``.jpg``); group ``source_id``; target ``answer``
``table``       anything else: image column ``image``, else ``image_path``, else (in a
                JSON dict of records) ``key``; group ``layout_id`` when present
=============== ============================================================================

Every failure is one :class:`clis.errors.InputError` line naming the file, the record or
row, and the field.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "r.json"
    >>> _ = path.write_text('{"a": {"image_path": "a.jpg", "text_id": "p", "human_avg": 4.5}}')
    >>> table = read_ratings(path)
    >>> table.kind, table.image_column, table.group_column, list(table.frame["key"])
    ('tifa', 'image_path', 'text_id', ['a'])
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from clis.errors import InputError
from clis.jsonio import check_input_file, read_json

from benchmarks.join import _cell_text, read_table

WHAT = "ratings table"

TIFA_COLUMNS = ("text_id", "image_path", "human_avg")
DSG_COLUMNS = ("t2i_model", "source_id", "worker_id", "answer")

# DSG names the five TIFA160 generators differently from TIFA's image ids. Checked against
# the data: under this mapping every (source_id, t2i_model) of the DSG CSV names one of the
# 800 TIFA images, and the per-image mean Likert rating tracks TIFA's human_avg.
DSG_TO_TIFA_MODEL = {
    "mini-dalle": "mini_dalle",
    "vq-diffusion": "vq_diffusion",
    "sd1dot1": "stable_diffusion_v1_1",
    "sd1dot5": "stable_diffusion_v1_5",
    "sd2dot1": "stable_diffusion_v2_1",
}

# Columns tried, in this order, as the image id of a table that is neither TIFA nor DSG.
IMAGE_COLUMNS = ("image", "image_path", "key")

# Columns that identify or describe an image, never a metric, whatever they hold.
ID_COLUMNS = ("key", "image", "image_path", "layout_id", "text_id", "source_id", "item_id", "worker_id", "n_ratings")
HUMAN_PREFIX = "human_"


@dataclass
class Ratings:
    """One ratings table, read and recognised."""

    frame: pd.DataFrame
    path: Path
    kind: str  # "tifa", "dsg-likert" or "table"
    layout: str  # "json-list", "json-dict", "csv" or "parquet"
    image_column: str | None
    group_column: str | None
    default_target: str | None
    labels: list[str]  # how errors name each row of ``frame``: "record 3", "record 'k'", "row 3"
    per_worker: pd.DataFrame | None = None  # dsg-likert: image_path, source_id, worker_id, answer
    notes: dict = field(default_factory=dict)

    def where(self, i: int, column: str) -> str:
        noun = "field" if self.layout.startswith("json") else "column"
        return f"{self.path}: {self.labels[i]}, {noun} {column!r}"

    def require(self, column: str, flag: str = "") -> None:
        if column not in self.frame.columns:
            named = f"named by {flag}; " if flag else ""
            raise InputError(f"{self.path}: missing column {column!r} ({named}columns are: "
                             f"{', '.join(map(str, self.frame.columns))})")

    def numeric(self, column: str) -> pd.Series:
        """``column`` as floats; a cell that is not a finite number is an error naming its row."""
        values = _as_numbers(self.frame[column])
        bad = ~np.isfinite(values.to_numpy())
        if bad.any():
            i = int(bad.nonzero()[0][0])
            cell = self.frame[column].iloc[i]
            what = "is not a finite number" if isinstance(_number_or_none(cell), float) else "is not a number"
            raise InputError(f"{self.where(i, column)}: {_cell_text(cell)} {what}")
        return values

    def numeric_columns(self) -> list[str]:
        """Columns whose every cell is a finite number (booleans and lists are not numbers)."""
        return [c for c in self.frame.columns if np.isfinite(_as_numbers(self.frame[c]).to_numpy()).all()]

    def metric_columns(self, exclude: set[str]) -> list[str]:
        """What ``--score`` defaults to: every numeric column except ``exclude`` (the target,
        the image and group columns), :data:`ID_COLUMNS` and columns named ``human_*``."""
        return [c for c in self.numeric_columns()
                if c not in exclude and c not in ID_COLUMNS and not str(c).startswith(HUMAN_PREFIX)]


def _number_or_none(value: object) -> float | None:
    """A cell as a float when it spells a number (``"3"``, ``3``, ``3.5``), else None."""
    if isinstance(value, (bool, np.bool_)) or value is None:
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _as_numbers(column: pd.Series) -> pd.Series:
    numbers = (_number_or_none(v) for v in column)
    return pd.Series([math.nan if n is None else n for n in numbers], index=column.index, dtype=float)


# --- reading the layouts -------------------------------------------------------------------------


def _layout_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    check_input_file(path, WHAT)
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"[", b"{"):
        return "json"
    return "csv"


def _flat_value(value: object, where: str) -> object:
    if isinstance(value, dict):
        raise InputError(f"{where}: a nested object; a ratings record holds numbers, strings and lists of them")
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        raise InputError(f"{where}: a nested list; a ratings record holds numbers, strings and lists of them")
    return value


def _read_json(path: Path, key_column: str) -> tuple[pd.DataFrame, str, list[str]]:
    data = read_json(path, WHAT)
    if isinstance(data, list):
        items = [(None, record) for record in data]
        layout = "json-list"
        labels = [f"record {i + 1}" for i in range(len(items))]
    elif isinstance(data, dict):
        items = list(data.items())
        layout = "json-dict"
        labels = [f"record {_cell_text(k)}" for k, _ in items]
    else:
        raise InputError(f"{path}: a ratings table in JSON is a list or an object of records, found {type(data).__name__}")
    if not items:
        raise InputError(f"{path}: no records")
    rows = []
    for (key, record), label in zip(items, labels):
        if not isinstance(record, dict):
            raise InputError(f"{path}: {label}: expected an object, found {type(record).__name__}")
        row = {name: _flat_value(value, f"{path}: {label}, field {name!r}") for name, value in record.items()}
        if key is not None:
            if key_column in row and str(row[key_column]) != key:
                raise InputError(f"{path}: {label}, field {key_column!r}: {_cell_text(row[key_column])} differs from "
                                 f"the record's key, which becomes column {key_column!r}")
            row = {key_column: key, **row}
        rows.append(row)
    return pd.DataFrame.from_records(rows), layout, labels


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_input_file(path, WHAT)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{path}: not a readable Parquet table ({first})") from None
    for column in table.schema:
        if pa.types.is_struct(column.type) or pa.types.is_map(column.type):
            raise InputError(f"{path}: column {column.name!r} holds nested records ({column.type}); a ratings "
                             "table holds one row per image of numbers, strings and lists of them (reshape a "
                             "per-prompt table such as GenAI-Bench's to one row per image first)")
    frame = table.to_pandas()
    if frame.empty:
        raise InputError(f"{path}: no data rows")
    return frame


def read_frame(path: str | os.PathLike, key_column: str = "key") -> tuple[pd.DataFrame, str, list[str]]:
    """The table in ``path`` as it is written, its layout and a label per row for errors."""
    path = Path(path)
    layout = _layout_of(path)
    if layout == "json":
        frame, layout, labels = _read_json(path, key_column)
    elif layout == "parquet":
        frame = _read_parquet(path)
        labels = [f"row {i + 1}" for i in range(len(frame))]
    else:
        frame = read_table(path)
        labels = [f"row {i + 1}" for i in range(len(frame))]
    frame.columns = [str(c) for c in frame.columns]
    return frame.reset_index(drop=True), layout, labels


# --- recognising the published formats -------------------------------------------------------


def _ids(table: Ratings, column: str) -> None:
    """``column`` as strings; an empty or missing id, or a duplicated one, is an error."""
    seen: dict[str, int] = {}
    values = []
    for i, value in enumerate(table.frame[column]):
        text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()
        if not text:
            raise InputError(f"{table.where(i, column)}: empty image id")
        if text in seen:
            raise InputError(f"{table.where(i, column)}: duplicated id {text!r} (first at {table.labels[seen[text]]})")
        seen[text] = i
        values.append(text)
    table.frame[column] = values


def _tifa_generators(frame: pd.DataFrame) -> list[str] | None:
    names = []
    for image, text_id in zip(frame["image_path"].astype(str), frame["text_id"].astype(str)):
        stem = Path(image).stem
        if not stem.startswith(text_id + "_") or len(stem) == len(text_id) + 1:
            return None
        names.append(stem[len(text_id) + 1:])
    return names


def _dsg(frame: pd.DataFrame, path: Path, layout: str, labels: list[str]) -> Ratings:
    raw = Ratings(frame, path, "dsg-likert", layout, None, None, None, labels)
    answers = raw.numeric("answer")
    images, keys = [], []
    for i, (model, source) in enumerate(zip(frame["t2i_model"], frame["source_id"])):
        if float(answers.iloc[i]) != round(float(answers.iloc[i])):
            raise InputError(f"{raw.where(i, 'answer')}: {_cell_text(frame['answer'].iloc[i])} is not a whole "
                             "Likert rating")
        name = DSG_TO_TIFA_MODEL.get(str(model).strip())
        if name is None:
            raise InputError(f"{raw.where(i, 't2i_model')}: unknown generator {_cell_text(model)} (DSG's TIFA160 "
                             f"generators are {', '.join(DSG_TO_TIFA_MODEL)})")
        source = str(source).strip()
        if not source:
            raise InputError(f"{raw.where(i, 'source_id')}: empty prompt id")
        keys.append(f"{source}_{name}")
        images.append(f"{source}_{name}.jpg")
    per_worker = pd.DataFrame({
        "image_path": images, "key": keys, "source_id": frame["source_id"].astype(str).str.strip().to_numpy(),
        "generator": [DSG_TO_TIFA_MODEL[str(m).strip()] for m in frame["t2i_model"]],
        "t2i_model": frame["t2i_model"].astype(str).str.strip().to_numpy(),
        "worker_id": frame["worker_id"].astype(str).str.strip().to_numpy(),
        "answer": answers.to_numpy(),
    })
    twice = per_worker.duplicated(["image_path", "worker_id"]).to_numpy().nonzero()[0]
    if twice.size:
        i = int(twice[0])
        raise InputError(f"{raw.where(i, 'worker_id')}: worker {per_worker['worker_id'].iloc[i]!r} rates image "
                         f"{per_worker['image_path'].iloc[i]!r} twice")
    grouped = per_worker.groupby("image_path", sort=False)
    aggregated = grouped[["key", "source_id", "generator", "t2i_model"]].first()
    aggregated["answer"] = grouped["answer"].mean()
    aggregated["n_ratings"] = grouped.size()
    aggregated = aggregated.reset_index()
    return Ratings(aggregated, path, "dsg-likert", layout, "image_path", "source_id", "answer",
                   [f"image {v!r}" for v in aggregated["image_path"]], per_worker=per_worker)


def read_ratings(path: str | os.PathLike, *, image_column: str | None = None) -> Ratings:
    """Read and recognise a ratings table (see the module docstring).

    ``image_column`` names the column that identifies the image where automatic
    recognition would pick another (or none)."""
    path = Path(path)
    frame, layout, labels = read_frame(path)
    columns = set(frame.columns)
    if all(c in columns for c in DSG_COLUMNS):
        table = _dsg(frame, path, layout, labels)
    elif all(c in columns for c in TIFA_COLUMNS):
        table = Ratings(frame, path, "tifa", layout, "image_path", "text_id", "human_avg", labels)
        table.frame["text_id"] = table.frame["text_id"].astype(str)
        if "generator" not in columns:
            generators = _tifa_generators(table.frame)
            if generators is not None:
                table.frame["generator"] = generators
    else:
        # ``key`` is an image id only where it is the key of a JSON dict of records.
        tried = IMAGE_COLUMNS if layout == "json-dict" else IMAGE_COLUMNS[:-1]
        found = next((c for c in tried if c in columns), None)
        group = "layout_id" if "layout_id" in columns else None
        table = Ratings(frame, path, "table", layout, found, group, None, labels)
    if image_column is not None:
        table.require(image_column, "--image-column")
        table.image_column = image_column
    if table.image_column is not None:
        _ids(table, table.image_column)
    if table.group_column is not None:
        table.frame[table.group_column] = table.frame[table.group_column].astype(str).str.strip()
    return table


# --- agreement between workers ---------------------------------------------------------------------


def inter_annotator(per_worker: pd.DataFrame) -> tuple[list[dict], list[dict]]:
    """Agreement of the workers of a per-worker table (``image_path``, ``worker_id``, ``answer``).

    Returns ``(summary, pairs)``: Fleiss' kappa (``statsmodels``) over the images that every
    worker rated, and for each pair of workers the quadratic-weighted Cohen's kappa
    (``sklearn``) and Spearman's rho (``scipy``) on the images both rated, with their means
    in the summary."""
    from scipy import stats
    from sklearn.metrics import cohen_kappa_score
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    pivot = per_worker.pivot(index="image_path", columns="worker_id", values="answer")
    workers = [str(w) for w in pivot.columns]
    full = pivot.dropna()
    summary = []
    if len(full) >= 2 and len(workers) >= 2:
        counts, _ = aggregate_raters(full.to_numpy().astype(int))
        kappa = float(fleiss_kappa(counts, method="fleiss"))
    else:
        kappa = None
    summary.append({"statistic": "fleiss_kappa", "value": kappa, "n_images": int(len(full)),
                    "n_workers": len(workers), "library": "statsmodels.stats.inter_rater.fleiss_kappa",
                    "note": f"images rated by all {len(workers)} workers"})
    pairs = []
    for a, b in combinations(pivot.columns, 2):
        both = pivot[[a, b]].dropna()
        x, y = both[a].to_numpy(), both[b].to_numpy()
        varied = len(both) >= 2 and np.ptp(x) > 0 and np.ptp(y) > 0
        pairs.append({
            "worker_a": str(a), "worker_b": str(b), "n_images": int(len(both)),
            "cohen_kappa_quadratic": float(cohen_kappa_score(x.astype(int), y.astype(int), weights="quadratic"))
            if varied else None,
            "spearman": float(stats.spearmanr(x, y).statistic) if varied else None,
        })
    for key, label, library in (("cohen_kappa_quadratic", "cohen_kappa_quadratic_mean", "sklearn.metrics.cohen_kappa_score"),
                                ("spearman", "spearman_pairwise_mean", "scipy.stats.spearmanr")):
        values = [p[key] for p in pairs if p[key] is not None]
        summary.append({"statistic": label, "value": float(np.mean(values)) if values else None,
                        "n_images": int(len(pivot)), "n_workers": len(workers), "library": library,
                        "note": f"mean over {len(values)} worker pairs, each on the images both rated"})
    return summary, pairs
