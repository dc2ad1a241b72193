"""Statistics for the benchmark studies, all computed by ``scipy.stats``.

Every figure a study reports is an :class:`Estimate`: a point value with a confidence
interval. Correlations, means and medians get bootstrap intervals
(``scipy.stats.bootstrap``); rates of successes get Wilson score intervals
(``scipy.stats.binomtest(...).proportion_ci``), which stay inside 0..1 and behave well at
rates near 0 or 1 where a bootstrap of a handful of 0/1 values collapses.

Example:
    >>> from benchmarks.stats import BootstrapConfig, correlation, rate
    >>> est = correlation([1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5], "spearman",
    ...                   BootstrapConfig(n_resamples=200))
    >>> round(est.value, 4), est.ci_low <= est.value <= est.ci_high
    (0.8286, True)
    >>> r = rate(9, 10)
    >>> r.value, round(r.ci_low, 3), round(r.ci_high, 3)
    (0.9, 0.596, 0.982)
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats

from clis.errors import InputError
from clis.jsonio import finite_number

CORRELATION_METHODS = ("spearman", "kendall", "pearson")

# The smallest sample a correlation or its bootstrap is computed on: below it a resample
# is constant too often and the interval means nothing.
MIN_CORRELATION_N = 3

# The most resamples one interval may draw (``--bootstrap``): far past what an interval's
# ends need, while each resample still costs a Python call; 10**8 of them ran out of memory.
MAX_RESAMPLES = 100_000

# The most values one batch of resamples holds (rows x sample size): 2**22 floats is 32 MiB.
_BATCH_VALUES = 2**22


def check_finite(flag: str, value: float, minimum: float | None = None) -> float:
    """``value`` of option ``flag``, refused as one line when it is NaN, infinite or below
    ``minimum``: a NaN threshold fails every comparison and an infinite one passes (or fails)
    them all, so the study would run and report nothing meaningful."""
    if finite_number(value) is None:
        raise InputError(f"{flag} {value}: must be a finite number")
    if minimum is not None and value < minimum:
        raise InputError(f"{flag} {value}: must be at least {minimum:g}")
    return float(value)


@dataclass(frozen=True)
class BootstrapConfig:
    """How bootstrap intervals are drawn (plain data: it goes into result files as is)."""

    n_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    # BCa corrects for bias and skew; when it cannot (a degenerate jackknife), the
    # percentile interval is used instead (see ``bootstrap_interval``).
    method: str = "BCa"

    def __post_init__(self) -> None:
        # Checked here rather than by the CLI alone, so a study never starts with a config
        # that would exhaust memory or yield NaN intervals.
        n = self.n_resamples
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= MAX_RESAMPLES:
            raise InputError(f"--bootstrap {n}: give a whole number of resamples from 1 to {MAX_RESAMPLES:,} "
                             "per interval (the default is 1,000)")
        level = self.confidence
        if finite_number(level) is None or not 0 < level < 1:
            raise InputError(f"--confidence {level}: give a finite level between 0 and 1, such as 0.95")

    def settings(self) -> dict:
        return {
            "bootstrap": self.n_resamples,
            "confidence": self.confidence,
            "seed": self.seed,
            "bootstrap_method": self.method,
        }


@dataclass(frozen=True)
class Estimate:
    """A point value with its interval; ``None`` where a value is undefined."""

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int = 0
    p_value: float | None = None

    def interval(self) -> dict:
        """The ``{value, ci_low, ci_high}`` record of the results schema."""
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high}


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def bootstrap_interval(
    data: Sequence[np.ndarray],
    statistic: Callable[..., float],
    config: BootstrapConfig,
    *,
    paired: bool = False,
) -> tuple[float | None, float | None]:
    """``scipy.stats.bootstrap`` interval of ``statistic`` over ``data``.

    Falls back from BCa to the percentile method when BCa gives no finite interval (it
    needs a non-degenerate jackknife). Resamples where the statistic is undefined (NaN,
    e.g. a constant resample for a correlation) make scipy's interval NaN; then ``None``
    is returned rather than a made-up interval.
    """
    methods = [config.method] if config.method == "percentile" else [config.method, "percentile"]
    # Both the resamples (n_resamples x n) and BCa's jackknife (n x n-1) are made in batches of
    # this many rows: unbatched, 6,000 values took 0.9 GB and 100,000 would need 80 GB.
    batch = max(1, _BATCH_VALUES // max((np.size(d) for d in data), default=1))
    for method in methods:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = stats.bootstrap(
                tuple(np.asarray(d, dtype=float) for d in data),
                statistic,
                n_resamples=config.n_resamples,
                batch=batch,
                confidence_level=config.confidence,
                method=method,
                paired=paired,
                vectorized=False,
                rng=np.random.default_rng(config.seed),
            )
        low, high = _finite(result.confidence_interval.low), _finite(result.confidence_interval.high)
        if low is not None and high is not None:
            return low, high
        # A constant bootstrap distribution: every resample agrees, so the interval is a point.
        dist = result.bootstrap_distribution
        if np.all(np.isfinite(dist)) and np.ptp(dist) == 0:
            return float(dist[0]), float(dist[0])
    return None, None


def _correlation_statistic(method: str) -> Callable[[np.ndarray, np.ndarray], float]:
    if method not in CORRELATION_METHODS:
        raise ValueError(f"unknown correlation {method!r}; use one of {', '.join(CORRELATION_METHODS)}")
    # Spearman ranks ties by their average rank; Kendall is tau-b, which corrects for ties
    # in either variable; both are scipy's defaults.
    func = {"spearman": stats.spearmanr, "kendall": stats.kendalltau, "pearson": stats.pearsonr}[method]

    def statistic(x: np.ndarray, y: np.ndarray) -> float:
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            return float("nan")
        return float(func(x, y).statistic)

    return statistic


def correlation(x: Sequence[float], y: Sequence[float], method: str, config: BootstrapConfig,
                groups: Sequence[object] | None = None) -> Estimate:
    """Spearman rho, Kendall tau-b or Pearson r with scipy's p-value and a paired bootstrap interval.

    Undefined (``value=None``) for fewer than 3 pairs or a constant input. With ``groups`` (a
    label per pair, e.g. its prompt) the interval resamples whole groups, not single pairs:
    images of one prompt share its difficulty, so they are not independent pairs. The bootstrap
    then draws groups with replacement (:class:`Clusters` over the pairs' indices) and
    correlates all pairs of the drawn groups; the point value and p-value stay scipy's on all
    pairs (the p-value assumes independent pairs; the interval does not). With fewer than two
    groups there is no interval.
    """
    statistic = _correlation_statistic(method)
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xs.shape != ys.shape or (groups is not None and xs.size != len(groups)):
        raise ValueError(f"x, y (and groups) differ in length: {xs.size}, {ys.size}"
                         + ("" if groups is None else f", {len(groups)}"))
    n = int(xs.size)
    if n < MIN_CORRELATION_N or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return Estimate(None, None, None, n)
    func = {"spearman": stats.spearmanr, "kendall": stats.kendalltau, "pearson": stats.pearsonr}[method]
    result = func(xs, ys)
    if groups is None:
        low, high = bootstrap_interval((xs, ys), statistic, config, paired=True)
    else:
        def over_groups(members: list[np.ndarray]) -> float:
            index = np.concatenate(members).astype(int)
            return statistic(xs[index], ys[index])

        est = Clusters(np.arange(n), groups).estimate(over_groups, config)
        low, high = est.ci_low, est.ci_high
    return Estimate(_finite(result.statistic), low, high, n, _finite(result.pvalue))


def correlations(x: Sequence[float], y: Sequence[float], config: BootstrapConfig) -> dict[str, Estimate]:
    """All of :data:`CORRELATION_METHODS` for one pair of columns."""
    return {method: correlation(x, y, method, config) for method in CORRELATION_METHODS}


def rate(successes: int, trials: int, confidence: float = 0.95) -> Estimate:
    """A success rate with its Wilson score interval and the two-sided binomial p-value vs 0.5.

    >>> rate(0, 0).value is None
    True
    """
    if trials <= 0:
        return Estimate(None, None, None, 0)
    result = stats.binomtest(int(successes), int(trials), p=0.5)
    ci = result.proportion_ci(confidence_level=confidence, method="wilson")
    return Estimate(successes / trials, float(ci.low), float(ci.high), int(trials), float(result.pvalue))


def mean(values: Sequence[float], config: BootstrapConfig) -> Estimate:
    """The mean with a bootstrap interval."""
    xs = np.asarray(values, dtype=float)
    if xs.size == 0:
        return Estimate(None, None, None, 0)
    if xs.size == 1:
        return Estimate(float(xs[0]), None, None, 1)
    low, high = bootstrap_interval((xs,), np.mean, config)
    return Estimate(float(np.mean(xs)), low, high, int(xs.size))


class Clusters:
    """Values grouped into clusters (candidates of one layout), for cluster bootstrap.

    Candidates of the same layout share the layout's difficulty, so they are not
    independent; resampling whole layouts keeps intervals honest.
    """

    def __init__(self, values: Sequence[float], groups: Sequence[object]):
        xs = np.asarray(values, dtype=float)
        keys = list(groups)
        if xs.size != len(keys):
            raise ValueError(f"{xs.size} values but {len(keys)} group labels")
        order: dict[object, list[int]] = {}
        for i, key in enumerate(keys):
            order.setdefault(key, []).append(i)
        self.members = [xs[idx] for idx in order.values()]
        self.names = list(order)

    def __len__(self) -> int:
        return len(self.members)

    def estimate(self, statistic: Callable[[list[np.ndarray]], float], config: BootstrapConfig) -> Estimate:
        """``statistic(list of per-cluster arrays)`` with a bootstrap over clusters."""
        if not self.members:
            return Estimate(None, None, None, 0)
        value = float(statistic(self.members))
        n = sum(m.size for m in self.members)
        if len(self.members) < 2:
            return Estimate(_finite(value), None, None, n)

        def resampled(index: np.ndarray) -> float:
            return statistic([self.members[int(i)] for i in index])

        low, high = bootstrap_interval((np.arange(len(self.members)),), resampled, config)
        return Estimate(_finite(value), low, high, n)


def pooled_mean(members: list[np.ndarray]) -> float:
    """Mean over all candidates of the given clusters."""
    return float(np.mean(np.concatenate(members)))


def pooled_median(members: list[np.ndarray]) -> float:
    """Median over all candidates of the given clusters."""
    return float(np.median(np.concatenate(members)))


def best_of_n_gain(members: list[np.ndarray]) -> float:
    """Mean over clusters of (best candidate's score - mean candidate score).

    What picking the best of N buys over taking a random candidate.

    >>> best_of_n_gain([np.array([1.0, 3.0]), np.array([5.0])])
    0.5
    """
    return float(np.mean([m.max() - m.mean() for m in members]))


def severity_tau(severity: Sequence[float], score: Sequence[float]) -> float:
    """Kendall tau-b between severity and score for one image's corruption ladder.

    A score that does not move at all has no rank association with severity; scipy calls
    that undefined (NaN), this returns 0 so an insensitive metric averages towards 0
    rather than dropping out of the mean.
    """
    xs, ys = np.asarray(severity, dtype=float), np.asarray(score, dtype=float)
    if xs.size < 2 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return 0.0
    return float(stats.kendalltau(xs, ys).statistic)


def grouped_correlations(x: Sequence[float], y: Sequence[float], groups: Sequence[object],
                         config: BootstrapConfig) -> dict[str, Estimate]:
    """All of :data:`CORRELATION_METHODS` with intervals over groups (:func:`correlation`)."""
    return {method: correlation(x, y, method, config, groups=groups) for method in CORRELATION_METHODS}
