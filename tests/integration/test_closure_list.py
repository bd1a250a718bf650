"""`GET /v1/closures/conversations` on a real pipeline (a real Kafka broker, a consumer
process with its API, real HTTP) on SQLite and PostgreSQL, held to a brute-force oracle over
the event list (tests/support/truth.py): every account's closures, page by page, and after
late earlier closures arrive, the first_close they take over."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from convmetrics.generate import GenerateConfig, generate_webhooks
from support.gateway import free_port
from support.pipeline import ConsumerProcess, all_pages, produce_webhooks, wait_caught_up
from support.truth import closure_list_truth


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """A SQLite file, or a PostgreSQL URL (`ConsumerProcess` and `wait_caught_up` take either)."""
    if request.param == "sqlite":
        return tmp_path / "m.db"
    return str(request.getfixturevalue("postgres_url"))


def listed(api: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every closure the endpoint lists for `params`, following `next` (small pages: the
    cursor is crossed many times, same-second ties included)."""
    return all_pages(api, "/v1/closures/conversations", params)


def check(api: str, truth: list[dict[str, Any]]) -> None:
    """Each account's closures over the whole span, one inbox's and one channel type's
    over a window in the middle: as the oracle lists them, in its order."""
    lo, hi = truth[0]["closed_at"], truth[-1]["closed_at"] + 1
    for account in sorted({c["account"] for c in truth}):
        mine = [c for c in truth if c["account"] == account]
        assert listed(api, {"account": account, "from": lo, "to": hi, "limit": 7}) == mine
    account = truth[len(truth) // 2]["account"]
    mid = truth[len(truth) // 2]["closed_at"]
    span = {"account": account, "from": mid - 86_400, "to": mid, "limit": 5}  # [from, to): mid left out
    for name in ("inbox", "channel_type"):
        value = truth[len(truth) // 2][name]
        want = [c for c in truth if c["account"] == account and c[name] == value
                and mid - 86_400 <= c["closed_at"] < mid]  # fmt: skip
        assert listed(api, {**span, name: value}) == want


def test_closures_behind_a_number_match_the_oracle_through_late_earlier_closures(
    kafka_bootstrap: str, new_topic: Callable[..., str], store: Path | str, tmp_path: Path
) -> None:
    cfg = GenerateConfig(
        seed=151, events=2500, accounts=6, conversations=400, duplicate_rate=0.05, late_rate=0.2,
        same_second_rate=0.1, span=2 * 86_400,
    )  # fmt: skip
    hooks = [dict(w) for w in generate_webhooks(cfg)]
    # the first part, then the rest: closures of the rest that are earlier than a closure of
    # the same conversation already counted take its first_close over
    half = len(hooks) // 2
    # and the tie: for a few first closes of the first part, a closure in the same second
    # with a smaller id (it takes over) and one with a larger id (it does not), in the rest
    firsts = [c for c in closure_list_truth(hooks[:half]) if c["first_close"]][:4]
    by_id = {h["id"]: h for h in hooks}
    ties = [
        {**by_id[c["event_id"]], "id": mark + c["event_id"]} for c in firsts for mark in ("~", "!")
    ]  # "!" < every id character < "~"
    hooks += ties
    topic = new_topic(3, prefix="closurelist")
    api_port = free_port()
    consumer = ConsumerProcess(kafka_bootstrap, topic, store, tmp_path / "c.log", http_port=api_port)
    api = f"http://127.0.0.1:{api_port}"
    try:
        produce_webhooks(kafka_bootstrap, topic, hooks[:half])
        wait_caught_up(kafka_bootstrap, topic, store, [consumer])
        before = closure_list_truth(hooks[:half])
        check(api, before)
        produce_webhooks(kafka_bootstrap, topic, hooks[half:])
        wait_caught_up(kafka_bootstrap, topic, store, [consumer])
        after = closure_list_truth(hooks)
        check(api, after)
    finally:
        assert consumer.stop() == 0, consumer.tail()
    was_first = {c["event_id"] for c in before if c["first_close"]}
    flipped = [c for c in after if c["event_id"] in was_first and not c["first_close"]]
    assert flipped, "the stream had no late earlier closure"
    # same second: the smaller id is the first close, the larger one is not
    taken = {c["event_id"]: c["first_close"] for c in after}
    for c in firsts:
        assert (taken[c["event_id"]], taken["!" + c["event_id"]], taken["~" + c["event_id"]]) == (
            False, True, False,
        )  # fmt: skip
