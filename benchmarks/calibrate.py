"""``clis bench calibrate``: which ``--min-instance`` and ``--min-layout`` give the precision I want?

From a scores.jsonl and human labels (``clis.labels/1``, as for ``clis bench agreement``) it
recommends, for a target precision of what ``clis pick`` keeps (e.g. 0.9: nine in ten kept
objects are right by people's answers):

* ``min_instance``: the lowest instance-score threshold whose kept objects (score >=
  threshold, pick's rule) reach the target precision, which is the one that keeps the most
  right objects (the highest recall) among those that reach it;
* ``min_layout``: the same for CLIS-L against "is this layout plausible?", when the scores
  carry CLIS-L and the labels answer it.

Each comes with the precision and recall it gives and bootstrap intervals over layouts; the
threshold's own interval is that of the threshold re-chosen on each resample. The result is a
``clis.bench/1`` file and ``pick-config.json``, a settings file whose ``pick`` table
``clis pick --config`` reads (flags given to pick still win).

Example (hand-checkable: the no answers score 20 and 70, every yes scores 60 or more):
    >>> import numpy as np
    >>> choose_threshold(np.array([1, 1, 1, 0, 0, 1.0]), np.array([90, 80, 75, 70, 20, 60.0]), 0.75)
    (60.0, 0.8, 1.0)
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from benchmarks import plots
from benchmarks.agreement import by_layout, check_partly, join_labels, label_warnings, threshold_rates
from benchmarks.results import BenchResult, MetricDef, ResultRow, check_study_paths, input_ref, models_from_manifest, \
    plot_files, write_result
from benchmarks.stats import BootstrapConfig, check_finite
from clis import __version__, jsonio
from clis.errors import InputError
from clis.files import sha256_file, write_text_atomic

CONFIG_FILE = "pick-config.json"

METRICS = [
    MetricDef(key="threshold", label="threshold", description="recommended clis pick threshold (score >= it is kept)"),
    MetricDef(key="precision", label="precision", description="share of kept that people call yes"),
    MetricDef(key="recall", label="recall", description="share of yes answers that are kept"),
    MetricDef(key="kept", label="kept", description="share of all answers that are kept"),
]


def precision_recall(human: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(thresholds, precision, recall)`` of keeping ``score >= threshold``, at every distinct
    score from the highest down (tied scores are kept or dropped together); recall is NaN
    when there is no yes answer."""
    human = np.asarray(human, dtype=float)
    score = np.asarray(score, dtype=float)
    order = np.argsort(-score, kind="stable")
    s, y = score[order], human[order]
    kept_yes = np.cumsum(y)
    kept = np.arange(1, s.size + 1)
    last_of_value = np.r_[s[1:] != s[:-1], True]  # a threshold keeps every tie of its value
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = kept_yes / human.sum() if human.sum() else np.full(s.size, math.nan)
    return s[last_of_value], (kept_yes / kept)[last_of_value], recall[last_of_value]


def choose_threshold(human: np.ndarray, score: np.ndarray, target: float) -> tuple[float, float, float] | None:
    """``(threshold, precision, recall)`` of the lowest threshold, among the scores, whose kept
    set (score >= threshold) has precision >= ``target``; None when none reaches it.

    Lower thresholds keep more, so the lowest one that reaches the target has the highest
    recall of those that do. Tied scores are kept or dropped together."""
    if np.size(human) == 0 or np.sum(human) == 0:
        return None
    thresholds, precision, recall = precision_recall(human, score)
    feasible = np.nonzero(precision >= target - 1e-12)[0]
    if feasible.size == 0:
        return None
    i = int(feasible[-1])
    return float(thresholds[i]), float(precision[i]), float(recall[i])


def calibrate_one(frame: pd.DataFrame, column: str, target: float, config: BootstrapConfig, flag: str) -> dict:
    """The recommended threshold on ``column`` and its figures, each with an interval over layouts."""
    part = frame.dropna(subset=[column, "human"])[["layout_id", "human", column]]
    if part.empty:
        raise InputError(f"{flag}: no {'object' if column == 'score' else 'plausibility'} answer about a scored "
                         "candidate in these labels; nothing to calibrate on")
    human, score = part["human"].to_numpy(dtype=float), part[column].to_numpy(dtype=float)
    chosen = choose_threshold(human, score, target)
    if chosen is None:
        best = float(np.max(precision_recall(human, score)[1]))
        raise InputError(f"{flag}: no threshold reaches precision {target:g} on these labels ({len(part)} answers; "
                         f"the best any threshold reaches is {best:.3f}); lower --target-precision or label more")
    threshold = chosen[0]

    def rechosen(f: dict) -> float:
        again = choose_threshold(f["human"].astype(float), f[column].astype(float), target)
        return again[0] if again else math.nan

    def at(key: str):
        return lambda f: threshold_rates(f["human"].astype(float), f[column].astype(float), threshold)[key]

    return {
        # The interval is the re-chosen threshold's; the value is the one chosen on all answers.
        "threshold": replace(by_layout(part, rechosen, config), value=threshold),
        "precision": by_layout(part, at("precision"), config),
        "recall": by_layout(part, at("recall"), config),
        "kept": by_layout(part, lambda f: float(np.mean(f[column].astype(float) >= threshold)), config),
        "n": int(len(part)),
        "curve": _curve(human, score, flag),
    }


def _curve(human: np.ndarray, score: np.ndarray, flag: str) -> list[dict]:
    """Precision and recall at every distinct score (lowest first), for the plot and the table."""
    thresholds, precision, recall = precision_recall(human, score)
    return [{"score": flag, "threshold": float(t), "precision": float(p), "recall": float(r)}
            for t, p, r in zip(thresholds[::-1], precision[::-1], recall[::-1])]


def calibrate(
    scores_path: str | os.PathLike,
    label_paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    target_precision: float = 0.9,
    target_layout_precision: float | None = None,
    partly: str = "no",
    bootstrap: BootstrapConfig = BootstrapConfig(),
    plot: bool = True,
) -> BenchResult:
    """Run the calibration, write ``result.json`` and ``pick-config.json`` into ``out_dir``."""
    from clis.annotate.labels import read_labels

    check_partly(partly)
    for flag, value in (("--target-precision", target_precision), ("--target-layout-precision", target_layout_precision)):
        if value is not None and not 0 < check_finite(flag, value) <= 1:
            raise InputError(f"{flag} {value}: give a precision above 0 and at most 1, such as 0.9")
    layout_target = target_precision if target_layout_precision is None else target_layout_precision
    out_dir = Path(out_dir)
    result_path = out_dir / "result.json"
    inputs = {"SCORES": scores_path, **{f"LABELS[{i}]": p for i, p in enumerate(label_paths)}}
    check_study_paths(out_dir, inputs, ["result.json", CONFIG_FILE, *plot_files("calibrate")])
    labels = read_labels(label_paths)
    joined = join_labels(scores_path, labels, partly)

    chosen = {"min_instance": calibrate_one(joined.objects, "score", target_precision, bootstrap, "--min-instance")}
    layouts = joined.layouts
    skipped_layout = None
    if layouts["clis_l"].notna().any() and layouts["human"].notna().any():
        try:
            chosen["min_layout"] = calibrate_one(layouts, "clis_l", layout_target, bootstrap, "--min-layout")
        except InputError as exc:
            # The layout threshold is the optional one: the instance threshold still stands.
            skipped_layout = str(exc)
    else:
        skipped_layout = ("the scores carry no CLIS-L" if layouts["clis_l"].isna().all()
                          else "no layout was answered 'plausible?'")

    rows = [ResultRow(name=key, label=f"--{key.replace('_', '-')}",
                      values={k: c[k].interval() for k in ("threshold", "precision", "recall", "kept")}, n_answers=c["n"])
            for key, c in chosen.items()]
    curve = [point for c in chosen.values() for point in c["curve"]]
    figures = plots.precision_recall_thresholds(pd.DataFrame(curve), out_dir, chosen={
        f"--{k.replace('_', '-')}": c["threshold"].value for k, c in chosen.items()}) if plot else []

    pick_table = {key: c["threshold"].value for key, c in chosen.items()}
    pick_table["calibration"] = {
        "by": "clis bench calibrate", "clis_version": __version__, "partly": partly,
        "target_precision": {"min_instance": target_precision, "min_layout": layout_target if "min_layout" in chosen else None},
        "scores": {"path": str(scores_path), "sha256": sha256_file(scores_path)},
        "labels": [{"path": str(p), "sha256": sha256_file(p)} for p in label_paths],
        **{key: {k: c[k].interval() for k in ("precision", "recall", "kept")} | {"n": c["n"]} for key, c in chosen.items()},
    }
    result = BenchResult(
        study="calibrate",
        inputs=[input_ref("scores", scores_path, result_path), *(input_ref("labels", p, result_path) for p in label_paths)],
        models=models_from_manifest(scores_path),
        settings={**bootstrap.settings(), "partly": partly, "target_precision": target_precision,
                  "target_layout_precision": layout_target, "annotators": labels.annotators,
                  "site_blind": labels.site.get("blind"), "warnings": label_warnings(labels),
                  "min_layout_not_calibrated": skipped_layout, "config_file": CONFIG_FILE},
        metrics=METRICS,
        rows=rows,
        tables={"curve": curve},
        figures=figures,
    )
    write_result(result, result_path)
    write_text_atomic(out_dir / CONFIG_FILE, jsonio.dumps({"pick": pick_table}, indent=2, ensure_ascii=False) + "\n")
    return result
