"""What `convmetrics consume`, `serve`, `token new` and `dlq replay` do, from their parsed
flags (`consumer.cli.parsers`)."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from consumer.exceptions import ConfigError
from consumer.fold.registry import (
    metric_set,
)
from schemas.kafka import KafkaSettings, KafkaSettingsError
from schemas.kafka import from_args as kafka_from_args

if TYPE_CHECKING:
    from consumer.stream.settings import ConsumerSettings

log = logging.getLogger("convmetrics.consumer")
T = TypeVar("T")

#: the one variable a command's own error names (the others: `consumer.cli.parsers`)
ENV_BOOTSTRAP = "CONVMETRICS_BOOTSTRAP_SERVERS"

#: seconds a consumer told to stop (SIGTERM, SIGINT) may take before it exits anyway: with
#: its brokers gone, the last commit's publishing, the group leave and the producers' flushes
#: each wait for Kafka. Exiting then is as safe as a crash: the store's last commit stands.
STOP_DEADLINE_S = 30.0


def _exit_after(seconds: float) -> None:
    """Exit the process (status 1) unless it ended within `seconds` (a daemon timer)."""

    def force() -> None:
        log.error(
            "did not stop within %g s (Kafka or the store does not answer); exiting now: the "
            "store keeps its last commit, as after a crash",
            seconds,
        )
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(seconds, force)
    timer.daemon = True
    timer.start()


def _wire_format(args: argparse.Namespace) -> Any:
    from schemas.confluent import ENV_WIRE_FORMAT, WireFormat

    try:
        return WireFormat.parse(args.wire_format, source=f"--wire-format (or {ENV_WIRE_FORMAT})")
    except ValueError as exc:
        _refuse(args, str(exc))


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _refuse(args: argparse.Namespace, cause: str) -> NoReturn:
    """Bad flags or settings: a ConfigError, which `convmetrics` prints as the one line every
    command's failure is, exiting 2."""
    raise ConfigError(cause)


def _registry(args: argparse.Namespace) -> Any:
    from schemas.schema_registry import registry_settings

    return registry_settings(args.schema_registry_url)


def _tokens(args: argparse.Namespace) -> Any:
    from consumer.serve.tokens import ENV_TOKENS_FILE, Tokens

    if args.tokens_file is not None and not args.tokens_file.strip():  # a manifest's unset variable
        _refuse(
            args,
            f"--tokens-file ({ENV_TOKENS_FILE}) is empty: name the file, or leave both unset for an open API",
        )
    return Tokens(args.tokens_file) if args.tokens_file else None


def _days(d: float | None) -> int | None:
    return None if d is None else int(d * 86400)


def _need_bootstrap(args: argparse.Namespace) -> str:
    if not args.bootstrap_servers:
        _refuse(
            args,
            f"no Kafka: pass --bootstrap-servers or set {ENV_BOOTSTRAP} "
            "(`convmetrics broker` starts a local one)",
        )
    return str(args.bootstrap_servers)


def _kafka_settings(args: argparse.Namespace) -> KafkaSettings:
    """The Kafka client settings (flags, file, environment), or exit 2 naming the bad one."""
    try:
        return kafka_from_args(args)
    except KafkaSettingsError as exc:
        _refuse(args, str(exc))


def consumer_settings(args: argparse.Namespace) -> ConsumerSettings:
    """The consumer's settings from `consume`'s flags (tests/unit/consumer/test_settings.py
    holds the flags' defaults to the documented ones)."""
    from consumer.store import Retention
    from consumer.stream.settings import ConsumerSettings

    return ConsumerSettings(
        metric_set=args.metric_set,
        sla_buckets=args.sla_buckets,
        switch_metric_set=args.switch_metric_set,
        bootstrap_servers=_need_bootstrap(args),
        topic=args.topic,
        group=args.group,
        store_url=args.store,
        flush_events=args.flush_events,
        flush_interval=args.flush_interval,
        dedupe_per_conversation=args.dedupe_per_conversation,
        conversation_ttl=int(args.conversation_ttl_days * 86400),
        max_conversations=args.max_conversations,
        retention=Retention(_days(args.retention_1m), _days(args.retention_1h), _days(args.retention_1d)),
        http_port=args.http_port,
        kafka=_kafka_settings(args),
        http_host=args.http_host,
        schema_registry=_registry(args),
        wire_format=_wire_format(args),
        stall_timeout=args.stall_timeout,
    )


def _consume(args: argparse.Namespace) -> int:
    from consumer.serve.server import serve_in_thread
    from consumer.store.choose import redacted
    from consumer.stream.checkpoint import CommitReport
    from consumer.stream.exporter import ConsumerMetrics
    from consumer.stream.runner import MetricsConsumer
    from consumer.stream.watchdog import PUBLISHER

    settings = consumer_settings(args)
    if not settings.http_port:  # a flag the command would ignore is refused, not dropped
        ignored = [f for f, default in args.api_flag_defaults.items() if getattr(args, _dest(f)) != default]
        if ignored:
            _refuse(args, f"{', '.join(ignored)} without --http-port: there is no API to apply it to")
    tokens = _tokens(args) if settings.http_port else None  # a bad file refuses the start, before joining
    metrics = ConsumerMetrics()
    from consumer.stream.metrics_topic import MetricsTopicPublisher

    publishers: list[MetricsTopicPublisher] = []

    def publish(partitions: list[int]) -> None:
        """What these partitions left unpublished, to every metrics topic: after each commit,
        and on assignment (a predecessor killed mid-publication left rows that a quiet
        topic's next commit may never bring)."""
        beat = functools.partial(consumer.watchdog.beat, PUBLISHER)
        for publisher in publishers:
            publisher.publish_pending(consumer.store, partitions, stopping=stopping, beat=beat)

    def on_commit(report: CommitReport) -> None:
        metrics.on_commit(report)
        publish([p.partition for p in report.partitions])

    stopping = threading.Event()
    running: list[MetricsConsumer] = []

    def stop(*_: object) -> None:
        if not stopping.is_set():
            _exit_after(STOP_DEADLINE_S)
        stopping.set()
        for c in running:
            c.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    server = None
    if settings.http_port:  # first: it says "not ready" while the store is unreachable
        server, api_thread = serve_in_thread(
            settings.store_url,
            settings.http_host,
            settings.http_port,
            registry=metrics.registry,
            metrics=settings.registry,
            max_label_values=args.max_label_values,
            tokens=tokens,
            ready=lambda: running[0].not_ready() if running else "starting: the store does not answer yet",
            alive=lambda: running[0].watchdog.stalled() if running else None,
        )
        base = f"http://{settings.http_host}:{settings.http_port}"
        log.info("API on %s/v1/closures, dashboard on %s/, Prometheus on %s/metrics", base, base, base)
    try:
        topics = ((args.metrics_topic, "closure_metrics"), (args.metric_rows_topic, "metric_rows"))
        for topic, subj in ((t, s) for t, s in topics if t):
            make = functools.partial(
                MetricsTopicPublisher,
                settings.bootstrap_servers,
                topic,
                kafka=settings.kafka,
                value_subject=subj,
                wire_format=settings.wire_format,
                registry=settings.schema_registry,
            )
            made_publisher = _when_available(make, stopping)
            if made_publisher is None:
                return 0
            publishers.append(made_publisher)
        made = _when_available(
            lambda: MetricsConsumer(settings, on_commit=on_commit, on_assign=publish), stopping
        )
        if made is None:
            return 0
        consumer = made
        running.append(consumer)
        metrics.watch(lambda: consumer.stats, consumer.watchdog.idle)
        log.info(
            "consuming %s as group %s into %s (metric set %s)",
            args.topic,
            args.group,
            redacted(args.store),
            args.metric_set,
        )
        if not stopping.is_set():
            consumer.run()
    finally:
        if server is not None:  # stopped before the interpreter winds down: its threads hold
            server.should_exit = True  # database connections (a C extension's) that must not
            api_thread.join(10)  # be torn down under a running thread
    st = consumer.stats
    log.info(
        "stopped: %d records, %d folded, %d duplicates, %d dead-lettered, %d commits",
        st.consumed,
        st.folded,
        st.duplicates,
        st.dead_lettered,
        st.commits,
    )
    return 0


def _when_available(make: Callable[[], T], stopping: threading.Event) -> T | None:
    """`make()`, retried while the store or Kafka is unreachable (down, or not up yet): the
    consumer keeps running, not ready, and says why (each cause once), so that it starts
    once they are back. None when stopped meanwhile."""
    from consumer.exceptions import KafkaUnavailableError, StoreUnavailableError
    from schemas.exceptions import RegistryUnavailableError

    wait, said = 1.0, ""
    while not stopping.is_set():
        try:
            return make()
        except (StoreUnavailableError, KafkaUnavailableError, RegistryUnavailableError) as exc:
            if str(exc) != said:
                said = str(exc)
                what = {StoreUnavailableError: "store", RegistryUnavailableError: "schema registry"}.get(
                    type(exc), "Kafka"
                )
                log.error("%s unavailable at start: %s; retrying until it answers", what, exc)
            stopping.wait(wait)
            wait = min(wait * 2, 30.0)
    return None


def _serve(args: argparse.Namespace) -> int:
    from consumer.heap import rare_collections
    from consumer.serve.server import api_server
    from consumer.store.choose import check_store_url, redacted

    metrics = metric_set(args.metric_set, args.sla_buckets)
    # before the banner: its first request would be the first to know
    if check_store_url(args.store) == "postgres":
        _probe_store(args.store, metrics)
    tokens = _tokens(args)  # a tokens file that cannot be read stops it before the banner too
    server = api_server(  # binds its port: one in use stops it before the banner as well
        args.store,
        args.host,
        args.port,
        metrics=metrics,
        max_label_values=args.max_label_values,
        tokens=tokens,
    )
    base = f"http://{args.host}:{args.port}"
    print(
        f"metrics API on {base}/v1/closures and {base}/v1/metrics, dashboard on {base}/, "
        f"Prometheus on {base}/metrics; store {redacted(args.store)}, metric set {args.metric_set}",
        flush=True,
    )
    with rare_collections():  # a query's rows and JSON die by refcount (consumer/heap.py)
        server.run()
    return 0


def _probe_store(url: str, metrics: Any) -> None:
    """`serve` on PostgreSQL opens its store once at start, as `consume` does: a URL libpq
    refuses or a database that refuses the credentials stops it (one line; it would answer
    503 forever), a database that is down only says so (it serves, not ready, until then)."""
    from consumer.exceptions import StoreUnavailableError
    from consumer.store import open_store

    try:
        open_store(url, registry=metrics).close()
    except StoreUnavailableError as exc:
        log.error("store unavailable at start: %s; serving, not ready, until it answers", exc)


def _token_new(args: argparse.Namespace) -> int:
    from consumer.serve.tokens import add_line, expiry_from, new_token, utc_text

    if args.note is not None and (args.add_to is None or "\n" in args.note):
        _refuse(args, "--note: a one-line comment for the line --add-to writes; give --add-to FILE")
    expires = None
    if args.expires is not None:
        try:
            expires = expiry_from(args.expires, time.time())
        except ValueError as exc:
            _refuse(args, f"--expires: {exc}")
    try:
        token, line = new_token(args.accounts, expires)
    except ValueError as exc:
        _refuse(args, f"--accounts: {exc}")
    if args.add_to is not None:
        add_line(Path(args.add_to), f"{line}  # {args.note}" if args.note else line)
    if args.json:
        hashed, scope = line.split(" ")[:2]
        print(
            json.dumps(
                {
                    "token": token,
                    "sha256": hashed,
                    "scope": scope,
                    "expires": None if expires is None else utc_text(expires),
                    "line": line,
                    "added_to": args.add_to,
                }
            )
        )
        return 0
    print(f"token (give it to the client; it is stored nowhere): {token}")
    if args.add_to is not None:
        print(f"added to {args.add_to}: {line} (serve and consume read it again within 4 s)")
    else:
        print(f"line for the tokens file: {line}")
    return 0


def _dlq_replay(args: argparse.Namespace) -> int:
    from consumer.stream.replay import replay_dead_letters

    n, skipped = replay_dead_letters(
        _need_bootstrap(args),
        args.topic,
        group=args.group,
        idle_timeout=args.idle_timeout,
        kafka=_kafka_settings(args),
        wire_format=_wire_format(args),
        registry=_registry(args),
    )
    print(f"replayed {n} record(s) from {args.topic}.dlq; {skipped} without a source header skipped")
    return 0
