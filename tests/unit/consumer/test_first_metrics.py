"""first_closes and time to first assignment, through a real SQLite store, against the
brute-force oracle (tests/support/truth.py): a generated stream with duplicates, late
events (late earlier closures, late created events) and same-second steps, folded by
each implementation in small commits, so retractions cross commits and the store's
min/max rechecks (first_assignments) run. And a store written before these metrics."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.fold import Changes
from consumer.fold import native as fold_native
from consumer.fold.delta import Delta
from consumer.fold.model import from_record
from consumer.fold.registry import CLOSURES, REGISTRY
from consumer.fold.windows import ALL_START
from consumer.store import LIVE, PartitionCommit
from consumer.store.sqlite import SqliteStore
from support.firsts import check_against_truth

IMPLEMENTATIONS = [k for k in (fold_native.PYTHON, fold_native.NATIVE) if k is not None]


def test_the_reference_fold_holds_first_closes_and_time_to_first_assignment_exactly(tmp_path: Path) -> None:
    """The reference fold; the store suite (test_store.py, on both stores) runs the one
    `choose()` picks, the compiled one where it is built."""
    store = SqliteStore(str(tmp_path / "m.db"))
    check_against_truth(store, fold_native.PYTHON)
    store.close()


@pytest.mark.parametrize("kind", IMPLEMENTATIONS, ids=lambda k: k.name)
def test_a_store_written_before_these_metrics_gains_them(kind: fold_native.FoldKind, tmp_path: Path) -> None:
    """A store of the closures set (no first_closes or ttfa columns, conversation states of
    4 items) with its first_assignments table dropped, as a release before them wrote it:
    opened with the full set it gains the columns and the table, and its conversations go
    on: an older conversation's first close is never counted (nor retracted), a new one's is."""
    path = str(tmp_path / "m.db")
    old = SqliteStore(path, registry=CLOSURES)
    old.db.execute("DROP TABLE first_assignments")
    f = kind.new(0, registry=CLOSURES)
    f.apply(event("conversation.created", "c1", 1, 100))
    f.apply(event("conversation.closed", "x1", 1, 200))
    delta, changed = f.take_changes()
    old.commit("t", [PartitionCommit(0, delta, 2, f.watermark, changed)])
    old.close()

    new = SqliteStore(path)
    state = new.load_partition("t", 0)
    assert [len(orjson.loads(s)) for s in state.conversations.values()] == [4]  # no first close kept
    g = kind.new(0, state.conversations, state.watermark, registry=REGISTRY)
    g.apply(event("conversation.closed", "x2", 1, 300))  # later: no first close
    g.apply(event("conversation.created", "c2", 2, 100))
    g.apply(event("conversation.assigned", "a2", 2, 160))
    g.apply(event("conversation.closed", "x3", 2, 400))
    g.apply(event("conversation.created", "c3", 2, 40))  # late: the wait becomes 120 s
    delta, changed = g.take_changes()
    new.commit("t", [PartitionCommit(0, delta, 7, g.watermark, changed)])
    (row,) = new.query("channel_type", "all")
    assert (row.closures, row.first_closes) == (3, 1)
    assert (row.ttfa_count, row.ttfa_sum, row.ttfa_min, row.ttfa_max) == (1, 120, 120, 120)
    assert new.db.execute("SELECT account, conversation, ttfa FROM first_assignments").fetchall() == [
        (7, 2, 120)
    ]
    assert row.window_start == ALL_START
    new.close()


def event(name: str, event_id: str, conversation: int, t: int) -> Any:
    verb = name.split(".")[1]
    return from_record(
        {
            "event": name, "id": event_id, "account": 7, "app": 1, "createdAt": t, "receivedAtMillis": None,
            "data": {
                "id": conversation, "channelType": "TELEGRAM", "lastReadByAppUserAt": None,
                "lastInboundMessageAt": None, "messageWindowExpiresAt": None, f"{verb}At": t,
                "channel": {"id": 3},
            },
        }
    )  # fmt: skip


@pytest.mark.parametrize("kind", IMPLEMENTATIONS, ids=lambda k: k.name)
def test_states_stored_before_the_gauges_count_from_their_next_event(kind: fold_native.FoldKind) -> None:
    """A conversation state of 7 items (the full set before the gauges) or 4 (the closures
    set) loads; it counts in no gauge until its next event, then at that event's key (with
    a kept assignment: not unassigned), and its state gains `latest`."""
    from consumer.fold.model import KINDS, Event, event_hash

    old = {
        (7, 1): '[100,[100],[],[1],null,100,[[105,"x","TELEGRAM",3,9]]]',  # created, assigned
        (7, 2): "[100,[100],[],[2]]",
    }
    fold = kind.new(0, old, 100, registry=REGISTRY)
    for conv in (1, 2):
        opened = f"o{conv}"
        e = Event(KINDS["conversation.opened"], event_hash(opened), 7, conv, "SMS", 200, inbox=3, app=9)
        fold.apply(e._replace(event_id=opened))
    delta, changed = fold.take_changes()
    assert delta.gauges == {("SMS", 7, 3, 9): [2, 1, 0]}
    assert {k: orjson.loads(blob)[7] for k, blob in changed.states().items()} == {
        (7, c): [200, f"o{c}", KINDS["conversation.opened"], "SMS", 3, 9] for c in (1, 2)
    }


@pytest.mark.parametrize("kind", IMPLEMENTATIONS, ids=lambda k: k.name)
def test_an_assignment_redelivered_after_its_id_was_forgotten_is_not_kept_twice(
    kind: fold_native.FoldKind,
) -> None:
    """With the dedupe memory at 1 id, an assignment's redelivery after another event comes
    back as new: it equals the counted first assignment (same time and id), so it can never
    count, and neither fold keeps a second copy of it (the hypothesis comparison of the two
    folds found the reference keeping one)."""
    fold = kind.new(0, max_seen=1, registry=REGISTRY)
    for e in (event("conversation.created", "c", 1, 100), event("conversation.assigned", "a", 1, 160)):
        fold.apply(e)
    fold.apply(event("conversation.opened", "o", 1, 170))  # the memory now holds "o" only
    assert fold.apply(event("conversation.assigned", "a", 1, 160))  # taken as new
    _, changed = fold.take_changes()
    assigns = orjson.loads(changed.states()[(7, 1)])[6]
    assert [(a[0], a[1]) for a in assigns] == [(160, "a")]


def test_a_backlog_written_before_its_rows_kept_their_seq_gains_it(tmp_path: Path) -> None:
    """A store whose backlog rows have no seq (a release before the metrics topic carried
    the gauges): opened, its rows read as before, and a key a commit changes is published
    with its whole value (the old rows' seq is 0: published once changed)."""
    path = str(tmp_path / "m.db")
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE backlog (by TEXT NOT NULL, key TEXT NOT NULL, partition INTEGER NOT NULL, "
        "open_now INTEGER NOT NULL, unassigned_now INTEGER NOT NULL, snoozed_now INTEGER NOT NULL, "
        "PRIMARY KEY (by, key, partition)) WITHOUT ROWID"
    )
    db.execute("INSERT INTO backlog VALUES ('account', '7', 0, 2, 1, 0)")
    db.commit()
    db.close()
    store = SqliteStore(path)
    assert store.backlog("account")[1] == [("7", 2, 1, 0)]
    assert store.changed_since(store.published_marks([0]))[0] == []
    delta = Delta()
    delta.add_gauges(("TELEGRAM", 7, None, None), (1, 0, 0), 1)
    store.commit("t", [PartitionCommit(0, delta, 1, 0, Changes())])
    assert store.backlog("account")[1] == [("7", 3, 1, 0)]
    rows, _ = store.changed_since(store.published_marks([0]))
    assert {(r.by, r.key, r.window, r.open_now, r.unassigned_now) for r in rows if r.by == "account"} == {
        ("account", "7", LIVE, 3, 1)
    }
    store.close()
