"""The compiled fold (consumer/native) equals the reference one (consumer.fold): the same
batch results, deltas, conversation states, snapshots and expiries on generated streams
(duplicates, late events, unknown channel types, poison records), and each reads the
other's state."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.fold import Delta, Fold, decode_snapshot
from consumer.fold import native as fold_native
from consumer.fold.delta import CLOSURE_EVENT_ID
from consumer.fold.model import KINDS, Event, event_hash
from consumer.fold.registry import CLOSURES, REGISTRY, Registry
from consumer.fold.sketch import bin_of
from consumer.store.sqlite import SqliteStore
from support import native_build
from support.rows import delta_rows
from support.streams import PARTITIONS, Msg, commit_stream, stream

NATIVE = fold_native.NATIVE
needs_native = native_build.needs("the compiled fold", NATIVE is not None)


def test_the_compiled_fold_is_built_where_rust_is() -> None:
    # `make setup` builds it wherever cargo exists: a failed build must not hide here
    if native_build.load().find_cargo() is None:
        native_build.skip_unless_built("the compiled fold (no cargo)", NATIVE is not None)
    assert NATIVE is not None, "cargo is installed but consumer._fold_native is not built: run `make setup`"
    assert fold_native.choose().name == "native"


def same_delta(a: Delta, b: Delta, registry: Registry = REGISTRY) -> None:
    assert list(a.facts) == list(b.facts)  # the compiled fold's are a Facts sequence
    assert a.closures == b.closures
    assert a.lags == b.lags
    assert a.retractions == b.retractions
    assert a.first_assignments == b.first_assignments
    assert a.gauges == b.gauges
    assert delta_rows(a, registry).keys() == delta_rows(b, registry).keys()


def run(
    kind: fold_native.FoldKind,
    msgs: list[Msg],
    records: list[object],
    batch: int,
    registry: Registry = REGISTRY,
) -> list[object]:
    """Fold the stream in batches, taking changes after each and expiring now and then;
    everything observable, in order."""
    folds: dict[int, Fold] = {p: kind.new(p, max_seen=8, registry=registry) for p in range(PARTITIONS)}
    seen: list[object] = []
    offsets: dict[int, int] = {}
    for i in range(0, len(msgs), batch):
        result = kind.apply_batch(folds, msgs[i : i + batch], records[i : i + batch], offsets)
        seen.append((result, dict(offsets)))
        for p, f in sorted(folds.items()):
            delta, changed = f.take_changes()
            seen.append((p, delta, changed.states(), f.watermark, f.duplicates, len(f)))
            if i % (batch * 3) == 0:
                seen.append(sorted(f.expire(ttl=3 * 86400, max_conversations=30)))
    for p, f in sorted(folds.items()):
        seen.append(
            (p, f.conversations(), sorted(decode_snapshot(b"".join(f.snapshot(chunk=10**9))).items()))
        )
    return seen


@needs_native
@pytest.mark.parametrize(("seed", "registry"), [(1, REGISTRY), (2, REGISTRY), (3, REGISTRY), (4, CLOSURES)])
def test_both_folds_see_the_same_on_a_generated_stream(seed: int, registry: Registry) -> None:
    """Every metric set: the full one (inbox and app kept), the closures one (neither)."""
    assert NATIVE is not None
    msgs, records = stream(3000, seed)
    python = run(fold_native.PYTHON, msgs, records, 250, registry)
    native = run(NATIVE, msgs, records, 250, registry)
    if registry is CLOSURES:  # its states keep no inbox or app: closures of 4 items
        last = python[-1]
        assert isinstance(last, tuple)
        closures = [c for blob in last[1].values() for c in orjson.loads(blob)[2]]
        assert closures and all(len(c) == 4 for c in closures)
    assert len(python) == len(native)
    folded = 0
    closed: set[int] = set()  # the closures handed to the store so far
    for a, b in zip(python, native, strict=True):
        if isinstance(a, tuple) and len(a) == 6 and isinstance(a[1], Delta):
            assert isinstance(b, tuple) and isinstance(b[1], Delta)
            same_delta(a[1], b[1], registry)
            # a closure's row carries its event id where the commit folded it; only a row
            # re-sent by a later commit (a late start corrected its ttc) may have none
            for h, row in a[1].closures.items():
                assert row[CLOSURE_EVENT_ID] is not None or h in closed, row
                assert row[CLOSURE_EVENT_ID] is None or event_hash(row[CLOSURE_EVENT_ID]) == h
            closed.update(a[1].closures)
            assert (a[0], a[2:]) == (b[0], b[2:])
            folded += len(a[1].facts)
        else:
            assert a == b
    assert folded > 500  # the stream did exercise the fold


@needs_native
def test_each_fold_resumes_from_the_others_state() -> None:
    assert NATIVE is not None
    msgs, records = stream(2000, 7)
    half = len(msgs) // 2
    whole = {p: fold_native.PYTHON.new(p) for p in range(PARTITIONS)}
    fold_native.PYTHON.apply_batch(whole, msgs, records, {})
    for f in whole.values():
        f.take_changes()
    for first, second in ((fold_native.PYTHON, NATIVE), (NATIVE, fold_native.PYTHON)):
        a = {p: first.new(p) for p in range(PARTITIONS)}
        first.apply_batch(a, msgs[:half], records[:half], {})
        for f in a.values():
            f.take_changes()
        restored = {
            "snapshot": {
                p: second.new(p, decode_snapshot(b"".join(a[p].snapshot())), a[p].watermark) for p in a
            },
            "conversations": {p: second.new(p, a[p].conversations(), a[p].watermark) for p in a},
        }
        for how, b in restored.items():
            second.apply_batch(b, msgs[half:], records[half:], {})
            for p in range(PARTITIONS):
                b[p].take_changes()
                assert b[p].conversations() == whole[p].conversations(), (first.name, second.name, how, p)
                assert b[p].watermark == whole[p].watermark


times = st.integers(min_value=-200, max_value=400)
near = st.integers(min_value=0, max_value=3)  # read / inbound times: often equal
events = st.lists(
    st.tuples(
        st.sampled_from(sorted(KINDS.values())),
        st.integers(1, 30),
        st.integers(0, 2),
        st.integers(0, 3),
        st.sampled_from(["VIBER", "WHATSAPP", "NEW_ONE", "ünï"]),
        times,
        st.none() | near,
        st.none() | near,
        st.none() | st.integers(-(10**6), 10**9),
        st.none() | st.integers(0, 2),  # inbox
        st.none() | st.integers(0, 1),  # app
        st.none() | times,  # messageWindowExpiresAt
        st.sampled_from(["", "a", "b", "c", "é"]),  # event id: ties of first closes and assignments
    ),
    max_size=60,
)


@needs_native
@settings(max_examples=300, deadline=None)
@given(events, st.integers(1, 5))
def test_both_folds_agree_event_by_event(stream: list[tuple[int, ...]], max_seen: int) -> None:
    assert NATIVE is not None
    py, nat = fold_native.PYTHON.new(0, max_seen=max_seen), NATIVE.new(0, max_seen=max_seen)
    for i, e in enumerate(stream):
        ev = Event(*e)  # type: ignore[arg-type]
        assert py.apply(ev) == nat.apply(ev)
        if i % 7 == 6:
            (d1, c1), (d2, c2) = py.take_changes(), nat.take_changes()
            same_delta(d1, d2)
            assert c1.states() == c2.states() and len(c1) == len(c2)
        if i % 13 == 12:  # forgetting conversations takes their gauges back alike
            (d1, c1), (d2, c2) = py.take_changes(), nat.take_changes()
            same_delta(d1, d2)
            gone = sorted(py.expire(ttl=150, max_conversations=4))
            assert gone == sorted(nat.expire(ttl=150, max_conversations=4))
    same_delta(py.delta, nat.delta)
    assert (py.duplicates, py.watermark) == (nat.duplicates, nat.watermark)
    py.take_changes()
    nat.take_changes()
    assert py.conversations() == nat.conversations()


@needs_native
def test_bins_and_digests_are_the_references() -> None:
    import random

    from consumer.fold.model import event_hash

    assert NATIVE is not None
    native = fold_native.native
    assert native is not None
    rng = random.Random(5)
    for v in [
        -3,
        0,
        1,
        2,
        3,
        59,
        60,
        3599,
        86400,
        2**31,
        10**12,
        *(rng.randrange(1, 10**10) for _ in range(50_000)),
    ]:
        assert native.bin_of(v) == bin_of(v), v
    for i in range(2000):
        text = f"evt-{i}-{rng.random()}-é漢"
        assert native.event_hash(text) == event_hash(text)


@needs_native
def test_sqlite_store_holds_the_same_either_way(tmp_path: Path) -> None:
    """Committed through the reference fold or the compiled one: the same tables."""
    assert NATIVE is not None
    msgs, records = stream(4000, 9)
    tables = []
    for kind in (fold_native.PYTHON, NATIVE):
        store = SqliteStore(str(tmp_path / f"{kind.name}.db"))
        commit_stream(store, kind, msgs, records, 500)
        tables.append(
            [
                store.db.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3, 4, 5").fetchall()
                for t in ("metric_rows", "closures")
            ]
        )
        store.close()
    assert tables[0] == tables[1]
    assert len(tables[0][0]) > 1000


@needs_native
def test_expiry_beyond_the_cap_breaks_ties_alike() -> None:
    assert NATIVE is not None
    gone = []
    for kind in (fold_native.PYTHON, NATIVE):
        f = kind.new(0)
        for c in (5, 3, 9, 1, 7):  # all idle since the same second
            f.apply(Event(KINDS["conversation.created"], c, 2, c, "VIBER", 1000))
        f.take_changes()
        gone.append(sorted(f.expire(ttl=10**9, max_conversations=2)))
    assert gone[0] == gone[1] == [(2, 1), (2, 3), (2, 5)]


@needs_native
def test_the_compiled_fold_refuses_unreadable_state() -> None:
    assert NATIVE is not None
    f = NATIVE.new(0, {(1, 1): "garbage"})
    with pytest.raises(ValueError, match="not a stored conversation"):
        f.expire(ttl=10)


def record(kind: str, event_id: str, t: int, received_ms: int | None = None) -> dict[str, object]:
    """A decoded record (the consumer's projection) of conversation 1 of account 1."""
    times = {f: None for f in ("createdAt", "openedAt", "closedAt", "snoozedAt", "assignedAt")}
    times[kind.split(".")[1] + "At"] = t
    data = {
        "id": 1,
        "channelType": "VIBER",
        "lastReadByAppUserAt": None,
        "lastInboundMessageAt": None,
        "messageWindowExpiresAt": None,
        "channel": {"id": 3},
    }
    return {"event": kind, "id": event_id, "account": 1, "app": 2, "createdAt": 0,
            "receivedAtMillis": received_ms, "data": data | times}  # fmt: skip


@pytest.mark.parametrize(
    "kind", [k for k in (fold_native.PYTHON, NATIVE) if k is not None], ids=lambda k: k.name
)
def test_events_whose_times_overflow_64_bits_are_poison_records(kind: fold_native.FoldKind) -> None:
    f = kind.new(0)
    assert f.apply(Event(KINDS["conversation.created"], 1, 1, 1, "VIBER", -(2**62)))
    with pytest.raises(OverflowError):  # a duration beyond 64 bits: the store could not hold it
        f.apply(Event(KINDS["conversation.closed"], 2, 1, 1, "VIBER", 2**63 - 1))
    assert f.watermark == 0 and len(f.delta.facts) == 1  # refused before it changed anything
    records = [
        record("conversation.closed", "a", 2**63 - 1),  # duration overflows
        record("conversation.opened", "b", 2**61, received_ms=2**62),  # lag: t * 1000 overflows
        record("conversation.closed", "c", 100),
    ]
    offsets: dict[int, int] = {}
    result = kind.apply_batch({0: f}, [Msg(0, i) for i in range(3)], records, offsets)
    assert result == ([0, 0, 1, 0, 0], 0, 0, [0, 1]) and offsets == {0: 3}


@needs_native
def test_ever_new_channel_types_do_not_grow_the_compiled_fold_without_bound() -> None:
    assert NATIVE is not None
    py, nat = fold_native.PYTHON.new(0), NATIVE.new(0)
    t = 1_700_000_000
    interned = []
    for round_ in range(3):
        for i in range(2500):  # a closure on a channel type never seen before, then a known one
            for n, ch in enumerate((f"NEW_{round_}_{i}", "WHATSAPP")):
                ev = Event(KINDS["conversation.closed"], round_ * 10**6 + i * 2 + n, 1, i, ch, t + i)
                assert py.apply(ev) == nat.apply(ev)
        (d1, c1), (d2, c2) = py.take_changes(), nat.take_changes()
        same_delta(d1, d2)
        assert c1.states() == c2.states() and len(c1) == len(c2)
        interned.append(nat.channel_names)
    # past the cap (4096) at a take it starts afresh (conversations read back from their
    # state intern their old closures' names again: round 3 passes it too)
    assert interned[:2] == [2501, 0] and max(interned) <= 4096
    assert py.conversations() == nat.conversations()


#: the production registry with a distribution the compiled fold does not emit (a metric
#: added to the registry before its rule is in consumer/native), then the fold module
#: imported, as `consume` would
MISMATCHED = """
import dataclasses, sys
import consumer.fold.delta as delta
delta.LAYOUT = dataclasses.replace(delta.LAYOUT, fields=(*delta.LAYOUT.fields, "ttx_n", "ttx", "ttx_bin"))
try:
    from consumer.fold import native
except Exception as exc:
    print(type(exc).__name__, exc)
else:
    from consumer.store.sqlite import SqliteStore
    print("native" if native.native else "reference", SqliteStore(sys.argv[1]).bins_functions)
"""


@needs_native
@pytest.mark.parametrize(("fold", "says"), [("", "ConfigError"), ("python", "reference python")])
def test_a_registry_the_compiled_fold_cannot_fold_runs_the_reference_when_asked(
    fold: str, says: str, tmp_path: Path
) -> None:
    """docs/metrics.md, adding a metric: until the compiled fold emits the registry's facts it
    is refused (naming CONVMETRICS_FOLD=python), and CONVMETRICS_FOLD=python runs the
    reference for all of it (the import refused that too, so nothing ran)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != fold_native.ENV} | (
        {fold_native.ENV: fold} if fold else {}
    )
    run = subprocess.run(
        [sys.executable, "-c", MISMATCHED, str(tmp_path / "m.db")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith(says), run.stdout
    if not fold:
        assert "CONVMETRICS_FOLD=python runs the reference fold meanwhile" in run.stdout


@pytest.mark.parametrize(
    "kind", [k for k in (fold_native.PYTHON, NATIVE) if k is not None], ids=lambda k: k.name
)
def test_an_event_after_the_ceiling_is_a_poison_record_that_changes_nothing(
    kind: fold_native.FoldKind,
) -> None:
    """The consumer sets `ceiling` to its clock plus a day: an event dated later (a sender's
    wrong clock) is refused before it moves the watermark or is remembered as seen; at the
    ceiling it counts. Both folds alike."""
    f = kind.new(0)
    assert f.ceiling == 2**63 - 1  # off unless set
    f.ceiling = 1_000
    assert f.apply(Event(KINDS["conversation.created"], 1, 1, 1, "VIBER", 500))
    late = Event(KINDS["conversation.closed"], 2, 1, 1, "VIBER", 1_001)
    with pytest.raises(OverflowError):
        f.apply(late)
    assert f.watermark == 500 and len(f.delta.facts) == 1
    assert f.apply(Event(KINDS["conversation.closed"], 3, 1, 1, "VIBER", 1_000))  # at the ceiling
    f.ceiling = 2_000
    assert f.apply(late)  # not remembered as seen: it counts once its time has come
    assert f.watermark == 1_001
    records = [record("conversation.closed", "a", 5_000), record("conversation.closed", "b", 1_500)]
    result = kind.apply_batch({0: f}, [Msg(0, i) for i in range(2)], records, {})
    assert result == ([0, 0, 1, 0, 0], 0, 0, [0]) and f.watermark == 1_500
