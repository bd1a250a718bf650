"""Children that end with their parent, whatever ends it.

`ending_with_parent(cmd)` runs a child under util-linux's `setpriv --pdeathsig TERM`, which
sets Linux's parent-death signal (prctl PR_SET_PDEATHSIG) and then execs the command: the
kernel sends the child SIGTERM when the process that started it dies, SIGKILL included,
and the child stops as it would on Ctrl-C. The signal follows the thread that started the
child, so children are started from the main thread. Where `setpriv` is missing (not
Linux), the command runs as it is and only a clean stop ends its children.

`signals_stop()` turns SIGTERM and SIGHUP into the KeyboardInterrupt that Ctrl-C raises, so
one `except KeyboardInterrupt` / `finally` stops the children in order on any of them.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
from collections.abc import Iterator
from types import FrameType

SETPRIV = shutil.which("setpriv") if sys.platform == "linux" else None


def ending_with_parent(cmd: list[str]) -> list[str]:
    """`cmd`, made to receive SIGTERM when this process dies (where Linux allows it)."""
    if SETPRIV is None:
        return cmd
    return [SETPRIV, "--pdeathsig", "TERM", "--", *cmd]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def signals_stop(signums: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt (as SIGINT does) while inside."""
    before = {s: signal.signal(s, _interrupt) for s in signums}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
