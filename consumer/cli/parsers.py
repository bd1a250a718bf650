"""The flags of `convmetrics consume`, `serve`, `token new` and `dlq replay` (what each
does: `consumer.cli.commands`)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from consumer.cli.commands import ENV_BOOTSTRAP, _consume, _dlq_replay, _serve, _token_new
from consumer.serve.report import add_metric_set_argument, add_sla_buckets_argument
from schemas import argtypes
from schemas.kafka import add_arguments as kafka_arguments

ENV_TOPIC = "CONVMETRICS_TOPIC"
ENV_STORE = "CONVMETRICS_STORE"
ENV_GROUP = "CONVMETRICS_GROUP"
#: consume's API (--http-port/--http-host); serve's bind address is the gateway's variables
ENV_HTTP_PORT = "CONVMETRICS_HTTP_PORT"
ENV_HTTP_HOST = "CONVMETRICS_HTTP_HOST"
ENV_HOST = "CONVMETRICS_HOST"
ENV_PORT = "CONVMETRICS_PORT"
ENV_STALL_TIMEOUT = "CONVMETRICS_STALL_TIMEOUT"


def _common(p: argparse.ArgumentParser, *, kafka: bool = True, store: bool = True) -> None:
    """The flags of the commands that read the events topic (`kafka`) and fold into or serve
    from a store (`store`): what each of them uses, and nothing it would ignore."""
    if kafka:
        p.add_argument(
            "--bootstrap-servers",
            type=argtypes.or_env(argtypes.bootstrap_servers, ENV_BOOTSTRAP),
            default=os.environ.get(ENV_BOOTSTRAP),
            help=f"Kafka bootstrap servers, required: here or in env {ENV_BOOTSTRAP} "
            "(`convmetrics broker` starts a local one)",
        )
        p.add_argument(
            "--topic",
            default=os.environ.get(ENV_TOPIC, "conversation-events"),
            help=f"events topic (env {ENV_TOPIC}; default conversation-events)",
        )
    if not store:
        return
    p.add_argument(
        "--store",
        default=os.environ.get(ENV_STORE, "sqlite:///convmetrics.db"),
        help=f"store URL (env {ENV_STORE}; default sqlite:///convmetrics.db, "
        "i.e. ./convmetrics.db; sqlite:////abs/path.db for an absolute path)",
    )
    add_metric_set_argument(
        p,
        "what is folded and served: closures = closures, reopens, closed_unread, time_to_close, "
        "ingest_lag by channel_type and account; full = also created, assignments, snoozes, "
        "closed_window_expired, first_closes, time_to_first_assignment, time_to_close's SLA buckets, "
        "the live backlog and the account,channel_type, inbox and app groupings (about 0.98 facts per "
        "event instead of 0.32, each written to 3 stored groupings' rows: docs/performance.md). Give every "
        "process of a deployment the same one",
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


def register(sub: Any) -> None:
    from consumer.stream.settings import FLUSH_EVENTS
    from consumer.stream.watchdog import MIN_STALL_S, STALL_S

    c = sub.add_parser(
        "consume",
        help="fold the events topic into metrics in a store (consumer group)",
        description="Join the consumer group, fold conversation events into the metric set's metrics "
        "and commit them with the partition offsets in one store transaction.",
    )
    _common(c)
    c.add_argument(
        "--group",
        type=argtypes.or_env(argtypes.non_blank("consumer group id"), ENV_GROUP),
        default=os.environ.get(ENV_GROUP, "closure-metrics"),
        help=f"consumer group id (env {ENV_GROUP}; default closure-metrics)",
    )
    _api_access(c, host=("--http-host", ENV_HTTP_HOST), port=("--http-port", ENV_HTTP_PORT, None))
    c.add_argument(
        "--flush-interval",
        type=_seconds,
        default=0.25,
        help="seconds between commits when caught up: bounds webhook-to-API latency (default 0.25); "
        "while behind, commits come every 2 s or --flush-events records",
    )
    c.add_argument(
        "--flush-events",
        type=argtypes.positive_int,
        default=None,
        help="commit after this many records while behind (default: "
        + ", ".join(f"{n:,} with --metric-set {m}" for m, n in FLUSH_EVENTS.items())
        + "; more: fewer, bigger commits, more memory)",
    )
    c.add_argument(
        "--stall-timeout",
        type=argtypes.or_env(
            argtypes.at_least(MIN_STALL_S, "seconds", "a store being retried is quiet for up to 5 s"),
            ENV_STALL_TIMEOUT,
        ),
        default=os.environ.get(ENV_STALL_TIMEOUT, STALL_S),
        metavar="SECONDS",
        help=f"seconds without progress (the polling loop not coming round, no commit attempted, "
        f"no partition loaded) after which the consumer counts as stalled: it logs its threads' "
        f"stacks once and /healthz answers 503, for a liveness probe to restart it (env "
        f"{ENV_STALL_TIMEOUT}; default {STALL_S:g}). A store that is down and retried is not a stall",
    )
    c.add_argument(
        "--switch-metric-set",
        action="store_true",
        help="the store notes the metric set (and SLA buckets) its consumers fold, and refuses a "
        "consumer of another; with this flag this consumer's set becomes the store's (run every "
        "consumer of the group with it: what is folded from now on counts in the new set)",
    )
    c.add_argument("--retention-1m", type=_days, default=2, help="days to keep 1-minute rows (default 2)")
    c.add_argument("--retention-1h", type=_days, default=90, help="days to keep 1-hour rows (default 90)")
    c.add_argument(
        "--retention-1d", type=_days, default=None, help="days to keep 1-day rows (default: forever)"
    )
    c.add_argument(
        "--conversation-ttl-days",
        type=_days,
        default=30,
        help="forget a conversation, and the event ids it remembers, after this many days of "
        "event time without events (default 30)",
    )
    c.add_argument(
        "--dedupe-per-conversation",
        type=argtypes.positive_int,
        default=256,
        help="event ids remembered per conversation, newest kept (default 256)",
    )
    c.add_argument(
        "--max-conversations",
        type=argtypes.positive_int,
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
        "and distribution by metric name, so new metrics need no new schema; with --metric-set full "
        "also the live gauges, as records of the window 'live') to this compacted topic "
        "(default name when given without one: conversation-metric-rows)",
    )
    kafka_arguments(c)
    _wire(c, "the metrics-topic records")
    c.set_defaults(func=_consume)

    s = sub.add_parser(
        "serve",
        help="serve the metrics API, the dashboard and Prometheus metrics from a store",
        description="Serves, from the store the consumers write (give it their --metric-set):\n"
        "  /                            the dashboard\n"
        "  /v1/metrics                  every metric by group and window (?group=...&window=...)\n"
        "  /v1/backlog                  live open, unassigned and snoozed (--metric-set full)\n"
        "  /v1/closures                 closure metrics (?by=channel_type|account&window=1m|1h|1d|all;\n"
        "                               full set: by=account,channel_type|inbox|app too)\n"
        "  /v1/closures/conversations   the closures behind a number (?account=A&from=T&to=T)\n"
        "  /v1/summary, /v1/metric-set  what the dashboard reads first\n"
        "  /metrics                     Prometheus, by channel type\n"
        "  /healthz, /readyz            liveness; readiness (the store answers)\n"
        "Parameters, answers and errors: docs/api.md. With --tokens-file the data (the /v1 calls\n"
        "but /v1/metric-set, and /metrics) needs 'Authorization: Bearer <token>' (convmetrics token new).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(s, kafka=False)
    _api_access(s, host=("--host", ENV_HOST), port=("--port", ENV_PORT, 8081))
    # uvicorn handles SIGTERM itself (a graceful stop), then raises it again: not Ctrl-C's
    s.set_defaults(func=_serve, own_signals=True)

    t = sub.add_parser("token", help="API tokens: make one for --tokens-file")
    token_actions = t.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    new = token_actions.add_parser(
        "new",
        help="print a fresh random token and the tokens-file line that grants it",
        description="Prints the token (give it to the client, once: it is stored nowhere) and the\n"
        "line to add to the --tokens-file of `serve` and `consume` (the token's SHA-256 and\n"
        "its scope), or with --add-to FILE appends that line to the file. Without --accounts\n"
        "the token reads everything, across tenants; without --expires it never expires.\n\n"
        "  convmetrics token new --accounts 42 --add-to /etc/convmetrics/tokens --note 'tenant 42'\n"
        "  convmetrics token new --accounts 42 --expires 90d --add-to /etc/convmetrics/tokens\n"
        "  convmetrics token new --accounts 42 --json | jq -r .token",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    new.add_argument(
        "--accounts", default=None, metavar="IDS", help="comma-separated account ids the token may read"
    )
    new.add_argument(
        "--add-to",
        default=None,
        metavar="FILE",
        help="append the line to this tokens file, in place (its owner, mode and a symlink's target "
        "stay; made 0600 when missing), which a running serve or consume picks up within 4 s, "
        "instead of printing it",
    )
    new.add_argument(
        "--expires",
        default=None,
        metavar="WHEN",
        help="when the token stops being accepted (401 'token expired at ...'): a lifetime (90d, 12h) "
        "or a UTC date or time (2027-03-01, 2027-03-01T12:00:00Z); written on its line as expires=",
    )
    new.add_argument(
        "--note", default=None, metavar="TEXT", help="a comment on the added line (with --add-to)"
    )
    new.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object instead: token, sha256, scope, expires, line, added_to",
    )
    new.set_defaults(func=_token_new)

    d = sub.add_parser("dlq", help="dead-letter topic tools")
    actions = d.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    r = actions.add_parser(
        "replay",
        help="send dead-lettered records back to their source topic",
        description="Reads <topic>.dlq from the beginning (or the group's "
        "committed position) up to its end as it is at the start, and produces each record, "
        "with its original key, value and headers, to the topic it came from. Records "
        "dead-lettered meanwhile (a consumer that still refuses them) wait for the next replay; "
        "progress is logged every 5 s.",
    )
    _common(r, store=False)  # it only moves records between topics
    kafka_arguments(r)
    r.add_argument(
        "--group",
        type=argtypes.non_blank("consumer group id"),
        default="convmetrics-dlq-replay",
        help="consumer group that remembers what was replayed (default convmetrics-dlq-replay)",
    )
    r.add_argument(
        "--idle-timeout",
        type=_seconds,
        default=5.0,
        help="stop after this many seconds without a DLQ record before that end (default 5)",
    )
    _wire(r, "replayed records")
    r.set_defaults(func=_dlq_replay)


_seconds, _days = argtypes.above_zero("seconds"), argtypes.above_zero("days")


def _label_count(text: str) -> int:
    """At most what the dashboard can ask for by name (`/v1/closures?keys=`: MAX_KEYS)."""
    from consumer.serve.query import MAX_KEYS

    value = argtypes.positive_int(text)
    if value > MAX_KEYS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_KEYS}, got {value}")
    return value


def _api_access(
    p: argparse.ArgumentParser, *, host: tuple[str, str], port: tuple[str, str, int | None]
) -> None:
    """Where the API listens (`host`: flag and env; `port`: flag, env and default, None for
    no API), who may read it, and how many label values /metrics shows."""
    (host_flag, host_env), (port_flag, port_env, port_default) = host, port
    p.add_argument(
        port_flag,
        type=argtypes.or_env(argtypes.port, port_env),
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
        "one '<sha256 hex of the token> <scope> [expires=<UTC time>]' a line, scope * or "
        "comma-separated account ids, # comments; `convmetrics token new` prints a token and "
        "its line; read again when it changes. Without it the API is open",
    )
    # what each of these flags is when not given: `consume` refuses them without an API
    p.set_defaults(
        api_flag_defaults={
            host_flag: p.get_default(host_flag.lstrip("-").replace("-", "_")),
            "--tokens-file": p.get_default("tokens_file"),
            "--max-label-values": p.get_default("max_label_values"),
        }
    )


def _label_values(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-label-values",
        type=_label_count,
        default=200,
        metavar="N",
        help="channel types that /metrics and /v1/summary (and the dashboard) show by name: the N "
        'with the most closures; the rest are summed under channel_type="_other", so a sender '
        "inventing names cannot inflate Prometheus series (default 200, at most 1000)",
    )
