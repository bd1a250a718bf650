"""Every rule of the fold at its boundary, on each implementation (the reference
consumer.fold and the compiled consumer/native where it is built): a rule moved by one
second, or one id, fails here (bench/mutants.py plants such mutants)."""

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from consumer.fold import BY_ACCOUNT, BY_CHANNEL, Fold
from consumer.fold import native as fold_native
from consumer.fold.model import ASSIGNED, CLOSED, CREATED, OPENED, SNOOZED, Event
from support.rows import delta_rows

IMPLEMENTATIONS = [k for k in (fold_native.PYTHON, fold_native.NATIVE) if k is not None]
New: Any = None  # the implementation under test: `New(partition, ...)`


@pytest.fixture(autouse=True, params=IMPLEMENTATIONS, ids=lambda k: k.name)
def implementation(request: pytest.FixtureRequest) -> Iterator[None]:
    global New
    New = request.param.new
    yield
    New = None


def ev(
    kind: int, h: int, t: int, *, conv: int = 1, read: int | None = None, inbound: int | None = None
) -> Event:
    return Event(kind, h, 7, conv, "TELEGRAM", t, read, inbound)


def fold(*events: Event, max_seen: int = 256) -> Fold:
    f: Fold = New(0, max_seen=max_seen)
    for e in events:
        f.apply(e)
    return f


def ttc(f: Fold) -> tuple[int, int, int | None, int | None]:
    """(ttc_count, ttc_sum, ttc_min, ttc_max) of the all-time channel row (after a retraction
    min and max are the store's to recompute: None here)."""
    r = delta_rows(f.delta)[(BY_CHANNEL, "TELEGRAM", "all", 0)]
    if r.recheck:
        return r.ttc_count, r.ttc_sum, None, None
    return r.ttc_count, r.ttc_sum, r.ttc_min, r.ttc_max


def durations(f: Fold) -> dict[int, int | None]:
    """Each closure's time to close, by event hash, as the fold hands it to the store."""
    return {h: c[6] for h, c in f.delta.closures.items()}


def rows(f: Fold) -> dict[Any, tuple[Any, ...]]:
    """Every row of the pending delta, as comparable values."""
    return {k: tuple(getattr(r, s) for s in r.__slots__) for k, r in delta_rows(f.delta).items()}


# -- time to close: the latest created/opened at or before closedAt -----------------------


@pytest.mark.parametrize("start", [CREATED, OPENED])
def test_a_start_in_the_close_second_before_it_counts(start: int) -> None:
    assert ttc(fold(ev(start, 1, 200), ev(CLOSED, 2, 200))) == (1, 0, 0, 0)


@pytest.mark.parametrize("start", [CREATED, OPENED])
def test_a_start_in_the_close_second_after_it_counts(start: int) -> None:
    """Arriving after the closure (late): the correction takes it too."""
    f = fold(ev(CREATED, 1, 100), ev(CLOSED, 2, 200), ev(start, 3, 200))
    assert ttc(f) == (1, 0, None, None)  # 100 s retracted, 0 s added
    assert durations(f) == {2: 0} and len(f.delta.retractions) == 1


def test_the_latest_start_wins_over_an_earlier_one() -> None:
    assert ttc(fold(ev(CREATED, 1, 100), ev(OPENED, 2, 150), ev(CLOSED, 3, 200))) == (1, 50, 50, 50)
    assert ttc(fold(ev(OPENED, 2, 150), ev(CREATED, 1, 100), ev(CLOSED, 3, 200))) == (1, 50, 50, 50)


@pytest.mark.parametrize("late", [False, True])
def test_a_start_one_second_after_the_close_does_not_count(late: bool) -> None:
    events = [ev(CREATED, 1, 100), ev(OPENED, 3, 201)]
    events.insert(1 if late else 2, ev(CLOSED, 2, 200))
    f = fold(*events)
    assert ttc(f) == (1, 100, 100, 100)
    assert durations(f) == {2: 100} and not f.delta.retractions


def test_a_late_start_at_the_current_start_changes_nothing() -> None:
    """Another created/opened in the very second of the closure's start: no retraction."""
    f = fold(ev(CREATED, 1, 100), ev(CLOSED, 2, 200), ev(OPENED, 3, 100))
    assert ttc(f) == (1, 100, 100, 100) and not f.delta.retractions


def test_a_late_start_before_the_current_start_changes_nothing() -> None:
    f = fold(ev(OPENED, 1, 150), ev(CLOSED, 2, 200), ev(CREATED, 3, 149))
    assert ttc(f) == (1, 50, 50, 50) and not f.delta.retractions


def test_a_late_start_corrects_only_the_closures_it_precedes() -> None:
    f = fold(ev(CREATED, 1, 100), ev(CLOSED, 2, 200), ev(CLOSED, 3, 300), ev(OPENED, 4, 250))
    assert durations(f) == {2: 100, 3: 50}
    assert ttc(f) == (2, 150, None, None) and len(f.delta.retractions) == 1


def test_the_range_check_measures_from_the_start_the_rule_takes() -> None:
    """A closure in the second of its latest start lasts 0 s, however far an earlier start
    lies: it is no poison record (the 64-bit check must use the same start as the rule)."""
    far, end = -(2**62), 2**63 - 1 - 86400  # end - far leaves 64 bits; end - end does not
    f = fold(ev(CREATED, 1, far), ev(OPENED, 2, end))
    assert f.apply(ev(CLOSED, 3, end))
    assert durations(f) == {3: 0}
    with pytest.raises(OverflowError):  # and measured from the earlier start it would overflow
        fold(ev(CREATED, 1, far)).apply(ev(CLOSED, 3, end))


@pytest.mark.parametrize("kind", [ASSIGNED, SNOOZED, CLOSED])
def test_other_events_are_no_start(kind: int) -> None:
    f = fold(ev(kind, 1, 100), ev(CLOSED, 2, 200))
    assert ttc(f)[0] == 0


# -- unread: an inbound message the agent had not read when closing ----------------------


@pytest.mark.parametrize(
    ("read", "inbound", "unread"),
    [
        (None, None, False),  # no inbound message
        (5, None, False),
        (None, 0, True),  # never read (inbound at 0: a time, not "none")
        (None, 50, True),
        (49, 50, True),  # read one second before the last message
        (50, 50, False),  # read in its second
        (51, 50, False),
        (0, 0, False),
    ],
)
def test_unread_at_its_boundaries(read: int | None, inbound: int | None, unread: bool) -> None:
    f = fold(ev(CLOSED, 1, 100, read=read, inbound=inbound))
    r = delta_rows(f.delta)[(BY_CHANNEL, "TELEGRAM", "all", 0)]
    assert (r.closures, r.closed_unread) == (1, int(unread))


@pytest.mark.parametrize(("expires", "expired"), [(None, False), (99, True), (100, False), (101, False)])
def test_a_window_expiring_at_the_close_had_not_expired(expires: int | None, expired: bool) -> None:
    f = fold(Event(CLOSED, 1, 7, 1, "TELEGRAM", 100, None, None, None, None, None, expires))
    r = delta_rows(f.delta)[(BY_CHANNEL, "TELEGRAM", "all", 0)]
    assert (r.closures, r.closed_window_expired) == (1, int(expired))


def test_only_closures_count_unread() -> None:
    f = fold(ev(CREATED, 1, 10, inbound=50), ev(OPENED, 2, 60, inbound=50), ev(CLOSED, 3, 100))
    r = delta_rows(f.delta)[(BY_CHANNEL, "TELEGRAM", "all", 0)]
    assert (r.closures, r.reopens, r.closed_unread) == (1, 1, 0)


# -- windows: tumbling, aligned to the epoch, [start, start + size) -----------------------


@pytest.mark.parametrize(
    ("t", "minute", "hour", "day"),
    [
        (0, 0, 0, 0),
        (59, 0, 0, 0),
        (60, 60, 0, 0),
        (3599, 3540, 0, 0),
        (3600, 3600, 3600, 0),
        (86399, 86340, 82800, 0),
        (86400, 86400, 86400, 86400),
        (-1, -60, -3600, -86400),  # before the epoch: the window below, not towards zero
        (-60, -60, -3600, -86400),
        (-61, -120, -3600, -86400),
    ],
)
def test_window_edges(t: int, minute: int, hour: int, day: int) -> None:
    f = fold(ev(CLOSED, 1, t))
    starts = {(k[0], k[2]): k[3] for k in delta_rows(f.delta)}
    for by in (BY_CHANNEL, BY_ACCOUNT):
        assert (starts[(by, "1m")], starts[(by, "1h")], starts[(by, "1d")], starts[(by, "all")]) == (
            minute, hour, day, 0,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("t", "hour"), [(0, 0), (3599, 0), (3600, 3600), (-1, -3600), (-3600, -3600), (-3601, -7200)]
)
def test_an_ingest_lag_counts_in_the_hour_of_its_event(t: int, hour: int) -> None:
    """The lag's hour floors as the windows do, before the epoch too (the compiled fold
    floors it in its own code: the windows' test does not reach it)."""
    f = fold(Event(CREATED, 1, 7, 1, "TELEGRAM", t, received_ms=t * 1000 + 250))
    assert {k: list(v[:3]) for k, v in f.delta.lags.items()} == {("TELEGRAM", hour): [1, 250, 250]}


def test_a_closure_counts_in_its_own_window_not_its_starts() -> None:
    f = fold(ev(CREATED, 1, 59), ev(CLOSED, 2, 60))
    rows = delta_rows(f.delta)
    assert rows[(BY_CHANNEL, "TELEGRAM", "1m", 60)].ttc_count == 1
    start = rows.get((BY_CHANNEL, "TELEGRAM", "1m", 0))  # the creation's own counter, if any
    assert start is None or (start.closures, start.ttc_count) == (0, 0)


# -- dedupe: the newest max_seen event ids of a conversation ------------------------------


@pytest.mark.parametrize("max_seen", [1, 2, 5])
def test_exactly_max_seen_ids_are_remembered(max_seen: int) -> None:
    f = fold(*(ev(ASSIGNED, h, 100 + h) for h in range(1, max_seen + 2)), max_seen=max_seen)
    for h in range(2, max_seen + 2):  # the newest max_seen: duplicates
        assert not f.apply(ev(ASSIGNED, h, 100 + h)), h
    assert f.apply(ev(ASSIGNED, 1, 101))  # the one before them was forgotten
    assert f.duplicates == max_seen


def test_the_default_dedupe_memory_is_256_ids() -> None:
    f = New(0)
    for h in range(1, 258):
        f.apply(ev(ASSIGNED, h, h))
    assert not f.apply(ev(ASSIGNED, 2, 2))  # 256 newest remembered
    assert f.apply(ev(ASSIGNED, 1, 1))  # the 257th newest is not


def test_dedupe_memory_is_per_conversation() -> None:
    f = fold(ev(CLOSED, 1, 100, conv=1), max_seen=1)
    assert f.apply(ev(CLOSED, 2, 100, conv=2))
    assert not f.apply(ev(CLOSED, 1, 100, conv=1))  # conversation 1 still remembers id 1


def test_a_duplicate_changes_nothing() -> None:
    f = fold(ev(CREATED, 1, 100), ev(CLOSED, 2, 200))
    before = rows(f)
    watermark = f.watermark
    assert not f.apply(ev(CLOSED, 2, 500))  # same id, other time: still the same event
    assert rows(f) == before and f.watermark == watermark


# -- expiry: idle for more than ttl seconds of event time, then the cap -------------------


def test_expiry_keeps_a_conversation_idle_exactly_ttl() -> None:
    f = fold(ev(CREATED, 1, 1000, conv=1), ev(CREATED, 2, 999, conv=2), ev(CREATED, 3, 2000, conv=3))
    f.take_changes()
    assert f.expire(ttl=1000) == [(7, 2)]  # 1001 s idle: gone; 1000 s: kept
    assert sorted(f.conversations()) == [(7, 1), (7, 3)]


def test_expiry_measures_idleness_from_a_conversations_newest_event() -> None:
    f = fold(ev(CREATED, 1, 10, conv=1), ev(CLOSED, 2, 1500, conv=1), ev(CREATED, 3, 2000, conv=2))
    f.take_changes()
    assert f.expire(ttl=600) == []  # conversation 1 last heard of at 1500, not 10


def test_the_cap_keeps_exactly_max_conversations() -> None:
    f = fold(*(ev(CREATED, c, 1000 + c, conv=c) for c in range(1, 6)))
    f.take_changes()
    assert f.expire(ttl=10**9, max_conversations=5) == []
    assert f.expire(ttl=10**9, max_conversations=4) == [(7, 1)]
    assert len(f) == 4


def test_an_expired_conversation_forgets_its_ids() -> None:
    f = fold(ev(CREATED, 1, 100, conv=1), ev(CREATED, 2, 100_000, conv=2))
    f.take_changes()
    f.expire(ttl=1000)
    assert f.apply(ev(CREATED, 1, 100, conv=1))  # counted again: the documented cost of expiry


# -- first closes: the earliest closure of a conversation (time, then event id) -------------


def closed(h: int, t: int, event_id: str, *, conv: int = 1, inbox: int | None = None) -> Event:
    return Event(CLOSED, h, 7, conv, "TELEGRAM", t, inbox=inbox, event_id=event_id)


def first_closes(f: Fold, window: str = "all", start: int = 0, by: str = BY_CHANNEL) -> int:
    r = delta_rows(f.delta).get((by, "TELEGRAM" if by == BY_CHANNEL else "7", window, start))
    return 0 if r is None else r.first_closes


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_a_same_second_close_with_the_smaller_id_is_the_first(order: tuple[int, int]) -> None:
    events = [closed(1, 100, "evt-b"), closed(2, 100, "evt-a")]
    f = fold(*(events[i] for i in order))
    assert first_closes(f) == 1
    assert states_first(f) == [100, "evt-a"]  # whatever the arrival order


def states_first(f: Fold) -> list[Any]:
    f.take_changes()
    (state,) = f.conversations().values()
    first: list[Any] = orjson.loads(state)[4]
    return first[:2]


def test_a_later_close_is_not_a_first_close() -> None:
    f = fold(closed(1, 100, "evt-b"), closed(2, 101, "evt-a"))
    assert first_closes(f) == 1 and states_first(f) == [100, "evt-b"]


def test_a_late_earlier_close_retracts_the_first_from_its_window() -> None:
    f = fold(closed(1, 7200, "evt-a"))
    f.take_changes()
    f.apply(closed(2, 3599, "evt-z"))  # an hour earlier: a different 1-hour window
    assert first_closes(f, "1h", 7200) == -1  # the old first close taken back from its row
    assert first_closes(f, "1h", 0) == 1
    assert first_closes(f) == 0  # all time: one first close, as before
    assert first_closes(f, "1h", 7200, BY_ACCOUNT) == -1


def test_a_duplicate_close_counts_no_first_close_again() -> None:
    f = fold(closed(1, 100, "evt-a"), closed(1, 100, "evt-a"), closed(1, 50, "evt-a"))
    assert first_closes(f) == 1 and f.duplicates == 2


def test_a_retracted_first_close_keeps_its_own_inbox() -> None:
    f = fold(closed(1, 200, "evt-a", inbox=5), closed(2, 100, "evt-b", inbox=6))
    got = {k: r.first_closes for k, r in delta_rows(f.delta).items() if k[0] == "inbox" and k[2] == "all"}
    assert got == {("inbox", "7|5", "all", 0): 0, ("inbox", "7|6", "all", 0): 1}


def test_a_state_from_before_first_closes_never_retracts_its_uncounted_first() -> None:
    """An older store's conversation (4 items: no first close kept): its earliest closure is
    its first, never counted; a later closure is none, an earlier one counts alone."""
    old = {(7, 1): '[300,[],[[11,300,"TELEGRAM",null]],[11]]'}
    f: Fold = New(0, old)
    f.apply(closed(2, 400, "evt-later"))
    assert first_closes(f) == 0
    f.apply(closed(3, 300, "evt-same-second"))  # the old one's id is unknown: it stays first
    assert first_closes(f) == 0
    f.apply(closed(4, 200, "evt-earlier"))
    assert first_closes(f) == 1
    assert [r.first_closes for r in delta_rows(f.delta).values() if r.first_closes < 0] == []


# -- time to first assignment: the earliest assignment at or after the earliest created ----


def created(h: int, t: int, *, conv: int = 1) -> Event:
    return Event(CREATED, h, 7, conv, "TELEGRAM", t, event_id=f"c{h}")


def assigned(h: int, t: int, event_id: str = "", *, conv: int = 1, inbox: int | None = None) -> Event:
    return Event(ASSIGNED, h, 7, conv, "TELEGRAM", t, inbox=inbox, event_id=event_id or f"a{h}")


def ttfa(f: Fold, window: str = "all", start: int = 0) -> tuple[int, int, int | None, int | None]:
    """(count, sum, min, max) of time to first assignment in a channel row (min and max
    None after a retraction: the store's to recompute)."""
    r = delta_rows(f.delta).get((BY_CHANNEL, "TELEGRAM", window, start))
    if r is None:
        return 0, 0, None, None
    if r.recheck_ttfa:
        return r.ttfa_count, r.ttfa_sum, None, None
    return r.ttfa_count, r.ttfa_sum, r.ttfa_min, r.ttfa_max


@pytest.mark.parametrize("late", [False, True])
def test_an_assignment_at_the_created_second_counts_zero(late: bool) -> None:
    events = [created(1, 100), assigned(2, 100)]
    f = fold(*(reversed(events) if late else events))
    assert ttfa(f) == (1, 0, 0, 0)


def test_an_assignment_a_second_before_creation_does_not_count() -> None:
    f = fold(created(1, 100), assigned(2, 99))
    assert ttfa(f) == (0, 0, None, None)
    f.apply(assigned(3, 101))
    assert ttfa(f) == (1, 1, 1, 1)


def test_the_earliest_assignment_counts_in_its_own_window() -> None:
    f = fold(created(1, 3000), assigned(2, 3700), assigned(3, 3650), assigned(4, 4000))
    assert ttfa(f) == (1, 650, None, None)  # 3700 counted first, then taken back for 3650
    assert ttfa(f, "1h", 3600) == (1, 650, None, None)
    assert ttfa(f, "1h", 0) == (0, 0, None, None)
    assert f.delta.first_assignments == {(7, 1): (7, 1, 0, "TELEGRAM", None, None, 3650, 650)}


def test_without_a_created_event_no_assignment_counts() -> None:
    f = fold(assigned(1, 100), assigned(2, 200))
    assert ttfa(f) == (0, 0, None, None) and f.delta.first_assignments == {}


def test_a_late_created_corrects_the_duration() -> None:
    f = fold(created(1, 100), assigned(2, 3700))
    f.take_changes()
    f.apply(created(3, 40))  # earlier: the same assignment now waited 3660 s
    assert ttfa(f, "1h", 3600) == (0, 3660 - 3600, None, None)  # -3600 then +3660, same row
    assert f.delta.first_assignments == {(7, 1): (7, 1, 0, "TELEGRAM", None, None, 3700, 3660)}


def test_a_late_created_makes_an_earlier_assignment_the_first() -> None:
    f = fold(created(1, 100), assigned(2, 50, inbox=3), assigned(3, 3700, inbox=4))
    f.take_changes()
    f.apply(created(4, 50))  # the assignment at 50 is now at the created time: it counts
    assert ttfa(f, "1h", 3600) == (-1, -3600, None, None)
    assert ttfa(f, "1h", 0) == (1, 0, 0, 0)
    inboxes = {
        k[1]: r.ttfa_count for k, r in delta_rows(f.delta).items() if k[0] == "inbox" and k[2] == "all"
    }
    assert inboxes == {"7|3": 1, "7|4": -1}  # each counted in its own assignment's inbox


def test_a_later_created_changes_nothing() -> None:
    f = fold(created(1, 100), assigned(2, 150))
    f.take_changes()
    f.apply(created(3, 120))
    f.apply(created(4, 100))
    assert ttfa(f) == (0, 0, None, None) and f.delta.first_assignments == {}


def test_same_second_assignments_count_the_smaller_id() -> None:
    f = fold(created(1, 100), assigned(2, 150, "evt-b", inbox=1), assigned(3, 150, "evt-a", inbox=2))
    inboxes = {
        k[1]: r.ttfa_count for k, r in delta_rows(f.delta).items() if k[0] == "inbox" and k[2] == "all"
    }
    assert inboxes == {"7|1": 0, "7|2": 1}
    assert ttfa(f) == (1, 50, None, None)


def test_a_duplicate_assignment_counts_once() -> None:
    f = fold(created(1, 100), assigned(2, 150), assigned(2, 150), created(1, 100))
    assert ttfa(f) == (1, 50, 50, 50) and f.duplicates == 2


def test_a_fold_of_the_closures_set_keeps_a_full_state_as_it_found_it() -> None:
    """A conversation stored by a fold of the full set, folded by one of the closures set
    (a deployment going back): its first close and assignments are kept, not dropped."""
    from consumer.fold.registry import CLOSURES

    full = (
        '[300,[100],[[11,300,"TELEGRAM",100,5,null]],[11],'
        '[300,"evt-x",11],100,[[150,"a1","TELEGRAM",5,null]]]'
    )
    f: Fold = New(0, {(7, 1): full}, registry=CLOSURES)
    f.apply(closed(2, 200, "evt-earlier"))
    f.take_changes()
    state = orjson.loads(f.conversations()[(7, 1)])
    assert state[4:] == [[300, "evt-x", 11], 100, [[150, "a1", "TELEGRAM", 5, None]]]
    assert len(state[2]) == 2
