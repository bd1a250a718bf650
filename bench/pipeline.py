"""Where a consumer's CPU goes, without Kafka: decode -> fold -> snapshot -> store commit.

    .venv/bin/python bench/pipeline.py [--events 300000] [--flush 20000] [--statements] [--metric-set full]
                                       [--store sqlite|postgres]

Generates webhooks (the consumer benchmark's mix: 10,000 accounts, events/4 conversations,
redeliveries, late events, unknown channel types), encodes them through the gateway's
intake, then runs the consumer's own steps on one thread, serially, on a fresh SQLite
store: `Codec.decode_many` in batches of 10,000, the fold's `apply_batch` (the compiled
fold where built; CONVMETRICS_FOLD=python for the reference one),
`take_changes`/snapshots every ``--flush`` events, the store's `commit`. It prints the
CPU time (thread time, so other work on the machine counts less) of each step per event,
and with ``--statements`` the SQL statements of the commit that cost the most (SQLite's
upserts of metric rows by grouping and window).

``--store postgres`` commits to a fresh database on PostgreSQL instead
(``$CONVMETRICS_POSTGRES_URL``, else a local server as in the tests). The server works in
its own processes, so the commit and its statements are wall-clock time there, not the
thread's CPU time.

In the real consumer the store commit runs on a second thread while the polling thread
decodes and folds, and consuming from Kafka adds ~3 µs per record: compare the steps here
with each other and between code versions, not with `bench/consumer.py`'s events/s.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from consumer.fold.model import reader_schema  # noqa: E402
from consumer.fold.native import choose  # noqa: E402
from consumer.fold.registry import CLOSURES, DEFAULT_METRIC_SET, METRIC_SETS, Registry  # noqa: E402
from consumer.heap import rare_collections  # noqa: E402
from consumer.store import PartitionCommit, Store  # noqa: E402
from consumer.store.rollup import RolledUp  # noqa: E402
from consumer.store.sqlite import SqliteStore  # noqa: E402
from consumer.stream.settings import FLUSH_EVENTS  # noqa: E402
from convmetrics.generate import GenerateConfig, generate_webhooks  # noqa: E402
from producer.intake import Prepared, prepare  # noqa: E402
from schemas import CONVERSATION_EVENT, Codec, subject  # noqa: E402

PARTITIONS = 6


class StatementTimes:
    """The time spent in each SQL statement, by a short name for it."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.seconds: collections.defaultdict[str, float] = collections.defaultdict(float)
        self.calls: collections.Counter[str] = collections.Counter()
        #: the grouping and window whose rolled-up rows the next metric-row upsert writes
        #: (`rolled_up_by_target`), None where not known
        self.target: tuple[str, str] | None = None

    def timed(self, execute: Callable[..., Any], sql: Any, *args: Any, **kwargs: Any) -> Any:
        started = self.clock()
        try:
            return execute(sql, *args, **kwargs)
        finally:
            self.add(sql, self.clock() - started)

    def add(self, sql: Any, seconds: float) -> None:
        """A call of a statement that took `seconds`, under the statement's short name: its
        start, and (a metric-row upsert of SQLite's) which grouping and window it fills."""
        text = " ".join(str(sql).split())
        if text.startswith("INSERT INTO metric_rows") and self.target is not None:
            name = f"INSERT INTO metric_rows: {self.target[0]} {self.target[1]}"
            self.target = None
        else:
            select = text.find(" SELECT ")
            name = text[:60] + (f" ... {text[select + 1 : select + 40]}" if select > 0 else text[60:100])
        self.seconds[name] += seconds
        self.calls[name] += 1

    def print(self) -> None:
        print("costliest SQL statements of the commits (s, calls):")
        for sql, seconds in sorted(self.seconds.items(), key=lambda kv: -kv[1])[:30]:
            print(f"  {seconds:6.2f} s {self.calls[sql]:5d}  {sql}")


class TimedConnection:
    """Stands in for the SQLite store's connection and times each statement (CPU time)."""

    def __init__(self, db: Any, times: StatementTimes) -> None:
        self.db, self.times = db, times

    def execute(self, sql: str, *args: Any) -> Any:
        return self.times.timed(self.db.execute, sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


@contextlib.contextmanager
def timed_psycopg(times: StatementTimes) -> Iterator[None]:
    """Times every statement psycopg runs meanwhile (wall clock: the server does the work).
    `Connection.execute` runs its statement through `Cursor.execute`, so this is timed once."""
    import psycopg

    original, original_copy = psycopg.Cursor.execute, psycopg.Cursor.copy

    def timed(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        return times.timed(partial(original, self), query, *args, **kwargs)

    @contextlib.contextmanager
    def timed_copy(self: Any, statement: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """A COPY, timed from its start to its end (the rows written in between)."""
        started = times.clock()
        with original_copy(self, statement, *args, **kwargs) as copy:
            yield copy
        times.add(statement, times.clock() - started)

    psycopg.Cursor.execute = timed  # type: ignore[method-assign]
    psycopg.Cursor.copy = timed_copy  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        psycopg.Cursor.execute = original  # type: ignore[method-assign]
        psycopg.Cursor.copy = original_copy  # type: ignore[method-assign]


@contextlib.contextmanager
def rolled_up_by_target(times: StatementTimes) -> Iterator[None]:
    """Names the grouping and window of each payload the SQLite commit upserts (its
    `RolledUp` makes one per target, as it is iterated over), so that `times` splits the
    metric-row upserts by target."""
    from consumer.store.sqlite import commit as sqlite_commit

    class Named(RolledUp):
        def __iter__(self) -> Iterator[bytes]:
            for target, payload in zip(self.plan.targets, super().__iter__(), strict=True):
                times.target = (target.by, target.win)
                yield payload

    original = sqlite_commit.RolledUp
    sqlite_commit.RolledUp = Named  # type: ignore[misc]
    try:
        yield
    finally:
        sqlite_commit.RolledUp = original  # type: ignore[misc]


@contextlib.contextmanager
def fresh_store(kind: str, tmp: str, registry: Registry, times: StatementTimes | None) -> Iterator[Store]:
    """A fresh store of `kind`, its statements timed into `times` where given."""
    if kind == "sqlite":
        store = SqliteStore(str(Path(tmp) / "metrics.db"), registry=registry)
        with contextlib.ExitStack() as stack:
            stack.callback(store.close)
            if times is not None:
                store.db = TimedConnection(store.db, times)  # type: ignore[assignment]
                stack.enter_context(rolled_up_by_target(times))
            yield store
        return
    sys.path.insert(0, str(ROOT / "tests"))  # the tests' PostgreSQL helper: same server, same way
    from consumer.store.postgres import PostgresStore
    from support.postgres import postgres_server

    with postgres_server() as server, contextlib.ExitStack() as stack:
        pg = PostgresStore(server.new_database("bench_pipeline"), registry=registry)
        stack.callback(pg.close)
        if times is not None:
            stack.enter_context(timed_psycopg(times))
        yield pg


def make_values(events: int) -> list[tuple[int, bytes]]:
    """(partition, framed Avro value) of `events` generated conversation events."""
    cfg = GenerateConfig(
        seed=2024, events=events * 21 // 20, accounts=10_000, conversations=events // 4,
        duplicate_rate=0.02, late_rate=0.02, unknown_channel_rate=0.01, noise_rate=0.0,
    )  # fmt: skip
    codec = Codec(subject(CONVERSATION_EVENT))
    out: list[tuple[int, bytes]] = []
    received = time.time_ns() // 1_000_000
    for webhook in generate_webhooks(cfg):
        p = prepare(webhook, codec, received_at_millis=received)
        if isinstance(p, Prepared):
            out.append((zlib.crc32(p.key) % PARTITIONS, p.value))
            if len(out) >= events:
                break
    return out


class Msg:
    """What apply_batch reads of a consumed message."""

    __slots__ = ("_offset", "_partition")

    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


# the consumer's cyclic-GC thresholds (MetricsConsumer.run): with the default ones, the
# million encoded values this bench holds are traced again and again, charged to decode
@rare_collections()
def run(
    values: list[tuple[int, bytes]],
    flush: int,
    statements: bool,
    registry: Registry = CLOSURES,
    store_kind: str = "sqlite",
) -> None:
    codec = Codec(subject(CONVERSATION_EVENT), reader_schema=reader_schema(registry))
    # SQLite works in this thread (its CPU time); PostgreSQL in the server's processes
    clock = time.thread_time if store_kind == "sqlite" else time.perf_counter
    times = StatementTimes(clock) if statements else None
    commit_step = f"store commit ({store_kind})"
    with (
        tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp,
        fresh_store(store_kind, tmp, registry, times) as store,
    ):
        epochs = {p: store.claim("events", p, "bench") for p in range(PARTITIONS)}
        kind = choose()
        print(f"fold: {kind.name} (CONVMETRICS_FOLD=python|native picks one)")
        folds = {p: kind.new(p, registry=registry) for p in range(PARTITIONS)}
        logged: collections.Counter[int] = collections.Counter()
        spent: collections.defaultdict[str, float] = collections.defaultdict(float)
        offsets: dict[int, int] = {}

        def commit() -> None:
            started = time.thread_time()
            commits = []
            for p, offset in offsets.items():
                fold = folds[p]
                delta, changed = fold.take_changes()
                logged[p] += len(changed)
                snapshot = None
                if logged[p] >= max(len(fold), 10_000):  # the consumer's rule (runner._snapshot)
                    snapshot, logged[p] = fold.snapshot(), 0
                commits.append(
                    PartitionCommit(p, delta, offset, fold.watermark, changed, [], epochs[p], snapshot)
                )
            offsets.clear()
            mid = time.thread_time()
            commit_started = clock()
            store.commit("events", commits)
            spent["take_changes + snapshots"] += mid - started
            spent[commit_step] += clock() - commit_started

        pending = 0
        for i in range(0, len(values), 10_000):
            chunk = values[i : i + 10_000]
            started = time.thread_time()
            records = codec.decode_many([v for _, v in chunk])
            mid = time.thread_time()
            kind.apply_batch(folds, [Msg(p, i + j) for j, (p, _) in enumerate(chunk)], records, offsets)
            spent["decode (decode_many)"] += mid - started
            spent["fold (apply_batch)"] += time.thread_time() - mid
            pending += len(chunk)
            if pending >= flush:
                commit()
                pending = 0
        commit()
        n = len(values)
        total = sum(spent.values())
        print(f"{n:,} events, commits every {flush:,}: CPU per event")
        for step, seconds in spent.items():
            print(f"  {step:28} {seconds / n * 1e6:6.2f} µs  ({seconds / total:4.0%})")
        print(f"  {'all':28} {total / n * 1e6:6.2f} µs")
        if times is not None:
            times.print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument(
        "--flush",
        type=int,
        default=None,
        help="events per commit (default: the consumer's for the metric set, FLUSH_EVENTS)",
    )
    ap.add_argument("--statements", action="store_true", help="time each SQL statement of the commits")
    ap.add_argument(
        "--metric-set",
        choices=sorted(METRIC_SETS),
        default=DEFAULT_METRIC_SET,
        help=f"the metrics and groupings folded and stored (default {DEFAULT_METRIC_SET})",
    )
    ap.add_argument(
        "--store",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="the store committed to (postgres: $CONVMETRICS_POSTGRES_URL, else a local server)",
    )
    args = ap.parse_args()
    print(f"metric set: {args.metric_set}, store: {args.store}")
    started = time.perf_counter()
    values = make_values(args.events)
    print(f"generated and encoded {len(values):,} events in {time.perf_counter() - started:.0f} s")
    run(
        values,
        args.flush if args.flush is not None else FLUSH_EVENTS[args.metric_set],
        args.statements,
        METRIC_SETS[args.metric_set],
        args.store,
    )


if __name__ == "__main__":
    main()
