"""From HTTP to the metrics API: webhooks posted to a real gateway, counted exactly by a
real consumer on each store (SQLite, PostgreSQL), read back through the API."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from convmetrics.generate import GenerateConfig, generate_webhooks
from support.gateway import GatewayProcess, free_port
from support.pipeline import ConsumerProcess, compare_with_truth, fetch_rows, wait_caught_up
from support.truth import compute_truth, dedupe, late_corrections


@pytest.fixture
def gateway(kafka_bootstrap: str, new_topic: Callable[..., str]) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(kafka_bootstrap, new_topic(6, prefix="e2e"))
    yield gw
    gw.stop()


def post_one(client: httpx.Client, body: dict[str, Any]) -> None:
    for _ in range(20):
        r = client.post("/webhooks", content=orjson.dumps(body), headers={"content-type": "application/json"})
        if r.status_code != 503:
            assert r.status_code == 202, r.text
            return
    raise AssertionError("gateway kept answering 503")


@pytest.mark.parametrize("store_kind", ["sqlite", "postgresql"])
def test_webhooks_over_http_are_counted_exactly(
    kafka_bootstrap: str,
    gateway: GatewayProcess,
    tmp_path: Path,
    store_kind: str,
    request: pytest.FixtureRequest,
) -> None:
    cfg = GenerateConfig(seed=99, events=8_000, accounts=25, conversations=1_500, duplicate_rate=0.05,
                         late_rate=0.05, unknown_channel_rate=0.05, noise_rate=0.05)  # fmt: skip
    webhooks = [dict(w) for w in generate_webhooks(cfg)]
    late_close, late_created = late_corrections(webhooks)
    assert late_close > 0 and late_created > 0  # a first close retracted, a first assignment waiting
    retried = random.Random(5).sample(webhooks, 200)  # senders retry after a lost answer
    half = len(webhooks) // 2
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        with ThreadPoolExecutor(8) as pool:  # single webhooks, many in flight at once
            list(pool.map(lambda b: post_one(client, b), webhooks[:half]))
        rest = webhooks[half:] + retried
        for i in range(0, len(rest), 500):  # and batches (NDJSON), as a backfill would
            body = b"\n".join(orjson.dumps(w) for w in rest[i : i + 500])
            r = client.post("/webhooks/batch", content=body, headers={"content-type": "application/x-ndjson"})
            assert r.status_code == 202, r.text[:500]
    api_port = free_port()
    store: Path | str = tmp_path / "m.db"
    if store_kind == "postgresql":  # the server only where it is asked for
        store = request.getfixturevalue("postgres").new_database("e2e")
    consumer = ConsumerProcess(kafka_bootstrap, gateway.topic, store, tmp_path / "c.log", http_port=api_port)
    try:
        wait_caught_up(kafka_bootstrap, gateway.topic, store, [consumer])
        compare_with_truth(f"http://127.0.0.1:{api_port}", compute_truth(webhooks + retried))
        # v2 records carry the gateway's receive time: ingest lag per channel type
        rows = fetch_rows(f"http://127.0.0.1:{api_port}", "channel_type", "all")
        lags = {r["key"]: r["ingest_lag"] for r in rows}
        expected = Counter(
            w["data"]["channelType"] for w in dedupe(webhooks) if w["event"].startswith("conversation.")
        )
        assert {k: v["count"] for k, v in lags.items()} == dict(expected)
        now_lag = time.time() - cfg.start  # generated events are older than the run by about this
        for lag in lags.values():
            assert now_lag - 60 * 86400 < lag["p50"] <= lag["max"] < now_lag + 60
    finally:
        assert consumer.stop() == 0, consumer.tail()
