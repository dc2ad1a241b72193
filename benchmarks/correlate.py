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
from typing import Sequence

import pandas as pd

from benchmarks import plots
from benchmarks.join import ImageMatcher, check_scores_unique, check_unique, numeric_column, require_columns
from benchmarks.ratings import IMAGE_COLUMNS, Ratings, inter_annotator, read_ratings
from benchmarks.results import (BenchResult, MetricDef, ResultRow, check_study_paths, input_ref, models_from_manifest,
                                plot_files, write_result)
from benchmarks.scorefile import SCORE_LABELS, present_score_columns, read_scores, scored
from benchmarks.stats import CORRELATION_METHODS, BootstrapConfig, correlations, grouped_correlations
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
    by: str | None = None, image_column: str = "image",
) -> tuple[pd.DataFrame, str]:
    """Attach ``target`` to each scored image (``image`` column) or layout (``layout_id`` column).

    Returns the joined table (a ``target`` column added) and the level, ``"image"`` or
    ``"layout"``. At layout level a layout's score is the ``aggregate`` (mean or max) over
    its successfully scored candidates; ``n_candidates`` and ``n_failed`` count them, and a
    ``by`` column of the score records is carried along. Every id must match; duplicates and
    targets columns named like score columns are errors. ``image_column`` is the targets
    column that names the image (TIFA's ``image_path``, say).
    """
    if aggregate not in AGGREGATES:
        raise InputError(f"unknown aggregate {aggregate!r}; use one of {', '.join(AGGREGATES)}")
    values = numeric_column(targets, target, targets_path)
    check_scores_unique(scores, scores_path)
    reserved = set(scores.columns) | {"target", "n_candidates", "n_failed"}
    if image_column in targets.columns:
        _check_no_clash(targets, reserved, {image_column, "layout_id", target}, targets_path, scores_path)
        check_unique(targets[image_column], image_column, targets_path)
        matcher = ImageMatcher(scores["image"], scores_path)
        keys = [matcher.match(v, f"{targets_path}: row {i + 1}, column {image_column!r}")
                for i, v in enumerate(targets[image_column])]
        joined = scores.set_index("image").loc[keys].reset_index()
        if "layout_id" in targets.columns:
            _check_layout_ids_agree(targets, joined, targets_path, scores_path)
        extra = targets.drop(columns=[c for c in (target, image_column, "layout_id") if c in targets.columns])
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


def correlation_table(joined: pd.DataFrame, score_columns: list[str], by: str | None, config: BootstrapConfig,
                      group: str | None = None) -> pd.DataFrame:
    """Flat records: one per (by-group, score column, method). With ``group`` the intervals
    resample whole groups of rows (prompts) where any group holds more than one row."""
    groups = [("all", joined)]
    if by:
        groups += [(str(name), part) for name, part in joined.groupby(by, sort=True)]
    records = []
    for name, part in groups:
        for column in score_columns:
            pair = part[[column, "target"] + ([group] if group else [])].dropna(subset=[column, "target"])
            if group and pair[group].duplicated().any():
                estimates = grouped_correlations(pair[column], pair["target"], pair[group].astype(str).tolist(), config)
            else:
                estimates = correlations(pair[column], pair["target"], config)
            for method, est in estimates.items():
                records.append({
                    "group": name, "score": column, "method": method, "value": est.value,
                    "ci_low": est.ci_low, "ci_high": est.ci_high, "p_value": est.p_value, "n": est.n,
                })
    return pd.DataFrame.from_records(records)


# Table formats that are read as ratings tables rather than as a scores.jsonl.
RATINGS_SUFFIXES = (".json", ".csv", ".parquet", ".pq")


def _is_ratings_table(path: str | os.PathLike) -> bool:
    from clis.scoretable import is_score_table

    # A Parquet scores table from `clis score` shares the suffix of a Parquet ratings table.
    return Path(path).suffix.lower() in RATINGS_SUFFIXES and not is_score_table(path)


def _table_scores(table: Ratings, columns: list[str], flag: str = "--score") -> dict[str, pd.Series]:
    """The ``columns`` of a ratings table as floats, each checked to hold only numbers."""
    out = {}
    for column in columns:
        table.require(column, flag)
        out[column] = table.numeric(column)
    return out


def _target_of(table: Ratings, target: str | None, by: str | None, scores: Sequence[str] = ()) -> str:
    """``--target``, else the recognised format's target, else the one numeric column that is
    neither an id, the image column nor a ``--score`` column of this table."""
    if target is not None:
        table.require(target, "--target")
        return target
    if table.default_target is not None:
        return table.default_target
    named = [c for c in (table.image_column, *scores) if c and c in table.frame.columns]
    return _pick_target(table.frame.drop(columns=named), None, by, table.path)


def _metrics_frame(table: Ratings, columns: list[str]) -> pd.DataFrame:
    """A ratings table of metric scores in the shape of :func:`read_scores` (``image``,
    ``layout_id``: its group or image, ``error``), holding ``columns``."""
    if table.image_column is None:
        raise InputError(f"{table.path}: no image id column to join on (tried {', '.join(IMAGE_COLUMNS)}); "
                         "as SCORES a ratings table needs one")
    ids = table.frame[table.image_column]
    frame = pd.DataFrame({"image": ids.to_numpy(),
                          "layout_id": (table.frame[table.group_column] if table.group_column else ids).to_numpy(),
                          "error": None})
    for column, values in _table_scores(table, columns).items():
        frame[column] = values.to_numpy()
    return frame


def _resolve_group(group: str | None, joined: pd.DataFrame, level: str, candidates: list[str | None]) -> str | None:
    """The column whose groups the bootstrap resamples: ``group`` as given (``none``: no
    grouping), else the first of ``candidates`` present (the prompt id of a recognised
    ratings format, then ``layout_id``), never at layout level (a layout is one row)."""
    if group is not None:
        if group == NO_GROUP:
            return None
        if group not in joined.columns:
            raise InputError(f"--group {group!r}: no such column (columns are: {', '.join(map(str, joined.columns))})")
        return group
    if level != "image":
        return None
    return next((c for c in candidates if c and c in joined.columns), None)


NO_GROUP = "none"


def correlate(
    scores_path: str | os.PathLike,
    targets_path: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    *,
    target: str | None = None,
    score_columns: Sequence[str] = (),
    image_column: str | None = None,
    group: str | None = None,
    by: str | None = None,
    aggregate: str = "mean",
    bootstrap: BootstrapConfig = BootstrapConfig(),
    plot: bool = True,
) -> BenchResult:
    """Run the study, write ``<out_dir>/result.json`` (+ plots) and return the result.

    ``scores_path`` is a scores.jsonl, or a ratings table (JSON, CSV, Parquet) whose metric
    columns are the scores. Without ``targets_path`` that one table also holds the target.
    ``score_columns`` (``--score``) selects metric columns of the ratings table: of
    ``targets_path`` next to a scores.jsonl (added to the CLIS columns), else of
    ``scores_path``; by default a lone ratings table uses all its metric columns
    (:meth:`Ratings.metric_columns`). ``group`` (``--group``) names the column whose groups
    the bootstrap resamples (``"none"``: single rows).
    """
    out_dir = Path(out_dir)
    result_path = out_dir / "result.json"
    check_study_paths(out_dir, {"SCORES": scores_path, "TARGETS": targets_path}, ["result.json", *plot_files("correlate")])
    score_columns = list(dict.fromkeys(score_columns))
    scores_file = targets_path is not None and not _is_ratings_table(scores_path)
    ratings: Ratings | None = None  # the table holding the target
    settings: dict = {}
    n_failed, unscored = 0, None

    if targets_path is None:
        if not _is_ratings_table(scores_path):
            raise InputError(f"{scores_path}: a scores file holds no target; give TARGETS (a ratings table) too, "
                             "or give one ratings table (.json, .csv, .parquet) that holds both scores and target")
        ratings = read_ratings(scores_path, image_column=image_column)
        target = _target_of(ratings, target, by, score_columns)
        values = ratings.numeric(target)
        exclude = {target, ratings.image_column, ratings.group_column, by}
        columns = score_columns or ratings.metric_columns(exclude)
        if target in columns:
            raise InputError(f"--score {target!r}: that is the target")
        if not columns:
            raise InputError(f"{scores_path}: no metric column to correlate with {target!r} (a column of finite numbers "
                             "that is not an id, a human_* column or the target); name one with --score, or give this "
                             "table as TARGETS next to a scores file")
        joined = pd.DataFrame(_table_scores(ratings, columns))
        carried = (ratings.image_column, ratings.group_column, group if group != NO_GROUP else None, by, "generator")
        for column in dict.fromkeys(c for c in carried if c):
            if column not in joined and column in ratings.frame:
                joined[column] = ratings.frame[column].to_numpy()
        joined["target"] = values.to_numpy()
        level = "image"
    else:
        ratings = read_ratings(targets_path, image_column=image_column)
        target = _target_of(ratings, target, by, score_columns if scores_file else ())
        targets = ratings.frame.copy()
        targets[target] = ratings.numeric(target).to_numpy()
        if scores_file:
            scores = read_scores(scores_path)
            for column, column_values in _table_scores(ratings, score_columns).items():
                if column == target:
                    raise InputError(f"--score {target!r}: that is the target")
                targets[column] = column_values.to_numpy()
        else:
            left = read_ratings(scores_path)
            exclude = {left.image_column, left.group_column, by}
            columns = score_columns or left.metric_columns(exclude)
            if not columns:
                raise InputError(f"{scores_path}: no metric column to correlate (a column of finite numbers that is "
                                 "not an id or a human_* column); name one with --score")
            scores = _metrics_frame(left, columns)
            score_columns = []  # they are the scores frame's own columns now
            if target in scores.columns:
                raise InputError(f"{targets_path}: target {target!r} is also a metric column of {scores_path}")
            # The metrics table says which image is which; its id columns stay in it.
            targets = targets.drop(columns=[c for c in ("layout_id",) if c in targets.columns])
        join_on = ratings.image_column or "image"
        joined, level = join_targets(scores, targets, target, scores_path=scores_path, targets_path=targets_path,
                                     aggregate=aggregate, by=by, image_column=join_on)
        if level == "image":
            n_failed = int(joined["error"].notna().sum())
            joined = scored(joined)
        else:
            n_failed = int(joined["n_failed"].sum())
            unscored = joined.loc[joined["n_candidates"] == 0, "layout_id"].tolist()
        if scores_file:
            columns = present_score_columns(joined) + score_columns
        else:
            columns = [c for c in scores.columns if c not in ("image", "layout_id", "error")]
        if not columns:
            raise InputError(f"{scores_path}: none of the {level}s named in {targets_path} has a scored candidate "
                             f"({n_failed} failed); nothing to correlate")
    if by is not None and by not in joined.columns:
        where = f"{targets_path} or in the records of {scores_path}" if targets_path is not None else str(scores_path)
        raise InputError(f"--by {by!r}: no such column in {where}")
    group_column = _resolve_group(group, joined, level, [ratings.group_column if ratings else None, "layout_id"])
    table = correlation_table(joined, columns, by, bootstrap, group=group_column)

    rows = []
    overall = table[table["group"] == "all"]
    for column in columns:
        part = overall[overall["score"] == column].set_index("method")
        values = {m: {k: part.at[m, k] for k in ("value", "ci_low", "ci_high")} for m in CORRELATION_METHODS}
        usable = joined[[column, "target"]].dropna()
        extra = {}
        if group_column:
            extra["n_groups"] = int(joined.loc[usable.index, group_column].nunique())
        rows.append(ResultRow(
            name=column, values=values, label=SCORE_LABELS.get(column, column),
            n_images=int(len(usable)) if level == "image" else None,
            n_layouts=int(joined.loc[usable.index, "layout_id"].nunique()) if "layout_id" in joined else None,
            p_values={m: part.at[m, "p_value"] for m in CORRELATION_METHODS}, **extra,
        ))

    tables = {"correlations": table.to_dict(orient="records")}
    if ratings is not None and ratings.per_worker is not None:
        summary, pairs = inter_annotator(ratings.per_worker)
        tables["inter_annotator"] = summary
        tables["inter_annotator_pairs"] = pairs
        settings["inter_annotator"] = {r["statistic"]: r["value"] for r in summary}
        settings["inter_annotator"]["n_images_all_workers"] = summary[0]["n_images"]

    figures: list[str] = []
    if plot and columns:
        long = joined.melt(id_vars=["target"] + ([by] if by else []), value_vars=columns,
                           var_name="score_name", value_name="score").dropna(subset=["score", "target"])
        long["score_name"] = long["score_name"].map(lambda c: SCORE_LABELS.get(c, c))
        figures = plots.scatter_fit(long, target, out_dir, hue=by)

    if targets_path is None:
        inputs = [input_ref("ratings", scores_path, result_path)]
    else:
        inputs = [input_ref("scores", scores_path, result_path), input_ref("targets", targets_path, result_path)]
    n_groups = int(joined[group_column].nunique()) if group_column else None
    result = BenchResult(
        study="correlate",
        inputs=inputs,
        models=models_from_manifest(scores_path) if scores_file else {},
        settings={**bootstrap.settings(), "target": target, "level": level, "aggregate": aggregate if level == "layout" else None,
                  "by": by, "group": group_column, "n_groups": n_groups,
                  "bootstrap_unit": group_column if group_column and n_groups < len(joined) else "row",
                  "ratings_format": ratings.kind if ratings else None,
                  "ratings_layout": ratings.layout if ratings else None,
                  "image_column": ratings.image_column if ratings else None,
                  "score_columns": columns,
                  "n_failed_candidates": n_failed, "unscored_layouts": unscored, **settings},
        metrics=METRICS,
        rows=rows,
        tables=tables,
        figures=figures,
    )
    write_result(result, result_path)
    return result
