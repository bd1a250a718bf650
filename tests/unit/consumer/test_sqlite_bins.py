"""Sketch bins inside their metric rows (consumer.store.sqlite.bins): the compiled SQL functions
equal the reference ones, a store computes the same tables with either, and a store written
before bins lived in their rows is migrated to the same answers."""

from __future__ import annotations

import gzip
import json
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.exceptions import StoreError
from consumer.fold import native as fold_native
from consumer.fold.registry import REGISTRY
from consumer.fold.windows import WINDOWS
from consumer.store import MetricRow
from consumer.store.closure_list import ClosureListing
from consumer.store.sqlite import SqliteStore
from consumer.store.sqlite import bins as sqlite_bins
from support import native_build
from support.streams import commit_stream, stream

NATIVE = fold_native.NATIVE
needs_native = native_build.needs("the compiled SQL functions", NATIVE is not None)

i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
pairs = st.lists(
    st.tuples(st.integers(min_value=-5, max_value=5) | i64, st.integers(-3, 3) | i64), max_size=30
)


def connection(kind: str) -> sqlite3.Connection:
    sqlite_bins.install()
    db = sqlite3.connect(":memory:")
    assert sqlite_bins.register(db, prefer=kind) == kind
    return db


#: the reasons a bins function gives for refusing its arguments (both implementations)
NOT_BINS, NOT_INTEGERS, OVERFLOW = "not a sketch-bins blob", "must be integers", "overflows 64 bits"


def one(db: sqlite3.Connection, sql: str, args: tuple[object, ...] = ()) -> object:
    """The value of a one-value query, or "error: <why>" when a bins function refused it,
    `why` being which of the reasons above its message gives: SQLite's message from the
    compiled functions, the Python exception's from the reference ones (SQLite only says
    "user-defined function raised exception"). Any other SQLite error ("no such function",
    a syntax error) raises."""
    raised: list[BaseException | None] = []
    hook = sys.unraisablehook
    sys.unraisablehook = lambda u: raised.append(u.exc_value)  # where sqlite3 reports a callback's
    sqlite3.enable_callback_tracebacks(True)
    try:
        return db.execute(sql, args).fetchone()[0]
    except sqlite3.Error as exc:
        if not raised and not str(exc).startswith("bins"):  # the compiled ones name themselves
            raise
        message = str(raised[-1]) if raised else str(exc)
        why = [w for w in (NOT_BINS, NOT_INTEGERS, OVERFLOW) if w in message]
        assert why, f"a bins function refused with an unknown reason: {message}"
        return f"error: {why[0]}"
    finally:
        sqlite3.enable_callback_tracebacks(False)
        sys.unraisablehook = hook


def run_functions(db: sqlite3.Connection, groups: list[list[tuple[int, int]]]) -> list[object]:
    """bins_pack per group, bins_union of the packs, bins_merge of the first two, bins_one
    of every pair."""
    db.execute("CREATE TEMP TABLE IF NOT EXISTS p (g INTEGER, b INTEGER, n INTEGER)")
    db.execute("DELETE FROM p")
    db.executemany("INSERT INTO p VALUES (?,?,?)", [(g, b, n) for g, ps in enumerate(groups) for b, n in ps])
    packs = [one(db, "SELECT bins_pack(b, n) FROM p WHERE g = ?", (g,)) for g in range(len(groups))]
    union = one(db, "SELECT bins_union(x) FROM (SELECT bins_pack(b, n) AS x FROM p GROUP BY g)")
    a, b = ([p for p in packs if p != "error"] + [None, None])[:2]
    merged = one(db, "SELECT bins_merge(?, ?)", (a, b))
    ones = [one(db, "SELECT bins_one(?, ?)", pair) for ps in groups for pair in ps]
    return [packs, union, merged, ones]


def test_the_compiled_functions_are_registered_where_built() -> None:
    """SQLite itself adds them to every connection opened after `install` (any thread: the
    API's connections are opened on its worker threads); no interpreter internals read."""
    if native_build.load().find_cargo() is None:
        native_build.skip_unless_built("the compiled SQL functions (no cargo)", NATIVE is not None)
    assert NATIVE is not None
    assert sqlite_bins.install()
    db = sqlite3.connect(":memory:")
    assert sqlite_bins.register(db) == "native"
    found: list[object] = []
    worker = threading.Thread(target=lambda: found.append(sqlite3.connect(":memory:").execute(
        "SELECT hex(bins_one(3, 2))").fetchone()[0]))  # fmt: skip
    worker.start()
    worker.join()
    assert found == ["03000000000000000200000000000000"]
    assert "ctypes" not in Path(sqlite_bins.__file__).read_text()  # no object layout read


#: a store opened on each of a series of threads, one after the other ended, as the API's
#: request threads come and go (`serve`, `consume --http-port`)
THREAD_CHURN = """
import sys, threading
from consumer.store.choose import open_store
from consumer.fold.registry import metric_set
kept, kinds = [], []
def open_one():
    store = open_store("sqlite:///" + sys.argv[1], registry=metric_set("full"))
    kept.append(store)
    kinds.append(store.bins_functions)
for _ in range(12):
    t = threading.Thread(target=open_one)
    t.start()
    t.join()
print(",".join(kinds))
"""


@needs_native
def test_the_compiled_functions_survive_threads_that_come_and_go(tmp_path: Path) -> None:
    """The compiled part's allocator (mimalloc 3.3) crashed a thread's first allocation after
    other threads had ended (`serve` died within seconds of its second burst of requests, in
    bins_one); mimalloc 2.x, the crate's `v2` feature, does not. In a child process: a
    crash is a failed test, not a dead test worker."""
    import subprocess

    run = subprocess.run(
        [sys.executable, "-c", THREAD_CHURN, str(tmp_path / "m.db")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    assert run.stdout.strip() == ",".join(["native"] * 12), run.stdout


def test_python_functions_where_the_compiled_ones_are_not_on_the_connection() -> None:
    """CONVMETRICS_FOLD=python replaces the compiled functions by the reference ones."""
    db = sqlite3.connect(":memory:")
    assert sqlite_bins.register(db, prefer="python") == "python"
    assert sqlite_bins.unpack(db.execute("SELECT bins_one(3, 2)").fetchone()[0]) == [(3, 2)]


def test_reference_functions() -> None:
    db = connection("python")
    packs, union, merged, ones = run_functions(db, [[(3, 2), (1, 5), (3, -2)], [(1, -5), (7, 1), (4, 0)], []])
    assert [sqlite_bins.unpack(p) for p in packs] == [[(1, 5)], [(1, -5), (7, 1)], []]
    assert packs[2] is None  # nothing left: NULL, not an empty blob
    assert sqlite_bins.unpack(union) == [(7, 1)]  # 1: +5 - 5 cancels out
    assert merged == union
    assert db.execute("SELECT bins_merge(NULL, NULL)").fetchone()[0] is None
    assert [sqlite_bins.unpack(o) for o in ones] == [[(3, 2)], [(1, 5)], [(3, -2)], [(1, -5)], [(7, 1)], []]
    assert ones[-1] is None  # a zero count: NULL, as bins_pack of it
    assert db.execute("SELECT bins_one(NULL, 1), bins_one(1, NULL)").fetchone() == (None, None)


@needs_native
@settings(max_examples=300, deadline=None)
@given(st.lists(pairs, max_size=4))
def test_compiled_functions_equal_the_reference(groups: list[list[tuple[int, int]]]) -> None:
    assert run_functions(connection("native"), groups) == run_functions(connection("python"), groups)


KINDS = ["python", *(["native"] if NATIVE else [])]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("SELECT bins_merge(x'0102', NULL)", NOT_BINS),  # not 16-byte pairs
        ("SELECT bins_merge('0123456789abcdef', NULL)", NOT_BINS),  # text, even of the right length
        ("SELECT bins_union(1234567890123456)", NOT_BINS),
        ("SELECT bins_pack('12abc', 1)", NOT_INTEGERS),
        ("SELECT bins_pack('x', 1)", NOT_INTEGERS),
        ("SELECT bins_pack(1, 1.5)", NOT_INTEGERS),
        ("SELECT bins_pack(x'01', 1)", NOT_INTEGERS),
        ("SELECT bins_pack('99999999999999999999', 1)", NOT_INTEGERS),  # beyond int64
        ("SELECT bins_one('x', 1)", NOT_INTEGERS),
        ("SELECT bins_one(1, 1.5)", NOT_INTEGERS),
        ("SELECT bins_one(x'01', 1)", NOT_INTEGERS),
        (
            "SELECT bins_pack(b, n) FROM (SELECT 1 AS b, 9223372036854775807 AS n UNION ALL SELECT 1, 1)",
            OVERFLOW,
        ),
    ],
)
def test_what_is_not_bins_is_an_error(kind: str, sql: str, why: str) -> None:
    """Refused by the function, for that reason (not "no such function" or another error)."""
    got = one(connection(kind), sql)
    assert got == f"error: {why}"


def test_an_error_that_is_not_the_functions_is_not_counted_as_one() -> None:
    with pytest.raises(sqlite3.OperationalError, match="no such function"):
        one(connection("python"), "SELECT bins_nope('x', 1)")


@pytest.mark.parametrize("kind", KINDS)
def test_integer_text_counts_as_the_integer(kind: str) -> None:  # json_each's object keys
    db = connection(kind)
    got = one(db, 'SELECT bins_pack(key, value) FROM json_each(\'{"12": 3, "-5": 1, "+7": 2}\')')
    assert got == sqlite_bins.pack([(12, 3), (-5, 1), (7, 2)])


def test_unpack_refuses_what_is_not_bins() -> None:
    with pytest.raises(StoreError):
        sqlite_bins.unpack(b"\x01\x02")


def fill(store: SqliteStore, seed: int = 4) -> None:
    """Commit a generated stream through the reference fold."""
    msgs, records = stream(3000, seed)
    commit_stream(store, fold_native.PYTHON, msgs, records, 400)


def answers(store: SqliteStore) -> list[object]:
    return [store.query(by, win, limit=100_000) for by in ("channel_type", "account") for win in WINDOWS]


@needs_native
def test_the_store_holds_the_same_with_either_functions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tables = []
    for kind in ("python", "native"):
        monkeypatch.setenv(fold_native.ENV, kind)
        store = SqliteStore(str(tmp_path / f"{kind}.db"))
        assert store.bins_functions == kind
        fill(store)
        # the native store stages its facts and closures as packed rows, the other as JSON
        tables.append(
            [
                store.db.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4").fetchall()
                for table in ("metric_rows", "closures")
            ]
        )
        store.close()
    assert tables[0] == tables[1]
    assert sum(r[-1] is not None for r in tables[0][0]) > 500
    assert len(tables[0][1]) > 300


FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


TTC, LAG = REGISTRY.metric("time_to_close"), REGISTRY.metric("ingest_lag")


def as_dict(r: MetricRow) -> dict[str, Any]:
    """A row as the previous release's MetricRow fields held it (its answers file's shape)."""
    v = r.values
    return {
        "by": r.by, "key": r.key, "window": r.window, "window_start": r.window_start,
        "closures": v["closures"], "reopens": v["reopens"], "closed_unread": v["closed_unread"],
        "ttc_count": v["ttc_count"], "ttc_sum": v["ttc_sum"],
        "ttc_min": v["ttc_min"], "ttc_max": v["ttc_max"],
        "quantiles": r.quantiles(TTC), "lag_count": v["lag_count"], "lag_sum": v["lag_sum"],
        "lag_max": v["lag_max"], "lag_quantiles": r.quantiles(LAG),
    }  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_a_store_written_by_the_previous_release_answers_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The dump of a store written by commit 9ffec5c (bins in their own table) and what its
    `query` answered then, both made by that code: opened now, the store is migrated and
    answers exactly the same, then takes new commits."""
    monkeypatch.setenv(fold_native.ENV, kind)
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(gzip.decompress((FIXTURES / "sqlite-store-9ffec5c.sql.gz").read_bytes()).decode())
    old.close()
    expected = json.loads(gzip.decompress((FIXTURES / "sqlite-store-9ffec5c.answers.json.gz").read_bytes()))
    store = SqliteStore(str(path))
    as_json = [
        (f"{by}/{win}", json.dumps([as_dict(r) for r in store.query(by, win, limit=100_000)]))
        for by in ("channel_type", "account")
        for win in WINDOWS
    ]
    got = {k: json.loads(v) for k, v in as_json}
    assert got == expected
    assert sum(len(v) for v in got.values()) > 1000
    # its closures kept no event id: /v1/closures/conversations lists them with none, one
    # first close per conversation (ties of a second by event hash)
    (account,) = store.db.execute(
        "SELECT account FROM closures GROUP BY account ORDER BY count(*) DESC LIMIT 1"
    ).fetchone()
    listed = store.closure_list(ClosureListing(account, -(2**62), 2**62, limit=100_000))
    assert len(listed) > 10 and all(c.event_id is None for c in listed)
    assert sorted(c.conversation for c in listed if c.first_close) == sorted({c.conversation for c in listed})
    assert [c.position for c in listed] == sorted(c.position for c in listed)
    store.check_topic("t")
    fill(store, seed=8)
    store.close()
