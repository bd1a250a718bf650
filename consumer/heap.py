"""CPython's cyclic garbage collector, set for the consumer's long-running loops.

The polling loop and the API allocate containers by the ten thousand (a batch's decoded
records and its deltas; a query's rows and their JSON) that refcounting frees: they never
form cycles. At the default thresholds (700, 10, 10) the collector traces them dozens of
times per batch, and its full collections, which trace every object the process holds,
land inside API calls, each adding ~20 ms to a call of a few hundred rows (a day of the
dashboard's channel types). A young generation of 200,000 allocations makes every
generation's collections ~300 times rarer; `bench/results/query.md` and
`bench/results/history.md` hold what it saves.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

#: container allocations between two young-generation collections (CPython's default: 700)
GEN0_THRESHOLD: Final = 200_000


@contextmanager
def rare_collections() -> Iterator[None]:
    """Raise the young generation's threshold to `GEN0_THRESHOLD` while the block runs and
    put the thresholds back after it, also when it fails. A threshold of 0 (the program
    turned collection off) is left alone, as is a higher one."""
    thresholds = gc.get_threshold()
    if thresholds[0]:
        gc.set_threshold(max(thresholds[0], GEN0_THRESHOLD), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
