"""`convmetrics demo`: flags in, `run_demo` called."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from schemas import argtypes
from schemas.kafka import add_arguments as kafka_arguments


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline locally: broker, gateway, consumer, API; stream webhooks",
        description="Starts a local Kafka broker (unless --bootstrap-servers names a cluster), the "
        "gateway, the consumer (every metric: --metric-set full) with its API and dashboard, posts "
        "generated webhooks timed over the last two days up to now through HTTP with a live progress "
        "bar, then keeps running: it posts a live trickle of events timed as they are sent and redraws "
        "the closure metrics, so the dashboard it names stays up, until Ctrl-C, which stops everything "
        "it started. --once prints the table and exits instead (for scripts and CI).",
    )
    p.add_argument(
        "--events",
        type=argtypes.positive_int,
        default=20_000,
        help="webhooks to generate over the two days before now (default 20000); those that would "
        "fall after now are cut, so somewhat fewer are sent and some conversations stay open",
    )
    p.add_argument(
        "--rate",
        type=argtypes.above_zero("webhooks per second"),
        default=None,
        help="webhooks per second (default: as fast as accepted)",
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="print the table after the backfill and exit (default: keep running with a live view)",
    )
    p.add_argument(
        "--live-rate",
        type=argtypes.above_zero("webhooks per second"),
        default=5.0,
        help="webhooks per second of the live trickle after the backfill (default 5)",
    )
    p.add_argument(
        "--keep-running",
        action="store_true",
        help="accepted for older scripts: keeping running is the default now (see --once)",
    )
    p.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    p.add_argument(
        "--gateway-port", type=argtypes.port, default=None, help="gateway port (default: a free one)"
    )
    p.add_argument(
        "--api-port", type=argtypes.port, default=None, help="API/dashboard port (default: a free one)"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep logs, store and broker data here (default: a temporary directory removed on exit)",
    )
    p.add_argument(
        "--bootstrap-servers",
        type=argtypes.bootstrap_servers,
        default=None,
        help="an external Kafka cluster instead of a local broker: the demo writes generated events "
        "to its --topic there. CONVMETRICS_BOOTSTRAP_SERVERS is not read (it may point at production)",
    )
    p.add_argument(
        "--topic",
        default="conversation-events",
        help="the events topic (default conversation-events; unlike the other commands the demo "
        "does not read CONVMETRICS_TOPIC, so a deployment's setting never sends it demo events)",
    )
    kafka_arguments(p)
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from convmetrics.demo import DemoError, DemoOptions, run_demo

    if args.once and args.keep_running:
        print(
            "convmetrics demo: error: --once exits after the table; --keep-running keeps running: give one",
            file=sys.stderr,
        )
        return 2
    from schemas.kafka import KafkaSettingsError, from_args

    try:
        kafka = from_args(args)  # checked here; the gateway and the consumer get the same flags
    except KafkaSettingsError as exc:
        print(f"convmetrics demo: error: {exc}", file=sys.stderr)
        return 2
    flags = [f for pair in args.kafka for f in ("--kafka", pair)]
    if args.kafka_config:
        flags += ["--kafka-config", str(args.kafka_config)]
    opts = DemoOptions(
        events=args.events, rate=args.rate, once=args.once, live_rate=args.live_rate, seed=args.seed,
        gateway_port=args.gateway_port, api_port=args.api_port, data_dir=args.data_dir,
        bootstrap_servers=args.bootstrap_servers, topic=args.topic, kafka=kafka, kafka_flags=tuple(flags),
    )  # fmt: skip
    try:
        return run_demo(opts)
    except DemoError as exc:
        print(f"convmetrics demo: error: {exc}", file=sys.stderr)
        return 1
