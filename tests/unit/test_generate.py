"""``convmetrics generate``: shape, determinism, lifecycles and the awkward cases it must produce."""

from __future__ import annotations

import itertools
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from convmetrics.cli import main
from convmetrics.generate import (
    DEFAULT_START,
    KNOWN_CHANNEL_TYPES,
    GenerateConfig,
    GenerateConfigError,
    generate_ndjson,
    generate_webhooks,
    plan,
)
from support.truth import TIME_FIELDS, compute_truth, dedupe, event_time, is_unread

# Keys of the platform's conversation.closed example (seeds/conversation-closed.md).
ENVELOPE_KEYS = {"event", "id", "account", "app", "deliveryAttempts", "firstDeliveryAttempt", "data"}
DATA_KEYS = {
    "id", "snoozedUntil", "messageWindowExpiresAt", "messageWindowExpiryConditions",
    "channelType", "state", "lastReadByAppUserAt", "lastInboundMessageAt", "channel",
    "participants",
}  # fmt: skip
CHANNEL_USER_KEYS = {
    "id", "__typename", "name", "firstName", "lastName", "identifiers", "displayName",
    "avatarUrl", "optimisedAvatarUrl",
}  # fmt: skip
APP_USER_KEYS = {"id", "__typename", "fullName", "displayName", "optimisedAvatarUrl"}
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

CONFIG = GenerateConfig(
    seed=11, events=20_000, accounts=30, conversations=4_000, span=3 * 86_400,
    duplicate_rate=0.05, late_rate=0.05, unknown_channel_rate=0.05, noise_rate=0.05,
    alt_time_field_rate=0.2,
)  # fmt: skip


@pytest.fixture(scope="module")
def stream() -> list[dict[str, Any]]:
    return list(generate_webhooks(CONFIG))


@pytest.fixture(scope="module")
def conversation_events(stream: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in stream if e["event"] in TIME_FIELDS]


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    small = GenerateConfig(seed=3, events=3_000, conversations=600)
    first = b"".join(generate_ndjson(small))
    assert first == b"".join(generate_ndjson(small))
    other = GenerateConfig(seed=4, events=3_000, conversations=600)
    assert first != b"".join(generate_ndjson(other))
    assert len(first.splitlines()) == sum(1 for _ in generate_webhooks(small))


def test_conversation_events_have_the_platform_shape(
    conversation_events: list[dict[str, Any]],
) -> None:
    for event in conversation_events:
        verb = event["event"].split(".")[1]
        time_keys = set(event) - ENVELOPE_KEYS
        assert time_keys in ({"createdAt"}, {f"{verb}_at"}), event
        assert event["deliveryAttempts"] >= 1
        assert UUID4.match(event["id"])
        data = event["data"]
        assert set(data) == DATA_KEYS | {TIME_FIELDS[event["event"]]}, data
        assert data["messageWindowExpiryConditions"] == []
        assert set(data["channel"]) == {"id"}
        assert data["state"] in {"OPENED", "CLOSED", "SNOOZED"}
        users = [p["user"] for p in data["participants"]]
        assert users[0]["__typename"] == "ChannelUser" and set(users[0]) == CHANNEL_USER_KEYS
        assert set(users[0]["identifiers"][0]) == {"sourceId", "category"}
        for agent in users[1:]:
            assert agent["__typename"] == "AppUser" and set(agent) == APP_USER_KEYS
        for field in ("snoozedUntil", "messageWindowExpiresAt", "lastReadByAppUserAt"):
            assert data[field] is None or isinstance(data[field], int)
    states = {(e["event"], e["data"]["state"]) for e in conversation_events}
    assert ("conversation.closed", "CLOSED") in states
    assert ("conversation.snoozed", "SNOOZED") in states


def test_counts_and_the_awkward_cases_are_all_there(stream: list[dict[str, Any]]) -> None:
    names = Counter(e["event"] for e in stream)
    assert abs(len(stream) - CONFIG.events) <= 0.15 * CONFIG.events
    assert all(names[name] > 0 for name in TIME_FIELDS)
    noise = sum(n for name, n in names.items() if name not in TIME_FIELDS)
    assert 0.02 * len(stream) < noise < 0.1 * len(stream)
    assert names["conversation_tag.created"] > 0 and names["message.created"] > 0
    channels = {e["data"]["channelType"] for e in stream if e["event"] in TIME_FIELDS}
    assert channels - set(KNOWN_CHANNEL_TYPES), "no unknown channel type"
    assert len(channels & set(KNOWN_CHANNEL_TYPES)) >= 10
    alt = sum(1 for e in stream if "createdAt" not in e)
    assert 0.1 * len(stream) < alt < 0.3 * len(stream)
    assert {e["account"] for e in stream} <= set(range(1, CONFIG.accounts + 1))


def test_redeliveries_repeat_the_event_later_with_more_attempts(
    stream: list[dict[str, Any]],
) -> None:
    first_seen: dict[str, tuple[int, dict[str, Any]]] = {}
    redeliveries = 0
    for position, event in enumerate(stream):
        if event["id"] not in first_seen:
            first_seen[event["id"]] = (position, event)
            continue
        redeliveries += 1
        _, original = first_seen[event["id"]]
        assert event["deliveryAttempts"] > original["deliveryAttempts"]
        assert {**event, "deliveryAttempts": 0} == {**original, "deliveryAttempts": 0}
    assert 0.02 * len(stream) < redeliveries < 0.1 * len(stream)


def test_some_events_arrive_out_of_order(conversation_events: list[dict[str, Any]]) -> None:
    newest = 0
    late = closed_before_created = 0
    created_seen: set[tuple[int, int]] = set()
    closed_first: set[tuple[int, int]] = set()
    for event in dedupe(conversation_events):
        t, key = event_time(event), (event["account"], event["data"]["id"])
        late += t < newest - 600
        newest = max(newest, t)
        if event["event"] == "conversation.created":
            created_seen.add(key)
            closed_before_created += key in closed_first
        elif event["event"] == "conversation.closed" and key not in created_seen:
            closed_first.add(key)
    assert late > 100
    assert closed_before_created > 0


def test_lifecycles_start_with_created_and_reopen_sometimes(
    conversation_events: list[dict[str, Any]],
) -> None:
    by_conversation: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for event in dedupe(conversation_events):
        by_conversation[(event["account"], event["data"]["id"])].append(event)
    assert len(by_conversation) <= CONFIG.conversations
    reopened = 0
    rank = {"created": 0, "opened": 1, "assigned": 2, "snoozed": 3, "closed": 4}  # within one second
    for events in by_conversation.values():
        events.sort(key=lambda e: (event_time(e), rank[e["event"].split(".")[1]]))
        verbs = [e["event"].split(".")[1] for e in events]
        if verbs[0] == "assigned":  # a first assignment stamped before the creation
            verbs = verbs[1:]
        assert verbs[0] == "created", verbs
        assert verbs.count("created") == 1
        assert len({e["data"]["channelType"] for e in events}) == 1
        for before, after in itertools.pairwise(verbs):
            if after == "opened":
                assert before == "closed", verbs
        reopened += "opened" in verbs
    assert reopened > 0.05 * len(by_conversation)
    starts = [event_time(e) for e in conversation_events if e["event"].endswith("created")]
    assert CONFIG.start <= min(starts) and max(starts) < CONFIG.start + CONFIG.span


def test_durations_are_long_tailed_and_some_closures_unread(
    conversation_events: list[dict[str, Any]],
) -> None:
    row = compute_truth(conversation_events)[("account", "1", "all", None)]
    truth = compute_truth(conversation_events)
    everything = [d for (by, _, w, _), r in truth.items() if by == "account" and w == "all"
                  for d in r.durations]  # fmt: skip
    assert row.closures > 0
    assert min(everything) < 600 and max(everything) > 86_400
    closures = [e for e in dedupe(conversation_events) if e["event"] == "conversation.closed"]
    unread = sum(is_unread(e["data"]) for e in closures)
    assert 0.05 * len(closures) < unread < 0.5 * len(closures)
    unread_data = [e["data"] for e in closures if is_unread(e["data"])]
    never_read = sum(1 for data in unread_data if data["lastReadByAppUserAt"] is None)
    assert 0 < never_read < unread  # both kinds: never read, and read before the last message


def test_some_steps_come_in_the_same_second(conversation_events: list[dict[str, Any]]) -> None:
    """An assignment or closure in the second of the step before it: closures of 0 s, which
    count ("the latest start at or before closedAt"), and so reach the end-to-end tests."""
    truth = compute_truth(conversation_events)
    zero = sum(r.durations.count(0) for (by, _, w, _), r in truth.items() if by == "account" and w == "all")
    closures = sum(1 for e in dedupe(conversation_events) if e["event"] == "conversation.closed")
    assert 0.002 * closures < zero < 0.05 * closures
    none = GenerateConfig(seed=11, events=5_000, conversations=1_000, same_second_rate=0.0)
    assert 0 not in [d for r in compute_truth(generate_webhooks(none)).values() for d in r.durations]


def test_first_closes_and_first_assignments_meet_their_boundaries(
    conversation_events: list[dict[str, Any]],
) -> None:
    """Streams hold what first_closes and time to first assignment must get right:
    assignments before and after (and at) the creation, conversations closed several
    times, an earlier closure delivered after a later one, a created event delivered after
    an assignment it precedes."""
    events = dedupe(conversation_events)
    by_conversation: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_conversation[(e["account"], e["data"]["id"])].append(e)  # arrival order
    before = after = at = several = late_earlier_close = late_created = 0
    for evs in by_conversation.values():
        created = [event_time(e) for e in evs if e["event"] == "conversation.created"]
        closes = [event_time(e) for e in evs if e["event"] == "conversation.closed"]
        several += len(closes) > 1
        late_earlier_close += any(b < a for a, b in itertools.pairwise(closes))
        for i, e in enumerate(evs):
            if e["event"] != "conversation.assigned" or not created:
                continue
            t = event_time(e)
            before += t < created[0]
            after += t > created[0]
            at += t == created[0]
            late_created += (
                any(x["event"] == "conversation.created" for x in evs[i + 1 :]) and t >= created[0]
            )
    assert before > 10 and after > 100 and at > 0, (before, after, at)
    assert several > 50 and late_earlier_close > 0, (several, late_earlier_close)
    assert late_created > 0


def test_streams_hold_snoozes_and_closures_after_the_messaging_window(
    conversation_events: list[dict[str, Any]],
) -> None:
    """closed_window_expired and snoozes (and the snoozed gauge) have something to count:
    closures whose messaging window had expired before the close, others whose window was
    still open or unset, and snoozed events."""
    events = dedupe(conversation_events)
    closes = [e["data"] for e in events if e["event"] == "conversation.closed"]
    expired = sum(1 for d in closes if (d.get("messageWindowExpiresAt") or 2**62) < d.get("closedAt", 0))
    assert 10 < expired < len(closes) - 10, (expired, len(closes))
    assert sum(1 for e in events if e["event"] == "conversation.snoozed") > 10


def test_missing_time_rate_drops_the_data_time() -> None:
    config = GenerateConfig(seed=2, events=2_000, conversations=400, missing_time_rate=0.5)
    events = [e for e in generate_webhooks(config) if e["event"] in TIME_FIELDS]
    missing = sum(1 for e in events if TIME_FIELDS[e["event"]] not in e["data"])
    assert 0.3 * len(events) < missing < 0.7 * len(events)
    assert all(isinstance(event_time(e), int) for e in events)


def test_defaults_are_realistic_and_fixed() -> None:
    events = list(generate_webhooks(GenerateConfig(events=2_000)))
    assert abs(len(events) - 2_000) < 300
    assert min(e["data"].get("createdAt") or 2**40 for e in events) >= DEFAULT_START


def test_the_stream_is_lazy() -> None:
    huge = GenerateConfig(events=10**10, conversations=10**9, accounts=10_000)
    first = list(itertools.islice(generate_webhooks(huge), 1_000))
    assert len(first) == 1_000
    assert plan(huge)[0] == 10**9


def test_plan_uses_fewer_conversations_when_events_are_few() -> None:
    conversations, assigns = plan(GenerateConfig(events=1_000, conversations=100_000))
    assert 250 < conversations < 400 and assigns == 0.6  # every stream has assignments
    conversations, assigns = plan(GenerateConfig(events=2_000_000, conversations=500_000))
    assert conversations == 500_000 and 0.5 < assigns < 2


@pytest.mark.parametrize(
    "bad",
    [{"events": 0}, {"accounts": 0}, {"span": 0}, {"start": -1}, {"duplicate_rate": 1.0},
     {"late_rate": -0.1}, {"noise_rate": 1.0}, {"unknown_channel_rate": 1.5}],
)  # fmt: skip
def test_bad_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(GenerateConfigError, match=next(iter(bad))):
        GenerateConfig(**bad)


def test_cli_writes_the_api_stream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "events.ndjson"
    flags = ["--seed", "5", "--events", "3000", "--conversations", "500", "--accounts", "9",
             "--span", "7200", "--duplicate-rate", "0.1", "--no-progress"]  # fmt: skip
    assert main(["generate", *flags, "--output", str(out)]) == 0
    config = GenerateConfig(seed=5, events=3_000, conversations=500, accounts=9, span=7_200,
                            duplicate_rate=0.1)  # fmt: skip
    assert out.read_bytes() == b"".join(generate_ndjson(config))
    assert all(orjson.loads(line) for line in out.read_bytes().splitlines())
    assert main(["generate", "--late-rate", "2"]) == 2
    assert "error: --late-rate must be in [0, 1), got 2.0" in capsys.readouterr().err  # the flag
