"""Seaborn figures of the studies, saved as PNG and SVG next to the result file.

Every function takes a tidy pandas table, draws one figure and returns the file names it
wrote (relative to ``out_dir``), which go into the result's ``figures`` list.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never open a window, work on headless machines

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def _plain_text(draw):
    """Draw with mathtext off: generator names, --by groups and column names are the user's
    text, and one holding ``$`` (``gen$1``, ``$\\bad{$``) would be parsed as TeX, which fails
    inside savefig (a ValueError after the study ran). The rcParam is read as each text is
    made, so it must hold while the figure is drawn and saved, not only at savefig."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context({"text.parse_math": False}):
            return draw(*args, **kwargs)

    return wrapper


def save(fig: plt.Figure, out_dir: str | os.PathLike, stem: str) -> list[str]:
    """Write ``<stem>.png`` and ``<stem>.svg`` and close the figure."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for ext in ("png", "svg"):
        fig.savefig(out_dir / f"{stem}.{ext}", dpi=120, bbox_inches="tight")
        names.append(f"{stem}.{ext}")
    plt.close(fig)
    return names


@_plain_text
def scatter_fit(data: pd.DataFrame, target: str, out_dir: str | os.PathLike, hue: str | None = None) -> list[str]:
    """One panel per score column: target vs score with a least-squares fit and its band.

    ``data`` is long: columns ``score_name``, ``score`` and ``target`` (plus ``hue``).
    """
    panels = data["score_name"].nunique()
    grid = sns.lmplot(
        data=data, x="score", y="target", col="score_name", hue=hue,
        col_wrap=min(panels, 4), height=3.0, facet_kws={"sharex": False, "sharey": True},
        scatter_kws={"s": 14, "alpha": 0.7}, ci=95, n_boot=200, seed=0,
    )
    grid.set_titles("{col_name}")
    grid.set_axis_labels("score", target)
    return save(grid.figure, out_dir, "correlate")


@_plain_text
def interval_points(
    data: pd.DataFrame, x: str, y: str, out_dir: str | os.PathLike, stem: str, *,
    hue: str | None = None, reference: float | None = None, xlabel: str | None = None,
) -> list[str]:
    """Point estimates with their intervals as horizontal error bars (one line per ``y``).

    ``data`` holds ``x`` (value), ``ci_low``, ``ci_high`` and ``y`` (a category).
    """
    data = data.dropna(subset=[x])
    categories = list(dict.fromkeys(data[y]))
    hues = list(dict.fromkeys(data[hue])) if hue else [None]
    fig, ax = plt.subplots(figsize=(6, 0.45 * max(len(categories) * max(len(hues), 1), 3) + 1))
    palette = sns.color_palette(n_colors=len(hues))
    step = 0.7 / max(len(hues), 1)
    for h, (hue_value, colour) in enumerate(zip(hues, palette)):
        part = data if hue is None else data[data[hue] == hue_value]
        pos = np.array([categories.index(c) for c in part[y]]) + (h - (len(hues) - 1) / 2) * step
        low = (part[x] - part["ci_low"].fillna(part[x])).clip(lower=0)
        high = (part["ci_high"].fillna(part[x]) - part[x]).clip(lower=0)
        ax.errorbar(part[x], pos, xerr=[low, high], fmt="o", color=colour, capsize=3,
                    label=None if hue is None else str(hue_value))
    if reference is not None:
        ax.axvline(reference, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(categories)), categories)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel or x)
    if hue:
        ax.legend(title=hue, loc="best", fontsize="small")
    return save(fig, out_dir, stem)


@_plain_text
def severity_lines(data: pd.DataFrame, out_dir: str | os.PathLike) -> list[str]:
    """Mean score (as a change from the clean image) against severity, one panel per kind.

    ``data`` is long: ``kind``, ``severity``, ``score_name``, ``delta``.
    """
    grid = sns.relplot(
        data=data, x="severity", y="delta", hue="score_name", col="kind", kind="line",
        col_wrap=4, height=2.6, marker="o", errorbar=("ci", 95), n_boot=200, seed=0,
        facet_kws={"sharey": False},
    )
    grid.set_titles("{col_name}")
    grid.set_axis_labels("severity", "score - clean score")
    for ax in grid.axes.flat:
        ax.axhline(0, color="grey", linewidth=0.8)
    return save(grid.figure, out_dir, "corrupt")


@_plain_text
def histogram_with_edges(values: pd.Series, edges: list[float], score: str, out_dir: str | os.PathLike) -> list[str]:
    """Distribution of a score with the bucket edges marked."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    sns.histplot(values.dropna(), bins=30, ax=ax)
    for edge in edges:
        ax.axvline(edge, color="crimson", linestyle="--", linewidth=1)
    ax.set_xlabel(score)
    ax.set_ylabel("candidates")
    return save(fig, out_dir, "buckets")


@_plain_text
def bucket_bars(data: pd.DataFrame, metric: str, out_dir: str | os.PathLike, series: str | None = None) -> list[str]:
    """The paper's bucket figure: downstream metric per score bucket, bars in bucket order."""
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * data["bucket"].nunique() + 2), 3.4))
    sns.barplot(data=data, x="bucket", y="metric", hue=series, ax=ax, errorbar=("ci", 95) if data.duplicated(
        subset=["bucket"] + ([series] if series else [])).any() else None, n_boot=200, seed=0)
    low = float(data["metric"].min())
    high = float(data["metric"].max())
    pad = max((high - low) * 0.5, abs(high) * 0.02, 1e-6)
    ax.set_ylim(low - pad, high + pad)  # the differences, not the absolute level, are the point
    for container in ax.containers:
        ax.bar_label(container, fmt="%.1f", fontsize="small")
    ax.set_xlabel("score bucket")
    ax.set_ylabel(metric)
    return save(fig, out_dir, "downstream")


@_plain_text
def accuracy_heatmap(data: pd.DataFrame, out_dir: str | os.PathLike) -> list[str]:
    """Pairwise accuracy (clean beats corrupted) per score and corruption kind."""
    table = data.pivot(index="score_name", columns="kind", values="accuracy")
    table = table.reindex(index=list(dict.fromkeys(data["score_name"])), columns=list(dict.fromkeys(data["kind"])))
    fig, ax = plt.subplots(figsize=(1.0 * table.shape[1] + 2.5, 0.5 * table.shape[0] + 1.5))
    sns.heatmap(table.astype(float), annot=True, fmt=".2f", vmin=0, vmax=1, cmap="RdYlGn", cbar_kws={"label": "accuracy"}, ax=ax)
    ax.set_xlabel("corruption")
    ax.set_ylabel("")
    return save(fig, out_dir, "corrupt_accuracy")


@_plain_text
def roc_curves(data: pd.DataFrame, out_dir: str | os.PathLike, labels: dict[str, str] | None = None) -> list[str]:
    """ROC curve of each score against human yes/no, with the chance diagonal.

    ``data`` is long: ``score``, ``fpr``, ``tpr``."""
    data = data.assign(score=data["score"].map(lambda s: (labels or {}).get(s, s)))
    fig, ax = plt.subplots(figsize=(5, 5))
    sns.lineplot(data=data, x="fpr", y="tpr", hue="score", drawstyle="steps-post", errorbar=None, ax=ax)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="false positive rate", ylabel="true positive rate")
    return save(fig, out_dir, "agreement_roc")


@_plain_text
def reliability(data: pd.DataFrame, out_dir: str | os.PathLike, labels: dict[str, str] | None = None) -> list[str]:
    """Share of human yes per score bin (with its interval) against the bin's mean score / 100.

    ``data`` is long: ``score``, ``mean_score``, ``yes_rate``, ``ci_low``, ``ci_high``."""
    data = data.assign(score=data["score"].map(lambda s: (labels or {}).get(s, s)))
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    palette = sns.color_palette(n_colors=data["score"].nunique())
    for colour, (name, part) in zip(palette, data.groupby("score", sort=False)):
        low = (part["yes_rate"] - part["ci_low"]).clip(lower=0)
        high = (part["ci_high"] - part["yes_rate"]).clip(lower=0)
        ax.errorbar(part["mean_score"], part["yes_rate"], yerr=[low, high], fmt="o-", capsize=3, color=colour,
                    label=str(name))
    ax.plot([0, 100], [0, 1], color="grey", linestyle="--", linewidth=1)
    ax.set(xlim=(0, 100), ylim=(0, 1), xlabel="score (bin mean)", ylabel="share of human yes")
    ax.legend(fontsize="small", loc="best")
    return save(fig, out_dir, "agreement_reliability")


@_plain_text
def precision_recall_thresholds(data: pd.DataFrame, out_dir: str | os.PathLike,
                                chosen: dict[str, float | None] | None = None) -> list[str]:
    """Precision and recall of keeping ``score >= threshold`` against the threshold, one panel
    per calibrated score, with the recommended threshold marked.

    ``data`` is long: ``score``, ``threshold``, ``precision``, ``recall``."""
    long = data.melt(id_vars=["score", "threshold"], value_vars=["precision", "recall"], var_name="figure")
    grid = sns.relplot(data=long, x="threshold", y="value", hue="figure", col="score", kind="line",
                       drawstyle="steps-post", height=3.2, facet_kws={"sharex": False})
    for name, ax in grid.axes_dict.items():
        if chosen and chosen.get(name) is not None:
            ax.axvline(chosen[name], color="grey", linestyle="--", linewidth=1)
    grid.set_titles("{col_name}")
    grid.set_axis_labels("threshold (kept: score >= it)", "")
    return save(grid.figure, out_dir, "calibrate")
