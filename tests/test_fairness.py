import numpy as np
import pytest

from dlbook import fairness

fm = pytest.importorskip("fairlearn.metrics")


def random_case(seed, n=500, groups=("a", "b", "c")):
    rng = np.random.default_rng(seed)
    g = rng.choice(groups, n)
    y = rng.integers(0, 2, n)
    p = (rng.random(n) < 0.3 + 0.4 * y).astype(int)
    return y, p, g


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_fairlearn(seed):
    y, p, g = random_case(seed)
    kw = dict(sensitive_features=g)
    assert fairness.demographic_parity_difference(p, g) == pytest.approx(
        fm.demographic_parity_difference(y, p, **kw), abs=1e-12)
    assert fairness.demographic_parity_ratio(p, g) == pytest.approx(
        fm.demographic_parity_ratio(y, p, **kw), abs=1e-12)
    for agg in ("worst_case", "mean"):
        assert fairness.equalized_odds_difference(y, p, g, agg=agg) == pytest.approx(
            fm.equalized_odds_difference(y, p, agg=agg, **kw), abs=1e-12)
    assert fairness.equal_opportunity_difference(y, p, g) == pytest.approx(
        fm.equal_opportunity_difference(y, p, **kw), abs=1e-12)


def test_group_rates_equal_metricframe():
    y, p, g = random_case(3, groups=(0, 1))
    frame = fm.MetricFrame(metrics={"selection_rate": fm.selection_rate,
                                    "tpr": fm.true_positive_rate,
                                    "fpr": fm.false_positive_rate,
                                    "fnr": fm.false_negative_rate},
                           y_true=y, y_pred=p, sensitive_features=g).by_group
    ours = fairness.group_rates(y, p, g)
    assert list(ours.index) == [0, 1] and list(ours.columns) == list(fairness.RATES)
    for column in frame.columns:
        np.testing.assert_allclose(ours[column].to_numpy(), frame[column].to_numpy(),
                                   rtol=0, atol=1e-12)
    assert ours["n"].sum() == len(y)
    np.testing.assert_allclose(ours["fnr"], 1 - ours["tpr"], atol=1e-15)


def test_bad_input_raises():
    y, p, g = random_case(4)
    with pytest.raises(ValueError, match="two groups"):
        fairness.demographic_parity_difference(p, np.zeros(len(p)))
    with pytest.raises(ValueError, match="equal lengths"):
        fairness.equalized_odds_difference(y[:-1], p, g)
    with pytest.raises(ValueError, match="equal lengths"):
        fairness.demographic_parity_difference(p, g[:-1])
    with pytest.raises(ValueError, match="only 0 and 1"):
        fairness.group_rates(y, p * 2, g)
    with pytest.raises(ValueError, match="1-D"):
        fairness.selection_rates(p.reshape(-1, 5), g.reshape(-1, 5))
    with pytest.raises(TypeError, match="numeric"):
        fairness.rates(np.array(["x", "y"]), np.array([0, 1]))
    with pytest.raises(ValueError, match="agg"):
        fairness.equalized_odds_difference(y, p, g, agg="max")


def test_empty_denominator_is_nan():
    r = fairness.rates(np.array([0, 0]), np.array([0, 1]))
    assert np.isnan(r["tpr"]) and np.isnan(r["fnr"]) and r["fpr"] == 0.5


def test_threshold_for_rate():
    s = np.array([0.9, 0.1, 0.5, 0.7])
    assert fairness.threshold_for_rate(s, 0.5) == 0.7
    assert fairness.threshold_for_rate(s, 0.0) == np.inf
    assert fairness.threshold_for_rate(s, 1.0) == 0.1
    with pytest.raises(ValueError, match="rate"):
        fairness.threshold_for_rate(s, 1.5)


def test_group_thresholds_reach_targets():
    rng = np.random.default_rng(5)
    n = 4000
    g = rng.choice(["f", "m"], n)
    y = rng.integers(0, 2, n)
    s = rng.random(n) + 0.3 * y + 0.2 * (g == "m")
    t = fairness.group_thresholds(s, g, 0.3)
    pred = fairness.apply_thresholds(s, g, t)
    rates = fairness.selection_rates(pred, g)
    assert all(abs(r - 0.3) < 1e-3 for r in rates.values())
    t = fairness.group_thresholds(s, g, 0.8, y_true=y, rate="tpr")
    table = fairness.group_rates(y, fairness.apply_thresholds(s, g, t), g)
    assert np.allclose(table["tpr"], 0.8, atol=1e-3)
    with pytest.raises(ValueError, match="needs y_true"):
        fairness.group_thresholds(s, g, 0.8, rate="tpr")
    with pytest.raises(ValueError, match="no threshold"):
        fairness.apply_thresholds(s, g, {"f": 0.5})


def test_interpolated_parity_thresholds():
    rng = np.random.default_rng(6)
    n = 3000
    g = rng.choice([0, 1], n)
    s = np.clip(rng.random(n) * 0.8 + 0.3 * g, 0, 1)
    plain = (s >= 0.5).astype(int)
    t0 = fairness.interpolated_parity_thresholds(s, g, 0.0)
    assert np.array_equal(fairness.apply_thresholds(s, g, t0), plain)
    t1 = fairness.interpolated_parity_thresholds(s, g, 1.0)
    fair = fairness.apply_thresholds(s, g, t1)
    assert fairness.demographic_parity_difference(fair, g) < 2e-3
    assert abs(fair.mean() - plain.mean()) < 2e-3
    with pytest.raises(ValueError, match="lam"):
        fairness.interpolated_parity_thresholds(s, g, 2.0)
