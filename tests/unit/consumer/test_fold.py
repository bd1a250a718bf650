"""The fold's rules, run against each implementation: the reference (consumer.fold) and
the compiled one (consumer/native) where it is built."""

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from consumer.fold import BY_ACCOUNT, BY_CHANNEL, Fold, last_time_of, row_keys
from consumer.fold import native as fold_native
from consumer.fold.model import ASSIGNED, CLOSED, CREATED, OPENED, Event
from consumer.fold.registry import CLOSURES, REGISTRY
from support.rows import delta_rows

IMPLEMENTATIONS = [k for k in (fold_native.PYTHON, fold_native.NATIVE) if k is not None]
PartitionFold: Any = None  # the implementation under test (the fixture below sets it)


@pytest.fixture(autouse=True, params=IMPLEMENTATIONS, ids=lambda k: k.name)
def implementation(request: pytest.FixtureRequest) -> Iterator[None]:
    global PartitionFold
    PartitionFold = request.param.new
    yield
    PartitionFold = None


def fold() -> Fold:
    return PartitionFold(0)  # type: ignore[no-any-return]


def ev(
    kind: int,
    h: int,
    t: int,
    *,
    conv: int = 1,
    account: int = 7,
    channel: str = "TELEGRAM",
    read: int | None = None,
    inbound: int | None = None,
) -> Event:
    return Event(kind, h, account, conv, channel, t, read, inbound)


def all_row(f: Fold, by: str = BY_CHANNEL, key: str = "TELEGRAM"):  # type: ignore[no-untyped-def]
    return delta_rows(f.delta)[(by, key, "all", 0)]


def test_row_keys_cover_every_stored_grouping_and_four_windows() -> None:
    t = 3 * 86400 + 3661
    fact = ("VIBER", 3, 55, 10_003, t) + (0,) * 10
    keys = row_keys(fact)
    finest = "source"
    assert (BY_CHANNEL, "VIBER", "1m", 3 * 86400 + 3660) in keys
    assert (BY_CHANNEL, "VIBER", "all", 0) in keys
    # the account's own rows: all time only (its 1m, 1h and 1d rows are the source's)
    assert (BY_ACCOUNT, "3", "all", 0) in keys
    assert not any(k[0] == BY_ACCOUNT and k[2] != "all" for k in keys)
    # the groupings finer than an account are stored as one source's rows, in every window
    assert (finest, "3|55|10003|VIBER", "1m", 3 * 86400 + 3660) in keys
    assert (finest, "3|55|10003|VIBER", "all", 0) in keys
    assert not any(k[0] in ("account,channel_type", "inbox", "app") for k in keys)
    assert len(set(keys)) == 4 + 1 + 4
    # the closures set folds no source: its account rows are its own in every window
    closures = row_keys(("VIBER", 3, None, None, t) + (0,) * 6, CLOSURES)
    assert (BY_ACCOUNT, "3", "1h", 3 * 86400 + 3600) in closures and len(set(closures)) == 2 * 4
    # an event without an inbox (no data.channel) keeps its source row, its inbox empty:
    # it counts in the account,channel_type and app rows derived from it, in no inbox row
    no_inbox = row_keys(("VIBER", 3, None, 10_003, t) + (0,) * 10)
    assert (finest, "3||10003|VIBER", "1h", 3 * 86400 + 3600) in no_inbox and len(no_inbox) == 4 + 1 + 4
    assert REGISTRY.project("inbox", "3||10003|VIBER") is None
    assert REGISTRY.project("account,channel_type", "3||10003|VIBER") == "3|VIBER"
    assert REGISTRY.project("app", "3||10003|VIBER") == "10003"
    assert REGISTRY.project("inbox", "3|55||WEB|CHAT") == "3|55"
    assert REGISTRY.project("account,channel_type", "3|55||WEB|CHAT") == "3|WEB|CHAT"
    assert REGISTRY.project("app", "3|55||WEB|CHAT") is None


def test_time_to_close_from_latest_start_at_or_before_close() -> None:
    f = fold()
    f.apply(ev(CREATED, 1, 100))
    f.apply(ev(ASSIGNED, 2, 150))
    f.apply(ev(CLOSED, 3, 400))
    r = all_row(f)
    assert (r.closures, r.ttc_count, r.ttc_sum, r.ttc_min, r.ttc_max) == (1, 1, 300, 300, 300)


def test_duplicates_count_once() -> None:
    f = fold()
    assert f.apply(ev(CLOSED, 3, 400))
    assert not f.apply(ev(CLOSED, 3, 400))
    assert all_row(f).closures == 1 and f.duplicates == 1


def test_closure_without_start_counts_but_has_no_duration() -> None:
    f = fold()
    f.apply(ev(CLOSED, 3, 400))
    r = all_row(f)
    assert (r.closures, r.ttc_count) == (1, 0)


def test_late_created_adds_the_duration() -> None:
    f = fold()
    f.apply(ev(CLOSED, 3, 400))
    f.apply(ev(CREATED, 1, 100))
    r = all_row(f)
    assert (r.closures, r.ttc_count, r.ttc_sum) == (1, 1, 300)
    assert not r.recheck


def test_late_reopen_corrects_the_duration() -> None:
    f = fold()
    f.apply(ev(CREATED, 1, 100))
    f.apply(ev(CLOSED, 2, 200))
    f.apply(ev(CLOSED, 4, 1000))  # first seen with start 100: 900 s
    f.apply(ev(OPENED, 3, 700))  # late: the second closure's start is 700: 300 s
    r = all_row(f)
    assert (r.closures, r.reopens, r.ttc_count, r.ttc_sum) == (2, 1, 2, 100 + 300)
    assert r.recheck  # 900 was retracted: min/max come from the closures table
    assert f.delta.closures[4][6] == 300


def test_start_after_close_does_not_count() -> None:
    f = fold()
    f.apply(ev(CREATED, 1, 100))
    f.apply(ev(CLOSED, 2, 200))
    f.apply(ev(OPENED, 3, 500))
    r = all_row(f)
    assert (r.ttc_count, r.ttc_sum, r.reopens) == (1, 100, 1)


def test_start_at_the_close_second_counts() -> None:
    f = fold()
    f.apply(ev(CLOSED, 2, 200))
    f.apply(ev(OPENED, 3, 200))
    r = all_row(f)
    assert (r.ttc_count, r.ttc_sum, r.ttc_min) == (1, 0, 0)


def test_unread_rule() -> None:
    f = fold()
    f.apply(ev(CLOSED, 1, 100, conv=1, read=None, inbound=50))  # never read: unread
    f.apply(ev(CLOSED, 2, 100, conv=2, read=40, inbound=50))  # read before last message: unread
    f.apply(ev(CLOSED, 3, 100, conv=3, read=50, inbound=50))  # read at it: read
    f.apply(ev(CLOSED, 4, 100, conv=4, read=None, inbound=None))  # no inbound: not unread
    assert all_row(f).closed_unread == 2


def test_groups_by_the_closures_own_channel_and_account() -> None:
    f = fold()
    f.apply(ev(CLOSED, 1, 100, channel="NEW_CHANNEL_X", account=42))
    assert all_row(f, BY_CHANNEL, "NEW_CHANNEL_X").closures == 1
    assert all_row(f, BY_ACCOUNT, "42").closures == 1


def test_late_event_updates_its_old_window() -> None:
    f = fold()
    f.apply(ev(CLOSED, 1, 10 * 86400, conv=1))
    f.apply(ev(CLOSED, 2, 3 * 86400 + 5, conv=2))
    assert delta_rows(f.delta)[(BY_CHANNEL, "TELEGRAM", "1d", 3 * 86400)].closures == 1
    assert delta_rows(f.delta)[(BY_CHANNEL, "TELEGRAM", "1m", 3 * 86400)].closures == 1


def test_dedupe_memory_is_bounded_per_conversation() -> None:
    f = PartitionFold(0, max_seen=3)
    for h in range(1, 5):
        assert f.apply(ev(CREATED, h, 100 + h))
    assert not f.apply(ev(CREATED, 4, 104))  # remembered
    assert f.apply(ev(CREATED, 1, 101))  # the oldest id was forgotten: counts again
    assert f.duplicates == 1


def test_dedupe_memory_survives_encoding() -> None:
    f = fold()
    f.apply(ev(CLOSED, 9, 400))
    _, changed = f.take_changes()
    g = PartitionFold(0, changed.states(), f.watermark)
    assert not g.apply(ev(CLOSED, 9, 400))
    assert delta_rows(g.delta) == {}


@pytest.mark.parametrize(("conversations", "chunks"), [(0, 0), (1, 1), (2, 1), (3, 2), (5, 3)])
def test_changes_come_in_chunks_of_at_most_the_size_asked(conversations: int, chunks: int) -> None:
    """Each chunk is a JSON array of [account, conversation, state] (a store logs it as is);
    no conversation is lost or repeated at a chunk's edge (chunks of 2 here)."""
    f = fold()
    for conv in range(conversations):
        f.apply(ev(CREATED, conv + 1, 100, conv=conv))
    _, changes = f.take_changes(2)
    assert len(changes.chunks) == chunks and changes.count == conversations
    rows = [row for chunk in changes.chunks for row in orjson.loads(chunk)]
    assert all(len(orjson.loads(c)) <= 2 for c in changes.chunks)
    assert sorted((a, c) for a, c, _ in rows) == [(7, conv) for conv in range(conversations)]
    assert changes.states() == f.conversations()
    assert not f.take_changes()[1]  # handed over: nothing changed since


def test_take_changes_hands_over_and_restarts() -> None:
    f = fold()
    f.apply(ev(CREATED, 1, 100))
    delta, changes = f.take_changes()
    changed = changes.states()
    # a creation counts in `created` only
    assert {r.created for r in delta_rows(delta).values()} == {1} and list(changed) == [(7, 1)]
    assert not any(r.closures or r.reopens or r.ttc_count for r in delta_rows(delta).values())
    assert orjson.loads(changed[(7, 1)])[1] == [100]
    assert not delta_rows(f.delta) and not f.hot_count and f.conversations() == changed
    assert last_time_of(changed[(7, 1)]) == 100


def test_expire_forgets_idle_conversations() -> None:
    f = fold()
    f.apply(ev(CREATED, 1, 100, conv=1))
    f.apply(ev(CREATED, 2, 100_000, conv=2))
    f.take_changes()
    assert f.expire(ttl=1000) == [(7, 1)]
    assert list(f.conversations()) == [(7, 2)]


def test_expire_bounds_the_number_of_conversations() -> None:
    f = fold()
    for c in range(5):
        f.apply(ev(CREATED, c + 1, 1000 + c, conv=c))
    f.take_changes()
    assert sorted(f.expire(ttl=10**9, max_conversations=2)) == [(7, 0), (7, 1), (7, 2)]


def test_ingest_lag_per_channel_type_rolls_up_to_every_window() -> None:
    f = fold()
    f.apply(Event(CREATED, 1, 7, 1, "VIBER", 3600 + 10, None, None, (3600 + 10) * 1000 + 1500))
    f.apply(Event(CLOSED, 2, 7, 1, "VIBER", 3600 + 70, None, None, (3600 + 70) * 1000 + 500))
    f.apply(Event(CLOSED, 3, 7, 2, "VIBER", 3600 + 80))  # a v1 record: no receive time
    delta, _ = f.take_changes()
    for window, start in (("1h", 3600), ("1d", 0), ("all", 0)):
        assert delta_rows(delta)[(BY_CHANNEL, "VIBER", window, start)].lag_count == 2, window
    assert not any(r.lag_count for k, r in delta_rows(delta).items() if k[2] == "1m")  # hourly and up
    r = delta_rows(delta)[(BY_CHANNEL, "VIBER", "all", 0)]
    assert (r.lag_sum, r.lag_max) == (2000, 1500)
    assert not any(r.lag_count for k, r in delta_rows(delta).items() if k[0] == BY_ACCOUNT)


def test_conversation_keys_round_trip_small_and_huge_ids() -> None:
    from consumer.fold import conv_key, mem_key

    keys = [(0, 0), (7, 1), (2**31 - 1, 2**32 - 1), (2**31, 5), (5, 2**32), (-1, 3), (3, -1), (2**62, 2**62)]
    for key in keys:
        assert conv_key(mem_key(*key)) == key
    f = fold()
    f.apply(ev(CREATED, 1, 100, conv=2**40, account=2**33))
    f.apply(ev(CLOSED, 2, 160, conv=2**40, account=2**33))
    f.apply(ev(CLOSED, 3, 170, conv=2**32 - 1, account=2**31 - 1))
    assert all_row(f, BY_ACCOUNT, str(2**33)).ttc_sum == 60
    _, changes = f.take_changes()
    changed = changes.states()
    assert set(changed) == {(2**33, 2**40), (2**31 - 1, 2**32 - 1)}
    assert f.conversations().keys() == changed.keys()


def test_sketch_bins_equal_the_librarys_mapping() -> None:
    import random

    from consumer.fold.sketch import _MAPPING, LAG_BASE, ZERO_BIN, bin_of, lag_bin_of

    rng = random.Random(3)
    values = [1, 2, 3, 59, 60, 61, 3599, 3600, 86400, 2**31, 10**12] + [
        rng.randrange(1, 10**9) for _ in range(20_000)
    ]
    for v in values:
        assert bin_of(v) == _MAPPING.key(v), v
        assert lag_bin_of(v) == LAG_BASE + _MAPPING.key(v), v
    assert bin_of(0) == ZERO_BIN and lag_bin_of(-5) == LAG_BASE + ZERO_BIN


def test_from_record_hashes_the_event_id_like_event_hash() -> None:
    from consumer.fold.model import event_hash, from_record

    record = {
        "event": "conversation.closed", "id": "9f1c2d3e-0000-4000-8000-000000000001", "account": 7,
        "app": 3, "createdAt": 100, "receivedAtMillis": None,
        "data": {"id": 1, "channelType": "VIBER", "lastReadByAppUserAt": None, "lastInboundMessageAt": None,
                 "closedAt": 90, "channel": {"id": 55}, "messageWindowExpiresAt": 80},
    }  # fmt: skip
    e = from_record(record)
    assert e is not None and e.event_hash == event_hash(record["id"]) and e.time == 90
    assert (e.inbox, e.app, e.window_expires, e.window_expired) == (55, 3, 80, True)
    e = from_record(record | {"data": record["data"] | {"channel": None, "messageWindowExpiresAt": 90}})
    assert e is not None and (e.inbox, e.window_expired) == (None, False)  # expired: strictly before


def test_snapshot_chunks_hold_every_conversation_once() -> None:
    from consumer.fold import decode_snapshot

    f = fold()
    for conv in range(10):
        f.apply(ev(CREATED, conv, 100, conv=conv))
    f.take_changes()
    chunks = f.snapshot(chunk=3)
    assert len(chunks) == 4
    merged: dict[tuple[int, int], str] = {}
    for c in chunks:
        merged.update(decode_snapshot(c))
    assert merged == f.conversations()
    assert list(fold().snapshot()) == [b"[]"]


def test_a_snapshot_holds_the_conversations_as_they_were_when_taken() -> None:
    """The store writes a snapshot on the writer thread while the polling thread goes on
    folding: its chunks hold the state of the commit it was taken for, and read the same
    again (a retried commit reads it twice)."""
    from consumer.fold import decode_snapshot

    f = fold()
    for conv in range(5):
        f.apply(ev(CREATED, conv, 100, conv=conv))
    f.take_changes()
    then = f.conversations()
    snapshot = f.snapshot(chunk=2)
    for conv in range(3, 8):  # changed and new conversations after it
        f.apply(ev(OPENED, 10 + conv, 200, conv=conv))
    f.take_changes()
    assert f.conversations() != then
    first = [bytes(c) for c in snapshot]
    assert first == list(snapshot) and len(first) == len(snapshot) == 3
    assert snapshot[-1] == first[2]
    merged: dict[tuple[int, int], str] = {}
    for c in first:
        merged.update(decode_snapshot(c))
    assert merged == then
    with pytest.raises(IndexError):
        snapshot[3]
