"""``convmetrics registry``: run a local Confluent-compatible schema registry in the foreground."""

from __future__ import annotations

import argparse
from typing import Any

from convmetrics.localkafka.cli import notice, run_in_foreground
from convmetrics.localregistry.server import APICURIO_VERSION, LocalRegistry
from schemas import argtypes


def register(subparsers: Any) -> None:
    """Add the ``registry`` subcommand to the ``convmetrics`` parser."""
    parser = subparsers.add_parser(
        "registry",
        help="run a local schema registry (Confluent-compatible API) to try --wire-format confluent",
        description=(
            f"Run Apicurio Registry {APICURIO_VERSION} (in-memory storage: its schemas are gone "
            "when it stops) on 127.0.0.1 until Ctrl-C, SIGTERM or SIGHUP, for trying the Confluent "
            "wire format locally (docs/pipelines.md); in production, use your registry. Needs "
            "Java 17+; downloaded once from Maven Central into the cache of `convmetrics broker`. "
            "Prints 'schema registry: URL' when ready: give that URL to --schema-registry-url or "
            "CONVMETRICS_SCHEMA_REGISTRY_URL, then run `convmetrics schemas push`."
        ),
    )
    parser.add_argument("--port", type=argtypes.port, default=None, help="HTTP port (default: a free port)")
    parser.set_defaults(func=run_registry)


def run_registry(args: argparse.Namespace) -> int:
    """Run the registry until SIGINT, SIGTERM or SIGHUP; 0 on a clean stop, 1 on failure."""
    registry = LocalRegistry(args.port, on_download=notice)
    return run_in_foreground(
        "registry",
        "schema registry",
        registry,
        lambda: (f"schema registry: {registry.url}", f"log {registry.log_path}"),
    )
