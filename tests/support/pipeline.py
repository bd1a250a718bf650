"""Test helpers for whole-pipeline runs: produce webhooks, run real consumer processes,
wait for them to catch up, and compare the API with the truth oracle."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, Producer, TopicPartition

from convmetrics.process import ending_with_parent
from producer.intake import Prepared, prepare
from schemas import Codec, conversation_codec
from support.truth import (
    BY,
    COUNTERS,
    GAUGES,
    GroupKey,
    GroupTruth,
    Truth,
    api_row,
    distribution,
    select,
    sla_buckets,
    within_relative_error,
)

BYS = ("channel_type", "account")
WINDOWS = ("1m", "1h", "1d", "all")


def produce_webhooks(
    bootstrap: str, topic: str, webhooks: Iterable[dict[str, Any]], codec: Codec | None = None
) -> int:
    """Validate, encode and produce conversation webhooks as the gateway would (with
    `codec`: in its wire format; default single-object)."""
    codec = codec or conversation_codec()
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 20}
    )
    n = 0
    for body in webhooks:
        item = prepare(body, codec, received_at_millis=time.time_ns() // 1_000_000)
        if isinstance(item, Prepared):
            producer.produce(topic, key=item.key, value=item.value, headers=item.headers)
            n += 1
            if n % 1000 == 0:
                producer.poll(0)
    assert producer.flush(120) == 0, "broker did not acknowledge every record"
    return n


def create_topic(bootstrap: str, name: str, partitions: int = 6, timeout: float = 30) -> str:
    """Create a topic and wait until every partition has a leader."""
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = admin.list_topics(topic=name, timeout=10).topics.get(name)
        leaders = [] if meta is None or meta.error else [p.leader for p in meta.partitions.values()]
        if len(leaders) == partitions and min(leaders) >= 0:
            return name
        time.sleep(0.1)
    raise TimeoutError(f"topic {name} has no leader for every partition after {timeout:.0f} s")


def produce_raw(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for key, value in records:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(60) == 0


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "offsets-probe"})
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions}
    finally:
        c.close()


def stored_offsets(store: Path | str) -> dict[int, int]:
    """Committed next offsets per partition, from a SQLite file or a postgresql:// URL."""
    if isinstance(store, str):
        import psycopg

        try:
            with psycopg.connect(store, connect_timeout=5) as conn:
                return dict(conn.execute("SELECT partition, next_offset FROM offsets").fetchall())
        except psycopg.Error:  # not created yet, or the test made the database unreachable
            return {}
    if not store.exists():
        return {}
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30)
    try:
        return dict(db.execute("SELECT partition, next_offset FROM offsets").fetchall())
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()


class ConsumerProcess:
    """`convmetrics consume` as a real OS process (so that SIGKILL means SIGKILL)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        store: Path | str,
        log: Path,
        *,
        http_port: int | None = None,
        group: str | None = None,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
        python: str = sys.executable,
        cwd: Path | None = None,
    ) -> None:
        args = [
            python,
            "-m",
            "convmetrics",
            "consume",
            "--bootstrap-servers",
            bootstrap,
            "--topic",
            topic,
            "--store",
            store if isinstance(store, str) else f"sqlite:///{store}",  # a URL, or a SQLite file
            "--group",
            group or f"metrics-{topic}",
            # every metric and grouping: the pipeline tests compare all of them with the oracle
            "--metric-set",
            "full",
            "--flush-interval",
            "0.5",
            # a SIGKILLed member holds its partitions until its session times out
            "--kafka",
            "session.timeout.ms=6000",
            "--kafka",
            "heartbeat.interval.ms=1000",
            *(extra or []),
        ]
        if http_port:
            args += ["--http-port", str(http_port)]
        self.log = log
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ending_with_parent(args),  # it ends with the test run, even a killed one
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
            cwd=cwd,
        )

    def wait_log(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log.read_text(errors="replace"):
                return
            assert self.alive(), f"consumer died:\n{self.tail()}"
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never logged:\n{self.tail()}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._log.close()

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code (-9 when killed)."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def tail(self, n: int = 40) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


def wait_caught_up(
    bootstrap: str, topic: str, store: Path | str, procs: list[ConsumerProcess], timeout: float = 180
) -> None:
    """Until the store's committed offsets reach the end of every partition."""
    ends = end_offsets(bootstrap, topic)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = stored_offsets(store)
        if all(got.get(p, 0) >= end for p, end in ends.items() if end > 0):
            return
        for proc in procs:
            assert proc.alive(), f"consumer died:\n{proc.tail()}"
        time.sleep(0.3)
    logs = "\n---\n".join(p.tail() for p in procs)
    raise AssertionError(
        f"not caught up after {timeout}s: store {stored_offsets(store)} vs end {ends}\n{logs}"
    )


def wait_progress(store: Path | str, at_least: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(stored_offsets(store).values()) >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"store never reached {at_least} committed records")


def all_pages(api: str, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every row of a paged API answer, following `next`."""
    rows: list[dict[str, Any]] = []
    with httpx.Client(base_url=api, timeout=30) as client:
        while True:
            r = client.get(path, params=params)
            assert r.status_code == 200, r.text
            body = r.json()
            rows.extend(body["rows"])
            if not body["next"]:
                return rows
            params = {**params, "cursor": body["next"]}


def fetch_rows(api: str, by: str, window: str, limit: int = 5000) -> list[dict[str, Any]]:
    """Every row of `/v1/closures` for a grouping and window, page by page."""
    return all_pages(api, "/v1/closures", {"by": by, "window": window, "limit": limit})


def fetch_metrics(api: str, group: str, window: str, limit: int = 5000) -> list[dict[str, Any]]:
    """Every row of `/v1/metrics` for a grouping and window, page by page."""
    return all_pages(api, "/v1/metrics", {"group": group, "window": window, "limit": limit})


def compare_with_truth(api: str, truth: dict[GroupKey, GroupTruth]) -> None:
    """Every grouping and window of `/v1/metrics`, and every (by, window) of `/v1/closures`,
    equals the oracle: counts exact, quantiles within 1%."""
    compare_metrics_with_truth(api, truth)
    for by in BYS:
        for window in WINDOWS:
            # rows with neither closures nor reopens count only what /v1/closures does not show
            want = {k: v for k, v in select(truth, by, window).items() if v.closures or v.reopens}
            got = {
                (r["key"], r["window_start"]): r
                for r in fetch_rows(api, by, window)
                if r["closures"] or r["reopens"]
            }
            assert set(got) == set(want), (
                f"{by}/{window}: missing {sorted(set(want) - set(got))[:5]}, "
                f"extra {sorted(set(got) - set(want))[:5]}"
            )
            for k, row in want.items():
                expect = api_row((by, k[0], window, k[1]), row)
                actual = got[k]
                label = f"{by}/{window}/{k}"
                for f in ("closures", "reopens", "closed_unread", "window_end"):
                    assert actual[f] == expect[f], f"{label}: {f} {actual[f]} != {expect[f]}"
                a, e = actual["time_to_close"], expect["time_to_close"]
                for f in ("count", "sum", "min", "max"):
                    assert a[f] == e[f], f"{label}: time_to_close.{f} {a[f]} != {e[f]}"
                if e["mean"] is None:
                    assert a["mean"] is None, label
                else:
                    assert math.isclose(a["mean"], e["mean"], rel_tol=1e-9), label
                for q in ("p50", "p90", "p99"):
                    if e[q] is None:
                        assert a[q] is None, label
                    else:
                        assert within_relative_error(a[q], e[q]), f"{label}: {q} {a[q]} vs exact {e[q]}"


def compare_backlog_with_truth(api: str, truth: Truth) -> int:
    """`/v1/backlog` of every grouping equals the oracle's (`compute_backlog`), and its
    `as_of` the newest event time; how many rows it compared (0: the store folds no gauges)."""
    if not httpx.get(f"{api}/v1/metric-set", timeout=30).json().get("gauges"):
        return 0
    compared = 0
    for group in BY:
        r = httpx.get(f"{api}/v1/backlog", params={"group": group}, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["group"] == group and body["as_of"] == truth.as_of, (group, body["as_of"], truth.as_of)
        got = {
            "|".join(str(v) for v in row["key"].values()): tuple(row[g] for g in GAUGES)
            for row in body["rows"]
        }
        want = {key: v for (by, key), v in truth.backlog.items() if by == group}
        differ = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
        assert got == want, f"backlog {group}: differ at {[(k, got.get(k), want.get(k)) for k in differ[:5]]}"
        compared += len(got)
    return compared


def compare_metrics_with_truth(api: str, truth: dict[GroupKey, GroupTruth]) -> None:
    """`/v1/metrics` of every grouping and window equals the oracle: every row's window end,
    every counter exact, each distribution exact (count, sum, min, max, mean; the SLA
    buckets) and its quantiles within 1% and inside [min, max]; and where the oracle holds
    the backlog (`Truth`), `/v1/backlog` equals it."""
    if isinstance(truth, Truth):  # the pipeline folds the full set: the gauges with it
        assert compare_backlog_with_truth(api, truth) > 0 or not truth.backlog
    for group in BY:
        for window in WINDOWS:  # every grouping in every window (the contract)
            want = select(truth, group, window)
            got = {("|".join(str(v) for v in r["key"].values()), r["window_start"]): r
                   for r in fetch_metrics(api, group, window)}  # fmt: skip
            assert set(got) == set(want), (
                f"{group}/{window}: missing {sorted(set(want) - set(got))[:5]}, "
                f"extra {sorted(set(got) - set(want))[:5]}"
            )
            size = {"1m": 60, "1h": 3600, "1d": 86400}.get(window)
            for k, row in want.items():
                actual, label = got[k], f"{group}/{window}/{k}"
                end = None if size is None else actual["window_start"] + size
                assert actual["window_end"] == end, f"{label}: window_end {actual['window_end']}"
                for f in COUNTERS:
                    assert actual[f] == getattr(row, f), f"{label}: {f} {actual[f]} != {getattr(row, f)}"
                for name, values in (
                    ("time_to_close", row.durations),
                    ("time_to_first_assignment", row.assignment_waits),
                ):
                    e, a = distribution(values), actual[name]
                    for f in ("count", "sum", "min", "max"):
                        assert a[f] == e[f], f"{label}: {name}.{f} {a[f]} != {e[f]}"
                    assert (a["mean"] is None) == (e["mean"] is None), label
                    if e["mean"] is not None:  # exact: sum / count, as a float
                        assert math.isclose(a["mean"], e["mean"], rel_tol=1e-12), f"{label}: {name}.mean"
                    if name == "time_to_close":  # the SLA buckets: exact
                        assert a["buckets"] == sla_buckets(values), f"{label}: {name}.buckets"
                    for q in ("p50", "p90", "p99"):
                        assert (a[q] is None) == (e[q] is None), label
                        if e[q] is not None:
                            assert within_relative_error(a[q], e[q]), (
                                f"{label}: {name}.{q} {a[q]} vs exact {e[q]}"
                            )
                            assert e["min"] <= a[q] <= e["max"], f"{label}: {name}.{q} outside [min, max]"


def api_view(api: str) -> dict[str, dict[str, Any]]:
    """Every row of `/v1/closures`, by its metrics-topic key (by|key|window|start)."""
    out = {}
    for by in BYS:
        for window in WINDOWS:
            for r in fetch_rows(api, by, window):
                start = "" if window == "all" else str(r["window_start"])
                out[f"{by}|{r['key']}|{window}|{start}"] = r
    return out


def backlog_view(api: str) -> dict[str, dict[str, int]]:
    """Every key of `/v1/backlog` (every grouping; the keys whose gauges are all 0 are left
    out), by its metrics-topic key (grouping|key|live|): its gauges by name."""
    out = {}
    for group in BY:
        r = httpx.get(f"{api}/v1/backlog", params={"group": group}, timeout=30)
        assert r.status_code == 200, r.text
        for row in r.json()["rows"]:
            key = "|".join(str(v) for v in row["key"].values())
            out[f"{group}|{key}|live|"] = {g: row[g] for g in GAUGES}
    return out


def metrics_view(api: str) -> dict[str, dict[str, Any]]:
    """Every row of `/v1/metrics` (the consumer folds the full metric set), by its topic key."""
    out = {}
    for group in BY:
        for window in WINDOWS:
            for r in fetch_metrics(api, group, window):
                start = "" if window == "all" else str(r["window_start"])
                key = "|".join(str(v) for v in r["key"].values())
                out[f"{group}|{key}|{window}|{start}"] = r
    return out
