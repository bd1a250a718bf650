"""Consumer throughput on the PostgreSQL store with 1, 2 and 3 processes, SQLite beside it,
and the lock waits PostgreSQL logs while they commit.

    .venv/bin/python bench/postgres.py [--events 1000000]

Pre-produces ``--events`` generated webhooks to a 6-partition topic (a local broker, or
``$CONVMETRICS_BOOTSTRAP_SERVERS``), then runs ``convmetrics consume`` processes in one group
on a fresh store until the offsets committed in the store reach the end of every
partition: PostgreSQL with 1, 2 and 3 processes (``$CONVMETRICS_POSTGRES_URL``, else a local
server as in the tests), SQLite with 1 and 2. Events/s are counted from the first commit
(group join and start-up excluded) to caught up. PostgreSQL runs with ``log_lock_waits=on``
and ``deadlock_timeout=20ms`` (set by ``ALTER SYSTEM``): every transaction that waited more
than 20 ms for a lock another consumer held logs a "still waiting for" line, read per run
from the local server's log (an external server's log is not read: "n/a"): counted from
the run's first commit on (while the events are consumed), the ones before it (processes
starting together on a fresh database make its tables one at a time) counted apart, and
each listed with its DETAIL and STATEMENT lines. Prints a table, the ratios and the
counts; writes bench/results/postgres.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import os
import platform
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' PostgreSQL helper: same server, same way

from convmetrics.generate import GenerateConfig, generate_webhooks  # noqa: E402
from convmetrics.localkafka import LocalBroker  # noqa: E402
from convmetrics.process import ending_with_parent  # noqa: E402
from producer.intake import Prepared, prepare  # noqa: E402
from schemas import conversation_codec  # noqa: E402
from support.postgres import PostgresServer, postgres_server  # noqa: E402


@contextlib.contextmanager
def kafka() -> Iterator[str]:
    external = os.environ.get("CONVMETRICS_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    broker = LocalBroker().start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.close()


def produce(bootstrap: str, events: int) -> tuple[str, int]:
    topic = f"bench-pg-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the topic exists
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result(30)
    codec = conversation_codec()
    cfg = GenerateConfig(seed=5, events=events, accounts=10_000, conversations=events // 4, noise_rate=0.0)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 50, "compression.type": "lz4",
                  "queue.buffering.max.messages": 500_000})  # fmt: skip
    sent = 0
    for body in generate_webhooks(cfg):
        item = prepare(body, codec)
        if not isinstance(item, Prepared):
            continue
        while True:
            try:
                p.produce(topic, item.value, item.key, headers=[*item.headers])
                break
            except BufferError:
                p.poll(0.1)
        sent += 1
    assert p.flush(120) == 0
    return topic, sent


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-probe"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(6)}
    finally:
        c.close()


def offsets_reader(store: str) -> Callable[[], int]:
    if store.startswith("sqlite:///"):
        path = store.removeprefix("sqlite:///")

        def read_sqlite() -> int:
            if not Path(path).exists():
                return 0
            try:
                with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
                    return int(db.execute("SELECT coalesce(sum(next_offset), 0) FROM offsets").fetchone()[0])
            except sqlite3.OperationalError:
                return 0

        return read_sqlite

    def read_pg() -> int:
        try:
            with psycopg.connect(store) as conn:
                row = conn.execute("SELECT coalesce(sum(next_offset), 0) FROM offsets").fetchone()
                return int(row[0]) if row else 0
        except psycopg.Error:
            return 0

    return read_pg


def run(bootstrap: str, topic: str, total: int, store: str, procs: int, logdir: Path) -> tuple[float, float]:
    """Events/s from the first commit to every partition committed to its end, and the time
    (epoch seconds) of that first commit."""
    group = f"bench-{uuid.uuid4().hex[:8]}"
    cmd = [sys.executable, "-m", "convmetrics", "consume", "--bootstrap-servers", bootstrap, "--topic", topic,
           "--store", store, "--group", group]  # fmt: skip
    logs = [open(logdir / f"{group}-{i}.log", "wb") for i in range(procs)]  # noqa: SIM115
    children = [
        subprocess.Popen(ending_with_parent(cmd), stdout=log, stderr=subprocess.STDOUT) for log in logs
    ]
    committed = offsets_reader(store)
    try:
        t0, n0, first = None, 0, 0.0
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            n = committed()
            now = time.perf_counter()
            if t0 is None and n > 0:
                t0, n0, first = now, n, time.time()
            if n >= total and t0 is not None:
                return ((total - n0) / (now - t0) if now > t0 else float("nan")), first
            for c in children:
                if c.poll() is not None:
                    raise SystemExit(f"consumer exited {c.returncode}: see {logdir}")
            time.sleep(0.05)
        raise SystemExit("not caught up in 30 minutes")
    finally:
        for c in children:
            c.terminate()
        for c in children:
            c.wait(60)
        for log in logs:
            log.close()


@dataclass(frozen=True)
class LockWait:
    at: float  # epoch seconds, from the log line's prefix (%m: milliseconds, UTC)
    text: str  # the "still waiting for" line and the DETAIL/CONTEXT/STATEMENT lines after it


def log_lock_waits(pg: PostgresServer) -> Callable[[], list[LockWait] | None]:
    """Turn on lock-wait logging (20 ms); returns a reader of the waits logged since the
    call (None where the server's log cannot be read)."""
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET log_lock_waits = on")
        conn.execute("ALTER SYSTEM SET deadlock_timeout = '20ms'")
        conn.execute("SELECT pg_reload_conf()")
    if pg.local is None:
        return lambda: None
    log = pg.local.log
    start = log.stat().st_size

    def waits() -> list[LockWait]:
        with open(log, "rb") as f:
            f.seek(start)
            lines = f.read().decode(errors="replace").splitlines()
        found = []
        for i, line in enumerate(lines):
            if "still waiting for" in line:
                after = itertools.takewhile(
                    lambda t: re.search(r"(DETAIL|CONTEXT|STATEMENT):", t) is not None, lines[i + 1 : i + 6]
                )
                at = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")
                found.append(LockWait(at.replace(tzinfo=datetime.UTC).timestamp(), "\n".join([line, *after])))
        return found

    return waits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # a million: the runs are timed from the first commit, and a consumer that is behind now
    # commits every 100,000 records (300,000 left two commits in the timed part)
    ap.add_argument("--events", type=int, default=1_000_000)
    args = ap.parse_args()
    logdir = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    load_before = os.getloadavg()[0]
    with kafka() as bootstrap, postgres_server() as pg:
        topic, total = produce(bootstrap, args.events)
        assert sum(end_offsets(bootstrap, topic).values()) == total
        figures: dict[tuple[str, int], float] = {}
        # the waits logged from each run's first commit on (while the events were consumed),
        # and the ones before it (processes starting together on a fresh database make its
        # tables one at a time)
        waits: dict[int, list[LockWait] | None] = {}
        startup: dict[int, list[LockWait]] = {}
        for procs in (1, 2, 3):
            waited = log_lock_waits(pg)
            rate, first = run(bootstrap, topic, total, pg.new_database("bench"), procs, logdir)
            figures[("postgresql", procs)] = rate
            logged = waited()
            waits[procs] = None if logged is None else [w for w in logged if w.at >= first]
            startup[procs] = [w for w in logged or [] if w.at < first]
            print(
                f"postgresql x{procs}: {rate:,.0f} events/s, lock waits logged while consuming: "
                f"{'n/a' if logged is None else len(waits[procs] or [])}, at start-up: {len(startup[procs])}",
                flush=True,
            )
            if procs == 3:
                break
            sqlite = f"sqlite:///{logdir}/bench-{procs}.db"
            figures[("sqlite", procs)] = run(bootstrap, topic, total, sqlite, procs, logdir)[0]
            print(f"sqlite x{procs}: {figures[('sqlite', procs)]:,.0f} events/s", flush=True)
        server = pg.kind
    lines = [
        "# Consumer throughput: PostgreSQL store, 1 and 2 processes (SQLite beside it)",
        "",
        f"`.venv/bin/python bench/postgres.py --events {args.events}` on {datetime.date.today()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs (Kafka, PostgreSQL and the consumers share them); "
        f"PostgreSQL: {server}; {total:,} events on 6 partitions; events/s from the first commit "
        "to every partition committed to its end.",
        "",
        "| store | 1 process | 2 processes | 3 processes | 2 / 1 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for store in ("postgresql", "sqlite"):
        one, two = figures[(store, 1)], figures[(store, 2)]
        three = figures.get((store, 3))
        shown3 = "-" if three is None else f"{three:,.0f}"
        lines.append(f"| {store} | {one:,.0f} | {two:,.0f} | {shown3} | {two / one:.2f} |")
    pg1, sq1 = figures[("postgresql", 1)], figures[("sqlite", 1)]
    shown = {p: "n/a" if w is None else str(len(w)) for p, w in waits.items()}
    at_start = ", ".join(str(len(startup[p])) for p in (1, 2, 3))
    listed = [(p, "while consuming", w) for p, ws in waits.items() for w in ws or []]
    listed += [(p, "at start-up", w) for p, ws in startup.items() for w in ws]
    lines += [
        "",
        f"PostgreSQL / SQLite, 1 process: {pg1 / sq1:.2f}",
        "",
        'Lock waits PostgreSQL logged (log_lock_waits=on, deadlock_timeout=20ms, "still waiting for" '
        f"lines) while 1, 2 and 3 processes consumed (from the first commit on): {shown[1]}, {shown[2]}, "
        f"{shown[3]}; before the first commit, at start-up: {at_start}.",
        "",
        *(f"- {p} processes, {when}:\n\n```\n{w.text}\n```\n" for p, when, w in listed),
        f"Load average (1 min) before / after the run: {load_before:.1f} / {os.getloadavg()[0]:.1f}: "
        "figures taken on a busy machine are lower bounds; compare the ratios.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    out = ROOT / "bench" / "results" / "postgres.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
