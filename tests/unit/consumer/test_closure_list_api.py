"""`GET /v1/closures/conversations` in process: the rows' fields, [from, to), filters,
paging across a same-second tie, a late earlier closure taking first_close over, bad
parameters named, tokens scoped to accounts, a store without inboxes. The pipeline test
(tests/integration/test_closure_list.py) holds it to the oracle on both stores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from consumer.fold import PartitionFold
from consumer.fold.model import CLOSED, CREATED, Event, event_hash
from consumer.fold.registry import CLOSURES, REGISTRY, Registry
from consumer.serve.api import create_app
from consumer.serve.tokens import Tokens, digest
from consumer.store import PartitionCommit
from consumer.store.sqlite import SqliteStore

T = 1_699_920_000


def ev(kind: int, event_id: str, t: int, *, account: int = 7, conv: int = 1, inbox: int | None = 30) -> Event:
    ch = "SMS" if conv % 2 else "VIBER"
    return Event(kind, event_hash(event_id), account, conv, ch, t, None, None, None, inbox, 1, None, event_id)


def commit(path: Path, events: list[Event], registry: Registry = REGISTRY, offset: int = 1) -> None:
    store = SqliteStore(str(path), registry=registry)
    store.check_topic("events")
    loaded = store.load_partition("events", 0)
    fold = PartitionFold(0, dict(loaded.conversations), loaded.watermark, registry=registry)
    for e in events:
        fold.apply(e)
    delta, changed = fold.take_changes()
    store.commit("events", [PartitionCommit(0, delta, offset, fold.watermark, changed)])
    store.close()


def get(
    path: Path, tokens: Tokens | None = None, token: str | None = None, registry: Registry = REGISTRY,
    **params: Any,
) -> Any:  # fmt: skip
    c = TestClient(create_app(lambda: SqliteStore(str(path), registry=registry), tokens=tokens))
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return c.get("/v1/closures/conversations", params=params, headers=headers)


FIRST = [
    ev(CREATED, "c1", T),
    ev(CLOSED, "k-b", T + 100),
    ev(CLOSED, "k-c", T + 100),  # same second as k-b: k-b (the smaller id) is the first
    ev(CLOSED, "k-d", T + 200),
    ev(CREATED, "c2", T + 5, conv=2, inbox=None),
    ev(CLOSED, "k-a", T + 100, conv=2, inbox=None),
    ev(CLOSED, "x-1", T + 100, account=8, conv=1),  # another account
]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "m.db"
    commit(path, FIRST)
    return path


def ids(body: dict[str, Any]) -> list[tuple[str, bool]]:
    return [(r["event_id"], r["first_close"]) for r in body["rows"]]


def test_rows_sorted_by_time_then_id_with_first_close_and_paged(db: Path) -> None:
    body = get(db, account=7, **{"from": T, "to": T + 201}).json()
    assert body["next"] is None
    assert body["rows"][0] == {
        "account": 7, "conversation": 2, "event_id": "k-a", "channel_type": "VIBER", "inbox": None,
        "closed_at": T + 100, "time_to_close": 95, "first_close": True,
    }  # fmt: skip
    assert ids(body) == [("k-a", True), ("k-b", True), ("k-c", False), ("k-d", False)]
    # [from, to): a closure at `to` is left out, one at `from` kept
    assert ids(get(db, account=7, **{"from": T + 100, "to": T + 200}).json()) == ids(body)[:3]
    # pages of one cross the same-second tie in the same order
    seen, params = [], {"account": 7, "from": T, "to": T + 201, "limit": 1}
    while True:
        page = get(db, **params).json()
        seen += ids(page)
        if not page["next"]:
            break
        params["cursor"] = page["next"]
    assert seen == ids(body)
    assert ids(get(db, account=7, inbox=30, **{"from": T, "to": T + 201}).json()) == ids(body)[1:]
    assert ids(get(db, account=7, channel_type="VIBER", **{"from": T, "to": T + 201}).json()) == ids(body)[:1]


def test_a_late_earlier_closure_takes_first_close_over(db: Path) -> None:
    commit(db, [ev(CLOSED, "k-z", T + 50)], offset=2)  # earlier in time, larger id
    commit(db, [ev(CLOSED, "k-0", T + 200)], offset=3)  # the same second as k-d, smaller id: not first
    body = get(db, account=7, **{"from": T, "to": T + 201}).json()
    assert ids(body) == [
        ("k-z", True),
        ("k-a", True),
        ("k-b", False),
        ("k-c", False),
        ("k-0", False),
        ("k-d", False),
    ]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"from": T, "to": T + 1}, "account is required"),
        ({"account": "x", "from": T, "to": T + 1}, "account must be an integer"),
        ({"account": 2**63, "from": T, "to": T + 1}, "account must fit in 64 bits"),
        ({"account": 7, "to": T + 1}, "from is required"),
        ({"account": 7, "from": T}, "to is required"),
        ({"account": 7, "from": T, "to": T - 1}, "is before from"),
        ({"account": 7, "from": T, "to": T + 1, "limit": 0}, "limit must be between"),
        ({"account": 7, "from": T, "to": T + 1, "limit": 10_001}, "limit must be between"),
        ({"account": 7, "from": T, "to": T + 1, "inbox": "a"}, "inbox must be an integer"),
        ({"account": 7, "from": T, "to": T + 1, "channel_type": "X" * 1001}, "channel_type must be"),
        ({"account": 7, "from": T, "to": T + 1, "cursor": "nope"}, "cursor"),
        ({"account": 7, "from": T, "to": T + 1, "window": "1h"}, "unknown parameter(s) window"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(db: Path, params: dict[str, Any], named: str) -> None:
    r = get(db, **params)
    assert r.status_code == 400 and named in r.json()["error"], r.text


def test_limits_at_their_bounds_are_accepted(db: Path) -> None:
    for limit in (1, 10_000):
        assert get(db, account=7, limit=limit, **{"from": T, "to": T}).json()["rows"] == []


def test_a_scoped_token_reads_its_own_accounts(db: Path, tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"{digest('t-seven')} 7\n{digest('all')} *\n")
    tokens = Tokens(path)
    span = {"from": T, "to": T + 201}
    assert len(get(db, tokens, "t-seven", account=7, **span).json()["rows"]) == 4
    assert get(db, tokens, "t-seven", account=8, **span).status_code == 403
    assert get(db, tokens, "t-seven", **span).status_code == 400  # account is required
    assert get(db, tokens, None, account=7, **span).status_code == 401
    assert len(get(db, tokens, "all", account=8, **span).json()["rows"]) == 1


def test_a_store_without_inboxes_refuses_an_inbox_filter(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    commit(path, FIRST, registry=CLOSURES)
    span = {"account": 7, "from": T, "to": T + 201}
    body = get(path, registry=CLOSURES, **span).json()
    assert ids(body) == [("k-a", True), ("k-b", True), ("k-c", False), ("k-d", False)]
    assert {r["inbox"] for r in body["rows"]} == {None}
    r = get(path, registry=CLOSURES, inbox=30, **span)
    assert r.status_code == 400 and "inbox" in r.json()["error"] and "--metric-set" in r.json()["error"]
