"""Progress of a consumer that is catching up (a replay, a backfill, a restart after a long
stop): a log line every `PROGRESS_EVERY` seconds while it is behind, with how far and how
fast, and one when it has caught up. Pure: the polling loop hands it the clock, the records
consumed so far and the lag (`MetricsConsumer`, every few seconds)."""

from __future__ import annotations

from dataclasses import dataclass

#: seconds between two progress lines while behind
PROGRESS_EVERY = 15.0


@dataclass
class Progress:
    """`update` gives the line to log, if any. Behind: a lag of at least `behind` records
    (the consumer's poll batch: below it, one poll takes in all there is)."""

    behind: int
    every: float = PROGRESS_EVERY
    #: (time, records consumed, lag) when it fell behind, and at the last line since (the
    #: same until a line is logged)
    _fell: tuple[float, int, int] | None = None
    _last: tuple[float, int, int] | None = None

    def update(self, now: float, consumed: int, lag: int) -> str | None:
        if lag < self.behind:
            fell, last = self._fell, self._last
            self._fell = self._last = None
            if fell is None or last == fell:  # a short lag, no line logged: not worth one now
                return None
            took = now - fell[0]
            rate = (consumed - fell[1]) / took if took > 0 else 0.0
            return f"caught up: {consumed - fell[1]:,} records in {_span(took)} ({rate:,.0f} records/s)"
        if self._fell is None:
            self._fell = self._last = (now, consumed, lag)
            return None
        assert self._last is not None
        t, c, was = self._last
        if now - t < self.every:
            return None
        self._last = (now, consumed, lag)
        if consumed == c:  # stalled (a store or broker retried): no pace to speak of
            return f"catching up: {lag:,} records behind, none consumed in the last {_span(now - t)}"
        rate = (consumed - c) / (now - t)
        gain = (was - lag) / (now - t)  # the lag's fall per second: consumed minus arrived
        when = (
            f"caught up in ~{_span(lag / gain)} at this pace"
            if gain > 0
            else "not gaining on the topic: records arrive as fast as they are consumed"
        )
        return f"catching up: {lag:,} records behind, {rate:,.0f} records/s; {when}"


def _span(seconds: float) -> str:
    """45 s, 12 min, 3.5 h: enough to plan by."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
