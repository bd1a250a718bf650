"""Facts laid out by a registry: what the reference fold appends for an event."""

from __future__ import annotations

from typing import Any, Final

from consumer.fold.delta import layout_of
from consumer.fold.model import KINDS
from consumer.fold.registry import FIRST_CLOSE, TTFA, Kind, Registry
from consumer.fold.sketch import bin_of

#: the dimensions a fold reads from an event, in the order it hands them over (`Dims`)
FOLD_DIMENSIONS: Final = ("channel_type", "account", "inbox", "app")
Dims = tuple[str, int, int | None, int | None]
"""(channel type, account, inbox, app) of the event a fact counts"""


class FactMaker:
    """Facts laid out by a registry: its counters count the event types they declare
    (`Metric.counts`, `Metric.when`); time to close goes in its own three fields."""

    def __init__(self, registry: Registry) -> None:
        layout = layout_of(registry)
        self.dims = [d.name for d in registry.dimensions]
        self.blank: list[Any] = [None] * len(layout.fields)
        for i, f in enumerate(layout.fields):
            if f not in self.dims and f != "t":
                self.blank[i] = 0
        for m in layout.fact_metrics:
            if m.kind is Kind.DISTRIBUTION:
                at = layout.position(m.name)
                self.blank[at + 1 : at + 3] = [None, None]
        #: event kind -> (position, condition) of the counters counting it
        self.rules: dict[int, list[tuple[int, str | None]]] = {}
        for m in layout.fact_metrics:
            for name in m.counts:
                self.rules.setdefault(KINDS[name], []).append((layout.position(m.name), m.when))
        self.ttc = layout.position("time_to_close") if "ttc_n" in layout.fields else None
        #: time to first assignment's sign position, and first_closes' (None: not folded)
        self.ttfa = layout.fields.index(f"{TTFA}_n") if f"{TTFA}_n" in layout.fields else None
        first = [m for m in layout.fact_metrics if m.rule == FIRST_CLOSE]
        self.first_close = layout.position(first[0].name) if first else None
        if unknown := set(self.dims) - set(FOLD_DIMENSIONS):
            raise ValueError(f"the fold reads no dimension {sorted(unknown)} from an event")
        #: (position in a fact, index in `Dims`) of each declared dimension
        self.place = [(layout.fields.index(d), FOLD_DIMENSIONS.index(d)) for d in self.dims]
        self.t_at = layout.fields.index("t")

    def _new(self, dims: Dims, t: int) -> list[Any]:
        fact = self.blank.copy()
        for at, i in self.place:
            fact[at] = dims[i]
        fact[self.t_at] = t
        return fact

    def counted(self, kind: int, conditions: frozenset[str], dims: Dims, t: int) -> list[Any] | None:
        """The counters' increments for one event (`conditions`: those of `CONDITIONS` that
        hold for it), or None when no counter counts it."""
        fact = None
        for at, when in self.rules.get(kind, ()):
            if when is None or when in conditions:
                if fact is None:
                    fact = self._new(dims, t)
                fact[at] += 1
        return fact

    def with_ttc(self, fact: list[Any] | None, dims: Dims, t: int, sign: int, ttc: int) -> list[Any]:
        """`fact` (or a new one) carrying a time to close added (sign 1) or retracted (-1)."""
        assert self.ttc is not None
        return self.with_value(self.ttc, fact, dims, t, sign, ttc)

    def with_value(
        self, at: int, fact: list[Any] | None, dims: Dims, t: int, sign: int, value: int
    ) -> list[Any]:
        """`fact` (or a new one) carrying a value of the distribution whose sign sits at `at`
        added (sign 1) or retracted (-1)."""
        if fact is None:
            fact = self._new(dims, t)
        fact[at : at + 3] = [sign, value, bin_of(value)]
        return fact

    def first_closed(self, fact: list[Any] | None, dims: Dims, t: int, sign: int) -> list[Any]:
        """`fact` (or a new one) counting a first close (sign 1) or taking one back (-1)."""
        if fact is None:
            fact = self._new(dims, t)
        assert self.first_close is not None
        fact[self.first_close] += sign
        return fact
