"""``clis bench corrupt``: is the metric sensitive to what it should be, with no human data?

Every clean (image, layout) pair is corrupted by each kind in
:mod:`benchmarks.corruptions` at severities 1..3; the clean pair and all variants are
scored with the same :class:`clis.scorer.Scorer`. Per score column and kind it reports

* the pairwise accuracy: the share of (clean, corrupted) pairs where the clean one scores
  strictly higher (a score that does not move counts as a miss; ties are counted), with a
  Wilson interval;
* Kendall tau-b between severity (0 for clean, 1..3) and score, per image, averaged over
  images with a bootstrap interval (a sensitive score gives a tau near -1). Over all kinds,
  accuracy pools every pair and tau every (image, kind) ladder; the tau interval there
  resamples whole images, since the ladders of one image are not independent.

Results record the scorer's manifest (models with fingerprints, weights, settings, the
layout scorer's manifest) and a content hash of the image folder.

Any model spec works: tiny random models in tests, real ones on a GPU.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from benchmarks import plots
from benchmarks.corruptions import CORRUPTIONS, LEVELS, NotApplicable, apply, target_object
from benchmarks.results import (BenchResult, MetricDef, ResultRow, check_study_paths, input_ref, plot_files,
                                scorer_provenance, write_result)
from benchmarks.scorefile import SCORE_COLUMNS, SCORE_LABELS, present_score_columns, record_to_row, records_frame
from benchmarks.stats import BootstrapConfig, Clusters, check_finite, mean, pooled_mean, rate, severity_tau
from clis.errors import InputError
from clis.image_score.images import DEFAULT_MAX_PIXELS, ImageReadError, open_image
from clis.layout import Layout
from clis.outputs import write_csv_frame


def progress_bar(console: Console | None = None) -> Progress:
    """The bar studies show while scoring (stderr, so stdout stays for tables)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console or Console(stderr=True), transient=True)


def load_clean_pairs(images_dir: str | os.PathLike, layouts_path: str | os.PathLike, max_images: int | None = None) -> list[tuple[Path, Layout]]:
    """Every candidate image under ``images_dir`` with its layout (see clis.discovery)."""
    from clis.discovery import discover_candidates
    from clis.formats import load_layouts

    layouts = load_layouts(layouts_path)
    by_id = {layout.id: layout for layout in layouts}
    discovery = discover_candidates(images_dir, layouts)
    pairs = [(path, by_id[layout_id]) for layout_id, path in discovery.pairs()]
    if not pairs:
        raise InputError(f"{images_dir}: no image matches a layout of {layouts_path} (expected <id>.png, <id>/*.png or <id>_<k>.png)")
    return pairs[:max_images] if max_images else pairs


def make_variants(image: Image.Image, layout: Layout, kinds: Sequence[str], seed: int) -> Iterable[dict[str, Any]]:
    """The clean pair (level 0) and every applicable corrupted variant, as dicts."""
    yield {"kind": "clean", "level": 0, "image": image, "layout": layout}
    for k, kind in enumerate(kinds):
        for level in LEVELS:
            try:
                variant_image, variant_layout = apply(kind, level, image, layout, seed=seed + 1000 * k + level)
            except NotApplicable:
                continue
            yield {"kind": kind, "level": level, "image": variant_image, "layout": variant_layout}


def variant_layouts(layout: Layout, kinds: Sequence[str], seed: int) -> list[Layout]:
    """The layouts :func:`make_variants` pairs images with: the clean one (which every
    image-side variant keeps) and each applicable layout-side variant. No image is made."""
    blank = Image.new("RGB", (1, 1))
    found = [layout]
    for k, kind in enumerate(kinds):
        if CORRUPTIONS[kind].side != "layout":
            continue
        for level in LEVELS:
            try:
                _, variant = apply(kind, level, blank, layout, seed=seed + 1000 * k + level)
            except NotApplicable:
                continue
            found.append(variant)
    return found


def score_variants(
    scorer: Any, pairs: list[tuple[Path, Layout]], kinds: Sequence[str], seed: int,
    save_dir: Path | None = None, console: Console | None = None,
) -> pd.DataFrame:
    """Score clean and corrupted versions of every pair; one row per (image, kind, level)."""
    meta: list[dict[str, Any]] = []  # one entry per variant sent to the scorer, in order
    failed: list[dict[str, Any]] = []
    max_pixels = getattr(getattr(scorer, "config", None), "max_pixels", None) or DEFAULT_MAX_PIXELS

    def generate():
        for index, (path, layout) in enumerate(pairs):
            try:
                # As clis score reads images: a decompression bomb, a truncated or fake file, or
                # one past the scorer's pixel limit is this image's failure, not the study's.
                image = open_image(path, max_pixels)
            except ImageReadError as exc:
                failed.append({"source": str(path), "layout_id": layout.id, "kind": "clean", "level": 0,
                               "error": str(exc)})
                continue
            for variant in make_variants(image, layout, kinds, seed + index):
                meta.append({"source": str(path), "layout_id": layout.id, "kind": variant["kind"],
                             "level": variant["level"], "target": target_object(layout).id})
                if save_dir is not None:
                    out = save_dir / layout.id / f"{Path(path).stem}_{variant['kind']}_{variant['level']}.png"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    variant["image"].save(out)
                yield variant["image"], variant["layout"]

    rows = []
    per_image = 1 + len(kinds) * len(LEVELS)
    with progress_bar(console) as progress:
        layout_scores = getattr(scorer, "layout_scores", None)
        if layout_scores is not None and getattr(scorer, "layout_scorer", None) is not None:
            # CLIS-L of every distinct variant layout in one call: the LLM batches across layouts,
            # and scoring the pairs below finds each layout's score ready.
            layouts = [v for index, (_, layout) in enumerate(pairs) for v in variant_layouts(layout, kinds, seed + index)]
            statements = progress.add_task("CLIS-L of the clean and corrupted layouts", total=None)

            def on_layouts(stage: str, done: int, total: int) -> None:
                if stage == "statements":
                    progress.update(statements, completed=done, total=total)

            layout_scores(layouts, progress=on_layouts)
            progress.remove_task(statements)
        task = progress.add_task("scoring clean and corrupted images", total=len(pairs) * per_image)
        for record in scorer.score_pairs(generate()):
            # score_pairs keeps input order, so the n-th record belongs to the n-th scored variant
            info = meta[len(rows)]
            record = {**record, "image": f"{info['source']}#{info['kind']}-{info['level']}"}
            rows.append({**info, **record_to_row(record, f"variant {len(rows)}")})
            progress.update(task, advance=1)
    frame = records_frame(rows) if rows else pd.DataFrame(columns=["source", "kind", "level", *SCORE_COLUMNS])
    if failed:
        frame = pd.concat([frame, pd.DataFrame(failed)], ignore_index=True)
    frame["layout_id"] = frame["layout_id"].astype(str)
    return frame


def sensitivity_tables(frame: pd.DataFrame, columns: Sequence[str], kinds: Sequence[str],
                       config: BootstrapConfig, tie_tolerance: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per (score, kind) and per (score, kind, level): accuracy and tau (see the module
    docstring); and the tau of every (score, kind, image) ladder, for the tau over all kinds."""
    ok = frame[frame["error"].isna()] if "error" in frame else frame
    clean = ok[ok["kind"] == "clean"].set_index("source")
    per_kind, per_level, ladders = [], [], []
    for column in columns:
        for kind in kinds:
            part = ok[ok["kind"] == kind]
            part = part[part["source"].isin(clean.index)]
            base = clean.loc[part["source"], column].to_numpy(dtype=float)
            values = part[column].to_numpy(dtype=float)
            usable = ~(np.isnan(base) | np.isnan(values))
            wins = (base - values > tie_tolerance) & usable
            ties = (np.abs(base - values) <= tie_tolerance) & usable
            for level in LEVELS:
                at = (part["level"] == level).to_numpy() & usable
                est = rate(int(wins[at].sum()), int(at.sum()), config.confidence)
                per_level.append({"score": column, "kind": kind, "level": level, "accuracy": est.value,
                                  "ci_low": est.ci_low, "ci_high": est.ci_high, "n": est.n,
                                  "n_ties": int(ties[at].sum()),
                                  "mean_delta": float(np.mean(values[at] - base[at])) if at.any() else None})
            taus = []
            for source, group in part[usable].groupby("source"):
                ladder = pd.concat([pd.Series({0: clean.at[source, column]}), group.set_index("level")[column]])
                taus.append(severity_tau(ladder.index.to_numpy(), ladder.to_numpy()))
                ladders.append({"score": column, "kind": kind, "source": source, "tau": taus[-1]})
            acc = rate(int(wins.sum()), int(usable.sum()), config.confidence)
            tau = mean(taus, config)
            per_kind.append({"score": column, "kind": kind, "side": CORRUPTIONS[kind].side,
                             "accuracy": acc.value, "accuracy_ci_low": acc.ci_low, "accuracy_ci_high": acc.ci_high,
                             "n_pairs": acc.n, "n_ties": int(ties.sum()), "tau": tau.value,
                             "tau_ci_low": tau.ci_low, "tau_ci_high": tau.ci_high, "n_images": len(taus)})
    return pd.DataFrame(per_kind), pd.DataFrame(per_level), pd.DataFrame(ladders, columns=["score", "kind", "source", "tau"])


def _metrics(kinds: Sequence[str]) -> list[MetricDef]:
    metrics = [
        MetricDef(key="accuracy", label="accuracy (all kinds)",
                  description="share of (clean, corrupted) pairs where the clean image scores higher"),
        MetricDef(key="tau", label="τ (all kinds)", higher_is_better=False,
                  description="mean Kendall τ-b between severity and score over every (image, kind) ladder (-1: falls with every step)"),
    ]
    for kind in kinds:
        metrics.append(MetricDef(key=f"{kind}_accuracy", label=f"{kind} acc.",
                                 description=f"clean beats {kind} ({CORRUPTIONS[kind].side} side)"))
        metrics.append(MetricDef(key=f"{kind}_tau", label=f"{kind} τ", higher_is_better=False,
                                 description=f"Kendall τ-b between {kind} severity and score"))
    return metrics


def corrupt(
    images_dir: str | os.PathLike,
    layouts_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    scorer: Any = None,
    score_config: dict[str, Any] | None = None,
    kinds: Sequence[str] | None = None,
    max_images: int | None = None,
    tie_tolerance: float = 0.0,
    save_images: bool = False,
    bootstrap: BootstrapConfig = BootstrapConfig(),
    plot: bool = True,
    console: Console | None = None,
) -> BenchResult:
    """Run the study; write ``result.json``, ``variants.csv`` and the plots into ``out_dir``.

    Pass a ready ``scorer`` (anything with ``score_pairs``) or ``score_config`` keywords for
    :class:`clis.scorer.ScoreConfig` (``image_model``, ``detector``, ``layout_score``, ...).
    """
    kinds = list(kinds or CORRUPTIONS)
    unknown = [k for k in kinds if k not in CORRUPTIONS]
    if unknown:
        raise InputError(f"unknown corruption {unknown[0]!r}; use any of {', '.join(CORRUPTIONS)}")
    check_finite("--tie-tolerance", tie_tolerance, minimum=0.0)
    out_dir = Path(out_dir)
    result_path = out_dir / "result.json"
    check_study_paths(out_dir, {"IMAGES": images_dir, "LAYOUTS": layouts_path},
                      ["result.json", "variants.csv", *plot_files("corrupt", "corrupt_accuracy")],
                      folders=["variants"] if save_images else [])
    pairs = load_clean_pairs(images_dir, layouts_path, max_images)
    if scorer is None:
        from clis.scorer import ScoreConfig, Scorer

        scorer = Scorer(ScoreConfig.checked(score_config or {}, source="score settings"))

    out_dir.mkdir(parents=True, exist_ok=True)
    frame = score_variants(scorer, pairs, kinds, bootstrap.seed,
                           save_dir=out_dir / "variants" if save_images else None, console=console)
    models, scorer_record = scorer_provenance(scorer)  # after scoring: it lists the texts CLIP truncated
    unreadable = frame[(frame["kind"] == "clean") & frame["error"].notna() & ~frame["source"].isin(
        frame.loc[frame["error"].isna(), "source"])]
    failed_images = [{"image": str(r["source"]), "layout_id": str(r["layout_id"]), "error": str(r["error"])}
                     for _, r in unreadable.iterrows()]
    if len(failed_images) == len(pairs):
        raise InputError(f"{images_dir}: none of the {len(pairs)} images could be scored "
                         f"(first: {failed_images[0]['error']})")
    keep = ["source", "layout_id", "target", "kind", "level", "error", *SCORE_COLUMNS]
    write_csv_frame(frame[[c for c in keep if c in frame]], out_dir / "variants.csv")
    columns = present_score_columns(frame[frame["error"].isna()])
    per_kind, per_level, ladders = sensitivity_tables(frame, columns, kinds, bootstrap, tie_tolerance)

    rows = []
    for column in columns:
        part = per_kind[per_kind["score"] == column]
        ok = frame[frame["error"].isna()]
        wins = int(round((part["accuracy"].fillna(0) * part["n_pairs"]).sum()))
        overall = rate(wins, int(part["n_pairs"].sum()), bootstrap.confidence)
        # tau over all kinds pools every ladder, as accuracy pools every pair; the ladders of one
        # image share its content, so the interval resamples images.
        own = ladders[ladders["score"] == column]
        tau = Clusters(own["tau"], own["source"]).estimate(pooled_mean, bootstrap)
        values = {"accuracy": overall.interval(), "tau": tau.interval()}
        for _, r in part.iterrows():
            values[f"{r['kind']}_accuracy"] = {"value": r["accuracy"], "ci_low": r["accuracy_ci_low"], "ci_high": r["accuracy_ci_high"]}
            values[f"{r['kind']}_tau"] = {"value": r["tau"], "ci_low": r["tau_ci_low"], "ci_high": r["tau_ci_high"]}
        rows.append(ResultRow(name=column, label=SCORE_LABELS.get(column, column), values=values,
                              n_images=int(ok.loc[ok["kind"] == "clean", "source"].nunique()),
                              n_layouts=int(ok.loc[ok["kind"] == "clean", "layout_id"].nunique()),
                              n_pairs=overall.n))

    figures: list[str] = []
    if plot and columns:
        ok = frame[frame["error"].isna()]
        clean = ok[ok["kind"] == "clean"].set_index("source")
        long = []
        for kind in kinds:
            part = ok[ok["kind"] == kind]
            for column in columns:
                base = clean.loc[part["source"], column].to_numpy(dtype=float)
                long.append(pd.DataFrame({"kind": kind, "severity": 0, "score_name": SCORE_LABELS[column], "delta": 0.0,
                                          "source": part["source"].unique()}))
                long.append(pd.DataFrame({"kind": kind, "severity": part["level"].to_numpy(),
                                          "score_name": SCORE_LABELS[column], "delta": part[column].to_numpy(dtype=float) - base,
                                          "source": part["source"].to_numpy()}))
        figures += plots.severity_lines(pd.concat(long, ignore_index=True).dropna(subset=["delta"]), out_dir)
        figures += plots.accuracy_heatmap(per_kind.assign(score_name=per_kind["score"].map(SCORE_LABELS)), out_dir)

    n_failed = int(frame["error"].notna().sum())
    result = BenchResult(
        study="corrupt",
        inputs=[input_ref("images", images_dir, result_path), input_ref("layouts", layouts_path, result_path)],
        models=models,
        scorer=scorer_record,
        settings={**bootstrap.settings(), "kinds": kinds, "levels": list(LEVELS), "tie_tolerance": tie_tolerance,
                  "severities": {k: {"values": list(CORRUPTIONS[k].severities), "unit": CORRUPTIONS[k].unit} for k in kinds},
                  "n_images": len(pairs), "n_variants_scored": int(len(frame) - n_failed), "n_failed": n_failed,
                  "n_failed_images": len(failed_images), "failed_images": failed_images},
        metrics=_metrics(kinds),
        rows=rows,
        tables={"per_kind": per_kind.to_dict(orient="records"), "per_level": per_level.to_dict(orient="records")},
        figures=figures,
        variants_file="variants.csv",
    )
    write_result(result, result_path)
    return result
