"""``convmetrics broker``: run a local Kafka broker in the foreground."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from convmetrics.localkafka.broker import LocalBroker, tail_lines
from convmetrics.localkafka.exceptions import LocalKafkaError
from convmetrics.localkafka.jars import KAFKA_VERSION, cache_dir
from schemas import argtypes

#: what stops the broker cleanly; a SIGKILL ends it too, by the JVM's parent-death signal
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Interrupted(Exception):
    """Raised by the stop signals' handler to unwind to the cleanup."""


def register(subparsers: Any) -> None:
    """Add the ``broker`` subcommand to the ``convmetrics`` parser."""
    parser = subparsers.add_parser(
        "broker",
        help="run a local single-node Kafka broker (no Docker needed)",
        description=(
            f"Run a real Apache Kafka {KAFKA_VERSION} broker (KRaft, broker+controller in "
            "one JVM) on 127.0.0.1 until Ctrl-C, SIGTERM or SIGHUP. Needs Java 17+. The jars come "
            "from $KAFKA_HOME/libs, or are downloaded once with Maven into "
            f"{cache_dir()} ($CONVMETRICS_CACHE_DIR). Prints 'bootstrap servers: HOST:PORT' "
            "when ready."
        ),
    )
    parser.add_argument("--port", type=argtypes.port, default=None, help="client port (default: a free port)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep topics here across restarts (default: a temp dir removed on exit)",
    )
    parser.add_argument(
        "--kafka-home",
        type=Path,
        default=None,
        help="unpacked Kafka distribution to run (default: $KAFKA_HOME, else cached jars)",
    )
    parser.set_defaults(func=run_broker)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise _Interrupted(signum)


def _notice(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_broker(args: argparse.Namespace) -> int:
    """Run the broker until SIGINT, SIGTERM or SIGHUP; 0 on a clean stop, 1 on failure."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _interrupt)
    broker = LocalBroker(args.port, args.data_dir, kafka_home=args.kafka_home, on_download=_notice)
    try:
        broker.start()
        print(f"bootstrap servers: {broker.bootstrap_servers}", flush=True)
        _notice(f"data dir {broker.data_dir}, log {broker.log_path}; Ctrl-C to stop")
        while broker.running:
            time.sleep(0.5)
        _notice(f"Kafka broker exited unexpectedly:\n{tail_lines(broker.log_path)}")
        return 1
    except _Interrupted:
        _notice("stopping the Kafka broker")
        return 0
    except LocalKafkaError as exc:
        _notice(f"convmetrics broker: error: {exc}")
        return 1
    finally:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        broker.close()
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
