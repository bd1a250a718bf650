"""Where the values of a distribution that late events retract live one per event: a
metric row's min/max is recomputed from there after a retraction (the stores' RECHECK)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """A table holding a distribution's values one per event, by event time."""

    table: str
    time: str  # the column of the event time


#: the distributions whose values a late event retracts, by name
RECHECKED = {
    "time_to_close": Source("closures", "closed_at"),
    "time_to_first_assignment": Source("first_assignments", "assigned_at"),
}
