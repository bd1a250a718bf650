"""Brute-force reference of the closure-metrics contract (issue 4), for tests only.

Deliberately simple and independent of the consumer: it reads the webhook JSON as
generated or posted (dicts, not Avro records), keeps everything in memory and recomputes
from scratch. Decisions the consumer must match:

* Dedupe by envelope ``id``; the first occurrence in input order wins.
* Only ``conversation.{created,opened,closed,assigned,snoozed}`` count; every other
  event name (``message.created``, ``conversation_tag.created``, ...) is ignored.
* Event time: ``data.<verb>At`` when present and not null, else the envelope's
  ``createdAt``, else the envelope's ``<verb>_at`` (e.g. ``closed_at``).
* An event's groups come from the event itself: ``data.channelType``; the envelope's
  ``account``; both (key ``"42|TELEGRAM"``); the inbox, ``account`` and ``data.channel.id``
  (``"42|7"``; an event without ``data.channel`` has none); the envelope's ``app``.
* Counters: created, assignments, snoozes count their events; closures, reopens,
  closed_unread as before; closed_window_expired: closures whose
  ``data.messageWindowExpiresAt`` is set and earlier than the closure's time.
* first_closes: per conversation, the closure with the least (time, envelope ``id``),
  counted in its own groups; whatever arrived before it.
* time_to_first_assignment: per conversation with a created event, the assignment with
  the least (time, ``id``) among those at or after the earliest created time; its time
  minus that created time, in the assignment's own groups.
* time_to_close: closedAt minus the latest time of a created/opened event of the same
  (account, ``data.id``) with time <= closedAt, over the whole input whatever the arrival
  order; a closure with no such event counts in ``closures`` only.
* Keys are strings: the channel type as sent, the account as ``str(int)`` (``"42"``).
* Windows ``1m``/``1h``/``1d`` are tumbling, aligned to the epoch:
  ``window_start = t - t % size``; ``all`` has ``window_start`` None.
* Exact quantiles are the *lower* quantile: the sorted value at index
  ``floor(q * (n - 1))``, the rank DDSketch's ``get_quantile_value`` targets.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

#: Window name -> size in seconds (None: all time).
WINDOWS: dict[str, int | None] = {"1m": 60, "1h": 3_600, "1d": 86_400, "all": None}
#: Groupings.
BY: tuple[str, ...] = ("channel_type", "account", "account,channel_type", "inbox", "app")
#: Every counter of a row.
COUNTERS: tuple[str, ...] = (
    "closures", "reopens", "closed_unread", "created", "assignments", "snoozes", "closed_window_expired",
    "first_closes",
)  # fmt: skip
#: The counters of a row, by the event that counts in them.
COUNTED: dict[str, str] = {
    "conversation.created": "created",
    "conversation.opened": "reopens",
    "conversation.closed": "closures",
    "conversation.assigned": "assignments",
    "conversation.snoozed": "snoozes",
}
#: Conversation events and the data field holding each one's time.
TIME_FIELDS: dict[str, str] = {
    "conversation.created": "createdAt",
    "conversation.opened": "openedAt",
    "conversation.closed": "closedAt",
    "conversation.assigned": "assignedAt",
    "conversation.snoozed": "snoozedAt",
}

#: (by, key, window, window_start)
GroupKey = tuple[str, str, str, int | None]


@dataclass
class GroupTruth:
    """Exact figures of one (by, key, window, window_start) row."""

    closures: int = 0
    reopens: int = 0
    closed_unread: int = 0
    created: int = 0
    assignments: int = 0
    snoozes: int = 0
    closed_window_expired: int = 0
    first_closes: int = 0
    durations: list[int] = field(default_factory=list)
    #: times to first assignment counted in this row
    assignment_waits: list[int] = field(default_factory=list)

    @property
    def ttc_count(self) -> int:
        return len(self.durations)

    @property
    def ttc_sum(self) -> int:
        return sum(self.durations)

    @property
    def ttc_min(self) -> int | None:
        return min(self.durations) if self.durations else None

    @property
    def ttc_max(self) -> int | None:
        return max(self.durations) if self.durations else None

    @property
    def ttc_mean(self) -> float | None:
        return self.ttc_sum / len(self.durations) if self.durations else None

    def quantile(self, q: float) -> int | None:
        """Exact lower quantile of the durations (see module docstring)."""
        return exact_quantile(self.durations, q)


def exact_quantile(values: Iterable[int], q: float) -> int | None:
    """Sorted value at index ``floor(q * (n - 1))``; None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    return ordered[math.floor(q * (len(ordered) - 1))]


def within_relative_error(estimate: float, exact: float, rel: float = 0.01) -> bool:
    """True when ``estimate`` is within ``rel`` relative error of ``exact``."""
    return abs(estimate - exact) <= rel * abs(exact)


def event_time(event: dict[str, Any]) -> int:
    """The contract's event time of a conversation event."""
    name = event["event"]
    value = event["data"].get(TIME_FIELDS[name])
    if value is None:
        value = event.get("createdAt")
    if value is None:
        value = event.get(name.split(".", 1)[1] + "_at")
    if value is None:
        raise ValueError(f"event {event.get('id')!r} ({name}) carries no time")
    return int(value)


def is_unread(data: dict[str, Any]) -> bool:
    """The customer's last message was never read by an agent."""
    inbound, read = data.get("lastInboundMessageAt"), data.get("lastReadByAppUserAt")
    return inbound is not None and (read is None or read < inbound)


def dedupe(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Conversation events, first occurrence of each ``id`` only, input order kept."""
    seen: set[str] = set()
    kept: list[dict[str, Any]] = []
    for event in events:
        if event["id"] in seen:
            continue
        seen.add(event["id"])
        if event.get("event") in TIME_FIELDS:
            kept.append(event)
    return kept


def _group_keys(event: dict[str, Any], t: int) -> Iterator[GroupKey]:
    data = event["data"]
    channel, account = str(data["channelType"]), str(event["account"])
    keys = {
        "channel_type": channel,
        "account": account,
        "account,channel_type": f"{account}|{channel}",
        "app": str(event["app"]),
    }
    if data.get("channel") is not None:
        keys["inbox"] = f"{account}|{data['channel']['id']}"
    for by in BY:
        if by not in keys:
            continue
        for window, size in WINDOWS.items():  # every grouping in every window (the contract)
            yield by, keys[by], window, None if size is None else t - t % size


def compute_truth(events: Iterable[dict[str, Any]]) -> Truth:
    """Every metric row the contract defines for ``events`` (webhook dicts, any order),
    and the live backlog (`compute_backlog`)."""
    events = list(events)
    unique = dedupe(events)
    starts: dict[tuple[int, int], list[int]] = defaultdict(list)
    for event in unique:
        if event["event"] in ("conversation.created", "conversation.opened"):
            starts[(int(event["account"]), int(event["data"]["id"]))].append(event_time(event))
    rows: dict[GroupKey, GroupTruth] = defaultdict(GroupTruth)
    by_conversation: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for event in unique:
        by_conversation[(int(event["account"]), int(event["data"]["id"]))].append(event)
    for events_of in by_conversation.values():
        closes = [(event_time(e), e["id"], e) for e in events_of if e["event"] == "conversation.closed"]
        if closes:
            t, _, first = min(closes, key=lambda c: (c[0], c[1]))
            for key in _group_keys(first, t):
                rows[key].first_closes += 1
        created = [event_time(e) for e in events_of if e["event"] == "conversation.created"]
        if created:
            since = min(created)
            assigned = [
                (event_time(e), e["id"], e)
                for e in events_of
                if e["event"] == "conversation.assigned" and event_time(e) >= since
            ]
            if assigned:
                t, _, first = min(assigned, key=lambda a: (a[0], a[1]))
                for key in _group_keys(first, t):
                    rows[key].assignment_waits.append(t - since)
    for event in unique:
        name, t = event["event"], event_time(event)
        counter = COUNTED[name]
        for key in _group_keys(event, t):
            row = rows[key]
            setattr(row, counter, getattr(row, counter) + 1)
        if name == "conversation.closed":
            conversation = (int(event["account"]), int(event["data"]["id"]))
            before = [s for s in starts[conversation] if s <= t]
            unread = is_unread(event["data"])
            expires = event["data"].get("messageWindowExpiresAt")
            expired = expires is not None and expires < t
            for key in _group_keys(event, t):
                row = rows[key]
                row.closed_unread += unread
                row.closed_window_expired += expired
                if before:
                    row.durations.append(t - max(before))
    truth = Truth(rows)
    truth.backlog = compute_backlog(unique)
    truth.as_of = newest_event_time(unique)
    return truth


#: the gauges of `GET /v1/backlog`, in its order
GAUGES: tuple[str, ...] = ("open", "unassigned", "snoozed")
#: (by, key) of a backlog row
BacklogKey = tuple[str, str]


def compute_backlog(events: Iterable[dict[str, Any]]) -> dict[BacklogKey, tuple[int, int, int]]:
    """The live gauges over every conversation of ``events`` (none forgotten), by
    (grouping, key), those all 0 left out. Per conversation (account, ``data.id``), over
    its distinct events: the latest is the one with the greatest (time, envelope ``id``);
    open when it is created, opened or assigned, unassigned too when the conversation has
    no assigned event at all; snoozed when it is snoozed. Counted in the groups of that
    latest event (its channel type, account, inbox, app)."""
    by_conversation: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for event in dedupe(events):
        by_conversation[(int(event["account"]), int(event["data"]["id"]))].append(event)
    out: dict[BacklogKey, list[int]] = defaultdict(lambda: [0, 0, 0])
    for events_of in by_conversation.values():
        latest = max(events_of, key=lambda e: (event_time(e), e["id"]))
        name = latest["event"]
        if name in ("conversation.created", "conversation.opened", "conversation.assigned"):
            assigned = any(e["event"] == "conversation.assigned" for e in events_of)
            counted = (1, 0 if assigned else 1, 0)
        elif name == "conversation.snoozed":
            counted = (0, 0, 1)
        else:
            continue
        for by, key, window, _ in _group_keys(latest, 0):
            if window == "all":
                for i, n in enumerate(counted):
                    out[(by, key)][i] += n
    return {k: (v[0], v[1], v[2]) for k, v in out.items() if any(v)}


def newest_event_time(events: Iterable[dict[str, Any]]) -> int | None:
    """The newest event time of the conversation events (`/v1/backlog`'s ``as_of``)."""
    return max((event_time(e) for e in dedupe(events)), default=None)


class Truth(dict[GroupKey, GroupTruth]):
    """`compute_truth`'s rows, with the backlog (`compute_backlog`) and its ``as_of``."""

    backlog: dict[BacklogKey, tuple[int, int, int]]
    as_of: int | None


def late_corrections(events: Iterable[dict[str, Any]]) -> tuple[int, int]:
    """In delivery order: (closures that arrive after a later closure of their conversation,
    so retract its first close; assignments at or after their conversation's created time
    that arrive before that created event, so count only once it comes)."""
    closes: dict[tuple[int, int], int] = {}
    created: dict[tuple[int, int], int] = {}
    waiting: dict[tuple[int, int], list[int]] = defaultdict(list)
    late_close = late_created = 0
    for e in dedupe(events):
        conv, t = (int(e["account"]), int(e["data"]["id"])), event_time(e)
        if e["event"] == "conversation.closed":
            late_close += conv in closes and t < closes[conv]
            closes[conv] = min(t, closes.get(conv, t))
        elif e["event"] == "conversation.assigned" and conv not in created:
            waiting[conv].append(t)
        elif e["event"] == "conversation.created":
            late_created += any(a >= t for a in waiting.pop(conv, []))
            created[conv] = t
    return late_close, late_created


def select(
    truth: dict[GroupKey, GroupTruth], by: str, window: str
) -> dict[tuple[str, int | None], GroupTruth]:
    """The rows of one (by, window), keyed by (key, window_start)."""
    return {(k[1], k[3]): v for k, v in truth.items() if k[0] == by and k[2] == window}


#: time_to_close's SLA buckets (upper bounds inclusive, seconds): `--sla-buckets`' default
SLA_BUCKETS: tuple[tuple[str, int], ...] = (
    ("le_1h", 3_600),
    ("le_4h", 14_400),
    ("le_8h", 28_800),
    ("le_24h", 86_400),
)


def sla_buckets(durations: Iterable[int]) -> dict[str, int]:
    """Each duration in the first bucket whose bound it does not exceed, else `gt_24h`."""
    out = {name: 0 for name, _ in SLA_BUCKETS} | {"gt_24h": 0}
    for d in durations:
        out[next((name for name, bound in SLA_BUCKETS if d <= bound), "gt_24h")] += 1
    return out


def distribution(values: list[int]) -> dict[str, Any]:
    """A distribution as `/v1/metrics` shows it, quantiles exact (compare within 1%)."""
    return {
        "count": len(values),
        "sum": sum(values),
        "min": min(values) if values else None,
        "max": max(values) if values else None,
        "mean": sum(values) / len(values) if values else None,
        "p50": exact_quantile(values, 0.5),
        "p90": exact_quantile(values, 0.9),
        "p99": exact_quantile(values, 0.99),
    }


def api_row(key: GroupKey, row: GroupTruth) -> dict[str, Any]:
    """The row as ``GET /v1/closures`` returns it, quantiles exact (compare within 1%)."""
    _, group, window, start = key
    size = WINDOWS[window]
    return {
        "key": group,
        "window_start": start,
        "window_end": None if start is None or size is None else start + size,
        "closures": row.closures,
        "reopens": row.reopens,
        "closed_unread": row.closed_unread,
        "time_to_close": {
            "count": row.ttc_count,
            "sum": row.ttc_sum,
            "min": row.ttc_min,
            "max": row.ttc_max,
            "mean": row.ttc_mean,
            "p50": row.quantile(0.5),
            "p90": row.quantile(0.9),
            "p99": row.quantile(0.99),
        },
    }


def load_ndjson(path: str | Path) -> list[dict[str, Any]]:
    """Read an NDJSON file of webhooks (as written by ``convmetrics generate``)."""
    with open(path, "rb") as handle:
        return [orjson.loads(line) for line in handle if line.strip()]


def closure_list_truth(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every closure as `/v1/closures/conversations` lists it, over ``events`` (any order,
    duplicates by ``id`` counted once), sorted by (closed_at, event id): time_to_close from
    the latest created/opened at or before it, first_close for the least (time, id) of its
    conversation."""
    unique = dedupe(events)
    starts: dict[tuple[int, int], list[int]] = defaultdict(list)
    closes: dict[tuple[int, int], list[tuple[int, str]]] = defaultdict(list)
    for event in unique:
        conversation = (int(event["account"]), int(event["data"]["id"]))
        if event["event"] in ("conversation.created", "conversation.opened"):
            starts[conversation].append(event_time(event))
        elif event["event"] == "conversation.closed":
            closes[conversation].append((event_time(event), event["id"]))
    out = []
    for event in unique:
        if event["event"] != "conversation.closed":
            continue
        conversation = (int(event["account"]), int(event["data"]["id"]))
        t = event_time(event)
        before = [s for s in starts[conversation] if s <= t]
        channel = event["data"].get("channel")
        out.append({
            "account": conversation[0], "conversation": conversation[1], "event_id": event["id"],
            "channel_type": str(event["data"]["channelType"]),
            "inbox": None if channel is None else int(channel["id"]), "closed_at": t,
            "time_to_close": t - max(before) if before else None,
            "first_close": (t, event["id"]) == min(closes[conversation]),
        })  # fmt: skip
    return sorted(out, key=lambda c: (c["closed_at"], c["event_id"]))
