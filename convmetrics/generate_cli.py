"""``convmetrics generate``: write synthetic webhooks as NDJSON (stdout or a file)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

from convmetrics.generate import (
    DEFAULT_START,
    GenerateConfig,
    GenerateConfigError,
    generate_ndjson,
)

logger = logging.getLogger(__name__)

_BATCH = 2_000  # lines per write()
_LOG_EVERY = 10.0  # seconds between plain progress lines when stderr is not a TTY


def register(subparsers: Any) -> None:
    """Add the ``generate`` subcommand to the ``convmetrics`` parser."""
    defaults = GenerateConfig()
    parser = subparsers.add_parser(
        "generate",
        help="write seeded synthetic conversation webhooks as NDJSON",
        description=(
            "Write realistic conversation webhooks (the platform's JSON, one per line) with "
            "lifecycles, long-tailed durations, redeliveries, late events, unknown channel "
            "types and non-conversation noise. The same flags always give the same output."
        ),
    )
    add = parser.add_argument
    add("--seed", type=int, default=defaults.seed, help="RNG seed (default %(default)s)")
    add("--events", type=int, default=defaults.events,
        help="approximate number of lines (default %(default)s)")  # fmt: skip
    add("--accounts", type=int, default=defaults.accounts, help="number of accounts (default %(default)s)")
    add("--conversations", type=int, default=defaults.conversations,
        help="at most this many conversations (default %(default)s)")  # fmt: skip
    add("--start", type=int, default=DEFAULT_START,
        help="unix seconds where conversations start (default %(default)s)")  # fmt: skip
    add("--span", type=int, default=defaults.span,
        help="seconds over which conversations start (default %(default)s)")  # fmt: skip
    add("--output", "-o", default="-", help="file to write, '-' for stdout (default)")
    for flag, attr, what in (
        ("--duplicate-rate", "duplicate_rate", "chance a delivery is redelivered later"),
        ("--late-rate", "late_rate", "chance a conversation event arrives late"),
        ("--unknown-channel-rate", "unknown_channel_rate", "share on unlisted channel types"),
        ("--noise-rate", "noise_rate", "share of non-conversation events"),
        ("--alt-time-field-rate", "alt_time_field_rate", "share of envelopes with <verb>_at"),
        ("--missing-time-rate", "missing_time_rate", "share of events without data.<verb>At"),
        ("--same-second-rate", "same_second_rate", "chance of a same-second assignment or closure"),
    ):
        add(flag, type=float, default=getattr(defaults, attr), help=f"{what} (default %(default)s)")
    add("--no-progress", action="store_true", help="no progress output on stderr")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate to ``--output``; returns the exit status."""
    try:
        config = GenerateConfig(
            seed=args.seed, events=args.events, accounts=args.accounts,
            conversations=args.conversations, start=args.start, span=args.span,
            duplicate_rate=args.duplicate_rate, late_rate=args.late_rate,
            unknown_channel_rate=args.unknown_channel_rate, noise_rate=args.noise_rate,
            alt_time_field_rate=args.alt_time_field_rate,
            missing_time_rate=args.missing_time_rate, same_second_rate=args.same_second_rate,
        )  # fmt: skip
    except GenerateConfigError as exc:
        flag = "--" + exc.field.replace("_", "-")
        print(f"convmetrics generate: error: {flag} {exc.problem}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        try:
            out: IO[bytes] = (
                sys.stdout.buffer if args.output == "-" else stack.enter_context(open(args.output, "wb"))
            )
        except OSError as exc:
            print(f"convmetrics generate: error: --output {args.output}: {exc.strerror}", file=sys.stderr)
            return 2
        lines = _with_progress(generate_ndjson(config), config.events, quiet=args.no_progress)
        try:
            written = write_batched(lines, out)
            out.flush()
        except BrokenPipeError:
            raise  # the reader stopped (`| head`): convmetrics.cli ends quietly
        except OSError as exc:
            print(f"convmetrics generate: error: writing {args.output}: {exc.strerror}", file=sys.stderr)
            return 1
    elapsed = time.perf_counter() - started
    logger.info("generated %d events in %.1f s (%.0f/s)", written, elapsed, written / elapsed)
    return 0


def write_batched(lines: Iterator[bytes], out: IO[bytes]) -> int:
    """Write ``lines`` in batches; returns how many were written."""
    batch: list[bytes] = []
    written = 0
    for line in lines:
        batch.append(line)
        if len(batch) >= _BATCH:
            out.write(b"".join(batch))
            written += len(batch)
            batch.clear()
    out.write(b"".join(batch))
    return written + len(batch)


def _with_progress(lines: Iterator[bytes], total: int, *, quiet: bool) -> Iterator[bytes]:
    if quiet:
        yield from lines
    elif sys.stderr.isatty():
        from rich.progress import Progress

        with Progress(transient=True) as progress:
            task = progress.add_task("generating", total=total)
            for count, line in enumerate(lines, 1):
                yield line
                if count % 10_000 == 0:
                    progress.update(task, completed=count)
    else:
        next_log = time.monotonic() + _LOG_EVERY
        for count, line in enumerate(lines, 1):
            yield line
            if count % 10_000 == 0 and time.monotonic() >= next_log:
                logger.info("generated %d of ~%d events", count, total)
                next_log += _LOG_EVERY
