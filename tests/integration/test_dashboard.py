"""The dashboard in a real browser (Debian's headless Chromium driven by Playwright) against a
real pipeline: generated webhooks -> real broker -> `convmetrics consume --http-port`.

The screenshot goes to $CONVMETRICS_ARTIFACTS (default artifacts/ in the repo)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
from playwright.sync_api import BrowserContext, Page, sync_playwright

from convmetrics.generate import GenerateConfig, generate_webhooks
from support.gateway import free_port
from support.pipeline import ConsumerProcess, fetch_metrics, fetch_rows, produce_webhooks, wait_caught_up

CHROMIUM = os.environ.get("CONVMETRICS_CHROMIUM", "/usr/bin/chromium")
# The network is closed here: without these Chromium keeps dialling out (and logging refusals).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("CONVMETRICS_ARTIFACTS", Path(__file__).resolve().parents[2] / "artifacts"))
HOUR = 3600


def webhooks(seed: int, events: int, start: int) -> list[dict[str, Any]]:
    cfg = GenerateConfig(
        seed=seed,
        events=events,
        accounts=60,
        conversations=events // 5,
        start=start,
        span=3 * 86400,
        duplicate_rate=0.05,
        late_rate=0.03,
        unknown_channel_rate=0.03,
        noise_rate=0.0,
    )
    return [dict(w) for w in generate_webhooks(cfg)]


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    """Debian's Chromium with a fresh profile (Playwright passes it as --user-data-dir)."""
    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: run .ci/system-deps.sh"
    profile = tempfile.mkdtemp(prefix="convmetrics-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1360, "height": 900},
            )
            yield context
            context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def pipeline(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> Iterator[Callable[[list[dict[str, Any]]], str]]:
    """Start a consumer with the API on a fresh topic; `feed(webhooks)` produces and waits
    until the store has everything; returns the API base URL."""
    topic = new_topic(3, prefix="dashboard")
    store = tmp_path / "metrics.db"
    port = free_port()
    proc = ConsumerProcess(kafka_bootstrap, topic, store, tmp_path / "consumer.log", http_port=port)

    def feed(batch: list[dict[str, Any]]) -> str:
        produce_webhooks(kafka_bootstrap, topic, batch)
        wait_caught_up(kafka_bootstrap, topic, store, [proc])
        return f"http://127.0.0.1:{port}"

    try:
        yield feed
    finally:
        proc.stop()


def open_dashboard(browser: BrowserContext, api: str) -> Page:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{api}/?refresh=1")
    page.wait_for_function("window.convmetrics && window.convmetrics.refreshes >= 1", timeout=30_000)
    assert not errors, errors
    return page


def refreshed(page: Page) -> None:
    """Wait for one more complete refresh than now."""
    n = page.evaluate("window.convmetrics.refreshes")
    page.wait_for_function(f"window.convmetrics.refreshes > {n}", timeout=30_000)


def chart_data(page: Page, canvas: str) -> dict[str, Any]:
    data: dict[str, Any] = page.evaluate(
        """id => { const c = Chart.getChart(id);
                   return {labels: c.data.labels,
                           datasets: c.data.datasets.map(d => ({label: d.label, data: d.data}))}; }""",
        canvas,
    )
    return data


def painted_pixels(page: Page, canvas: str) -> int:
    """Pixels the chart painted (not transparent): proof it drew, not just holds data."""
    n: int = page.evaluate(
        """id => { const c = document.getElementById(id);
                   const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   let n = 0; for (let i = 3; i < px.length; i += 4) if (px[i] > 0) n++; return n; }""",
        canvas,
    )
    return n


def expected_series(api: str, window: str, span: int) -> tuple[list[int], dict[tuple[int, str], Any]]:
    size = {"1h": HOUR, "1m": 60}[window]
    newest = httpx.get(f"{api}/v1/summary").json()["newest"][window]
    starts = list(range(newest - (span - 1) * size, newest + 1, size))
    rows = [r for r in fetch_rows(api, "channel_type", window) if r["window_start"] >= starts[0]]
    return starts, {(r["window_start"], r["key"]): r for r in rows}


#: choose a channel type for the time-to-close chart as the selector does, returning the
#: URLs its change handler fetched before yielding (fetch is called synchronously there)
CHOOSE_TTC = """key => {
    const urls = [], real = window.fetch;
    window.fetch = (url, options) => {
        urls.push(new URL(url, location.href).href);
        return real(url, options);
    };
    try {
        const select = document.getElementById("ttc-key");
        select.value = key;
        select.dispatchEvent(new Event("change"));
    } finally {
        window.fetch = real;
    }
    return urls;
}"""


def check_charts(page: Page, api: str, window: str, span: int, ttc_key: str | None = None) -> None:
    """The charts equal the API's rows; the time-to-close chart is `ttc_key`'s (None: the
    channel type the page says it charts)."""
    starts, rows = expected_series(api, window, span)
    assert page.evaluate("window.convmetrics.labels") == starts
    closures = chart_data(page, "closures-chart")
    keys = {k for _, k in rows}
    assert {d["label"] for d in closures["datasets"]} >= keys
    drawn = 0
    for d in closures["datasets"]:
        want = [rows[(t, d["label"])]["closures"] if (t, d["label"]) in rows else 0 for t in starts]
        assert d["data"] == want, f"{window} closures of {d['label']}"
        drawn += sum(want)
    assert drawn == sum(r["closures"] for r in rows.values()) > 0

    key = ttc_key if ttc_key is not None else page.evaluate("window.convmetrics.ttcKey")
    ttc = {d["label"]: d["data"] for d in chart_data(page, "ttc-chart")["datasets"]}
    for q in ("p50", "p90"):
        want_q = [rows[(t, key)]["time_to_close"][q] if (t, key) in rows else None for t in starts]
        assert ttc[q] == want_q, f"{window} ttc {q} of {key}"
    assert any(v is not None for v in ttc["p50"])

    share = chart_data(page, "unread-chart")["datasets"][0]["data"]
    for t, got in zip(starts, share, strict=True):
        closed = sum(r["closures"] for (s, _), r in rows.items() if s == t)
        unread = sum(r["closed_unread"] for (s, _), r in rows.items() if s == t)
        assert got == (pytest.approx(100 * unread / closed) if closed else None), t
    for canvas in ("closures-chart", "ttc-chart", "unread-chart"):
        assert painted_pixels(page, canvas) > 2000, f"{canvas} drew nothing"


def lag_text(s: float) -> str:
    """The page's formatting of an ingest lag (dashboard.js `lag`)."""
    if s < 10:
        return f"{s:.2f}s"
    n = math.floor(s + 0.5)  # JavaScript's Math.round (halves up), not Python's round (to even)
    if n < 60:
        return f"{n}s"
    if n < 3600:
        return f"{n // 60}m{n % 60:02d}s"
    if n < 86400:
        return f"{n // 3600}h{(n % 3600) // 60:02d}m"
    return f"{n // 86400}d{(n % 86400) // 3600:02d}h"


def table(page: Page, selector: str) -> list[list[str]]:
    rows: list[list[str]] = page.eval_on_selector_all(
        f"{selector} tbody tr", "trs => trs.map(tr => Array.from(tr.cells).map(td => td.textContent))"
    )
    return rows


def test_dashboard_draws_the_pipelines_numbers(
    browser: BrowserContext, pipeline: Callable[[list[dict[str, Any]]], str]
) -> None:
    api = pipeline(webhooks(seed=11, events=12_000, start=1_714_000_000))
    page = open_dashboard(browser, api)

    # totals: the page's numbers are the API's
    channels = fetch_rows(api, "channel_type", "all")
    accounts = fetch_rows(api, "account", "all")
    total = sum(r["closures"] for r in channels)
    assert page.inner_text("#kpi-closures") == f"{total:,}"
    assert page.inner_text("#kpi-reopens") == f"{sum(r['reopens'] for r in channels):,}"
    assert page.inner_text("#kpi-unread") == f"{sum(r['closed_unread'] for r in channels):,}"
    assert page.inner_text("#kpi-accounts") == str(len(accounts))
    shown_rows = table(page, "#channels")
    shown = {r[0]: int(r[1].replace(",", "")) for r in shown_rows}
    assert shown == {r["key"]: r["closures"] for r in channels}
    # ingest lag (v2 records carry the gateway's receive time): the API's p50, as the page formats it
    lag_p50 = {r["key"]: r["ingest_lag"]["p50"] for r in channels}
    assert all(v is not None for v in lag_p50.values())
    for r in shown_rows:
        assert r[-2] == lag_text(lag_p50[r[0]]), r

    check_charts(page, api, "1h", 48)
    # another channel type's time to close: the page fetches its rows alone at once (the
    # counters' rows carry no quantiles; a whole refresh would begin with /v1/summary) and
    # charts them, equal to the API's
    first = page.evaluate("window.convmetrics.ttcKey")
    other = next(r["key"] for r in sorted(channels, key=lambda r: -r["closures"]) if r["key"] != first)
    # the URLs the choice's own handler fetches (a whole refresh, later, would begin with /v1/summary)
    shown_from = str(page.evaluate("window.convmetrics.labels[0]"))
    asked = page.evaluate(CHOOSE_TTC, other)
    assert [parse_qs(urlsplit(u).query) for u in asked] == [
        {"by": ["channel_type"], "window": ["1h"], "from": [shown_from], "key": [other],
         "fields": ["time_to_close"], "limit": ["10000"]}
    ], asked  # fmt: skip
    page.wait_for_function(
        "window.convmetrics.ttcSeries.length > 0 && window.convmetrics.ttcSeries.every(r => r.key === "
        f"{json.dumps(other)})",
        timeout=30_000,
    )
    refreshed(page)  # and a whole refresh keeps the choice
    assert page.evaluate("window.convmetrics.ttcKey") == page.input_value("#ttc-key") == other
    check_charts(page, api, "1h", 48, ttc_key=other)

    # the account table: busiest first; search filters it, a header click sorts it (the API
    # ranks, searches and cuts the table: each change is a fetch, so wait for its drawing)
    rows = table(page, "#accounts")
    assert len(rows) == min(100, len(accounts))
    busiest = max(accounts, key=lambda r: (r["closures"], -int(r["key"])))
    assert rows[0][0] == busiest["key"] and rows[0][1] == f"{busiest['closures']:,}"
    page.fill("#account-search", "4")
    matching = sorted(r["key"] for r in accounts if "4" in r["key"])
    note = f"{len(matching)} of {len(accounts)} accounts match"
    page.wait_for_function(f"document.getElementById('accounts-note').textContent.startsWith('{note}')")
    filtered = table(page, "#accounts")
    assert sorted(r[0] for r in filtered) == matching and len(matching) < len(accounts)
    page.fill("#account-search", "42")
    page.wait_for_function("document.querySelectorAll('#accounts tbody tr').length === 1")
    (only,) = table(page, "#accounts")
    a42 = next(r for r in accounts if r["key"] == "42")
    assert only[:3] == ["42", f"{a42['closures']:,}", f"{a42['reopens']:,}"]
    page.fill("#account-search", "")

    def shows_first(keys: list[str]) -> None:
        """Wait until the table's first rows are these accounts (a sort is a fetch: the
        old order stays on screen until its answer is drawn, and may begin the same way)."""
        cells = (
            "Array.from(document.querySelectorAll('#accounts tbody tr')).map(tr => tr.cells[0].textContent)"
        )
        want = json.dumps(keys, separators=(",", ":"))  # as JSON.stringify writes it
        page.wait_for_function(f"JSON.stringify({cells}.slice(0, {len(keys)})) === '{want}'")

    page.click("#accounts th[data-col=key]")
    shows_first(["1", "2", "3"])
    page.click("#accounts th[data-col=unread]")  # the largest share of unread closures first
    by_share = sorted(
        accounts,
        key=lambda r: (-r["closed_unread"] / r["closures"] if r["closures"] else 1.0, int(r["key"])),
    )
    shows_first([r["key"] for r in by_share[:8]])
    page.click("#accounts th[data-col=closures]")
    by_closures = sorted(accounts, key=lambda r: (-r["closures"], int(r["key"])))
    shows_first([r["key"] for r in by_closures[:8]])

    # per minute: the last two hours of minutes, again equal to the API
    page.click(".switch button[data-window='1m']")
    page.wait_for_function("window.convmetrics.labels.length === 120", timeout=30_000)
    refreshed(page)
    check_charts(page, api, "1m", 120)
    page.click(".switch button[data-window='1h']")
    page.wait_for_function("window.convmetrics.labels.length === 48", timeout=30_000)
    refreshed(page)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    page.close()


def shown(v: Any, seconds: bool) -> str:
    """A value as the grouped table writes it (dashboard.js `cellOf`)."""
    if v is None:
        return "\u2013"  # an en dash
    return lag_text(v) if seconds else f"{v:,}"


def grouped_expected(
    api: str,
    group: str,
    filters: dict[str, str],
    metric_set: str = "full",
    rows: int = 100,
    window: str = "all",
    headers: dict[str, str] | None = None,
    newest: int | None = None,
) -> tuple[list[str], list[list[str]]]:
    """The grouped table's header and cells for a view, from the API's first page and the
    registry (not from the page's own code): key dimensions, then each metric of the full
    set that counts in the grouping's rows of that window, a distribution as p50, p90, mean.
    A sized window shows the newest windows of the data (24 hours, 7 days, 60 minutes: from
    /v1/summary's newest, or `newest`), each row with its window's start first."""
    from consumer.fold.registry import METRIC_SETS, Kind

    registry = METRIC_SETS[metric_set]  # the set the server runs
    params = {"group": group, "window": window, "limit": str(rows), **filters}
    if window != "all":
        size, span = {"1m": (60, 60), "1h": (HOUR, 24), "1d": (86400, 7)}[window]
        if newest is None:
            newest = httpx.get(f"{api}/v1/summary", headers=headers).json()["newest"][window]
        assert newest is not None
        params["from"] = str(newest - (span - 1) * size)
    body = httpx.get(f"{api}/v1/metrics", params=params, headers=headers).json()
    dims = list(registry.grouping(group).dimensions)
    head = ([] if window == "all" else ["window"]) + [d.replace("_", " ") for d in dims]
    metrics = [m for m in registry.metrics if m.counts_in(group, window) and m.kind is not Kind.GAUGE]
    for m in metrics:
        label = m.name.replace("_", " ")
        if m.kind is Kind.COUNTER:
            head.append(label)
        else:
            head += [f"{label} {s}" for s in ("p50", "p90", "mean")]
            if m.buckets or any("buckets" in r[m.name] for r in body["rows"]):  # the set's, or the rows'
                head.append(f"{label} buckets")
    finer = [
        g.name for g in registry.groupings if len(g.dimensions) > len(dims) and set(dims) <= set(g.dimensions)
    ]
    if finer:
        head.append("finer")
    if "account" in dims:  # an account-scoped key: its closures (/v1/closures/conversations)
        head.append("conversations")
    rows = []
    for r in body["rows"]:
        cells = [] if window == "all" else [window_text(r["window_start"], window)]
        cells += [str(r["key"][d]) for d in dims]
        for m in metrics:
            v = r[m.name]
            if m.kind is Kind.COUNTER:
                cells.append(shown(v, False))
                continue
            cells += [shown(v[s], True) for s in ("p50", "p90", "mean")]
            if "buckets" in v:
                cells.append(
                    "".join(v["buckets"]) and " · ".join(f"{b} {n:,}" for b, n in v["buckets"].items())
                )
        if finer:
            cells.append(" ".join(finer))
        if "account" in dims:
            cells.append("list")
        rows.append(cells)
    return head, rows


def window_text(start: int, window: str) -> str:
    """A window start as the table writes it (dashboard.js `utc`: the date too, but per minute)."""
    t = time.gmtime(start)
    return time.strftime("%H:%M" if window == "1m" else "%m-%d %H:%M", t)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def grouped_view(
    page: Page, group: str, filters: dict[str, str], window: str = "all"
) -> tuple[list[str], list[list[str]]]:
    """Wait until the grouped table shows this view, loaded; its header and cells."""
    page.wait_for_function(
        """([group, filters, size]) => { const g = window.convmetrics.grouped;
               const same = (a, b) => Object.keys(a).length === Object.keys(b).length &&
                                      Object.keys(a).every(k => a[k] === b[k]);
               return g.group === group && g.window === size && !g.loading && same(g.filters, filters); }""",
        arg=[group, filters, window],
        timeout=30_000,
    )
    head: list[str] = page.eval_on_selector_all("#grouped thead th", "ths => ths.map(th => th.textContent)")
    return head, table(page, "#grouped")


def check_sized_windows(
    page: Page,
    api: str,
    group: str,
    filters: dict[str, str],
    *,
    headers: dict[str, str] | None = None,
    newest: dict[str, int] | None = None,
    may_be_empty: tuple[str, ...] = (),
) -> None:
    """The window selector offers every window, and the table in each sized one equals
    `grouped_expected` (the newest windows: /v1/summary's, or `newest`'s); rows in each,
    but in the windows that `may_be_empty`."""
    assert page.eval_on_selector_all("#grouped-window option", "os => os.map(o => o.value)") == [
        "1m",
        "1h",
        "1d",
        "all",
    ]
    for size in ("1m", "1h", "1d"):
        page.select_option("#grouped-window", size)
        got = grouped_view(page, group, filters, size)
        want = grouped_expected(
            api, group, filters, window=size, headers=headers, newest=None if newest is None else newest[size]
        )
        assert got == want and (got[1] or size in may_be_empty), size


def closure_list_shown(page: Page) -> list[list[str]]:
    """Wait until the closure list is loaded; its cells."""
    page.wait_for_function(
        "window.convmetrics.closures && !window.convmetrics.closures.loading", timeout=30_000
    )
    return table(page, "#closures-of-row")


def closure_list_all(page: Page) -> list[list[str]]:
    """The closure list's cells, "more closures" clicked while it shows."""
    got = closure_list_shown(page)
    while page.is_visible("#closure-list-more"):
        page.click("#closure-list-more")
        page.wait_for_function(
            f"document.querySelectorAll('#closures-of-row tbody tr').length > {len(got)}", timeout=30_000
        )
        got = closure_list_shown(page)
    return got


def closures_expected(api: str, params: dict[str, Any]) -> list[list[str]]:
    """The closure list's cells, from every page of /v1/closures/conversations."""
    rows: list[dict[str, Any]] = []
    query = dict(params)
    while True:
        body = httpx.get(f"{api}/v1/closures/conversations", params=query).json()
        rows += body["rows"]
        if not body["next"]:
            break
        query["cursor"] = body["next"]
    dash = "\u2013"
    return [
        [
            str(r["conversation"]), r["event_id"] or dash, r["channel_type"],
            dash if r["inbox"] is None else str(r["inbox"]),
            time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(r["closed_at"])),
            shown(r["time_to_close"], True), "first" if r["first_close"] else "",
        ]
        for r in rows
    ]  # fmt: skip


def check_closure_lists(page: Page, api: str) -> None:
    """A row of an account-scoped key lists its closures in the row's window, as the API
    does, page by page ("more closures"): an inbox's hour (a click on a row with no finer
    grouping), an account's all time (its "list" button), and the closures add up to the
    row's closures count."""
    page.evaluate("window.convmetrics.closurePage = 1")  # pages of 1: "more closures" is crossed
    page.select_option("#group", "inbox")
    page.fill("#grouped-account", "")
    page.press("#grouped-account", "Enter")
    page.select_option("#grouped-window", "1h")
    _, rows = grouped_view(page, "inbox", {}, "1h")
    since = httpx.get(f"{api}/v1/summary").json()["newest"]["1h"] - 23 * HOUR
    query = {"group": "inbox", "window": "1h", "limit": "100", "from": str(since)}
    metrics = httpx.get(f"{api}/v1/metrics", params=query).json()["rows"]
    busiest = max(range(len(metrics)), key=lambda i: metrics[i]["closures"])
    row = metrics[busiest]
    assert row["closures"] > 1, row  # more than a page
    page.click(f"#grouped tbody tr:nth-child({busiest + 1}) td:nth-child(2)")
    params = {"account": row["key"]["account"], "inbox": row["key"]["inbox"],
              "from": row["window_start"], "to": row["window_end"]}  # fmt: skip
    want = closures_expected(api, params)
    assert len(want) == row["closures"]
    while len(closure_list_shown(page)) < len(want):
        assert page.is_visible("#closure-list-more")
        page.click("#closure-list-more")
        page.wait_for_function("window.convmetrics.closures.loading === false", timeout=30_000)
    assert closure_list_shown(page) == want and not page.is_visible("#closure-list-more")
    assert page.inner_text("#closure-list-note") == f"{len(want)} closures"
    assert page.inner_text("#closure-list-title").startswith(
        f"Closures of account {row['key']['account']}, inbox {row['key']['inbox']}, closed "
    )
    # an account's all time, from its "list" button (a row click would drill down)
    page.evaluate("window.convmetrics.closurePage = 100")
    page.select_option("#group", "account")
    page.select_option("#grouped-window", "all")
    _, rows = grouped_view(page, "account", {})
    page.click("#grouped tbody tr:first-child button[data-closures]")
    account = rows[0][0]
    want = closures_expected(api, {"account": account, "from": -(2**53) + 1, "to": 2**53 - 1})
    got = closure_list_all(page)
    assert got == want and len(want) > 100  # more than a page
    closures_col = grouped_expected(api, "account", {})[0].index("closures")
    assert len(want) == int(rows[0][closures_col].replace(",", ""))
    assert sum(r[-1] == "first" for r in got) == len({r[0] for r in got})  # one first close each
    page.click("#closure-list-close")
    assert not page.is_visible("#closure-list")


def test_grouped_table_shows_every_metric_by_each_grouping_and_drills_down(
    browser: BrowserContext, pipeline: Callable[[list[dict[str, Any]]], str], tmp_path: Path
) -> None:
    """`--metric-set full`: the grouping selector offers the store's groupings; each one's
    table has a column per metric of the set (created, assignments, snoozes,
    closed_window_expired too) holding the API's numbers; a row click shows that row's
    numbers in a finer grouping, filtered to its key; back returns; the account field
    filters; a bad account is the API's 400, said under the table. `serve --metric-set
    closures` on the same store: the closures set's groupings and columns only."""
    from consumer.fold.registry import REGISTRY

    api = pipeline(webhooks(seed=41, events=6_000, start=1_714_000_000))
    page = open_dashboard(browser, api)
    options = page.eval_on_selector_all("#group option", "os => os.map(o => o.value)")
    assert options == [g.name for g in REGISTRY.groupings]  # the running store's set: full

    for g in REGISTRY.groupings:
        page.select_option("#group", g.name)
        head, rows = grouped_view(page, g.name, {})
        want_head, want_rows = grouped_expected(api, g.name, {})
        assert head == want_head, g.name
        assert rows == want_rows and rows, g.name
    # a page is 100 rows; "more rows" appends the next page (the API's cursor), and is
    # there exactly while the API says there is more
    page.select_option("#group", "account,channel_type")
    _, rows = grouped_view(page, "account,channel_type", {})
    total = len(fetch_metrics(api, "account,channel_type", "all"))
    assert total > 200, total  # several pages
    assert len(rows) == 100
    for shown_rows in range(200, total + 100, 100):
        assert page.is_visible("#grouped-more")
        page.click("#grouped-more")
        n = min(shown_rows, total)
        page.wait_for_function(f"document.querySelectorAll('#grouped tbody tr').length === {n}")
    assert table(page, "#grouped") == grouped_expected(api, "account,channel_type", {}, rows=total)[1]
    assert not page.is_visible("#grouped-more") and page.inner_text("#grouped-note") == f"{total} rows"
    refreshed(page)  # a refresh keeps the pages shown
    assert len(table(page, "#grouped")) == total
    page.select_option("#group", "app")
    head, _ = grouped_view(page, "app", {})
    for name in ("created", "assignments", "snoozes", "closed window expired", "time to close p50"):
        assert name in head
    # the counters are not all zero: the stream has every kind of event
    _, rows = grouped_expected(api, "channel_type", {})
    for name in ("created", "assignments", "snoozes", "closed window expired"):
        col = head.index(name)
        assert sum(int(r[col].replace(",", "")) for r in rows) > 0, name

    # the set's other counters have all-time tiles: the sums of the API's channel-type rows
    channels = fetch_metrics(api, "channel_type", "all")
    for name in ("created", "assignments", "snoozes", "closed_window_expired"):
        assert page.inner_text(f"#kpi-m-{name}") == f"{sum(r[name] for r in channels):,}", name
    assert page.locator("#kpi-m-closures").count() == 0  # shown by the fixed tiles already

    # channel type -> the accounts on it; back -> the channel types again
    page.select_option("#group", "channel_type")
    _, rows = grouped_view(page, "channel_type", {})
    channel = rows[0][0]
    page.click("#grouped tbody tr:first-child td:first-child")
    view = {"channel_type": channel}
    head, rows = grouped_view(page, "account,channel_type", view)
    assert (head, rows) == grouped_expected(api, "account,channel_type", view)
    assert {r[1] for r in rows} == {channel} and page.inner_text(
        "#grouped-filters"
    ) == f"Only channel_type = {channel}"
    page.click("#grouped-back")
    grouped_view(page, "channel_type", {})

    # account -> its channel types (a row click), or its inboxes (the row's "inbox" button)
    page.select_option("#group", "account")
    _, rows = grouped_view(page, "account", {})
    account = rows[1][0]
    page.click("#grouped tbody tr:nth-child(2) td:nth-child(2)")
    view = {"account": account}
    head, rows = grouped_view(page, "account,channel_type", view)
    assert (head, rows) == grouped_expected(api, "account,channel_type", view) and rows
    assert {r[0] for r in rows} == {account}
    assert page.input_value("#grouped-account") == account
    page.click("#grouped-back")
    grouped_view(page, "account", {})
    page.click("#grouped tbody tr:nth-child(2) button[data-to=inbox]")
    head, rows = grouped_view(page, "inbox", view)
    assert (head, rows) == grouped_expected(api, "inbox", view) and rows
    # the account field: another account's inboxes; a bad one is the API's 400
    other = next(
        r["key"]["account"]
        for r in fetch_metrics(api, "account", "all")
        if str(r["key"]["account"]) != account
    )
    page.fill("#grouped-account", str(other))
    page.press("#grouped-account", "Enter")
    head, rows = grouped_view(page, "inbox", {"account": str(other)})
    assert (head, rows) == grouped_expected(api, "inbox", {"account": str(other)}) and rows
    page.fill("#grouped-account", "acme")
    page.press("#grouped-account", "Enter")
    grouped_view(page, "inbox", {"account": "acme"})
    assert page.inner_text("#grouped-note").startswith("Cannot load rows: account must be an integer id")
    assert table(page, "#grouped") == []

    # the view lives through the page's refreshes, with the pipeline's numbers
    page.fill("#grouped-account", account)
    page.press("#grouped-account", "Enter")
    grouped_view(page, "inbox", view)
    refreshed(page)
    assert grouped_view(page, "inbox", view) == grouped_expected(api, "inbox", view)
    # windows: an account's inboxes per minute over the newest hour, per hour over the newest
    # 24, per day (every grouping keeps every window); the channel types per minute (no
    # ingest lag: it has no 1-minute rows) and per hour (with it)
    # (the account's minutes of the newest hour may hold none of its events: equal, maybe empty)
    check_sized_windows(page, api, "inbox", view, may_be_empty=("1m",))
    page.select_option("#group", "channel_type")
    grouped_view(page, "channel_type", {}, "1d")  # the window stays where the grouping keeps it
    page.select_option("#grouped-window", "1m")
    head, rows = grouped_view(page, "channel_type", {}, "1m")
    assert (head, rows) == grouped_expected(api, "channel_type", {}, window="1m") and rows
    assert (
        "ingest lag p50" not in head
        and page.inner_text("#grouped-title") == "By channel_type, per minute (1 h)"
    )
    page.select_option("#grouped-window", "1h")
    head, rows = grouped_view(page, "channel_type", {}, "1h")
    assert (head, rows) == grouped_expected(api, "channel_type", {}, window="1h") and "ingest lag p50" in head
    page.select_option("#grouped-window", "1m")
    _, rows = grouped_view(page, "channel_type", {}, "1m")
    page.click("#grouped tbody tr:first-child td:nth-child(2)")  # the finer grouping's minutes
    grouped_view(page, "account,channel_type", {"channel_type": rows[0][1]}, "1m")
    page.click("#grouped-back")
    grouped_view(page, "channel_type", {}, "1m")  # back restores the window too

    check_closure_lists(page, api)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-grouped.png"), full_page=True)
    page.close()

    # `serve --metric-set closures` on the same store: only that set's groupings and metrics
    port = free_port()
    store = tmp_path / "metrics.db"
    argv = ["serve", "--store", f"sqlite:///{store}", "--port", str(port), "--metric-set", "closures"]
    with open(tmp_path / "serve.log", "wb") as log:
        serve = subprocess.Popen([sys.executable, "-m", "convmetrics", *argv], stdout=log, stderr=log)
    closures_api = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not answers(f"{closures_api}/healthz"):
            assert serve.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        page = open_dashboard(browser, closures_api)
        options = page.eval_on_selector_all("#group option", "os => os.map(o => o.value)")
        assert options == ["channel_type", "account"]
        for group in options:
            page.select_option("#group", group)
            got = grouped_view(page, group, {})
            assert got == grouped_expected(closures_api, group, {}, "closures") and got[1], group
            assert "created" not in got[0] and "assignments" not in got[0]
        assert not page.is_visible("#kpi-more")  # the closures set has no other counters
        # an account's finer grouping is not in this set: a row click lists its closures
        got = grouped_view(page, "account", {})
        page.click("#grouped tbody tr:first-child td:first-child")
        params = {"account": got[1][0][0], "from": -(2**53) + 1, "to": 2**53 - 1}
        assert closure_list_all(page) == closures_expected(closures_api, params)
        grouped_view(page, "account", {})  # still the accounts: no drill
        page.close()
    finally:
        serve.terminate()
        serve.wait(30)


#: 64-bit ids beyond 2^53, where a JavaScript number loses digits (2^62 + 1 reads as 2^62)
BIG_IDS = {"account": 2**62 + 1, "app": 2**61 + 3, "inbox": 2**60 + 5, "conversation": 2**59 + 7}


def test_ids_beyond_2_53_keep_every_digit(
    browser: BrowserContext, pipeline: Callable[[list[dict[str, Any]]], str]
) -> None:
    """Accounts, apps, inboxes and conversations are 64-bit ids. The page shows every digit
    of ids beyond 2^53 (the inbox table's keys, the closure list's conversations) and asks
    for a row's closures with its exact account and inbox: what it shows equals the API's."""
    hooks = webhooks(seed=43, events=600, start=1_714_000_000)
    for w in hooks:  # every id moved beyond 2^53, distinct ids kept distinct
        w["account"] += BIG_IDS["account"]
        w["app"] += BIG_IDS["app"]
        w["data"]["id"] += BIG_IDS["conversation"]
        w["data"]["channel"]["id"] += BIG_IDS["inbox"]
    api = pipeline(hooks)
    page = open_dashboard(browser, api)
    page.select_option("#group", "inbox")
    head, rows = grouped_view(page, "inbox", {})
    assert (head, rows) == grouped_expected(api, "inbox", {})
    assert rows and all(int(r[0]) > 2**53 and int(r[1]) > 2**53 for r in rows)
    page.select_option("#group", "app")
    head_app, rows_app = grouped_view(page, "app", {})
    assert (head_app, rows_app) == grouped_expected(api, "app", {})
    assert rows_app and all(int(r[0]) > 2**53 for r in rows_app)
    page.select_option("#group", "inbox")
    grouped_view(page, "inbox", {})
    busiest = max(range(len(rows)), key=lambda i: int(rows[i][head.index("closures")].replace(",", "")))
    account, inbox = rows[busiest][0], rows[busiest][1]
    page.evaluate("window.convmetrics.closurePage = 100")
    page.click(f"#grouped tbody tr:nth-child({busiest + 1}) td:nth-child(2)")
    got = closure_list_all(page)
    want = closures_expected(api, {"account": account, "inbox": inbox, "from": -(2**53) + 1, "to": 2**53 - 1})
    assert got == want and want, (got[:3], want[:3])
    assert all(int(r[0]) > 2**53 for r in got)
    assert page.inner_text("#closure-list-title").startswith(f"Closures of account {account}, inbox {inbox}")


def test_dashboard_follows_the_pipeline_live(
    browser: BrowserContext, pipeline: Callable[[list[dict[str, Any]]], str]
) -> None:
    api = pipeline(webhooks(seed=21, events=3_000, start=1_714_000_000))
    page = open_dashboard(browser, api)
    before = page.inner_text("#kpi-closures")
    assert before == f"{sum(r['closures'] for r in fetch_rows(api, 'channel_type', 'all')):,}"

    pipeline(webhooks(seed=22, events=3_000, start=1_714_000_000 + 3 * 86400))  # later data arrives
    after = f"{sum(r['closures'] for r in fetch_rows(api, 'channel_type', 'all')):,}"
    assert after != before
    page.wait_for_function(
        f"document.getElementById('kpi-closures').textContent === '{after}'", timeout=30_000
    )
    refreshed(page)
    check_charts(page, api, "1h", 48)  # the charts moved on to the new newest hour
    page.close()


def test_the_dashboard_asks_for_a_token_and_shows_what_it_may_read(
    browser: BrowserContext, kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """With a tokens file: the page asks for a token (kept for the tab only); a global token
    sees everything; a token scoped to one account sees that account's row alone, and no
    cross-tenant section; an unknown or an expired token is said to be refused, and why."""
    from consumer.serve.tokens import new_token

    global_token, global_line = new_token()
    account = 7
    scoped_token, scoped_line = new_token(str(account))
    pair_token, pair_line = new_token(f"{account},8")  # a tenant of two accounts
    expired_token, expired_line = new_token(str(account), expires=1_700_000_000)  # 2023-11-14T22:13:20Z
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{global_line}\n{scoped_line}\n{pair_line}\n{expired_line}\n")
    topic = new_topic(3, prefix="dashboard-tokens")
    store = tmp_path / "metrics.db"
    port = free_port()
    proc = ConsumerProcess(
        kafka_bootstrap,
        topic,
        store,
        tmp_path / "c.log",
        http_port=port,
        extra=["--tokens-file", str(tokens)],
    )
    api = f"http://127.0.0.1:{port}"
    try:
        produce_webhooks(kafka_bootstrap, topic, webhooks(seed=31, events=2_000, start=1_714_000_000))
        wait_caught_up(kafka_bootstrap, topic, store, [proc])
        assert httpx.get(f"{api}/v1/summary").status_code == 401
        r = httpx.get(
            f"{api}/v1/closures",
            params={"by": "account"},
            headers={"Authorization": f"Bearer {expired_token}"},
        )
        assert r.status_code == 401 and r.json()["reason"] == "token expired at 2023-11-14T22:13:20Z", r.text
        as_global = {"Authorization": f"Bearer {global_token}"}
        total = httpx.get(f"{api}/v1/summary", headers=as_global).json()["totals"]["closures"]
        params = {"by": "account", "window": "all", "key": str(account)}
        (mine,) = httpx.get(f"{api}/v1/closures", params=params, headers=as_global).json()["rows"]

        def sign_in(token: str) -> Page:
            page = browser.new_page()  # a new tab: its sessionStorage starts empty
            page.goto(f"{api}/?refresh=1")
            page.wait_for_selector("#token-card:not([hidden])", timeout=30_000)
            assert page.inner_text("#status") == "This API needs a token"
            page.fill("#token-input", token)
            page.click("#token-form button[type=submit]")
            return page

        page = sign_in(global_token)
        page.wait_for_function("window.convmetrics.refreshes >= 1", timeout=30_000)
        assert page.inner_text("#kpi-closures") == f"{total:,}" and page.is_visible("#closures-chart")
        page.close()

        page = sign_in(scoped_token)
        page.wait_for_function(
            "window.convmetrics.refreshes >= 1 && window.convmetrics.scoped", timeout=30_000
        )
        rows = table(page, "#accounts")
        assert [r[:2] for r in rows] == [[str(account), f"{mine['closures']:,}"]]
        assert page.inner_text("#kpi-accounts") == "1"
        assert not page.is_visible("#closures-chart") and not page.is_visible("#channels")
        assert not page.is_visible("#kpi-closures")
        # the grouped table: the groupings by account only, this account's rows only
        options = page.eval_on_selector_all("#group option", "os => os.map(o => o.value)")
        assert options == ["account", "account,channel_type", "inbox"]
        head, rows = grouped_view(page, "account", {"account": str(account)})
        assert [r[: head.index("closures") + 1] for r in rows] == [[str(account), f"{mine['closures']:,}"]]
        page.click("#grouped tbody tr:first-child td:first-child")  # its own channel types
        _, rows = grouped_view(page, "account,channel_type", {"account": str(account)})
        assert rows and {r[0] for r in rows} == {str(account)}
        # sized windows too, ending with the account's own newest (it may not read the data's)
        newest = {}
        for size in ("1d", "1h", "1m"):
            mine_rows = httpx.get(
                f"{api}/v1/metrics",
                params={"group": "account", "window": size, "account": str(account), "limit": "100000"},
                headers=as_global,
            ).json()["rows"]
            newest[size] = max(r["window_start"] for r in mine_rows)
        summary_newest = httpx.get(f"{api}/v1/summary", headers=as_global).json()["newest"]
        assert newest["1m"] != summary_newest["1m"]  # the account's newest is not the data's
        as_scoped = {"Authorization": f"Bearer {scoped_token}"}
        check_sized_windows(
            page, api, "account,channel_type", {"account": str(account)}, headers=as_scoped, newest=newest
        )
        page.close()

        # a token of two accounts: the API wants account= (one at a time), so the grouped table
        # and the backlog start on the busiest of its accounts, not on the API's 400
        page = sign_in(pair_token)
        page.wait_for_function(
            "window.convmetrics.refreshes >= 1 && window.convmetrics.scoped", timeout=30_000
        )
        accounts = [r[0] for r in table(page, "#accounts")]
        assert sorted(accounts) == sorted([str(account), "8"]), accounts
        head, rows = grouped_view(page, "account", {"account": accounts[0]})
        assert [r[0] for r in rows] == [accounts[0]] and not page.inner_text("#grouped-note").startswith(
            "Cannot"
        )
        assert "Cannot" not in page.inner_text("#backlog-card"), page.inner_text("#backlog-card")
        page.select_option("#group", "inbox")
        _, rows = grouped_view(page, "inbox", {"account": accounts[0]})
        assert rows and {r[0] for r in rows} == {accounts[0]}
        page.close()

        page = sign_in("not-a-token")
        page.wait_for_function(
            "document.getElementById('token-note').textContent.includes('not accepted (unknown token).')"
        )
        page.close()
        page = sign_in(expired_token)
        page.wait_for_function(
            "document.getElementById('token-note').textContent"
            ".includes('not accepted (token expired at 2023-11-14T22:13:20Z).')"
        )
        assert not page.is_visible("#accounts")
        page.close()

        # "Change token" forgets this tab's token and asks again, on a fresh page
        page = sign_in(global_token)
        page.wait_for_function("window.convmetrics.refreshes >= 1", timeout=30_000)
        page.click("#forget-token")
        page.wait_for_selector("#token-card:not([hidden])", timeout=30_000)
        assert page.evaluate("sessionStorage.length") == 0 and not page.is_visible("#accounts")
        page.close()

        # a token revoked while its page is open: asked again, and what it read goes out of sight
        page = sign_in(scoped_token)
        page.wait_for_function(
            "window.convmetrics.refreshes >= 1 && window.convmetrics.scoped", timeout=30_000
        )
        assert page.is_visible("#accounts")
        tokens.write_text(f"{global_line}\n{pair_line}\n")
        page.wait_for_selector("#token-card:not([hidden])", timeout=30_000)
        assert not page.is_visible("#accounts") and not page.is_visible("#grouped")
        page.close()
    finally:
        proc.stop()


def test_a_flood_of_channel_types_leaves_everything_usable(
    browser: BrowserContext, kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """50,000 distinct (valid) channel types through the gateway: the consumer counts them
    all, the API pages through them, /metrics and /v1/summary stay bounded (the busiest 200
    by name, the rest under _other) and the dashboard still draws, counting them all."""
    from test_gateway import seed

    from support.gateway import GatewayProcess

    names = 50_000
    topic = new_topic(3, prefix="flood")
    gateway = GatewayProcess(kafka_bootstrap, topic)
    store = tmp_path / "metrics.db"
    port = free_port()
    proc = ConsumerProcess(kafka_bootstrap, topic, store, tmp_path / "c.log", http_port=port)
    api = f"http://127.0.0.1:{port}"
    try:
        bodies = []
        for i in range(names):
            body = seed()
            body["data"]["id"] = i + 1
            body["data"]["channelType"] = f"FLOOD_{i:05d}"
            bodies.append(body)
        with httpx.Client(base_url=gateway.url, timeout=120) as client:
            for i in range(0, names, 2_500):
                lines = b"\n".join(orjson.dumps(b) for b in bodies[i : i + 2_500])
                r = client.post(
                    "/webhooks/batch", content=lines, headers={"content-type": "application/x-ndjson"}
                )
                assert r.status_code == 202, r.text[:300]
        wait_caught_up(kafka_bootstrap, topic, store, [proc])

        assert len(fetch_rows(api, "channel_type", "all")) == names  # every name, paged
        summary = httpx.get(f"{api}/v1/summary", timeout=120).json()
        assert len(summary["channel_types"]) == 201 and summary["channel_types"][-1]["key"] == "_other"
        assert summary["channel_types_folded"] == names - 200
        assert summary["totals"]["closures"] == names == sum(r["closures"] for r in summary["channel_types"])
        metrics = httpx.get(f"{api}/metrics", timeout=120).text
        # bounded: 201 channel types' series, ~250 kB with every metric of the full set (all
        # 50,000 names would be ~60 MB)
        assert len(metrics) < 400_000 and f"convmetrics_channel_types_folded {float(names - 200)}" in metrics
        assert 'channel_type="_other"' in metrics and 'channel_type="FLOOD_00199"' in metrics
        assert 'channel_type="FLOOD_00200"' not in metrics  # ties by name: the first 200 are named

        page = open_dashboard(browser, api)
        assert page.inner_text("#kpi-channels") == f"{names:,}"
        assert page.inner_text("#kpi-closures") == f"{names:,}"
        assert len(table(page, "#channels")) == 201
        page.close()
    finally:
        gateway.stop()
        proc.stop()


def test_live_backlog_shows_the_apis_gauges_by_each_grouping(
    browser: BrowserContext, pipeline: Callable[[list[dict[str, Any]]], str]
) -> None:
    """`--metric-set full`: the live backlog card offers the set's groupings; each one's table
    holds `/v1/backlog`'s rows (which equal the oracle's, brute force over the webhooks) and
    its tiles their totals."""
    from consumer.fold.registry import REGISTRY
    from support.truth import GAUGES, compute_backlog

    hooks = webhooks(seed=43, events=3_000, start=1_714_000_000)
    api = pipeline(hooks)
    truth = compute_backlog(hooks)
    page = open_dashboard(browser, api)
    assert page.is_visible("#backlog-card")
    options = page.eval_on_selector_all("#backlog-group option", "os => os.map(o => o.value)")
    assert options == [g.name for g in REGISTRY.groupings]
    for g in REGISTRY.groupings:
        page.select_option("#backlog-group", g.name)
        page.wait_for_function(
            "g => window.convmetrics.backlogShown && window.convmetrics.backlogShown.group === g",
            arg=g.name,
            timeout=30_000,
        )
        body = httpx.get(f"{api}/v1/backlog", params={"group": g.name}, timeout=30).json()
        got = {"|".join(str(v) for v in r["key"].values()): tuple(r[n] for n in GAUGES) for r in body["rows"]}
        assert got == {k: v for (by, k), v in truth.items() if by == g.name} and got, g.name
        want = [[*(str(v) for v in r["key"].values()), *(f"{r[n]:,}" for n in GAUGES)] for r in body["rows"]]
        assert table(page, "#backlog") == want, g.name
        totals = [page.inner_text(f"#backlog-{n}") for n in GAUGES]
        assert totals == [f"{sum(r[n] for r in body['rows']):,}" for n in GAUGES], g.name
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator("#backlog-card").screenshot(path=str(ARTIFACTS / "dashboard-backlog.png"))
