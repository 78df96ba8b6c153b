"""Summary statistics over seeds: mean, sample std and the Student-t interval."""

from __future__ import annotations

import math

import pytest

from uvlm.errors import UserError
from uvlm.experiments.stats import Summary, digits_for, format_summary, summarize

# two-sided 95% / 90% Student-t quantiles with 4 degrees of freedom, from a printed t table
T_975_4 = 2.7764451
T_950_4 = 2.1318468


def test_known_interval():
    s = summarize([1, 2, 3, 4, 5])
    assert s.n == 5
    assert s.mean == pytest.approx(3.0)
    assert s.std == pytest.approx(math.sqrt(2.5))  # sample std: sum of squares 10 over n - 1 = 4
    assert s.std == pytest.approx(1.5811, abs=1e-4)
    half = T_975_4 * math.sqrt(2.5) / math.sqrt(5)
    assert (s.ci_low, s.ci_high) == pytest.approx((3 - half, 3 + half), abs=1e-6)
    assert (s.ci_low, s.ci_high) == pytest.approx((1.0368, 4.9632), abs=1e-4)


def test_confidence_level_changes_the_quantile():
    s = summarize([1, 2, 3, 4, 5], confidence=0.90)
    assert s.ci_high - s.mean == pytest.approx(T_950_4 * math.sqrt(0.5), abs=1e-6)
    with pytest.raises(UserError, match="confidence"):
        summarize([1, 2], confidence=1.0)


def test_one_value_has_no_spread():
    s = summarize([81.5])
    assert (s.n, s.mean) == (1, 81.5)
    assert math.isnan(s.std) and math.isnan(s.ci_low) and math.isnan(s.ci_high)
    assert format_summary(s) == "81.5 ± n/a [n/a]"
    assert format_summary(s, with_n=True) == "81.5 ± n/a (n=1) [n/a]"


def test_nans_and_nones_are_dropped():
    clean = summarize([1, 2, 3, 4, 5])
    dirty = summarize([1, float("nan"), 2, None, 3, 4, float("nan"), 5])
    assert dirty == clean
    empty = summarize([float("nan"), None])
    assert empty.n == 0 and math.isnan(empty.mean) and math.isnan(empty.std)
    assert format_summary(empty) == "-"
    assert summarize([]).n == 0


def test_identical_values_give_a_zero_width_interval():
    s = summarize([100.0, 100.0, 100.0])
    assert s.std == 0.0
    assert s.ci_low == s.ci_high == 100.0


def test_non_numeric_values_are_refused():
    with pytest.raises(UserError, match="non-numeric"):
        summarize([1.0, "2.0"])
    with pytest.raises(UserError, match="non-numeric"):
        summarize([True, 1.0])


def test_dict_round_trip_keeps_nans():
    for s in (summarize([1, 2, 3, 4, 5]), summarize([7.0]), summarize([])):
        d = s.to_dict()
        assert set(d) == {"n", "mean", "std", "ci95_low", "ci95_high"}
        back = Summary.from_dict(d)
        assert back.n == s.n
        for a, b in ((back.mean, s.mean), (back.std, s.std), (back.ci_low, s.ci_low), (back.ci_high, s.ci_high)):
            assert (math.isnan(a) and math.isnan(b)) or a == b


def test_format_and_digits():
    s = summarize([1, 2, 3, 4, 5])
    assert format_summary(s) == "3.0 ± 1.6 [1.0, 5.0]"
    assert format_summary(s, digits=3, with_n=True) == "3.000 ± 1.581 (n=5) [1.037, 4.963]"
    assert digits_for([0.98, 0.5, float("nan")]) == 3
    assert digits_for([0.98, 85.0]) == 1
    assert digits_for([]) == 1


def test_an_interval_is_cut_to_the_range_its_metric_cannot_leave():
    from uvlm.experiments.results import metric_bounds

    free = summarize([99.0, 100.0, 100.0])
    cut = summarize([99.0, 100.0, 100.0], bounds=metric_bounds("vqa.position"))
    assert free.ci_high > 100.0 and cut.ci_high == 100.0 and isinstance(cut.ci_high, float)
    assert cut.ci_low == free.ci_low and cut.mean == free.mean and cut.std == free.std
    assert summarize([0.0, 1.0, 0.0], bounds=metric_bounds("vqa.weather")).ci_low == 0.0
    assert metric_bounds("feature_probe.icon") == (0.0, 1.0) and metric_bounds("conditioning.gap") is None
