"""``clis bench correlate``: does a score track what people (or detectors) measured?

Joins scored candidates to a table of targets (human ratings per image, or downstream
accuracy per layout) and reports Spearman rho, Kendall tau-b and Pearson r with bootstrap
intervals, for the composite CLIS and for every baseline present in the scores, overall
and per group.

Example:
    >>> import json, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> rows = [{"layout_id": f"l{i}", "image": f"l{i}.png", "clis": float(s), "clis_i": None,
    ...          "clis_l": None, "global": 20.0 + i % 3, "instances": [], "error": None}
    ...         for i, s in enumerate([50, 61, 58, 70, 77, 90])]
    >>> _ = (d / "scores.jsonl").write_text("\\n".join(json.dumps(r) for r in rows))
    >>> _ = (d / "ratings.csv").write_text("image,rating\\n" + "\\n".join(
    ...     f"l{i}.png,{r}" for i, r in enumerate([1, 3, 2, 4, 4, 5])))
    >>> result = correlate(d / "scores.jsonl", d / "ratings.csv", d / "out",
    ...                    bootstrap=BootstrapConfig(n_resamples=200), plot=False)
    >>> round(result.rows[0].values["spearman"].value, 3)
    0.986
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from benchmarks import plots
from benchmarks.join import ImageMatcher, check_scores_unique, check_unique, numeric_column, read_table, require_columns
from benchmarks.results import (BenchResult, MetricDef, ResultRow, check_study_paths, input_ref, models_from_manifest,
                                plot_files, write_result)
from benchmarks.scorefile import SCORE_LABELS, present_score_columns, read_scores, scored
from benchmarks.stats import CORRELATION_METHODS, BootstrapConfig, correlations
from clis.errors import InputError

ID_COLUMNS = ("image", "layout_id")
AGGREGATES = ("mean", "max")

METRICS = [
    MetricDef(key="spearman", label="Spearman ρ", description="rank correlation with the target (ties get average ranks)"),
    MetricDef(key="kendall", label="Kendall τ-b", description="rank correlation with the target, corrected for ties"),
    MetricDef(key="pearson", label="Pearson r", description="linear correlation with the target"),
]


def _pick_target(targets: pd.DataFrame, target: str | None, by: str | None, path: str | os.PathLike) -> str:
    if target is not None:
        require_columns(targets, [target], path)
        return target
    candidates = [c for c in targets.columns if c not in ID_COLUMNS and c != by]
    if len(candidates) > 1:
        candidates = [c for c in candidates if pd.to_numeric(targets[c], errors="coerce").notna().all()]
    if len(candidates) != 1:
        found = ", ".join(candidates) if candidates else "none"
        raise InputError(f"{path}: cannot tell which column is the target (numeric columns: {found}); name it with --target")
    return candidates[0]


def _check_no_clash(targets: pd.DataFrame, reserved: set[str], keep: set[str],
                    targets_path: str | os.PathLike, scores_path: str | os.PathLike) -> None:
    """A targets column named like a scores column would silently replace it in the join
    (a ``global`` column would stand in for the CLIP baseline, ``error`` would void every
    candidate), so such a clash is an error rather than a guess."""
    for column in targets.columns:
        if column in reserved and column not in keep:
            raise InputError(f"{targets_path}: column {column!r} clashes with the column of that name in the "
                             f"scores of {scores_path}; rename it (or name it with --target)")


def _check_layout_ids_agree(targets: pd.DataFrame, joined: pd.DataFrame,
                            targets_path: str | os.PathLike, scores_path: str | os.PathLike) -> None:
    """An image-level table may carry ``layout_id`` too; it must say what the scores say."""
    given = targets["layout_id"].astype(str).str.strip().to_numpy()
    differ = (given != joined["layout_id"].to_numpy()).nonzero()[0]
    if differ.size:
        i = int(differ[0])
        raise InputError(f"{targets_path}: row {i + 1}, column 'layout_id': {given[i]!r} but {scores_path} "
                         f"scores image {joined['image'].iloc[i]!r} against layout {joined['layout_id'].iloc[i]!r}")


def _layout_groups(scores: pd.DataFrame, by: str, scores_path: str | os.PathLike) -> pd.Series:
    """The ``by`` value of each layout; its candidates must agree on it to be grouped as one."""
    values = scores.groupby("layout_id")[by].unique()
    mixed = values[values.map(len) > 1]
    if not mixed.empty:
        found = ", ".join(repr(v) for v in mixed.iloc[0][:2])
        raise InputError(f"{scores_path}: layout {mixed.index[0]!r} has candidates with different {by!r} values "
                         f"({found}); --by {by} needs one value per layout when targets are per layout")
    return values.map(lambda v: v[0])


def join_targets(
    scores: pd.DataFrame, targets: pd.DataFrame, target: str, *,
    scores_path: str | os.PathLike, targets_path: str | os.PathLike, aggregate: str = "mean",
    by: str | None = None,
) -> tuple[pd.DataFrame, str]:
    """Attach ``target`` to each scored image (``image`` column) or layout (``layout_id`` column).

    Returns the joined table (a ``target`` column added) and the level, ``"image"`` or
    ``"layout"``. At layout level a layout's score is the ``aggregate`` (mean or max) over
    its successfully scored candidates; ``n_candidates`` and ``n_failed`` count them, and a
    ``by`` column of the score records is carried along. Every id must match; duplicates and
    targets columns named like score columns are errors.
    """
    if aggregate not in AGGREGATES:
        raise InputError(f"unknown aggregate {aggregate!r}; use one of {', '.join(AGGREGATES)}")
    values = numeric_column(targets, target, targets_path)
    check_scores_unique(scores, scores_path)
    reserved = set(scores.columns) | {"target", "n_candidates", "n_failed"}
    if "image" in targets.columns:
        _check_no_clash(targets, reserved, {"image", "layout_id", target}, targets_path, scores_path)
        check_unique(targets["image"], "image", targets_path)
        matcher = ImageMatcher(scores["image"], scores_path)
        keys = [matcher.match(v, f"{targets_path}: row {i + 1}, column 'image'") for i, v in enumerate(targets["image"])]
        joined = scores.set_index("image").loc[keys].reset_index()
        if "layout_id" in targets.columns:
            _check_layout_ids_agree(targets, joined, targets_path, scores_path)
        extra = targets.drop(columns=[c for c in (target, "image", "layout_id") if c in targets.columns])
        joined = pd.concat([joined, extra.reset_index(drop=True)], axis=1)
        joined["target"] = values.to_numpy()
        return joined, "image"
    if "layout_id" in targets.columns:
        _check_no_clash(targets, reserved, {"layout_id", target}, targets_path, scores_path)
        check_unique(targets["layout_id"], "layout_id", targets_path)
        known = set(scores["layout_id"])
        for i, layout_id in enumerate(targets["layout_id"]):
            if layout_id not in known:
                raise InputError(f"{targets_path}: row {i + 1}, column 'layout_id': layout {layout_id!r} has no candidates in {scores_path}")
        ok = scored(scores)
        per_layout = ok.groupby("layout_id")[present_score_columns(ok)].agg(aggregate)
        per_layout["n_candidates"] = ok.groupby("layout_id").size()
        per_layout = per_layout.reindex(sorted(known))  # layouts whose every candidate failed stay, unscored
        per_layout["n_candidates"] = per_layout["n_candidates"].fillna(0).astype(int)
        per_layout["n_failed"] = scores.groupby("layout_id")["error"].count()
        if by is not None and by not in targets.columns and by in scores.columns:
            per_layout[by] = _layout_groups(scores, by, scores_path)
        joined = targets.drop(columns=[target]).join(per_layout, on="layout_id")
        joined["target"] = values.to_numpy()
        return joined, "layout"
    raise InputError(f"{targets_path}: needs an 'image' or a 'layout_id' column to join on (columns are: {', '.join(targets.columns)})")


def correlation_table(joined: pd.DataFrame, score_columns: list[str], by: str | None, config: BootstrapConfig) -> pd.DataFrame:
    """Flat records: one per (group, score column, method)."""
    groups = [("all", joined)]
    if by:
        groups += [(str(name), part) for name, part in joined.groupby(by, sort=True)]
    records = []
    for group, part in groups:
        for column in score_columns:
            pair = part[[column, "target"]].dropna()
            for method, est in correlations(pair[column], pair["target"], config).items():
                records.append({
                    "group": group, "score": column, "method": method, "value": est.value,
                    "ci_low": est.ci_low, "ci_high": est.ci_high, "p_value": est.p_value, "n": est.n,
                })
    return pd.DataFrame.from_records(records)


def correlate(
    scores_path: str | os.PathLike,
    targets_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    target: str | None = None,
    by: str | None = None,
    aggregate: str = "mean",
    bootstrap: BootstrapConfig = BootstrapConfig(),
    plot: bool = True,
) -> BenchResult:
    """Run the study, write ``<out_dir>/result.json`` (+ plots) and return the result."""
    out_dir = Path(out_dir)
    result_path = out_dir / "result.json"
    check_study_paths(out_dir, {"SCORES": scores_path, "TARGETS": targets_path}, ["result.json", *plot_files("correlate")])
    scores = read_scores(scores_path)
    targets = read_table(targets_path)
    target = _pick_target(targets, target, by, targets_path)
    joined, level = join_targets(scores, targets, target, scores_path=scores_path,
                                 targets_path=targets_path, aggregate=aggregate, by=by)
    if by is not None and by not in joined.columns:
        raise InputError(f"--by {by!r}: no such column in {targets_path} or in the records of {scores_path}")
    # Failed candidates are left out, never silently: they and the target layouts left
    # with no scored candidate at all go into the settings.
    if level == "image":
        n_failed = int(joined["error"].notna().sum())
        unscored = None
        joined = scored(joined)
    else:
        n_failed = int(joined["n_failed"].sum())
        unscored = joined.loc[joined["n_candidates"] == 0, "layout_id"].tolist()
    score_columns = present_score_columns(joined)
    if not score_columns:
        raise InputError(f"{scores_path}: none of the {level}s named in {targets_path} has a scored candidate "
                         f"({n_failed} failed); nothing to correlate")
    table = correlation_table(joined, score_columns, by, bootstrap)

    rows = []
    overall = table[table["group"] == "all"]
    for column in score_columns:
        part = overall[overall["score"] == column].set_index("method")
        values = {m: {k: part.at[m, k] for k in ("value", "ci_low", "ci_high")} for m in CORRELATION_METHODS}
        usable = joined[[column, "target"]].dropna()
        rows.append(ResultRow(
            name=column, values=values, label=SCORE_LABELS.get(column, column),
            n_images=int(len(usable)) if level == "image" else None,
            n_layouts=int(joined.loc[usable.index, "layout_id"].nunique()),
            p_values={m: part.at[m, "p_value"] for m in CORRELATION_METHODS},
        ))

    figures: list[str] = []
    if plot and score_columns:
        long = joined.melt(id_vars=["target"] + ([by] if by else []), value_vars=score_columns,
                           var_name="score_name", value_name="score").dropna(subset=["score", "target"])
        long["score_name"] = long["score_name"].map(lambda c: SCORE_LABELS.get(c, c))
        figures = plots.scatter_fit(long, target, out_dir, hue=by)

    result = BenchResult(
        study="correlate",
        inputs=[input_ref("scores", scores_path, result_path), input_ref("targets", targets_path, result_path)],
        models=models_from_manifest(scores_path),
        settings={**bootstrap.settings(), "target": target, "level": level, "aggregate": aggregate if level == "layout" else None,
                  "by": by, "n_failed_candidates": n_failed, "unscored_layouts": unscored},
        metrics=METRICS,
        rows=rows,
        tables={"correlations": table.to_dict(orient="records")},
        figures=figures,
    )
    write_result(result, result_path)
    return result
