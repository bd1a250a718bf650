"""The metrics-topic publisher's deadlines (consumer.stream.metrics_topic): rows Kafka does
not acknowledge fail the commit's hook while running; while the consumer stops they are
dropped from the producer after a short wait and stay unpublished in the store (their
marks do not move), so a consumer whose brokers are gone stops in seconds.

Fakes for speed: the producer and the store; the real publisher runs against a real broker
in tests/integration/test_metrics_topic.py."""

from __future__ import annotations

import signal
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from consumer.exceptions import ConfigError, ConsumerError
from consumer.fold.registry import REGISTRY
from consumer.stream import metrics_topic
from consumer.stream.metrics_topic import MetricsTopicPublisher


class Clock:
    """time.monotonic for the module under test: only the fake producer's waits move it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time_ns(self) -> int:
        return int(self.now * 1e9)


class FakeProducer:
    """Never acknowledges unless told to; each flush waits its whole timeout (on the clock),
    and `on_flush` runs after each wait (to stop the consumer in the middle of one)."""

    def __init__(self, clock: Clock, *, acknowledges: bool, on_flush: Any = None) -> None:
        self.clock, self.acknowledges, self.on_flush = clock, acknowledges, on_flush
        self.queued = 0
        self.waited = 0.0
        self.purged = False

    def produce(self, *_: Any, **__: Any) -> None:
        self.queued += 1

    def poll(self, _: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        if self.acknowledges or not self.queued:
            self.queued = 0
            return 0
        self.clock.now += timeout
        self.waited += timeout
        if self.on_flush is not None:
            self.on_flush()
        return self.queued

    def purge(self) -> None:
        self.purged = True
        self.queued = 0


class FakeStore:
    registry = REGISTRY

    def __init__(self) -> None:
        self.rows = [SimpleNamespace(by="channel_type", window="1h", key=k) for k in ("a", "b")]
        self.marked: list[Any] = []

    def published_marks(self, partitions: list[int], topic: str) -> dict[int, int]:
        return {}

    def changed_since(self, marks: dict[int, int]) -> tuple[list[SimpleNamespace], dict[int, int]]:
        rows, self.rows = self.rows, []
        return rows, {0: 7}

    def mark_published(self, newest: dict[int, int], topic: str) -> None:
        self.marked.append(newest)

    def purged_since(self, topic: str) -> tuple[list[tuple[str, str, int, str]], int]:
        return [], 0


class FakeCodec:
    def headers(self, subject: str) -> list[tuple[str, bytes]]:
        return []

    def encode(self, record: Any) -> bytes:
        return b"x"


def publisher(producer: FakeProducer, monkeypatch: pytest.MonkeyPatch) -> MetricsTopicPublisher:
    monkeypatch.setattr(metrics_topic, "time", producer.clock)
    monkeypatch.setattr(metrics_topic, "metrics_key", lambda row: str(row))
    pub = MetricsTopicPublisher.__new__(MetricsTopicPublisher)  # no broker: fields by hand
    pub.topic, pub.subject, pub.published = "metrics", "metric_rows", 0
    pub.format = metrics_topic.Format(lambda row, registry, now_ms: {"row": row}, lambda by, window: True)
    pub.codec = FakeCodec()  # type: ignore[assignment]
    pub.producer = producer  # type: ignore[assignment]
    pub._kill_after = None
    pub._refused = metrics_topic.DeliveryErrors()
    return pub


def test_acknowledged_rows_move_the_marks(monkeypatch: pytest.MonkeyPatch) -> None:
    producer, store = FakeProducer(Clock(), acknowledges=True), FakeStore()
    assert publisher(producer, monkeypatch).publish_pending(store, [0]) == 2  # type: ignore[arg-type]
    assert store.marked == [{0: 7}] and producer.waited == 0


def test_unacknowledged_rows_fail_the_commit_hook_after_the_publish_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer, store = FakeProducer(Clock(), acknowledges=False), FakeStore()
    with pytest.raises(ConsumerError, match="did not acknowledge 2 rows"):
        publisher(producer, monkeypatch).publish_pending(store, [0], stopping=threading.Event())  # type: ignore[arg-type]
    assert store.marked == [] and not producer.purged
    assert producer.waited == pytest.approx(metrics_topic.PUBLISH_TIMEOUT_S, abs=metrics_topic.FLUSH_SLICE_S)


@pytest.mark.parametrize("stop_after", [0.0, 10.0], ids=["stopped-before", "stopped-while-waiting"])
def test_once_stopping_they_wait_briefly_then_stay_in_the_store(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, stop_after: float
) -> None:
    clock, stopping = Clock(), threading.Event()
    start = clock.now
    producer = FakeProducer(
        clock, acknowledges=False, on_flush=lambda: clock.now - start >= stop_after and stopping.set()
    )
    if not stop_after:
        stopping.set()
    store = FakeStore()
    published = publisher(producer, monkeypatch).publish_pending(store, [0], stopping=stopping)  # type: ignore[arg-type]
    assert published == 0 and store.marked == []  # the marks stay: published after the next commit
    assert producer.purged and producer.queued == 0
    assert producer.waited == pytest.approx(
        stop_after + metrics_topic.STOPPING_TIMEOUT_S, abs=2 * metrics_topic.FLUSH_SLICE_S
    )
    assert "2 of 2 rows not acknowledged while stopping" in caplog.text


def test_the_stopping_wait_fits_the_stop_deadline_with_the_group_leave() -> None:
    from consumer.cli import STOP_DEADLINE_S
    from schemas.kafka import CLOSE_TIMEOUT_S

    assert metrics_topic.STOPPING_TIMEOUT_S + CLOSE_TIMEOUT_S < STOP_DEADLINE_S


# -- the test-only hook that kills the process mid-publication (KILL_MID_PUBLICATION_ENV) --


class Killed(Exception):
    pass


@pytest.mark.parametrize("after", [1, 2], ids=["before-the-last-row", "after-the-last-row"])
def test_the_kill_hook_lands_only_in_the_middle_of_a_pass(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, after: int
) -> None:
    """With rows left it flushes those produced and kills before the mark moves; with
    none left (N = the pass's rows) it does nothing, so a kill is always mid-publication."""
    kills: list[int] = []

    def kill(pid: int, sig: int) -> None:
        kills.append(sig)
        raise Killed

    monkeypatch.setattr(metrics_topic.os, "kill", kill)
    producer, store = FakeProducer(Clock(), acknowledges=True), FakeStore()
    pub = publisher(producer, monkeypatch)
    pub._kill_after = after
    if after < len(store.rows):
        with pytest.raises(Killed):
            pub.publish_pending(store, [0])  # type: ignore[arg-type]
        assert kills == [signal.SIGKILL] and store.marked == [] and producer.queued == 0  # flushed
        assert "killing this process after 1 records, before the next of this pass's 2 rows" in caplog.text
    else:
        assert pub.publish_pending(store, [0]) == 2  # type: ignore[arg-type]
        assert kills == [] and store.marked == [{0: 7}]


def test_the_kill_hook_is_off_unless_set_and_refuses_a_bad_count(monkeypatch: pytest.MonkeyPatch) -> None:
    env = metrics_topic.KILL_MID_PUBLICATION_ENV
    monkeypatch.delenv(env, raising=False)
    assert metrics_topic._kill_mid_publication_after() is None
    monkeypatch.setenv(env, "3")
    assert metrics_topic._kill_mid_publication_after() == 3
    for bad in ("0", "-1", "x"):
        monkeypatch.setenv(env, bad)
        with pytest.raises(ConfigError, match=env):
            metrics_topic._kill_mid_publication_after()


@pytest.mark.parametrize(
    ("subject", "carried"),
    [
        ("closure_metrics", {"channel_type|1h", "account|1m"}),  # v1: its own groupings, no live rows
        ("metric_rows", {"channel_type|1h", "account|1m", "inbox|1h", "channel_type|live"}),
    ],
)
def test_a_format_publishes_and_tombstones_the_same_rows(
    monkeypatch: pytest.MonkeyPatch, subject: str, carried: set[str]
) -> None:
    """Rows and tombstones go by one predicate per format: a row the format does not carry
    is never published on its topic, nor its tombstone."""
    rows = [("channel_type", "1h"), ("account", "1m"), ("inbox", "1h"), ("channel_type", "live")]
    store = FakeStore()
    store.rows = [SimpleNamespace(by=by, window=win, key="k") for by, win in rows]
    purged = [(by, win, 0, "k") for by, win in rows if win != "live"]
    store.purged_since = lambda topic: (purged.copy(), 1) if purged else ([], 0)  # type: ignore[method-assign]
    store.mark_purged_published = lambda topic, mark: purged.clear()  # type: ignore[attr-defined]
    produced: list[tuple[str, bool]] = []
    producer = FakeProducer(Clock(), acknowledges=True)
    producer.produce = lambda topic, key, value, **_: produced.append((key, value is None))  # type: ignore[method-assign]
    pub = publisher(producer, monkeypatch)
    pub.format = metrics_topic.FORMATS[subject]
    monkeypatch.setattr(metrics_topic, "metrics_key", lambda row: f"{row.by}|{row.window}")
    monkeypatch.setattr(metrics_topic, "topic_key", lambda by, key, win, start: f"{by}|{win}")
    pub.format = metrics_topic.Format(lambda row, registry, now_ms: {}, pub.format.carries)
    pub.publish_pending(store, [0])  # type: ignore[arg-type]
    assert {key for key, tomb in produced if not tomb} == carried
    assert {key for key, tomb in produced if tomb} == carried - {"channel_type|live"}
