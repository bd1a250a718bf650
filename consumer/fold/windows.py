"""Tumbling event-time windows aligned to the unix epoch, and the all-time pseudo window."""

from __future__ import annotations

from typing import Final

#: Window name -> size in seconds; "all" has no size.
WINDOWS: Final[dict[str, int | None]] = {"1m": 60, "1h": 3600, "1d": 86400, "all": None}
SIZED: Final[tuple[tuple[str, int], ...]] = (("1m", 60), ("1h", 3600), ("1d", 86400))
ALL: Final = "all"
#: Stored window_start of the all-time window (exposed as null).
ALL_START: Final = 0


def window_bounds(window: str, start: int) -> tuple[int | None, int | None]:
    """(window_start, window_end) as the API shows them; (None, None) for all time."""
    size = WINDOWS[window]
    if size is None:
        return None, None
    return start, start + size
