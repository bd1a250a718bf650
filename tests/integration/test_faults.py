"""Faults with several consumer processes sharing one store (issue: scale out).

Three `convmetrics consume` processes in one group on a 6-partition topic; events flow in
over HTTP through a `convmetrics gateway` process while a fault hits: SIGKILL of a
consumer, a consumer frozen (SIGSTOP) past its session timeout then woken (the zombie
must be fenced), the Kafka broker stopped and restarted, the database unreachable. After
each, every total matches the truth oracle exactly. PostgreSQL and SQLite (several
processes on one machine share the file) where the fault applies.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_consumer import stream

from convmetrics.localkafka import LocalBroker
from support.gateway import GatewayProcess
from support.pipeline import ConsumerProcess, compare_with_truth, create_topic, wait_caught_up, wait_progress
from support.postgres import FaultProxy, PostgresServer, free_port
from support.truth import compute_truth

#: the line librdkafka logs (as the logger `librdkafka`) when a member leaves its group for
#: not polling within max.poll.interval.ms
MAXPOLL = "librdkafka: MAXPOLL "

SESSION_TIMEOUT_S = 6  # the consumers' session.timeout.ms (set by ConsumerProcess)


class Gateway(GatewayProcess):
    """`convmetrics gateway` as a process; `feed` posts webhooks in batches, retrying 503s."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(bootstrap, topic, "--delivery-timeout", "3")
        self.posted = 0  # webhooks acknowledged so far (for pacing the faults)
        self.retried = 0

    def feed(self, webhooks: list[dict[str, Any]], batch: int = 250, pause: float = 0.2) -> None:
        """Post every webhook until the gateway accepts it (a 503 item is posted again)."""
        with httpx.Client(base_url=self.url, timeout=60) as client:
            for i in range(0, len(webhooks), batch):
                todo = webhooks[i : i + batch]
                deadline = time.monotonic() + 180
                while todo:
                    assert time.monotonic() < deadline, f"gateway kept refusing:\n{self.output()}"
                    try:
                        r = client.post("/webhooks/batch", content=json.dumps(todo).encode())
                    except httpx.TransportError:
                        time.sleep(1)
                        continue
                    if r.status_code not in (202, 207, 503):
                        raise AssertionError(f"gateway answered {r.status_code}: {r.text[:500]}")
                    items = r.json()["items"]
                    bad = [it for it in items if it["status"] not in (202, 503)]
                    assert not bad, bad[:3]
                    again = [todo[it["index"]] for it in items if it["status"] == 503]
                    self.posted += len(todo) - len(again)
                    if again:
                        self.retried += len(again)
                        time.sleep(float(r.headers.get("retry-after", "1")))
                    todo = again
                time.sleep(pause)


@dataclass
class Run:
    """One fault scenario: a gateway, consumers, a store, a feeder thread and the truth."""

    bootstrap: str
    topic: str
    store: Path | str  # SQLite file, or the postgresql:// URL consumers use
    watch: Path | str  # where the test reads committed offsets (the direct URL, never the proxy)
    tmp: Path
    webhooks: list[dict[str, Any]]
    gateway: Gateway | None = None
    consumers: list[ConsumerProcess] = field(default_factory=list)
    api_port: int = field(default_factory=free_port)
    zombie_store: str | None = None  # consumer 2's store URL when it differs (through a proxy)
    feeder: threading.Thread | None = None
    errors: list[BaseException] = field(default_factory=list)

    def start(self, n: int = 3, extra: list[str] | None = None) -> None:
        self.gateway = Gateway(self.bootstrap, self.topic)
        for i in range(n):
            self.consumers.append(
                ConsumerProcess(
                    self.bootstrap,
                    self.topic,
                    self.zombie_store if i == 2 and self.zombie_store else self.store,
                    self.tmp / f"c{i}.log",
                    http_port=self.api_port if i == 0 else None,
                    extra=[
                        *(extra or []),
                        *(["--flush-interval", "5", "--flush-events", "10000000"] if i == 2 else []),
                    ],
                )
            )
        for c in self.consumers:
            c.wait_log("assigned [(")
        self.feeder = threading.Thread(target=self._feed, daemon=True)
        self.feeder.start()

    def _feed(self) -> None:
        assert self.gateway is not None
        try:
            self.gateway.feed(self.webhooks)
        except BaseException as exc:
            self.errors.append(exc)

    def wait_posted(self, fraction: float) -> None:
        assert self.gateway is not None
        deadline = time.monotonic() + 120
        while self.gateway.posted < fraction * len(self.webhooks):
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, "the feeder stalled"
            time.sleep(0.1)

    def finish(self, alive: list[ConsumerProcess]) -> None:
        """The feed done, every partition committed to its end: the totals are exact."""
        assert self.feeder is not None
        self.feeder.join(300)
        assert not self.feeder.is_alive() and not self.errors, self.errors
        wait_caught_up(self.bootstrap, self.topic, self.watch, alive, timeout=240)
        compare_with_truth(f"http://127.0.0.1:{self.api_port}", compute_truth(self.webhooks))

    def close(self) -> None:
        for c in self.consumers:
            with contextlib.suppress(Exception):
                if c.proc.poll() is None:
                    os.kill(c.proc.pid, signal.SIGCONT)
                c.stop(timeout=20)
        if self.gateway is not None:
            self.gateway.stop()


@pytest.fixture(params=["postgresql", "sqlite"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_run(store_kind: str, postgres: PostgresServer, tmp_path: Path) -> Iterator[Callable[..., Run]]:
    runs: list[Run] = []
    proxies: list[FaultProxy] = []

    def make(
        bootstrap: str, topic: str, seed: int, events: int = 12_000, proxy: FaultProxy | None = None
    ) -> Run:
        if proxy is not None:
            proxies.append(proxy)  # closed after the consumers stopped: no outage at teardown
        if store_kind == "postgresql":
            url = postgres.new_database("faults")
            store: Path | str = proxy.url(url) if proxy else url
            watch: Path | str = url
        else:
            store = watch = tmp_path / "m.db"
        run = Run(bootstrap, topic, store, watch, tmp_path, stream(seed=seed, events=events))
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.close()
    for proxy in proxies:
        proxy.close()


def test_sigkill_one_of_three_consumers(
    kafka_bootstrap: str, new_topic: Callable[..., str], make_run: Callable[..., Run]
) -> None:
    run = make_run(kafka_bootstrap, new_topic(6, prefix="faults-kill"), seed=101)
    run.start()
    run.wait_posted(0.4)
    run.consumers[1].kill()  # its partitions move on after the session timeout
    run.finish([run.consumers[0], run.consumers[2]])


def test_a_zombie_woken_after_its_session_expired_is_fenced(
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    make_run: Callable[..., Run],
    store_kind: str,
    postgres: PostgresServer,
) -> None:
    """Consumer 2 freezes with a commit in flight (its store connection hung: PostgreSQL
    through a stalled proxy, SQLite behind a write lock), past its session timeout. The
    group moves its partitions, the survivors claim them; the zombie wakes and its late
    commit is refused by the newer epochs. Nothing counts twice."""
    proxy = FaultProxy.to(postgres.url)
    run = make_run(kafka_bootstrap, new_topic(6, prefix="faults-zombie"), seed=103, proxy=proxy)
    run.store = run.watch  # only the zombie goes through the proxy
    if store_kind == "postgresql":
        assert isinstance(run.store, str)
        run.zombie_store = proxy.url(run.store)
    run.start()
    zombie, others = run.consumers[2], run.consumers[:2]
    run.wait_posted(0.3)
    lock: sqlite3.Connection | None = None
    try:
        if store_kind == "postgresql":
            proxy.stall()
        else:
            lock = sqlite3.connect(str(run.store), timeout=30, isolation_level=None)
            lock.execute("BEGIN IMMEDIATE")
        time.sleep(6)  # the zombie commits every 5 s: its next commit is now stuck in flight
        os.kill(zombie.proc.pid, signal.SIGSTOP)
        marks = [len(c.log.read_text(errors="replace")) for c in others]
        time.sleep(SESSION_TIMEOUT_S + 4)  # the group expels the frozen member
    finally:
        proxy.resume()
        if lock is not None:
            lock.execute("ROLLBACK")
            lock.close()
    deadline = time.monotonic() + 60
    while not all(
        "assigned [(" in c.log.read_text(errors="replace")[m:] for c, m in zip(others, marks, strict=True)
    ):
        assert time.monotonic() < deadline, "the survivors never took the frozen member's partitions"
        time.sleep(0.2)  # they claimed its partitions: higher epochs
    os.kill(zombie.proc.pid, signal.SIGCONT)
    zombie.wait_log("fenced", timeout=60)  # its late commit was refused, its state dropped
    run.finish(run.consumers)


def test_broker_stopped_and_restarted_mid_stream(
    local_broker: Callable[..., LocalBroker], make_run: Callable[..., Run]
) -> None:
    broker = local_broker()
    topic = create_topic(broker.bootstrap_servers, "faults-broker")
    run = make_run(broker.bootstrap_servers, topic, seed=107)
    run.start()
    run.wait_posted(0.35)
    broker.stop()
    time.sleep(8)  # the gateway answers 503 meanwhile; the feeder posts those again
    broker.start()  # same port, same data dir
    run.finish(run.consumers)
    assert run.gateway is not None and run.gateway.retried > 0  # the outage was felt


@pytest.mark.parametrize("store_kind", ["postgresql"])
@pytest.mark.parametrize("past_max_poll", [False, True], ids=["short", "past-max-poll-interval"])
def test_database_unreachable_then_back(
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    make_run: Callable[..., Run],
    postgres: PostgresServer,
    store_kind: str,
    past_max_poll: bool,
) -> None:
    """Every connection cut and new ones refused for a while: consumers pause and retry the
    same commit. Short: within max.poll.interval.ms, they keep their partitions. Past it
    (10 s here, 20 s outage) they leave the group, lose their partitions, rejoin and resume
    from the store's offsets. Either way nothing is lost or counted twice."""
    proxy = FaultProxy.to(postgres.url)
    run = make_run(kafka_bootstrap, new_topic(6, prefix="faults-db"), seed=109, proxy=proxy)
    run.start(extra=["--kafka", "max.poll.interval.ms=10000"] if past_max_poll else [])
    run.wait_posted(0.3)
    assert isinstance(run.watch, str)
    wait_progress(run.watch, at_least=1)
    proxy.cut()
    time.sleep(20 if past_max_poll else 8)
    proxy.open()
    run.finish(run.consumers)
    logs = [c.log.read_text(errors="replace") for c in run.consumers]
    assert all("store unavailable" in log for log in logs), "a consumer never noticed the outage"
    assert any("commit landed after" in log for log in logs)
    # librdkafka logs MAXPOLL when a member leaves the group for not polling in time (through
    # logging, as the logger librdkafka: schemas.kafka.KAFKA_LOG)
    left = [log for log in logs if MAXPOLL in log and "assigned [(" in log[log.index(MAXPOLL) :]]
    if past_max_poll:  # members left the group; it got going again (who gets which partitions is timing)
        # A member whose polling thread waits for the stuck commit leaves the group. One with
        # a commit queued but nothing newer to commit keeps polling (it waits only when a
        # second commit would queue behind the stuck one), so not every member has to leave.
        assert any(MAXPOLL in log for log in logs), "\n---\n".join(log[-3000:] for log in logs)
        assert left, "no member came back with partitions"
    else:
        assert not any(MAXPOLL in log or "lost [" in log for log in logs)
