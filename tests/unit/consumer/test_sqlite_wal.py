"""The SQLite store's WAL checkpoints, run by a thread of their own (consumer.store.sqlite.wal)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from consumer.fold import PartitionFold
from consumer.fold.model import CLOSED, CREATED, Event
from consumer.store import PartitionCommit
from consumer.store.sqlite import SqliteStore
from consumer.store.sqlite.wal import WRITER_AUTOCHECKPOINT, WalCheckpointer


def _commit(store: SqliteStore, f: PartitionFold, n: int, offset: int) -> None:
    for i in range(n):
        conv = offset * 1000 + i
        f.apply(Event(CREATED, 2 * conv + 1, conv % 50, conv, "TELEGRAM", 100 + i, None, None))
        f.apply(Event(CLOSED, 2 * conv + 2, conv % 50, conv, "TELEGRAM", 160 + i, None, None))
    delta, changed = f.take_changes()
    store.commit("events", [PartitionCommit(0, delta, offset, f.watermark, changed)])


def _checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sqlite-checkpoint"]


def test_sqlite_commits_leave_the_checkpoints_to_a_thread_of_their_own(tmp_path: Path) -> None:
    """The writer's autocheckpoint is only a far-off backstop; every `every` commits the
    checkpointer's thread copies the WAL back into the database file (which grows by the
    pages copied), and `close` stops the thread, the rows all there when reopened."""
    path = str(tmp_path / "m.db")
    store = SqliteStore(path)
    store.checkpointer = WalCheckpointer(path, every=2)
    assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == WRITER_AUTOCHECKPOINT
    f = PartitionFold(0)
    before = os.path.getsize(path)
    _commit(store, f, 300, 1)
    assert store.checkpointer.done == 0 and not _checkpoint_threads()  # not due yet
    _commit(store, f, 300, 2)
    deadline = time.monotonic() + 10
    while store.checkpointer.done == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.checkpointer.done == 1
    assert os.path.getsize(path) > before  # the pages were copied back
    assert len(_checkpoint_threads()) == 1
    store.close()
    assert not _checkpoint_threads()
    again = SqliteStore(path)
    try:
        (row,) = again.query("channel_type", "all")
        assert row.closures == 600
    finally:
        again.close()


def test_sqlite_store_that_only_reads_starts_no_checkpoint_thread(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "m.db"))
    store.query("channel_type", "all")
    store.close()
    assert not _checkpoint_threads()


def test_sqlite_checkpoints_at_least_every_commit() -> None:
    with pytest.raises(ValueError, match="at least 1 commit"):
        WalCheckpointer("unused.db", every=0)
