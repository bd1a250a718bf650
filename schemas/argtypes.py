"""argparse types shared by every `convmetrics` command: each refuses a bad value with a
message argparse prints after the flag's name (`argument --port: must be a port from 1 to
65535, got 'abc'`), never the name of a Python function, and each also checks a default
taken from an environment variable (argparse passes a string default through `type`).

In `schemas`, beside the other flags every package shares (`schemas.kafka`): the
consumer's, the broker's, the demo's and the `schemas` commands use them (the gateway's
flags are checked by its settings model).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def positive_int(text: str) -> int:
    """A count of at least 1."""
    value = _int(text, "a whole number of at least 1")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def port(text: str) -> int:
    """A TCP port."""
    value = _int(text, "a port from 1 to 65535")
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535, got {text!r}")
    return value


def bootstrap_servers(text: str) -> str:
    """Kafka's bootstrap servers: a comma-separated list of `host[:port]` (an optional
    `SCHEME://` before each, `[v6]:port` for IPv6). librdkafka reads a port it cannot parse
    as 0 and retries `host:0` forever, so a typo (`kafka:9o92`) is refused here."""
    entries = [e.strip() for e in text.split(",")]
    if not text.strip() or not all(entries):
        raise argparse.ArgumentTypeError(f"must be host:port[,host:port...], got {text!r}")
    for entry in entries:
        hostport = entry.split("://", 1)[-1]
        port_text: str | None
        if hostport.startswith("[") and "]" in hostport:  # [v6] or [v6]:port
            host, _, rest = hostport.partition("]")
            port_text = rest[1:] if rest.startswith(":") else None if not rest else "?"
        else:
            host, sep, port_text = hostport.rpartition(":")
            if not sep:  # no port: librdkafka's default, 9092
                host, port_text = hostport, None
        at = f" (at {entry!r})" if entry != text.strip() else ""
        digits = port_text is None or (port_text.isascii() and port_text.isdigit())
        if not host.strip("[") or not digits:
            raise argparse.ArgumentTypeError(f"must be host:port[,host:port...], got {text!r}{at}")
        if port_text is not None and not 1 <= int(port_text) <= 65535:
            raise argparse.ArgumentTypeError(f"must name ports from 1 to 65535, got {text!r}{at}")
    return text.strip()


def non_blank(what: str) -> Callable[[str], str]:
    """A name that is not empty nor only spaces (`what` it names), as given."""

    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"must be a {what}, got {text!r}")
        return text

    return parse


def above_zero(unit: str) -> Callable[[str], float]:
    """A finite number of `unit` above 0 (a zero or negative interval or timeout is a typo;
    a retention or TTL of 0 or less would delete rows, or forget every conversation, at once)."""

    def parse(text: str) -> float:
        if not 0 < (value := _float(text)) < math.inf:
            raise argparse.ArgumentTypeError(f"must be a number of {unit} above 0, got {text!r}")
        return value

    return parse


def at_least(minimum: float, unit: str, why: str) -> Callable[[str], float]:
    """A finite number of `unit` of at least `minimum` (`why`: what a smaller one breaks)."""

    def parse(text: str) -> float:
        if not minimum <= (value := _float(text)) < math.inf:
            raise argparse.ArgumentTypeError(
                f"must be a number of {unit} of at least {minimum:g} ({why}), got {text!r}"
            )
        return value

    return parse


def _float(text: str) -> float:
    """`text` as a float, NaN when it is not a number (refused as out of every range)."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def one_of(choices: Iterable[str], *, fold_case: bool = False) -> Callable[[str], str]:
    """One of `choices` (instead of argparse's `choices=`, which never checks a default, so a
    bad environment value would reach the code); `fold_case`: any case, returned as in `choices`."""
    names = list(choices)
    by_key = {(n.upper() if fold_case else n): n for n in names}

    def parse(text: str) -> str:
        found = by_key.get(text.upper() if fold_case else text)
        if found is None:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(names)}, got {text!r}")
        return found

    return parse


def or_env(parse: Callable[[str], T], env: str) -> Callable[[str], T]:
    """`parse` for a flag whose default comes from `env`: its refusal says the value may be
    the variable's (Kubernetes, for one, sets `CONVMETRICS_PORT=tcp://...` for a Service
    named convmetrics)."""

    def checked(text: str) -> T:
        try:
            return parse(text)
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{exc} (from the flag, or else {env})") from None

    return checked


def command_name(args: argparse.Namespace) -> str:
    """`convmetrics dlq replay`, as argparse names it in its own errors: the command and the
    action of a command that has them (their subparsers' dest is `<command>_command`)."""
    action = getattr(args, f"{args.command}_command", None)
    return " ".join(("convmetrics", args.command, *([action] if action else [])))


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
