"""Facts laid out by a registry: what the reference fold appends for an event."""

from __future__ import annotations

from typing import Any

from consumer.fold.delta import layout_of
from consumer.fold.model import KINDS
from consumer.fold.registry import Kind, Registry
from consumer.fold.sketch import bin_of


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
        self.at = {name: layout.fields.index(name) for name in (*self.dims, "t")}

    def _new(self, ch: str, account: int, t: int) -> list[Any]:
        fact = self.blank.copy()
        fact[self.at["channel_type"]] = ch
        fact[self.at["account"]] = account
        fact[self.at["t"]] = t
        return fact

    def counted(self, kind: int, unread: bool, ch: str, account: int, t: int) -> list[Any] | None:
        """The counters' increments for one event, or None when no counter counts it."""
        fact = None
        for at, when in self.rules.get(kind, ()):
            if when is None or (when == "unread" and unread):
                if fact is None:
                    fact = self._new(ch, account, t)
                fact[at] += 1
        return fact

    def with_ttc(
        self, fact: list[Any] | None, ch: str, account: int, t: int, sign: int, ttc: int
    ) -> list[Any]:
        """`fact` (or a new one) carrying a time to close added (sign 1) or retracted (-1)."""
        if fact is None:
            fact = self._new(ch, account, t)
        assert self.ttc is not None
        fact[self.ttc : self.ttc + 3] = [sign, ttc, bin_of(ttc)]
        return fact
