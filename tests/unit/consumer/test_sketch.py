"""Quantiles read straight from the bins equal what a real DDSketch of the same bins answers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.fold.sketch import LAG_BASE, ZERO_BIN, bin_of, lag_bin_of, quantiles, quantiles_by_sketch

durations = st.integers(min_value=0, max_value=10**9)
weights = st.integers(min_value=-2, max_value=50)  # retractions can leave 0 or negative counts


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(durations, weights), max_size=60), st.lists(st.tuples(durations, weights), max_size=20)
)
def test_quantiles_equal_the_librarys_sketch(
    ttcs: list[tuple[int, int]], lags: list[tuple[int, int]]
) -> None:
    bins: dict[int, int] = {}
    for seconds, n in ttcs:
        bins[bin_of(seconds)] = bins.get(bin_of(seconds), 0) + n
    for millis, n in lags:
        bins[lag_bin_of(millis)] = bins.get(lag_bin_of(millis), 0) + n
    assert quantiles(bins) == quantiles_by_sketch(bins)
    assert quantiles(bins, lag=True) == quantiles_by_sketch(bins, lag=True)
    assert quantiles(list(bins.items())) == quantiles_by_sketch(bins)


def test_boundaries() -> None:
    assert quantiles({}) is None and quantiles({bin_of(5): 0}) is None
    assert quantiles({ZERO_BIN: 3}) == (0.0, 0.0, 0.0)
    assert quantiles({ZERO_BIN: 1, bin_of(100): 1}) == quantiles_by_sketch({ZERO_BIN: 1, bin_of(100): 1})
    one = quantiles({bin_of(3600): 1})
    assert one is not None and all(abs(q - 3600) <= 36 for q in one)  # 1% relative error
    assert quantiles({LAG_BASE + bin_of(10): 2}) is None  # lag bins are not durations
