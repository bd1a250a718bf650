"""Parsing and shaping of `/v1/closures` (pure: parameters in, JSON-ready dicts out)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from consumer.exceptions import QueryError
from consumer.fold.registry import REGISTRY, Registry
from consumer.fold.windows import ALL, WINDOWS
from consumer.store import MetricRow
from consumer.store.render import row_json

DEFAULT_LIMIT = 10_000
MAX_LIMIT = 100_000
#: the groupings a query may name (`channel-type` spelled either way), from the registry
_BY = {
    **{g.name: g.name for g in REGISTRY.groupings},
    **{g.name.replace("_", "-"): g.name for g in REGISTRY.groupings},
}
#: groupings whose one dimension is an integer: their keys must be integers
_INT_KEYED = {
    g.name
    for g in REGISTRY.groupings
    if len(g.dimensions) == 1 and REGISTRY.dimension(g.dimensions[0]).type is int
}
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
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
        value = int(raw)
    except ValueError:
        raise QueryError(f"{name} must be an integer (unix seconds for from/to), got {raw!r}") from None
    if not _I64_MIN <= value <= _I64_MAX:
        raise QueryError(f"{name} must fit in 64 bits, got {raw!r}")
    return value


def parse_query(params: Mapping[str, str]) -> ClosureQuery:
    """Validate query parameters; QueryError names the bad one and why."""
    unknown = sorted(set(params) - _KNOWN)
    if unknown:
        raise QueryError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(_KNOWN))}")
    by = _BY.get(params.get("by", ""))
    if by is None:
        names = " or ".join(g.name for g in REGISTRY.groupings)
        raise QueryError(f"by must be {names}, got {params.get('by')!r}")
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
    if key is not None and by in _INT_KEYED and not _fits(key):
        raise QueryError(f"key must be an {by} id (an integer) when by={by}, got {key!r}")
    cursor = params.get("cursor")
    return ClosureQuery(
        by, window, key, start_from, start_to, limit, decode_cursor(cursor) if cursor else None
    )


def _fits(key: str) -> bool:
    """An integer key within 64 bits."""
    return key.lstrip("-").isdigit() and _I64_MIN <= int(key) <= _I64_MAX


def encode_cursor(start: int, key: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([start, key])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        start, key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(start, int) or not _I64_MIN <= start <= _I64_MAX:
            raise ValueError("window start out of range")
        return start, str(key)
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
