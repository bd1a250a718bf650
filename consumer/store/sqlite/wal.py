"""SQLite's write-ahead log copied back into the database file on a thread of its own.

In WAL mode a commit appends its pages to the `-wal` file, and a checkpoint copies them
back into the database file. SQLite's own autocheckpoint runs that copy inside the commit
that crosses its threshold, on the store writer's thread: a default-set consumer's commits
(~25-30 MB of WAL each) made one every two or three commits, and the polling thread waited
for them (`bench/consumer.py`: with no checkpoint in the commits at all the polling thread
waited 0.6-0.7 s for commits instead of 1.1-1.5, docs/performance.md). Here a second
connection runs a PASSIVE checkpoint after every few commits, which copies what it can
without blocking the writer or readers; the writer's autocheckpoint stays on at a far
higher threshold (`WRITER_AUTOCHECKPOINT`), so that the WAL stays bounded should this
thread fall behind or fail.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger(__name__)

#: commits between two background checkpoints: ~50-60 MB of WAL with the default set's
#: commits, about what SQLite's autocheckpoint of 16,384 pages let pile up before
EVERY_COMMITS = 2
#: the writer connection's own autocheckpoint, in pages (1 GiB of 4 KiB pages): a backstop
WRITER_AUTOCHECKPOINT = 262_144


class WalCheckpointer:
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` on its own connection and thread every
    `every` commits (`committed`); started by the first commit that needs it (a store that
    only reads never starts it); `close` stops it."""

    def __init__(self, path: str, every: int = EVERY_COMMITS) -> None:
        if every < 1:
            raise ValueError(f"every must be at least 1 commit, not {every}")
        self.path = path
        self.every = every
        #: checkpoints run so far (the tests read it)
        self.done = 0
        self._since = 0
        self._due = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def committed(self) -> None:
        """A commit landed: every `every` of them, the thread checkpoints."""
        self._since += 1
        if self._since < self.every:
            return
        self._since = 0
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
            self._thread.start()
        self._due.set()

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:  # the writer's autocheckpoint still bounds the WAL
            log.warning("SQLite checkpoints stay in the commits: cannot open %s: %s", self.path, exc)
            return
        try:
            while True:
                self._due.wait()
                if self._stop.is_set():
                    return
                self._due.clear()
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.done += 1
                except sqlite3.Error as exc:  # tried again after the next commits
                    log.warning("SQLite background checkpoint failed (tried again later): %s", exc)
        finally:
            db.close()

    def close(self) -> None:
        """Stop the thread (a checkpoint under way finishes first) and close its connection."""
        self._stop.set()
        self._due.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
