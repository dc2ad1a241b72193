"""``clis bench agreement``: do CLIS's decisions per object and per layout agree with people?

Reads a scores.jsonl (``clis score``) and one or more ``clis.labels/1`` files (exported by the
site of ``clis annotate build``, or merged by ``clis annotate merge``) and reports:

* **per object:** the ROC AUC of the instance score ``S_k`` against the human yes/no, and the
  accuracy, precision and recall of the ``--min-instance`` threshold; the same for each CLIS-I
  term the records carry (``region``, ``grounding``, ``detection`` = 100 * IoU, or a judge's
  ``context`` and ``crop``), so one sees which term carries the signal;
* **per layout:** best-of-N agreement, how often a score's top candidate is the one the
  annotator judged best, against the chance level 1/N, for ``clis``, ``clis_i`` and the
  CLIPScore baseline ``global``; and the AUC of CLIS-L against "is this layout plausible?";
* **between annotators**, where several labelled the same items: Cohen's kappa per pair
  (scikit-learn), Fleiss' kappa over the items every annotator labelled (statsmodels), and
  the share of layouts where two annotators chose the same best candidate. This is the
  ceiling a metric can be expected to reach.

Every annotator's answer counts once. Answers about one layout are not independent, so every
interval is a bootstrap over layouts (:class:`benchmarks.stats.Clusters`). A "partly" answer
is ``no`` by default (a kept box should hold its object fully), ``yes`` or left out with
``--partly yes|drop``.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from benchmarks import plots
from benchmarks.join import ImageMatcher
from benchmarks.results import BenchResult, MetricDef, ResultRow, check_study_paths, input_ref, models_from_manifest, \
    plot_files, write_result
from benchmarks.scorefile import SCORE_LABELS, read_score_records
from benchmarks.stats import BootstrapConfig, Clusters, Estimate, check_finite, rate
from clis.errors import InputError

PARTLY = ("no", "yes", "drop")
# Per-instance terms of the records, in display order; the first is the instance score S_k.
INSTANCE_TERMS = ("score", "region", "grounding", "detection", "context", "crop")
TERM_LABELS = {"score": "instance score", "region": "region CLIP", "grounding": "grounding",
               "detection": "detection (100·IoU)", "context": "judge: in context", "crop": "judge: crop"}
# Result rows are named by the score; the record's instance ``score`` is S_k.
ROW_NAMES = {"score": "instance_score"}
OBJECT_FIGURES = ("auc", "accuracy", "precision", "recall")
LAYOUT_FIGURES = ("best_of_n", "chance")
BEST_OF_N_SCORES = ("clis", "clis_i", "global")
RELIABILITY_EDGES = tuple(range(0, 101, 10))

METRICS = [
    MetricDef(key="auc", label="ROC AUC", description="P(a yes object scores above a no object); 0.5 is chance"),
    MetricDef(key="accuracy", label="accuracy", description="share of answers the threshold gets right"),
    MetricDef(key="precision", label="precision", description="share of kept (score >= threshold) that people call yes"),
    MetricDef(key="recall", label="recall", description="share of yes answers the threshold keeps"),
    MetricDef(key="best_of_n", label="best-of-N", description="share of layouts where the score's top candidate is "
              "the annotator's best (ties share the credit)"),
    MetricDef(key="chance", label="chance", description="best-of-N of a random pick: mean of 1/N"),
]


@dataclass(frozen=True)
class Joined:
    """Labels joined to the scores: one row per answer."""

    objects: pd.DataFrame  # annotator, layout_id, image, object_id, label, human (1/0), INSTANCE_TERMS...
    layouts: pd.DataFrame  # annotator, layout_id, best (matched image or None), plausible, clis_l, human (1/0)
    candidates: pd.DataFrame  # scored candidates: layout_id, image, clis, clis_i, clis_l, global
    n_unscored: int  # object answers about candidates whose scoring failed (left out)


def check_partly(partly: str) -> str:
    if partly not in PARTLY:
        raise InputError(f"--partly {partly!r}: use one of {', '.join(PARTLY)}")
    return partly


def human_yes(labels: pd.Series, partly: str) -> pd.Series:
    """1.0 for yes, 0.0 for no, and "partly" as ``partly`` says (NaN when dropped)."""
    partly_value = {"no": 0.0, "yes": 1.0, "drop": math.nan}[check_partly(partly)]
    return labels.map({"yes": 1.0, "no": 0.0, "partly": partly_value}).astype(float)


def _term(instance: dict[str, Any], term: str) -> float:
    value = instance.get(term)
    if term == "detection":
        if not isinstance(value, dict):
            return math.nan
        iou = value.get("iou") if value.get("found") else 0.0
        return 100.0 * float(iou) if isinstance(iou, (int, float)) and not isinstance(iou, bool) else math.nan
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def instance_frame(numbered: Sequence[tuple[int, dict[str, Any], Any]], scores_path: str | os.PathLike) -> pd.DataFrame:
    """One row per instance of every scored (error-free) record, with each term's value.

    ``numbered`` is :func:`benchmarks.scorefile.read_score_records`'s. An object listed twice
    in one record is an error: its answer would be counted twice, against two scores."""
    rows = []
    for lineno, record, _ in numbered:
        if record.get("error"):
            continue
        seen: set[str] = set()
        for k, instance in enumerate(record.get("instances") or []):
            if isinstance(instance, dict) and isinstance(instance.get("object_id"), str):
                if instance["object_id"] in seen:
                    raise InputError(f"{scores_path}:{lineno}, field 'instances[{k}].object_id': "
                                     f"{instance['object_id']!r} is listed twice in this record")
                seen.add(instance["object_id"])
                rows.append({"image": record["image"], "object_id": instance["object_id"],
                             **{term: _term(instance, term) for term in INSTANCE_TERMS}})
    return pd.DataFrame(rows, columns=["image", "object_id", *INSTANCE_TERMS])


def _check_once(frame: pd.DataFrame, key: list[str], what: str) -> None:
    """One answer per annotator and item once images are matched: ``./c/0.png`` and
    ``c/0.png`` are one candidate, and two answers about it would count twice."""
    twice = frame[frame.duplicated(subset=key, keep=False)]
    if not twice.empty:
        first, second = twice["where"].iloc[0], twice["where"].iloc[1]
        raise InputError(f"{second}: annotator {twice['annotator'].iloc[1]!r} answers {what} "
                         f"{tuple(twice[key[1:]].iloc[1])!r} again (first in {first}); keep one answer")


def join_labels(scores_path: str | os.PathLike, labels, partly: str) -> Joined:
    """Match every answer of ``labels`` (a :class:`clis.annotate.labels.LabelSet`) to the scores.

    An answer naming an image or object the scores do not hold is an error naming the labels
    file and record: the labels were made for other candidates. Answers about candidates
    whose scoring failed are counted and left out."""
    numbered = read_score_records(scores_path)
    candidates = pd.DataFrame([row for _, _, row in numbered])
    matcher = ImageMatcher(candidates["image"], scores_path)
    failed = set(candidates.loc[candidates["error"].notna(), "image"])
    layout_of = dict(zip(candidates["image"], candidates["layout_id"]))
    instances = instance_frame(numbered, scores_path).set_index(["image", "object_id"])

    objects = labels.objects.copy()
    images, keep = [], []
    for row in objects.itertuples(index=False):
        image = matcher.match(row.image, f"{row.where} (annotator {row.annotator!r}), field 'image'")
        if layout_of[image] != row.layout_id:
            raise InputError(f"{row.where}, field 'layout_id': {row.layout_id!r} but {scores_path} scores "
                             f"{image!r} against layout {layout_of[image]!r}")
        if image not in failed and (image, row.object_id) not in instances.index:
            raise InputError(f"{row.where}, field 'object_id': {row.object_id!r} is not an instance of "
                             f"{image!r} in {scores_path}")
        images.append(image)
        keep.append(image not in failed)
    objects["image"] = images
    _check_once(objects, ["annotator", "image", "object_id"], "object")
    n_unscored = int(len(keep) - sum(keep))
    objects = objects[np.asarray(keep, dtype=bool)] if len(objects) else objects
    objects = objects.join(instances, on=["image", "object_id"])
    objects["human"] = human_yes(objects["label"], partly)

    layouts = labels.layouts.copy()
    best = []
    for row in layouts.itertuples(index=False):
        if row.best is None or (isinstance(row.best, float) and math.isnan(row.best)):
            best.append(None)
            continue
        image = matcher.match(row.best, f"{row.where} (annotator {row.annotator!r}), field 'best'")
        if layout_of[image] != row.layout_id:
            raise InputError(f"{row.where}, field 'best': {image!r} is a candidate of layout "
                             f"{layout_of[image]!r}, not of {row.layout_id!r}")
        best.append(image)
    layouts["best"] = best
    # A best candidate whose scoring failed cannot be compared with any score's pick.
    n_unscored += int(layouts["best"].isin(failed).sum())
    scored = candidates[candidates["error"].isna()]
    clis_l = scored.groupby("layout_id")["clis_l"].first()
    layouts["clis_l"] = layouts["layout_id"].map(clis_l).astype(float)
    layouts["human"] = layouts["plausible"].map({"yes": 1.0, "no": 0.0}).astype(float)  # "plausible?" as 1 / 0
    return Joined(objects=objects.reset_index(drop=True), layouts=layouts.reset_index(drop=True),
                  candidates=scored.reset_index(drop=True), n_unscored=n_unscored)


def label_warnings(labels) -> list[str]:
    """What a reader of the figures should know about how the labels were collected."""
    if labels.site.get("blind") is False:
        return ["the labels were collected on a site that showed the scores (clis annotate build --show-scores); "
                "annotators may have leaned towards them, so agreement with those scores can be overstated"]
    return []


# --- statistics of one table, each with an interval over layouts -------------------------

Columns = dict  # column name -> numpy array of the rows a statistic sees


def by_layout(frame: pd.DataFrame, statistic: Callable[[Columns], float], config: BootstrapConfig) -> Estimate:
    """``statistic(columns)`` over the rows of ``frame``, with a bootstrap interval that
    resamples whole layouts; the statistic gets each column as a numpy array (a pandas frame
    per resample cost more than the statistic itself)."""
    if frame.empty:
        return Estimate(None, None, None, 0)
    arrays = {column: frame[column].to_numpy() for column in frame.columns}
    clusters = Clusters(np.arange(len(frame)), frame["layout_id"].to_numpy())

    def resampled(members: list[np.ndarray]) -> float:
        rows = np.concatenate(members).astype(int)
        return statistic({column: values[rows] for column, values in arrays.items()})

    return clusters.estimate(resampled, config)


def roc_auc(human: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney share of (yes, no) pairs the score orders right, ties
    counting half (from average ranks, ``scipy.stats.rankdata``; equal to scikit-learn's
    ``roc_auc_score``); NaN when only one class is present (it is undefined)."""
    from scipy.stats import rankdata

    yes = np.asarray(human) == 1
    n_yes, n_no = int(yes.sum()), int(yes.size - yes.sum())
    if n_yes == 0 or n_no == 0:
        return math.nan
    ranks = rankdata(np.asarray(score, dtype=float))
    return float((ranks[yes].sum() - n_yes * (n_yes + 1) / 2) / (n_yes * n_no))


def threshold_rates(human: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, precision and recall of keeping ``score >= threshold`` (clis pick's rule)."""
    kept = score >= threshold
    yes = human == 1
    return {
        "accuracy": float(np.mean(kept == yes)) if human.size else math.nan,
        "precision": float(np.mean(yes[kept])) if kept.any() else math.nan,
        "recall": float(np.mean(kept[yes])) if yes.any() else math.nan,
    }


def decision_figures(frame: pd.DataFrame, column: str, threshold: float, config: BootstrapConfig) -> dict[str, Estimate]:
    """AUC and threshold rates of ``column`` against ``human`` (rows with both present)."""
    part = frame.dropna(subset=[column, "human"])

    part = part[["layout_id", "human", column]]

    def pair(f: Columns) -> tuple[np.ndarray, np.ndarray]:
        return f["human"].astype(float), f[column].astype(float)

    figures = {"auc": by_layout(part, lambda f: roc_auc(*pair(f)), config)}
    for key in OBJECT_FIGURES[1:]:
        figures[key] = by_layout(part, lambda f, key=key: threshold_rates(*pair(f), threshold)[key], config)
    return figures


def best_of_n_credits(layouts: pd.DataFrame, candidates: pd.DataFrame, score: str) -> pd.DataFrame:
    """Per (annotator, layout) with a best answer: the credit of ``score``'s pick (1 when its
    top candidate is the human's best, 1/k when that one ties with k - 1 others, else 0) and
    the chance 1/N of a random pick among the N scored candidates."""
    rows = []
    groups = {layout_id: part for layout_id, part in candidates.groupby("layout_id")}
    for row in layouts.itertuples(index=False):
        part = groups.get(row.layout_id)
        if row.best is None or part is None:
            continue
        part = part.dropna(subset=[score])
        if row.best not in set(part["image"]) or len(part) < 2:
            continue  # the human's best failed to score, or there was nothing to choose from
        top = part.loc[part[score] == part[score].max(), "image"]
        credit = 1.0 / len(top) if row.best in set(top) else 0.0
        rows.append({"annotator": row.annotator, "layout_id": row.layout_id, "credit": credit, "chance": 1.0 / len(part)})
    return pd.DataFrame(rows, columns=["annotator", "layout_id", "credit", "chance"])


# --- between annotators ----------------------------------------------------------------

def _kappa_rows(items: pd.DataFrame, key: list[str], value: str, what: str, config: BootstrapConfig) -> list[dict]:
    """Cohen's kappa for every pair of annotators on the items both answered, Fleiss' kappa
    on the items all answered; ``items`` has ``annotator``, ``layout_id``, ``key`` and ``value``.

    Both come from statsmodels (``cohens_kappa``, ``fleiss_kappa``) on count tables made here
    from integer codes of the answers: tabulating per resample with the libraries' own
    helpers (or scikit-learn's ``cohen_kappa_score``) cost milliseconds per call, most of a
    study's time. A kappa is undefined (NaN) where chance agreement is 1: both annotators
    gave one same answer throughout."""
    from statsmodels.stats.inter_rater import cohens_kappa, fleiss_kappa

    items = items.dropna(subset=[value])
    categories = {v: code for code, v in enumerate(sorted(items[value].astype(str).unique()))}
    k = max(len(categories), 1)
    items = items.assign(code=items[value].astype(str).map(categories))
    wide = items.pivot_table(index=["layout_id", *key], columns="annotator", values="code", aggfunc="first")
    wide = wide.reset_index()
    annotators = sorted(items["annotator"].unique())
    rows = []

    def quiet(func, table: np.ndarray) -> float:
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore")
            return float(func(table))

    def cohen(f: Columns, a: str, b: str) -> float:
        pairs = f[a].astype(int) * k + f[b].astype(int)
        table = np.bincount(pairs, minlength=k * k).reshape(k, k)
        return quiet(lambda t: cohens_kappa(t, return_results=False), table)

    for a, b in combinations(annotators, 2):
        shared = wide.dropna(subset=[a, b])
        if len(shared) < 2:
            continue
        est = by_layout(shared, lambda f, a=a, b=b: cohen(f, a, b), config)
        agree = float(np.mean(shared[a] == shared[b]))
        rows.append({"what": what, "measure": "cohen_kappa", "annotators": f"{a} | {b}", **est.interval(),
                     "n": len(shared), "raw_agreement": agree})
    if len(annotators) >= 2:
        full = wide.dropna(subset=annotators)
        if len(full) >= 2:
            def fleiss(f: Columns) -> float:
                codes = np.column_stack([f[a] for a in annotators]).astype(int)
                table = (codes[:, :, None] == np.arange(k)).sum(axis=1)  # items x categories: raters per answer
                return quiet(lambda t: fleiss_kappa(t, method="fleiss"), table)

            est = by_layout(full, fleiss, config)
            rows.append({"what": what, "measure": "fleiss_kappa", "annotators": " | ".join(annotators), **est.interval(),
                         "n": len(full), "raw_agreement": float(np.mean(full[annotators].nunique(axis=1) == 1))})
    return rows


def inter_annotator(joined: Joined, config: BootstrapConfig) -> list[dict]:
    """Agreement between annotators on objects (three answers, and yes/no after --partly),
    plausibility and the best candidate."""
    objects = joined.objects
    rows = _kappa_rows(objects, ["image", "object_id"], "label", "objects (yes/partly/no)", config)
    rows += _kappa_rows(objects, ["image", "object_id"], "human", "objects (yes/no)", config)
    layouts = joined.layouts.assign(item="layout")
    rows += _kappa_rows(layouts, ["item"], "plausible", "layout plausible", config)
    # Kappa needs one set of categories; the candidates differ per layout, so the best choice
    # gets the share of layouts where both chose the same candidate.
    best = layouts.dropna(subset=["best"]).pivot_table(index="layout_id", columns="annotator", values="best",
                                                       aggfunc="first").reset_index()
    for a, b in combinations(sorted(layouts["annotator"].unique()), 2):
        if a in best and b in best and len(shared := best.dropna(subset=[a, b])):
            est = by_layout(shared, lambda f, a=a, b=b: float(np.mean(f[a] == f[b])), config)
            rows.append({"what": "best candidate", "measure": "agreement", "annotators": f"{a} | {b}",
                         **est.interval(), "n": len(shared), "raw_agreement": est.value})
    return rows


# --- the study ---------------------------------------------------------------------------

def reliability_table(objects: pd.DataFrame, column: str, confidence: float) -> list[dict]:
    """Share of yes answers per score bin (Wilson intervals): is a score of 80 right 80% of the time?"""
    part = objects.dropna(subset=[column, "human"])
    edges = np.asarray(RELIABILITY_EDGES, dtype=float)
    bins = np.clip(np.digitize(part[column].to_numpy(dtype=float), edges[1:-1]), 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        human = part["human"].to_numpy()[bins == b]
        if human.size == 0:
            continue
        est = rate(int(human.sum()), int(human.size), confidence)
        rows.append({"score": column, "bin_low": edges[b], "bin_high": edges[b + 1],
                     "mean_score": float(part[column].to_numpy()[bins == b].mean()), "yes_rate": est.value,
                     "ci_low": est.ci_low, "ci_high": est.ci_high, "n": int(human.size)})
    return rows


def roc_table(objects: pd.DataFrame, columns: list[str]) -> list[dict]:
    from sklearn.metrics import roc_curve

    rows = []
    for column in columns:
        part = objects.dropna(subset=[column, "human"])
        if part["human"].nunique() < 2:
            continue
        fpr, tpr, thresholds = roc_curve(part["human"], part[column])
        rows += [{"score": column, "fpr": float(f), "tpr": float(t), "threshold": float(th) if np.isfinite(th) else None}
                 for f, t, th in zip(fpr, tpr, thresholds)]
    return rows


def agreement(
    scores_path: str | os.PathLike,
    label_paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    partly: str = "no",
    min_instance: float = 60.0,
    min_layout: float = 50.0,
    bootstrap: BootstrapConfig = BootstrapConfig(),
    plot: bool = True,
) -> BenchResult:
    """Run the study, write ``<out_dir>/result.json`` (+ ROC and reliability plots) and return it."""
    from clis.annotate.labels import read_labels

    check_partly(partly)
    min_instance = check_finite("--min-instance", min_instance, 0.0)
    min_layout = check_finite("--min-layout", min_layout, 0.0)
    out_dir = Path(out_dir)
    result_path = out_dir / "result.json"
    inputs = {"SCORES": scores_path, **{f"LABELS[{i}]": p for i, p in enumerate(label_paths)}}
    check_study_paths(out_dir, inputs, ["result.json", *plot_files("agreement_roc", "agreement_reliability")])
    labels = read_labels(label_paths)
    joined = join_labels(scores_path, labels, partly)
    objects = joined.objects
    answered = objects.dropna(subset=["human"])
    terms = [t for t in INSTANCE_TERMS if t in answered and answered[t].notna().any()]
    if answered.empty and joined.layouts["best"].isna().all() and joined.layouts["plausible"].isna().all():
        raise InputError(f"{', '.join(map(str, label_paths))}: no answer about a scored candidate to compare with")

    rows, object_table = [], []
    for term in terms:
        figures = decision_figures(objects, term, min_instance, bootstrap)
        part = objects.dropna(subset=[term, "human"])
        rows.append(ResultRow(name=ROW_NAMES.get(term, term), label=TERM_LABELS[term], values={k: e.interval() for k, e in figures.items()},
                              n_images=int(part["image"].nunique()), n_layouts=int(part["layout_id"].nunique()),
                              n_answers=int(len(part))))
        object_table += [{"score": term, "figure": k, **e.interval(), "n": int(len(part))} for k, e in figures.items()]

    layouts = joined.layouts
    if layouts["clis_l"].notna().any() and layouts["human"].notna().any():
        figures = decision_figures(layouts, "clis_l", min_layout, bootstrap)
        part = layouts.dropna(subset=["clis_l", "human"])
        rows.append(ResultRow(name="clis_l", label=SCORE_LABELS["clis_l"] + " vs plausible",
                              values={k: e.interval() for k, e in figures.items()},
                              n_layouts=int(part["layout_id"].nunique()), n_answers=int(len(part))))
        object_table += [{"score": "clis_l", "figure": k, **e.interval(), "n": int(len(part))} for k, e in figures.items()]

    best_table = []
    for score in BEST_OF_N_SCORES:
        if joined.candidates[score].isna().all():
            continue
        credits = best_of_n_credits(joined.layouts, joined.candidates, score)
        if credits.empty:
            continue
        est = by_layout(credits, lambda f: float(np.mean(f["credit"])), bootstrap)
        chance = by_layout(credits, lambda f: float(np.mean(f["chance"])), bootstrap)
        best_table.append({"score": score, **est.interval(), "chance": chance.value, "n": int(len(credits)),
                           "n_layouts": int(credits["layout_id"].nunique())})
        values = {"best_of_n": est.interval(), "chance": chance.interval()}
        existing = next((r for r in rows if r.name == score), None)
        if existing is None:
            rows.append(ResultRow(name=score, label=SCORE_LABELS.get(score, score), values=values,
                                  n_layouts=int(credits["layout_id"].nunique()), n_answers=int(len(credits))))
        else:
            existing.values.update(values)

    figures: list[str] = []
    reliability = [r for term in terms for r in reliability_table(objects, term, bootstrap.confidence)]
    roc = roc_table(objects, terms)
    if plot and roc:
        figures += plots.roc_curves(pd.DataFrame(roc), out_dir, labels=TERM_LABELS)
    if plot and reliability:
        figures += plots.reliability(pd.DataFrame(reliability), out_dir, labels=TERM_LABELS)

    result = BenchResult(
        study="agreement",
        inputs=[input_ref("scores", scores_path, result_path),
                *(input_ref("labels", p, result_path) for p in label_paths)],
        models=models_from_manifest(scores_path),
        settings={**bootstrap.settings(), "partly": partly, "min_instance": min_instance, "min_layout": min_layout,
                  "annotators": labels.annotators, "site": labels.site.get("id"),
                  "site_blind": labels.site.get("blind"), "warnings": label_warnings(labels),
                  "n_object_answers": int(objects["human"].notna().sum()),
                  "n_partly": int((objects["label"] == "partly").sum()),
                  "n_unscored_answers": joined.n_unscored,
                  "n_best_answers": int(joined.layouts["best"].notna().sum())},
        metrics=METRICS,
        rows=rows,
        tables={"objects": object_table, "best_of_n": best_table, "inter_annotator": inter_annotator(joined, bootstrap),
                "roc": roc, "reliability": reliability},
        figures=figures,
    )
    write_result(result, result_path)
    return result
