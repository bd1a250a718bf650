"""The truth oracle against hand-computed expectations."""

from __future__ import annotations

from typing import Any

import pytest

from support.truth import (
    api_row,
    compute_truth,
    dedupe,
    event_time,
    exact_quantile,
    is_unread,
    select,
    within_relative_error,
)

T0 = 1_700_000_000  # a multiple of 60 but not of 3600 / 86400


def ev(
    verb: str,
    eid: str,
    t: int | None,
    *,
    conv: int = 1,
    account: int = 7,
    channel: str = "TELEGRAM",
    inbound: int | None = None,
    read: int | None = None,
    envelope_time: int = 0,
    envelope_key: str = "createdAt",
    attempts: int = 1,
) -> dict[str, Any]:
    """A minimal conversation webhook; ``t=None`` leaves out ``data.<verb>At``."""
    data: dict[str, Any] = {
        "id": conv,
        "channelType": channel,
        "lastInboundMessageAt": inbound,
        "lastReadByAppUserAt": read,
    }
    if t is not None:
        data[f"{verb}At"] = t
    return {
        "event": f"conversation.{verb}",
        "id": eid,
        "account": account,
        "app": 1,
        envelope_key: envelope_time or (t or 0) + 2,
        "deliveryAttempts": attempts,
        "data": data,
    }


def all_row(truth: Any, by: str = "channel_type", key: str = "TELEGRAM") -> Any:
    return truth[(by, key, "all", None)]


def test_closed_arriving_before_its_created_still_measures() -> None:
    truth = compute_truth([ev("closed", "c", T0 + 1_000), ev("created", "a", T0 + 400)])
    row = all_row(truth)
    assert (row.closures, row.reopens, row.closed_unread) == (1, 0, 0)
    assert row.durations == [600]
    assert (row.ttc_count, row.ttc_sum, row.ttc_min, row.ttc_max) == (1, 600, 600, 600)


def test_reopen_then_close_measures_from_the_reopen() -> None:
    events = [
        ev("created", "a", T0 + 100),
        ev("closed", "b", T0 + 200),
        ev("opened", "c", T0 + 500),
        ev("assigned", "d", T0 + 600),
        ev("closed", "e", T0 + 900),
    ]
    row = all_row(compute_truth(events))
    assert (row.closures, row.reopens) == (2, 1)
    assert sorted(row.durations) == [100, 400]
    assert row.ttc_mean == 250


def test_duplicates_count_once_and_the_first_copy_wins() -> None:
    first = ev("closed", "x", T0 + 50, channel="LINE")
    again = ev("closed", "x", T0 + 50, channel="VIBER", attempts=2)
    truth = compute_truth([ev("created", "a", T0), first, again, ev("created", "a", T0 + 10)])
    assert all_row(truth, key="LINE").closures == 1
    assert all_row(truth, key="LINE").durations == [50]  # the second "a" is a duplicate
    assert ("channel_type", "VIBER", "all", None) not in truth
    assert all_row(truth, by="account", key="7").closures == 1


def test_closure_without_a_start_counts_only_in_closures() -> None:
    row = all_row(compute_truth([ev("closed", "c", T0 + 5, inbound=T0, read=None)]))
    assert (row.closures, row.closed_unread, row.ttc_count) == (1, 1, 0)
    assert (row.ttc_min, row.ttc_max, row.ttc_mean, row.quantile(0.5)) == (None,) * 4


def test_an_opened_after_closed_at_does_not_count_even_when_it_arrives_first() -> None:
    events = [
        ev("created", "a", T0 + 100),
        ev("opened", "b", T0 + 5_000),
        ev("closed", "c", T0 + 1_000),
    ]
    row = all_row(compute_truth(events))
    assert row.durations == [900]
    assert row.reopens == 1


def test_a_start_at_exactly_closed_at_counts_as_before() -> None:
    events = [ev("created", "a", T0 + 100), ev("opened", "b", T0 + 300), ev("closed", "c", T0 + 300)]
    assert all_row(compute_truth(events)).durations == [0]


def test_conversations_are_keyed_by_account_and_id() -> None:
    events = [
        ev("created", "a", T0 + 100, account=1, conv=9),
        ev("created", "b", T0 + 900, account=2, conv=9),
        ev("created", "c", T0 + 950, account=1, conv=8),
        ev("closed", "d", T0 + 1_000, account=1, conv=9),
    ]
    truth = compute_truth(events)
    assert all_row(truth).durations == [900]
    assert all_row(truth, by="account", key="1").closures == 1
    assert all_row(truth, by="account", key="2").closures == 0  # account 2: a creation only
    assert all_row(truth, by="account", key="2").created == 1


def test_a_closure_uses_its_own_channel_type() -> None:
    events = [ev("created", "a", T0, channel="TELEGRAM"), ev("closed", "b", T0 + 9, channel="WECHAT")]
    truth = compute_truth(events)
    assert all_row(truth, key="WECHAT").durations == [9]
    telegram = all_row(truth, key="TELEGRAM")  # the creation's channel type: created only
    assert (telegram.created, telegram.closures, telegram.durations) == (1, 0, [])


@pytest.mark.parametrize(
    ("inbound", "read", "unread"),
    [(100, None, True), (100, 99, True), (100, 100, False), (100, 101, False), (None, None, False),
     (None, 50, False)],
)  # fmt: skip
def test_unread_rule(inbound: int | None, read: int | None, unread: bool) -> None:
    assert is_unread({"lastInboundMessageAt": inbound, "lastReadByAppUserAt": read}) is unread
    truth = compute_truth([ev("closed", "c", T0, inbound=inbound, read=read)])
    assert all_row(truth).closed_unread == int(unread)


def test_event_time_falls_back_to_the_envelope() -> None:
    assert event_time(ev("closed", "a", T0 + 5)) == T0 + 5
    assert event_time(ev("closed", "a", None, envelope_time=T0 + 9)) == T0 + 9
    alt = ev("closed", "a", None, envelope_time=T0 + 11, envelope_key="closed_at")
    assert event_time(alt) == T0 + 11
    null_time = ev("assigned", "a", T0)
    null_time["data"]["assignedAt"] = None
    assert event_time(null_time) == T0 + 2
    bare = ev("closed", "a", None, envelope_key="closed_at")
    del bare["closed_at"]
    with pytest.raises(ValueError, match="carries no time"):
        event_time(bare)


def test_windows_are_epoch_aligned_and_late_events_update_old_windows() -> None:
    t = 86_400 * 3 + 3_600 * 5 + 60 * 7 + 13
    events = [ev("created", "a", t - 30), ev("closed", "b", t), ev("closed", "z", t + 90_000, conv=2)]
    truth = compute_truth(events)
    assert truth[("channel_type", "TELEGRAM", "1m", t - 13)].durations == [30]
    assert truth[("channel_type", "TELEGRAM", "1h", t - 60 * 7 - 13)].closures == 1
    assert truth[("account", "7", "1d", 86_400 * 3)].closures == 1
    assert truth[("account", "7", "1d", 86_400 * 4)].closures == 1
    assert truth[("account", "7", "all", None)].closures == 2
    assert len(select(truth, "account", "1m")) == 3  # the creation's minute, and each closure's
    assert set(select(truth, "channel_type", "all")) == {("TELEGRAM", None)}


def test_non_conversation_events_are_ignored_but_still_claim_their_id() -> None:
    noise = {"event": "conversation_tag.created", "id": "n", "account": 7, "createdAt": T0,
             "data": {"id": 1, "name": "vip"}}  # fmt: skip
    message = {"event": "message.created", "id": "m", "account": 7, "createdAt": T0, "data": {}}
    kept = dedupe([noise, message, ev("closed", "c", T0)])
    assert [e["id"] for e in kept] == ["c"]
    assert compute_truth([noise, message]) == {}


def test_exact_quantile_is_the_lower_one() -> None:
    values = list(range(100, 0, -1))  # 1..100, unsorted
    assert exact_quantile(values, 0.5) == 50
    assert exact_quantile(values, 0.9) == 90
    assert exact_quantile(values, 0.99) == 99
    assert exact_quantile(values, 1.0) == 100
    assert exact_quantile([7], 0.99) == 7
    assert exact_quantile([], 0.5) is None
    assert exact_quantile([1, 2, 3, 4], 0.5) == 2  # lower, not interpolated 2.5
    with pytest.raises(ValueError):
        exact_quantile([1], 1.5)
    assert within_relative_error(100.9, 100)
    assert not within_relative_error(101.5, 100)


def test_api_row_has_the_served_shape() -> None:
    truth = compute_truth([ev("created", "a", T0), ev("closed", "b", T0 + 60)])
    key = ("channel_type", "TELEGRAM", "1h", T0 - T0 % 3_600)
    row = api_row(key, truth[key])
    assert row["window_end"] == row["window_start"] + 3_600
    assert row["time_to_close"] == {
        "count": 1, "sum": 60, "min": 60, "max": 60, "mean": 60.0, "p50": 60, "p90": 60, "p99": 60
    }  # fmt: skip
    all_key = ("account", "7", "all", None)
    assert api_row(all_key, truth[all_key])["window_end"] is None
