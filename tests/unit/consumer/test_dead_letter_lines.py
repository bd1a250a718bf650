"""A flood of bad records is not a log line each: the first of each minute are, the rest
one line a minute counted by error (the records all go to the dead-letter topic)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from confluent_kafka import Message

from consumer.stream.dlq import SAID_PER_MINUTE, DeadLetters


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def produce(self, topic: str, **record: Any) -> None:
        self.sent.append((topic, record["key"]))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def record(offset: int) -> Message:
    return Message(topic="events", partition=0, offset=offset, key=b"%d" % offset, value=b"x")


def test_dead_letters_are_said_a_line_each_up_to_a_limit_a_minute(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr("consumer.stream.dlq.time.monotonic", lambda: now[0])
    producer = FakeProducer()
    letters = DeadLetters(producer, "events.dlq")  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="consumer.stream.dlq"):
        for i in range(SAID_PER_MINUTE + 7):
            error = ValueError("bad") if i % 2 else KeyError("worse")
            letters.send(
                Message(topic="events", partition=0, offset=i, key=b"%d" % i, value=b"x"), error, "events"
            )
        assert len(caplog.records) == SAID_PER_MINUTE  # the rest counted, not said yet
        now[0] += 59.999
        letters.flush(1)
        assert len(caplog.records) == SAID_PER_MINUTE
        now[0] += 0.001
        letters.flush(1)
    assert len(producer.sent) == SAID_PER_MINUTE + 7  # every one dead-lettered all the same
    summary = caplog.records[-1].getMessage()
    assert summary.startswith("dead-lettered 7 more record(s) in the last minute: ")
    assert "ValueError" in summary and "KeyError" in summary
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="consumer.stream.dlq"):  # a new minute: said again
        letters.send(
            Message(topic="events", partition=0, offset=99, key=b"k", value=b"x"), KeyError("k"), "events"
        )
    assert [r.getMessage() for r in caplog.records] == ["dead-lettering events[0]@99: 'k'"]
