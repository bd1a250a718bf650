"""The store writer's log while the store is away: each cause of a failed commit once
(an outage retries every 5 s: ~720 lines an hour were one a retry), the retries at DEBUG,
and one line when it lands. A fake store and a fake clock: the retry rules are the test."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from consumer.exceptions import StoreUnavailableError
from consumer.fold import PartitionFold
from consumer.store import PartitionCommit
from consumer.stream import checkpoint
from consumer.stream.checkpoint import StoreWriter


class AwayStore:
    """Fails its commits with these causes in turn, then takes one."""

    def __init__(self, causes: list[str]) -> None:
        self.causes = causes

    def commit(self, topic: str, commits: list[Any]) -> None:
        if self.causes:
            raise StoreUnavailableError(self.causes.pop(0))

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


def test_each_cause_once_the_retries_at_debug(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(checkpoint.time, "sleep", lambda s: None)
    lost = "PostgreSQL store connection lost: terminating connection\ndue to administrator command"
    store = AwayStore([lost] * 6 + ["PostgreSQL store unreachable: connection refused"] * 10)
    writer = StoreWriter(store, "events", threading.Event())  # type: ignore[arg-type]
    try:
        with caplog.at_level(logging.DEBUG, logger=checkpoint.log.name):
            delta, changed = PartitionFold(0).take_changes()
            writer._write_one([PartitionCommit(0, delta, 1, 0, changed)], False, 0.0)
    finally:
        writer.shutdown()
    failed = [r for r in caplog.records if "commit attempt" in r.getMessage()]
    assert len(failed) == 16 and [r.levelname for r in failed if r.levelname != "DEBUG"] == ["WARNING"] * 2
    assert "\n" not in failed[0].getMessage()  # libpq's newline: one line
    (landed,) = [r for r in caplog.records if "available again" in r.getMessage()]
    assert landed.levelname == "INFO" and "after 16 retries" in landed.getMessage()
