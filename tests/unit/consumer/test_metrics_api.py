"""`GET /v1/metrics`: every metric for every grouping, keys as objects, filters by
dimension, bad parameters named, tokens scoped to accounts, paging."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from consumer.fold import PartitionFold
from consumer.fold.model import ASSIGNED, CLOSED, CREATED, SNOOZED, Event
from consumer.serve.api import create_app
from consumer.serve.tokens import Tokens, digest
from consumer.store import PartitionCommit
from consumer.store.sqlite import SqliteStore

HOUR = 1_699_920_000  # a UTC midnight


def ev(
    kind: int, h: int, t: int, *, account: int = 7, conv: int = 1, ch: str = "SMS", inbox: int | None = 30,
    expires: int | None = None,
) -> Event:  # fmt: skip
    return Event(kind, h, account, conv, ch, t, None, None, None, inbox, 1000 + account, expires)


EVENTS = [
    ev(CREATED, 1, HOUR),
    ev(ASSIGNED, 2, HOUR + 10),
    ev(ASSIGNED, 2, HOUR + 10),  # a redelivery: counted once
    ev(SNOOZED, 3, HOUR + 20),
    ev(CLOSED, 4, HOUR + 100, expires=HOUR + 99),  # the window expired 1 s before the close
    ev(CREATED, 5, HOUR, conv=2, ch="VIBER", inbox=31),
    ev(CLOSED, 6, HOUR + 60, conv=2, ch="VIBER", inbox=31, expires=HOUR + 60),  # expiring at the close: not
    ev(CREATED, 7, HOUR + 5, account=8, conv=3, inbox=None),  # no data.channel: in no inbox row
    ev(CLOSED, 8, HOUR + 3600 + 5, account=8, conv=3, inbox=None),
]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "m.db"
    store = SqliteStore(str(path))
    store.check_topic("events")
    fold = PartitionFold(0)
    for e in EVENTS:
        fold.apply(e)
    delta, changed = fold.take_changes()
    store.commit("events", [PartitionCommit(0, delta, 1, fold.watermark, changed)])
    store.close()
    return path


def get(db: Path, tokens: Tokens | None = None, token: str | None = None, **params: Any) -> Any:
    c = TestClient(create_app(lambda: SqliteStore(str(db)), tokens=tokens))
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return c.get("/v1/metrics", params=params, headers=headers)


def test_rows_carry_every_counter_and_typed_keys(db: Path) -> None:
    body = get(db, group="account,channel_type", window="all").json()
    assert body["group"] == "account,channel_type" and body["window"] == "all" and body["next"] is None
    rows = {(r["key"]["account"], r["key"]["channel_type"]): r for r in body["rows"]}
    assert list(rows) == [(7, "SMS"), (7, "VIBER"), (8, "SMS")]
    sms = rows[(7, "SMS")]
    assert sms["key"] == {"account": 7, "channel_type": "SMS"}
    counts = ("created", "assignments", "snoozes", "closures", "closed_window_expired", "reopens")
    assert [sms[c] for c in counts] == [1, 1, 1, 1, 1, 0]
    assert sms["time_to_close"]["count"] == 1 and sms["time_to_close"]["sum"] == 100
    assert rows[(7, "VIBER")]["closed_window_expired"] == 0  # a window expiring at closedAt had not closed
    assert "ingest_lag" not in sms  # counts by channel type only


def test_inbox_and_app_groupings(db: Path) -> None:
    inbox = get(db, group="inbox", window="all").json()["rows"]
    assert [(r["key"], r["closures"]) for r in inbox] == [
        ({"account": 7, "inbox": 30}, 1),
        ({"account": 7, "inbox": 31}, 1),
    ]  # account 8's events came without data.channel
    app = get(db, group="app", window="1h").json()["rows"]
    assert [(r["key"], r["window_start"], r["created"], r["closures"]) for r in app] == [
        ({"app": 1007}, HOUR, 2, 2),
        ({"app": 1008}, HOUR, 1, 0),
        ({"app": 1008}, HOUR + 3600, 0, 1),
    ]


def test_filters_select_on_the_keys_dimensions(db: Path) -> None:
    def keys(**params: Any) -> list[dict[str, Any]]:
        return [r["key"] for r in get(db, window="all", **params).json()["rows"]]

    assert keys(group="account,channel_type", account=7) == [
        {"account": 7, "channel_type": "SMS"},
        {"account": 7, "channel_type": "VIBER"},
    ]
    assert keys(group="account,channel_type", channel_type="SMS") == [
        {"account": 7, "channel_type": "SMS"},
        {"account": 8, "channel_type": "SMS"},
    ]
    assert keys(group="account,channel_type", account=8, channel_type="SMS") == [
        {"account": 8, "channel_type": "SMS"}
    ]
    assert keys(group="inbox", inbox=31) == [{"account": 7, "inbox": 31}]
    assert keys(group="account", account=70) == []  # 7 is a prefix of 70, not a match of it
    assert keys(group="channel_type", channel_type="SMS") == [{"channel_type": "SMS"}]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"group": "team", "window": "1h"}, "group"),
        ({"window": "1h"}, "group must be one of channel_type | account"),
        ({"window": "1h"}, "it is missing"),
        ({"group": "account", "window": "2h"}, "window"),
        ({"group": "account"}, "window must be one of 1m, 1h, 1d, all for group=account: it is missing"),
        ({"group": "source", "window": "1h"}, "group"),  # stored, not served
        ({"group": "account", "window": "1h", "channel_type": "SMS"}, "channel_type"),
        ({"group": "account", "window": "1h", "account": "seven"}, "account"),
        ({"group": "account", "window": "1h", "account": str(2**63)}, "account"),
        ({"group": "channel_type", "window": "1h", "channel_type": "A" * 1001}, "channel_type"),
        ({"group": "account", "window": "1h", "from": "1e9"}, "from"),
        ({"group": "account", "window": "all", "from": "0"}, "from/to"),
        ({"group": "account", "window": "1h", "limit": "0"}, "limit"),
        ({"group": "account", "window": "1h", "cursor": "nope"}, "cursor"),
        ({"group": "account", "window": "1h", "by": "account"}, "by"),
        # integers are ASCII digits with an optional minus, within 64 bits, nothing else
        ({"group": "account", "window": "1h", "account": "--1"}, "account"),
        ({"group": "app", "window": "1h", "app": "\u00b2"}, "app"),  # a superscript two
        ({"group": "inbox", "window": "1h", "inbox": "1_0"}, "inbox"),
        ({"group": "account", "window": "1h", "account": "9" * 5000}, "account"),
        ({"group": "account", "window": "1h", "limit": "+5"}, "limit"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(db: Path, params: dict[str, str], named: str) -> None:
    r = get(db, **params)
    assert r.status_code == 400 and named in r.json()["error"], r.text


def test_a_filter_the_grouping_lacks_names_the_groupings_dimensions(db: Path) -> None:
    r = get(db, group="account,channel_type", window="1h", inbox="3")
    assert r.status_code == 400, r.text
    assert r.json()["error"] == (
        "inbox filters only a grouping that has it: group=account,channel_type has account, channel_type"
    )


def test_pages_follow_the_cursor_to_the_end(db: Path) -> None:
    whole = get(db, group="account,channel_type", window="1h").json()["rows"]
    seen, cursor = [], None
    while True:
        extra = {"cursor": cursor} if cursor else {}
        body = get(db, group="account,channel_type", window="1h", limit=2, **extra).json()
        seen += body["rows"]
        cursor = body["next"]
        if not cursor:
            break
    assert seen == whole and len(whole) > 2


def test_a_scoped_token_reads_its_accounts_groupings_only(db: Path, tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"{digest('t-seven')} 7\n{digest('t-both')} 7,8\n")
    tokens = Tokens(path)
    rows = get(db, tokens, "t-seven", group="account,channel_type", window="all").json()["rows"]
    assert {r["key"]["account"] for r in rows} == {7}  # its one account, implied
    assert get(db, tokens, "t-seven", group="channel_type", window="all").status_code == 403
    assert get(db, tokens, "t-seven", group="inbox", window="all", account=8).status_code == 403
    assert get(db, tokens, "t-both", group="inbox", window="all").status_code == 400  # which account?
    assert get(db, tokens, "t-both", group="app", window="all").status_code == 403  # no account in it
    assert get(db, tokens, None, group="account", window="all").status_code == 401


def test_parameters_at_their_limits_are_accepted() -> None:
    from consumer.fold.registry import REGISTRY
    from consumer.serve.metrics_query import parse_metrics_query

    for params in ({"from": "60", "to": "60"}, {"limit": "1"}, {"limit": "100000"}):
        q = parse_metrics_query({"group": "account", "window": "1m", **params}, REGISTRY)
        assert q.window == "1m", params
    long = "W" * 1000  # another producer's name: the gateway takes up to 64 characters
    q = parse_metrics_query({"group": "channel_type", "window": "1h", "channel_type": long}, REGISTRY)
    assert q.filters == {"channel_type": long}


@pytest.mark.parametrize("name", ["closures", "full"])
def test_metric_set_names_the_stores_groupings_and_metrics(tmp_path: Path, name: str) -> None:
    """`/v1/metric-set`: what the dashboard draws from, the store's set alone: its groupings
    (dimensions, windows) and metrics (where each counts); open without a token (it holds
    no data); a parameter is a 400."""
    from consumer.fold.registry import METRIC_SETS

    registry = METRIC_SETS[name]
    path = tmp_path / "tokens"
    path.write_text(f"{digest('t')} *\n")
    app = create_app(lambda: SqliteStore(str(tmp_path / "m.db"), registry=registry), tokens=Tokens(path))
    c = TestClient(app)
    body = c.get("/v1/metric-set").json()
    assert body["name"] == name
    assert [g["name"] for g in body["groupings"]] == [g.name for g in registry.groupings]
    assert [m["name"] for m in body["metrics"]] == [m.name for m in registry.metrics]
    groupings = {g["name"]: g for g in body["groupings"]}
    assert groupings["channel_type"] == {
        "name": "channel_type",
        "dimensions": ["channel_type"],
        "windows": ["1m", "1h", "1d", "all"],
    }
    metrics = {m["name"]: m for m in body["metrics"]}
    assert metrics["closures"]["kind"] == "counter" and metrics["closures"]["unit"] == "1"
    assert metrics["closures"]["groupings"] == list(groupings)
    lag = metrics["ingest_lag"]  # in seconds as the rows show it; by channel type, 1h and longer
    assert (lag["unit"], lag["groupings"], lag["windows"]) == ("s", ["channel_type"], ["1h", "1d", "all"])
    assert lag["stats"] == ["count", "mean", "max", "p50", "p90", "p99"]
    assert metrics["time_to_close"]["stats"][:5] == ["count", "sum", "min", "max", "mean"]
    if name == "full":
        assert groupings["inbox"]["dimensions"] == ["account", "inbox"]
        assert groupings["inbox"]["windows"] == ["1m", "1h", "1d", "all"]
        assert "source" not in groupings  # their source: stored, not served
        assert {"created", "assignments", "snoozes", "closed_window_expired"} <= set(metrics)
        assert metrics["time_to_close"]["buckets"] == ["le_1h", "le_4h", "le_8h", "le_24h", "gt_24h"]
        assert "buckets" not in metrics["ingest_lag"]
    else:
        assert "created" not in metrics and "inbox" not in groupings
    assert c.get("/v1/metric-set", params={"x": "1"}).status_code == 400
    assert c.get("/v1/metrics", params={"group": "account", "window": "all"}).status_code == 401


def test_metric_set_of_other_sla_buckets_is_still_the_full_set(tmp_path: Path) -> None:
    """`--sla-buckets` changes the bounds, not the set: its name stays, its buckets follow."""
    from consumer.fold.registry import metric_set

    registry = metric_set("full", "30m,2h")
    app = create_app(lambda: SqliteStore(str(tmp_path / "m.db"), registry=registry))
    body = TestClient(app).get("/v1/metric-set").json()
    ttc = next(m for m in body["metrics"] if m["name"] == "time_to_close")
    assert (body["name"], ttc["buckets"]) == ("full", ["le_30m", "le_2h", "gt_2h"])


@pytest.fixture
def backlog_db(tmp_path: Path) -> Path:
    """Account 7: an open unassigned SMS conversation in inbox 30, an open assigned one, a
    snoozed VIBER one in inbox 31; account 8: an open unassigned one without an inbox, and
    a closed one."""
    path = tmp_path / "b.db"
    store = SqliteStore(str(path))
    store.check_topic("events")
    fold = PartitionFold(0)
    events = [
        ev(CREATED, 1, HOUR),
        ev(CREATED, 2, HOUR, conv=2),
        ev(ASSIGNED, 3, HOUR + 5, conv=2),
        ev(CREATED, 4, HOUR, conv=3, ch="VIBER", inbox=31),
        ev(SNOOZED, 5, HOUR + 9, conv=3, ch="VIBER", inbox=31),
        ev(CREATED, 6, HOUR, account=8, conv=4, inbox=None),
        ev(CREATED, 7, HOUR, account=8, conv=5),
        ev(CLOSED, 8, HOUR + 30, account=8, conv=5),
    ]
    for e in events:
        fold.apply(e._replace(event_id=str(e.event_hash)))
    delta, changed = fold.take_changes()
    store.commit("events", [PartitionCommit(0, delta, 1, fold.watermark, changed)])
    store.close()
    return path


def backlog(db: Path, tokens: Tokens | None = None, token: str | None = None, **params: Any) -> Any:
    c = TestClient(create_app(lambda: SqliteStore(str(db)), tokens=tokens))
    return c.get("/v1/backlog", params=params, headers={"authorization": f"Bearer {token}"} if token else {})


def test_backlog_rows_by_each_grouping_and_filter(backlog_db: Path) -> None:
    def rows(**params: Any) -> list[tuple[Any, ...]]:
        body = backlog(backlog_db, **params).json()
        assert body["as_of"] == HOUR + 30 and body["group"] == params["group"]
        return [(r["key"], r["open"], r["unassigned"], r["snoozed"]) for r in body["rows"]]

    assert rows(group="channel_type") == [
        ({"channel_type": "SMS"}, 3, 2, 0),
        ({"channel_type": "VIBER"}, 0, 0, 1),
    ]
    assert rows(group="account") == [({"account": 7}, 2, 1, 1), ({"account": 8}, 1, 1, 0)]
    assert rows(group="inbox") == [
        ({"account": 7, "inbox": 30}, 2, 1, 0),
        ({"account": 7, "inbox": 31}, 0, 0, 1),
    ]
    assert rows(group="app") == [({"app": 1007}, 2, 1, 1), ({"app": 1008}, 1, 1, 0)]
    assert rows(group="account,channel_type", channel_type="VIBER") == [
        ({"account": 7, "channel_type": "VIBER"}, 0, 0, 1)
    ]
    assert rows(group="account,channel_type", account=8) == [({"account": 8, "channel_type": "SMS"}, 1, 1, 0)]
    assert rows(group="inbox", account=8) == []  # its open conversation has no inbox; the other is closed


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({}, "group must be one of channel_type | account"),
        ({}, "it is missing"),
        (
            {"group": "nope"},
            "group must be one of channel_type | account | account,channel_type | inbox | app: got 'nope'",
        ),
        ({"group": "account", "window": "1h"}, "window"),
        ({"group": "account", "limit": "5"}, "limit"),
        ({"group": "channel_type", "account": "7"}, "account"),
        ({"group": "account", "account": "x"}, "account"),
    ],
)
def test_a_bad_backlog_parameter_is_a_400_naming_it(
    backlog_db: Path, params: dict[str, str], named: str
) -> None:
    r = backlog(backlog_db, **params)
    assert r.status_code == 400 and named in r.json()["error"], r.text


def test_backlog_tokens_and_a_set_without_gauges(backlog_db: Path, tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"{digest('t-seven')} 7\n{digest('t-both')} 7,8\n{digest('t-all')} *\n")
    tokens = Tokens(path)
    body = backlog(backlog_db, tokens, "t-seven", group="account,channel_type").json()
    assert {r["key"]["account"] for r in body["rows"]} == {7}  # its one account, implied
    # the store's newest event time may be another tenant's: a scoped token is not told it
    assert body["as_of"] is None
    assert backlog(backlog_db, tokens, "t-all", group="account", account=7).json()["as_of"] is not None
    assert backlog(backlog_db, tokens, "t-seven", group="channel_type").status_code == 403
    assert backlog(backlog_db, tokens, "t-seven", group="inbox", account=8).status_code == 403
    assert backlog(backlog_db, tokens, "t-both", group="inbox").status_code == 400  # which account?
    assert backlog(backlog_db, tokens, None, group="account").status_code == 401
    from consumer.fold.registry import CLOSURES

    closures = tmp_path / "c.db"
    SqliteStore(str(closures), registry=CLOSURES).close()
    c = TestClient(create_app(lambda: SqliteStore(str(closures), registry=CLOSURES)))
    r = c.get("/v1/backlog", params={"group": "account"})
    assert r.status_code == 404 and "--metric-set full" in r.json()["error"]


def test_a_parameter_given_twice_is_a_400_naming_it(db: Path) -> None:
    """Which of two values was meant is not for the API to guess (the last one won)."""
    c = TestClient(create_app(lambda: SqliteStore(str(db))))
    for path in ("/v1/metrics?group=account&group=channel_type&window=1h",
                 "/v1/closures?by=account&window=all&key=7&key=8",
                 "/v1/backlog?group=account&account=7&account=8",
                 "/v1/closures/conversations?account=7&account=8&from=0&to=99999999"):  # fmt: skip
        r = c.get(path)
        assert r.status_code == 400, (path, r.text)
        assert "is given more than once" in r.json()["error"], path
    r = c.get("/v1/summary?account=7")
    assert r.status_code == 400 and r.json()["error"] == "summary takes no parameters, got account"


def test_a_channel_type_holding_a_pipe_keeps_it_in_every_grouping(tmp_path: Path) -> None:
    """Another producer may name a channel type `WEB|CHAT` (the consumer counts whatever name
    it gets): the account,channel_type rows, its backlog and its metrics-topic records key it
    whole, though the stored key joins the dimensions with '|' too."""
    from consumer.fold.registry import REGISTRY
    from consumer.store import MetricRow
    from consumer.stream.metrics_topic import metric_rows_record

    path = tmp_path / "m.db"
    store = SqliteStore(str(path))
    store.check_topic("events")
    fold = PartitionFold(0)
    fold.apply(ev(CREATED, 1, HOUR, ch="WEB|CHAT"))
    fold.apply(ev(CLOSED, 2, HOUR + 60, ch="WEB|CHAT"))
    delta, changed = fold.take_changes()
    store.commit("events", [PartitionCommit(0, delta, 1, fold.watermark, changed)])
    c = TestClient(create_app(lambda: SqliteStore(str(path))))
    rows = c.get("/v1/metrics", params={"group": "account,channel_type", "window": "all", "account": "7"})
    assert rows.status_code == 200, rows.text
    assert [(r["key"], r["closures"]) for r in rows.json()["rows"]] == [
        ({"account": 7, "channel_type": "WEB|CHAT"}, 1)
    ]
    # a filter of that name selects it (a name holding '|' is a name like any other)
    for group in ("account,channel_type", "channel_type"):
        rows = c.get("/v1/metrics", params={"group": group, "window": "all", "channel_type": "WEB|CHAT"})
        assert [r["key"]["channel_type"] for r in rows.json()["rows"]] == ["WEB|CHAT"], rows.text
    backlog = c.get("/v1/backlog", params={"group": "account,channel_type"})
    assert backlog.status_code == 200, backlog.text
    (stored,) = store.query("account,channel_type", "all")
    assert stored.key == "7|WEB|CHAT"
    record = metric_rows_record(stored, REGISTRY, 0)
    assert record["key"] == {"account": "7", "channel_type": "WEB|CHAT"}
    assert isinstance(stored, MetricRow)
    store.close()


def test_an_empty_parameter_is_read_as_not_given(db: Path) -> None:
    """As an HTML form sends an unfilled field (docs/api.md); a required one stays required."""
    every = get(db, group="account,channel_type", window="all").json()["rows"]
    assert every
    empty = get(
        db, group="account,channel_type", window="all", account="", channel_type="", limit="", cursor=""
    )
    assert empty.status_code == 200 and empty.json()["rows"] == every
    missing = get(db, group="", window="all")
    assert missing.status_code == 400 and "group" in missing.json()["error"]


def test_a_metric_rows_record_carries_the_metrics_its_row_counts_as_v1_metrics_shows_them(
    tmp_path: Path,
) -> None:
    """The ingest lag counts by channel type in 1h, 1d and all time: an account's record
    leaves it out (as /v1/metrics does) instead of a count of 0 that reads as "no lag"; a
    distribution of count 0 has its statistics null and its sum 0, as /v1/metrics has."""
    from consumer.fold.registry import REGISTRY
    from consumer.stream.metrics_topic import metric_rows_record

    store = SqliteStore(str(tmp_path / "m.db"))
    store.check_topic("events")
    fold = PartitionFold(0)
    fold.apply(ev(CREATED, 1, HOUR))
    fold.apply(ev(CLOSED, 2, HOUR + 60))
    delta, changed = fold.take_changes()
    store.commit("events", [PartitionCommit(0, delta, 1, fold.watermark, changed)])
    (by_channel,) = store.query("channel_type", "1h")
    (by_account,) = store.query("account", "1h")
    channel, account = (metric_rows_record(r, REGISTRY, 0) for r in (by_channel, by_account))
    assert "ingest_lag" in channel["distributions"] and "ingest_lag" not in account["distributions"]
    assert set(account["counters"]) == {m.name for m in REGISTRY.counters}
    assert channel["distributions"]["time_to_close"]["sum"] == 60.0
    ttfa = account["distributions"]["time_to_first_assignment"]
    stats = ("min", "max", "mean", "p50", "p90", "p99")
    assert (ttfa["count"], ttfa["sum"]) == (0, 0.0) and all(ttfa[f] is None for f in stats), ttfa
    store.close()
