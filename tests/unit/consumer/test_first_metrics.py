"""first_closes and time to first assignment, through a real SQLite store, against the
brute-force oracle (tests/support/truth.py): a generated stream with duplicates, late
events (late earlier closures, late created events) and same-second steps, folded by
each implementation in small commits, so retractions cross commits and the store's
min/max rechecks (first_assignments) run. And a store written before these metrics."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.fold import native as fold_native
from consumer.fold.delta import LAYOUT
from consumer.fold.model import READER_SCHEMA, from_record
from consumer.fold.registry import CLOSURES, REGISTRY
from consumer.fold.windows import ALL_START
from consumer.store import PartitionCommit
from consumer.store.sqlite import SqliteStore
from convmetrics.generate import GenerateConfig, generate_webhooks
from producer.intake import Prepared, prepare
from schemas import CONVERSATION_EVENT, Codec, subject
from support.truth import BY, WINDOWS, compute_truth, distribution, select, within_relative_error

IMPLEMENTATIONS = [k for k in (fold_native.PYTHON, fold_native.NATIVE) if k is not None]
PARTITIONS = 2


def webhooks() -> list[dict[str, Any]]:
    cfg = GenerateConfig(
        seed=15, events=4000, accounts=12, conversations=700, duplicate_rate=0.05, late_rate=0.2,
        same_second_rate=0.05, span=2 * 86_400,
    )  # fmt: skip
    return list(generate_webhooks(cfg))


def fold_into(store: SqliteStore, kind: fold_native.FoldKind, hooks: list[dict[str, Any]]) -> dict[str, int]:
    """Fold the webhooks (encoded as the gateway does, decoded as the consumer does) into
    the store, 150 records a commit; how many retractions of each kind the folds made."""
    writer = Codec(subject(CONVERSATION_EVENT))
    reader = Codec(subject(CONVERSATION_EVENT), reader_schema=READER_SCHEMA)
    prepared = [p for h in hooks if isinstance(p := prepare(h, writer, received_at_millis=0), Prepared)]
    folds = {p: kind.new(p, registry=REGISTRY) for p in range(PARTITIONS)}
    epochs = {p: store.claim("t", p, "test") for p in range(PARTITIONS)}
    offsets = [0] * PARTITIONS
    fc_at, fa_at = LAYOUT.position("first_closes"), LAYOUT.position("time_to_first_assignment")
    taken = {"first_closes": 0, "ttfa": 0}
    for i in range(0, len(prepared), 150):
        batch = prepared[i : i + 150]
        records = reader.decode_many([p.value for p in batch])
        for p, rec in zip(batch, records, strict=True):
            part = zlib.crc32(p.key) % PARTITIONS
            assert isinstance(rec, dict)
            ev = from_record(rec)
            if ev is not None:
                folds[part].apply(ev)
            offsets[part] += 1
        commits = []
        for part, f in folds.items():
            delta, changed = f.take_changes()
            taken["first_closes"] += sum(1 for fact in delta.facts if fact[fc_at] < 0)
            taken["ttfa"] += sum(1 for fact in delta.retractions if fact[fa_at] == -1)
            commits.append(
                PartitionCommit(part, delta, offsets[part], f.watermark, changed, [], epochs[part])
            )
        store.commit("t", commits)
    return taken


@pytest.mark.parametrize("kind", IMPLEMENTATIONS, ids=lambda k: k.name)
def test_the_store_holds_first_closes_and_time_to_first_assignment_exactly(
    kind: fold_native.FoldKind, tmp_path: Path
) -> None:
    hooks = webhooks()
    store = SqliteStore(str(tmp_path / "m.db"))
    taken = fold_into(store, kind, hooks)
    # the stream did reach the rules' corners: late earlier closes and late corrections
    assert taken["first_closes"] > 0 and taken["ttfa"] > 0, taken
    truth = compute_truth(hooks)
    waits = [
        w
        for (by, _, win, _), r in truth.items()
        if by == "account" and win == "all"
        for w in r.assignment_waits
    ]
    assert 0 in waits and max(waits) > 3600  # an assignment at the created second counts
    checked = 0
    for by in BY:
        for window in WINDOWS:
            if window == "1m" and by not in ("channel_type", "account"):
                continue
            want = select(truth, by, window)
            got = {(r.key, None if window == "all" else r.window_start): r for r in store.query(by, window)}
            assert set(got) == set(want), (by, window)
            for k, row in want.items():
                r = got[k]
                assert r.first_closes == row.first_closes, (by, window, k)
                e = distribution(row.assignment_waits)
                stats = (r.ttfa_count, r.ttfa_sum, r.ttfa_min, r.ttfa_max)
                assert stats == (e["count"], e["sum"], e["min"], e["max"]), (by, window, k)
                qs = r.quantiles(REGISTRY.metric("time_to_first_assignment"))
                if e["count"]:
                    assert qs is not None
                    for q, exact in zip(qs, (e["p50"], e["p90"], e["p99"]), strict=True):
                        # the API clamps into [min, max]; the sketch alone is within 1%
                        assert within_relative_error(min(max(q, e["min"]), e["max"]), exact), (
                            by,
                            k,
                            q,
                            exact,
                        )
                checked += 1
    assert checked > 1000
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
