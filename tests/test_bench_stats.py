"""Statistics of the benchmark studies against scipy's own outputs and hand-computed values."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from scipy import stats

from benchmarks.results import BenchResult, MetricDef, ResultRow, input_ref, read_result, write_result
from benchmarks.stats import (
    BootstrapConfig,
    Clusters,
    best_of_n_gain,
    bootstrap_interval,
    correlation,
    correlations,
    mean,
    pooled_mean,
    pooled_median,
    rate,
    severity_tau,
)
from clis.errors import InputError

FAST = BootstrapConfig(n_resamples=200, seed=0)


def test_correlations_match_scipy_on_known_inputs():
    rng = np.random.default_rng(3)
    x = rng.normal(size=40)
    y = x + rng.normal(scale=0.8, size=40)
    y[5] = y[6]  # a tie, so tie handling matters
    got = correlations(x, y, FAST)
    for method, func in (("spearman", stats.spearmanr), ("kendall", stats.kendalltau), ("pearson", stats.pearsonr)):
        ref = func(x, y)
        assert got[method].value == pytest.approx(ref.statistic, abs=1e-12)
        assert got[method].p_value == pytest.approx(ref.pvalue, rel=1e-9)
        assert got[method].n == 40


def test_correlations_against_hand_computed_values():
    # Pearson: dx = (-1, 0, 1), dy = (-4/3, -1/3, 5/3): r = 3 / sqrt(2 * 42/9)
    assert correlation([1, 2, 3], [1, 2, 4], "pearson", FAST).value == pytest.approx(3 / math.sqrt(2 * 42 / 9))
    # Kendall: 5 concordant, 1 discordant pair out of 6
    assert correlation([1, 2, 3, 4], [1, 3, 2, 4], "kendall", FAST).value == pytest.approx(4 / 6)
    # Spearman without ties: 1 - 6 sum d^2 / (n (n^2 - 1)), d = (0, 1, -1, 0)
    assert correlation([1, 2, 3, 4], [1, 3, 2, 4], "spearman", FAST).value == pytest.approx(1 - 6 * 2 / (4 * 15))
    # a perfectly reversed order
    assert correlation([1, 2, 3, 4, 5], [9, 7, 5, 3, 1], "spearman", FAST).value == pytest.approx(-1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("method", ["spearman", "kendall", "pearson"])
def test_correlation_interval_contains_point_estimate(seed, method):
    rng = np.random.default_rng(seed)
    x = rng.uniform(50, 90, size=30)
    y = 0.05 * x + rng.normal(scale=1.0, size=30)
    est = correlation(x, y, method, BootstrapConfig(n_resamples=200, seed=seed))
    assert est.ci_low is not None and est.ci_high is not None
    assert -1.0 <= est.ci_low <= est.value <= est.ci_high <= 1.0
    assert est.ci_high - est.ci_low > 0


def test_bootstrap_interval_equals_scipy_called_directly():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=25), rng.normal(size=25)

    def spearman(a, b):
        return stats.spearmanr(a, b).statistic

    low, high = bootstrap_interval((x, y), spearman, FAST, paired=True)
    ref = stats.bootstrap((x, y), spearman, paired=True, vectorized=False, n_resamples=200,
                          confidence_level=0.95, method="BCa", rng=np.random.default_rng(0))
    assert low == pytest.approx(ref.confidence_interval.low)
    assert high == pytest.approx(ref.confidence_interval.high)


def test_wider_confidence_gives_wider_interval():
    x = np.arange(20, dtype=float)
    y = x + np.random.default_rng(0).normal(scale=4, size=20)
    narrow = correlation(x, y, "pearson", BootstrapConfig(n_resamples=200, confidence=0.8))
    wide = correlation(x, y, "pearson", BootstrapConfig(n_resamples=200, confidence=0.99))
    assert wide.ci_low < narrow.ci_low and wide.ci_high > narrow.ci_high


def test_correlation_is_undefined_for_constant_or_tiny_inputs():
    assert correlation([1, 2, 3, 4], [5, 5, 5, 5], "spearman", FAST).value is None
    assert correlation([1, 2], [3, 4], "pearson", FAST).value is None
    with pytest.raises(ValueError):
        correlation([1, 2, 3], [1, 2], "pearson", FAST)
    with pytest.raises(ValueError):
        correlation([1, 2, 3], [1, 2, 3], "cosine", FAST)


def test_rate_is_wilson_interval_of_binomtest():
    est = rate(9, 10)
    ref = stats.binomtest(9, 10).proportion_ci(confidence_level=0.95, method="wilson")
    assert est.value == 0.9
    assert (est.ci_low, est.ci_high) == pytest.approx((ref.low, ref.high))
    # the Wilson formula written out: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    z, p, n = stats.norm.ppf(0.975), 0.9, 10
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (est.ci_low, est.ci_high) == pytest.approx((centre - half, centre + half))
    assert est.p_value == pytest.approx(stats.binomtest(9, 10).pvalue)


@pytest.mark.parametrize("k,n", [(0, 5), (5, 5), (3, 7), (947, 1000)])
def test_rate_interval_contains_point_and_stays_in_unit_range(k, n):
    est = rate(k, n)
    assert 0.0 <= est.ci_low <= est.value <= est.ci_high <= 1.0


def test_mean_and_constant_data():
    values = [60.0, 62.0, 70.0, 71.0, 75.0, 80.0]
    est = mean(values, FAST)
    assert est.value == pytest.approx(sum(values) / 6)
    assert est.ci_low < est.value < est.ci_high
    flat = mean([5.0, 5.0, 5.0], FAST)
    assert (flat.value, flat.ci_low, flat.ci_high) == (5.0, 5.0, 5.0)
    assert mean([], FAST).value is None


def test_cluster_statistics_by_hand():
    values = [1.0, 3.0, 5.0, 10.0, 20.0, 30.0]
    groups = ["a", "a", "b", "c", "c", "c"]
    clusters = Clusters(values, groups)
    assert len(clusters) == 3
    assert clusters.names == ["a", "b", "c"]
    assert pooled_mean(clusters.members) == pytest.approx(69 / 6)
    assert pooled_median(clusters.members) == pytest.approx(7.5)
    # best minus mean per layout: a 3-2=1, b 0, c 30-20=10 -> mean 11/3
    assert best_of_n_gain(clusters.members) == pytest.approx(11 / 3)
    est = clusters.estimate(pooled_mean, FAST)
    assert est.n == 6
    assert est.ci_low <= est.value <= est.ci_high
    # resampling whole clusters: the interval cannot leave the range of per-layout means
    assert est.ci_low >= 2.0 - 1e-9 and est.ci_high <= 20.0 + 1e-9


def test_severity_tau():
    assert severity_tau([0, 1, 2, 3], [80, 70, 60, 50]) == pytest.approx(-1.0)
    assert severity_tau([0, 1, 2, 3], [80, 70, 75, 50]) == pytest.approx(stats.kendalltau([0, 1, 2, 3], [80, 70, 75, 50]).statistic)
    assert severity_tau([0, 1, 2, 3], [60, 60, 60, 60]) == 0.0


def test_result_round_trip_and_nan_becomes_null(tmp_path):
    result = BenchResult(
        study="correlate",
        metrics=[MetricDef(key="spearman", label="Spearman", description="rank correlation")],
        rows=[ResultRow(name="clis", values={"spearman": {"value": 0.5, "ci_low": float("nan"), "ci_high": 0.7}},
                        p_values={"spearman": 0.01})],
        tables={"t": [{"a": np.float64(1.5), "b": float("inf")}]},
    )
    path = write_result(result, tmp_path / "result.json")
    raw = json.loads(path.read_text())
    assert raw["schema"] == "clis.bench/1"
    assert raw["rows"][0]["values"]["spearman"] == {"value": 0.5, "ci_low": None, "ci_high": 0.7}
    assert raw["tables"]["t"] == [{"a": 1.5, "b": None}]
    back = read_result(path)
    assert back.rows[0].values["spearman"].ci_high == 0.7
    assert back.rows[0].model_extra["p_values"] == {"spearman": 0.01}
    for key in ("study", "clis_version", "created", "inputs", "models", "settings", "metrics", "rows", "tables", "figures"):
        assert key in raw


def test_reader_refuses_unknown_schema_and_bad_json(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"schema": "clis.bench/99", "study": "x"}))
    with pytest.raises(InputError, match=r"r\.json: field 'schema' is 'clis.bench/99'"):
        read_result(path)
    path.write_text("{oops")
    with pytest.raises(InputError, match="not valid JSON"):
        read_result(path)
    path.write_text(json.dumps({"schema": "clis.bench/1", "study": "x", "rows": [{"values": {}}]}))
    with pytest.raises(InputError, match=r"field 'rows\.0\.name'"):
        read_result(path)


def test_folder_input_is_hashed_over_its_image_files(tmp_path):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    files = {"b.png": b"second image", "sub/a.JPG": b"first image", "a.webp": b"third"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    # what `find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum` gives for these files
    listing = "".join(f"{hashlib.sha256(files[n]).hexdigest()}  {n}\n" for n in sorted(files))
    expected = hashlib.sha256(listing.encode()).hexdigest()
    ref = input_ref("images", folder, tmp_path / "out" / "result.json")
    assert (ref.path, ref.sha256, ref.model_extra["n_files"]) == ("../images", expected, 3)
    (folder / "notes.txt").write_text("not an image")
    assert input_ref("images", folder, tmp_path / "r.json").sha256 == expected
    (folder / "b.png").write_bytes(b"second imagE")
    assert input_ref("images", folder, tmp_path / "r.json").sha256 != expected
