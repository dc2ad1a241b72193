"""``clis bench layouts``: does CLIS-L prefer real layouts to corrupted twins? No images needed.

Every selected layout gets the twins of :mod:`benchmarks.layout_twins` (``flip``, ``swap``,
``scale`` at 1.5/2/3, ``shift`` at 0.1/0.2/0.4, ``random``); the real layouts and all their
twins are scored by one :class:`clis.layout_score.LayoutScorer` in a single
``score_layouts`` call (the scorer batches LLM statements across layouts and caches
results). A real layout should score above its twins. Per corruption, per severity and per
score source (``clis_l`` and each of ``llm``, ``geometry``, ``pair_prior`` that has values):

* **win rate** of the real layout over its twin: ties (``|real - twin| < 1e-9``) count half,
  with a Wilson score interval computed from the rate and n (scipy's for integer counts);
  wins, ties, losses and n;
* **mean margin** ``real - twin`` with a bootstrap interval;
* **Kendall τ-b** between severity (0 = the real layout, then each level) and score, per
  layout, averaged over the layouts where it is defined (a score equal at every level has
  none), for ``scale`` and ``shift``: a metric that falls with severity has τ < 0;
* the **share scoring >= threshold** (default 50, ``clis pick``'s default ``--min-layout``)
  of the real layouts and of each corruption's twins, with Wilson intervals.

A pair where either side has no score (error, or the source was not computed) is left out
of that source's figures and counted (``n_missing``); a twin whose corruption does not apply
to the layout is counted as ``n_not_applicable``.

Example (a fake scorer preferring objects high in the picture, so flips of top-heavy
layouts lose):
    >>> import tempfile
    >>> from types import SimpleNamespace
    >>> from clis.layout import Layout
    >>> class Heights:
    ...     def score_layouts(self, layouts, progress=None):
    ...         return [SimpleNamespace(clis_l=100 - 100 * sum(o.center[1] for o in l.objects) / len(l.objects),
    ...                                 error=None) for l in layouts]
    >>> layouts = [Layout.model_validate({"id": f"l{i}", "objects": [
    ...     {"id": "a", "label": "kite", "bbox": [0.1, 0.05, 0.1, 0.1]},
    ...     {"id": "b", "label": "bird", "bbox": [0.5, 0.1 + 0.01 * i, 0.3, 0.2]}]}) for i in range(5)]
    >>> frame = pairs_frame(layouts, Heights(), seed=0)
    >>> wins = frame[frame["corruption"] == "flip"]["margin_clis_l"] > 0
    >>> int(wins.sum()), len(wins)
    (5, 5)
"""

from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import pandas as pd
from rich.console import Console
from rich import box
from rich.markup import escape
from rich.table import Table
from scipy import stats as sps

from benchmarks.layout_twins import CORRUPTIONS, DESCRIPTIONS, SEVERITIES, UNITS, Twin, format_severity, make_twins
from benchmarks.results import (BenchResult, MetricDef, ResultRow, check_study_paths, input_ref, model_specs, plot_files,
                                write_result)
from benchmarks.stats import BootstrapConfig, Clusters, mean, pooled_mean, rate
from clis import __version__
from clis.errors import InputError
from clis.layout import Layout
from clis.outputs import write_csv_frame

SOURCES = ("clis_l", "llm", "geometry", "pair_prior")
SOURCE_LABELS = {"clis_l": "CLIS-L", "llm": "LLM", "geometry": "geometry", "pair_prior": "pair prior"}
TIE = 1e-9  # |real - twin| below this is a tie, worth half a win
DEFAULT_THRESHOLD = 50.0  # clis pick --min-layout


# -- selection ------------------------------------------------------------------------------------


def parse_subset(items: Iterable[str]) -> dict[str, list[str]]:
    """``["sub-type=real", "type=x", "type=y"]`` -> ``{"sub-type": ["real"], "type": ["x", "y"]}``.

    A layout is kept when it matches every key, and a key given twice matches either value.

    >>> parse_subset(["sub-type=real"])
    {'sub-type': ['real']}
    """
    subset: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--subset {item!r}: expected KEY=VALUE (e.g. sub-type=real)")
        subset.setdefault(key, []).append(value.strip())
    return subset


def field_text(layout: Layout, key: str) -> Optional[str]:
    """A layout's field (``caption``, ``width``, ...) or extra key (``sub-type``) as text; None if absent."""
    value = getattr(layout, key) if key in type(layout).model_fields else (layout.model_extra or {}).get(key)
    return None if value is None else str(value)


def select_layouts(
    layouts: Sequence[Layout], subset: dict[str, list[str]] | None = None, min_objects: int = 2,
    max_objects: int | None = 6, min_labels: int = 2, limit: int | None = None,
) -> tuple[list[Layout], dict[str, int]]:
    """The layouts the study uses, in file order, and how many each filter dropped."""
    counts = {"n_layouts_read": len(layouts), "dropped_subset": 0, "dropped_objects": 0, "dropped_labels": 0}
    kept = []
    for layout in layouts:
        if subset and not all(field_text(layout, key) in values for key, values in subset.items()):
            counts["dropped_subset"] += 1
        elif len(layout.objects) < min_objects or (max_objects is not None and len(layout.objects) > max_objects):
            counts["dropped_objects"] += 1
        elif len(set(layout.labels)) < min_labels:
            counts["dropped_labels"] += 1
        else:
            kept.append(layout)
    counts["n_after_filters"] = len(kept)
    if limit is not None:
        kept = kept[:limit]
    counts["n_selected"] = len(kept)
    return kept, counts


# -- statistics -----------------------------------------------------------------------------------


def wilson_interval(p_hat: float, n: int, confidence: float = 0.95) -> tuple[Optional[float], Optional[float]]:
    """Wilson score interval of a rate ``p_hat`` observed over ``n`` trials (None, None for n = 0).

    ``(p + z²/2n ∓ z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``: for integer successes the same as
    ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``; written out so that rates
    with half-counted ties get one too.
    """
    if n <= 0:
        return None, None
    z = float(sps.norm.ppf(0.5 + confidence / 2))
    z2n = z * z / n
    centre = (p_hat + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(max(p_hat * (1 - p_hat) / n + z2n / (4 * n), 0.0)) / (1 + z2n)
    return max(centre - half, 0.0), min(centre + half, 1.0)


def win_record(margins: Sequence[float], config: BootstrapConfig, bootstrap: bool = True) -> dict[str, Any]:
    """Wins, ties, losses, the win rate (ties half) with its Wilson interval, and the mean margin."""
    values = np.asarray(margins, dtype=float)
    n = int(values.size)
    wins = int(np.sum(values >= TIE))
    ties = int(np.sum(np.abs(values) < TIE))
    losses = n - wins - ties
    value = (wins + 0.5 * ties) / n if n else None
    low, high = wilson_interval(value, n, config.confidence) if n else (None, None)
    margin = mean(values, config) if bootstrap else None
    return {"n": n, "wins": wins, "ties": ties, "losses": losses, "win_rate": value, "ci_low": low, "ci_high": high,
            "mean_margin": float(values.mean()) if n else None,
            "margin_ci_low": margin.ci_low if margin else None, "margin_ci_high": margin.ci_high if margin else None}


def ladder_tau(severities: Sequence[float], scores: Sequence[float]) -> Optional[float]:
    """Kendall τ-b (scipy) between severity and score of one layout's ladder; None when undefined
    (fewer than two points, or a score that is the same at every level)."""
    xs, ys = np.asarray(severities, dtype=float), np.asarray(scores, dtype=float)
    if xs.size < 2 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tau = sps.kendalltau(xs, ys).statistic
    return float(tau) if math.isfinite(tau) else None


# -- scoring --------------------------------------------------------------------------------------


def layout_score_config(config: str | os.PathLike | None = None, **options: Any):
    """:class:`LayoutScoreConfig` from a JSON settings file (optional) and options, as in
    ``clis score-layouts`` (:func:`clis.layout_score.scorer.config_from_options`)."""
    from clis.layout_score.scorer import config_from_options

    return config_from_options(config, **options)


def score_all(scorer: Any, layouts: list[Layout], n_real: int, console: Console | None = None) -> list[Any]:
    """All layouts scored in one ``score_layouts`` call, with a progress bar on stderr."""
    from benchmarks.corrupt import progress_bar

    with progress_bar(console) as progress:
        task = progress.add_task(f"CLIS-L of {n_real} layouts and {len(layouts) - n_real} twins (statements)",
                                 total=None)

        def on_progress(stage: str, done: int, total: int) -> None:
            if stage == "statements":
                progress.update(task, completed=done, total=total)

        results = list(scorer.score_layouts(layouts, progress=on_progress))
    if len(results) != len(layouts):
        raise RuntimeError(f"the scorer returned {len(results)} scores for {len(layouts)} layouts")
    return results


def _score_of(result: Any, source: str) -> Optional[float]:
    if result is None or getattr(result, "error", None):
        return None
    value = getattr(result, source, None)
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def pairs_frame(layouts: Sequence[Layout], scorer: Any, seed: int = 0, corruptions: Sequence[str] = CORRUPTIONS,
                console: Console | None = None) -> pd.DataFrame:
    """One row per (layout, twin), applicable or not, with real and twin scores per source.

    Columns: ``layout_id``, ``twin_id``, ``corruption``, ``severity`` (NaN without levels),
    ``level``, ``applicable``, ``n_objects``, ``n_labels``, ``real_error``, ``twin_error``, and for
    every source of :data:`SOURCES` with any value ``real_<s>``, ``twin_<s>`` and
    ``margin_<s>`` (real - twin).
    """
    twins: list[list[Twin]] = [make_twins(layout, seed, corruptions) for layout in layouts]
    batch = list(layouts) + [t.layout for group in twins for t in group if t.layout is not None]
    results = score_all(scorer, batch, len(layouts), console)
    real = results[:len(layouts)]
    scored = iter(results[len(layouts):])
    rows = []
    for layout, base, group in zip(layouts, real, twins):
        for twin in group:
            other = next(scored) if twin.layout is not None else None
            row = {"layout_id": layout.id, "twin_id": twin.twin_id, "corruption": twin.corruption,
                   "severity": twin.severity, "level": twin.level, "applicable": twin.layout is not None,
                   "n_objects": len(layout.objects), "n_labels": len(set(layout.labels)),
                   "real_error": getattr(base, "error", None) or None,
                   "twin_error": getattr(other, "error", None) or None}
            for source in SOURCES:
                a, b = _score_of(base, source), _score_of(other, source)
                row[f"real_{source}"] = a
                row[f"twin_{source}"] = b
                row[f"margin_{source}"] = None if a is None or b is None else a - b
            rows.append(row)
    frame = pd.DataFrame(rows, columns=["layout_id", "twin_id", "corruption", "severity", "level", "applicable",
                                        "n_objects", "n_labels", "real_error", "twin_error",
                                        *[f"{p}_{s}" for s in SOURCES for p in ("real", "twin", "margin")]])
    for source in SOURCES:
        for prefix in ("real", "twin", "margin"):
            frame[f"{prefix}_{source}"] = pd.to_numeric(frame[f"{prefix}_{source}"], errors="coerce").astype(float)
    frame["severity"] = pd.to_numeric(frame["severity"], errors="coerce").astype(float)
    return frame


def real_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per real layout (every layout has a row per corruption, applicable or not)."""
    return frame.drop_duplicates("layout_id")[["layout_id", "real_error", *[f"real_{s}" for s in SOURCES]]]


def present_sources(frame: pd.DataFrame) -> list[str]:
    """``clis_l`` and the other sources that have at least one value (real or twin)."""
    return [s for s in SOURCES if s == "clis_l" or frame[f"real_{s}"].notna().any() or frame[f"twin_{s}"].notna().any()]


# -- tables ---------------------------------------------------------------------------------------


def _share(values: np.ndarray, threshold: float, confidence: float) -> dict[str, Any]:
    values = values[~np.isnan(values)]
    est = rate(int(np.sum(values >= threshold)), int(values.size), confidence)
    return {"share": est.value, "ci_low": est.ci_low, "ci_high": est.ci_high, "n": est.n}


def _group_record(part: pd.DataFrame, source: str, threshold: float, config: BootstrapConfig) -> dict[str, Any]:
    applicable = part[part["applicable"]]
    usable = applicable.dropna(subset=[f"margin_{source}"])
    record = win_record(usable[f"margin_{source}"].to_numpy(dtype=float), config)
    passed = _share(applicable[f"twin_{source}"].to_numpy(dtype=float), threshold, config.confidence)
    record.update({
        "n_twins": int(len(applicable)), "n_not_applicable": int((~part["applicable"]).sum()),
        "n_missing": int(len(applicable) - len(usable)),
        "twin_pass_rate": passed["share"], "twin_pass_ci_low": passed["ci_low"],
        "twin_pass_ci_high": passed["ci_high"], "n_twins_scored": passed["n"],
    })
    return record


def layout_taus(frame: pd.DataFrame, source: str, corruption: str) -> pd.DataFrame:
    """τ of every layout's severity ladder (the real layout at 0, then each level it has scores for)."""
    part = frame[(frame["corruption"] == corruption) & frame["applicable"]].dropna(subset=[f"margin_{source}"])
    rows = []
    for layout_id, group in part.groupby("layout_id", sort=False):
        severities = [0.0, *group["severity"].to_list()]
        scores = [float(group[f"real_{source}"].iloc[0]), *group[f"twin_{source}"].to_list()]
        rows.append({"layout_id": layout_id, "tau": ladder_tau(severities, scores)})
    return pd.DataFrame(rows, columns=["layout_id", "tau"])


def study_tables(frame: pd.DataFrame, sources: Sequence[str], corruptions: Sequence[str], threshold: float,
                 config: BootstrapConfig) -> dict[str, pd.DataFrame]:
    """``per_corruption``, ``per_level``, ``threshold`` and ``taus`` (one τ per layout ladder)."""
    per_corruption, per_level, shares, taus = [], [], [], []
    reals = real_scores(frame)
    for source in sources:
        real = reals[f"real_{source}"].to_numpy(dtype=float)
        shares.append({"source": source, "group": "real", "corruption": None, "severity": None,
                       **_share(real, threshold, config.confidence), "threshold": threshold})
        for corruption in corruptions:
            part = frame[frame["corruption"] == corruption]
            record = {"source": source, "corruption": corruption, **_group_record(part, source, threshold, config)}
            if SEVERITIES[corruption]:
                ladders = layout_taus(frame, source, corruption)
                defined = ladders.dropna(subset=["tau"])
                tau = mean(defined["tau"].to_numpy(dtype=float), config)
                record.update({"tau": tau.value, "tau_ci_low": tau.ci_low, "tau_ci_high": tau.ci_high,
                               "n_tau_layouts": int(len(defined)),
                               "n_tau_undefined": int(len(ladders) - len(defined))})
                taus.extend({"source": source, "corruption": corruption, **r} for r in defined.to_dict("records"))
                for level, severity in enumerate(SEVERITIES[corruption], start=1):
                    at = part[part["level"] == level]
                    level_record = _group_record(at, source, threshold, config)
                    per_level.append({"source": source, "corruption": corruption, "severity": severity,
                                      "level": level, **level_record})
                    shares.append({"source": source, "group": f"{corruption}@{format_severity(severity)}",
                                   "corruption": corruption, "severity": severity,
                                   "share": level_record["twin_pass_rate"], "ci_low": level_record["twin_pass_ci_low"],
                                   "ci_high": level_record["twin_pass_ci_high"],
                                   "n": level_record["n_twins_scored"], "threshold": threshold})
            else:
                record.update({"tau": None, "tau_ci_low": None, "tau_ci_high": None, "n_tau_layouts": 0,
                               "n_tau_undefined": 0})
            per_corruption.append(record)
            shares.append({"source": source, "group": corruption, "corruption": corruption, "severity": None,
                           "share": record["twin_pass_rate"], "ci_low": record["twin_pass_ci_low"],
                           "ci_high": record["twin_pass_ci_high"], "n": record["n_twins_scored"],
                           "threshold": threshold})
    return {"per_corruption": pd.DataFrame(per_corruption), "per_level": pd.DataFrame(per_level),
            "threshold": pd.DataFrame(shares), "taus": pd.DataFrame(taus, columns=["source", "corruption",
                                                                                   "layout_id", "tau"])}


def _metrics(corruptions: Sequence[str], threshold: float) -> list[MetricDef]:
    t = f"{threshold:g}"
    metrics = [
        MetricDef(key="win_rate", label="win rate (all)",
                  description="share of (real, twin) pairs over every corruption and severity where the real layout "
                              "scores higher; ties count half"),
        MetricDef(key="tau", label="τ (all)", higher_is_better=False,
                  description="mean Kendall τ-b between severity and score over every layout's scale and shift "
                              "ladder (-1: falls with every step)"),
        MetricDef(key="real_pass_rate", label=f"real ≥ {t}",
                  description=f"share of real layouts scoring >= {t} (clis pick --min-layout)"),
    ]
    for corruption in corruptions:
        metrics.append(MetricDef(key=f"{corruption}_win_rate", label=f"{corruption} win",
                                 description=f"real beats its {corruption} twin ({DESCRIPTIONS[corruption]}); "
                                             "ties count half"))
        if SEVERITIES[corruption]:
            metrics.append(MetricDef(key=f"{corruption}_tau", label=f"{corruption} τ", higher_is_better=False,
                                     description=f"mean Kendall τ-b between {corruption} severity and score"))
        metrics.append(MetricDef(key=f"{corruption}_pass_rate", label=f"{corruption} ≥ {t}", higher_is_better=False,
                                 description=f"share of {corruption} twins scoring >= {t}"))
    return metrics


def _plain(value: Any) -> Any:
    """NaN as None and numpy scalars as Python numbers, for result records."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in record.items()} for record in frame.to_dict(orient="records")]


def _interval(value: Any, low: Any, high: Any) -> dict[str, Any]:
    return {"value": _plain(value), "ci_low": _plain(low), "ci_high": _plain(high)}


# -- output ---------------------------------------------------------------------------------------

def write_pairs(frame: pd.DataFrame, sources: Sequence[str], path: Path) -> Path:
    """``pairs.csv``: the pair table with the present sources, text cells neutralised."""
    columns = [c for c in frame.columns if not any(c.endswith(f"_{s}") for s in SOURCES)]
    columns += [f"{p}_{s}" for s in sources for p in ("real", "twin", "margin")]
    write_csv_frame(frame[columns], path)
    return path


def _row_names(corruptions: Sequence[str]) -> list[tuple[str, str, Optional[float]]]:
    """(name, corruption, severity) of the summary lines: each corruption, then its levels."""
    names = []
    for corruption in corruptions:
        names.append((corruption, corruption, None))
        for severity in SEVERITIES[corruption]:
            names.append((f"{corruption}@{format_severity(severity)}", corruption, severity))
    return names


def _plot(frame: pd.DataFrame, tables: dict[str, pd.DataFrame], sources: Sequence[str], corruptions: Sequence[str],
          threshold: float, out_dir: Path) -> list[str]:
    from benchmarks import plots

    import matplotlib.pyplot as plt
    import seaborn as sns

    figures: list[str] = []
    labels = {s: SOURCE_LABELS[s] for s in sources}
    # 1. win rate per corruption (and level) per source, with Wilson intervals, chance marked
    per_corruption, per_level = tables["per_corruption"], tables["per_level"]
    points = []
    for name, corruption, severity in _row_names(corruptions):
        if severity is None:
            part = per_corruption[per_corruption["corruption"] == corruption]
        else:
            part = per_level[(per_level["corruption"] == corruption) & np.isclose(per_level["severity"], severity)]
        for _, r in part.iterrows():
            points.append({"twin": name, "source": labels[r["source"]], "win_rate": r["win_rate"],
                           "ci_low": r["ci_low"], "ci_high": r["ci_high"]})
    points = pd.DataFrame(points, columns=["twin", "source", "win_rate", "ci_low", "ci_high"])
    points = points.dropna(subset=["win_rate"])
    if not points.empty:
        figures += plots.interval_points(points.astype({"win_rate": float, "ci_low": float, "ci_high": float}),
                                         "win_rate", "twin", out_dir, "layouts_win_rate", hue="source",
                                         reference=0.5, xlabel="win rate of the real layout over its twin")
    # 2. score distributions, real vs each corruption's twins, with the threshold
    long = []
    reals = real_scores(frame)
    for source in sources:
        long += [{"source": labels[source], "layouts": "real", "score": v}
                 for v in reals[f"real_{source}"].dropna()]
        ok = frame[frame["applicable"]].dropna(subset=[f"twin_{source}"])
        long += [{"source": labels[source], "layouts": c, "score": s}
                 for c, s in zip(ok["corruption"], ok[f"twin_{source}"])]
    long = pd.DataFrame(long, columns=["source", "layouts", "score"])
    if not long.empty:
        order = ["real", *[c for c in corruptions if c in set(long["layouts"])]]
        with warnings.catch_warnings():  # seaborn's boxplot passes matplotlib's deprecated vert=
            warnings.simplefilter("ignore", DeprecationWarning)
            grid = sns.catplot(data=long, x="score", y="layouts", col="source", kind="box", order=order,
                               col_wrap=min(len(sources), 2), height=3.0, aspect=1.3, sharex=True, fliersize=2,
                               color="lightsteelblue")
        for ax in grid.axes.flat:
            ax.axvline(threshold, color="crimson", linestyle="--", linewidth=1)
        grid.set_titles("{col_name}")
        grid.set_axis_labels("score", "")
        figures += plots.save(grid.figure, out_dir, "layouts_scores")
    # 3. score change against severity for the corruptions with levels
    ladders = []
    for corruption in corruptions:
        if not SEVERITIES[corruption]:
            continue
        for source in sources:
            ok = frame[(frame["corruption"] == corruption) & frame["applicable"]].dropna(subset=[f"margin_{source}"])
            if ok.empty:
                continue
            ladders += [{"corruption": corruption, "source": labels[source], "severity": 0.0, "delta": 0.0}
                        for _ in ok["layout_id"].unique()]
            ladders += [{"corruption": corruption, "source": labels[source], "severity": s, "delta": -m}
                        for s, m in zip(ok["severity"], ok[f"margin_{source}"])]
    ladders = pd.DataFrame(ladders, columns=["corruption", "source", "severity", "delta"])
    if not ladders.empty:
        grid = sns.relplot(data=ladders, x="severity", y="delta", hue="source", col="corruption", kind="line",
                           marker="o", errorbar=("ci", 95), n_boot=200, seed=0, height=2.8,
                           facet_kws={"sharex": False, "sharey": False})
        for ax in grid.axes.flat:
            ax.axhline(0, color="grey", linewidth=0.8)
        grid.set_titles("{col_name}")
        grid.set_axis_labels("severity (0 = real)", "twin score - real score")
        figures += plots.save(grid.figure, out_dir, "layouts_severity")
    plt.close("all")
    return figures


def layouts_study(
    layouts_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    scorer: Any = None,
    score_options: dict[str, Any] | None = None,
    subset: Sequence[str] | dict[str, list[str]] = (),
    min_objects: int = 2,
    max_objects: int | None = 6,
    min_labels: int = 2,
    limit: int | None = None,
    corruptions: Sequence[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    bootstrap: BootstrapConfig = BootstrapConfig(),
    plot: bool = True,
    console: Console | None = None,
) -> BenchResult:
    """Run the study; write ``result.json``, ``pairs.csv`` and the plots into ``out_dir``.

    Pass a ready ``scorer`` (anything with ``score_layouts(layouts, progress=None)`` returning
    objects with the :data:`SOURCES` attributes and ``error``), or ``score_options``: keywords
    of :func:`layout_score_config` (``config`` file, ``llm``, ``pool``, ``weights``, ...). The
    twins' seed is ``bootstrap.seed``.
    """
    from clis.formats import read_layouts

    started = time.perf_counter()
    corruptions = list(dict.fromkeys(corruptions or CORRUPTIONS))  # one named twice is compared once
    unknown = [c for c in corruptions if c not in SEVERITIES]
    if unknown:
        raise InputError(f"unknown corruption {unknown[0]!r}; use any of {', '.join(CORRUPTIONS)}")
    if not math.isfinite(threshold):  # a NaN share would be 0 everywhere, and the result file's threshold null
        raise InputError(f"--threshold {threshold}: must be a finite number (a score between 0 and 100)")
    if max_objects is not None and max_objects < min_objects:
        raise InputError(f"--max-objects {max_objects} is below --min-objects {min_objects}")
    parsed = subset if isinstance(subset, dict) else parse_subset(subset)
    out_dir = Path(out_dir)
    result_path = out_dir / "result.json"
    check_study_paths(out_dir, {"LAYOUTS": layouts_path, "--config": (score_options or {}).get("config")},
                      ["result.json", "pairs.csv", *plot_files("layouts_win_rate", "layouts_scores", "layouts_severity")])

    report = read_layouts(layouts_path)  # LayoutFileError (one line, exit 2) for an unusable file
    selected, counts = select_layouts(report.layouts, parsed, min_objects, max_objects, min_labels, limit)
    if not selected:
        raise InputError(
            f"{layouts_path}: no layout left after selection ({counts['n_layouts_read']} read; dropped: "
            f"{counts['dropped_subset']} by --subset, {counts['dropped_objects']} by --min/--max-objects, "
            f"{counts['dropped_labels']} by --min-labels)")
    owned = scorer is None
    if owned:
        from clis.layout_score import LayoutScorer

        config = layout_score_config(**(score_options or {}))  # checked before any model loads
        scorer = LayoutScorer(config)
    try:
        frame = pairs_frame(selected, scorer, bootstrap.seed, corruptions, console)
        manifest = scorer.manifest() if callable(getattr(scorer, "manifest", None)) else None
        cache = scorer.cache_info() if callable(getattr(scorer, "cache_info", None)) else None
    finally:
        if owned:
            scorer.close()

    sources = present_sources(frame)
    tables = study_tables(frame, sources, corruptions, threshold, bootstrap)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_pairs(frame, sources, out_dir / "pairs.csv")

    per_corruption, shares, taus = tables["per_corruption"], tables["threshold"], tables["taus"]
    reals = real_scores(frame)
    rows = []
    for source in sources:
        usable = frame[frame["applicable"]].dropna(subset=[f"margin_{source}"])
        overall = win_record(usable[f"margin_{source}"].to_numpy(dtype=float), bootstrap, bootstrap=False)
        own_taus = taus[taus["source"] == source]
        tau = Clusters(own_taus["tau"], own_taus["layout_id"]).estimate(pooled_mean, bootstrap)
        real = shares[(shares["source"] == source) & (shares["group"] == "real")].iloc[0]
        values = {"win_rate": _interval(overall["win_rate"], overall["ci_low"], overall["ci_high"]),
                  "tau": tau.interval(), "real_pass_rate": _interval(real["share"], real["ci_low"], real["ci_high"])}
        for _, r in per_corruption[per_corruption["source"] == source].iterrows():
            values[f"{r['corruption']}_win_rate"] = _interval(r["win_rate"], r["ci_low"], r["ci_high"])
            if SEVERITIES[r["corruption"]]:
                values[f"{r['corruption']}_tau"] = _interval(r["tau"], r["tau_ci_low"], r["tau_ci_high"])
            values[f"{r['corruption']}_pass_rate"] = _interval(r["twin_pass_rate"], r["twin_pass_ci_low"],
                                                               r["twin_pass_ci_high"])
        rows.append(ResultRow(
            name=source, label=SOURCE_LABELS[source], values=values, n_images=None,
            n_layouts=int(real["n"]), n_pairs=overall["n"], wins=overall["wins"], ties=overall["ties"],
            losses=overall["losses"], n_tau_layouts=int(tau.n),
            n_not_applicable=int((~frame["applicable"]).sum()),
            n_missing=int(frame["applicable"].sum() - len(usable)),
        ))

    figures = _plot(frame, tables, sources, corruptions, threshold, out_dir) if plot and sources else []
    models = model_specs({"layout": manifest}) if manifest else {}
    applicable = frame[frame["applicable"]]
    result = BenchResult(
        study="layouts",
        inputs=[input_ref("layouts", layouts_path, result_path)],
        models=models,
        scorer={"tool": "clis", "version": __version__, "models": {"layout": manifest}} if manifest else None,
        settings={
            **bootstrap.settings(), "corruptions": corruptions, "twin_seed": bootstrap.seed,
            "severities": {c: {"values": list(SEVERITIES[c]), "unit": UNITS.get(c)} for c in corruptions
                           if SEVERITIES[c]},
            "threshold": threshold, "tie_tolerance": TIE, "sources": sources,
            "selection": {"subset": parsed, "min_objects": min_objects, "max_objects": max_objects,
                          "min_labels": min_labels, "limit": limit},
            **counts, "n_invalid_records": len(report.invalid),
            "n_twins": int(len(applicable)), "n_not_applicable": int((~frame["applicable"]).sum()),
            "n_failed_layouts": int(reals["real_error"].notna().sum()),
            "n_failed_twins": int(applicable["twin_error"].notna().sum()),
        },
        metrics=_metrics(corruptions, threshold),
        rows=rows,
        tables={name: _records(tables[name]) for name in ("per_corruption", "per_level", "threshold")},
        figures=figures,
        pairs_file="pairs.csv",
        run={"seconds": round(time.perf_counter() - started, 2), "cache": cache},
    )
    write_result(result, result_path)
    return result


def summary_table(result: BenchResult) -> Table:
    """Rows: the real layouts, then each corruption and its levels; per source the win rate
    [Wilson interval] and the share scoring >= the threshold."""
    settings = result.settings
    sources = [row.name for row in result.rows]
    threshold = f"{settings.get('threshold', DEFAULT_THRESHOLD):g}"
    per_corruption = result.tables.get("per_corruption", [])
    per_level = result.tables.get("per_level", [])
    shares = {(r["source"], r["group"]): r for r in result.tables.get("threshold", [])}

    def pct(value: Any) -> str:
        return "–" if value is None else f"{100 * value:.0f}"

    def cell(record: dict | None) -> str:
        if not record or record.get("win_rate") is None:
            return "–"
        return f"{pct(record['win_rate'])} [{pct(record['ci_low'])}–{pct(record['ci_high'])}]"

    level = f"{100 * settings.get('confidence', 0.95):g}%"
    table = Table(title=escape(f"clis bench layouts: {settings.get('n_selected', '?')} real layouts vs their twins"),
                  caption=escape(f"in %. win: real beats twin, ties half [{level} Wilson]; ≥{threshold}: share "
                                 f"scoring >= {threshold} (first line: of the real layouts)"),
                  box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    table.add_column("twins", style="bold", no_wrap=True)
    table.add_column("pairs", justify="right", no_wrap=True, min_width=5)
    table.add_column("n/a", justify="right", no_wrap=True, min_width=3)
    for source in sources:
        table.add_column(f"{SOURCE_LABELS.get(source, source)}\nwin [CI]", justify="right", no_wrap=True)
        table.add_column(f"\n≥{threshold}", justify="right", no_wrap=True)
    first = sources[0] if sources else None
    table.add_row("real", str(settings.get("n_selected", "")), "",
                  *[x for s in sources for x in ("", pct((shares.get((s, "real")) or {}).get("share")))])
    for name, corruption, severity in _row_names(settings.get("corruptions", [])):
        if severity is None:
            records = {r["source"]: r for r in per_corruption if r["corruption"] == corruption}
        else:
            records = {r["source"]: r for r in per_level
                       if r["corruption"] == corruption and math.isclose(r["severity"], severity)}
        head = records.get(first) or {}
        cells = [x for s in sources for x in (cell(records.get(s)), pct((shares.get((s, name)) or {}).get("share")))]
        table.add_row(name if severity is None else f"  {name}", str(head.get("n_twins", "")),
                      str(head.get("n_not_applicable", "")), *cells)
    return table


def tau_line(result: BenchResult) -> str:
    """``τ (severity vs score, < 0 is good): scale: CLIS-L -0.41 (n=18), ...``."""
    parts = []
    for corruption in result.settings.get("corruptions", []):
        if not SEVERITIES.get(corruption):
            continue
        found = [f"{SOURCE_LABELS.get(r['source'], r['source'])} "
                 f"{'–' if r['tau'] is None else format(r['tau'], '+.2f')} (n={r['n_tau_layouts']})"
                 for r in result.tables.get("per_corruption", []) if r["corruption"] == corruption]
        parts.append(f"{corruption}: " + ", ".join(found))
    return "Kendall τ, severity vs score (< 0 is good): " + "; ".join(parts) if parts else ""
