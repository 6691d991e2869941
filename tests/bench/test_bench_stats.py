"""The bench's statistics: the numbers every table and verdict is built from."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.stats import median, median_of_summaries, percentile, ratio, summarize

samples = st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1)


def test_median_of_odd_and_even_counts() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 99) == pytest.approx(99.01)


def test_percentile_refuses_empty_and_out_of_range() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


@given(samples)
def test_summary_is_ordered_and_within_the_samples(values: list[float]) -> None:
    s = summarize(values)
    assert s.count == len(values)
    assert s.minimum <= s.p50 <= s.p99 <= s.maximum
    assert s.minimum <= s.mean * (1 + 1e-12) and s.mean <= s.maximum * (1 + 1e-12)


def test_one_outlier_moves_p99_not_the_median() -> None:
    s = summarize([100.0] * 99 + [10_000.0] * 2)
    assert s.p50 == 100.0
    assert s.p99 > 100.0


def test_scaled_changes_units_only() -> None:
    s = summarize([0.001, 0.002, 0.003]).scaled(1e3)
    assert s.p50 == pytest.approx(2.0)
    assert s.count == 3


def test_median_of_summaries_ignores_one_noisy_repeat() -> None:
    quiet = summarize([10.0, 11.0, 12.0])
    noisy = summarize([500.0, 600.0, 700.0])
    combined = median_of_summaries([quiet, quiet, noisy])
    assert combined.p50 == quiet.p50
    assert combined.count == 9
    assert combined.maximum == 700.0


def test_ratio_is_none_without_a_denominator() -> None:
    assert ratio(1.0, 2.0) == 0.5
    assert ratio(1.0, 0.0) is None
    assert ratio(None, 2.0) is None
