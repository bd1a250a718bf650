"""The consumer's liveness (`consumer.stream.watchdog`): stalled only past `--stall-timeout`
without a beat from any of its threads, naming what each was doing; a store being retried
beats; `/healthz` answers 503 while stalled; the flag refuses a timeout a retried store
would trip. A fake clock: the rule is the test (the real hang: tests/integration)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from consumer.fold import PartitionFold
from consumer.serve.api import create_app
from consumer.store import PartitionCommit
from consumer.store.sqlite import SqliteStore
from consumer.stream import checkpoint
from consumer.stream.checkpoint import StoreWriter
from consumer.stream.watchdog import LOOP, WRITER, Watchdog
from convmetrics.cli import build_parser
from unit.consumer.test_store_writer_log import AwayStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_stalled_only_past_the_timeout_since_the_latest_beat_of_any_thread() -> None:
    clock = Clock()
    dog = Watchdog(60, clock)
    clock.now += 60
    assert dog.stalled() is None  # at the timeout: not yet
    clock.now += 0.001
    assert dog.stalled() == (
        "no progress for more than --stall-timeout 60 s: the polling loop: starting for 60 s; "
        "the store writer: idle for 60 s; the metrics-topic publisher: idle for 60 s"
    )
    dog.beat(WRITER, "writing a commit to the store (attempt 1)")
    assert dog.stalled() is None  # any thread's progress counts
    clock.now += 30
    dog.beat(LOOP, "waiting for the store writer's commit")
    clock.now += 61
    assert dog.stalled() == (
        "no progress for more than --stall-timeout 60 s: the polling loop: waiting for the store "
        "writer's commit for 61 s; the store writer: writing a commit to the store (attempt 1) for 91 s; "
        "the metrics-topic publisher: idle for 151 s"
    )
    with pytest.raises(ValueError, match="unknown beat"):
        dog.beat("the gateway:", "x")  # a name of its own would never be read


def test_a_store_being_retried_beats_at_each_attempt_and_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint.time, "sleep", lambda s: None)
    beats: list[str] = []
    writer = StoreWriter(AwayStore(["refused"] * 2), "events", threading.Event(), beat=beats.append)  # type: ignore[arg-type]
    try:
        delta, changed = PartitionFold(0).take_changes()
        writer._write_one([PartitionCommit(0, delta, 1, 0, changed)], True, 0.0)
    except AttributeError:  # the fake store has no purge: the beat before it is what counts
        pass
    finally:
        writer.shutdown()
    writer._failed = False
    writer.write([], False, 0.0)  # nothing to write: the writer is idle again after it
    assert beats.pop() == "idle"
    assert beats == [
        "writing a commit to the store (attempt 1)",
        "waiting 0.2 s to retry a commit (the store unavailable)",
        "writing a commit to the store (attempt 2)",
        "waiting 0.4 s to retry a commit (the store unavailable)",
        "writing a commit to the store (attempt 3)",
        "purging the rows past their retention",
    ]


def test_healthz_answers_503_naming_the_stall_while_stalled(tmp_path: Path) -> None:
    why: list[str | None] = [None]
    c = TestClient(create_app(lambda: SqliteStore(str(tmp_path / "m.db")), alive=lambda: why[0]))
    assert (c.get("/healthz").status_code, c.get("/healthz").json()) == (200, {"status": "ok"})
    why[0] = "no progress for more than --stall-timeout 60 s: ..."
    answer = c.get("/healthz")
    assert answer.status_code == 503
    assert answer.json() == {
        "status": "stalled",
        "error": "no progress for more than --stall-timeout 60 s: ...",
    }


def test_the_watch_logs_a_stall_once_with_the_threads_then_the_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dog = Watchdog(0.2)
    stop = threading.Event()
    with caplog.at_level(logging.WARNING, logger="consumer.stream.watchdog"):
        thread = dog.watch(stop)
        deadline = time.monotonic() + 5
        while not any("consumer stalled" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.02)
        time.sleep(0.3)  # stalled for more checks: still said once
        dog.beat(LOOP, "polling Kafka and folding")
        deadline = time.monotonic() + 5
        while not any("moving again" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.02)
        stop.set()
        thread.join(5)
    (stalled,) = [r for r in caplog.records if "consumer stalled" in r.getMessage()]
    assert stalled.levelname == "ERROR" and "thread MainThread:" in stalled.getMessage()
    assert "thread watchdog:" not in stalled.getMessage()  # its own stack says nothing


@pytest.mark.parametrize(("given", "refused"), [("10", False), ("9.99", True), ("0", True), ("x", True)])
def test_the_stall_timeout_is_at_least_what_a_retried_store_is_quiet_for(
    given: str, refused: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["consume", "--bootstrap-servers", "k:9092", "--stall-timeout", given]
    if not refused:
        assert build_parser().parse_args(argv).stall_timeout == 10
        return
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)
    assert "argument --stall-timeout: must be a number of seconds of at least 10" in capsys.readouterr().err


def test_the_stall_timeout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from consumer.cli import consumer_settings

    assert (
        consumer_settings(build_parser().parse_args(["consume", "--bootstrap-servers", "k:1"])).stall_timeout
        == 300
    )
    monkeypatch.setenv("CONVMETRICS_STALL_TIMEOUT", "45")
    args: Any = build_parser().parse_args(["consume", "--bootstrap-servers", "k:1"])
    assert consumer_settings(args).stall_timeout == 45
