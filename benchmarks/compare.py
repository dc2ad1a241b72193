"""``clis bench compare``: several generators on the same layouts, with bootstrap intervals.

Each generator is given as ``NAME=PATH`` where PATH is a scores.jsonl file, a candidates
folder holding a ``scores.jsonl``, or a candidates folder to score now (with
:class:`clis.scorer.Scorer`; the scores are kept in ``<out>/<name>/scores.jsonl``).

Fairness: by default only the layouts every generator has scored candidates for are
compared (``common_only``), so no generator is judged on easier layouts than another.
Intervals resample whole layouts (a cluster bootstrap), because candidates of one layout
share its difficulty.

Per generator: mean and median of CLIS, CLIS-I and CLIS-L; mean global CLIP; mean
detection IoU and found-rate; the pass rate (a candidate passes when at least one instance
reaches ``min_instance`` and, where CLIS-L exists, ``clis_l >= min_layout``: the paper's
filter); the instance pass rate; and the best-of-N gain (mean over layouts of the best
candidate's CLIS minus the layout's mean CLIS).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from benchmarks import plots
from benchmarks.join import check_scores_unique
from benchmarks.results import (BenchResult, MetricDef, ResultRow, check_study_paths, input_ref, models_from_manifest,
                                plot_files, relative_path, scorer_provenance, write_result)
from benchmarks.scorefile import read_scores, scored
from benchmarks.stats import BootstrapConfig, Clusters, best_of_n_gain, check_finite, pooled_mean, pooled_median
from clis.errors import InputError
from clis.outputs import write_csv_frame

SCORES_NAME = "scores.jsonl"
# A folder's scores may also be the Parquet table of `clis score --out scores.parquet`.
PARQUET_NAME = "scores.parquet"

# (key, column, statistic, label, description, higher is better)
FIGURES: list[tuple[str, str, Callable, str, str, bool]] = [
    ("clis_mean", "clis", pooled_mean, "CLIS (mean)", "mean CLIS over candidates", True),
    ("clis_median", "clis", pooled_median, "CLIS (median)", "median CLIS over candidates", True),
    ("clis_i_mean", "clis_i", pooled_mean, "CLIS-I (mean)", "mean CLIS-I over candidates", True),
    ("clis_i_median", "clis_i", pooled_median, "CLIS-I (median)", "median CLIS-I over candidates", True),
    ("clis_l_mean", "clis_l", pooled_mean, "CLIS-L (mean)", "mean CLIS-L over candidates", True),
    ("clis_l_median", "clis_l", pooled_median, "CLIS-L (median)", "median CLIS-L over candidates", True),
    ("global_mean", "global", pooled_mean, "global CLIP", "mean CLIP score of the whole image vs the caption", True),
    ("detection_iou_mean", "detection_iou", pooled_mean, "detection IoU", "mean IoU of detected vs intended boxes (0 if missed)", True),
    ("found_rate_mean", "found_rate", pooled_mean, "found rate", "share of objects the detector found", True),
    ("pass_rate", "passes", pooled_mean, "pass rate", "share of candidates passing the instance and layout thresholds", True),
    ("instance_pass_rate", "instance_pass", pooled_mean, "instance pass rate", "share of instances scoring >= min_instance", True),
    ("best_of_n_gain", "clis", best_of_n_gain, "best-of-N gain", "mean of (best candidate's CLIS - mean CLIS) per layout", True),
]


def parse_generator(spec: str) -> tuple[str, Path]:
    """``"gligen=out/gligen"`` -> ``("gligen", Path("out/gligen"))``; a bare path is named after itself."""
    name, sep, path = spec.partition("=")
    if not sep:
        path, name = spec, Path(spec).stem if Path(spec).suffix in (".jsonl", ".parquet") else Path(spec).name
    if not name or not path:
        raise InputError(f"generator {spec!r}: expected NAME=PATH (a scores.jsonl or a candidates folder)")
    return name, Path(path)


def add_pass_columns(frame: pd.DataFrame, min_instance: float, min_layout: float) -> pd.DataFrame:
    """``passes`` (per candidate) and ``instance_pass`` (share of its instances) columns."""
    def instance_ok(scores: list[float]) -> float:
        return float(np.mean([s >= min_instance for s in scores])) if scores else np.nan

    frame = frame.copy()
    frame["instance_pass"] = frame["instance_scores"].map(instance_ok)
    best_instance = frame["instance_scores"].map(lambda s: max(s) if s else np.nan)
    layout_ok = frame["clis_l"].isna() | (frame["clis_l"] >= min_layout)
    frame["passes"] = np.where(best_instance.isna(), np.nan, ((best_instance >= min_instance) & layout_ok).astype(float))
    return frame


def _resolve_scores(name: str, path: Path, layouts_path: Path | None, out_dir: Path, scorer_factory) -> tuple[Path, Path | None]:
    """The scores file for one generator, scoring its folder first when it has none."""
    if path.is_file():
        return path, None
    if not path.is_dir():
        raise InputError(f"generator {name!r}: {path} is neither a scores file nor a folder")
    for held in (SCORES_NAME, PARQUET_NAME):
        if (path / held).is_file():
            return path / held, path
    if layouts_path is None:
        raise InputError(f"generator {name!r}: {path} has no {SCORES_NAME}; pass --layouts so it can be scored")
    target = out_dir / name / SCORES_NAME
    scorer_factory().score_folder(path, layouts_path, out=target)
    return target, path


def compare(
    generators: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    layouts_path: str | os.PathLike | None = None,
    score_config: dict[str, Any] | None = None,
    scorer: Any = None,
    min_instance: float = 60.0,
    min_layout: float = 50.0,
    common_only: bool = True,
    bootstrap: BootstrapConfig = BootstrapConfig(),
    plot: bool = True,
) -> BenchResult:
    """Run the comparison; write ``result.json``, ``compare.csv`` and the plot into ``out_dir``."""
    if len(generators) < 1:
        raise InputError("compare: name at least one generator as NAME=PATH")
    check_finite("--min-instance", min_instance)
    check_finite("--min-layout", min_layout)
    out_dir = Path(out_dir)
    result_path = out_dir / "result.json"
    layouts_path = Path(layouts_path) if layouts_path else None
    parsed = [parse_generator(g) for g in generators]
    names = [n for n, _ in parsed]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise InputError(f"compare: generator name {duplicate!r} is used twice")
    inputs: dict[str, Path | None] = {"--layouts": layouts_path}
    to_score = []  # folders without scores: scored into <out>/<name>/scores.jsonl
    for name, path in parsed:
        inputs[f"generator {name!r}"] = path
        if path.is_dir():
            held = next((n for n in (SCORES_NAME, PARQUET_NAME) if (path / n).is_file()), None)
            if held is not None:
                inputs[f"generator {name!r} ({held})"] = path / held
            else:
                # The name becomes a folder under --out: "../x" would write outside it.
                if name in (".", "..") or any(c in name for c in "/\\\0"):
                    raise InputError(f"generator {name!r}: {path} is scored into <out>/NAME/{SCORES_NAME}, so NAME "
                                     "must be a plain folder name (no '/', '\\', '.' or '..')")
                to_score.append(f"{name}/{SCORES_NAME}")
    check_study_paths(out_dir, inputs, ["result.json", "compare.csv", *plot_files("compare"), *to_score])
    if layouts_path is not None:
        from clis.formats import read_layouts

        # An unusable layouts file is refused now, not after the scorer has loaded its models;
        # invalid layouts among valid ones become error records when their folder is scored.
        read_layouts(layouts_path)

    holder: dict[str, Any] = {"scorer": scorer}

    def scorer_factory():
        if holder["scorer"] is None:
            from clis.scorer import ScoreConfig, Scorer

            holder["scorer"] = Scorer(ScoreConfig.checked(score_config or {}, source="score settings"))
        return holder["scorer"]

    frames, sources, failed = {}, {}, {}
    for name, path in parsed:
        scores_path, images_root = _resolve_scores(name, path, layouts_path, out_dir, scorer_factory)
        sources[name] = (scores_path, images_root)
        scores = read_scores(scores_path)
        check_scores_unique(scores, scores_path)  # a candidate listed twice would count twice
        failed[name] = int(scores["error"].notna().sum())
        frames[name] = add_pass_columns(scored(scores), min_instance, min_layout)
    layout_sets = [set(f["layout_id"]) for f in frames.values()]
    common = set.intersection(*layout_sets) if layout_sets else set()
    if common_only and not common:
        raise InputError("compare: the generators share no layout with scored candidates; pass --all-layouts to compare anyway")

    rows, records = [], []
    for name, frame in frames.items():
        if common_only:
            frame = frame[frame["layout_id"].isin(common)]
        values = {}
        for key, column, statistic, *_ in FIGURES:
            part = frame[["layout_id", column]].dropna()
            est = Clusters(part[column], part["layout_id"]).estimate(statistic, bootstrap)
            values[key] = est.interval()
            records.append({"generator": name, "metric": key, **est.interval(), "n": est.n})
        scores_path, images_root = sources[name]
        rows.append(ResultRow(
            name=name, n_images=int(len(frame)), n_layouts=int(frame["layout_id"].nunique()), n_failed=failed[name],
            values=values,
            scores_file=relative_path(scores_path, result_path),
            layouts_file=relative_path(layouts_path, result_path) if layouts_path else None,
            images_root=relative_path(images_root, result_path) if images_root else None,
            models=models_from_manifest(scores_path),
        ))
    table = pd.DataFrame.from_records(records)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv_frame(table, out_dir / "compare.csv")  # generator names and paths are the user's text

    figures: list[str] = []
    if plot:
        labels = {key: label for key, _, _, label, *_ in FIGURES}
        shown = table[table["metric"].isin(["clis_mean", "clis_i_mean", "clis_l_mean", "global_mean"])].dropna(subset=["value"])
        if not shown.empty:
            figures = plots.interval_points(shown.assign(metric=shown["metric"].map(labels)), "value", "generator",
                                            out_dir, "compare", hue="metric", xlabel="score (0..100)")
    # Only a scorer this study ran describes the whole result; read scores carry their own models per row.
    models, scorer_record = scorer_provenance(holder["scorer"]) if holder["scorer"] is not None else ({}, None)
    result = BenchResult(
        study="compare",
        inputs=[input_ref("scores", sources[n][0], result_path, name=n) for n in names]
        + ([input_ref("layouts", layouts_path, result_path)] if layouts_path else []),
        models=models,
        scorer=scorer_record,
        settings={**bootstrap.settings(), "min_instance": min_instance, "min_layout": min_layout,
                  "common_only": common_only, "n_common_layouts": len(common)},
        metrics=[MetricDef(key=k, label=label, description=d, higher_is_better=h) for k, _, _, label, d, h in FIGURES],
        rows=rows,
        tables={"figures": table.to_dict(orient="records")},
        figures=figures,
    )
    write_result(result, result_path)
    return result
