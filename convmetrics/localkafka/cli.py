"""``convmetrics broker``: run a local Kafka broker in the foreground."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from convmetrics.localkafka.broker import LocalBroker, tail_lines
from convmetrics.localkafka.exceptions import LocalKafkaError
from convmetrics.localkafka.jars import KAFKA_VERSION, cache_dir
from convmetrics.process import signals_stop
from schemas import argtypes

#: what stops a server run in the foreground cleanly (`convmetrics.process.signals_stop`);
#: ignored while it closes. A SIGKILL ends its JVM too, by the JVM's parent-death signal
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Server(Protocol):
    """A local JVM server (`LocalBroker`, `LocalRegistry`)."""

    @property
    def log_path(self) -> Path: ...

    @property
    def running(self) -> bool: ...

    def start(self) -> Any: ...

    def close(self) -> None: ...


def notice(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_in_foreground(command: str, name: str, server: Server, ready: Callable[[], tuple[str, str]]) -> int:
    """`convmetrics broker` and `registry`: start `server`, print `ready()`'s first line on
    stdout (what a script reads) and its second on stderr, and run until SIGINT, SIGTERM or
    SIGHUP; 0 on a clean stop, 1 when it fails to start or exits by itself."""
    try:
        with signals_stop():  # SIGTERM and SIGHUP stop it as Ctrl-C does
            server.start()
            address, more = ready()
            print(address, flush=True)
            notice(f"{more}; Ctrl-C to stop")
            while server.running:
                time.sleep(0.5)
        notice(f"{name} exited unexpectedly:\n{tail_lines(server.log_path)}")
        return 1
    except KeyboardInterrupt:
        notice(f"stopping the {name}")
        return 0
    except LocalKafkaError as exc:
        notice(f"convmetrics {command}: error: {exc}")
        return 1
    finally:
        before = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}  # a second Ctrl-C
        try:  # must not skip the cleanup
            server.close()
        finally:
            for sig, handler in before.items():
                signal.signal(sig, handler)


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


def run_broker(args: argparse.Namespace) -> int:
    """Run the broker until SIGINT, SIGTERM or SIGHUP; 0 on a clean stop, 1 on failure."""
    broker = LocalBroker(args.port, args.data_dir, kafka_home=args.kafka_home, on_download=notice)
    return run_in_foreground(
        "broker",
        "Kafka broker",
        broker,
        lambda: (
            f"bootstrap servers: {broker.bootstrap_servers}",
            f"data dir {broker.data_dir}, log {broker.log_path}",
        ),
    )
