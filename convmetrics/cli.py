"""The `convmetrics` console script: one parser, subcommands registered by each package.

Each package owns its subcommands in a `cli.py` exposing ``register(subparsers)``; the
handlers import their heavy dependencies lazily so that `--help` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from convmetrics import __version__
from convmetrics.process import signals_stop
from schemas import argtypes

#: Modules that contribute subcommands, in the order `--help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "convmetrics.demo_cli",
    "producer.cli",
    "consumer.cli",
    "consumer.serve.report",
    "convmetrics.generate_cli",
    "convmetrics.localkafka.cli",
    "convmetrics.localregistry.cli",
    "schemas.cli",
)


class _Version(argparse.Action):
    """`--version`: the version and which fold and Avro writer run (compiled or Python),
    worked out only when asked (the imports would slow every command down)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        print(version_text())
        parser.exit()


def version_text() -> str:
    from consumer.fold.native import NATIVE
    from producer.intake import encoder_compiled

    fold = "compiled (Rust)" if NATIVE is not None else "Python reference (not compiled)"
    encoder = "compiled (mypyc)" if encoder_compiled() else "interpreted (not compiled)"
    return f"convmetrics {__version__}\nconsumer fold: {fold}\ngateway Avro writer: {encoder}"


#: what --log-level takes (logging's own level names), in any case
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL")
#: what --log-format takes
LOG_FORMATS = ("text", "json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convmetrics",
        description="Real-time conversation metrics for team inboxes, on Kafka.",
    )
    parser.add_argument(
        "--version",
        action=_Version,
        nargs=0,
        help="the version, and whether the fold and encoder run compiled",
    )
    parser.add_argument(
        "--log-level",
        type=argtypes.or_env(argtypes.one_of(LOG_LEVELS, fold_case=True), "CONVMETRICS_LOG_LEVEL"),
        default=os.environ.get("CONVMETRICS_LOG_LEVEL", "INFO"),
        metavar="LEVEL",
        help=f"logging level, one of {', '.join(LOG_LEVELS)} (env CONVMETRICS_LOG_LEVEL; default INFO)",
    )
    parser.add_argument(
        "--log-format",
        type=argtypes.or_env(argtypes.one_of(LOG_FORMATS, fold_case=True), "CONVMETRICS_LOG_FORMAT"),
        default=os.environ.get("CONVMETRICS_LOG_FORMAT", "text"),
        metavar="FORMAT",
        help="text (default: time, level, logger, message) or json: one JSON object a line, "
        '{"time": ISO 8601 UTC, "level", "logger", "message", "exc_info": the traceback if any}, '
        "for a log pipeline (Loki, Elasticsearch, Cloud Logging); the line a failing command "
        "ends with too (env CONVMETRICS_LOG_FORMAT)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    json_lines = args.log_format.lower() == "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_json_formatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=args.log_level, handlers=[handler])
    if logging.getLogger().level >= logging.INFO:  # a line per request of `metrics --api`: at DEBUG only
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        # SIGTERM and SIGHUP stop a command as Ctrl-C does, unless it handles them itself
        # (`own_signals`; a handler a command installs inside comes first anyway): as a
        # container's PID 1 they would otherwise be ignored
        with contextlib.nullcontext() if getattr(args, "own_signals", False) else signals_stop():
            result = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `convmetrics generate | head`: the reader stopped; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor at exit's flush
        return 1
    except Exception as exc:
        if not expected(exc):
            if json_lines:  # a bug's traceback too, as one line a log pipeline keeps whole
                logging.getLogger("convmetrics").critical(
                    "%s: crashed", argtypes.command_name(args), exc_info=exc
                )
                return 1
            raise
        # an expected failure (a store of another topic, a corrupt or unreachable store, bad
        # settings, ...): one line naming the cause, not a traceback
        line = f"{argtypes.command_name(args)}: error: {exc}"
        if json_lines:
            logging.getLogger("convmetrics").error("%s", line)
        else:
            print(line, file=sys.stderr)
        return 2 if settings_error(exc) else 1
    return int(result or 0)


#: --log-format text's lines
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _json_formatter() -> logging.Formatter:
    """--log-format json: python-json-logger's orjson formatter (orjson is a dependency
    already), fields named as log pipelines expect them."""
    from pythonjsonlogger.orjson import OrjsonFormatter

    return OrjsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
    )


def settings_error(exc: BaseException) -> bool:
    """A failure of what the command was given (a store URL, a tokens file, a setting): exit
    status 2, as for a bad flag; 1 is for what happened while it ran."""
    from consumer.exceptions import ConfigError, QueryError
    from producer.exceptions import SettingsError
    from schemas.exceptions import RegistrySettingsError
    from schemas.kafka import KafkaSettingsError

    return isinstance(
        exc, ConfigError | QueryError | SettingsError | RegistrySettingsError | KafkaSettingsError
    )


def expected(exc: BaseException) -> bool:
    """An error one of the packages raises on purpose (their error roots), with a message
    written for an operator. Imported here, late, so that `--help` stays fast."""
    from consumer.exceptions import ConsumerError
    from convmetrics.localkafka.exceptions import LocalKafkaError
    from producer.exceptions import GatewayError
    from schemas.exceptions import SchemaError

    return isinstance(exc, ConsumerError | GatewayError | SchemaError | LocalKafkaError)
