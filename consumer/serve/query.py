"""Parsing and shaping of `/v1/closures` (pure: parameters in, JSON-ready dicts out)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from consumer.exceptions import QueryError
from consumer.fold import BY_ACCOUNT, BY_CHANNEL
from consumer.fold.registry import REGISTRY, Registry
from consumer.fold.windows import ALL, WINDOWS
from consumer.store import MetricRow
from consumer.store.render import row_json

DEFAULT_LIMIT = 10_000
MAX_LIMIT = 100_000
_BY = {"channel_type": BY_CHANNEL, "channel-type": BY_CHANNEL, "account": BY_ACCOUNT}
_KNOWN = {"by", "window", "key", "from", "to", "limit", "cursor"}


@dataclass(frozen=True)
class ClosureQuery:
    by: str
    window: str
    key: str | None = None
    start_from: int | None = None
    start_to: int | None = None
    limit: int = DEFAULT_LIMIT
    after: tuple[int, str] | None = None


def _int(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise QueryError(f"{name} must be an integer (unix seconds for from/to), got {raw!r}") from None


def parse_query(params: Mapping[str, str]) -> ClosureQuery:
    """Validate query parameters; QueryError names the bad one and why."""
    unknown = sorted(set(params) - _KNOWN)
    if unknown:
        raise QueryError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(_KNOWN))}")
    by = _BY.get(params.get("by", ""))
    if by is None:
        raise QueryError(f"by must be channel_type or account, got {params.get('by')!r}")
    window = params.get("window", "")
    if window not in WINDOWS:
        raise QueryError(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")
    start_from, start_to = _int(params, "from"), _int(params, "to")
    if window == ALL and (start_from is not None or start_to is not None):
        raise QueryError("from/to select window starts; the all-time window has none")
    if start_from is not None and start_to is not None and start_to < start_from:
        raise QueryError(f"to ({start_to}) is before from ({start_from})")
    limit = _int(params, "limit")
    if limit is None:
        limit = DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    key = params.get("key") or None
    if key is not None and by == BY_ACCOUNT and not key.lstrip("-").isdigit():
        raise QueryError(f"key must be an account id (an integer) when by=account, got {key!r}")
    cursor = params.get("cursor")
    return ClosureQuery(
        by, window, key, start_from, start_to, limit, decode_cursor(cursor) if cursor else None
    )


def encode_cursor(start: int, key: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([start, key])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        start, key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return int(start), str(key)
    except (ValueError, TypeError) as exc:
        raise QueryError(f"cursor {cursor!r} is not one this API handed out") from exc


def response_json(q: ClosureQuery, rows: list[MetricRow], registry: Registry = REGISTRY) -> dict[str, Any]:
    """The response body; `rows` holds up to limit+1 rows (the extra one means: more)."""
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    body: dict[str, Any] = {
        "by": q.by,
        "window": q.window,
        "rows": [row_json(r, registry) for r in rows],
        "next": encode_cursor(rows[-1].window_start, rows[-1].key) if more and rows else None,
    }
    return body
