"""Test-only: a generated stream where first_closes and time to first assignment meet their
corners (duplicates, late earlier closures, late created events, same-second steps),
folded into a store in small commits, and the store's rows held to the oracle
(tests/support/truth.py). Used on SQLite (tests/unit) and PostgreSQL (tests/integration)."""

from __future__ import annotations

import zlib
from typing import Any

from consumer.fold.delta import LAYOUT
from consumer.fold.model import READER_SCHEMA, from_record
from consumer.fold.native import FoldKind
from consumer.fold.registry import REGISTRY
from consumer.store import PartitionCommit
from convmetrics.generate import GenerateConfig, generate_webhooks
from producer.intake import Prepared, prepare
from schemas import CONVERSATION_EVENT, Codec, subject
from support.truth import (
    BY,
    WINDOWS,
    Truth,
    compute_truth,
    distribution,
    select,
    sla_buckets,
    within_relative_error,
)

PARTITIONS = 2


def webhooks() -> list[dict[str, Any]]:
    cfg = GenerateConfig(
        seed=15, events=4000, accounts=12, conversations=700, duplicate_rate=0.05, late_rate=0.2,
        same_second_rate=0.05, span=2 * 86_400,
    )  # fmt: skip
    return list(generate_webhooks(cfg))


def fold_into(
    store: Any, kind: FoldKind, hooks: list[dict[str, Any]], topic: str = "events"
) -> dict[str, int]:
    """Fold the webhooks (encoded as the gateway does, decoded as the consumer does) into
    the store, 150 records a commit; how many retractions of each kind the folds made."""
    writer = Codec(subject(CONVERSATION_EVENT))
    reader = Codec(subject(CONVERSATION_EVENT), reader_schema=READER_SCHEMA)
    prepared = [p for h in hooks if isinstance(p := prepare(h, writer, received_at_millis=0), Prepared)]
    folds = {p: kind.new(p, registry=REGISTRY) for p in range(PARTITIONS)}
    epochs = {p: store.claim(topic, p, "test") for p in range(PARTITIONS)}
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
        store.commit(topic, commits)
    return taken


def check_against_truth(store: Any, kind: FoldKind) -> None:
    """Fold the stream into the store; every row of every grouping and window holds
    first_closes, time to first assignment (count, sum, min, max exact, quantiles within
    1%) and time to close's SLA buckets as the oracle."""
    hooks = webhooks()
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
    ttfa, ttc = REGISTRY.metric("time_to_first_assignment"), REGISTRY.metric("time_to_close")
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
                buckets = {name: r.values[col] for name, col, _, _ in ttc.bucket_columns}
                assert buckets == sla_buckets(row.durations), (by, window, k)
                e = distribution(row.assignment_waits)
                stats = (r.ttfa_count, r.ttfa_sum, r.ttfa_min, r.ttfa_max)
                assert stats == (e["count"], e["sum"], e["min"], e["max"]), (by, window, k)
                qs = r.quantiles(ttfa)
                assert (qs is None) == (e["count"] == 0), (by, window, k)
                if qs is not None:
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
    check_backlog(store, truth)


def check_backlog(store: Any, truth: Truth) -> None:
    """The store's gauges of every grouping equal the oracle's backlog, and its newest
    event time the oracle's; the stream has open, unassigned and snoozed conversations."""
    for by in BY:
        as_of, rows = store.backlog(by)
        assert as_of == truth.as_of
        got = {key: (o, u, s) for key, o, u, s in rows}
        want = {key: v for (b, key), v in truth.backlog.items() if b == by}
        assert got == want, (by, sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))[:5])
    totals = [sum(v[i] for (b, _), v in truth.backlog.items() if b == "channel_type") for i in range(3)]
    assert all(n > 0 for n in totals), totals
