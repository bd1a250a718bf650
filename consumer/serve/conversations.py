"""Parsing and shaping of `/v1/closures/conversations` (pure: parameters in, JSON-ready
dicts out): the closures behind a number of `/v1/metrics`, one account's at a time."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import orjson

from consumer.exceptions import QueryError
from consumer.fold.registry import REGISTRY, Registry
from consumer.fold.state import I64_MAX, I64_MIN
from consumer.serve.query import MAX_NAME, int_param
from consumer.store.closure_list import After, ClosureListing, ListedClosure

DEFAULT_LIMIT = 1_000
MAX_LIMIT = 10_000
KNOWN = ("account", "channel_type", "inbox", "from", "to", "limit", "cursor")


def parse_conversations_query(params: Mapping[str, str], registry: Registry = REGISTRY) -> ClosureListing:
    """Validate `/v1/closures/conversations` parameters; QueryError names the bad one and why.
    `inbox` needs a store whose metric set keeps closures' inboxes (`--metric-set full`)."""
    if unknown := sorted(set(params) - set(KNOWN)):
        raise QueryError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(KNOWN)}")
    account = int_param(params, "account", "an account id", required=True)
    start = int_param(params, "from", "unix seconds: closures closed at or after it", required=True)
    end = int_param(params, "to", "unix seconds: closures closed before it", required=True)
    assert account is not None and start is not None and end is not None
    if end < start:
        raise QueryError(f"to ({end}) is before from ({start})")
    channel_type = params.get("channel_type") or None
    if channel_type is not None and len(channel_type) > MAX_NAME:
        raise QueryError(
            f"channel_type must be a name of at most {MAX_NAME} characters, got {channel_type!r}"
        )
    inbox = int_param(params, "inbox", "an inbox id: data.channel.id")
    if inbox is not None and not registry.groups_by_inbox_or_app:
        raise QueryError("inbox: this store keeps no closure's inbox (--metric-set full does)")
    limit = int_param(params, "limit", f"1 to {MAX_LIMIT}")
    if limit is None:
        limit = DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    cursor = params.get("cursor")
    after = decode_cursor(cursor) if cursor else None
    return ClosureListing(account, start, end, channel_type, inbox, after, limit)


def encode_cursor(after: After) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(after))).decode().rstrip("=")


def decode_cursor(cursor: str) -> After:
    try:
        closed, event_id, event_hash = orjson.loads(
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        )
        if not all(isinstance(v, int) and I64_MIN <= v <= I64_MAX for v in (closed, event_hash)):
            raise ValueError("out of range")
        if not isinstance(event_id, str):
            raise ValueError("not an event id")
        return closed, event_id, event_hash
    except (ValueError, TypeError) as exc:
        raise QueryError(f"cursor {cursor!r} is not one this API handed out") from exc


def conversations_json(q: ClosureListing, rows: list[ListedClosure]) -> dict[str, Any]:
    """The response body; `rows` holds up to limit+1 closures (the extra one means: more)."""
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    return {
        "account": q.account,
        "from": q.start,
        "to": q.end,
        "next": encode_cursor(rows[-1].position) if more and rows else None,
        "rows": [
            {
                "account": r.account,
                "conversation": r.conversation,
                "event_id": r.event_id,
                "channel_type": r.channel_type,
                "inbox": r.inbox,
                "closed_at": r.closed_at,
                "time_to_close": r.time_to_close,
                "first_close": r.first_close,
            }
            for r in rows
        ],
    }
