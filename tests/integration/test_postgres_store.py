"""The store suite on PostgreSQL (the same test functions as tests/unit/consumer/test_store.py),
then what only a shared server adds: concurrent writers, lost connections, in-doubt commits."""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from unit.consumer import test_store as shared
from unit.consumer.test_store import MakeStore, ev, store

from consumer.exceptions import ConfigError, FencedError, StoreError, StoreUnavailableError
from consumer.fold import PartitionFold
from consumer.fold.model import CLOSED, CREATED, Event
from consumer.fold.registry import REGISTRY, Registry
from consumer.store import PartitionCommit, Retention, open_store
from consumer.store.base import Ranking
from consumer.store.postgres import PostgresStore
from support.postgres import FaultProxy, PostgresServer

#: the shared suite, collected here again on PostgreSQL: every test of test_store.py that
#: takes a store (`store` or `make_store`), found by its parameters, so none is left out
SHARED = {
    name: test
    for name, test in vars(shared).items()
    if name.startswith("test_")
    and callable(test)
    and {"store", "make_store"} & set(inspect.signature(test).parameters)
}
globals().update(SHARED)
__all__ = ["store", *SHARED]


def test_the_shared_suite_runs_here_whole() -> None:
    """What test_store.py does not run here is SQLite's own (its name says so, or it makes
    its SqliteStore itself from a path) and the tests of store URLs (no store at all)."""
    left_out = {name for name in vars(shared) if name.startswith("test_")} - set(SHARED)
    assert "test_store_urls" in left_out
    assert left_out == {name for name in left_out if name.startswith(("test_sqlite_", "test_store_urls"))}
    assert "test_conversations_reload_through_logs_snapshots_and_expiry" in SHARED
    assert "test_stored_rows_equal_the_folds_own_aggregate" in SHARED


@pytest.fixture
def make_store(postgres_url: str) -> Iterator[MakeStore]:
    made: list[PostgresStore] = []

    def make(
        retention: Retention | None = None, *, registry: Registry = REGISTRY, again: bool = False
    ) -> PostgresStore:
        made.append(PostgresStore(postgres_url, retention=retention, registry=registry))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_open_store_takes_postgresql_urls(postgres_url: str, postgres: PostgresServer) -> None:
    s = open_store(postgres_url)
    assert isinstance(s, PostgresStore)
    s.close()
    bad = postgres_url.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(StoreError, match="refused") as info:
        open_store(bad)
    assert not isinstance(info.value, StoreUnavailableError)  # a real mistake: not retried
    with pytest.raises(ConfigError):
        open_store("mysql://x")
    # a setting libpq refuses before it connects is the settings' fault, never an outage
    host_port = postgres_url.split("@", 1)[1].split("/", 1)[0]
    for wrong, says in (
        (postgres_url.replace(host_port, host_port.split(":")[0] + ":54x2"), 'invalid integer value "54x2"'),
        (postgres_url + "?sslmode=requir", 'invalid sslmode value: "requir"'),
        (postgres_url + "?no_such_option=1", "not one libpq can parse"),
    ):
        with pytest.raises(ConfigError, match=says):
            open_store(wrong)


def test_concurrent_writers_lose_no_update(make_store: MakeStore) -> None:
    """Processes on other partitions upsert the same metric rows at once: every add lands."""
    writers, rounds = 4, 25

    def write(p: int) -> None:
        s = make_store()
        epoch = s.claim("events", p, f"w{p}")
        f = PartitionFold(p)
        for r in range(rounds):
            for i in range(20):
                h = (p * 1_000_000) + r * 100 + i
                # every writer touches the same channel rows, in a different order
                f.apply(Event(CLOSED, h, 7 + i % 3, h, ("A", "B", "C")[(i + p) % 3], 60 * (i % 4)))
            delta, changed = f.take_changes()
            s.commit("events", [PartitionCommit(p, delta, r + 1, f.watermark, changed, epoch=epoch)])

    threads = [threading.Thread(target=write, args=(p,)) for p in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    rows = make_store().query("channel_type", "all")
    assert sum(r.closures for r in rows) == writers * rounds * 20


def test_a_commit_whose_ack_was_lost_is_not_applied_twice(store: Any) -> None:
    f = PartitionFold(0)
    f.apply(ev(CREATED, 1, 100))
    f.apply(ev(CLOSED, 2, 400))
    delta, changed = f.take_changes()
    c = PartitionCommit(0, delta, 2, f.watermark, changed)
    store.commit("events", [c])
    store.commit("events", [c])  # the retry of a commit that landed (its COMMIT ack was lost)
    (row,) = store.query("channel_type", "all")
    assert (row.closures, row.ttc_count, row.ttc_sum) == (1, 1, 300)


def test_a_claim_waits_for_the_commit_holding_the_partition(make_store: MakeStore, postgres_url: str) -> None:
    """The commit locks the owners row first: a claim in between serializes after it."""
    s = make_store()
    s.check_topic("events")
    epoch = s.claim("events", 0, "old")
    blocker = psycopg.connect(postgres_url)
    blocker.execute("SELECT * FROM owners WHERE partition = 0 FOR UPDATE")  # as a commit in flight does
    claimed: list[int] = []
    t = threading.Thread(target=lambda: claimed.append(make_store().claim("events", 0, "new")))
    t.start()

    def waiting_on_a_lock() -> bool:  # the claim's backend, as PostgreSQL itself reports it
        with psycopg.connect(postgres_url) as conn:
            found = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE '%owners%'"
            ).fetchone()
            return found is not None and found[0] > 0

    deadline = time.monotonic() + 30
    while not waiting_on_a_lock():
        assert time.monotonic() < deadline and t.is_alive(), f"the claim did not wait: {claimed}"
        time.sleep(0.05)  # polling interval of a bounded wait on the condition above
    assert not claimed  # blocked behind the "commit"
    blocker.commit()
    t.join(30)
    assert claimed == [epoch + 1]
    blocker.close()


def test_a_member_frozen_mid_commit_holds_its_partitions_only_briefly(postgres_url: str) -> None:
    """A commit frozen after it locked its owners row (its process paused, its network hung
    without closing the connection): PostgreSQL ends the session after the idle-in-
    transaction timeout, so the member taking the partition over claims it instead of
    waiting (with the whole group's rebalance) until TCP gives up. The frozen store finds
    its connection gone, opens another for the same call, and its commit is fenced."""
    frozen = PostgresStore(postgres_url, idle_in_transaction_timeout=1)
    frozen.check_topic("events")
    epoch = frozen.claim("events", 0, "old")
    conn = frozen.session.connection()
    conn.execute("BEGIN")
    conn.execute("SELECT * FROM owners WHERE partition = 0 FOR UPDATE")  # a commit's first lock
    claimed: list[int] = []
    t = threading.Thread(
        target=lambda: claimed.append(PostgresStore(postgres_url).claim("events", 0, "new")), daemon=True
    )
    t.start()
    t.join(20)
    assert claimed == [epoch + 1], "the claim still waits behind the frozen commit"
    f = PartitionFold(0)
    f.apply(ev(CLOSED, 2, 400))
    delta, changed = f.take_changes()
    c = PartitionCommit(0, delta, 1, f.watermark, changed, epoch=epoch)
    with pytest.raises(FencedError):
        frozen.commit("events", [c])
    with pytest.raises(FencedError):  # and stays so
        frozen.commit("events", [c])
    frozen.close()


@pytest.mark.parametrize(
    ("setting", "ours", "option", "kept"),
    [
        ("idle_in_transaction_session_timeout", "30s", "idle_in_transaction_session_timeout%3D7s", "7s"),
        ("jit", "off", "jit%3Don", "on"),
    ],
)
def test_a_session_setting_of_the_store_keeps_one_set_for_the_connection(
    postgres_url: str, setting: str, ours: str, option: str, kept: str
) -> None:
    """The store sets its idle-in-transaction timeout and turns JIT off only where nothing
    else set them: a value in the URL's options is kept."""

    def shown(store: PostgresStore) -> str:
        row = store.session.connection().execute(f"SHOW {setting}").fetchone()
        store.close()
        return str(row[0]) if row else ""

    assert shown(PostgresStore(postgres_url)) == ours
    sep = "&" if "?" in postgres_url else "?"
    assert shown(PostgresStore(f"{postgres_url}{sep}options=-c%20{option}")) == kept


def test_jit_set_for_the_database_is_kept(postgres_url: str) -> None:
    """JIT is turned off only where nothing else set it: not where the database sets it."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        row = conn.execute("SELECT source FROM pg_settings WHERE name = 'jit'").fetchone()
        assert row == ("default",), "the test server's own configuration sets jit"
        conn.execute(f'ALTER DATABASE "{conn.info.dbname}" SET jit = on')
    store = PostgresStore(postgres_url)
    try:
        row = (
            store.session.connection()
            .execute("SELECT setting, source FROM pg_settings WHERE name = 'jit'")
            .fetchone()
        )
        assert row == ("on", "database")
    finally:
        store.close()


def test_the_store_never_prepares_statements(postgres_url: str) -> None:
    """A read run again and again is planned for its own parameters each time: a prepared
    statement may fall back to one generic plan after five runs (one took 100x as long)."""
    store = PostgresStore(postgres_url)
    store.check_topic("events")
    for _ in range(8):
        store.rank(Ranking("account", "all", "closures"))
        store.newest_start("channel_type", "1m")
    conn = store.session.connection()
    assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
    store.close()


def test_the_planner_knows_each_grouping_and_windows_share_of_the_rows(postgres_url: str) -> None:
    """Reads select a grouping's rows of one window: the planner's estimate of how many
    there are must hold (a wrong one made it read the whole table instead of the key's range).
    Here the shares are far from independent, as in any store: every account has a row in
    every window, the four channel types one in each all-time window and one per minute."""
    store = PostgresStore(postgres_url)
    store.check_topic("events")
    f = PartitionFold(0)
    channels = ("TELEGRAM", "VIBER", "LINE", "GBM")
    for a in range(300):  # one closure per account, each in a minute of its own
        f.apply(Event(CLOSED, a + 1, a + 1, a + 1, channels[a % 4], 1_700_000_000 + 60 * a))
    delta, changed = f.take_changes()
    store.commit("events", [PartitionCommit(0, delta, 300, f.watermark, changed)])
    store.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("ANALYZE metric_rows")
        counts = conn.execute("SELECT by, win, count(*) FROM metric_rows GROUP BY by, win").fetchall()
        assert {(by, win) for by, win, _ in counts} >= {("account", "all"), ("channel_type", "all")}
        for by, win, n in counts:
            plan = conn.execute(
                "EXPLAIN (FORMAT JSON) SELECT * FROM metric_rows WHERE by = %s AND win = %s", (by, win)
            ).fetchone()
            assert plan is not None
            estimate = plan[0][0]["Plan"]["Plan Rows"]
            assert abs(estimate - n) <= 0.1 * n + 1, (by, win, n, estimate)


def test_lost_connection_is_transient_and_the_store_reconnects(
    postgres: PostgresServer, postgres_url: str
) -> None:
    proxy = FaultProxy.to(postgres_url)
    try:
        s = PostgresStore(proxy.url(postgres_url), connect_timeout=2)
        s.check_topic("events")
        f = PartitionFold(0)
        f.apply(ev(CLOSED, 2, 400))
        delta, changed = f.take_changes()
        c = PartitionCommit(0, delta, 1, f.watermark, changed)
        proxy.cut()
        with pytest.raises(StoreUnavailableError):
            s.commit("events", [c])
        with pytest.raises(StoreUnavailableError, match="unreachable"):  # refused while down
            s.commit("events", [c])
        proxy.open()
        s.commit("events", [c])  # reconnected by itself
        s.commit("events", [c])  # and a second try of the same commit changes nothing
        assert s.query("channel_type", "all")[0].closures == 1
    finally:
        proxy.close()


def test_outbox_index_is_made_by_the_first_publication(store: Any, postgres_url: str) -> None:
    """As on SQLite: no seq index to keep up until something publishes; rows changed before
    it existed are still found."""

    def indexed() -> bool:
        with psycopg.connect(postgres_url) as conn:
            found = conn.execute("SELECT 1 FROM pg_indexes WHERE indexname = 'metric_rows_by_partition_seq'")
            return found.fetchone() is not None

    f = PartitionFold(0)
    f.apply(ev(CLOSED, 1, 100))
    delta, changed = f.take_changes()
    store.commit("events", [PartitionCommit(0, delta, 1, f.watermark, changed)])
    assert not indexed()
    rows, marks = store.changed_since(store.published_marks([0]))
    assert indexed() and len(rows) == 12 and marks == {0: 1}  # the partition's offset after the commit


def test_each_partition_writes_only_its_own_rows(store: Any, postgres_url: str) -> None:
    """Two partitions' commits touching the same metric rows write disjoint rows (keyed by
    partition): concurrent consumers never wait on each other's row locks."""
    f0, f1 = PartitionFold(0), PartitionFold(1)
    f0.apply(ev(CLOSED, 1, 100))
    f1.apply(ev(CLOSED, 2, 110, conv=2))
    for f, offset in ((f0, 3), (f1, 4)):
        delta, changed = f.take_changes()
        store.commit("events", [PartitionCommit(f.partition, delta, offset, f.watermark, changed)])
    with psycopg.connect(postgres_url) as conn:
        parts = conn.execute(
            "SELECT partition, closures, seq FROM metric_rows "
            "WHERE by='channel_type' AND win='all' ORDER BY 1"
        ).fetchall()
    assert parts == [(0, 1, 3), (1, 1, 4)]  # seq: each partition's offset after its commit
    (row,) = store.query("channel_type", "all")
    assert row.closures == 2


def test_the_reference_rollup_stores_the_rows_the_compiled_one_does(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the compiled part is not built, a commit rolls its facts and lags up with the
    reference and copies its rows one by one (text COPY): the shared suite's check of every
    stored row against the fold's own aggregate passes that way too."""
    from consumer.store.postgres import aggregate

    monkeypatch.setattr(aggregate, "native", None)
    shared.test_stored_rows_equal_the_folds_own_aggregate(store)


def test_the_reference_rollup_keeps_the_backlog_the_compiled_one_does(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """... and its gauge changes: the shared suite's backlog test passes that way too."""
    from consumer.store.postgres import aggregate

    monkeypatch.setattr(aggregate, "native", None)
    shared.test_the_backlog_follows_each_conversations_latest_event(store)


def test_rows_whose_bins_are_stored_empty_read_as_rows_without_bins(store: Any, postgres_url: str) -> None:
    """The stores write a row without bins as NULL arrays; a row whose arrays are empty
    (written by hand, or by another tool) reads the same, instead of failing the query."""
    f = PartitionFold(0)
    f.apply(ev(CREATED, 1, 100))
    f.apply(ev(CLOSED, 2, 160))
    delta, changed = f.take_changes()
    store.commit("events", [PartitionCommit(0, delta, 2, f.watermark, changed)])
    with psycopg.connect(postgres_url) as conn:
        conn.execute("UPDATE metric_rows SET bin_ids = '{}', bin_ns = '{}' WHERE by = 'channel_type'")
    (row,) = store.query("channel_type", "all")
    assert (row.closures, row.bins) == (1, ())


def test_a_database_made_before_closures_kept_their_event_id(store: Any, postgres_url: str) -> None:
    """Opened by this release, a database whose closures table has no event_id column gets
    it (NULL for the closures before, listed with none) and new closures keep theirs."""
    from consumer.fold.model import event_hash
    from consumer.store.closure_list import ClosureListing

    f = PartitionFold(0)
    f.apply(ev(CLOSED, 1, 100))
    delta, changed = f.take_changes()
    store.commit("events", [PartitionCommit(0, delta, 1, f.watermark, changed)])
    with psycopg.connect(postgres_url) as conn:
        conn.execute("ALTER TABLE closures DROP COLUMN event_id")
        conn.execute("DROP INDEX closures_by_conversation")
        conn.execute("DELETE FROM meta WHERE name LIKE 'schema %'")  # a release before stamps
    again = PostgresStore(postgres_url)
    try:
        f.apply(Event(CLOSED, event_hash("k"), 7, 2, "TELEGRAM", 50, None, None, None, None, None, None, "k"))
        delta, changed = f.take_changes()
        again.commit("events", [PartitionCommit(0, delta, 2, f.watermark, changed)])
        listed = again.closure_list(ClosureListing(7, 0, 200))
        assert [(c.event_id, c.closed_at, c.first_close) for c in listed] == [
            ("k", 50, True),
            (None, 100, True),
        ]
    finally:
        again.close()


def test_a_database_whose_closures_were_keyed_by_event_hash_is_rekeyed(store: Any, postgres_url: str) -> None:
    """Opened by this release, a database whose closures table is keyed by event hash (with
    an index by account) is keyed by (account, closed_at, event_hash) instead, its closures
    kept: a correction of one of them (a late created event) updates it, not a second row."""
    f = PartitionFold(0)
    f.apply(ev(CLOSED, 1, 100))
    f.apply(ev(CLOSED, 2, 200, conv=2))
    delta, changed = f.take_changes()
    store.commit("events", [PartitionCommit(0, delta, 2, f.watermark, changed)])
    with psycopg.connect(postgres_url) as conn:  # as releases before 2026-12-05 made it
        conn.execute("ALTER TABLE closures DROP CONSTRAINT closures_pkey, ADD PRIMARY KEY (event_hash)")
        conn.execute("CREATE INDEX closures_by_account ON closures (account, closed_at)")
        conn.execute("DELETE FROM meta WHERE name LIKE 'schema %'")
    again = PostgresStore(postgres_url)
    try:
        with psycopg.connect(postgres_url) as conn:
            key = conn.execute(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = 'closures'::regclass AND contype = 'p'"
            ).fetchone()
            assert key == ("PRIMARY KEY (account, closed_at, event_hash)",)
            assert conn.execute("SELECT to_regclass('closures_by_account')").fetchone() == (None,)
        f.apply(ev(CREATED, 3, 40))  # the first closure's time to close is now 60
        delta, changed = f.take_changes()
        again.commit("events", [PartitionCommit(0, delta, 3, f.watermark, changed)])
        with psycopg.connect(postgres_url) as conn:
            rows = conn.execute("SELECT closed_at, ttc FROM closures ORDER BY closed_at").fetchall()
        assert rows == [(100, 60), (200, None)]
        (row,) = again.query("channel_type", "all")
        assert (row.closures, row.ttc_count, row.ttc_min, row.ttc_max) == (2, 1, 60, 60)
    finally:
        again.close()


def _two_closures(store: Any, f: PartitionFold, second: int) -> None:
    """Two closures committed: of 100 s and of `second` s (different bins)."""
    f.apply(ev(CREATED, 1, 0))
    f.apply(ev(CLOSED, 2, 100))
    f.apply(ev(CREATED, 3, 0, conv=2))
    f.apply(ev(CLOSED, 4, second, conv=2))
    delta, changed = f.take_changes()
    store.commit("events", [PartitionCommit(0, delta, 4, f.watermark, changed)])


def _bins_back_in_a_table(conn: psycopg.Connection[Any], partition: bool) -> None:
    """The rows' bins moved back out into a metric_bins table, as releases before
    2026-12-06 kept them (keyed by partition, or, before 2026-12-02, not)."""
    part = ("partition INTEGER NOT NULL, ", "partition, ") if partition else ("", "")
    conn.execute(
        "CREATE TABLE metric_bins (by TEXT NOT NULL, win TEXT NOT NULL, start BIGINT NOT NULL, "
        f'key TEXT COLLATE "C" NOT NULL, {part[0]}bin BIGINT NOT NULL, n BIGINT NOT NULL, '
        f"PRIMARY KEY (by, win, start, key, {part[1]}bin))"
    )
    conn.execute(
        f"INSERT INTO metric_bins SELECT by, win, start, key, {part[1]}u.b, u.n "
        "FROM metric_rows, unnest(bin_ids, bin_ns) AS u(b, n)"
    )
    conn.execute("ALTER TABLE metric_rows DROP COLUMN bin_ids, DROP COLUMN bin_ns")


def test_a_database_whose_bins_had_a_table_keeps_them_in_its_rows(store: Any, postgres_url: str) -> None:
    """Opened by this release, a database whose sketch bins are rows of a metric_bins table
    (a bin that cancelled out left at n = 0) has them in its rows' arrays instead, the
    table gone: quantiles read the same, and the next commit's bins merge with them."""
    f = PartitionFold(0)
    _two_closures(store, f, 5000)
    (before,) = store.query("channel_type", "all")
    assert before.ttc_count == 2 and len(before.bins) == 2
    with psycopg.connect(postgres_url) as conn:
        _bins_back_in_a_table(conn, partition=True)
        conn.execute(
            "INSERT INTO metric_bins SELECT by, win, start, key, partition, 7, 0 FROM metric_rows "
            "WHERE ttc_count > 0"
        )
        conn.execute("DELETE FROM meta WHERE name LIKE 'schema %'")
    again = PostgresStore(postgres_url)
    try:
        with psycopg.connect(postgres_url) as conn:
            assert conn.execute("SELECT to_regclass('metric_bins')").fetchone() == (None,)
            assert conn.execute("SELECT count(*) FROM metric_rows WHERE 7 = ANY(bin_ids)").fetchone() == (0,)
        (row,) = again.query("channel_type", "all")
        assert row == before
        f.apply(ev(CREATED, 5, 0, conv=3))
        f.apply(ev(CLOSED, 6, 100, conv=3))  # the same bin as the first closure's
        delta, changed = f.take_changes()
        again.commit("events", [PartitionCommit(0, delta, 6, f.watermark, changed)])
        (row,) = again.query("channel_type", "all")
        assert row.ttc_count == 3
        assert sorted(row.bins) == sorted((b, n + (b == min(before.bins)[0])) for b, n in before.bins)
    finally:
        again.close()


def test_a_database_made_before_rows_had_a_partition_is_migrated_whole(store: Any, postgres_url: str) -> None:
    """The oldest layout (rows keyed without partition, their bins in metric_bins keyed so
    too) opened by this release: keyed by partition (the old rows partition -1's), the bins
    in the rows, the table gone; every row reads as it did."""
    _two_closures(store, PartitionFold(0), 7000)
    before = {(w, r.key): r for w in ("1m", "1h", "all") for r in store.query("account", w)}
    assert before and all(r.bins for r in before.values())
    with psycopg.connect(postgres_url) as conn:
        _bins_back_in_a_table(conn, partition=False)
        conn.execute("ALTER TABLE metric_rows DROP CONSTRAINT metric_rows_pkey, DROP COLUMN partition")
        conn.execute("ALTER TABLE metric_rows ADD PRIMARY KEY (by, win, start, key)")
        conn.execute("ALTER TABLE metric_rows RESET (fillfactor)")
        conn.execute("DELETE FROM meta WHERE name LIKE 'schema %'")
    again = PostgresStore(postgres_url)
    try:
        with psycopg.connect(postgres_url) as conn:
            assert conn.execute("SELECT to_regclass('metric_bins')").fetchone() == (None,)
            parts = conn.execute("SELECT DISTINCT partition FROM metric_rows").fetchall()
            assert parts == [(-1,)]
            # its new pages keep room for HOT updates, as a new database's do
            options = conn.execute("SELECT reloptions FROM pg_class WHERE relname = 'metric_rows'").fetchone()
            assert options == (["fillfactor=85"],)
        after = {(w, r.key): r for w in ("1m", "1h", "all") for r in again.query("account", w)}
        assert after == before
    finally:
        again.close()


def test_conversations_written_before_the_log_are_read_under_it(store: Any, postgres_url: str) -> None:
    """A database written before conversations had a log keeps them a row each: they load
    with the log's changes over them, and the partition's first snapshot replaces them."""
    from consumer.stream.partitions import new_fold
    from consumer.stream.settings import ConsumerSettings

    with psycopg.connect(postgres_url) as conn:  # what an earlier release wrote
        conn.execute("INSERT INTO conversations VALUES (4, 7, 1, '[100,[100],[],[11]]')")
        conn.execute("INSERT INTO conversations VALUES (4, 7, 2, '[200,[200],[],[12]]')")
        conn.execute("INSERT INTO conversations VALUES (5, 7, 3, '[300,[300],[],[13]]')")
    f = new_fold(store, "events", 4, ConsumerSettings("unused:9092"))[0]
    assert set(f.conversations()) == {(7, 1), (7, 2)}
    f.apply(ev(CLOSED, 14, 300, conv=2))
    delta, changed = f.take_changes()
    store.commit("events", [PartitionCommit(4, delta, 5, f.watermark, changed)])
    assert store.load_partition("events", 4).conversations == f.conversations()
    delta, changed = f.take_changes()
    store.commit("events", [PartitionCommit(4, delta, 6, f.watermark, changed, snapshot=f.snapshot())])
    assert store.load_partition("events", 4).conversations == f.conversations()
    with psycopg.connect(postgres_url) as conn:
        left = conn.execute("SELECT partition, conversation FROM conversations ORDER BY 1, 2").fetchall()
        logged = conn.execute("SELECT count(*) FROM conversation_log WHERE partition = 4").fetchone()
    assert left == [(5, 3)]  # the snapshot holds partition 4's; another partition's stay
    assert logged == (0,)
    assert set(store.load_partition("events", 5).conversations) == {(7, 3)}


def test_opening_an_up_to_date_store_never_waits_for_commits_in_flight(postgres_url: str) -> None:
    """A commit holds the schema lock shared; making the tables takes it exclusively. A
    consumer, `serve` or writer thread opening a store whose tables are up to date (the stamp
    in `meta` says so) takes no lock: it neither waits for that commit nor holds back the
    next ones; nor does the first publication to the metrics topic where its index exists.
    Where the stamp is stale (another registry, an older release) it does make
    the tables, after the commit."""
    from consumer.fold.registry import CLOSURES
    from consumer.store.postgres.sql import SCHEMA_LOCK

    first = PostgresStore(postgres_url)
    first.changed_since({0: 0})  # the metrics topic's first publication makes its index
    first.close()
    opened: list[PostgresStore] = []

    def open_and_publish(**kw: Any) -> None:
        opened.append(PostgresStore(postgres_url, **kw))
        opened[-1].changed_since({0: 0})  # its index is there: no lock either

    def open_in_thread(**kw: Any) -> threading.Thread:
        t = threading.Thread(target=open_and_publish, kwargs=kw, daemon=True)
        t.start()
        return t

    with psycopg.connect(postgres_url) as commit_in_flight:
        commit_in_flight.execute("SELECT pg_advisory_xact_lock_shared(%s)", (SCHEMA_LOCK,))
        up_to_date = open_in_thread()
        up_to_date.join(10)
        assert not up_to_date.is_alive(), "opening an up-to-date store waited for a commit in flight"
        stale = open_in_thread(registry=CLOSURES)  # another registry: no stamp of its own yet
        stale.join(1)
        assert stale.is_alive(), "a stale schema was made without the schema lock"
        commit_in_flight.rollback()  # the commit ends
        stale.join(10)
        assert not stale.is_alive()
    for s in opened:
        s.close()
    assert len(opened) == 2


def test_a_kept_connection_the_server_dropped_is_opened_again_for_the_same_call(postgres_url: str) -> None:
    """After a server restart every kept connection is gone: the first call on one opens
    another and answers, instead of reporting the store down (readiness probes flapped,
    and a dashboard's first requests after a restart got 503s). A server still away is
    still reported so (`StoreUnavailableError`, the test above)."""
    store = PostgresStore(postgres_url)
    try:
        store.check_topic("events")
        (pid,) = store.session.run(lambda conn: conn.execute("SELECT pg_backend_pid()").fetchone())
        with psycopg.connect(postgres_url, autocommit=True) as admin:  # what a restart does to it
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert store.newest_start("channel_type", "1h") is None  # answered, on a new connection
        (again,) = store.session.run(lambda conn: conn.execute("SELECT pg_backend_pid()").fetchone())
        assert again != pid
    finally:
        store.close()


def test_a_commit_or_open_waiting_on_a_newer_releases_migration_is_refused_after_it(
    postgres_url: str,
) -> None:
    """A newer release migrating the store holds the schema lock exclusively. A commit of
    this release that came in meanwhile waits for it, and a store opened meanwhile (its
    stamp stale) too; once the migration commits its format, both are refused: neither
    checks the format before the lock alone (READ COMMITTED would show it the old one)."""
    from consumer.fold.registry import CLOSURES
    from consumer.store import store_format
    from consumer.store.postgres.sql import SCHEMA_LOCK

    older = PostgresStore(postgres_url)
    older.check_topic("events")
    f = PartitionFold(0)
    f.apply(ev(CLOSED, 1, 100))
    delta, changed = f.take_changes()
    failures: dict[str, BaseException] = {}

    def attempt(name: str, call: Any) -> threading.Thread:
        def run() -> None:
            try:
                call()
            except BaseException as exc:  # the test reads it
                failures[name] = exc

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    with psycopg.connect(postgres_url) as migration:
        migration.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        committing = attempt(
            "commit", lambda: older.commit("events", [PartitionCommit(0, delta, 1, f.watermark, changed)])
        )
        opening = attempt("open", lambda: PostgresStore(postgres_url, registry=CLOSURES))  # stale stamp
        committing.join(1)
        opening.join(1)
        assert committing.is_alive() and opening.is_alive(), failures  # both wait for the lock
        newer = str(store_format.FORMAT + 1)
        migration.execute(
            "INSERT INTO meta VALUES ('store format', %s) ON CONFLICT (name) DO UPDATE SET value = %s",
            (newer, newer),
        )
        migration.commit()
    committing.join(30)
    opening.join(30)
    assert f"was upgraded to format {newer} by a newer convmetrics release while this consumer ran" in str(
        failures["commit"]
    ), failures
    assert f"is in format {newer}, made by a newer convmetrics release" in str(failures["open"]), failures
    assert older.load_partition("events", 0).next_offset is None  # nothing of the commit landed
    older.close()
