"""Time-to-close distributions as DDSketch bins: mergeable, retractable, 1% relative error.

A row keeps its sketch as plain ``{bin index: count}``; the bin index comes from
DDSketch's logarithmic mapping, and quantiles are read back through a real `DDSketch`,
so the accuracy guarantee is the library's. Plain bins add and subtract exactly, which is
what merging windows and partitions, and correcting a closure after a late event, need.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from itertools import accumulate
from operator import itemgetter
from typing import Final

from ddsketch import DDSketch
from ddsketch.mapping import LogarithmicMapping

RELATIVE_ACCURACY: Final = 0.01
ZERO_BIN: Final = -(2**31)  # durations of 0 s (the mapping cannot take 0)
#: ingest-lag bins (milliseconds) live in the same bin maps, shifted above every duration bin
LAG_BASE: Final = 2**40
QUANTILES: Final = (0.5, 0.9, 0.99)

_MAPPING: Final = LogarithmicMapping(RELATIVE_ACCURACY)
# `_MAPPING.key(v)` is int(ceil(log2(v) * multiplier) + offset); the same arithmetic written
# out here saves two Python calls per event (a unit test holds it equal to the library's)
_MULTIPLIER: Final[float] = _MAPPING._multiplier
_OFFSET: Final[float] = _MAPPING._offset
_log, _ceil = math.log, math.ceil
_count = itemgetter(1)


def bin_of(seconds: int) -> int:
    """Bin index of a non-negative duration."""
    return ZERO_BIN if seconds <= 0 else int(_ceil(_log(seconds, 2) * _MULTIPLIER) + _OFFSET)


def lag_bin_of(millis: int) -> int:
    """Bin index of an ingest lag (negative lags, from clock skew, count as 0)."""
    return LAG_BASE + bin_of(millis)


def quantiles(
    bins: Mapping[int, int] | Iterable[tuple[int, int]], *, lag: bool = False, base: int | None = None
) -> tuple[float, ...] | None:
    """p50, p90, p99 of the durations (or, with `lag`, the ingest lags) in a bin map, or None;
    `base`: of the distribution whose bins lie within +-LAG_BASE/2 of it (a row's bin space
    holds several, `Metric.bin_base`).

    What `DDSketch.get_quantile_value` answers for a sketch holding these bins (the rank
    `q * (count - 1)` found in the zero bin, else by walking the bins in key order, the value
    its mapping gives the key), without building the sketch bin by bin: a query renders
    thousands of rows. `tests/unit/consumer/test_sketch.py` holds the two equal."""
    # sorted (a row's bins mostly are already: a linear pass), then cut, summed and searched
    # by C code (bisect, accumulate) instead of a Python loop over every bin: a query
    # renders thousands of rows of hundreds of bins each
    items = sorted(bins.items() if isinstance(bins, Mapping) else bins)
    if base is None:
        base = LAG_BASE if lag else 0
    lo, hi, zero_at = base - LAG_BASE // 2, base + LAG_BASE // 2, base + ZERO_BIN
    mine = items[bisect_left(items, (lo,)) : bisect_left(items, (hi,))]
    if min(map(_count, mine), default=1) <= 0:  # stored bins never hold one; other callers may
        mine = [(k, n) for k, n in mine if n > 0]
    z0, z1 = bisect_left(mine, (zero_at,)), bisect_left(mine, (zero_at + 1,))
    zero = sum(map(_count, mine[z0:z1]))
    keyed = mine[:z0] + mine[z1:]
    cumulative = list(accumulate(map(_count, keyed)))
    total = zero + (cumulative[-1] if cumulative else 0)
    if total == 0:
        return None
    out: list[float] = []
    for q in QUANTILES:
        rank = q * (total - 1)
        if rank < zero:  # the rank falls in the zero bin
            out.append(0.0)
        else:  # the first bin whose running count (from the zero bin's) passes the rank
            index = keyed[bisect_right(cumulative, rank - zero)][0] - base
            out.append(float(_MAPPING.value(index)))
    return tuple(out)


def quantiles_by_sketch(
    bins: Mapping[int, int] | Iterable[tuple[int, int]], *, lag: bool = False
) -> tuple[float, ...] | None:
    """The same through a real `DDSketch` (the library's accuracy guarantee): the reference
    `quantiles` is tested against."""
    items = bins.items() if isinstance(bins, Mapping) else bins
    sketch = DDSketch(RELATIVE_ACCURACY)
    for index, count in items:
        if (index >= LAG_BASE // 2) != lag:
            continue
        if lag:
            index -= LAG_BASE
        if count > 0:
            sketch.add(0.0 if index == ZERO_BIN else _MAPPING.value(index), float(count))
    if sketch.count == 0:
        return None
    return tuple(float(sketch.get_quantile_value(q) or 0.0) for q in QUANTILES)
