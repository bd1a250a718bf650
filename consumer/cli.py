"""`convmetrics consume`, `convmetrics serve` and `convmetrics dlq replay`."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from consumer.fold.registry import (
    DEFAULT_METRIC_SET,
    METRIC_SETS,
    metric_set,
)
from consumer.serve.report import add_sla_buckets_argument
from schemas.kafka import KafkaSettings, KafkaSettingsError
from schemas.kafka import add_arguments as kafka_arguments
from schemas.kafka import from_args as kafka_from_args

if TYPE_CHECKING:
    from consumer.stream.settings import ConsumerSettings

log = logging.getLogger("convmetrics.consumer")
T = TypeVar("T")

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


ENV_BOOTSTRAP = "CONVMETRICS_BOOTSTRAP_SERVERS"
ENV_TOPIC = "CONVMETRICS_TOPIC"
ENV_STORE = "CONVMETRICS_STORE"
ENV_METRIC_SET = "CONVMETRICS_METRIC_SET"
ENV_GROUP = "CONVMETRICS_GROUP"
#: consume's API (--http-port/--http-host); serve's bind address is the gateway's variables
ENV_HTTP_PORT = "CONVMETRICS_HTTP_PORT"
ENV_HTTP_HOST = "CONVMETRICS_HTTP_HOST"
ENV_HOST = "CONVMETRICS_HOST"
ENV_PORT = "CONVMETRICS_PORT"


def _common(p: argparse.ArgumentParser, *, kafka: bool = True) -> None:
    if kafka:
        p.add_argument(
            "--bootstrap-servers",
            default=os.environ.get(ENV_BOOTSTRAP),
            help=f"Kafka bootstrap servers (env {ENV_BOOTSTRAP})",
        )
        p.add_argument(
            "--topic",
            default=os.environ.get(ENV_TOPIC, "conversation-events"),
            help=f"events topic (env {ENV_TOPIC}; default conversation-events)",
        )
    p.add_argument(
        "--store",
        default=os.environ.get(ENV_STORE, "sqlite:///convmetrics.db"),
        help=f"store URL (env {ENV_STORE}; default sqlite:///convmetrics.db, "
        "i.e. ./convmetrics.db; sqlite:////abs/path.db for an absolute path)",
    )
    p.add_argument(
        "--metric-set",
        choices=sorted(METRIC_SETS),
        default=os.environ.get(ENV_METRIC_SET, DEFAULT_METRIC_SET),
        help=f"what is folded and served (env {ENV_METRIC_SET}; default {DEFAULT_METRIC_SET}): "
        "closures = closures, reopens, closed_unread, time_to_close, ingest_lag by channel_type and "
        "account; full = also created, assignments, snoozes, closed_window_expired, first_closes, "
        "time_to_first_assignment, time_to_close's SLA buckets and the "
        "account,channel_type, inbox and app groupings (about 5x the store's row writes per event). "
        "Give every process of a deployment the same one",
    )
    add_sla_buckets_argument(
        p,
        "time_to_close's SLA buckets in the full metric set: ascending upper bounds (s, m, h or d), "
        "each bucket exact and disjoint: le_1h counts closures of at most 1 hour, le_4h those above "
        "1 hour up to 4, ..., gt_24h those above the last bound. Give every process of a deployment "
        "the same ones",
    )


def _wire(p: argparse.ArgumentParser, what: str) -> None:
    """`--wire-format` and `--schema-registry-url` on a command that writes `what`."""
    from schemas.confluent import ENV_WIRE_FORMAT
    from schemas.schema_registry import add_arguments

    p.add_argument(
        "--wire-format",
        default=os.environ.get(ENV_WIRE_FORMAT, "single-object"),
        metavar="{single-object,confluent}",
        help=f"how {what} are framed (env {ENV_WIRE_FORMAT}): single-object (default) or confluent "
        "(00 + the registry's schema id, which ClickHouse, Kafka Connect and Flink read; run "
        "`convmetrics schemas push` first). Records of both framings are read either way",
    )
    add_arguments(p)


def _wire_format(args: argparse.Namespace) -> Any:
    from schemas.confluent import ENV_WIRE_FORMAT, WireFormat

    try:
        return WireFormat.parse(args.wire_format, source=f"--wire-format (or {ENV_WIRE_FORMAT})")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _registry(args: argparse.Namespace) -> Any:
    from schemas.schema_registry import registry_settings

    return registry_settings(args.schema_registry_url)


def register(sub: Any) -> None:
    from consumer.stream.settings import ConsumerSettings

    c = sub.add_parser(
        "consume",
        help="aggregate closure metrics from the events topic (consumer group)",
        description="Join the consumer group, fold conversation events into closure metrics "
        "and commit them with the partition offsets in one store transaction.",
    )
    _common(c)
    c.add_argument(
        "--group",
        default=os.environ.get(ENV_GROUP, "closure-metrics"),
        help=f"consumer group id (env {ENV_GROUP}; default closure-metrics)",
    )
    _api_access(c, host=("--http-host", ENV_HTTP_HOST), port=("--http-port", ENV_HTTP_PORT, None))
    c.add_argument(
        "--flush-interval",
        type=float,
        default=0.25,
        help="seconds between commits when caught up: bounds webhook-to-API latency (default 0.25); "
        "while behind, commits come every 2 s or --flush-events records",
    )
    c.add_argument(
        "--flush-events",
        type=int,
        default=ConsumerSettings.flush_events,
        help=f"commit after this many records (default {ConsumerSettings.flush_events}; more: fewer, "
        "bigger commits, more memory)",
    )
    c.add_argument("--retention-1m", type=float, default=2, help="days to keep 1-minute rows (default 2)")
    c.add_argument("--retention-1h", type=float, default=90, help="days to keep 1-hour rows (default 90)")
    c.add_argument(
        "--retention-1d", type=float, default=None, help="days to keep 1-day rows (default: forever)"
    )
    c.add_argument(
        "--conversation-ttl-days",
        type=float,
        default=30,
        help="forget a conversation, and the event ids it remembers, after this many days of "
        "event time without events (default 30)",
    )
    c.add_argument(
        "--dedupe-per-conversation",
        type=int,
        default=256,
        help="event ids remembered per conversation, newest kept (default 256)",
    )
    c.add_argument(
        "--max-conversations",
        type=int,
        default=5_000_000,
        help="conversations kept per partition; beyond, the longest idle are forgotten (default 5,000,000)",
    )
    c.add_argument(
        "--metrics-topic",
        nargs="?",
        const="conversation-closure-metrics",
        default=None,
        metavar="TOPIC",
        help="after each commit, publish the changed metric rows (Avro, closure_metrics v1: the "
        "closure metrics by name, for its existing readers) to this compacted topic (default name "
        "when given without one: conversation-closure-metrics); see --metric-rows-topic",
    )
    c.add_argument(
        "--metric-rows-topic",
        nargs="?",
        const="conversation-metric-rows",
        default=None,
        metavar="TOPIC",
        help="after each commit, publish the changed metric rows (Avro, metric_rows: every counter "
        "and distribution by metric name, so new metrics need no new schema) to this compacted topic "
        "(default name when given without one: conversation-metric-rows)",
    )
    kafka_arguments(c)
    _wire(c, "the metrics-topic records")
    c.set_defaults(func=_consume)

    s = sub.add_parser(
        "serve",
        help="serve the closure metrics API from a store",
        description="GET /v1/closures?by=channel_type|account&window=1m|1h|1d|all"
        "[&key=K][&from=T&to=T][&limit=N][&cursor=C]",
    )
    _common(s, kafka=False)
    _api_access(s, host=("--host", ENV_HOST), port=("--port", ENV_PORT, 8081))
    s.set_defaults(func=_serve)

    t = sub.add_parser("token", help="API tokens: make one for --tokens-file")
    token_actions = t.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    new = token_actions.add_parser(
        "new",
        help="print a fresh random token and the tokens-file line that grants it",
        description="Prints the token (give it to the client, once: it is stored nowhere) and the "
        "line to add to the --tokens-file of `serve` and `consume` (the token's SHA-256 and its "
        "scope). Without --accounts the token reads everything, across tenants.",
    )
    new.add_argument(
        "--accounts", default=None, metavar="IDS", help="comma-separated account ids the token may read"
    )
    new.set_defaults(func=_token_new)

    d = sub.add_parser("dlq", help="dead-letter topic tools")
    actions = d.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    r = actions.add_parser(
        "replay",
        help="send dead-lettered records back to their source topic",
        description="Reads <topic>.dlq from the beginning (or the group's "
        "committed position) and produces each record, with its original "
        "key, value and headers, to the topic it came from.",
    )
    _common(r)
    kafka_arguments(r)
    r.add_argument(
        "--group",
        default="convmetrics-dlq-replay",
        help="consumer group that remembers what was replayed (default convmetrics-dlq-replay)",
    )
    r.add_argument(
        "--idle-timeout",
        type=float,
        default=5.0,
        help="stop after this many seconds without a DLQ record (default 5)",
    )
    _wire(r, "replayed records")
    r.set_defaults(func=_dlq_replay)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _api_access(
    p: argparse.ArgumentParser, *, host: tuple[str, str], port: tuple[str, str, int | None]
) -> None:
    """Where the API listens (`host`: flag and env; `port`: flag, env and default, None for
    no API), who may read it, and how many label values /metrics shows."""
    (host_flag, host_env), (port_flag, port_env, port_default) = host, port
    p.add_argument(
        port_flag,
        type=int,
        default=os.environ.get(port_env, port_default),
        help=f"serve the API on this port (env {port_env}; "
        + (f"default {port_default})" if port_default else "default: no API)"),
    )
    p.add_argument(
        host_flag,
        default=os.environ.get(host_env, "127.0.0.1"),
        help=f"the API's bind address (env {host_env}; default 127.0.0.1)",
    )
    _label_values(p)
    p.add_argument(
        "--tokens-file",
        default=os.environ.get("CONVMETRICS_TOKENS_FILE"),
        metavar="FILE",
        help="who may read the API, the dashboard's data and /metrics (env CONVMETRICS_TOKENS_FILE): "
        "one '<sha256 hex of the token> <scope>' a line, scope * or comma-separated account ids, "
        "# comments; `convmetrics token new` prints a token and its line; read again when it "
        "changes. Without it the API is open",
    )


def _tokens(args: argparse.Namespace) -> Any:
    from consumer.serve.tokens import Tokens

    return Tokens(args.tokens_file) if args.tokens_file else None


def _label_values(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-label-values",
        type=_positive,
        default=200,
        metavar="N",
        help="channel types that /metrics and /v1/summary (and the dashboard) show by name: the N "
        'with the most closures; the rest are summed under channel_type="_other", so a sender '
        "inventing names cannot inflate Prometheus series (default 200)",
    )


def _days(d: float | None) -> int | None:
    return None if d is None else int(d * 86400)


def _need_bootstrap(args: argparse.Namespace) -> str:
    if not args.bootstrap_servers:
        print(
            f"error: no Kafka: pass --bootstrap-servers or set {ENV_BOOTSTRAP} "
            "(`convmetrics broker` starts a local one)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return str(args.bootstrap_servers)


def _kafka_settings(args: argparse.Namespace) -> KafkaSettings:
    """The Kafka client settings (flags, file, environment), or exit 2 naming the bad one."""
    try:
        return kafka_from_args(args)
    except KafkaSettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def consumer_settings(args: argparse.Namespace) -> ConsumerSettings:
    """The consumer's settings from `consume`'s flags (tests/unit/consumer/test_settings.py
    holds the flags' defaults to the documented ones)."""
    from consumer.store import Retention
    from consumer.stream.settings import ConsumerSettings

    return ConsumerSettings(
        metric_set=args.metric_set,
        sla_buckets=args.sla_buckets,
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
    )


def _consume(args: argparse.Namespace) -> int:
    from consumer.serve.server import serve_in_thread
    from consumer.store.choose import redacted
    from consumer.stream.checkpoint import CommitReport
    from consumer.stream.exporter import ConsumerMetrics
    from consumer.stream.runner import MetricsConsumer

    settings = consumer_settings(args)
    tokens = _tokens(args)  # a bad tokens file refuses the start, before joining the group
    metrics = ConsumerMetrics()
    from consumer.stream.metrics_topic import MetricsTopicPublisher

    publishers: list[MetricsTopicPublisher] = []

    def publish(partitions: list[int]) -> None:
        """What these partitions left unpublished, to every metrics topic: after each commit,
        and on assignment (a predecessor killed mid-publication left rows that a quiet
        topic's next commit may never bring)."""
        for publisher in publishers:
            publisher.publish_pending(consumer.store, partitions, stopping=stopping)

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
        metrics.watch(lambda: consumer.stats)
        log.info("consuming %s as group %s into %s", args.topic, args.group, redacted(args.store))
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
    from consumer.serve.server import api_server

    base = f"http://{args.host}:{args.port}"
    print(
        f"closure metrics API on {base}/v1/closures, dashboard on {base}/, Prometheus on {base}/metrics",
        flush=True,
    )
    tokens = _tokens(args)
    api_server(
        args.store,
        args.host,
        args.port,
        metrics=metric_set(args.metric_set, args.sla_buckets),
        max_label_values=args.max_label_values,
        tokens=tokens,
    ).run()
    return 0


def _token_new(args: argparse.Namespace) -> int:
    from consumer.serve.tokens import new_token

    try:
        token, line = new_token(args.accounts)
    except ValueError as exc:
        print(f"error: --accounts: {exc}", file=sys.stderr)
        return 2
    print(f"token (give it to the client; it is stored nowhere): {token}")
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
