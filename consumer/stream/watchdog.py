"""A consumer that has stopped making progress: its polling loop has not come round, and no
partition was loaded nor store commit attempted, for `stall_s` seconds (a commit hung on a
dead connection, a deadlock). `/healthz` then answers 503 naming what it was doing, for
an orchestrator's liveness probe to restart it; and a thread of its own logs it once, with
every thread's stack (`sys._current_frames`), for the operator. Progress the consumer is slow at is still
progress: a store retried while it is down, a long catch-up, a big partition loaded.

`beat` is called by the polling thread and the store writer (an assignment of a float and
a string: no lock needed under CPython's GIL); `stalled` by the API's threads."""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable

log = logging.getLogger(__name__)

#: the default of `consume --stall-timeout`: a commit takes seconds, loading a partition of
#: millions of conversations under a minute (docs/operations.md)
STALL_S = 300.0
#: its least: a store retried beats before and after each wait (at most 5 s) and each
#: attempt (a connection refused at once, or given up after the store's 5 s connect timeout)
MIN_STALL_S = 10.0
#: what beats, as `stalled` names it: the polling thread, the store writer's thread, and
#: the metrics-topic publication (on either)
LOOP, WRITER, PUBLISHER = "the polling loop:", "the store writer:", "the metrics-topic publisher:"


class Watchdog:
    def __init__(self, stall_s: float = STALL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self.clock = clock
        #: per thread that beats: when it last did, and what it went on to do
        # every key there from the start: the dict never changes size while another
        # thread reads it
        self._beats: dict[str, tuple[float, str]] = {
            who: (clock(), doing)
            for who, doing in ((LOOP, "starting"), (WRITER, "idle"), (PUBLISHER, "idle"))
        }

    def beat(self, who: str, doing: str) -> None:
        """`who` (`LOOP`, `WRITER` or `PUBLISHER`) made progress, and goes on to `doing`
        (named if that is where it stalls)."""
        if who not in self._beats:
            raise ValueError(f"unknown beat {who!r}")
        self._beats[who] = (self.clock(), doing)

    def idle(self) -> float:
        """Seconds since any thread last beat."""
        return self.clock() - max(at for at, _ in tuple(self._beats.values()))

    def stalled(self) -> str | None:
        """Why the consumer is not alive (no thread beat for more than `stall_s`), or None."""
        now = self.clock()
        beats = sorted(tuple(self._beats.items()), key=lambda item: item[1][0], reverse=True)
        if now - beats[0][1][0] <= self.stall_s:
            return None
        doing = "; ".join(f"{who} {what} for {now - at:.0f} s" for who, (at, what) in beats)
        return f"no progress for more than --stall-timeout {self.stall_s:g} s: {doing}"

    def watch(self, stop: threading.Event) -> threading.Thread:
        """A daemon thread that logs each stall once (an ERROR with every thread's stack) and
        says when the consumer moves again, until `stop` is set."""

        def run() -> None:
            said = False
            while not stop.wait(min(self.stall_s / 4, 5.0)):
                why = self.stalled()
                if why is not None and not said:
                    log.error("consumer stalled: %s; /healthz answers 503; its threads:\n%s", why, stacks())
                elif why is None and said:
                    log.warning("consumer moving again")
                said = why is not None

        thread = threading.Thread(target=run, name="watchdog", daemon=True)
        thread.start()
        return thread


def stacks() -> str:
    """Every other thread's stack, newest call last, headed by the thread's name."""
    names = {t.ident: t.name for t in threading.enumerate()}
    return "\n".join(
        f"thread {names.get(ident, ident)}:\n" + "".join(traceback.format_stack(frame))
        for ident, frame in sys._current_frames().items()
        if ident != threading.get_ident()
    )
