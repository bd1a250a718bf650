"""deploy/compose.yaml on a real Docker engine: webhooks in over HTTP to the gateway's
container, exact numbers out of the serve container's API (the oracle: support/truth.py),
through two consumer containers in one group; one of them killed (SIGKILL) mid-stream and
the numbers still exact."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from convmetrics.generate import GenerateConfig, generate_webhooks
from support.compose import PASSWORD, ComposeStack, docker
from support.pipeline import compare_with_truth, stored_offsets, wait_caught_up, wait_progress
from support.truth import compute_truth

TOPIC = "conversation-events"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ComposeStack]:
    stack = ComposeStack(tmp_path)
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


def post_batches(gateway: str, webhooks: list[dict[str, Any]], size: int = 250) -> None:
    with httpx.Client(base_url=gateway, timeout=60) as client:
        for i in range(0, len(webhooks), size):
            body = b"\n".join(orjson.dumps(w) for w in webhooks[i : i + size])
            r = client.post("/webhooks/batch", content=body, headers={"content-type": "application/x-ndjson"})
            assert r.status_code == 202, r.text[:500]


def assignment(log: str) -> set[int]:
    """A consumer's partitions now: its log's last `assigned [(1, -2), (3, -2)]` (the group's
    eager round-robin rebalances assign every partition anew)."""
    found = re.findall(r"assigned \[([^\]]*)\]", log)
    return {int(p) for p in re.findall(r"\((\d+),", found[-1])} if found else set()


def test_the_stack_counts_webhooks_exactly_with_a_consumer_killed(stack: ComposeStack) -> None:
    cfg = GenerateConfig(seed=19, events=6_000, accounts=20, conversations=1_200, duplicate_rate=0.05,
                         late_rate=0.05, unknown_channel_rate=0.05, noise_rate=0.05)  # fmt: skip
    webhooks = [dict(w) for w in generate_webhooks(cfg)]
    half = len(webhooks) // 2
    for service in ("gateway", "consumer-1", "consumer-2", "serve"):  # the image's user, not root
        assert docker("exec", stack.container(service), "id", "-u").strip() == "10001", service
    # the two consumers of the group split the gateway's 6-partition topic
    deadline = time.monotonic() + 60
    while True:
        one, two = assignment(stack.logs("consumer-1")), assignment(stack.logs("consumer-2"))
        if one and two and one | two == set(range(6)) and not one & two:
            break
        assert time.monotonic() < deadline, f"assignments {one} and {two}\n{stack.logs()[-5000:]}"
        time.sleep(0.5)
    post_batches(stack.gateway, webhooks[:half])
    wait_progress(stack.store, at_least=half // 4)
    # a crash, not a stop: SIGKILL to the consumer's process, whatever it was doing
    docker("kill", "--signal", "KILL", stack.container("consumer-1"))
    post_batches(stack.gateway, webhooks[half:])
    wait_caught_up(stack.bootstrap, TOPIC, stack.store, [], timeout=240)
    assert sum(stored_offsets(stack.store).values()) > 0
    compare_with_truth(stack.api, compute_truth(webhooks))
    # consumer-1 stays dead (a `docker kill` is a manual stop for `restart: unless-stopped`),
    # so its partitions moved: consumer-2 holds all six
    state = docker("inspect", "-f", "{{.State.Status}}", stack.container("consumer-1")).strip()
    assert state == "exited", state
    assert assignment(stack.logs("consumer-2")) == set(range(6)), stack.logs("consumer-2")[-3000:]
    # the store's password reaches the services through CONVMETRICS_STORE, never their logs
    assert PASSWORD not in stack.logs()
