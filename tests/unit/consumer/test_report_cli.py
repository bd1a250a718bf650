"""`convmetrics metrics`: flags, --last arithmetic, formatting, and both sources agreeing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from consumer.fold import PartitionFold
from consumer.fold.model import CLOSED, CREATED, Event
from consumer.serve.api import create_app
from consumer.serve.report import (
    ApiSource,
    StoreSource,
    build_report,
    human_duration,
    last_windows_from,
    parse_duration,
    utc_text,
)
from consumer.store import PartitionCommit
from consumer.store.sqlite import SqliteStore
from convmetrics.cli import main

from .test_metrics_api import HOUR, backlog_db  # noqa: F401 - a fixture: the backlog's store

H = 3600
T0 = 1_699_920_000  # a UTC midnight: 2023-11-14 00:00


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Hours 0..29 after T0: EMAIL closes one conversation per hour (ttc 250 s, 1 in 3 unread),
    SMS every other hour (ttc 2 h 5 min)."""
    path = tmp_path / "m.db"
    store = SqliteStore(str(path))
    store.check_topic("events")
    fold = PartitionFold(0)
    h = 0
    for hour in range(30):
        t = T0 + hour * H + 600
        h += 2
        fold.apply(Event(CREATED, h, 1 + hour % 4, hour, "EMAIL", t - 250))
        fold.apply(
            Event(CLOSED, h + 1, 1 + hour % 4, hour, "EMAIL", t, None, t - 1 if hour % 3 == 0 else None)
        )
        if hour % 2 == 0:
            fold.apply(Event(CREATED, 10_000 + h, 9, 1000 + hour, "SMS", t - 7500))
            fold.apply(Event(CLOSED, 10_001 + h, 9, 1000 + hour, "SMS", t))
    delta, changed = fold.take_changes()
    store.commit("events", [PartitionCommit(0, delta, 1, fold.watermark, changed)])
    store.close()
    return path


def args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {
        "by": None, "window": None, "last": None, "key": None, "limit": 1000,
        "group": None, "where": None, "backlog": False,
    }  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize(
    ("text", "seconds"), [("90m", 5400), ("24h", 86400), ("7d", 604800), ("45", 45), ("30s", 30)]
)
def test_durations_parse(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0h", "5x", "-1h", "1.5h", "h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="like 90m, 24h or 7d"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0, "0s"),
        (59.4, "59s"),
        (60, "1m00s"),
        (252, "4m12s"),
        (3599, "59m59s"),
        (3600, "1h00m"),
        (7500, "2h05m"),
        (86400 + 4 * H + 59, "1d04h"),
    ],
)
def test_human_durations(seconds: float | None, text: str) -> None:
    assert human_duration(seconds) == text


def test_last_counts_whole_windows_back_from_the_newest() -> None:
    assert last_windows_from(T0 + 23 * H, H, 24 * H) == T0  # 24 hourly windows
    assert last_windows_from(T0 + 23 * H, H, 90 * 60) == T0 + 22 * H  # 90 min overlaps 2 hours
    assert last_windows_from(T0, 86400, H) == T0  # shorter than a window: the newest one


def test_store_report_with_last(db: Path) -> None:
    report = build_report(StoreSource(f"sqlite:///{db}"), args(last=parse_duration("6h")))
    starts = sorted({r["window_start"] for r in report.rows})
    assert starts == [T0 + h * H for h in range(24, 30)]  # newest hour is 29
    assert report.start_from == T0 + 24 * H and not report.truncated
    email = [r for r in report.rows if r["key"] == "EMAIL"]
    assert len(email) == 6 and all(r["closures"] == 1 for r in email)
    assert len([r for r in report.rows if r["key"] == "SMS"]) == 3


def test_store_and_api_sources_agree(db: Path) -> None:
    api = ApiSource("http://testserver")
    api.client = TestClient(create_app(lambda: SqliteStore(str(db))), base_url="http://testserver")
    store = StoreSource(f"sqlite:///{db}")
    for a in (args(), args(by="account", window="1d"), args(window="1m", last=3600), args(limit=7)):
        assert build_report(api, a) == build_report(store, a), a
    assert build_report(store, args(limit=7)).truncated


def test_table_output(db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    assert main(["metrics", "--store", f"sqlite:///{db}", "--last", "2h"]) == 0
    out = capsys.readouterr().out
    assert "Closures by channel type, 1h windows, last 2h" in out
    assert "2023-11-15 05:00" in out  # hour 29 in UTC
    email = next(line for line in out.splitlines() if "EMAIL" in line and "05:00" in line)
    assert "4m10s" in email and "100.0%" not in email
    sms = next(line for line in out.splitlines() if "SMS" in line)
    assert "2h05m" in sms


def test_json_output_is_the_api_row_shape(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["metrics", "--store", f"sqlite:///{db}", "--by", "account", "--window", "all", "--json"]) == 0
    )
    body = json.loads(capsys.readouterr().out)
    assert body["by"] == "account" and body["window"] == "all" and body["truncated"] is False
    # the API's spelling of a grouping works as the flag's does
    assert main(["metrics", "--store", f"sqlite:///{db}", "--by", "channel_type", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["by"] == "channel_type"
    assert {r["key"]: r["closures"] for r in body["rows"]} == {"1": 8, "2": 8, "3": 7, "4": 7, "9": 15}
    assert set(body["rows"][0]["time_to_close"]) == {
        "count",
        "sum",
        "min",
        "max",
        "mean",
        "p50",
        "p90",
        "p99",
    }


@pytest.mark.parametrize(
    ("argv", "message", "code"),
    [
        (["--window", "all", "--last", "1h"], "--last needs a sized window", 2),
        (["--by", "account", "--key", "acme"], "account id", 2),
        # a flag that the asked-for report would ignore is refused, not dropped silently
        (["--channel-type", "EMAIL"], "--channel-type filter(s) --group or --backlog", 2),
        (["--group", "account", "--by", "account"], "--by and --key choose closure metrics", 2),
        (["--backlog", "--key", "EMAIL"], "--backlog takes --group and filters", 2),
        (["--store", "sqlite:////no/such/dir/m.db"], "no store at", 1),
        (["--api", "http://127.0.0.1:9"], "cannot reach the API", 1),
    ],
)
def test_clear_errors(
    db: Path, argv: list[str], message: str, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    if "--store" not in argv and "--api" not in argv:
        argv = [*argv, "--store", f"sqlite:///{db}"]
    assert main(["metrics", *argv]) == code
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [["--by", "team"], ["--window", "5m"], ["--limit", "0"], ["--store", "x", "--api", "y"]]
)
def test_bad_flags_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["metrics", *argv])
    assert exc.value.code == 2 and "error:" in capsys.readouterr().err


def test_group_reports_every_metric_from_store_or_api(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = ApiSource("http://testserver")
    app = create_app(lambda: SqliteStore(str(db)))  # the store's registry: every metric
    api.client = TestClient(app, base_url="http://testserver")
    store = StoreSource(f"sqlite:///{db}", metrics="full")
    a = args(group="account,channel_type", window="all", where={"account": "9"})
    report = build_report(store, a)
    assert report == build_report(api, a)
    assert [(r["key"], r["closures"], r["created"]) for r in report.rows] == [
        ({"account": 9, "channel_type": "SMS"}, 15, 15)
    ]
    monkeypatch.setenv("COLUMNS", "200")
    argv = ["metrics", "--store", f"sqlite:///{db}", "--group", "account,channel_type", "--window", "all"]
    assert main([*argv, "--channel-type", "EMAIL"]) == 2  # the store's consumers' set is not the default
    assert "group=account,channel_type: this store counts by channel_type, account (--metric-set)" in (
        capsys.readouterr().err
    )
    argv += ["--metric-set", "full"]
    assert main([*argv, "--channel-type", "EMAIL"]) == 0
    out = capsys.readouterr().out
    assert "Metrics by account,channel_type, all time" in out and "Created" in out
    assert "First assign p50" in out and "First closes" in out
    assert sum("EMAIL" in line for line in out.splitlines()) == 4 and "SMS" not in out
    assert main([*argv, "--inbox", "3"]) == 2  # account,channel_type has no inbox
    assert "inbox" in capsys.readouterr().err
    assert main([*argv, "--json"]) == 0  # /v1/metrics's body names its grouping `group`
    body = json.loads(capsys.readouterr().out)
    assert body["group"] == "account,channel_type" and "by" not in body and body["rows"]
    # a grouping --by also names is still every metric's table, keyed by its dimensions
    assert main([*argv[:3], "--group", "account", "--window", "all", "--metric-set", "full"]) == 0
    out = capsys.readouterr().out
    assert "Metrics by account, all time" in out and "Created" in out and "{'account'" not in out
    # no rows: the grouping's own dimensions head the table, as with rows
    assert main([*argv[:3], "--group", "inbox", "--account", "12345", "--metric-set", "full"]) == 0
    out = capsys.readouterr().out
    assert "Account" in out and "Inbox" in out


def test_backlog_reports_the_live_gauges_from_store_or_api(
    backlog_db: Path,  # noqa: F811 - the imported fixture
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--backlog`: `/v1/backlog`'s rows (store and API equal), as a table and as JSON."""
    api = ApiSource("http://testserver")
    api.client = TestClient(create_app(lambda: SqliteStore(str(backlog_db))), base_url="http://testserver")
    store = StoreSource(f"sqlite:///{backlog_db}", metrics="full")
    for a in (
        args(backlog=True),
        args(backlog=True, group="inbox", where={"account": "7"}),
        args(backlog=True, group="account", limit=1),
    ):
        assert build_report(store, a) == build_report(api, a), a
    report = build_report(store, args(backlog=True))
    assert report.as_of == HOUR + 30 and not report.truncated
    assert [(r["key"], r["open"], r["unassigned"], r["snoozed"]) for r in report.rows] == [
        ({"channel_type": "SMS"}, 3, 2, 0),
        ({"channel_type": "VIBER"}, 0, 0, 1),
    ]
    assert build_report(store, args(backlog=True, group="account", limit=1)).truncated

    monkeypatch.setenv("COLUMNS", "160")
    argv = ["metrics", "--store", f"sqlite:///{backlog_db}", "--backlog", "--metric-set", "full"]
    assert main([*argv, "--group", "account,channel_type", "--account", "7"]) == 0
    out = capsys.readouterr().out
    title = f"Live backlog by account,channel_type, as of {utc_text(HOUR + 30)} (newest event time)"
    assert title in " ".join(out.split())  # the title wraps at the table's width
    assert "Open" in out and "Unassigned" in out and "Snoozed" in out
    sms = next(line for line in out.splitlines() if "SMS" in line)
    assert sms.replace("│", " ").split()[-3:] == ["2", "1", "0"]  # account 7's SMS: 2 open, 1 unassigned
    assert main([*argv, "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["group"] == "channel_type" and body["as_of"] == HOUR + 30 and len(body["rows"]) == 2
    assert main([*argv, "--group", "inbox", "--account", "12345"]) == 0  # a full set's store, no rows
    out, err = capsys.readouterr()
    assert "Live backlog by inbox, as of" in " ".join(out.split())
    assert err == "no rows (the store holds no data for this query yet)\n"  # no word of --metric-set

    for bad, message in (
        (["--window", "1d"], "takes no --last or --window"),
        (["--window", "1h"], "takes no --last or --window"),  # the default, given: refused too
        (["--by", "account"], "--backlog takes --group and filters"),
        (["--last", "2h"], "takes no --last or --window"),
        (["--key", "SMS"], "--backlog takes --group and filters"),
        (["--inbox", "30"], "inbox"),  # channel_type keys have no inbox: the API's own 400
    ):
        assert main([*argv, *bad]) == 2, bad
        assert message in capsys.readouterr().err, bad


def test_reading_a_store_leaves_its_tables_as_its_consumers_made_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`metrics --store` opens the store with its consumers' metric set (`--metric-set`, as
    `serve` does): a report on a store of the default set adds none of the full set's
    tables or columns to it, and asks for the backlog the way the API answers (no gauges)."""
    import sqlite3

    from consumer.fold.registry import CLOSURES

    path = tmp_path / "closures.db"
    store = SqliteStore(str(path), registry=CLOSURES)
    store.check_topic("events")
    fold = PartitionFold(0, registry=CLOSURES)
    fold.apply(Event(CREATED, 1, 7, 1, "EMAIL", T0))
    fold.apply(Event(CLOSED, 2, 7, 1, "EMAIL", T0 + 60))
    delta, changed = fold.take_changes()
    store.commit("events", [PartitionCommit(0, delta, 1, fold.watermark, changed)])
    store.close()

    def layout() -> list[tuple[str, str]]:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT m.name, p.name FROM sqlite_master AS m, pragma_table_info(m.name) AS p "
                              "WHERE m.type = 'table' ORDER BY 1, 2").fetchall()  # fmt: skip

    before = layout()
    assert main(["metrics", "--store", f"sqlite:///{path}", "--by", "account", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"][0]["closures"] == 1
    assert main(["metrics", "--store", f"sqlite:///{path}", "--backlog"]) == 2  # as --group inbox is
    assert "this store's metric set folds no gauges: run the consumer with --metric-set full" in (
        capsys.readouterr().err
    )
    assert layout() == before


def test_api_source_sends_the_token_from_the_environment(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`metrics --api` against a token-protected API: the token named by `--token-env`
    (default CONVMETRICS_API_TOKEN) is sent; without it the API's 401 is the error."""
    import hashlib

    from consumer.serve.tokens import Tokens

    tokens = tmp_path / "tokens"
    tokens.write_text(f"{hashlib.sha256(b'sesame').hexdigest()} *\n")
    app = create_app(lambda: SqliteStore(str(db)), tokens=Tokens(tokens))
    sources: list[ApiSource] = []

    class Local(ApiSource):  # the CLI's ApiSource, talking to the app in-process
        def __init__(self, base: str, token: str | None = None) -> None:
            super().__init__(base, token)
            self.client = TestClient(app, base_url="http://testserver", headers=dict(self.client.headers))
            sources.append(self)

    monkeypatch.setattr("consumer.serve.report.command.ApiSource", Local)
    argv = ["metrics", "--api", "http://testserver", "--json"]
    monkeypatch.delenv("CONVMETRICS_API_TOKEN", raising=False)
    assert main(argv) == 1
    assert "answered 401" in capsys.readouterr().err
    monkeypatch.setenv("CONVMETRICS_API_TOKEN", "sesame")
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["rows"]
    monkeypatch.setenv("OTHER_TOKEN", "wrong")
    assert main([*argv, "--token-env", "OTHER_TOKEN"]) == 1
    assert "answered 401" in capsys.readouterr().err
    assert [s.client.headers.get("authorization") for s in sources] == [None, "Bearer sesame", "Bearer wrong"]


def test_a_full_sets_store_without_events_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store its consumers made and have not yet written to: the backlog's title says
    there is no event yet (not "as of all time"), and nothing blames the metric set."""
    from consumer.fold.registry import metric_set

    path = tmp_path / "empty.db"
    SqliteStore(str(path), registry=metric_set("full")).close()
    monkeypatch.setenv("COLUMNS", "160")
    assert main(["metrics", "--store", f"sqlite:///{path}", "--metric-set", "full", "--backlog"]) == 0
    out, err = capsys.readouterr()
    title = " ".join(out.split())  # it wraps at the table's width
    assert "Live backlog by channel_type, no events yet" in title and "all time" not in title
    assert err == "no rows (the store holds no data for this query yet)\n"


def test_last_for_a_token_scoped_to_accounts_counts_back_from_its_own_newest_window(
    db: Path, tmp_path: Path
) -> None:
    """/v1/summary (the data's newest window) is across tenants: a tenant's `--last` counts
    back from the newest of its own rows instead (account 9 closes in even hours, the
    newest 28, where the store's newest is 29)."""
    from consumer.serve.report.sources import AcrossTenantsError
    from consumer.serve.tokens import Tokens, digest

    tokens = tmp_path / "tokens"
    tokens.write_text(f"{digest('nine')} 9\n")
    api = ApiSource("http://testserver", "nine")
    app = create_app(lambda: SqliteStore(str(db)), tokens=Tokens(tokens))
    api.client = TestClient(app, base_url="http://testserver", headers=dict(api.client.headers))
    store = StoreSource(f"sqlite:///{db}", metrics="full")  # the app reads the store's own set
    six_hours = parse_duration("6h")
    for tenant, everything in [
        (args(by="account", window="1h", last=six_hours), args(by="account", window="1h", key="9")),
        (
            args(group="account", window="1h", last=six_hours),
            args(group="account", window="1h", where={"account": "9"}),
        ),
    ]:
        report = build_report(api, tenant)
        assert report.start_from == T0 + 23 * H  # 6 hours back from hour 28, its newest
        own = [r for r in build_report(store, everything).rows if r["window_start"] >= T0 + 23 * H]
        assert report.rows == own and [r["window_start"] for r in own] == [T0 + h * H for h in (24, 26, 28)]
        assert not report.truncated
    cut = build_report(api, args(by="account", window="1h", last=six_hours, limit=2))
    assert len(cut.rows) == 2 and cut.truncated
    with pytest.raises(AcrossTenantsError, match="answered 403"):  # channel types span tenants
        build_report(api, args(window="1h", last=six_hours))
