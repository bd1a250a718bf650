"""Which fold the consumer runs: the compiled one (consumer/native, Rust) where it was
built, else the reference `consumer.fold`. Both keep the same contract, state format and
`Delta`; tests/unit/consumer/test_fold_native.py holds them equal on generated streams.

`CONVMETRICS_FOLD=python` (or `native`) picks one by hand: `native` fails loudly when the
extension is missing, instead of running slower without saying so. A built extension that
cannot be loaded is an error, never a silent fallback; tests/unit/test_native.py fails when
the extension is older than its sources.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

from consumer.exceptions import ConfigError
from consumer.fold import Changes, Delta, Fold, apply_batch
from consumer.fold import PartitionFold as PythonFold
from consumer.fold.delta import LAYOUT, ConvKey, FactLayout, layout_of
from consumer.fold.model import KINDS
from consumer.fold.registry import FIRST_CLOSE, REGISTRY, TTFA, Kind, Registry
from consumer.fold.sketch import _MULTIPLIER, _OFFSET, LAG_BASE, ZERO_BIN

#: The compiled fold allocates with mimalloc, apart from the C heap that Python and
#: librdkafka share: its hundreds of thousands of long-lived conversation states in glibc's
#: heap made every allocation and free there slower (`malloc_consolidate` on each batch;
#: bench/results/history.md). These make mimalloc hand freed memory back at once and commit
#: memory as it is touched, for the RSS budget; read at its first use, so set before the
#: module loads; a value already in the environment wins.
for _option, _value in (("PURGE_DELAY", "0"), ("ARENA_EAGER_COMMIT", "0"), ("EAGER_COMMIT", "0")):
    os.environ.setdefault(f"MIMALLOC_{_option}", _value)


@dataclass(frozen=True)
class CompiledRules:
    """How a compiled fold is configured for a fact layout (`compiled_rules`)."""

    #: (the event kinds each counter counts, its condition), in fact order
    counters: list[tuple[list[int], str | None]]
    #: the position of first_closes among the counters (None: not folded)
    first_close: int | None
    #: time to first assignment folded
    ttfa: bool


@cache
def compiled_rules(layout: FactLayout, built: Any) -> CompiledRules:
    """The counters of a fact layout as the compiled fold is configured with them: (the
    event kinds each counts, its condition), and its rule counters and distributions. A
    ConfigError when the compiled fold cannot emit the layout: other dimensions or
    distributions, or a counter with a rule it does not know."""
    counters = [m for m in layout.fact_metrics if m.kind is Kind.COUNTER]
    dists = [m.column for m in layout.fact_metrics if m.kind is Kind.DISTRIBUTION]
    expected = (
        *built.DIMENSIONS,
        "t",
        *(m.column for m in counters),
        *(f for d in built.DISTRIBUTIONS if d in dists for f in (f"{d}_n", d, f"{d}_bin")),
    )
    ruled = [m.name for m in counters if not m.counts and m.rule != FIRST_CLOSE]
    if layout.fields != expected or ruled or len(counters) > built.MAX_COUNTERS or "ttc" not in dists:
        raise ConfigError(
            f"the compiled fold emits facts {expected}, the metric registry lays them out as "
            f"{layout.fields}{f' (counters with a rule of their own: {ruled})' if ruled else ''}: "
            "give consumer/native the new metric's rule too and rebuild (make setup); "
            f"{ENV}=python runs the reference fold meanwhile"
        )
    first = [i for i, m in enumerate(counters) if m.rule == FIRST_CLOSE]
    return CompiledRules(
        [([KINDS[k] for k in m.counts], m.when) for m in counters],
        first[0] if first else None,
        TTFA in dists,
    )


ENV = "CONVMETRICS_FOLD"
native: ModuleType | None
try:
    from consumer.fold import _fold_native as _built
except ImportError:
    if importlib.util.find_spec("consumer.fold._fold_native") is not None:
        raise  # built, but this interpreter cannot load it: say so
    native = None  # not built (no Rust toolchain): the reference fold runs
else:
    _lacking = [
        f
        for f in ("pack_rows", "unpack_facts", "rollup_rows", "rollup_copy", "install_sqlite_auto_extension")
        if not hasattr(_built, f)
    ]
    if _lacking:  # a module built from an older source: its first commit would fail, say so now
        raise ImportError(
            f"consumer/fold/_fold_native lacks {_lacking}: it is older than its source, "
            "rebuild it (make setup)"
        )
    try:
        compiled_rules(LAYOUT, _built)  # the production registry: refused at import if it cannot
    except ConfigError:
        if (os.environ.get(ENV) or "").lower() != "python":
            raise  # it says what to do; CONVMETRICS_FOLD=python runs the reference meanwhile
        native = None  # the reference runs it all (fold, rollup, SQL functions)
    else:
        _built.configure(_MULTIPLIER, _OFFSET, ZERO_BIN, LAG_BASE, Delta, Changes)
        native = _built

#: set (CI does): a missing compiled part is an error, never a silent fallback
REQUIRE_NATIVE = "CONVMETRICS_REQUIRE_NATIVE"


@dataclass(frozen=True)
class FoldKind:
    """A fold implementation: its name, how to make a partition's fold, how to fold a batch."""

    name: str
    new: Callable[..., Fold]
    apply_batch: Callable[..., Any]


def _native_fold(
    partition: int,
    idle: dict[ConvKey, str] | None = None,
    watermark: int = 0,
    *,
    max_seen: int = 256,
    registry: Registry = REGISTRY,
) -> Fold:
    """A compiled partition fold counting `registry`'s counters (as `PythonFold` takes it)."""
    assert native is not None
    rules = compiled_rules(layout_of(registry), native)
    fold: Fold = native.PartitionFold(
        partition,
        idle,
        watermark,
        max_seen=max_seen,
        counters=rules.counters,
        inbox_app=registry.groups_by_inbox_or_app,
        first_close=rules.first_close,
        ttfa=rules.ttfa,
        gauges=bool(registry.gauges),
    )
    return fold


PYTHON = FoldKind("python", PythonFold, apply_batch)
NATIVE = None if native is None else FoldKind("native", _native_fold, native.apply_batch)


def choose(preference: str | None = None) -> FoldKind:
    """The fold to run: `preference` (or $CONVMETRICS_FOLD): native, python, or auto (the
    compiled one where it was built)."""
    want = (preference or os.environ.get(ENV) or "auto").lower()
    if want == "python":
        return PYTHON
    if want == "native":
        if NATIVE is None:
            raise ConfigError(f"{ENV}=native but the compiled fold is not built: run `make setup`")
        return NATIVE
    if want != "auto":
        raise ConfigError(f"{ENV} must be native, python or auto, not {want!r}")
    if NATIVE is None and os.environ.get(REQUIRE_NATIVE) == "1":
        raise ConfigError(
            f"{REQUIRE_NATIVE}=1 but the compiled fold is not built: install a wheel built with cargo, "
            "or run `make setup`"
        )
    return NATIVE or PYTHON
