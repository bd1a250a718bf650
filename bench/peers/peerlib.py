"""What the peer benchmarks share: the decoder, the closure projection, the tally and the result line.

Every peer decodes with our ``schemas.Codec`` and the consumer's reader projection, so that
decoding costs the same everywhere; the aggregation itself is written in each framework's
own idiom (see the peer scripts).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from consumer.fold.model import READER_SCHEMA
from schemas import CONVERSATION_EVENT, Codec, subject

CLOSED = "conversation.closed"
WINDOW_SECONDS = 60
#: No closure is ever late for the peers' windows (the generator delivers up to 30 days late).
GRACE_SECONDS = 40 * 86_400
RESULT_FILE = "result.json"


def new_codec() -> Codec:
    """The consumer's codec: latest writer versions, resolved to its reader projection."""
    return Codec(subject(CONVERSATION_EVENT), reader_schema=READER_SCHEMA)


class Closure(NamedTuple):
    channel_type: str
    account: int
    closed_at: int  # event time, unix seconds: data.closedAt, else the envelope time


def closure_of(record: dict[str, Any]) -> Closure | None:
    """The closure in a decoded record, or None for any other event."""
    if record["event"] != CLOSED:
        return None
    data = record["data"]
    t = data["closedAt"]
    return Closure(data["channelType"], record["account"], record["createdAt"] if t is None else t)


def minute_of(t: int) -> int:
    """Start (unix seconds) of the 1-minute tumbling window holding ``t``."""
    return t - t % WINDOW_SECONDS


@dataclass
class Tally:
    """The subset's final answer, mirrored from each framework's state for the cross-check."""

    per_minute: dict[tuple[str, int], int] = field(default_factory=dict)  # (channel type, minute) -> n
    per_account: dict[int, int] = field(default_factory=dict)  # account -> n, all time

    def summary(self) -> dict[str, Any]:
        rows = sorted(self.per_minute.items()), sorted(self.per_account.items())
        return {
            "closures": sum(self.per_minute.values()),
            "windows": len(self.per_minute),
            "accounts": len(self.per_account),
            "per_account_total": sum(self.per_account.values()),
            "digest": hashlib.sha256(repr(rows).encode()).hexdigest()[:16],
        }


def child_args(description: str) -> argparse.Namespace:
    """Arguments every peer process takes from ``run.py``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--ends", required=True, help="JSON {partition: end offset} of the topic")
    p.add_argument("--group", required=True, help="consumer group / application id (fresh per run)")
    p.add_argument("--workdir", required=True, help="state directory (fresh per run)")
    p.add_argument("--option", action="append", default=[], help="peer-specific KEY=VALUE")
    return p.parse_args()


def parse_ends(text: str) -> dict[int, int]:
    return {int(k): int(v) for k, v in json.loads(text).items()}


def emit(workdir: str, name: str, *, records: int, first: float, done: float, extra: dict[str, Any]) -> None:
    """Write the result ``run.py`` reads (times are ``time.perf_counter()`` stamps).

    A file, not stdout: Faust's worker takes over the standard streams.
    """
    seconds = done - first
    line = {"name": name, "records": records, "seconds": seconds, "events_per_s": records / seconds, **extra}
    (Path(workdir) / RESULT_FILE).write_text(json.dumps(line))


def now() -> float:
    return time.perf_counter()
