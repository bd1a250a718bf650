"""The demo's timing (events around the present) and its flags, without running it
(tests/integration/test_demo.py runs it)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from convmetrics.cli import main
from convmetrics.demo import (
    BACKFILL_SECONDS,
    LIVE_ID_OFFSET,
    DemoOptions,
    backfill_config,
    due,
    live_config,
    live_items,
)
from convmetrics.generate import generate_webhooks

NOW = 1_796_000_000


def sent(webhooks: list[dict[str, Any]]) -> list[int]:
    """When each conversation event was first sent (its event time, plus 0 to 2 s), but the
    assignments: the generator stamps a few before their conversation's creation."""
    conversation = [w for w in webhooks if w["event"].startswith("conversation.")]
    return [w["firstDeliveryAttempt"] for w in conversation if w["event"] != "conversation.assigned"]


def test_the_backfill_covers_the_two_days_up_to_now() -> None:
    cfg = backfill_config(DemoOptions(events=3000), NOW)
    assert (cfg.start, cfg.start + cfg.span) == (NOW - BACKFILL_SECONDS, NOW)
    t = sent(list(generate_webhooks(cfg)))
    assert min(t) >= NOW - BACKFILL_SECONDS and max(t) <= NOW + 2  # up to now, none in the future
    assert max(t) >= NOW - 3600  # and it reaches the present: the last hour has events


def test_the_live_trickle_starts_now_at_its_rate_apart_from_the_backfills_conversations() -> None:
    opts = DemoOptions(events=3000, live_rate=20)
    cfg = live_config(opts, NOW)
    assert cfg.start == NOW and cfg.events == 20 * cfg.span  # 20 webhooks per second of event time
    first = list(itertools.islice(live_items(opts, NOW), 2000))
    t = sent(first)
    assert min(t) >= NOW and max(t) <= NOW + 3600
    ids = {w["data"]["id"] for w in first if w["event"].startswith("conversation.")}
    assert min(ids) > LIVE_ID_OFFSET  # the backfill's conversations are 1..events // 5
    backfill = {
        w["data"]["id"]
        for w in generate_webhooks(backfill_config(opts, NOW))
        if "conversation." in w["event"]
    }
    assert max(backfill) < LIVE_ID_OFFSET
    assert [due(w) for w in first[:50]] == [w["firstDeliveryAttempt"] for w in first[:50]]
    assert due({"event": "x"}) == 0  # nothing to wait for: posted at once


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--once", "--keep-running"], "give one"),
        (
            ["--live-rate", "0"],
            "argument --live-rate: must be a number of webhooks per second above 0, got '0'",
        ),
        (["--live-rate", "nan"], "argument --live-rate: must be a number of webhooks per second above 0"),
        (["--events", "0"], "argument --events: must be at least 1, got '0'"),
        (["--rate", "-2.5"], "argument --rate: must be a number of webhooks per second above 0, got '-2.5'"),
    ],
)
def test_bad_demo_flags_are_refused_before_anything_starts(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        got = main(["demo", *argv])
    except SystemExit as exc:  # argparse's refusal
        got = exc.code
    assert got == 2
    assert message in capsys.readouterr().err


class Running:
    """A child that keeps running (`wait_http` asks it to `check` itself between tries)."""

    name, log = "gateway", "gateway.log"

    def check(self) -> None:
        pass


def test_a_child_that_stays_not_ready_is_given_up_on_with_its_reason() -> None:
    """The last 503's `detail` (the gateway's /readyz says why it is not ready) is in the
    error, so the user does not have to open the log to learn it."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from convmetrics.demo import DemoError, wait_http

    class NotReady(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"ready": False, "detail": "topic t holds events keyed by conversation"})
            self.send_response(503)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *_: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), NotReady)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(DemoError, match=r"within 1s: topic t holds events keyed by conversation \(log"):
            wait_http(f"http://127.0.0.1:{server.server_port}/readyz", Running(), timeout=1)  # type: ignore[arg-type]
    finally:
        server.shutdown()
