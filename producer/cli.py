"""``convmetrics gateway`` and ``convmetrics produce FILE``: parse flags, call, report."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.kafka import add_arguments as kafka_arguments

if TYPE_CHECKING:
    from rich.console import Console

    from producer.backfill import Rejection

log = logging.getLogger(__name__)

#: Flags shared by both commands: (flag, settings field, type, help). Each field is also read
#: from CONVMETRICS_<FIELD> (`producer.settings`), which `_help` names where the text does not.
_COMMON: tuple[tuple[str, str, Any, str], ...] = (
    (
        "--bootstrap-servers",
        "bootstrap_servers",
        str,
        "Kafka bootstrap servers, required: here or in env CONVMETRICS_BOOTSTRAP_SERVERS "
        "(`convmetrics broker` starts a local one)",
    ),
    ("--topic", "topic", str, "events topic (env CONVMETRICS_TOPIC; default conversation-events)"),
    ("--delivery-timeout", "delivery_timeout", float, "seconds to wait for acks=all (default 10)"),
    ("--partitions", "partitions", int, "partitions when creating the topic (default 6)"),
    (
        "--key-by",
        "key_by",
        str,
        "what each event's Kafka key holds (env CONVMETRICS_KEY_BY): account (default: an account's "
        "events, and its metric rows, on one partition) or conversation (account:id, the key "
        "before 2026-12-06: keep it for a topic that already holds events keyed so; "
        "docs/operations.md)",
    ),
    (
        "--replication-factor",
        "replication_factor",
        int,
        "replication factor when creating it (default: the broker's default.replication.factor)",
    ),
    (
        "--wire-format",
        "wire_format",
        str,
        "how events are framed (env CONVMETRICS_WIRE_FORMAT): single-object (default) or confluent "
        "(00 + the registry's schema id, read by ClickHouse, Kafka Connect, Flink...; needs "
        "--schema-registry-url and `convmetrics schemas push` first)",
    ),
    (
        "--schema-registry-url",
        "schema_registry_url",
        str,
        "Confluent-compatible schema registry (env CONVMETRICS_SCHEMA_REGISTRY_URL; basic auth in "
        "CONVMETRICS_SCHEMA_REGISTRY_USER_INFO=USER:PASSWORD, TLS in CONVMETRICS_SCHEMA_REGISTRY_CA, "
        "_CERT, _KEY); the schema id is looked up once at start",
    ),
)
_GATEWAY: tuple[tuple[str, str, Any, str], ...] = (
    ("--host", "host", str, "listen address (env CONVMETRICS_HOST; default 0.0.0.0)"),
    ("--port", "port", int, "listen port (env CONVMETRICS_PORT; default 8080)"),
    (
        "--webhook-secrets",
        "webhook_secrets",
        str,
        "comma-separated whsec_ secrets checking each webhook's Standard Webhooks signature "
        "(default: none, signatures are not checked; prefer the variable CONVMETRICS_WEBHOOK_SECRETS "
        "or --webhook-secrets-file: a flag shows in ps)",
    ),
    (
        "--webhook-secrets-file",
        "webhook_secrets_file",
        str,
        "a file of the whsec_ secrets (comma-, space- or line-separated, # comments), as a mounted "
        "Secret: kept out of the environment, ps and docker inspect (env CONVMETRICS_WEBHOOK_SECRETS_FILE)",
    ),
    (
        "--max-body-bytes",
        "max_body_bytes",
        int,
        "body limit of POST /webhooks in bytes (default 1048576: 1 MiB)",
    ),
    (
        "--max-batch-bytes",
        "max_batch_bytes",
        int,
        "body limit of /webhooks/batch in bytes (default 16777216)",
    ),
    ("--retry-after", "retry_after", int, "Retry-After seconds on 503 (default 5)"),
)


def register(subparsers: Any) -> None:
    """Add ``gateway`` and ``produce`` to the ``convmetrics`` parser."""
    gw = subparsers.add_parser(
        "gateway",
        help="HTTP webhook gateway: conversation webhooks in, Avro events out to Kafka",
        description="Serve POST /webhooks and /webhooks/batch; answer 202 only once Kafka acknowledged.",
        epilog="Also read from the environment, without a flag: CONVMETRICS_LINGER_MS (the producer's "
        "linger, default 5), CONVMETRICS_COMPRESSION (none, gzip, snappy, lz4 (default), zstd), "
        "CONVMETRICS_CREATE_TOPIC=false (as --no-create-topic). docs/operations.md",
    )
    for flag, dest, typ, text in (*_COMMON, *_GATEWAY):
        gw.add_argument(flag, dest=dest, type=typ, default=None, help=_help(dest, text))
    gw.add_argument("--no-create-topic", dest="create_topic", action="store_false", default=None,
                    help="do not create the topic at start")  # fmt: skip
    gw.add_argument("--access-log", action="store_true", help="log every request")
    kafka_arguments(gw)
    # uvicorn handles SIGTERM itself (a graceful stop), then raises it again: not Ctrl-C's
    gw.set_defaults(func=run_gateway, own_signals=True)

    prod = subparsers.add_parser(
        "produce",
        help="send a JSON or NDJSON file of webhooks to Kafka (no HTTP)",
        description="Backfill: validate, encode and produce every webhook of FILE ('-' for stdin); "
        "exit 1 listing the rejected items when any was rejected.",
        epilog="Also read from the environment: CONVMETRICS_LINGER_MS, CONVMETRICS_COMPRESSION and "
        "CONVMETRICS_CREATE_TOPIC=false (do not create the topic), as for the gateway.",
    )
    prod.add_argument("file", help="JSON array or NDJSON file of webhooks, or -")
    for flag, dest, typ, text in _COMMON:
        prod.add_argument(flag, dest=dest, type=typ, default=None, help=_help(dest, text))
    prod.add_argument("--no-progress", action="store_true", help="no progress bar")
    kafka_arguments(prod)
    prod.set_defaults(func=run_produce)


def _help(dest: str, text: str) -> str:
    """A flag's help naming the variable its settings field is also read from."""
    env = f"CONVMETRICS_{dest.upper()}"
    if env in text:
        return text
    if "(default " in text:
        return text.replace("(default ", f"(env {env}; default ", 1)
    return f"{text} (env {env})"


def _settings(args: argparse.Namespace, fields: tuple[tuple[str, str, Any, str], ...]) -> Any:
    from producer.exceptions import SettingsError
    from producer.settings import GatewaySettings, load_settings
    from schemas.kafka import KafkaSettingsError, from_args

    overrides = {dest: getattr(args, dest, None) for _, dest, _, _ in fields}
    # the HTTP settings of a command that serves none (produce): their defaults, whatever
    # the environment says (Kubernetes sets CONVMETRICS_PORT=tcp://... for a Service so named)
    for _, dest, _, _ in _GATEWAY:
        if dest not in overrides and dest in GatewaySettings.model_fields:
            overrides[dest] = GatewaySettings.model_fields[dest].get_default()
    overrides.setdefault("webhook_secrets_file", "")  # "": not read (produce checks no signature)
    try:
        overrides["kafka"] = from_args(args)
    except KafkaSettingsError as exc:
        raise SettingsError(f"invalid settings: {exc}") from None
    if getattr(args, "create_topic", None) is not None:
        overrides["create_topic"] = args.create_topic
    flags = {dest: flag for flag, dest, _, _ in fields} | {"kafka": "--kafka"}
    if hasattr(args, "create_topic"):
        flags["create_topic"] = "--no-create-topic"
    return load_settings(flags=flags, **overrides)


def run_gateway(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; uvicorn drains in-flight requests, then the producer."""
    import uvicorn

    from producer.app import create_app
    from producer.exceptions import GatewayError
    from schemas.listen import KEEP_ALIVE_S, listening

    try:
        settings = _settings(args, (*_COMMON, *_GATEWAY))
        app = create_app(settings)
    except GatewayError as exc:
        print(f"convmetrics gateway: error: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, loop="uvloop", http="httptools",
        lifespan="on", access_log=args.access_log, log_level=logging.getLogger().level,
        backlog=4096, timeout_keep_alive=KEEP_ALIVE_S, log_config=None,  # as serve's (schemas.listen)
    )  # fmt: skip
    sock = listening(settings.host, settings.port)  # before start-up: no topic made for nothing
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return 0 if server.started else 1


def run_produce(args: argparse.Namespace) -> int:
    """Produce the file; print a summary and every rejected item; 1 if any was rejected, 130
    if stopped (Ctrl-C, SIGTERM) before its end, what was read being produced first."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from producer.backfill import Summary, count_lines, produce_file
    from producer.exceptions import GatewayError, KeyMismatchError, SettingsError

    console = Console(stderr=True)
    try:
        settings = _settings(args, _COMMON)
        total = None if args.file == "-" else count_lines(Path(args.file))
    except (GatewayError, OSError) as exc:
        cause = f"FILE {args.file}: {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else exc
        console.print(f"convmetrics produce: error: {cause}", style="red", markup=False, soft_wrap=True)
        return 2
    progress = Progress(
        TextColumn("[bold]producing"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(), console=console, disable=args.no_progress,
    )  # fmt: skip
    task = progress.add_task("produce", total=total, detail="")

    def on_item(s: Summary) -> None:
        done = s.produced + s.ignored + len(s.rejected)
        if done % 200 == 0 or done == total:
            detail = f"produced {s.produced} ignored {s.ignored} rejected {len(s.rejected)}"
            progress.update(task, completed=done, detail=detail)

    try:
        with progress:
            summary = produce_file(Path(args.file) if args.file != "-" else "-", settings, on_item=on_item)
            progress.update(task, completed=summary.items, total=summary.items)
    except OSError as exc:
        cause = f"cannot read {args.file}: {exc}"
        console.print(f"convmetrics produce: error: {cause}", style="red", markup=False, soft_wrap=True)
        return 2
    except (SettingsError, KeyMismatchError) as exc:  # no registry or not pushed; a topic keyed otherwise
        console.print(f"convmetrics produce: error: {exc}", style="red", markup=False, soft_wrap=True)
        return 2
    out = Console()
    out.print(
        f"{summary.items} items: {summary.produced} produced to {settings.topic}, "
        f"{summary.ignored} ignored (not conversation events), {len(summary.rejected)} rejected",
        soft_wrap=True,
    )
    if summary.rejected:
        print_rejected(out, summary.rejected)
    if summary.interrupted is not None:
        console.print(
            f"convmetrics produce: stopped by {summary.interrupted} after {summary.items} items, each "
            "accounted for above; the rest of the file was not read. Produce the file again to send "
            "it: the consumers count an event id once",
            style="yellow", markup=False, soft_wrap=True,
        )  # fmt: skip
        return 130
    return 0 if summary.ok else 1


def print_rejected(out: Console, rejected: list[Rejection]) -> None:
    """A table on a terminal (every cell whole: long ids fold, never cut); elsewhere (a
    pipe, a file, CI's log) tab-separated lines under a header, one a rejection."""
    from rich.table import Table
    from rich.text import Text

    header = ("item", "line", "event id", "status", "reason")
    rows = [(str(r.index), str(r.line), r.id or "-", str(r.status), r.reason) for r in rejected]
    if not out.is_terminal:
        for row in (header, *rows):
            line = "\t".join(" ".join(cell.split()) for cell in row)  # a tab or newline in a reason
            out.file.write(line + "\n")  # as it is: rich would expand the tabs
        return
    table = Table(title="rejected")
    for name in header:
        table.add_column(name, overflow="fold")
    for row in rows:  # text, not rich markup: an id or reason may hold brackets
        table.add_row(*(Text(c) for c in row))
    out.print(table)
