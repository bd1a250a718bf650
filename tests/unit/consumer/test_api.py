"""The HTTP app: dashboard page and assets, `/v1/summary`, `/metrics` wiring, `/v1/closures`."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from consumer.fold import PartitionFold
from consumer.fold.model import CLOSED, CREATED, OPENED, Event
from consumer.serve.api import create_app
from consumer.serve.overview import newest_windows
from consumer.store import PartitionCommit
from consumer.store.sqlite import SqliteStore

DAY = 1_699_920_000  # a UTC midnight


def fill(path: Path, events: list[Event], next_offset: int = 1) -> None:
    store = SqliteStore(str(path))
    store.check_topic("events")
    fold = PartitionFold(0)
    for e in events:
        fold.apply(e)
    delta, changed = fold.take_changes()
    store.commit("events", [PartitionCommit(0, delta, next_offset, fold.watermark, changed)])
    store.close()


def ev(kind: int, h: int, t: int, *, account: int, conv: int, channel: str, unread: bool = False) -> Event:
    return Event(kind, h, account, conv, channel, t, None, t - 5 if unread else None)


EVENTS = [
    ev(CREATED, 1, DAY, account=7, conv=1, channel="EMAIL"),
    ev(CLOSED, 2, DAY + 300, account=7, conv=1, channel="EMAIL", unread=True),
    ev(CREATED, 3, DAY + 3 * 3600, account=8, conv=2, channel="SMS"),
    ev(CLOSED, 4, DAY + 3 * 3600 + 60, account=8, conv=2, channel="SMS"),
    ev(OPENED, 5, DAY + 5 * 3600 + 30, account=7, conv=1, channel="EMAIL"),
    ev(CLOSED, 6, DAY + 5 * 3600 + 90, account=7, conv=1, channel="EMAIL"),
]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "m.db"
    fill(path, EVENTS)
    return path


def client(db: Path, registry: CollectorRegistry | None = None) -> TestClient:
    return TestClient(create_app(lambda: SqliteStore(str(db)), registry=registry))


def test_dashboard_page_and_its_assets_ship_in_the_package(db: Path) -> None:
    c = client(db)
    page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for needle in ('id="closures-chart"', 'id="ttc-chart"', 'id="unread-chart"', 'id="account-search"'):
        assert needle in page.text
    assets = (
        "/static/dashboard.js",
        "/static/grouped.js",
        "/static/closures.js",
        "/static/dashboard.css",
        "/static/vendor/chart.umd.min.js",
    )
    for asset in assets:
        assert asset in page.text, f"{asset} not referenced"
        r = c.get(asset)
        assert r.status_code == 200 and len(r.content) > 1000, asset
    assert "Chart.js v4" in c.get("/static/vendor/chart.umd.min.js").text
    assert "MIT License" in c.get("/static/vendor/chart.js.LICENSE.md").text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN
    assert c.get("/static/nothing.js").status_code == 404


def test_summary_gives_newest_windows_and_all_time_totals(db: Path) -> None:
    c = client(db)
    body = c.get("/v1/summary").json()
    assert body["newest"] == {"1d": DAY, "1h": DAY + 5 * 3600, "1m": DAY + 5 * 3600 + 60}
    assert body["totals"] == {
        "closures": 3,
        "reopens": 1,
        "closed_unread": 1,
        "created": 2,
        "assignments": 0,
        "snoozes": 0,
        "closed_window_expired": 0,
        "first_closes": 2,  # conversation 1's second closure is not its first
        "ttc_count": 3,
        "ttc_sum": 300 + 60 + 60,
        "ttc_mean": 140.0,
        "ttfa_count": 0,
        "ttfa_sum": 0,
        "ttfa_mean": None,
    }
    by_channel = c.get("/v1/closures", params={"by": "channel_type", "window": "all"}).json()["rows"]
    # the summary's rows carry every metric (time to close with its SLA buckets);
    # /v1/closures the ones it always showed, as it always did
    buckets = [r["time_to_close"].pop("buckets") for r in body["channel_types"]]
    assert buckets[0] == {"le_1h": 2, "le_4h": 0, "le_8h": 0, "le_24h": 0, "gt_24h": 0}
    assert all("buckets" not in r["time_to_close"] for r in by_channel)
    assert [
        {k: r[k] for k in c} for r, c in zip(body["channel_types"], by_channel, strict=True)
    ] == by_channel
    assert body["channel_types"][0]["created"] == 1
    assert [r["key"] for r in by_channel] == ["EMAIL", "SMS"]


def test_summary_of_an_empty_store(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    SqliteStore(str(empty)).close()
    body = client(empty).get("/v1/summary").json()
    assert body["newest"] == {"1m": None, "1h": None, "1d": None}
    assert body["totals"]["closures"] == 0 and body["totals"]["ttc_mean"] is None
    assert body["channel_types"] == []


def test_summary_rejects_parameters(db: Path) -> None:
    r = client(db).get("/v1/summary", params={"by": "account"})
    assert r.status_code == 400 and "no parameters" in r.json()["error"]


def test_newest_windows_move_forward_with_new_data(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    fill(path, EVENTS[:2])
    store = SqliteStore(str(path))
    assert newest_windows(store) == {"1m": DAY + 300, "1h": DAY, "1d": DAY}
    later = DAY + 3 * 86400 + 7200 + 61
    fill(path, [ev(CLOSED, 9, later, account=9, conv=9, channel="SMS")], next_offset=2)
    assert newest_windows(store) == {"1m": later - 1, "1h": later - 61, "1d": DAY + 3 * 86400}
    # a late event in an old window does not move the newest windows back
    fill(path, [ev(CLOSED, 10, DAY + 10, account=9, conv=10, channel="SMS")], next_offset=3)
    assert newest_windows(store)["1m"] == later - 1


def test_metrics_serves_closure_metrics_and_the_extra_registry(db: Path) -> None:
    extra = CollectorRegistry()
    Counter("convmetrics_consumer_test_things", "things", registry=extra).inc(3)
    r = client(db, extra).get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(r.text)
        for s in fam.samples
    }
    assert samples[("convmetrics_closures_total", (("channel_type", "EMAIL"),))] == 2
    assert samples[("convmetrics_closures_total", (("channel_type", "SMS"),))] == 1
    assert samples[("convmetrics_consumer_test_things_total", ())] == 3
    # no account label anywhere: label cardinality stays at the number of channel types
    assert all("account" not in labels for _, labels in [(k[0], dict(k[1])) for k in samples])


def test_metrics_without_extra_registry_has_no_consumer_metrics(db: Path) -> None:
    text = client(db).get("/metrics").text
    assert "convmetrics_closures_total" in text and "convmetrics_consumer_" not in text


def test_closures_still_work_for_existing_callers(db: Path) -> None:
    c = TestClient(create_app(lambda: SqliteStore(str(db))))  # positional, no registry
    rows = c.get("/v1/closures", params={"by": "account", "window": "1h"}).json()["rows"]
    assert [(r["key"], r["window_start"], r["closures"]) for r in rows] == [
        ("7", DAY, 1),
        ("8", DAY + 3 * 3600, 1),
        ("7", DAY + 5 * 3600, 1),
    ]
    assert c.get("/v1/closures", params={"by": "team", "window": "1h"}).status_code == 400
    assert c.get("/healthz").json() == {"status": "ok"}


def test_newest_minute_and_hour_follow_a_later_creation(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    fill(path, EVENTS[:2])
    later = DAY + 5 * 3600 + 30  # a creation with a receive time: counted (created) and its ingest lag
    fill(path, [Event(CREATED, 77, 7, 77, "SMS", later, None, None, later * 1000 + 900)], next_offset=2)
    newest = newest_windows(SqliteStore(str(path)))
    assert newest["1h"] == DAY + 5 * 3600
    assert newest["1m"] == DAY + 5 * 3600  # the creation's minute


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"from": "100000000000000000000"}, "from"),
        ({"to": "-100000000000000000000"}, "to"),
        ({"from": str(2**63)}, "from"),
        ({"limit": str(2**64)}, "limit"),
        ({"cursor": "WzFlMzAsIngiXQ"}, "cursor"),  # [1e30,"x"]: not a window start
        ({"cursor": "WzEwMDAwMDAwMDAwMDAwMDAwMDAwMCwieCJd"}, "cursor"),  # beyond 64 bits
    ],
)
def test_out_of_range_integers_are_a_400_naming_the_parameter(
    db: Path, params: dict[str, str], named: str
) -> None:
    """Integers beyond SQLite's 64 bits were a 500 (OverflowError in the driver)."""
    fill(db, EVENTS)
    client = TestClient(create_app(lambda: SqliteStore(str(db))))
    r = client.get("/v1/closures", params={"by": "channel_type", "window": "1h", **params})
    assert r.status_code == 400 and named in r.json()["error"]
    edge = client.get("/v1/closures", params={"by": "channel_type", "window": "1h", "from": str(2**63 - 1)})
    assert edge.status_code == 200 and edge.json()["rows"] == []  # the largest 64-bit value is fine


def test_closures_ranked_searched_and_paged(db: Path) -> None:
    """`sort` ranks (with `total`), `contains` searches keys, `next` pages by position."""
    c = client(db)
    params = {"by": "account", "window": "all", "sort": "-closures", "limit": "1"}
    first = c.get("/v1/closures", params=params).json()
    assert (first["sort"], first["total"], [r["key"] for r in first["rows"]]) == ("-closures", 2, ["7"])
    second = c.get("/v1/closures", params={**params, "cursor": first["next"]}).json()
    assert [r["key"] for r in second["rows"]] == ["8"] and second["next"] is None
    found = c.get("/v1/closures", params={**params, "contains": "8"}).json()
    assert (found["total"], [r["key"] for r in found["rows"]]) == (1, ["8"])
    plain = c.get("/v1/closures", params={"by": "account", "window": "all", "contains": "7"}).json()
    assert list(plain) == ["by", "window", "rows", "next"] and [r["key"] for r in plain["rows"]] == ["7"]
    bad = c.get("/v1/closures", params={**params, "sort": "p50"})
    assert bad.status_code == 400 and "sort must be" in bad.json()["error"]


def test_a_store_that_cannot_be_read_is_503_not_ready_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A corrupt store: /readyz and every query answer 503 + Retry-After naming why, the log
    says it once (not a traceback per request); /healthz still answers (the process lives)."""
    bad = tmp_path / "corrupt.db"
    bad.write_bytes(b"this is not a database" * 100)
    c = TestClient(create_app(lambda: SqliteStore(str(bad))), raise_server_exceptions=False)
    with caplog.at_level("ERROR", "consumer.serve.api"):
        for path in ("/readyz", "/v1/closures?by=account&window=1h", "/v1/summary", "/readyz"):
            r = c.get(path)
            assert r.status_code == 503 and r.headers["retry-after"] == "5", path
            assert "not a database" in r.json()["error"], path
    assert len(caplog.records) == 1 and "store unavailable" in caplog.records[0].getMessage()
    assert c.get("/healthz").status_code == 200


def test_a_store_corrupted_while_served_is_503_and_not_ready(tmp_path: Path) -> None:
    """The store opened fine and answered; then its file is overwritten under the running
    API (its worker threads keep their connections): /readyz and the queries answer 503
    naming the cause, not a 500 with a traceback, and /healthz still answers."""
    path = tmp_path / "m.db"
    store = SqliteStore(str(path))
    store.check_topic("events")
    f = PartitionFold(0)
    for h in range(1, 200):
        f.apply(ev(CLOSED, h, 1_700_000_000 + 60 * h, account=h % 20, conv=h, channel="EMAIL"))
    delta, changed = f.take_changes()
    store.commit("events", [PartitionCommit(0, delta, 1, f.watermark, changed)])
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the file, none in the WAL
    store.close()
    opened = SqliteStore(str(path))  # one connection, kept, as a worker thread's is
    opened.db.execute("PRAGMA cache_size=1")  # its next reads go to the file, not its page cache
    c = TestClient(create_app(lambda: opened), raise_server_exceptions=False)
    paths = (
        "/readyz",
        "/v1/metrics?group=account&window=1h",
        "/v1/summary",
        "/metrics",
        "/v1/backlog?group=account",
        f"/v1/closures/conversations?account=7&from=0&to={2**40}",
    )
    assert [c.get(p).status_code for p in paths[:4]] == [200, 200, 200, 200]
    size = path.stat().st_size
    with path.open("r+b") as file:  # all but the magic string: garbage (its change counter too)
        file.seek(16)
        file.write(bytes(range(256)) * (size // 256 + 1))
    for p in paths:
        r = c.get(p)
        assert r.status_code == 503 and r.headers["retry-after"] == "5", (p, r.status_code, r.text[:200])
        assert "cannot read SQLite store" in r.json()["error"], p
    assert c.get("/healthz").status_code == 200


def test_readyz_of_a_readable_store(db: Path) -> None:
    assert client(db).get("/readyz").json() == {"ready": True}


def test_keys_select_several_rows(db: Path) -> None:
    c = client(db)
    got = c.get("/v1/closures", params={"by": "account", "window": "all", "keys": "8, 99,8"}).json()
    assert [r["key"] for r in got["rows"]] == ["8"]
    got = c.get("/v1/closures", params={"by": "channel_type", "window": "all", "keys": "EMAIL,SMS"}).json()
    assert [r["key"] for r in got["rows"]] == ["EMAIL", "SMS"]
    for params, says in (
        ({"keys": "7,acme"}, "keys must be account ids"),
        ({"keys": "7", "key": "7"}, "leave one out"),
        ({"keys": ",".join(str(i) for i in range(1001))}, "at most 1000"),
    ):
        r = c.get("/v1/closures", params={"by": "account", "window": "all", **params})
        assert r.status_code == 400 and says in r.json()["error"], params


@pytest.mark.parametrize("window", ["1m", "1h", "1d", "all"])
@pytest.mark.parametrize("extra", [{}, {"sort": "-closures"}])
def test_the_most_keys_a_call_takes_read_every_window(db: Path, window: str, extra: dict[str, str]) -> None:
    """1,000 accounts (the limit; a token scoped to that many asks for them all): the sized
    windows, derived from the finest grouping, bound its rows by one range per account,
    which SQLite refused past ~1,000 deep as a chain of ORs (a 503 "store unavailable")."""
    keys = ",".join(str(a) for a in range(1, 1001))
    r = client(db).get("/v1/closures", params={"by": "account", "window": window, "keys": keys, **extra})
    assert r.status_code == 200, r.text
    assert sorted({row["key"] for row in r.json()["rows"]}) == ["7", "8"]


@pytest.mark.parametrize("extra", [{}, {"sort": "-closures"}, {"key": "EMAIL"}])
def test_fields_show_only_the_metrics_named(db: Path, extra: dict[str, str]) -> None:
    """`fields` cuts each row to the metrics named (in the row's own order, whatever the
    order asked), values equal to the full row's; counters alone are read without the
    rows' sketches, a distribution with them."""
    c = client(db)
    base = {"by": "channel_type", "window": "1h", **extra}
    full = c.get("/v1/closures", params=base).json()
    assert full["rows"] and "fields" not in full
    assert c.get("/v1/closures", params={**base, "fields": ""}).json() == full
    assert all(r["time_to_close"]["p50"] is not None for r in full["rows"])  # quantiles from the bins
    for fields, shown in (
        ("closed_unread, closures", ["closures", "closed_unread"]),
        ("time_to_close", ["time_to_close"]),
        ("reopens,ingest_lag,closures", ["closures", "reopens", "ingest_lag"]),
    ):
        got = c.get("/v1/closures", params={**base, "fields": fields}).json()
        assert [k for k in got if k != "rows"] == [k for k in full if k != "rows"]
        cut = [{k: v for k, v in r.items() if k not in ALL_SHOWN or k in shown} for r in full["rows"]]
        assert got["rows"] == cut, fields
        assert all(list(r)[-len(shown) :] == shown for r in got["rows"])
    for fields, says in (
        ("closures,time_to_close_buckets", "'time_to_close_buckets' not shown by /v1/closures"),
        (" , ", "fields lists no metric"),  # (an empty fields= is not given: every metric)
        ("created", "'created' not shown"),
    ):
        r = c.get("/v1/closures", params={**base, "fields": fields})
        assert r.status_code == 400 and says in r.json()["error"], fields


#: the metrics a /v1/closures row shows (the rest of a row: key, window, its start and end)
ALL_SHOWN = ("closures", "reopens", "closed_unread", "time_to_close", "ingest_lag")


def test_closures_of_a_closures_set_store_refuse_the_full_sets_names(tmp_path: Path) -> None:
    """Over HTTP: the store's metric set decides what `by` and `sort` may name (400s naming
    the parameter and --metric-set, never a 500)."""
    from consumer.fold.registry import CLOSURES

    c = TestClient(create_app(lambda: SqliteStore(str(tmp_path / "m.db"), registry=CLOSURES)))
    r = c.get("/v1/closures", params={"by": "inbox", "window": "all"})
    assert r.status_code == 400
    assert r.json()["error"] == "by=inbox: this store counts by channel_type, account (--metric-set)"
    r = c.get("/v1/closures", params={"by": "account", "window": "all", "sort": "-snoozes"})
    assert (r.status_code, r.json()["error"]) == (
        400,
        "sort=-snoozes: not in this store's metric set (--metric-set)",
    )
    assert (
        c.get("/v1/closures", params={"by": "account", "window": "all", "sort": "-closures"}).status_code
        == 200
    )


def test_a_store_a_newer_release_upgrades_under_a_running_api_makes_it_not_ready(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older `serve` left running through an upgrade (`store_format`): its `/readyz`
    turns 503 naming both formats, so that its load balancer stops sending it readers."""
    from consumer.store import store_format

    c = TestClient(create_app(lambda: SqliteStore(str(db))), raise_server_exceptions=False)
    assert c.get("/readyz").json() == {"ready": True}
    ours = store_format.FORMAT
    monkeypatch.setattr(store_format, "FORMAT", ours + 1)
    SqliteStore(str(db)).close()  # the newer release opens and stamps it
    monkeypatch.setattr(store_format, "FORMAT", ours)
    answer = c.get("/readyz")
    assert answer.status_code == 503, answer.text
    assert f"is in format {ours + 1}, made by a newer convmetrics release" in answer.json()["error"]
