"""``clis bench buckets`` and ``clis bench downstream``: the paper's bucket experiment.

``buckets`` splits scored candidates by score into buckets (``[70, 75)``, ``[75, 80)``,
``[80, 85]``: each bucket holds its lower edge, the last one also its upper edge) or into
cumulative threshold subsets (``score >= 70``, ``score >= 75``, ...), and writes each as a
COCO instances file that any detector trainer reads. All subsets share one category list,
so category ids mean the same thing in every subset and the trained detectors compare.

``downstream`` reads the accuracy the user measured per bucket (a CSV) and reports how it
moves with the bucket's score: Spearman, Kendall and Pearson between the bucket position
and the metric, the top-minus-bottom gain, whether it rises monotonically, and a bar chart
in the style of the paper's bucket figure.

Example:
    >>> assign_buckets(pd.Series([69.0, 70.0, 74.9, 85.0, 90.0]), [70, 75, 80, 85]).tolist()
    [None, '70-75', '70-75', '80-85', None]
    >>> assign_buckets(pd.Series([69.0, 70.0, 74.9, 85.0, 90.0]), [70, 75, 80, 85], open_ends=True).tolist()
    ['<70', '70-75', '70-75', '80-85', '>85']
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from benchmarks import plots
from benchmarks.join import read_table, require_columns, numeric_column
from benchmarks.results import (BenchResult, MetricDef, ResultRow, check_study_paths, input_ref, models_from_manifest,
                                plot_files, relative_path, write_result)
from benchmarks.scorefile import SCORE_COLUMNS, read_scores, scored
from benchmarks.stats import BootstrapConfig, Estimate, correlations, mean
from clis.errors import InputError
from clis.formats import layouts_to_coco, load_layouts
from clis.jsonio import dumps
from clis.outputs import write_csv_frame

MODES = ("buckets", "thresholds")


def _edge_text(value: float) -> str:
    return f"{value:g}"


def parse_edges(text: str | list[float]) -> list[float]:
    """``"70,75,80"`` -> ``[70.0, 75.0, 80.0]``; edges must be numbers in increasing order."""
    parts = text if isinstance(text, list) else [p for p in str(text).replace(" ", "").split(",") if p]
    try:
        edges = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"--edges {text!r}: expected comma-separated numbers such as 70,75,80,85") from None
    if not edges:
        raise InputError("--edges: give at least one edge")
    # float() reads "nan", "inf" and "1e309"; a NaN edge passes every comparison below unnoticed.
    bad = next((p for p, e in zip(parts, edges) if not math.isfinite(e)), None)
    if bad is not None:
        raise InputError(f"--edges {text!r}: {str(bad)[:40]!r} is not a finite number")
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise InputError(f"--edges {text!r}: edges must increase strictly")
    return edges


def coco_file_name(mode: str, name: str) -> str:
    """``bucket_70-75.json``, ``threshold_ge70.json``: the COCO file of one bucket."""
    safe = re.sub(r"[^0-9A-Za-z.\-]+", "_", name.replace(">=", "ge").replace("<", "lt").replace(">", "gt"))
    return f"{mode[:-1]}_{safe}.json"


def bucket_names(edges: list[float], mode: str = "buckets", open_ends: bool = False) -> list[str]:
    """Names in score order: ``70-75`` for buckets, ``>=70`` for thresholds."""
    if mode == "thresholds":
        return [f">={_edge_text(e)}" for e in edges]
    names = [f"{_edge_text(lo)}-{_edge_text(hi)}" for lo, hi in zip(edges, edges[1:])]
    if open_ends:
        names = [f"<{_edge_text(edges[0])}"] + names + [f">{_edge_text(edges[-1])}"]
    return names


def assign_buckets(values: pd.Series, edges: list[float], open_ends: bool = False) -> pd.Series:
    """The bucket name of each value; ``None`` outside the edges (unless ``open_ends``)."""
    if len(edges) < 2 and not open_ends:
        raise InputError("--edges: buckets need at least two edges (use --mode thresholds for one)")
    names = bucket_names(edges, "buckets", open_ends)
    inner = names[1:-1] if open_ends else names
    out = []
    for value in values:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            out.append(None)
        elif value < edges[0]:
            out.append(names[0] if open_ends else None)
        elif value > edges[-1]:
            out.append(names[-1] if open_ends else None)
        elif value == edges[-1]:
            out.append(inner[-1] if inner else None)
        else:
            index = int(np.searchsorted(edges, value, side="right")) - 1
            out.append(inner[index])
    return pd.Series(out, index=values.index, dtype=object)


def _resolve_image(image: str, scores_path: Path) -> Path:
    """Where an ``image`` field of scores.jsonl points: absolute, from the cwd, or next to the scores file."""
    path = Path(image)
    if path.is_absolute() or path.exists():
        return path.resolve() if path.exists() else path
    beside = scores_path.parent / path
    return beside.resolve() if beside.exists() else path


def _image_size(path: Path) -> tuple[int, int] | None:
    # A scores record may name anything: a FIFO would block Image.open forever, /dev/zero read on.
    if not path.is_file():
        return None
    try:
        with Image.open(path) as img:  # reads the header only
            return img.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _common_root(paths: list[Path]) -> Path:
    absolute = [str(p.resolve()) for p in paths]
    return Path(os.path.commonpath([os.path.dirname(p) for p in absolute])) if absolute else Path.cwd()


def candidates_coco(
    frame: pd.DataFrame, layouts: dict[str, Any], scores_path: Path, score: str, image_root: Path | None,
) -> tuple[dict[str, Any], Path]:
    """One COCO dict holding every candidate of ``frame`` (one image per candidate).

    ``file_name`` is relative to ``image_root`` (by default the deepest folder holding all
    the candidates); each image also carries its ``clis_layout_id`` and ``clis_score``.
    """
    resolved = [_resolve_image(i, scores_path) for i in frame["image"]]
    root = (image_root.resolve() if image_root else _common_root(resolved))
    copies, file_names, sizes = [], {}, {}
    for (image, layout_id), path in zip(zip(frame["image"], frame["layout_id"]), resolved):
        layout = layouts[layout_id]
        key = f"{layout_id}\u0000{image}"  # one layout copy per candidate; ids must be unique
        copies.append(layout.model_copy(update={"id": key}))
        try:
            file_names[key] = Path(os.path.relpath(path.resolve(), root)).as_posix()
        except ValueError:
            file_names[key] = path.as_posix()
        size = _image_size(path)
        if size:
            sizes[key] = size
    coco = layouts_to_coco(copies, file_names=file_names, sizes=sizes)
    for entry, (layout_id, value) in zip(coco["images"], zip(frame["layout_id"], frame[score])):
        entry["clis_layout_id"] = layout_id
        entry["clis_score"] = float(value)
    return coco, root


def subset_coco(coco: dict[str, Any], image_ids: set[int], description: str) -> dict[str, Any]:
    """The images in ``image_ids`` with their annotations; categories are kept whole."""
    return {
        "info": {**coco.get("info", {}), "description": description},
        "images": [i for i in coco["images"] if i["id"] in image_ids],
        "annotations": [a for a in coco["annotations"] if a["image_id"] in image_ids],
        "categories": coco["categories"],
    }


def buckets(
    scores_path: str | os.PathLike,
    layouts_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    edges: list[float],
    score: str = "clis",
    mode: str = "buckets",
    open_ends: bool = False,
    best_only: bool = False,
    image_root: str | os.PathLike | None = None,
    bootstrap: BootstrapConfig = BootstrapConfig(),
    plot: bool = True,
) -> BenchResult:
    """Write one COCO file per bucket, ``buckets.csv``, a results template and ``result.json``."""
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if score not in SCORE_COLUMNS:
        raise InputError(f"unknown score column {score!r}; use one of {', '.join(SCORE_COLUMNS)}")
    scores_path, out_dir = Path(scores_path), Path(out_dir)
    result_path = out_dir / "result.json"
    if len(edges) < 2 and mode == "buckets" and not open_ends:
        raise InputError("--edges: buckets need at least two edges (use --mode thresholds for one)")
    names = bucket_names(edges, mode, open_ends)
    check_study_paths(out_dir, {"SCORES": scores_path, "--layouts": layouts_path, "--image-root": image_root},
                      ["result.json", "buckets.csv", "downstream_template.csv", *plot_files("buckets"),
                       *(coco_file_name(mode, name) for name in names)])
    frame = scored(read_scores(scores_path))
    frame = frame[frame[score].notna()]
    if frame.empty:
        raise InputError(f"{scores_path}: no candidate has a {score!r} score")
    layouts = {layout.id: layout for layout in load_layouts(layouts_path)}
    for lineno, layout_id in enumerate(frame["layout_id"], start=1):
        if layout_id not in layouts:
            raise InputError(f"{scores_path}: layout {layout_id!r} (candidate {frame['image'].iloc[lineno - 1]!r}) is not in {layouts_path}")
    if best_only:
        frame = frame.loc[frame.groupby("layout_id", sort=False)[score].idxmax()]
    frame = frame.reset_index(drop=True)

    coco, root = candidates_coco(frame, layouts, scores_path, score, Path(image_root) if image_root else None)
    if mode == "thresholds":
        members = {name: frame.index[frame[score] >= edge] for name, edge in zip(names, edges)}
    else:
        assigned = assign_buckets(frame[score], edges, open_ends)
        members = {name: frame.index[assigned == name] for name in names}

    out_dir.mkdir(parents=True, exist_ok=True)
    summary, rows = [], []
    for position, name in enumerate(names):
        index = members[name]
        ids = {coco["images"][i]["id"] for i in index}
        subset = subset_coco(coco, ids, f"clis bench buckets: {score} {name}")
        file_name = coco_file_name(mode, name)
        (out_dir / file_name).write_text(dumps(subset) + "\n", encoding="utf-8")
        part = frame.loc[index]
        est = mean(part[score], bootstrap) if len(part) else Estimate(None)
        lo, hi = _bounds(names, edges, mode, open_ends, position)
        summary.append({"bucket": name, "position": position, "lo": lo, "hi": hi, "n_images": int(len(part)),
                        "n_layouts": int(part["layout_id"].nunique()), "n_instances": len(subset["annotations"]),
                        "mean_score": est.value, "coco_file": file_name})
        rows.append(ResultRow(name=name, n_images=int(len(part)), n_layouts=int(part["layout_id"].nunique()),
                              values={"mean_score": est.interval(),
                                      "n_instances": {"value": len(subset["annotations"])}},
                              coco_file=file_name))
    table = pd.DataFrame.from_records(summary)
    write_csv_frame(table, out_dir / "buckets.csv")
    # The user fills in the metric column after training one detector per subset.
    write_csv_frame(table[["bucket", "lo", "hi", "n_images"]].assign(metric=""), out_dir / "downstream_template.csv")

    figures = plots.histogram_with_edges(frame[score], edges, score, out_dir) if plot else []
    result = BenchResult(
        study="buckets",
        inputs=[input_ref("scores", scores_path, result_path), input_ref("layouts", layouts_path, result_path)],
        models=models_from_manifest(scores_path),
        settings={**bootstrap.settings(), "score": score, "mode": mode, "edges": edges, "open_ends": open_ends,
                  "best_only": best_only, "image_root": relative_path(root, result_path),
                  "n_candidates": int(len(frame)), "n_outside": int(len(frame) - sum(len(m) for m in members.values()))
                  if mode == "buckets" else None},
        metrics=[MetricDef(key="mean_score", label=f"mean {score}", description=f"mean {score} of the bucket's candidates"),
                 MetricDef(key="n_instances", label="instances", description="annotated objects in the subset")],
        rows=rows,
        tables={"buckets": table.to_dict(orient="records")},
        figures=figures,
    )
    write_result(result, result_path)
    return result


def _bounds(names: list[str], edges: list[float], mode: str, open_ends: bool, position: int) -> tuple[float | None, float | None]:
    if mode == "thresholds":
        return edges[position], None
    if open_ends:
        padded = [None] + edges + [None]
        return padded[position], padded[position + 1]
    return edges[position], edges[position + 1]


_RANGE = re.compile(r"^\s*(?P<lo>-?\d+(?:\.\d+)?)\s*[-–]\s*(?P<hi>-?\d+(?:\.\d+)?)\s*$")
_THRESHOLD = re.compile(r"^\s*(?:>=|≥|>)?\s*(?P<t>-?\d+(?:\.\d+)?)\s*$")


def bucket_position(table: pd.DataFrame, path: str | os.PathLike) -> pd.Series:
    """The x of each row: the bucket's midpoint (``lo``/``hi`` columns or a ``70-75`` label),
    the ``threshold``, or else the order of first appearance of the ``bucket`` label."""
    positions = _positions(table, path)
    # A label of 400 digits reads as inf, and an inf midpoint makes every correlation NaN.
    bad = ~np.isfinite(positions.to_numpy(dtype=float))
    if bad.any():
        i = int(bad.nonzero()[0][0])
        raise InputError(f"{path}: row {i + 1}: the bucket's score is not a finite number")
    return positions


def _positions(table: pd.DataFrame, path: str | os.PathLike) -> pd.Series:
    if {"lo", "hi"} <= set(table.columns) and (table["lo"].astype(str).str.strip() != "").all() \
            and (table["hi"].astype(str).str.strip() != "").all():
        return (numeric_column(table, "lo", path) + numeric_column(table, "hi", path)) / 2
    if "threshold" in table.columns:
        return numeric_column(table, "threshold", path)
    require_columns(table, ["bucket"], path)
    labels = table["bucket"].astype(str)
    ranges = labels.str.extract(_RANGE)
    if ranges.notna().all().all():
        return (ranges["lo"].astype(float) + ranges["hi"].astype(float)) / 2
    thresholds = labels.str.extract(_THRESHOLD)["t"]
    if thresholds.notna().all():
        return thresholds.astype(float)
    order = {label: i for i, label in enumerate(dict.fromkeys(labels))}
    return labels.map(order).astype(float)


def bucket_labels(table: pd.DataFrame, path: str | os.PathLike) -> pd.Series:
    """The name of each row's bucket for tables and the figure: the ``bucket`` column, else
    ``70-75`` from ``lo``/``hi``, else ``>=70`` from ``threshold`` (the names ``buckets`` uses)."""
    if "bucket" in table.columns:
        return table["bucket"].astype(str)
    if {"lo", "hi"} <= set(table.columns):
        lo, hi = numeric_column(table, "lo", path), numeric_column(table, "hi", path)
        return pd.Series([f"{_edge_text(a)}-{_edge_text(b)}" for a, b in zip(lo, hi)], index=table.index)
    if "threshold" in table.columns:
        return numeric_column(table, "threshold", path).map(lambda t: f">={_edge_text(t)}")
    raise InputError(f"{path}: needs a 'bucket', 'lo' and 'hi', or 'threshold' column (columns are: {', '.join(table.columns)})")


_NOT_METRICS = {"bucket", "lo", "hi", "threshold", "n_images", "n_layouts", "n_instances", "seed", "position"}


def downstream(
    results_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    metric: str | None = None,
    by: str | None = None,
    bootstrap: BootstrapConfig = BootstrapConfig(),
    plot: bool = True,
) -> BenchResult:
    """Analyse the accuracy measured per bucket; write ``result.json`` and the bucket figure."""
    out_dir = Path(out_dir)
    result_path = out_dir / "result.json"
    check_study_paths(out_dir, {"RESULTS": results_path}, ["result.json", *plot_files("downstream")])
    table = read_table(results_path)
    if by is not None:
        require_columns(table, [by], results_path)
    if metric is None:
        numeric = [c for c in table.columns if c not in _NOT_METRICS and c != by
                   and pd.to_numeric(table[c], errors="coerce").notna().all()]
        if len(numeric) != 1:
            raise InputError(f"{results_path}: cannot tell which column is the metric (numeric columns: "
                             f"{', '.join(numeric) or 'none'}); name it with --metric")
        metric = numeric[0]
    require_columns(table, [metric], results_path)
    data = pd.DataFrame({
        "bucket": bucket_labels(table, results_path),
        "x": bucket_position(table, results_path),
        "metric": numeric_column(table, metric, results_path),
    })
    if by is not None:
        data[by] = table[by].astype(str)

    rows, per_bucket = [], []
    series = [("all", data)] if by is None else [(str(s), p) for s, p in data.groupby(by, sort=False)]
    for name, part in series:
        means = part.groupby("x", sort=True)["metric"].mean()
        est = correlations(part["x"], part["metric"], bootstrap)
        diffs = np.diff(means.to_numpy())
        gain = float(means.iloc[-1] - means.iloc[0]) if len(means) > 1 else None
        rows.append(ResultRow(
            name=name, n_images=None,
            values={**{m: e.interval() for m, e in est.items()}, "gain": {"value": gain, "ci_low": None, "ci_high": None}},
            monotonic=bool(len(diffs) and np.all(diffs >= 0)),
            p_values={m: e.p_value for m, e in est.items()}, n_points=int(len(part)),
        ))
        for x, value in means.items():
            label = part.loc[part["x"] == x, "bucket"].iloc[0]
            per_bucket.append({"series": name, "bucket": label, "x": float(x), "metric": float(value),
                               "n": int((part["x"] == x).sum())})

    figures: list[str] = []
    if plot:
        ordered = data.sort_values("x", kind="stable")
        figures = plots.bucket_bars(ordered, metric, out_dir, series=by)
    result = BenchResult(
        study="downstream",
        inputs=[input_ref("downstream_results", results_path, result_path)],
        settings={**bootstrap.settings(), "metric": metric, "by": by},
        metrics=[
            MetricDef(key="spearman", label="Spearman ρ", description=f"rank correlation of {metric} with the bucket's score"),
            MetricDef(key="kendall", label="Kendall τ-b", description=f"rank correlation of {metric} with the bucket's score"),
            MetricDef(key="pearson", label="Pearson r", description=f"linear correlation of {metric} with the bucket's score midpoint"),
            MetricDef(key="gain", label=f"{metric} gain", description=f"{metric} of the top bucket minus the bottom bucket"),
        ],
        rows=rows,
        tables={"per_bucket": per_bucket},
        figures=figures,
    )
    write_result(result, result_path)
    return result
