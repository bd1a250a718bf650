"""The metric registry: a metric declared once reaches the store, the API and Prometheus.

A test-only registry adds two counters (`snoozes_seen`, `assigns_seen`: copies of the
production `snoozes` and `assignments` under other names) declared with the events they
count; the reference fold, the SQLite store, `/v1/closures`, `/v1/summary`, `/metrics` and
the generic metrics-topic record pick them up without a change to any of those modules.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from consumer.fold import PartitionFold
from consumer.fold.delta import LAYOUT, layout_of
from consumer.fold.model import ASSIGNED, CLOSED, CREATED, SNOOZED, Event
from consumer.fold.registry import (
    CLOSURES,
    DEFAULT_SLA_BUCKETS,
    REGISTRY,
    Dimension,
    Grouping,
    Kind,
    Metric,
    Registry,
    metric_set,
    parse_sla_buckets,
)
from consumer.serve.api import create_app
from consumer.store import PartitionCommit
from consumer.store.sqlite import SqliteStore
from consumer.stream.metrics_topic import metric_rows_record
from schemas import Codec, subject

SNOOZES = Metric(
    "snoozes_seen", Kind.COUNTER, "1", "Conversations snoozed.", counts=("conversation.snoozed",)
)
ASSIGNMENTS = Metric(
    "assigns_seen", Kind.COUNTER, "1", "Conversations assigned.", counts=("conversation.assigned",)
)
#: `closures_view=None`: /v1/closures shows every metric of this registry
EXTENDED = dataclasses.replace(
    REGISTRY, metrics=(*REGISTRY.metrics, SNOOZES, ASSIGNMENTS), closures_view=None
)


def ev(kind: int, h: int, t: int, conv: int, channel: str = "TELEGRAM", account: int = 7) -> Event:
    return Event(kind, h, account, conv, channel, t, None, None)


STREAM = [
    ev(CREATED, 1, 1_000, conv=1),
    ev(ASSIGNED, 2, 1_010, conv=1),
    ev(SNOOZED, 3, 1_020, conv=1),
    ev(SNOOZED, 3, 1_020, conv=1),  # a redelivery: counted once
    ev(SNOOZED, 4, 1_030, conv=2, channel="VIBER", account=8),
    ev(CLOSED, 5, 1_100, conv=1),
]


def fill(store: SqliteStore, registry: Registry) -> None:
    fold = PartitionFold(0, registry=registry)
    for e in STREAM:
        fold.apply(e)
    delta, changed = fold.take_changes()
    store.commit("events", [PartitionCommit(0, delta, len(STREAM), fold.watermark, changed)])


def test_the_production_layout_is_the_registrys() -> None:
    assert LAYOUT.fields == (
        "channel_type", "account", "inbox", "app", "t", "closures", "reopens", "closed_unread", "created",
        "assignments", "snoozes", "closed_window_expired", "first_closes", "ttc_n", "ttc", "ttc_bin",
        "ttfa_n", "ttfa", "ttfa_bin",
    )  # fmt: skip
    assert layout_of(EXTENDED).fields[11:15] == (
        "closed_window_expired",
        "first_closes",
        "snoozes_seen",
        "assigns_seen",
    )


def test_a_metric_added_to_a_registry_reaches_store_api_and_prometheus(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "m.db"), registry=EXTENDED)
    store.check_topic("events")
    fill(store, EXTENDED)

    by_channel = {r.key: r for r in store.query("channel_type", "all")}
    assert by_channel["TELEGRAM"].snoozes_seen == 1 and by_channel["VIBER"].snoozes_seen == 1
    assert by_channel["TELEGRAM"].assigns_seen == 1 and by_channel["VIBER"].assigns_seen == 0
    assert by_channel["TELEGRAM"].closures == 1 and by_channel["TELEGRAM"].ttc_sum == 100
    (acc7,) = store.query("account", "1h", key="7")
    assert (acc7.snoozes_seen, acc7.assigns_seen, acc7.closures) == (1, 1, 1)

    app = TestClient(create_app(lambda: store))
    rows = app.get("/v1/closures", params={"by": "channel_type", "window": "1h"}).json()["rows"]
    assert [(r["key"], r["snoozes_seen"], r["assigns_seen"]) for r in rows] == [
        ("TELEGRAM", 1, 1),
        ("VIBER", 1, 0),
    ]
    totals = app.get("/v1/summary").json()["totals"]
    assert (totals["snoozes_seen"], totals["assigns_seen"], totals["closures"]) == (2, 1, 1)
    # the generic metrics-topic record carries it too, under the same schema version
    codec = Codec(subject("metric_rows"))
    record = codec.decode(codec.encode(metric_rows_record(by_channel["VIBER"], EXTENDED, 1)))
    assert record["counters"]["snoozes_seen"] == 1 and record["key"] == {"channel_type": "VIBER"}
    families = {f.name: f for f in text_string_to_metric_families(app.get("/metrics").text)}
    samples = {s.labels["channel_type"]: s.value for s in families["convmetrics_snoozes_seen"].samples}
    assert samples == {"TELEGRAM": 1.0, "VIBER": 1.0}
    assert families["convmetrics_snoozes_seen"].documentation == "Conversations snoozed."
    store.close()


def test_a_store_gains_the_columns_of_a_metric_added_later(tmp_path: Path) -> None:
    """A store written with the production registry, opened with one more metric: the new
    columns are added (0 for the rows before), the old numbers stay."""
    path = str(tmp_path / "m.db")
    old = SqliteStore(path)
    fill(old, REGISTRY)
    before = old.query("channel_type", "all")
    old.close()
    new = SqliteStore(path, registry=EXTENDED)
    after = new.query("channel_type", "all")
    assert [r.closures for r in after] == [r.closures for r in before]
    assert [r.snoozes_seen for r in after] == [0, 0]
    new.close()


def test_a_registry_refuses_what_it_cannot_hold() -> None:
    with pytest.raises(ValueError, match="unique"):
        dataclasses.replace(REGISTRY, metrics=(*REGISTRY.metrics, REGISTRY.metrics[0]))
    with pytest.raises(ValueError, match="undeclared dimensions"):
        dataclasses.replace(REGISTRY, groupings=(Grouping("team", ("team",)),), sources=())
    with pytest.raises(ValueError, match="unknown condition"):
        dataclasses.replace(REGISTRY, metrics=(dataclasses.replace(SNOOZES, when="read"),))
    with pytest.raises(ValueError, match="need time_to_first_assignment"):
        dataclasses.replace(REGISTRY, metrics=(SNOOZES,), closures_view=None)
    with pytest.raises(ValueError, match="all of them in that order, or none"):
        dataclasses.replace(REGISTRY, gauges=REGISTRY.gauges[:2])
    with pytest.raises(ValueError, match="only gauges there"):
        dataclasses.replace(REGISTRY, gauges=(), metrics=(*REGISTRY.metrics, REGISTRY.gauges[0]))
    team = Dimension("team", str)  # two text dimensions: their joined key could not be split
    with pytest.raises(ValueError, match="at most one text dimension"):
        dataclasses.replace(
            REGISTRY,
            dimensions=(*REGISTRY.dimensions, team),
            groupings=(Grouping("team,channel_type", ("team", "channel_type")),),
        )
    with pytest.raises(ValueError, match="its text dimension 'channel_type' comes last"):
        dataclasses.replace(
            REGISTRY, groupings=(Grouping("channel_type,account", ("channel_type", "account")),), sources=()
        )


def test_a_registry_refuses_a_derived_grouping_its_source_cannot_give() -> None:
    finest = REGISTRY.sources[0]
    served = [g for g in REGISTRY.groupings if g.derived_from is None]
    with pytest.raises(ValueError, match="source 'nowhere' is not one of `sources`"):
        dataclasses.replace(REGISTRY, groupings=(*served, Grouping("app", ("app",), derived_from="nowhere")))
    with pytest.raises(ValueError, match="sources no grouping is derived from"):
        dataclasses.replace(REGISTRY, groupings=tuple(served))
    narrow = Grouping("narrow", ("account", "channel_type"))
    with pytest.raises(ValueError, match="has dimensions its source 'narrow' lacks"):
        dataclasses.replace(
            REGISTRY,
            groupings=(*served, Grouping("inbox", ("account", "inbox"), derived_from="narrow")),
            sources=(narrow,),
        )
    hourly = dataclasses.replace(finest, windows=("1h", "all"))
    with pytest.raises(ValueError, match="keeps windows its source"):
        dataclasses.replace(REGISTRY, sources=(hourly,))
    # a former name (store format 2 renames its rows at open) is nobody's name today
    renamed = dataclasses.replace(finest, formerly=("inbox",))
    with pytest.raises(ValueError, match=r"grouping 'source': formerly \['inbox'\], a grouping's name today"):
        dataclasses.replace(REGISTRY, sources=(renamed,))
    dataclasses.replace(REGISTRY, sources=(dataclasses.replace(finest, formerly=("inboxes",)),))
    inbox = next(g for g in REGISTRY.groupings if g.name == "inbox")
    twice = tuple(
        dataclasses.replace(g, formerly=("inboxes",)) if g is inbox else g for g in REGISTRY.groupings
    )
    with pytest.raises(ValueError, match=r"formerly \['inboxes'\], another grouping's former name"):
        dataclasses.replace(
            REGISTRY, groupings=twice, sources=(dataclasses.replace(finest, formerly=("inboxes",)),)
        )
    # a row under the former name (a purged row's key from a release before) is served as the source's
    old, key = finest.formerly[0], "42|3|9|SMS"
    assert REGISTRY.served(old, "1h", key) == REGISTRY.served("source", "1h", key) != [(old, key)]
    assert REGISTRY.current(old) == "source" and REGISTRY.current("inbox") == "inbox"
    lag = REGISTRY.metric("ingest_lag")
    one = dataclasses.replace(lag, groupings=("channel_type", "app"))
    with pytest.raises(ValueError, match="counts in 'app' or its source, not both"):
        dataclasses.replace(REGISTRY, metrics=tuple(one if m is lag else m for m in REGISTRY.metrics))
    # the full set stores three groupings: channel type, account (all time only) and the source
    assert [g.name for g in REGISTRY.stored] == ["channel_type", "account", finest.name]
    assert [g.name for g in REGISTRY.derived(finest.name)] == [
        "account",
        "account,channel_type",
        "inbox",
        "app",
    ]
    account = REGISTRY.grouping("account")
    assert [w for w in REGISTRY.windows if REGISTRY.stores(account, w)] == ["all"]
    assert [w for w in REGISTRY.windows if account.derives(w)] == ["1m", "1h", "1d"]
    assert not any(REGISTRY.stores(REGISTRY.grouping("inbox"), w) for w in REGISTRY.windows)
    # the closures set folds no source: it stores the account in every window (and reads
    # the source's rows a full-set consumer wrote beside its own)
    assert [g.name for g in CLOSURES.stored] == ["channel_type", "account"]
    assert all(CLOSURES.stores(CLOSURES.grouping("account"), w) for w in CLOSURES.windows)
    with pytest.raises(ValueError, match="derived_windows without derived_from"):
        dataclasses.replace(
            REGISTRY, groupings=(*served, Grouping("x", ("account",), derived_windows=("1m",)))
        )
    with pytest.raises(ValueError, match="derived_windows names an undeclared window"):
        bad = dataclasses.replace(account, derived_windows=("1w",))
        dataclasses.replace(REGISTRY, groupings=tuple(bad if g is account else g for g in REGISTRY.groupings))


@pytest.mark.parametrize(
    ("grouping", "key", "parts"),
    [
        ("channel_type", "WEB|CHAT", ["WEB|CHAT"]),
        ("account", "42", ["42"]),
        ("account,channel_type", "42|TELEGRAM", ["42", "TELEGRAM"]),
        ("account,channel_type", "42|WEB|CHAT|", ["42", "WEB|CHAT|"]),
        ("account,channel_type", "42|", ["42", ""]),
        ("inbox", "42|7", ["42", "7"]),
    ],
)
def test_a_key_splits_into_its_dimensions_values(grouping: str, key: str, parts: list[str]) -> None:
    assert REGISTRY.key_parts(grouping, key) == parts
    assert "|".join(parts) == key  # the inverse of joining them


def test_a_key_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="does not have 2 parts"):
        REGISTRY.key_parts("inbox", "42|7|9")
    with pytest.raises(ValueError, match="does not have 2 parts"):
        REGISTRY.key_parts("account,channel_type", "42")


def test_sla_buckets_follow_their_bounds(tmp_path: Path) -> None:
    """`--sla-buckets 30m,2h`: time to close's buckets le_30m, le_2h, gt_2h in the store and
    /v1/metrics; a store written with the default bounds gains the new columns at open."""
    path = str(tmp_path / "m.db")
    old = SqliteStore(path)
    fill(old, REGISTRY)
    old.close()
    custom = metric_set("full", "30m,2h")
    assert metric_set("full", "30m,2h") is custom  # one registry per bounds (folds cache by it)
    assert metric_set("full", DEFAULT_SLA_BUCKETS) is REGISTRY
    assert metric_set("closures", "30m,2h").metric("time_to_close").buckets == ()
    store = SqliteStore(path, registry=custom)
    f = PartitionFold(0, registry=custom)
    for i, d in enumerate([1800, 1801, 7200, 7201]):
        f.apply(ev(CREATED, 100 + i, 10_000, conv=10 + i))
        f.apply(ev(CLOSED, 200 + i, 10_000 + d, conv=10 + i))
    delta, changed = f.take_changes()
    store.commit("events", [PartitionCommit(0, delta, 99, f.watermark, changed)])
    app = TestClient(create_app(lambda: store))
    rows = app.get("/v1/metrics", params={"group": "channel_type", "window": "all"}).json()["rows"]
    (row,) = [r for r in rows if r["key"] == {"channel_type": "TELEGRAM"}]
    # the four new closures; the 100 s one written before counts in no new bucket (0 for the
    # rows written before), though in time_to_close's count
    assert row["time_to_close"]["buckets"] == {"le_30m": 1, "le_2h": 2, "gt_2h": 1}
    assert row["time_to_close"]["count"] == 5
    store.close()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("1h,4h,4h", "ascend"),
        ("1h,", "not a duration"),
        ("90", "not a duration"),
        ("0m", "not a duration"),
        ("\u00b2h", "not a duration"),  # a superscript two: a digit to str.isdigit, not a number
        ("\u0661h", "not a duration"),  # an Arabic-Indic one
        ("1d,3651d", "longer than 3650d"),
        ("1d,99999999999999999999d", "longer than 3650d"),
        ("1d," + "9" * 5000 + "s", "longer than 3650d"),  # past Python's 4,300 digits to convert
        ("00h", "not a duration"),
    ],
)
def test_sla_bucket_bounds_refuse_what_is_not_ascending_durations(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=f"--sla-buckets: .*{says}"):
        parse_sla_buckets(text)


def test_sla_bucket_bounds_take_ten_years_at_most() -> None:
    assert parse_sla_buckets("1d,3650d") == (("1d", 86400), ("3650d", 3650 * 86400))
