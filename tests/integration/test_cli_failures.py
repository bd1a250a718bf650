"""Expected failures end with one line naming the cause and a nonzero exit, not a traceback;
`serve` on a store it cannot read keeps running, not ready, and says why once."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import httpx

from consumer.store.sqlite import SqliteStore
from convmetrics.generate import GenerateConfig, generate_webhooks
from support.gateway import free_port
from support.pipeline import ConsumerProcess, compare_with_truth, produce_webhooks, wait_caught_up
from support.postgres import FaultProxy
from support.truth import compute_truth


def convmetrics(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convmetrics", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_corrupt_store_or_one_of_another_topic_is_one_line(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not a database " * 100)
    other = tmp_path / "other.db"
    SqliteStore(str(other)).check_topic("orders")
    for store, says in ((corrupt, "file is not a database"), (other, "orders")):
        run = convmetrics("consume", "--bootstrap-servers", "127.0.0.1:1", "--store", f"sqlite:///{store}")
        assert run.returncode == 1, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("convmetrics consume: error:") and says in lines[0], (
            run.stderr
        )


def test_a_consumer_of_another_metric_set_than_its_stores_is_refused_in_one_line(tmp_path: Path) -> None:
    """A consumer restarted without `--metric-set full` beside full-set ones would undercount
    what only they fold: refused before it joins the group (exit 2, the settings' fault)."""
    from consumer.fold.registry import metric_set

    path = tmp_path / "m.db"
    full = SqliteStore(str(path), registry=metric_set("full"))
    full.check_topic("conversation-events")
    full.check_metric_set("full")
    full.close()
    run = convmetrics("consume", "--bootstrap-servers", "127.0.0.1:1", "--store", f"sqlite:///{path}")
    assert run.returncode == 2, run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert (
        line.startswith("convmetrics consume: error: store ") and "is folded with metric set 'full; " in line
    )
    assert "this consumer folds 'closures'" in line and "--switch-metric-set" in line


def test_serve_on_postgresql_stops_where_the_database_refuses_it_as_consume_does(postgres_url: str) -> None:
    """A database that does not exist (or refuses the credentials) and a URL setting libpq
    refuses are one line at start (exit 1 and 2), as for `consume`: not a server answering
    503 forever."""
    base = postgres_url.rsplit("/", 1)[0]
    port = str(free_port())
    for url, status, says in (
        (f"{base}/no_such_database", 1, "refused the connection"),
        (f"{postgres_url}?sslmode=requir", 2, 'invalid sslmode value: "requir"'),
    ):
        run = convmetrics("serve", "--store", url, "--port", port)
        assert run.returncode == status, run.stderr
        (line,) = run.stderr.strip().splitlines()
        assert line.startswith("convmetrics serve: error: ") and says in line, line


def test_serve_on_an_unreadable_store_stays_up_not_ready(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not a database " * 100)
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "convmetrics",
                "serve",
                "--store",
                f"sqlite:///{corrupt}",
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert ready.status_code == 503 and "not a database" in ready.json()["error"]
        assert httpx.get(f"http://127.0.0.1:{port}/v1/summary", timeout=5).status_code == 503
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        text = log.read_text()
        assert text.count("store unavailable") == 1 and "Traceback" not in text, text
    finally:
        proc.terminate()
        proc.wait(30)


def test_consume_started_while_its_database_is_down_waits_then_counts(
    kafka_bootstrap: str, new_topic: Callable[..., str], postgres_url: str, tmp_path: Path
) -> None:
    """A long-running server keeps running, not ready, while a dependency is down at start,
    says why once, and does its work once the dependency is back."""
    proxy = FaultProxy.to(postgres_url)
    proxy.cut()  # the database is unreachable before the consumer starts
    topic = new_topic(3, prefix="db-late")
    store = proxy.url(postgres_url)
    port = free_port()
    proc = ConsumerProcess(kafka_bootstrap, topic, store, tmp_path / "c.log", http_port=port)
    api = f"http://127.0.0.1:{port}"
    try:
        proc.wait_log("store unavailable at start", timeout=60)
        deadline = time.monotonic() + 30
        while True:
            try:
                ready = httpx.get(f"{api}/readyz", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.alive(), proc.tail()
                time.sleep(0.2)
        assert ready.status_code == 503 and proc.alive()
        webhooks = [dict(w) for w in generate_webhooks(GenerateConfig(seed=3, events=1_500, accounts=8))]
        produce_webhooks(kafka_bootstrap, topic, webhooks)
        proxy.open()  # the database is back
        wait_caught_up(kafka_bootstrap, topic, store, [proc])
        assert httpx.get(f"{api}/readyz", timeout=5).status_code == 200
        compare_with_truth(api, compute_truth(webhooks))
        assert proc.log.read_text().count("store unavailable at start") == 1, proc.tail()
    finally:
        proxy.close()
        assert proc.stop() == 0, proc.tail()


def test_a_one_shot_command_on_an_unreachable_cluster_fails_with_a_line() -> None:
    run = convmetrics("dlq", "replay", "--bootstrap-servers", "127.0.0.1:1", "--topic", "events")
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    last = run.stderr.strip().splitlines()[-1]  # after librdkafka's own connection notices
    assert last.startswith("convmetrics dlq replay: error: Kafka at 127.0.0.1:1 did not answer"), run.stderr


def test_consume_keeps_running_while_kafka_cannot_be_reached_at_start(tmp_path: Path) -> None:
    """Its metrics topic cannot be checked: it stays up, says why once, stops cleanly."""
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    proc = ConsumerProcess(
        dead, "events", tmp_path / "m.db", tmp_path / "c.log", extra=["--metric-rows-topic"]
    )
    try:
        proc.wait_log("Kafka unavailable at start", timeout=60)
        assert proc.alive() and "Traceback" not in proc.log.read_text()
    finally:
        assert proc.stop(timeout=60) == 0, proc.tail()
    assert proc.log.read_text().count("Kafka unavailable at start") == 1


def test_json_logs_are_one_object_a_line_from_every_logger(tmp_path: Path) -> None:
    """`CONVMETRICS_LOG_FORMAT=json`: every line the consumer writes, its own and
    librdkafka's, is one JSON object with time, level, logger and message; so is the line
    a failing command ends with (`--log-format json`)."""
    failed = convmetrics("--log-format", "json", "metrics", "--store", f"sqlite:///{tmp_path}/none.db")
    assert failed.returncode == 1
    (line,) = [json.loads(text) for text in failed.stderr.splitlines()]
    assert (line["level"], line["logger"]) == ("ERROR", "convmetrics")
    assert line["message"].startswith("convmetrics metrics: error: no store at "), line
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there: Kafka's complaints, and ours
    proc = ConsumerProcess(
        dead,
        "events",
        tmp_path / "m.db",
        tmp_path / "c.log",
        http_port=free_port(),
        env={"CONVMETRICS_LOG_FORMAT": "json"},
    )
    try:
        proc.wait_log("brokers are down", timeout=60)
    finally:
        assert proc.stop(timeout=60) == 0, proc.tail()
    lines = [json.loads(line) for line in proc.log.read_text().splitlines()]
    assert all(set(line) == {"time", "level", "logger", "message"} for line in lines), lines
    assert all(datetime.fromisoformat(line["time"]).utcoffset() == timedelta(0) for line in lines)
    loggers = {line["logger"] for line in lines}
    assert {"convmetrics.consumer", "consumer.stream.runner", "librdkafka"} <= loggers, loggers
    assert any(line["level"] == "WARNING" and line["message"].startswith("Kafka: ") for line in lines)


def test_a_consumer_whose_commit_hangs_answers_healthz_with_503_until_it_moves_again(
    kafka_bootstrap: str, new_topic: Callable[..., str], postgres_url: str, tmp_path: Path
) -> None:
    """A hung store connection (PostgreSQL through a proxy that holds every byte) stalls the
    commit in flight: past --stall-timeout `/healthz` answers 503 naming the commit, and
    the log says so once with the threads' stacks. A store that refuses connections is
    retried, and retrying is progress: alive. Once the network flows again the consumer
    moves on, alive, and its numbers are exact."""
    proxy = FaultProxy.to(postgres_url)
    topic = new_topic(3, prefix="stall")
    port = free_port()
    store = proxy.url(postgres_url)
    proc = ConsumerProcess(
        kafka_bootstrap, topic, store, tmp_path / "c.log", http_port=port, extra=["--stall-timeout", "10"]
    )
    api = f"http://127.0.0.1:{port}"

    def health() -> httpx.Response:
        return httpx.get(f"{api}/healthz", timeout=5)

    webhooks = [dict(w) for w in generate_webhooks(GenerateConfig(seed=5, events=3_000, accounts=8))]
    try:
        produce_webhooks(kafka_bootstrap, topic, webhooks[:1_000])
        wait_caught_up(kafka_bootstrap, topic, postgres_url, [proc])
        assert health().json() == {"status": "ok"}
        proxy.cut()  # refused: the commit is retried every few seconds, which is progress
        produce_webhooks(kafka_bootstrap, topic, webhooks[1_000:2_000])
        proc.wait_log("store unavailable, commit attempt")
        until = time.monotonic() + 15  # longer than the stall timeout: alive throughout
        while time.monotonic() < until:
            assert (answer := health()).status_code == 200, answer.text
            time.sleep(1)
        proxy.open()
        wait_caught_up(kafka_bootstrap, topic, postgres_url, [proc])
        proxy.stall()  # now a commit hangs on its open connection
        produce_webhooks(kafka_bootstrap, topic, webhooks[2_000:])
        deadline = time.monotonic() + 30
        while (answer := health()).status_code == 200:
            assert time.monotonic() < deadline and proc.alive(), proc.tail()
            time.sleep(0.2)
        assert answer.status_code == 503, answer.text
        body = answer.json()
        assert body["status"] == "stalled", body
        assert body["error"].startswith("no progress for more than --stall-timeout 10 s: "), body
        assert "the store writer: writing a commit to the store (attempt " in body["error"], body
        assert "the polling loop: waiting for the store writer's commit for " in body["error"], body
        proc.wait_log("consumer stalled: no progress for more than --stall-timeout 10 s")
        assert "thread store-writer_0:" in proc.log.read_text(errors="replace"), proc.tail()
        proxy.resume()
        proc.wait_log("consumer moving again")
        assert health().json() == {"status": "ok"}
        wait_caught_up(kafka_bootstrap, topic, postgres_url, [proc])
        compare_with_truth(api, compute_truth(webhooks))
        assert (
            proc.log.read_text(errors="replace").count("ERROR consumer.stream.watchdog: consumer stalled")
            == 1
        ), proc.tail()
    finally:
        proxy.close()
        assert proc.stop() == 0, proc.tail()
