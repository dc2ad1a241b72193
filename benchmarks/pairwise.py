"""``clis bench pairwise``: how often does a score pick the image a person picked?

Input: a CSV of human A/B choices with columns ``image_a``, ``image_b`` and ``chosen``
(``a``, ``b``, the chosen image's id, or ``tie``). For each score column the agreement rate
is the share of pairs where the score ranks the chosen image higher.

Ties:
  * human ties (``tie``, ``=``, ``both``, ``neither``, ``none``, empty) carry no preference
    and are left out, and counted;
  * score ties (``|score_a - score_b| <= tie_tolerance``) follow ``score_ties``:
    ``drop`` (default) leaves the pair out and counts it, ``loss`` counts it as a
    disagreement (a score that cannot tell two images apart did not help), ``half`` counts
    it as half an agreement (what a coin flip would earn on average).

Intervals are Wilson score intervals. Under ``half`` the credits (0, 0.5, 1) are not
binomial, so the interval runs from the Wilson lower bound with every score tie lost to the
Wilson upper bound with every score tie won: it covers each way of resolving the ties, and
unlike a bootstrap it does not collapse to a point when every pair agrees.

Example:
    >>> import pandas as pd
    >>> scores = pd.DataFrame({"image": ["x", "y", "z"], "clis": [80.0, 60.0, 60.0]})
    >>> prefs = pd.DataFrame({"image_a": ["x", "y"], "image_b": ["y", "z"], "chosen": ["a", "b"]})
    >>> credits = pair_credits(scores.set_index("image")["clis"], prefs, "drop", 0.0)
    >>> credits.tolist()
    [1.0, nan]
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import plots
from benchmarks.join import ImageMatcher, check_scores_unique, read_table, require_columns
from benchmarks.results import (BenchResult, MetricDef, ResultRow, check_study_paths, input_ref, models_from_manifest,
                                plot_files, write_result)
from benchmarks.scorefile import SCORE_LABELS, present_score_columns, read_scores
from benchmarks.stats import BootstrapConfig, Estimate, check_finite, rate
from clis.errors import InputError

TIE_POLICIES = ("drop", "loss", "half")
HUMAN_TIES = {"tie", "=", "both", "neither", "none", ""}

METRICS = [
    MetricDef(key="agreement", label="agreement",
              description="share of human A/B choices the score agrees with (0.5 is chance)"),
]


def parse_choices(prefs: pd.DataFrame, matcher: ImageMatcher, path: str | os.PathLike) -> pd.DataFrame:
    """Resolve image ids and normalise ``chosen`` to ``"a"``, ``"b"`` or ``"tie"``."""
    require_columns(prefs, ["image_a", "image_b", "chosen"], path)
    resolved = []
    for i, (a, b, chosen) in enumerate(zip(prefs["image_a"], prefs["image_b"], prefs["chosen"])):
        where = f"{path}: row {i + 1}"
        image_a = matcher.match(a, f"{where}, column 'image_a'")
        image_b = matcher.match(b, f"{where}, column 'image_b'")
        if image_a == image_b:
            raise InputError(f"{where}: image_a and image_b are the same image {image_a!r}")
        text = str(chosen).strip()
        if text.lower() in ("a", "b"):
            side = text.lower()
        elif text.lower() in HUMAN_TIES:
            side = "tie"
        elif text in (a, b):
            side = "a" if text == a else "b"
        else:
            raise InputError(
                f"{where}, column 'chosen': {text!r} is not 'a', 'b', 'tie' or one of the pair's images"
            )
        resolved.append((image_a, image_b, side))
    return pd.DataFrame(resolved, columns=["image_a", "image_b", "chosen"], index=prefs.index)


def pair_credits(score: pd.Series, prefs: pd.DataFrame, score_ties: str, tie_tolerance: float) -> pd.Series:
    """Per pair: 1 (score agrees), 0 (disagrees), 0.5 or 0 for a score tie, NaN if left out.

    ``score`` maps image -> value; ``prefs`` has resolved ``image_a``, ``image_b``,
    ``chosen`` (human ties are NaN here: they carry no preference).
    """
    if score_ties not in TIE_POLICIES:
        raise InputError(f"unknown score-ties policy {score_ties!r}; use one of {', '.join(TIE_POLICIES)}")
    a = score.reindex(prefs["image_a"]).to_numpy(dtype=float)
    b = score.reindex(prefs["image_b"]).to_numpy(dtype=float)
    margin = np.where(prefs["chosen"].to_numpy() == "a", a - b, b - a)
    credit = np.where(margin > 0, 1.0, 0.0)
    tied = np.abs(a - b) <= tie_tolerance
    credit = np.where(tied, {"drop": math.nan, "loss": 0.0, "half": 0.5}[score_ties], credit)
    credit = np.where(np.isnan(a) | np.isnan(b) | (prefs["chosen"].to_numpy() == "tie"), math.nan, credit)
    return pd.Series(credit, index=prefs.index)


def agreement(credits: pd.Series, score_ties: str, config: BootstrapConfig) -> Estimate:
    """The agreement rate with its interval (see the module docstring)."""
    used = credits.dropna()
    if score_ties == "half":
        if used.empty:
            return Estimate(None, None, None, 0)
        wins, ties = int((used == 1.0).sum()), int((used == 0.5).sum())
        # No binomial p-value: half credits are not Bernoulli trials.
        low, high = rate(wins, used.size, config.confidence), rate(wins + ties, used.size, config.confidence)
        return Estimate(float(used.mean()), low.ci_low, high.ci_high, int(used.size))
    return rate(int(used.sum()), int(used.size), config.confidence)


def pairwise(
    scores_path: str | os.PathLike,
    preferences_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    score_ties: str = "drop",
    tie_tolerance: float = 0.0,
    by: str | None = None,
    bootstrap: BootstrapConfig = BootstrapConfig(),
    plot: bool = True,
) -> BenchResult:
    """Run the study, write ``<out_dir>/result.json`` (+ plots) and return the result."""
    if score_ties not in TIE_POLICIES:
        raise InputError(f"unknown score-ties policy {score_ties!r}; use one of {', '.join(TIE_POLICIES)}")
    check_finite("--tie-tolerance", tie_tolerance, minimum=0.0)
    out_dir = Path(out_dir)
    result_path = out_dir / "result.json"
    check_study_paths(out_dir, {"SCORES": scores_path, "PREFERENCES": preferences_path},
                      ["result.json", *plot_files("pairwise")])
    scores = read_scores(scores_path)
    check_scores_unique(scores, scores_path)
    raw = read_table(preferences_path)
    if by is not None:
        require_columns(raw, [by], preferences_path)
    prefs = parse_choices(raw, ImageMatcher(scores["image"], scores_path), preferences_path)
    if by is not None:
        prefs[by] = raw[by]
    ok = scores[scores["error"].isna()].set_index("image")
    columns = present_score_columns(ok)
    human_ties = int((prefs["chosen"] == "tie").sum())

    rows, records = [], []
    groups = [("all", prefs)] + ([(str(g), p) for g, p in prefs.groupby(by, sort=True)] if by else [])
    for group, part in groups:
        for column in columns:
            credits = pair_credits(ok[column], part, score_ties, tie_tolerance)
            a = ok[column].reindex(part["image_a"]).to_numpy(dtype=float)
            b = ok[column].reindex(part["image_b"]).to_numpy(dtype=float)
            preferred = (part["chosen"] != "tie").to_numpy()
            score_tie_count = int((preferred & (np.abs(a - b) <= tie_tolerance)).sum())
            est = agreement(credits, score_ties, bootstrap)
            records.append({"group": group, "score": column, "agreement": est.value, "ci_low": est.ci_low,
                            "ci_high": est.ci_high, "p_value": est.p_value, "n_pairs": est.n,
                            "n_score_ties": score_tie_count})
            if group == "all":
                rows.append(ResultRow(
                    name=column, label=SCORE_LABELS.get(column, column), values={"agreement": est.interval()},
                    n_images=int(pd.concat([part["image_a"], part["image_b"]]).nunique()),
                    n_pairs=est.n, n_score_ties=score_tie_count, n_human_ties=human_ties, p_value=est.p_value,
                ))
    table = pd.DataFrame.from_records(records)

    figures: list[str] = []
    if plot and not table.empty:
        data = table.assign(score_name=table["score"].map(lambda c: SCORE_LABELS.get(c, c)))
        figures = plots.interval_points(data, "agreement", "score_name", out_dir, "pairwise",
                                        hue="group" if by else None, reference=0.5,
                                        xlabel="agreement with human choices")
    result = BenchResult(
        study="pairwise",
        inputs=[input_ref("scores", scores_path, result_path), input_ref("preferences", preferences_path, result_path)],
        models=models_from_manifest(scores_path),
        settings={**bootstrap.settings(), "score_ties": score_ties, "tie_tolerance": tie_tolerance, "by": by,
                  "n_pairs": int(len(prefs)), "n_human_ties": human_ties},
        metrics=METRICS,
        rows=rows,
        tables={"agreement": table.to_dict(orient="records")},
        figures=figures,
    )
    write_result(result, result_path)
    return result
