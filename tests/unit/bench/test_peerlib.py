"""The peer bench's plain-scan logic (bench/peers/peerlib.py): what the Kafka Streams peer's
time to close must equal, and the round trip of its output topic's keys and values."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench" / "peers"))

from peerlib import START_DAYS, Tally, TimeToClose, output_lines, parse_output

DAY = 86_400


def record(
    event: str, event_id: str, t: int | None, envelope: int = 1_000, ch: str = "email"
) -> dict[str, Any]:
    field = {"created": "createdAt", "opened": "openedAt", "closed": "closedAt", "snoozed": "snoozedAt"}[
        event
    ]
    data: dict[str, Any] = {"channelType": ch, "createdAt": None, "openedAt": None, "closedAt": None}
    data["snoozedAt"] = None
    data[field] = t
    return {
        "event": f"conversation.{event}",
        "id": event_id,
        "account": 7,
        "createdAt": envelope,
        "data": data,
    }


def test_time_to_close_is_from_the_latest_start_at_or_before_the_closure() -> None:
    s = TimeToClose()
    s.add(b"7:1", record("created", "a", 100))
    s.add(b"7:1", record("opened", "b", 400))
    s.add(b"7:1", record("opened", "c", 900))  # after the closure: not its start
    s.add(b"7:1", record("closed", "d", 500))
    s.add(b"7:2", record("opened", "e", 500))  # another conversation
    s.add(b"7:2", record("snoozed", "f", 510))  # not a start
    s.add(b"7:2", record("closed", "g", 510, ch="chat"))
    assert s.per_channel() == {"email": (1, 100), "chat": (1, 10)}


def test_a_start_at_the_closure_time_counts_and_a_late_arriving_start_too() -> None:
    s = TimeToClose()
    s.add(b"k", record("closed", "c", 500))
    s.add(b"k", record("opened", "o", 500))  # delivered after the closure, same second
    assert s.per_channel() == {"email": (1, 0)}


def test_redelivered_closures_count_once_and_closures_without_a_start_not_at_all() -> None:
    s = TimeToClose()
    s.add(b"k", record("created", "s", 100))
    s.add(b"k", record("closed", "c", 300))
    s.add(b"k", record("closed", "c", 300))  # redelivery: same event id
    s.add(b"other", record("closed", "x", 300))
    assert s.per_channel() == {"email": (1, 200)}


def test_starts_older_than_the_join_window_are_not_seen() -> None:
    s = TimeToClose()
    closed = 2 * START_DAYS * DAY
    s.add(b"k", record("created", "s", closed - START_DAYS * DAY - 1))
    s.add(b"k", record("closed", "c", closed))
    assert s.per_channel() == {}
    s.add(b"k", record("opened", "o", closed - START_DAYS * DAY))  # the window's edge is in
    assert s.per_channel() == {"email": (1, START_DAYS * DAY)}


def test_event_time_falls_back_to_the_envelope_time() -> None:
    s = TimeToClose()
    s.add(b"k", record("created", "s", None, envelope=40))
    s.add(b"k", record("closed", "c", None, envelope=100))
    assert s.per_channel() == {"email": (1, 60)}


def test_output_lines_round_trip_including_channel_types_with_separators() -> None:
    tally = Tally(per_minute={("email", 60): 2, ("odd|type", 120): 1}, per_account={7: 3})
    ttc = {"email": (2, 90), "odd|type": (1, 5)}
    lines = output_lines(tally, ttc)
    assert lines["m|odd|type|120"] == "1" and lines["a|7"] == "3" and lines["t|email"] == "2,90"
    back, back_ttc = parse_output(lines)
    assert back.summary() == tally.summary() and back_ttc == ttc


def test_an_unknown_output_key_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"unexpected output key 'x\|1'"):
        parse_output({"x|1": "1"})
