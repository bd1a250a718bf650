"""A property-based run over the consumer API's parameters, on a live server (uvicorn on a
loopback port, real HTTP) over a filled SQLite store: whatever the parameters, valid or
not, in range or far beyond 64 bits, no answer is a 5xx; a refusal is a 400 whose error
names a parameter or the query's values."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.fold import PartitionFold
from consumer.fold.model import CLOSED, CREATED, OPENED, Event
from consumer.fold.registry import REGISTRY
from consumer.fold.windows import WINDOWS
from consumer.serve.server import serve_in_thread
from consumer.store import PartitionCommit
from consumer.store.sqlite import SqliteStore
from support.gateway import free_port

DAY = 1_699_920_000


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    path: Path = tmp_path_factory.mktemp("api") / "m.db"
    store = SqliteStore(str(path))
    store.check_topic("events")
    fold = PartitionFold(0)
    h = 0
    for conv in range(1, 40):
        for kind, dt in ((CREATED, 0), (CLOSED, 300 * conv), (OPENED, 400 * conv), (CLOSED, 500 * conv)):
            h += 1
            t = DAY + conv * 977 + dt
            fold.apply(Event(kind, h, conv % 5, conv, ("EMAIL", "SMS", "WÉB")[conv % 3], t, None, t - 9, None,
                             conv % 4, conv % 2))  # fmt: skip
    delta, changed = fold.take_changes()
    store.commit("events", [PartitionCommit(0, delta, h, fold.watermark, changed)])
    store.close()
    port = free_port()
    server, thread = serve_in_thread(f"sqlite:///{path}", "127.0.0.1", port)
    deadline = time.monotonic() + 30
    while not server.started:  # bounded: the server says when it listens
        assert time.monotonic() < deadline and thread.is_alive(), "the API did not start"
        time.sleep(0.02)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client
    server.should_exit = True
    thread.join(30)
    assert not thread.is_alive()


I64 = 2**63
#: integers at the boundaries, inside the data's days, anywhere in 64 bits, and beyond
integers = st.one_of(
    st.sampled_from([0, 1, -1, I64 - 1, I64, -I64, -I64 - 1, 10**20, -(10**20), DAY, DAY + 3600]),
    st.integers(DAY - 86400, DAY + 86400),
    st.integers(-I64, I64 - 1),
    st.integers(I64, 2**70),
    st.integers(-(2**70), -I64 - 1),
).map(str)
junk = st.text(max_size=30) | st.sampled_from(["", " ", "1e3", "0x10", "1.5", "+5", "-0", "١٢", "NaN", "%00"])


def cursor_of(payload: Any) -> str:
    """A cursor as the API encodes one (JSON, URL-safe base64), of any payload: integers
    beyond 64 bits too (so `json`, not orjson)."""
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


cursors = (
    st.builds(
        cursor_of,
        st.lists(st.one_of(st.integers(-(2**70), 2**70), st.text(max_size=5), st.none()), max_size=3),
    )
    | st.builds(cursor_of, st.dictionaries(st.text(max_size=5), st.integers(-(2**70), 2**70), max_size=2))
    | junk
)
dimensions = [d.name for d in REGISTRY.dimensions]
groupings = [g.name for g in REGISTRY.groupings]
values = {
    "by": st.sampled_from([*groupings, "channel-type", "ACCOUNT", ""]) | junk,
    "group": st.sampled_from([*groupings, "channel-type", ""]) | junk,
    "window": st.sampled_from([*WINDOWS, "2h", ""]) | junk,
    "key": integers | st.sampled_from(["EMAIL", "SMS", "WÉB", "1", "7"]),
    "keys": st.lists(integers | st.sampled_from(["EMAIL", "SMS"]) | junk, max_size=4).map(",".join)
    | st.just(",".join(["x"] * 1001)),
    "from": integers | integers | junk,
    "to": integers | integers | junk,
    "limit": integers | st.sampled_from(["100000", "100001"]) | junk,
    "cursor": cursors,
    "sort": st.sampled_from([*REGISTRY.rankable, *(f"-{r}" for r in REGISTRY.rankable)]) | junk,
    "contains": junk,
    **{d: integers | st.sampled_from(["EMAIL", "SMS", "7"]) for d in dimensions},
}


def some(names: list[str], at_most: int) -> st.SearchStrategy[dict[str, str]]:
    """Some of `names`, each with a value from its strategy (junk for a name it has none)."""
    chosen = st.lists(st.sampled_from(names), max_size=at_most, unique=True)
    return chosen.flatmap(lambda ns: st.fixed_dictionaries({n: values.get(n, junk) for n in ns}))


def valid(**choices: list[str]) -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries({name: st.sampled_from(options) for name, options in choices.items()})


#: the parameters a page reads first are valid most of the time, so that what follows them
#: (from, to, key, cursor, limit, sort, filters) is parsed too, in range or not
closures = st.tuples(
    valid(by=groupings, window=list(WINDOWS)) | some(["by", "window"], 2),
    some(["key", "keys", "from", "to", "limit", "cursor", "sort", "contains"], 4),
).map(lambda t: {**t[0], **t[1]})
metrics = st.tuples(
    valid(group=groupings, window=list(WINDOWS)) | some(["group", "window"], 2),
    some(["from", "to", "limit", "cursor", *dimensions], 4),
).map(lambda t: {**t[0], **t[1]})
conversations = st.tuples(
    valid(account=["1", "2", "4"], **{"from": [str(DAY - 86400)], "to": [str(DAY + 86400)]})
    | some(["account", "from", "to"], 3),
    some(["channel_type", "inbox", "limit", "cursor"], 3),
).map(lambda t: {**t[0], **t[1]})
PATHS = [
    "/v1/closures",
    "/v1/closures/conversations",
    "/v1/metrics",
    "/v1/metric-set",
    "/v1/summary",
    "/metrics",
    "/healthz",
    "/readyz",
]
requests = (
    st.tuples(st.just("/v1/closures"), closures)
    | st.tuples(st.just("/v1/metrics"), metrics)
    | st.tuples(st.just("/v1/closures/conversations"), conversations)
    | st.tuples(st.sampled_from(PATHS), some([*values, "x", "page"], 3))  # anything anywhere
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests)
def test_no_parameters_make_a_5xx(api: httpx.Client, request: tuple[str, dict[str, str]]) -> None:
    path, query = request
    r = api.get(path, params=query)
    assert r.status_code < 500, (path, query, r.status_code, r.text[:500])
    if r.status_code == 400:
        assert r.json()["error"], (path, query)
    else:
        assert r.status_code == 200, (path, query, r.status_code, r.text[:500])


def test_the_run_reaches_answers_and_refusals(api: httpx.Client) -> None:
    """The strategies reach both sides of the parsing (a run of only 400s would prove little)."""
    ok = api.get("/v1/closures", params={"by": "account", "window": "1h", "from": str(DAY), "limit": "5"})
    assert ok.status_code == 200 and ok.json()["rows"]
    page = api.get("/v1/closures", params={"by": "account", "window": "1h", "limit": "2"}).json()
    assert (
        api.get("/v1/closures", params={"by": "account", "window": "1h", "cursor": page["next"]}).status_code
        == 200
    )
    assert api.get("/v1/metrics", params={"group": "account", "window": "all"}).status_code == 200
    span = {"account": "1", "from": str(DAY), "to": str(DAY + 86400)}
    listed = api.get("/v1/closures/conversations", params={**span, "limit": "2"}).json()
    assert len(listed["rows"]) == 2 and listed["next"]
    after = api.get("/v1/closures/conversations", params={**span, "limit": "2", "cursor": listed["next"]})
    assert after.status_code == 200 and after.json()["rows"]
    for query in (
        {**span, "account": str(I64)},
        {**span, "to": str(DAY - 1)},
        {**span, "limit": "10001"},
        {**span, "cursor": cursor_of([DAY, "x", I64])},
        {"from": str(DAY), "to": str(DAY + 1)},
    ):
        r = api.get("/v1/closures/conversations", params=query)
        assert r.status_code == 400, (query, r.text)
    refused = [
        {"by": "account", "window": "1h", "from": str(I64)},
        {"group": "account", "window": "1d", "account": str(-I64 - 1)},
        {"by": "account", "window": "1m", "cursor": cursor_of([I64, "x"])},
    ]
    for query in refused:
        r = api.get("/v1/closures" if "by" in query else "/v1/metrics", params=query)
        assert r.status_code == 400, (query, r.text)
