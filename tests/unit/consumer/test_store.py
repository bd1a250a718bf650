"""The store suite. Every test taking `store` or `make_store` runs on each store: here on
SQLite; tests/integration/test_postgres_store.py runs the same functions on PostgreSQL."""

import functools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.exceptions import ConfigError, FencedError, StoreError
from consumer.fold import Changes, PartitionFold
from consumer.fold.delta import LAYOUT, Delta
from consumer.fold.model import CLOSED, CREATED, OPENED, Event
from consumer.fold.registry import REGISTRY, Registry
from consumer.fold.sketch import bin_of
from consumer.store import LIVE, PartitionCommit, Retention, open_store, store_format
from consumer.store.sqlite import SqliteStore
from consumer.stream.partitions import new_fold
from consumer.stream.settings import ConsumerSettings
from support.firsts import check_against_truth
from support.rows import delta_rows, served_keys

#: (retention=None, *, registry=REGISTRY, again=False) -> a fresh, empty SqliteStore or
#: PostgresStore; `again`: the store made last, opened again (PostgreSQL: one database a test)
MakeStore = Callable[..., Any]

TTC, LAG = REGISTRY.metric("time_to_close"), REGISTRY.metric("ingest_lag")


def commit(store: Any, f: PartitionFold, next_offset: int) -> None:
    delta, changed = f.take_changes()
    store.commit("events", [PartitionCommit(f.partition, delta, next_offset, f.watermark, changed)])


def ev(kind: int, h: int, t: int, conv: int = 1) -> Event:
    return Event(kind, h, 7, conv, "TELEGRAM", t, None, 5)


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[MakeStore]:
    made: list[SqliteStore] = []
    paths: list[Path] = []

    def make(
        retention: Retention | None = None, *, registry: Registry = REGISTRY, again: bool = False
    ) -> SqliteStore:
        if not again:
            paths.append(tmp_path / f"m{len(paths)}.db")
        made.append(SqliteStore(str(paths[-1]), retention=retention, registry=registry))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.fixture
def store(make_store: MakeStore) -> Any:
    s = make_store()
    s.check_topic("events")
    return s


def test_commits_add_up_and_state_reloads(store: Any) -> None:
    f = PartitionFold(3)
    f.apply(ev(CREATED, 1, 100))
    f.apply(ev(CLOSED, 2, 400))
    commit(store, f, 10)
    f.apply(ev(CLOSED, 3, 500, conv=2))
    commit(store, f, 12)
    (row,) = store.query("channel_type", "all")
    assert (row.closures, row.closed_unread, row.ttc_count, row.ttc_sum, row.ttc_min, row.ttc_max) == (
        2,
        2,
        1,
        300,
        300,
        300,
    )
    qs = row.quantiles(TTC)
    assert qs is not None and abs(qs[0] - 300) <= 3

    settings = ConsumerSettings(bootstrap_servers="unused", topic="events")
    restored, offset = new_fold(store, "events", 3, settings)
    assert offset == 12
    assert restored.conversations() == f.conversations()
    assert not restored.apply(ev(CLOSED, 2, 400))  # the dedupe memory came back too
    assert restored.watermark == 500


def test_fresh_partition_starts_from_earliest(store: Any) -> None:
    _, offset = new_fold(store, "events", 0, ConsumerSettings(bootstrap_servers="unused"))
    assert offset is None


def test_retracted_max_is_recomputed_exactly(store: Any) -> None:
    f = PartitionFold(0)
    f.apply(ev(CREATED, 1, 100))
    f.apply(ev(CLOSED, 2, 200))  # 100 s
    f.apply(ev(CLOSED, 4, 1000))  # 900 s for now
    commit(store, f, 3)
    assert store.query("channel_type", "all")[0].ttc_max == 900
    f.apply(ev(OPENED, 3, 700))  # late reopen: the second closure took 300 s
    commit(store, f, 4)
    (row,) = store.query("channel_type", "all")
    assert (row.ttc_count, row.ttc_sum, row.ttc_min, row.ttc_max) == (2, 400, 100, 300)


def test_query_pages_in_window_then_key_order(store: Any) -> None:
    f = PartitionFold(0)
    h = 0
    for minute in range(3):
        for ch in ("B", "A", "C"):
            h += 1
            f.apply(Event(CLOSED, h, 1, h, ch, 600 + 60 * minute))
    commit(store, f, h)
    rows = store.query("channel_type", "1m", limit=100)
    assert [(r.window_start, r.key) for r in rows] == [
        (s, k) for s in (600, 660, 720) for k in ("A", "B", "C")
    ]
    page = store.query("channel_type", "1m", after=(660, "A"), limit=2)
    assert [(r.window_start, r.key) for r in page] == [(660, "B"), (660, "C")]
    assert [r.key for r in store.query("channel_type", "1m", key="C")] == ["C"] * 3
    assert [
        r.window_start for r in store.query("channel_type", "1m", key="C", start_from=660, start_to=720)
    ] == [660]


def test_purge_keeps_rows_by_window_retention(make_store: MakeStore) -> None:
    store = make_store(retention=Retention(minute=3600, hour=None))
    f = PartitionFold(0)
    f.apply(Event(CLOSED, 1, 1, 1, "A", 0))
    f.apply(Event(CLOSED, 2, 1, 2, "A", 10_000))
    commit(store, f, 2)
    assert store.purge() > 0
    assert [r.window_start for r in store.query("channel_type", "1m")] == [9960]
    assert [r.window_start for r in store.query("channel_type", "1h")] == [0, 7200]
    assert store.query("channel_type", "all")[0].closures == 2


def test_purge_cutoff_is_the_newest_watermark_minus_retention(make_store: MakeStore) -> None:
    """A row goes when its window starts before the cutoff; the row starting at it stays.
    All-time rows stay whatever their retention says (they have no window start)."""
    store = make_store(retention=Retention(minute=3600, hour=7200, all=1))
    assert store.purge() == 0  # nothing committed: no watermark, nothing to measure from
    f = PartitionFold(0)
    for h, t in enumerate((0, 3600, 7200)):
        f.apply(Event(CLOSED, h + 1, 1, h + 1, "A", t))
    commit(store, f, 3)  # newest watermark 7200: cutoffs 3600 (1m) and 0 (1h)

    def starts(window: str) -> list[int]:
        return [r.window_start for r in store.query("channel_type", window)]

    def rows_at(window: str, start: int) -> int:  # the rows stored: each stored grouping's own
        stored = [g for g in REGISTRY.stored if REGISTRY.is_source(g.name) or REGISTRY.stores(g, window)]
        return sum(r.window_start == start for g in stored for r in store.query(g.name, window))

    doomed = rows_at("1m", 0)
    assert doomed >= 2 and store.purge() == doomed
    assert (starts("1m"), starts("1h")) == ([3600, 7200], [0, 3600, 7200])
    f.apply(Event(CLOSED, 9, 1, 9, "A", 7201))
    commit(store, f, 4)  # cutoffs 3601 and 1: one second further
    doomed = rows_at("1m", 3600) + rows_at("1h", 0)
    assert store.purge() == doomed
    assert (starts("1m"), starts("1h"), starts("1d")) == ([7200], [3600, 7200], [0])
    assert store.query("channel_type", "all")[0].closures == 4


def test_sqlite_purges_each_grouping_as_a_range_of_the_primary_key(tmp_path: Path) -> None:
    """A purge runs every minute on the writer's thread: its statements seek the primary key
    (by, win, start, ...), never read the whole table (a window's DELETE without `by` did:
    ~180 ms per window for 2,000,000 rows)."""
    from consumer.store import outbox, sqlgen

    store = SqliteStore(str(tmp_path / "m.db"))
    for sql, args in (
        (sqlgen.STORED_GROUPINGS, ()),
        (sqlgen.PURGE_ROWS, ("account", "1h", 5)),
        (outbox.KEEP_PURGED, ("account", "1h", 5)),
    ):
        plan = [r[3] for r in store.db.execute("EXPLAIN QUERY PLAN " + sql, args)]
        reads = [step for step in plan if "metric_rows" in step]
        assert reads and all(step.startswith("SEARCH metric_rows USING PRIMARY KEY") for step in reads), plan
    store.close()


def test_a_late_event_makes_no_purged_row_again(make_store: MakeStore) -> None:
    """A window a purge deleted takes no late event (its row would hold that event alone);
    the row starting at the purge's cutoff still does, and the windows kept (1h, all) count
    every event."""
    store = make_store(retention=Retention(minute=3600, hour=None))
    f = PartitionFold(0)
    f.apply(Event(CLOSED, 1, 1, 1, "A", 0))
    f.apply(Event(CLOSED, 2, 1, 2, "A", 10_020))
    commit(store, f, 2)  # newest watermark 10,020: the 1m cutoff is 6,420
    assert store.purge() > 0
    for h, t in ((3, 30), (4, 6419), (5, 6420)):  # minutes 0 and 6,360 were purged
        f.apply(Event(CLOSED, h, 1, h, "A", t))
    commit(store, f, 5)

    def closures(window: str) -> dict[int, int | None]:
        return {r.window_start: r.closures for r in store.query("channel_type", window)}

    assert closures("1m") == {6420: 1, 10_020: 1}
    assert closures("1h") == {0: 2, 3600: 2, 7200: 1}
    assert [r.closures for r in store.query("channel_type", "all")] == [5]
    assert store.purge() == 0  # nothing below the cutoff was written again


def test_a_purge_keeps_the_keys_it_deletes_for_the_topics_to_tombstone(make_store: MakeStore) -> None:
    """While a metrics topic publishes from the store, a purge keeps the keys of the rows it
    deletes (as the topics publish them) until every topic has tombstoned them; a store
    nobody publishes keeps none."""
    store = make_store(retention=Retention(minute=3600, hour=None))
    f = PartitionFold(0)
    f.apply(Event(CLOSED, 1, 1, 1, "A", 0))
    commit(store, f, 1)
    f.apply(Event(CLOSED, 2, 1, 2, "A", 10_020))
    commit(store, f, 2)
    assert store.purge() > 0
    assert store.purged_since("rows") == ([], 0)  # nobody publishes: nothing kept
    store.mark_published({0: 1}, "rows")  # two topics publish from here on
    store.mark_published({0: 1}, "v1")
    f.apply(Event(CLOSED, 3, 1, 3, "A", 20_000))  # cutoff 16,400: the minute of 10,020 goes
    commit(store, f, 3)
    assert store.purge() > 0
    keys, mark = store.purged_since("rows")
    # the minute of 10,020 as every grouping the topics publish it by
    assert keys == [
        ("account", "1m", 10_020, "1"),
        ("account,channel_type", "1m", 10_020, "1|A"),
        ("channel_type", "1m", 10_020, "A"),
    ]
    assert mark > 0 and store.purged_since("v1") == (keys, mark)
    store.mark_purged_published("rows", mark)
    assert store.purged_since("rows") == ([], mark)
    assert store.purge() == 0  # nothing new; "v1" has not tombstoned them: they stay
    assert store.purged_since("v1") == (keys, mark)
    store.mark_purged_published("v1", mark)
    assert store.purged_since("new") == (keys, mark)  # a topic with no mark yet reads them all
    store.purge()  # every topic that publishes has tombstoned them: forgotten
    assert store.purged_since("new") == ([], 0)
    store.mark_purged_published("rows", 0)  # a mark never goes back
    assert store.purged_since("rows") == ([], mark)


def test_store_holds_one_topic(store: Any) -> None:
    with pytest.raises(StoreError, match="one store per topic"):
        store.check_topic("other")


def test_store_urls(tmp_path: Path) -> None:
    s = open_store(f"sqlite:///{tmp_path}/x.db")
    s.close()
    assert (tmp_path / "x.db").exists()
    with pytest.raises(ConfigError, match="unsupported"):
        open_store("mysql://x")


def test_a_newer_claim_fences_the_old_owner(store: Any) -> None:
    old_epoch = store.claim("events", 0, "old")
    f = PartitionFold(0)
    f.apply(ev(CLOSED, 2, 400))
    delta, changed = f.take_changes()
    new_epoch = store.claim("events", 0, "new")  # the partition moved while "old" was paused
    assert new_epoch == old_epoch + 1
    with pytest.raises(FencedError) as info:
        store.commit("events", [PartitionCommit(0, delta, 1, f.watermark, changed, epoch=old_epoch)])
    assert info.value.partitions == [0]
    assert store.query("channel_type", "all") == []  # nothing of the fenced commit landed
    assert store.load_partition("events", 0).next_offset is None
    store.commit("events", [PartitionCommit(0, delta, 1, f.watermark, changed, epoch=new_epoch)])
    assert store.query("channel_type", "all")[0].closures == 1


def test_a_store_a_newer_release_upgraded_is_refused_at_open_and_at_commit(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A newer release's format (`store_format`) is refused where a release reads or writes
    the store: opened by this release after the upgrade, or committed to by a consumer of
    this release that opened it before (a rolling upgrade), nothing of that commit landing.
    The store's own format and a store noting none open as ever."""
    ours = store_format.FORMAT
    older = make_store()
    older.check_topic("events")
    f = PartitionFold(0)
    f.apply(ev(CLOSED, 1, 100))
    commit(older, f, 1)  # this release's format, noted by the store's first open
    monkeypatch.setattr(store_format, "FORMAT", ours + 1)
    newer = make_store(again=True)  # a newer release opens (and stamps) it
    assert newer.query("channel_type", "all")[0].closures == 1
    monkeypatch.setattr(store_format, "FORMAT", ours)
    with pytest.raises(
        StoreError,
        match=rf"is in format {ours + 1}, made by a newer convmetrics release; this release reads and "
        rf"writes format {ours}",
    ):
        make_store(again=True)
    f.apply(ev(CLOSED, 2, 200, conv=2))
    with pytest.raises(
        StoreError,
        match=rf"upgraded to format {ours + 1} by a newer convmetrics release while this consumer ran",
    ):
        commit(older, f, 2)
    assert newer.load_partition("events", 0).next_offset == 1  # nothing of it landed
    assert newer.query("channel_type", "all")[0].closures == 1
    monkeypatch.setattr(store_format, "FORMAT", ours + 2)
    make_store(again=True)  # a release newer still opens it, and notes its own
    monkeypatch.setattr(store_format, "FORMAT", ours + 1)
    with pytest.raises(StoreError, match=f"is in format {ours + 2}"):
        make_store(again=True)


def test_fencing_one_partition_refuses_the_whole_transaction(store: Any) -> None:
    e0, e1 = store.claim("events", 0, "me"), store.claim("events", 1, "me")
    store.claim("events", 1, "someone else")
    f0, f1 = PartitionFold(0), PartitionFold(1)
    f0.apply(ev(CLOSED, 1, 100))
    f1.apply(ev(CLOSED, 2, 100, conv=2))
    d0, c0 = f0.take_changes()
    d1, c1 = f1.take_changes()
    with pytest.raises(FencedError):
        store.commit(
            "events",
            [PartitionCommit(0, d0, 1, 100, c0, epoch=e0), PartitionCommit(1, d1, 1, 100, c1, epoch=e1)],
        )
    assert store.query("channel_type", "all") == []


def test_ingest_lag_is_stored_and_summarised(store: Any) -> None:
    f = PartitionFold(0)
    for i, lag_ms in enumerate((100, 200, 300, 5000)):
        f.apply(Event(CLOSED, i + 1, 7, i, "TELEGRAM", 600, None, None, 600_000 + lag_ms))
    commit(store, f, 4)
    (row,) = store.query("channel_type", "all")
    assert (row.lag_count, row.lag_sum, row.lag_max) == (4, 5600, 5000)
    lag = row.quantiles(LAG)
    assert lag is not None
    assert abs(lag[0] - 200) <= 2  # lower median, within 1%
    assert row.quantiles(TTC) is None  # the lag bins do not leak into time to close


def test_outbox_returns_rows_changed_since_the_last_publication(store: Any) -> None:
    """Marks are per partition on PostgreSQL (rows keyed by partition, seq its offset) and one
    for the store on SQLite (one writer; seq a commit counter): either way, publication
    picks up where it left off."""
    f = PartitionFold(0)
    f.apply(ev(CLOSED, 1, 100))
    commit(store, f, 1)
    assert set(store.published_marks([0]).values()) == {0}
    rows, marks = store.changed_since(store.published_marks([0]))
    # 3 groupings x 4 windows: channel type, account and account,channel_type (derived from
    # its source's rows, never published itself; an event without inbox or app counts in
    # none of theirs)
    assert len(rows) == 12 and min(marks.values()) >= 1
    assert {r.by for r in rows} == {"channel_type", "account", "account,channel_type"}
    store.mark_published(marks)
    assert store.changed_since(store.published_marks([0])) == ([], marks)
    f.apply(ev(CLOSED, 2, 100_000, conv=2))  # another minute, hour and day; same all-time rows
    commit(store, f, 2)
    rows, newest = store.changed_since(store.published_marks([0]))
    assert newest.keys() == marks.keys() and all(newest[p] > marks[p] for p in marks)
    assert {(r.by, r.window) for r in rows if r.window == "all"} == {
        ("channel_type", "all"),
        ("account", "all"),
        ("account,channel_type", "all"),
    }
    assert all(r.window_start == 99_960 for r in rows if r.window == "1m")
    store.mark_published(newest)
    store.mark_published(marks)  # a late, older mark (another process) never moves publication back
    assert store.published_marks([0]) == newest
    # each topic has its own marks: a second topic still has everything to publish
    assert set(store.published_marks([0], "another-topic").values()) == {0}
    rows, _ = store.changed_since(store.published_marks([0], "another-topic"))
    assert len(rows) == 21  # both commits' rows: 12, and each grouping's new minute, hour and day


def test_outbox_skips_commits_that_changed_no_row(store: Any) -> None:
    f = PartitionFold(0)
    f.apply(ev(CREATED, 100, 50))  # 12 rows: 3 groupings x 4 windows
    commit(store, f, 1)
    for i in range(29):  # redeliveries change no metric row
        f.apply(ev(CREATED, 100, 50))
        commit(store, f, i + 2)
    f.apply(ev(CLOSED, 1, 100))  # another minute: 3 rows more
    commit(store, f, 31)
    rows, newest = store.changed_since(store.published_marks([0]))
    assert len([r for r in rows if r.window != LIVE]) == 15 and min(newest.values()) > 0
    # and the gauges of the keys the close changed: back to 0, and named, so the topic learns it
    live = {(r.by, r.key): tuple(r.values.values()) for r in rows if r.window == LIVE}
    assert ("channel_type", "TELEGRAM") in live and ("account", "7") in live
    assert set(live.values()) == {(0, 0, 0)}


def test_outbox_names_changed_gauges_and_moves_past_a_commit_of_gauges_only(store: Any) -> None:
    """The outbox names each backlog key a commit changed, with its gauges summed over
    partitions; a commit that changed gauges and no metric row (as one that only forgets
    conversations does) is published too, and the mark moves past it."""
    f = PartitionFold(0)
    f.apply(ev(CREATED, 1, 100))
    delta, changed = f.take_changes()
    (where,) = delta.gauges  # the conversation's (channel type, account, inbox, app)
    store.commit("events", [PartitionCommit(0, delta, 1, f.watermark, changed)])
    rows, newest = store.changed_since(store.published_marks([0]))
    live = {(r.by, r.key): (r.open_now, r.unassigned_now, r.snoozed_now) for r in rows if r.window == LIVE}
    assert live[("channel_type", "TELEGRAM")] == live[("account", "7")] == (1, 1, 0)
    store.mark_published(newest)
    assert store.changed_since(store.published_marks([0]))[0] == []
    gone = Delta()
    gone.add_gauges(where, (1, 1, 0), -1)  # forgotten: its gauges taken back, no metric row
    store.commit("events", [PartitionCommit(0, gone, 2, f.watermark, Changes())])
    rows, newest = store.changed_since(store.published_marks([0]))
    assert rows and {r.window for r in rows} == {LIVE}
    assert {(r.by, r.key) for r in rows} == set(live)
    assert {(r.open_now, r.unassigned_now, r.snoozed_now) for r in rows} == {(0, 0, 0)}
    store.mark_published(newest)
    assert store.changed_since(store.published_marks([0]))[0] == []  # the mark moved past it
    assert store.backlog("account")[1] == []  # /v1/backlog leaves keys at 0 out


def test_outbox_leaves_out_a_backlog_key_whose_changes_cancel_out(store: Any) -> None:
    """A conversation moving from one inbox of an account to another changes the two inbox
    rows and no other: its channel type's, account's and app's rows lose it and gain it
    back in the same commit, so the outbox names only the inboxes."""
    before, after = ("TELEGRAM", 7, 3, 9), ("TELEGRAM", 7, 4, 9)
    opened = Delta()
    opened.add_gauges(before, (1, 1, 0), 1)
    store.commit("events", [PartitionCommit(0, opened, 1, 100, Changes())])
    store.mark_published(store.changed_since(store.published_marks([0]))[1])
    moved = Delta()
    moved.add_gauges(before, (1, 1, 0), -1)
    moved.add_gauges(after, (1, 1, 0), 1)
    store.commit("events", [PartitionCommit(0, moved, 2, 100, Changes())])
    rows, _ = store.changed_since(store.published_marks([0]))
    assert {(r.by, r.key, r.open_now) for r in rows if r.window == LIVE} == {
        ("inbox", "7|3", 0),
        ("inbox", "7|4", 1),
    }


def test_outbox_rows_equal_the_queried_rows_key_for_key(store: Any) -> None:
    """The outbox reads the keys a commit changed in one grouping, window and start
    together: each row it gives equals a query of that key alone, values and sketch bins,
    merged over partitions (account 0 closes conversations in both)."""
    f0, f1 = PartitionFold(0), PartitionFold(1)
    for a in range(5):
        f = (f0, f1)[a % 2]
        f.apply(Event(CREATED, 10 * a + 1, a, a, "TELEGRAM", 100, None, None))
        f.apply(Event(CLOSED, 10 * a + 2, a, a, ("TELEGRAM", "WHATSAPP")[a % 2], 160 + 60 * a, None, None))
    f1.apply(Event(CREATED, 91, 0, 9, "TELEGRAM", 100, None, None))
    f1.apply(Event(CLOSED, 92, 0, 9, "TELEGRAM", 3_700, None, None))
    commit(store, f0, 5)
    commit(store, f1, 7)
    rows, _ = store.changed_since({p: 0 for p in store.published_marks([0, 1])})
    rows = [r for r in rows if r.window != LIVE]
    assert {r.key for r in rows if r.by == "account" and r.window == "all"} == {str(a) for a in range(5)}
    for r in rows:
        (alone,) = store.query(
            r.by, r.window, key=r.key, start_from=r.window_start, start_to=r.window_start + 1
        )
        assert r == alone
    (zero,) = [r for r in rows if r.by == "account" and r.key == "0" and r.window == "all"]
    assert zero.closures == 2 and len(zero.bins) == 2  # both partitions' closures and bins


def test_partitions_write_their_own_rows_and_queries_merge_them(store: Any) -> None:
    """Two partitions' events in the same rows: a query merges them exactly, and the outbox
    names the merged rows. On PostgreSQL each commit writes rows keyed by its own partition
    (no row two consumers would both write); SQLite, one writer at a time, keeps one row."""
    f0, f1 = PartitionFold(0), PartitionFold(1)
    f0.apply(ev(CREATED, 1, 100))
    f0.apply(ev(CLOSED, 2, 160))  # ttc 60
    f1.apply(ev(CREATED, 3, 100, conv=2))
    f1.apply(ev(CLOSED, 4, 400, conv=2))  # ttc 300; another conversation of account 7
    commit(store, f0, 5)
    commit(store, f1, 7)
    (row,) = store.query("channel_type", "all")
    assert (row.closures, row.ttc_count, row.ttc_sum, row.ttc_min, row.ttc_max) == (2, 2, 360, 60, 300)
    assert row.bins == tuple(sorted([(bin_of(60), 1), (bin_of(300), 1)]))  # both partitions' bins
    (acc,) = store.query("account", "1h", key="7")
    assert acc.closures == 2
    marks = store.published_marks([1])
    rows, _ = store.changed_since({p: 0 for p in marks})
    assert {(r.by, r.window) for r in rows if r.window == "all"} == {
        ("channel_type", "all"),
        ("account", "all"),
        ("account,channel_type", "all"),
    }
    (merged,) = [r for r in rows if r.by == "channel_type" and r.window == "all"]
    assert merged.closures == 2  # the topic carries the merged row, not the partition's share
    if isinstance(store, SqliteStore):
        parts = store.db.execute(
            "SELECT partition, closures FROM metric_rows WHERE by='channel_type' AND win='all'"
        ).fetchall()
        assert parts == [(-1, 2)]


def test_rank_orders_searches_pages_and_counts_merged_rows(store: Any) -> None:
    """`Store.rank` (the dashboard's account table): rows merged over partitions, ranked by
    a counter, a share (NULL, a share of nothing, below every number) or a distribution's
    mean, integer keys in numeric order, searched by key text, paged by position, counted."""
    from consumer.store.base import Ranking

    folds = {0: PartitionFold(0), 1: PartitionFold(1)}
    h = 0

    def conv(p: int, account: int, conv: int, closes: list[bool], t: int = 1000) -> None:
        nonlocal h
        h += 1
        folds[p].apply(Event(CREATED, h, account, conv, "SMS", t, None, None))
        for i, unread in enumerate(closes):
            h += 2
            t_close = t + 60 * (i + 1) * account
            folds[p].apply(
                Event(CLOSED, h, account, conv, "SMS", t_close, None, t_close - 5 if unread else None)
            )
            folds[p].apply(Event(OPENED, h + 1, account, conv, "SMS", t_close + 1))

    conv(0, 3, 1, [True])
    conv(1, 3, 2, [False, False])  # account 3 on two partitions: 3 closures, 1 unread
    conv(0, 12, 3, [True, True])  # 2 closures, both unread
    conv(1, 21, 4, [False])
    h += 1
    folds[0].apply(Event(OPENED, h, 2, 5, "SMS", 5000))  # account 2: a reopen, no closure
    for p, f in folds.items():
        commit(store, f, 10 + p)

    def ranked(value: str, descending: bool = True, **kw: Any) -> tuple[list[str], int]:
        rows, total = store.rank(Ranking("account", "all", value, descending, **kw))
        return [r.key for r in rows], total

    assert ranked("closures") == (["3", "12", "21", "2"], 4)
    assert ranked("key", False) == (["2", "3", "12", "21"], 4)  # numerically, not as text
    assert ranked("key") == (["21", "12", "3", "2"], 4)
    assert ranked("closed_unread/closures") == (["12", "3", "21", "2"], 4)
    assert ranked("closed_unread/closures", False) == (["2", "21", "3", "12"], 4)
    assert ranked("time_to_close.mean", False)[0][:2] == ["2", "3"]  # no closes (NULL), then the soonest
    assert ranked("closures", contains="2") == (["12", "21", "2"], 3)
    assert ranked("closures", offset=2, limit=2) == (["21", "2"], 4)
    assert ranked("closures", offset=10) == ([], 4)
    assert ranked("closures", contains="9") == ([], 0)
    rows, _ = store.rank(Ranking("account", "all", "closures", limit=1))
    (top,) = rows
    (same,) = store.query("account", "all", key="3")
    assert top == same  # the page's rows are whole: merged values and sketch bins
    assert top.closures == 3 and top.closed_unread == 1 and sum(n for _, n in top.bins) == 3
    rows, total = store.rank(Ranking("channel_type", "1m", "closures", start_from=1100, start_to=1200))
    assert total == len(rows) == 1
    assert (rows[0].window_start, rows[0].closures) == (1140, 2)  # account 3's first closes
    assert store.newest_start("channel_type", "1m") == 4980  # account 2's reopen
    assert store.newest_start("account", "1d") == 0 and store.newest_start("account", "all") == 0
    assert store.newest_start("inbox", "1m") is None


def test_a_query_of_some_metrics_reads_them_as_the_whole_row_holds_them(store: Any) -> None:
    """`metrics=` (what `/v1/closures` shows of a full-set store) reads only those metrics'
    columns, with the same values and bins as the whole row, in `query` and in `rank`."""
    from dataclasses import replace

    from consumer.fold import native as fold_native
    from consumer.store.base import Ranking
    from support.streams import commit_stream, stream

    msgs, records = stream(2000, 5)
    commit_stream(store, fold_native.PYTHON, msgs, records, 500)
    shown = tuple(m.name for m in store.registry.closures_shown)
    cols = store.registry.columns_of(shown)
    assert 0 < len(cols) < len(store.registry.value_columns)

    def picked(rows: list[Any]) -> list[Any]:
        return [(r.key, r.window_start, {c: r.values[c] for c in cols}, r.bins) for r in rows]

    def whole(rows: list[Any]) -> list[Any]:
        return [(r.key, r.window_start, r.values, r.bins) for r in rows]

    for by in ("channel_type", "account"):
        for win in ("1h", "all"):
            rows = store.query(by, win, limit=100_000)
            assert rows and any(r.bins for r in rows)
            assert picked(rows) == whole(store.query(by, win, limit=100_000, metrics=shown))
    ranking = Ranking("account", "all", "closures", limit=20)
    (rows, total), (some, counted) = store.rank(ranking), store.rank(replace(ranking, metrics=shown))
    assert len(rows) == 20 and total == counted
    assert picked(rows) == whole(some)
    # counters alone: the same values, and no bins read (no distribution asked for)
    counters = ("closures", "closed_unread")
    cut = store.registry.columns_of(counters)
    for by in ("channel_type", "account"):
        every = store.query(by, "1h", limit=100_000)
        got = store.query(by, "1h", limit=100_000, metrics=counters)
        assert [(r.key, r.window_start, {c: r.values[c] for c in cut}, ()) for r in every] == whole(got)
    ranked, _ = store.rank(replace(ranking, metrics=counters))
    assert [(r.key, r.window_start, {c: r.values[c] for c in cut}, ()) for r in rows] == whole(ranked)
    # a ranked page of many starts and keys: each row as a query of it finds it (the page's
    # values are read after the ranking, by start and key)
    page, _ = store.rank(Ranking("account", "1h", "closures", limit=60))
    assert len(page) == 60 and len({r.window_start for r in page}) > 1
    for r in page:
        one = store.query("account", "1h", key=r.key, start_from=r.window_start, start_to=r.window_start + 1)
        assert [r] == one


def test_a_span_of_some_keys_finds_what_a_filter_of_every_row_finds(store: Any) -> None:
    """A query of one key, or of one account's keys, over a bounded span lists the span's
    window starts (`listed_starts`) instead of a range: the same rows as filtering every
    row by key and start, at the span's edges (a start exactly at `start_from` is in, at
    `start_to` out), unaligned, empty, and past MAX_LISTED_STARTS (the range again)."""
    from consumer.fold import native as fold_native
    from consumer.store.rows import MAX_LISTED_STARTS
    from support.streams import commit_stream, stream

    msgs, records = stream(3000, 5)
    commit_stream(store, fold_native.PYTHON, msgs, records, 500)

    def view(rows: list[Any]) -> list[Any]:
        return [(r.key, r.window_start, r.values, r.bins) for r in rows]

    for by, win, size in (("account,channel_type", "1h", 3600), ("account", "1m", 60)):
        every = store.query(by, win, limit=1_000_000)
        account = every[len(every) // 2].key.split("|")[0]
        key = every[len(every) // 3].key
        # the edges are the chosen key's first and last starts: a query that took one
        # window too many or too few at either end would show it
        starts = sorted(r.window_start for r in every if r.key == key)
        lo, hi = starts[0], starts[-1]
        assert lo < hi
        spans = [(lo, hi), (lo, hi + 1), (lo + 1, hi + size), (lo - 1, lo), (lo, lo + 1), (hi, hi)]
        spans += [(lo + 1, lo + size - 1), (lo - size * MAX_LISTED_STARTS, hi + 1)]  # empty; too many
        for a, b in spans:
            inside = [r for r in every if a <= r.window_start < b]
            if "," in by:  # parts of a key of several dimensions
                got = store.query(by, win, parts={0: account}, start_from=a, start_to=b, limit=1_000_000)
                assert view(got) == view([r for r in inside if r.key.split("|")[0] == account]), (a, b)
            got = store.query(by, win, key=key, start_from=a, start_to=b, limit=1_000_000)
            assert view(got) == view([r for r in inside if r.key == key]), (by, key, a, b)
        assert store.query(by, win, key=key, start_from=lo, start_to=hi + 1, limit=1_000_000)  # not vacuous


def test_sqlite_outbox_index_is_made_by_the_first_publication(tmp_path: Path) -> None:
    """A store nobody publishes from keeps no seq index (it costs every upsert); the first
    publication makes it and still finds the rows changed before it existed."""
    store = SqliteStore(str(tmp_path / "m.db"))

    def indexed() -> bool:
        found = store.db.execute("SELECT 1 FROM sqlite_schema WHERE name='metric_rows_by_partition_seq'")
        return found.fetchone() is not None

    f = PartitionFold(0)
    f.apply(ev(CLOSED, 1, 100))
    commit(store, f, 1)
    assert not indexed()
    rows, marks = store.changed_since(store.published_marks([0]))
    assert indexed() and len(rows) == 12 and marks == {-1: 1}
    plan = " ".join(
        str(r)
        for r in store.db.execute(
            "EXPLAIN QUERY PLAN SELECT DISTINCT seq FROM metric_rows WHERE partition = -1 AND seq > 0"
        )
    )
    assert "metric_rows_by_partition_seq" in plan
    store.close()


def test_stored_rows_equal_the_folds_own_aggregate(store: Any) -> None:
    """Whatever way a store aggregates the fold's facts (both roll them up on the client, the
    compiled rollup or the reference), every row equals
    `Delta.rows` summed over the commits: a generated stream with duplicates, late events,
    corrections, unknown channel types and ingest lag, committed in several pieces."""
    from consumer.fold.model import READER_SCHEMA, from_record
    from consumer.fold.sketch import quantiles
    from consumer.fold.windows import WINDOWS
    from convmetrics.generate import GenerateConfig, generate_webhooks
    from producer.intake import Prepared, prepare
    from schemas import CONVERSATION_EVENT, Codec, subject

    writer = Codec(subject(CONVERSATION_EVENT))
    reader = Codec(subject(CONVERSATION_EVENT), reader_schema=READER_SCHEMA)
    cfg = GenerateConfig(events=6000, seed=11, accounts=40, conversations=900, late_rate=0.1)
    events = []
    for i, w in enumerate(generate_webhooks(cfg)):
        p = prepare(w, writer, received_at_millis=1_700_000_000_000 + i * 997)
        if isinstance(p, Prepared) and (e := from_record(reader.decode(p.value))) is not None:
            events.append(e)
    f = PartitionFold(0)
    counters = [m.column for m in REGISTRY.counters]
    expected: dict[tuple[str, str, str, int], list[Any]] = {}
    bins: dict[tuple[str, str, str, int], dict[int, int]] = {}
    stale: set[tuple[str, str, str, int]] = set()
    for piece in range(4):
        for e in events[piece * len(events) // 4 : (piece + 1) * len(events) // 4]:
            f.apply(e)
        delta, changed = f.take_changes()
        for k, r in delta_rows(delta).items():
            got = expected.setdefault(k, [0] * (4 + len(counters)) + [None, None, None])
            sums = (*(getattr(r, c) for c in counters), r.ttc_count, r.ttc_sum, r.lag_count, r.lag_sum)
            for i, v in enumerate(sums):
                got[i] += v
            n = len(sums)
            for i, v, pick in ((n, r.lag_max, max), (n + 1, r.ttc_min, min), (n + 2, r.ttc_max, max)):
                got[i] = v if got[i] is None else got[i] if v is None else pick(got[i], v)
            for b, n in r.bins.items():
                bins.setdefault(k, {})[b] = bins.get(k, {}).get(b, 0) + n
            if r.recheck:
                stale.add(k)
        store.commit("events", [PartitionCommit(0, delta, piece, f.watermark, changed)])
    # exact min/max of every row, from the closures the conversations hold at the end
    durations: dict[tuple[str, str, str, int], list[int]] = {}
    for (account, _), blob in f.conversations().items():
        for _, closed_at, channel, start, inbox, app in orjson.loads(blob)[2]:
            if start is not None:
                fact = [None] * len(LAYOUT.fields)
                fact[:5] = [channel, account, inbox, app, closed_at]
                for k in served_keys(tuple(fact)):
                    durations.setdefault(k, []).append(closed_at - start)
    checked = 0
    assert LAYOUT.fields[:5] == ("channel_type", "account", "inbox", "app", "t")
    for by in (g.name for g in REGISTRY.groupings):
        for window in WINDOWS:
            rows = store.query(by, window, limit=100_000)
            assert {(by, r.key, window, r.window_start) for r in rows} == {
                k for k in expected if k[0] == by and k[2] == window
            }
            for r in rows:
                k = (by, r.key, window, r.window_start)
                want = expected[k]
                got = [*(r.values[c] for c in counters), r.ttc_count, r.ttc_sum, r.lag_count, r.lag_sum,
                       r.lag_max]  # fmt: skip
                n = len(got)
                assert got == want[:n], k
                if k not in stale:
                    assert (r.ttc_min, r.ttc_max) == (want[n], want[n + 1]), k
                ttcs = durations.get(k)
                assert (r.ttc_min, r.ttc_max) == ((min(ttcs), max(ttcs)) if ttcs else (None, None)), k
                assert r.quantiles(TTC) == quantiles(bins.get(k, {})), k
                assert r.quantiles(LAG) == quantiles(bins.get(k, {}), lag=True), k
                checked += 1
    assert checked > 5000 and stale  # the stream exercised corrections too
    assert {k[0] for k in stale} == {g.name for g in REGISTRY.groupings}


def test_conversations_reload_through_logs_snapshots_and_expiry(store: Any) -> None:
    """Both stores keep conversations as a log of changes plus snapshots: they must reload
    exactly the fold's conversations, whatever mix of logged commits, snapshots and expiry."""
    f = PartitionFold(2)
    h = 0
    for step in range(9):
        for conv in range(step * 3, step * 3 + 5):  # overlapping conversations across commits
            h += 1
            f.apply(ev(CREATED, h, 100 * step + conv, conv=conv))
            h += 1
            f.apply(ev(CLOSED, h, 100 * step + conv + 50, conv=conv))
        delta, changed = f.take_changes()
        expired = f.expire(ttl=400) if step in (5, 8) else []
        snapshot = f.snapshot(chunk=4) if step in (3, 6) else None  # several chunks
        store.commit(
            "events", [PartitionCommit(2, delta, step + 1, f.watermark, changed, expired, 0, snapshot)]
        )
        state = store.load_partition("events", 2)
        assert state.conversations == f.conversations(), step
        assert state.next_offset == step + 1
    assert 0 < len(f.conversations()) < 29  # 29 conversations were seen: expiry forgot some


def test_sqlite_reads_conversations_written_before_the_log(tmp_path: Path) -> None:
    import sqlite3

    path = str(tmp_path / "old.db")
    s = SqliteStore(path)
    s.check_topic("events")
    db = sqlite3.connect(path)
    with db:  # what a store written by an earlier version holds
        db.execute("INSERT INTO conversations VALUES (4, 7, 1, '[100,[100],[],[11]]')")
        db.execute("INSERT INTO conversations VALUES (4, 7, 2, '[200,[200],[],[12]]')")
    db.close()
    f = new_fold(s, "events", 4, ConsumerSettings("unused:9092"))[0]
    f.apply(ev(CLOSED, 13, 300, conv=2))
    delta, changed = f.take_changes()
    s.commit("events", [PartitionCommit(4, delta, 5, f.watermark, changed)])
    assert s.load_partition("events", 4).conversations == f.conversations()
    assert set(f.conversations()) == {(7, 1), (7, 2)}
    delta, changed = f.take_changes()
    s.commit("events", [PartitionCommit(4, delta, 6, f.watermark, changed, snapshot=f.snapshot())])
    assert s.load_partition("events", 4).conversations == f.conversations()
    s.close()


OLD_CLOSURES = """CREATE TABLE closures (
    event_hash INTEGER PRIMARY KEY, partition INTEGER NOT NULL, account INTEGER NOT NULL,
    conversation INTEGER NOT NULL, channel_type TEXT NOT NULL, closed_at INTEGER NOT NULL,
    ttc INTEGER)"""


@pytest.mark.parametrize("layout", ["keyed by account", "keyed by event hash (older stores)"])
def test_sqlite_rechecks_account_rows_on_either_closures_layout(tmp_path: Path, layout: str) -> None:
    import sqlite3

    path = str(tmp_path / "m.db")
    if layout.startswith("keyed by event hash"):
        with sqlite3.connect(path) as db:
            db.execute(OLD_CLOSURES)
    s = SqliteStore(path)
    s.check_topic("events")
    indexes = {r[0] for r in s.db.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'closures'")}
    assert ("closures_by_account_ttc" in indexes) == layout.startswith("keyed by event hash")
    f = PartitionFold(0)
    f.apply(ev(CREATED, 1, 100))
    f.apply(ev(CLOSED, 2, 200))  # 100 s
    f.apply(ev(CLOSED, 4, 1000))  # 900 s for now
    commit(s, f, 3)
    f.apply(ev(OPENED, 3, 700))  # late reopen: the second closure took 300 s, corrected in place
    commit(s, f, 4)
    for by, key in (("account", "7"), ("channel_type", "TELEGRAM")):
        (row,) = s.query(by, "all", key=key)
        assert (row.ttc_count, row.ttc_sum, row.ttc_min, row.ttc_max) == (2, 400, 100, 300), by
    assert s.db.execute("SELECT event_hash, ttc FROM closures ORDER BY closed_at").fetchall() == [
        (2, 100),
        (4, 300),
    ]
    s.close()


def test_first_closes_and_time_to_first_assignment_equal_the_oracle(store: Any) -> None:
    """Late earlier closes and late created events across commits: the rows' counts and
    min/max (recomputed from first_assignments after a retraction) stay exact."""
    from consumer.fold.native import choose

    check_against_truth(store, choose())


def test_sla_buckets_at_their_bounds_and_a_late_correction_moves_a_closure(store: Any) -> None:
    """Each bound belongs to its own bucket (le_1h: at most 3600 s), the next second to the
    next one; a late start that shortens a duration moves the closure between buckets."""
    f = PartitionFold(0)
    bounds = [0, 3600, 3601, 14400, 14401, 28800, 28801, 86400, 86401]
    for i, d in enumerate(bounds):
        f.apply(ev(CREATED, 100 + i, 1_000_000, conv=i))
        f.apply(ev(CLOSED, 200 + i, 1_000_000 + d, conv=i))
    commit(store, f, 1)

    def buckets(by: str = "channel_type") -> dict[str, int | None]:
        (row,) = store.query(by, "all")
        return {name: row.values[col] for name, col, _, _ in TTC.bucket_columns}

    want = {"le_1h": 2, "le_4h": 2, "le_8h": 2, "le_24h": 2, "gt_24h": 1}
    assert buckets() == buckets("account") == want
    f.apply(ev(OPENED, 300, 1_000_000 + 86401 - 60, conv=8))  # late: the 86401 s closure took 60 s
    commit(store, f, 2)
    assert buckets() == buckets("account") == want | {"le_1h": 3, "gt_24h": 0}


def test_store_urls_are_logged_without_their_password() -> None:
    from consumer.store.choose import redacted

    assert (
        redacted("postgresql://cm:s3cret@db:5432/cm?sslmode=require")
        == "postgresql://cm:***@db:5432/cm?sslmode=require"
    )
    assert redacted("postgresql://cm@db/cm") == "postgresql://cm@db/cm"
    assert redacted("sqlite:////data/convmetrics.db") == "sqlite:////data/convmetrics.db"


def test_changes_of_several_chunks_load_back_with_the_forgotten_gone(store: Any) -> None:
    """A commit's changed conversations come in chunks (`Changes`); a store keeps every
    chunk, and forgets the conversations the same commit expired, even those it changed."""
    from consumer.fold.native import choose

    fold = choose().new(0, registry=store.registry)
    for conv in range(5):  # one a day: the first three are 4, 3 and 2 days behind the last
        fold.apply(Event(CREATED, conv + 1, 7, conv, "TELEGRAM", 100 + conv * 86_400, None, None))
    delta, changes = fold.take_changes(2)
    expired = fold.expire(ttl=2 * 86_400 - 1)
    delta.merge_gauges(fold.take_changes()[0])
    assert len(changes.chunks) == 3 and sorted(expired) == [(7, 0), (7, 1), (7, 2)]
    store.commit("events", [PartitionCommit(0, delta, 1, fold.watermark, changes, expired)])
    loaded = store.load_partition("events", 0).conversations
    assert loaded == fold.conversations() and sorted(loaded) == [(7, 3), (7, 4)]


def test_the_backlog_follows_each_conversations_latest_event(store: Any) -> None:
    """The gauges over the conversations remembered: a conversation counts at its latest
    event (time, then the larger event id; late and duplicate events included), moves
    between keys when that changes, and leaves them when it is forgotten (the commit that
    drops it drops its counts)."""
    from consumer.fold.model import KINDS, event_hash
    from consumer.fold.native import choose
    from consumer.stream.partitions import take_changes

    fold = choose().new(0, registry=store.registry)
    offset = 0

    def fold_and_commit(
        events: list[tuple[str, int, int, str, str, int | None]], expire: int | None = None
    ) -> None:
        nonlocal offset
        for kind, conv, t, event_id, channel, inbox in events:
            fold.apply(
                Event(KINDS[f"conversation.{kind}"], event_hash(event_id), 7, conv, channel, t,
                      inbox=inbox, app=9, event_id=event_id)
            )  # fmt: skip
            offset += 1
        offset += 1  # a commit always advances (PostgreSQL skips one it already holds)
        delta, changed, expired = take_changes(fold, None if expire is None else (expire, None))
        store.commit("events", [PartitionCommit(0, delta, offset, fold.watermark, changed, expired)])

    def backlog(by: str) -> dict[str, tuple[int, int, int]]:
        return {key: (o, u, s) for key, o, u, s in store.backlog(by)[1]}

    fold_and_commit([
        ("created", 1, 100, "a1", "TELEGRAM", 3),  # open, unassigned
        ("created", 2, 100, "b1", "TELEGRAM", 3),
        ("assigned", 2, 110, "b2", "TELEGRAM", 3),  # open, assigned
        ("created", 3, 100, "c1", "TELEGRAM", 3),
        ("snoozed", 3, 120, "c2", "TELEGRAM", 3),  # snoozed
        ("created", 4, 100, "d1", "TELEGRAM", 3),
        ("closed", 4, 130, "d2", "TELEGRAM", 3),  # none
        ("closed", 5, 200, "e2", "TELEGRAM", 4),  # the same second as a later-arriving opened
        ("created", 6, 150, "f1", "WHATSAPP", None),  # no inbox: in no inbox row
    ])  # fmt: skip
    assert backlog("channel_type") == {"TELEGRAM": (2, 1, 1), "WHATSAPP": (1, 1, 0)}
    assert backlog("inbox") == {"7|3": (2, 1, 1)}
    assert backlog("account,channel_type") == {"7|TELEGRAM": (2, 1, 1), "7|WHATSAPP": (1, 1, 0)}
    assert store.backlog("app") == (200, [("9", 3, 2, 1)])
    fold_and_commit([
        ("opened", 5, 200, "e1", "TELEGRAM", 4),  # tie: "e2" > "e1", the close stays latest
        ("assigned", 1, 50, "a0", "TELEGRAM", 3),  # late, before its creation: assigned now
        ("snoozed", 3, 120, "c2", "TELEGRAM", 3),  # a duplicate
        ("opened", 3, 119, "c0", "TELEGRAM", 3),  # late, before the snooze: no change
        ("opened", 6, 160, "f2", "TELEGRAM", 5),  # moves to another channel type and inbox
    ])  # fmt: skip
    assert backlog("channel_type") == {"TELEGRAM": (3, 1, 1)}
    assert backlog("inbox") == {"7|3": (2, 0, 1), "7|5": (1, 1, 0)}
    fold_and_commit([("opened", 5, 200, "e3", "TELEGRAM", 4)])  # the tie the other way: open
    assert backlog("inbox") == {"7|3": (2, 0, 1), "7|4": (1, 1, 0), "7|5": (1, 1, 0)}
    fold_and_commit([], expire=45)  # forgets the conversations idle since before 155
    assert backlog("channel_type") == {"TELEGRAM": (2, 2, 0)}
    assert backlog("inbox") == {"7|4": (1, 1, 0), "7|5": (1, 1, 0)}
    fold_and_commit([], expire=-1)  # forgets every one
    assert store.backlog("account") == (200, [])


def test_texts_with_copys_special_characters_are_stored_as_they_are(store: Any) -> None:
    """Event ids and channel types holding what a text COPY escapes (tab, newline, carriage
    return, backslash, the text `\\N` that stands for NULL) come back from the closure list,
    the conversation log and the metric rows exactly as they went in."""
    from consumer.fold.model import event_hash
    from consumer.store.closure_list import ClosureListing

    odd = ["tab\there", "line\nbreak", "cr\rx", "back\\slash", "\\N", "", "end\\"]
    f = PartitionFold(0)
    for i, text in enumerate(odd):
        f.apply(Event(CLOSED, event_hash(f"id{i}"), 7, i + 1, f"CT{text}", 100 + i, None, None, None, None,
                      None, None, text))  # fmt: skip
    commit(store, f, len(odd))
    listed = store.closure_list(ClosureListing(7, 0, 1000))
    assert [(c.event_id, c.channel_type) for c in listed] == [(t, f"CT{t}") for t in odd]
    assert store.load_partition("events", 0).conversations == f.conversations()
    rows = store.query("channel_type", "all")
    assert sorted((r.key, r.closures) for r in rows) == sorted((f"CT{t}", 1) for t in odd)


def test_closure_list_orders_by_time_then_id_bytes_and_finds_first_closes(store: Any) -> None:
    """`Store.closure_list` (`/v1/closures/conversations`) on each store: [start, end),
    ordered by closed_at then event id in byte order (PostgreSQL's "C", as SQLite and the
    folds compare), paged by its position; first_close from the stored closures, taken
    over by a late earlier closure committed later; a re-sent closure keeps its id."""
    from consumer.fold.model import event_hash
    from consumer.store.closure_list import ClosureListing

    def closed(event_id: str, t: int, conv: int = 1) -> Event:
        return Event(CLOSED, event_hash(event_id), 7, conv, "TELEGRAM", t, None, None, None, None, None, None,
                     event_id)  # fmt: skip

    f = PartitionFold(0)
    for e in (
        closed("a", 200),
        closed("é", 200),
        closed("Z", 200),
        closed("B", 200),
        closed("x", 300, conv=2),
    ):
        f.apply(e)
    commit(store, f, 1)

    def listed(**kw: Any) -> list[tuple[str | None, bool, int | None]]:
        q = ClosureListing(**{"account": 7, "start": 200, "end": 301, **kw})
        return [(c.event_id, c.first_close, c.time_to_close) for c in store.closure_list(q)]

    everything = [
        ("B", True, None),
        ("Z", False, None),
        ("a", False, None),
        ("é", False, None),
        ("x", True, None),
    ]
    assert listed() == everything
    assert listed(end=300) == everything[:4] and listed(start=201) == everything[4:]
    pages, after = [], None
    while True:
        page = store.closure_list(ClosureListing(7, 200, 301, after=after, limit=2))
        pages += [c.event_id for c in page]
        if len(page) < 2:
            break
        after = page[-1].position
    assert pages == [e[0] for e in everything]
    # a late earlier closure takes first_close over; a late start re-sends the closures it
    # corrects (without their ids: the store keeps them)
    f.apply(closed("zz", 150))
    f.apply(Event(CREATED, event_hash("c"), 7, 1, "TELEGRAM", 100, None, None, None, None, None, None, "c"))
    commit(store, f, 2)
    assert listed(start=0) == [
        ("zz", True, 50), ("B", False, 100), ("Z", False, 100), ("a", False, 100), ("é", False, 100),
        ("x", True, None),
    ]  # fmt: skip
    assert listed(account=8) == []


def test_a_channel_type_filter_matches_the_whole_name_even_one_holding_a_pipe(store: Any) -> None:
    """Keys `7|WEB|CHAT` and `8|CHAT`: `channel_type=CHAT` is account 8's only (the end of
    account 7's key reads `|CHAT` too), `WEB|CHAT` account 7's; rows and backlog alike."""
    from consumer.fold.model import KINDS, event_hash
    from consumer.fold.native import choose
    from consumer.stream.partitions import take_changes

    fold = choose().new(0, registry=store.registry)
    for account, conv, channel in ((7, 1, "WEB|CHAT"), (8, 2, "CHAT"), (9, 3, "WEB")):
        for kind, t in (("created", 100), ("closed", 400)):
            event_id = f"{conv}{kind}"
            fold.apply(
                Event(KINDS[f"conversation.{kind}"], event_hash(event_id), account, conv, channel, t,
                      inbox=None, app=None, event_id=event_id)
            )  # fmt: skip
        fold.apply(Event(KINDS["conversation.created"], event_hash(f"{conv}again"), account, 10 + conv,
                         channel, 500, inbox=None, app=None, event_id=f"{conv}again"))  # fmt: skip
    delta, changed, expired = take_changes(fold, None)
    store.commit("events", [PartitionCommit(0, delta, 1, fold.watermark, changed, expired)])
    by = "account,channel_type"
    for channel, keys in (("CHAT", ["8|CHAT"]), ("WEB|CHAT", ["7|WEB|CHAT"]), ("WEB", ["9|WEB"]), ("EB", [])):
        assert [r.key for r in store.query(by, "all", parts={-1: channel})] == keys, channel
        assert [k for k, *_ in store.backlog(by, parts={-1: channel})[1]] == keys, channel
    assert [r.key for r in store.query(by, "all", parts={0: "7"})] == ["7|WEB|CHAT"]


def test_derived_groupings_merge_their_sources_rows_by_projected_key(store: Any) -> None:
    """`account,channel_type`, `inbox` and `app` are read from the rows of their source,
    (account, inbox, app, channel type): keys projected in SQL, a channel type holding `|`
    kept whole, a missing inbox or app left out of that grouping only, filters, cursor,
    ranking, newest start and the distributions' min, max and bins on the merged rows."""
    from consumer.store.base import Ranking

    def closed(h: int, account: int, channel: str, t: int, inbox: int | None, app: int | None) -> Event:
        return Event(CLOSED, h, account, h, channel, t, inbox=inbox, app=app, event_id=f"e{h}")

    f = PartitionFold(0)
    for e in (
        Event(CREATED, 100, 42, 1, "WEB|CHAT", 40, inbox=5, app=7, event_id="c1"),
        closed(1, 42, "WEB|CHAT", 100, 5, 7),  # its conversation created at 40: 60 s
        closed(2, 42, "TELEGRAM", 200, None, 7),  # no inbox: no inbox row
        closed(3, 42, "WEB|CHAT", 300, 6, None),  # no app: no app row
        closed(4, 420, "SMS", 400, 5, 8),  # 42 is a prefix of 420's key, not its account
        closed(5, 42, "WEB|CHAT", 3700, 5, 7),  # the next hour
    ):
        f.apply(e)
    commit(store, f, 6)

    def got(by: str, window: str = "1h", **kw: Any) -> dict[tuple[int, str], int]:
        return {(r.window_start, r.key): r.values["closures"] for r in store.query(by, window, **kw)}

    assert got("account,channel_type") == {
        (0, "42|TELEGRAM"): 1, (0, "42|WEB|CHAT"): 2, (0, "420|SMS"): 1, (3600, "42|WEB|CHAT"): 1
    }  # fmt: skip
    assert got("inbox") == {(0, "42|5"): 1, (0, "42|6"): 1, (0, "420|5"): 1, (3600, "42|5"): 1}
    assert got("app") == {(0, "7"): 2, (0, "8"): 1, (3600, "7"): 1}
    minutes = {(0, "7"): 0, (60, "7"): 1, (180, "7"): 1, (360, "8"): 1, (3660, "7"): 1}  # 0: the create
    assert got("app", "1m") == minutes
    assert set(got("account,channel_type", parts={0: "42"})) == {
        (0, "42|TELEGRAM"), (0, "42|WEB|CHAT"), (3600, "42|WEB|CHAT")
    }  # fmt: skip
    assert set(got("account,channel_type", key="42|WEB|CHAT")) == {(0, "42|WEB|CHAT"), (3600, "42|WEB|CHAT")}
    assert got("account,channel_type", parts={-1: "CHAT"}) == {}  # `WEB|CHAT` is one channel type
    assert set(got("account,channel_type", parts={-1: "WEB|CHAT"})) == {
        (0, "42|WEB|CHAT"),
        (3600, "42|WEB|CHAT"),
    }
    # keys in text order (`420|5` before `42|5`: "0" sorts before "|"), as stored rows' are
    assert list(got("inbox", after=(0, "420|5"))) == [(0, "42|5"), (0, "42|6"), (3600, "42|5")]
    assert got("inbox", "all", parts={0: "42"}, start_from=0, start_to=1) == {(0, "42|5"): 2, (0, "42|6"): 1}
    row = store.query("account,channel_type", "all", key="42|WEB|CHAT")[0]
    assert (row.values["ttc_count"], row.values["ttc_min"], row.values["ttc_max"]) == (1, 60, 60)
    assert sum(n for b, n in row.bins if REGISTRY.metric("time_to_close").owns_bin(b)) == 1
    ranked, total = store.rank(Ranking("inbox", "all", "closures"))
    assert [(r.key, r.values["closures"]) for r in ranked][:1] == [("42|5", 2)] and total == 3
    assert store.newest_start("app", "1h") == 3600 and store.newest_start("inbox", "1d") == 0
    # the source is stored, never served: no query of it is asked for by name, but its
    # rows are there, one per (account, inbox, app, channel type), a missing value empty
    source = {r.key for r in store.query("source", "all")}
    assert source == {"42|5|7|WEB|CHAT", "42||7|TELEGRAM", "42|6||WEB|CHAT", "420|5|8|SMS"}


def test_sqlite_one_accounts_derived_rows_are_a_range_of_their_sources_key(tmp_path: Path) -> None:
    """A derived grouping led by the account (`sqlgen.bounds_source`): a filter on the
    account bounds the source's key too, so SQLite seeks it in the primary key instead of
    reading every account's source rows of each start; the account's own rows of a
    derived window (a closures-set store's) are a point of it."""
    from consumer.store import sqlgen
    from consumer.store.rows import row_filter

    store = SqliteStore(str(tmp_path / "m.db"))
    for by, key, parts in (
        ("account,channel_type", None, {0: "42"}),
        ("inbox", None, {0: "42"}),
        ("account", "42", None),
    ):
        where, args = row_filter(
            by, "1h", key=key, start_from=0, start_to=7200, after=None, dialect=sqlgen.SQLITE,
            registry=REGISTRY, parts=parts,
        )  # fmt: skip
        plan = " ".join(
            str(r[-1])
            for r in store.db.execute(
                "EXPLAIN QUERY PLAN " + sqlgen.query(sqlgen.SQLITE, by, "1h", where, REGISTRY), [*args, 100]
            )
        )
        assert "PRIMARY KEY (by=? AND win=? AND start=? AND key>? AND key<?)" in plan, (by, plan)
    assert not sqlgen.bounds_source(REGISTRY, "app", "1h")
    assert sqlgen.bounds_source(REGISTRY, "account", "1h") and not sqlgen.bounds_source(
        REGISTRY, "account", "all"
    )
    store.close()


def test_a_store_switched_between_metric_sets_reads_every_accounts_rows(make_store: MakeStore) -> None:
    """The full set stores an account's 1m, 1h and 1d rows as its source's rows and its
    all-time rows as its own; the closures set stores them all as its own. A store folded
    by one set and then the other (either way) reads the account's rows of both, whichever
    set serves it: each event was written once, by one of them."""
    from consumer.fold.registry import CLOSURES
    from consumer.store.base import Ranking

    fold_into = functools.partial(_closed_into, make_store)

    fold_into(CLOSURES, [(1, 42, 100), (2, 420, 200)], 2, again=False)  # the account's own rows
    fold_into(REGISTRY, [(3, 42, 300), (4, 420, 3700)], 4, again=True)  # 1m-1d: the source's rows
    fold_into(CLOSURES, [(5, 42, 3800)], 5, again=True)

    def closures_of(store: Any, window: str, **kw: Any) -> dict[tuple[int, str], int]:
        return {(r.window_start, r.key): r.values["closures"] for r in store.query("account", window, **kw)}

    for registry in (REGISTRY, CLOSURES):
        store = make_store(registry=registry, again=True)
        got = functools.partial(closures_of, store)

        hours = {(0, "42"): 2, (0, "420"): 1, (3600, "42"): 1, (3600, "420"): 1}
        assert got("1h") == hours, registry
        assert got("1d") == {(0, "42"): 3, (0, "420"): 2}
        assert got("all") == {(0, "42"): 3, (0, "420"): 2}
        assert got("1m", key="42") == {(60, "42"): 1, (300, "42"): 1, (3780, "42"): 1}  # not 420's
        assert got("1h", keys=["420"]) == {(0, "420"): 1, (3600, "420"): 1}
        assert got("1h", start_from=0, start_to=3600, key="42") == {(0, "42"): 2}
        ranked, total = store.rank(Ranking("account", "1d", "closures"))
        assert [(r.key, r.values["closures"]) for r in ranked] == [("42", 3), ("420", 2)] and total == 2
        assert store.newest_start("account", "1m") == 3780


def test_an_upgraded_full_set_store_counts_each_event_once_in_the_account_rows(make_store: MakeStore) -> None:
    """A full-set store of the release before stored the account's 1m, 1h and 1d rows and
    its source's rows for the same events: opened by this release, once, the account's
    own rows of those windows go (its all-time rows stay), so that each event counts once
    where both are read; the rows a closures-set fold writes after that are kept."""
    import dataclasses

    from consumer.fold.registry import CLOSURES

    def own(g: Any) -> Any:
        return dataclasses.replace(g, derived_from=None, derived_windows=None) if g.name == "account" else g

    before = dataclasses.replace(REGISTRY, groupings=tuple(own(g) for g in REGISTRY.groupings))
    # a release before the source grouping: the account's own rows only
    oldest = dataclasses.replace(CLOSURES, groupings=tuple(own(g) for g in CLOSURES.groupings), sources=())

    def fold_into(registry: Registry, events: list[tuple[int, int]], next_offset: int, again: bool) -> None:
        _closed_into(make_store, registry, [(h, 42, t) for h, t in events], next_offset, again)

    day = 86_400
    fold_into(oldest, [(1, day + 100)], 1, again=False)  # before the source: no copy of it there
    fold_into(before, [(2, 100), (3, 3700)], 3, again=True)  # both: its own rows and the source's
    store = make_store(registry=REGISTRY, again=True)
    hours = {(r.window_start, r.key): r.values["closures"] for r in store.query("account", "1h")}
    assert hours == {(0, "42"): 1, (3600, "42"): 1, (day, "42"): 1}
    days = {(r.window_start, r.key): r.values["closures"] for r in store.query("account", "1d")}
    assert days == {(0, "42"): 2, (day, "42"): 1}
    assert [r.values["closures"] for r in store.query("account", "all")] == [3]
    store.close()
    fold_into(CLOSURES, [(4, 200)], 4, again=True)  # the account's own rows again: kept
    for registry in (REGISTRY, CLOSURES):
        store = make_store(registry=registry, again=True)
        hours = {(r.window_start, r.key): r.values["closures"] for r in store.query("account", "1h")}
        assert hours == {(0, "42"): 2, (3600, "42"): 1, (day, "42"): 1}, registry
        assert [r.values["closures"] for r in store.query("account", "all")] == [4]


def test_a_store_of_format_1_has_its_source_rows_renamed_once_at_open(
    make_store: MakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Store format 2 (`upgrade.rename`): the source grouping's rows, which releases
    before stored under its former name, are renamed at open, window by window, each
    logged with its count, and the keys of its purged rows waiting for the metrics topics'
    tombstones too, before the account's doubled rows are dropped (a store of 2026-12-06
    kept both: `upgrade.drop_doubled_rows` reads the source's rows by its name); every
    grouping read from them answers as before; stamped 2, a store opens again with nothing
    left to rename, unless a release before wrote under the former name since."""
    import dataclasses

    from consumer.fold.registry.declared import FINEST

    old = FINEST.formerly[0]

    def as_before(g: Any) -> Any:  # the account's rows its own, the others from the old name
        if g.name == "account":
            return dataclasses.replace(g, derived_from=None, derived_windows=None)
        return dataclasses.replace(g, derived_from=old) if g.derived_from else g

    # the release of 2026-12-06: its source under the former name, the account's own rows
    before = dataclasses.replace(
        REGISTRY,
        groupings=tuple(as_before(g) for g in REGISTRY.groupings),
        sources=(dataclasses.replace(FINEST, name=old, formerly=()),),
    )
    day = 86_400

    def closed_by_before(events: list[tuple[int, int, int]], next_offset: int, again: bool) -> Any:
        """The store, open, after a commit of that release's (its next open renames)."""
        return _closed_into(make_store, before, events, next_offset, again, keep_open=True)

    store = closed_by_before([(1, 42, 100), (2, 42, 3700), (3, 43, day + 50)], 3, again=False)
    # as that release left it: format 1 (its stamps, on PostgreSQL, of format 1 too)
    _sql(store, "UPDATE meta SET value = '1' WHERE name = 'store format'")
    _sql(store, "DELETE FROM meta WHERE name LIKE 'schema %'")
    _sql(store, "INSERT INTO purged_rows (by, win, start, key) VALUES (?, '1m', 0, '42|3|9|SMS')", (old,))
    # 3, 3, 2, 2 in 1m, 1h, 1d, all
    assert _sql(store, "SELECT count(*) FROM metric_rows WHERE by = ?", (old,)) == [(10,)]
    store.close()
    with caplog.at_level(logging.INFO, logger="consumer.store.upgrade"):
        store = make_store(registry=REGISTRY, again=True)
    renamed = [r.getMessage() for r in caplog.records if "renaming" in r.getMessage()]
    assert len(renamed) == 4 and f"renaming {old}'s 3 rows of 1m to source" in renamed[0], renamed
    assert _sql(store, "SELECT count(*) FROM metric_rows WHERE by = ?", (old,)) == [(0,)]
    assert _sql(store, "SELECT count(*) FROM metric_rows WHERE by = 'source'") == [(10,)]
    assert _sql(store, "SELECT by FROM purged_rows") == [("source",)]
    assert _sql(store, "SELECT value FROM meta WHERE name = 'store format'") == [(str(store_format.FORMAT),)]

    def closures(by: str, win: str) -> dict[tuple[int, str], int]:
        return {(r.window_start, r.key): r.values["closures"] for r in store.query(by, win)}

    assert closures("inbox", "1h") == {(0, "42|3"): 1, (3600, "42|3"): 1, (day, "43|3"): 1}
    assert closures("app", "all") == {(0, "9"): 3}
    assert closures("account", "1d") == {(0, "42"): 2, (day, "43"): 1}  # each event once
    assert closures("account", "all") == {(0, "42"): 2, (0, "43"): 1}
    minutes = {(60, "42|SMS"): 1, (3660, "42|SMS"): 1, (day, "43|SMS"): 1}
    assert closures("account,channel_type", "1m") == minutes
    store.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="consumer.store.upgrade"):
        store = make_store(registry=REGISTRY, again=True)
    assert not [r for r in caplog.records if "renaming" in r.getMessage()]
    assert closures("app", "all") == {(0, "9"): 3}
    store.close()
    # a process of the release before, in a store stamped 2: its rows are renamed at the next open
    closed_by_before([(4, 44, 2 * day)], 4, again=True).close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="consumer.store.upgrade"):
        store = make_store(registry=REGISTRY, again=True)
    assert [r.getMessage() for r in caplog.records if "renaming" in r.getMessage()]
    assert _sql(store, "SELECT count(*) FROM metric_rows WHERE by = ?", (old,)) == [(0,)]
    assert closures("app", "all") == {(0, "9"): 4}
    assert closures("inbox", "1d") == {(0, "42|3"): 2, (day, "43|3"): 1, (2 * day, "44|3"): 1}


def _sql(store: Any, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """A statement on the store's own database, committed (`?` marks, PostgreSQL's too)."""
    if isinstance(store, SqliteStore):
        return [tuple(r) for r in store.run(sql, args)]

    def run(conn: Any) -> list[tuple[Any, ...]]:
        cur = conn.execute(sql.replace("?", "%s"), args) if args else conn.execute(sql)
        return [tuple(r) for r in cur.fetchall()] if cur.description else []

    return list(store.session.run(run))


def _closed_into(
    make_store: MakeStore,
    registry: Registry,
    events: list[tuple[int, int, int]],
    next_offset: int,
    again: bool,
    *,
    keep_open: bool = False,
) -> Any:
    """Closures (event hash, account, time) folded by one metric set into the store made
    last (`again`) or a new one, committed at `next_offset`; the store closed, or
    (`keep_open`) returned open."""
    store = make_store(registry=registry, again=again)
    store.check_topic("events")
    f = PartitionFold(0, registry=registry)
    for h, account, t in events:
        f.apply(Event(CLOSED, h, account, h, "SMS", t, None, 5, inbox=3, app=9))
    commit(store, f, next_offset)
    if keep_open:
        return store
    store.close()
    return None


def test_a_store_notes_its_metric_set_and_refuses_a_consumer_of_another(make_store: MakeStore) -> None:
    """Two consumers of one store folding different sets undercount what only one folds:
    the first notes its set (and SLA buckets); another is refused naming both, the same
    one passes, and `switch` makes the new one the store's."""
    from consumer.exceptions import ConfigError
    from consumer.fold.registry import metric_set

    full = make_store(registry=metric_set("full"))
    full.check_metric_set("full")
    full.check_metric_set("full")  # the same set again: fine
    closures = make_store(registry=metric_set("closures"), again=True)
    with pytest.raises(ConfigError, match=r"folded with metric set 'full; time_to_close buckets 3600,14400,"):
        closures.check_metric_set("closures")
    other_buckets = make_store(registry=metric_set("full", "2h,1d"), again=True)
    with pytest.raises(ConfigError, match=r"this consumer folds 'full; time_to_close buckets 7200,86400 s'"):
        other_buckets.check_metric_set("full")
    closures.check_metric_set("closures", switch=True)
    closures.check_metric_set("closures")  # the store's now
    with pytest.raises(ConfigError, match="--switch-metric-set"):
        full.check_metric_set("full")
