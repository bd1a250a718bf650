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
#: How far before a closure the Kafka Streams peer's join looks for the conversation's start.
START_DAYS = 400
RESULT_FILE = "result.json"
STARTS = ("conversation.created", "conversation.opened")
#: data.<verb>At of each event type (as ``consumer.fold.model.TIME_FIELDS``); else the envelope time.
TIME_FIELDS = {
    "conversation.created": "createdAt",
    "conversation.opened": "openedAt",
    "conversation.closed": "closedAt",
    "conversation.snoozed": "snoozedAt",
    "conversation.assigned": "assignedAt",
}


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


def event_time(record: dict[str, Any]) -> int:
    """Unix seconds: the data.<verb>At field of the record's event type, else the envelope time."""
    name = TIME_FIELDS.get(record["event"])
    t = None if name is None else record["data"][name]
    return record["createdAt"] if t is None else int(t)


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


@dataclass
class TimeToClose:
    """Time to close per channel type, as the Kafka Streams peer computes it (a plain scan).

    Per closure event id (redeliveries count once): closedAt minus the latest created/opened
    time of the same conversation (the record key) in [closedAt - START_DAYS, closedAt];
    closures without such a start have none. Summed per channel type over all time.
    """

    starts: dict[bytes, list[int]] = field(default_factory=dict)  # conversation key -> start times
    closures: dict[str, tuple[bytes, str, int]] = field(default_factory=dict)  # event id -> (key, ch, t)

    def add(self, key: bytes, record: dict[str, Any]) -> None:
        event = record["event"]
        if event == CLOSED:
            c = closure_of(record)
            assert c is not None
            self.closures.setdefault(record["id"], (key, c.channel_type, c.closed_at))
        elif event in STARTS:
            self.starts.setdefault(key, []).append(event_time(record))

    def per_channel(self) -> dict[str, tuple[int, int]]:
        """channel type -> (closures with a start, sum of their times to close in seconds)."""
        out: dict[str, tuple[int, int]] = {}
        horizon = START_DAYS * 86_400
        for key, ch, t in self.closures.values():
            before = [s for s in self.starts.get(key, ()) if t - horizon <= s <= t]
            if before:
                n, total = out.get(ch, (0, 0))
                out[ch] = (n + 1, total + t - max(before))
        return out


def output_lines(tally: Tally, ttc: dict[str, tuple[int, int]]) -> dict[str, str]:
    """The Kafka Streams peer's output topic, as key -> value, for these aggregates."""
    out = {f"m|{ch}|{minute}": str(n) for (ch, minute), n in tally.per_minute.items()}
    out.update((f"a|{account}", str(n)) for account, n in tally.per_account.items())
    out.update((f"t|{ch}", f"{n},{total}") for ch, (n, total) in ttc.items())
    return out


def parse_output(rows: dict[str, str]) -> tuple[Tally, dict[str, tuple[int, int]]]:
    """Inverse of ``output_lines``: the aggregates in the last value of each output key."""
    tally, ttc = Tally(), {}
    for key, value in rows.items():
        kind, rest = key.split("|", 1)
        if kind == "m":
            ch, minute = rest.rsplit("|", 1)
            tally.per_minute[(ch, int(minute))] = int(value)
        elif kind == "a":
            tally.per_account[int(rest)] = int(value)
        elif kind == "t":
            n, total = value.split(",")
            ttc[rest] = (int(n), int(total))
        else:
            raise ValueError(f"unexpected output key {key!r}")
    return tally, ttc


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

    ``first`` must come from ``start_clock()``: ``cpu_s`` is this process's CPU time (all
    threads) from then to now, ``peak_rss_mb`` its peak resident set (VmHWM).
    A file, not stdout: Faust's worker takes over the standard streams.
    """
    seconds = done - first
    line = {
        "name": name,
        "records": records,
        "seconds": seconds,
        "events_per_s": records / seconds,
        "cpu_s": None if _cpu_first is None else time.process_time() - _cpu_first,
        "peak_rss_mb": peak_rss_mb(),
        **extra,
    }
    (Path(workdir) / RESULT_FILE).write_text(json.dumps(line))


def now() -> float:
    return time.perf_counter()


_cpu_first: float | None = None


def start_clock() -> float:
    """``now()`` at the first record, also noting the process CPU time for ``emit``."""
    global _cpu_first
    _cpu_first = time.process_time()
    return now()


def peak_rss_mb() -> float | None:
    """This process's peak resident set size (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None
