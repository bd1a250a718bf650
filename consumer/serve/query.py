"""Parsing and shaping of `/v1/closures` (pure: parameters in, JSON-ready dicts out)."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from consumer.exceptions import QueryError
from consumer.fold.registry import REGISTRY, Registry
from consumer.fold.state import I64_MAX, I64_MIN
from consumer.fold.windows import ALL, WINDOWS
from consumer.store import MetricRow
from consumer.store.base import Ranking
from consumer.store.render import row_json

DEFAULT_LIMIT = 10_000
MAX_LIMIT = 100_000
#: how every integer parameter is written: ASCII digits, an optional minus (no spaces, '+',
#: '_' or other scripts' digits, which Python's int() would take)
_DECIMAL = re.compile(r"-?[0-9]+")
_KNOWN = {"by", "window", "key", "keys", "from", "to", "limit", "cursor", "sort", "contains", "fields"}
#: at most this many keys in `keys=` (the dashboard asks for the channel types it draws)
MAX_KEYS = 1_000
#: the longest name a filter takes (a channel type): the gateway bounds none, so generously
MAX_NAME = 1_000


@dataclass(frozen=True)
class ClosureQuery:
    by: str
    window: str
    key: str | None = None
    start_from: int | None = None
    start_to: int | None = None
    limit: int = DEFAULT_LIMIT
    after: tuple[int, str] | None = None
    #: a ranked listing (`sort=-closures`): the value (`Registry.rankable`), its direction,
    #: and the position of the page (ranked pages are handed out by position)
    sort: str | None = None
    descending: bool = False
    offset: int = 0
    contains: str | None = None  # only keys that contain this text
    keys: tuple[str, ...] | None = None  # only these keys (`keys=A,B,C`)
    #: only these metrics of each row (`fields=closures,closed_unread`), in registry order;
    #: None: every metric `/v1/closures` shows
    fields: tuple[str, ...] | None = None

    def shown(self, registry: Registry) -> tuple[str, ...]:
        """The names of the metrics each row shows."""
        return self.fields or tuple(m.name for m in registry.closures_shown)

    def ranking(self) -> Ranking:
        assert self.sort is not None
        return Ranking(
            self.by,
            self.window,
            self.sort,
            self.descending,
            self.contains,
            self.start_from,
            self.start_to,
            self.offset,
            self.limit + 1,
            self.keys,
        )


def parse_int(raw: str, name: str, what: str) -> int:
    """An integer parameter's value; QueryError naming it unless it is a decimal integer
    (`what` says of what) within 64 bits."""
    if not _DECIMAL.fullmatch(raw):
        raise QueryError(f"{name} must be an integer ({what}), got {raw!r}")
    if len(raw) > 20 or not I64_MIN <= int(raw) <= I64_MAX:  # 20: a minus and 19 digits
        raise QueryError(f"{name} must fit in 64 bits, got {raw!r}")
    return int(raw)


def as_id(raw: str) -> str | None:
    """An integer id as its key is stored (`007` is `7`), None unless `parse_int` takes it."""
    try:
        return str(parse_int(raw, "", ""))
    except QueryError:
        return None


def int_param(params: Mapping[str, str], name: str, what: str, *, required: bool = False) -> int | None:
    """An optional (or `required`) integer parameter, checked by `parse_int`."""
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise QueryError(f"{name} is required ({what})")
        return None
    return parse_int(raw, name, what)


def _int(params: Mapping[str, str], name: str) -> int | None:
    return int_param(params, name, "unix seconds" if name in ("from", "to") else "a count")


def given(params: Mapping[str, str], name: str) -> str:
    """How a refused parameter was given, for its error: its value, or that it is missing."""
    return f"got {params[name]!r}" if name in params else "it is missing"


def parse_span(params: Mapping[str, str], window: str) -> tuple[int | None, int | None, int]:
    """`from`, `to` (window starts, none for all time) and `limit` of a rows query, checked."""
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
    return start_from, start_to, limit


def _by(registry: Registry) -> dict[str, str]:
    """The groupings a query may name (`channel-type` spelled either way)."""
    return {spelling: g.name for g in registry.groupings for spelling in (g.name, g.name.replace("_", "-"))}


def _int_keyed(registry: Registry, by: str) -> bool:
    """Whether a grouping's keys are integers (its one dimension is)."""
    dims = registry.grouping(by).dimensions
    return len(dims) == 1 and registry.dimension(dims[0]).type is int


def parse_query(params: Mapping[str, str], registry: Registry = REGISTRY) -> ClosureQuery:
    """Validate query parameters against the store's metric set (`registry`: what `by` and
    `sort` may name); QueryError names the bad one and why. A grouping or value that another
    metric set has is refused naming `--metric-set`."""
    unknown = sorted(set(params) - _KNOWN)
    if unknown:
        raise QueryError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(_KNOWN))}")
    asked = params.get("by", "")
    by = _by(registry).get(asked)
    if by is None:
        if (other := _by(REGISTRY).get(asked)) is not None:
            held = ", ".join(g.name for g in registry.groupings)
            raise QueryError(f"by={other}: this store counts by {held} (--metric-set)")
        names = " or ".join(g.name for g in registry.groupings)
        raise QueryError(f"by must be {names}: {given(params, 'by')}")
    window = params.get("window", "")
    kept = [w for w in WINDOWS if registry.grouping(by).keeps(w)]  # as /v1/metrics checks it
    if window not in kept:
        raise QueryError(f"window must be one of {', '.join(kept)} for by={by}: {given(params, 'window')}")
    start_from, start_to, limit = parse_span(params, window)
    int_keyed = _int_keyed(registry, by)
    key = params.get("key") or None
    if key is not None and int_keyed:
        stored = as_id(key)  # 007 and 7 name one account
        if stored is None:
            raise QueryError(f"key must be an {by} id (an integer) when by={by}, got {key!r}")
        key = stored
    keys = _keys(params.get("keys"), by, int_keyed)
    if keys is not None and key is not None:
        raise QueryError("key and keys select the same thing: leave one out")
    cursor = params.get("cursor")
    contains = params.get("contains") or None
    fields = _fields(params.get("fields"), registry)
    sort = params.get("sort") or None
    if sort is None:
        after = decode_cursor(cursor) if cursor else None
        return ClosureQuery(
            by, window, key, start_from, start_to, limit, after, contains=contains, keys=keys, fields=fields
        )
    descending = sort.startswith("-")
    value = sort.removeprefix("-")
    if value not in registry.rankable:
        if value in REGISTRY.rankable:
            raise QueryError(f"sort={sort}: not in this store's metric set (--metric-set)")
        counters = [m.name for m in registry.counters]
        stats = [r for r in registry.rankable if "." in r]
        raise QueryError(
            f"sort must be one of key, {', '.join(counters)}, a share of two of those "
            f"({counters[1]}/{counters[0]}), {', '.join(stats)} (- before it: descending), got {sort!r}"
        )
    if key is not None:
        raise QueryError("sort ranks many rows; with key there is one per window: leave one out")
    offset = decode_rank_cursor(cursor) if cursor else 0
    return ClosureQuery(
        by, window, None, start_from, start_to, limit, None, value, descending, offset, contains, keys, fields
    )


def _fields(raw: str | None, registry: Registry) -> tuple[str, ...] | None:
    """`fields=closures,time_to_close`: the metrics each row shows, in registry order; a
    name a row does not show is refused naming it. A row's counters alone are read without
    its sketch bins, the bulk of a row (the dashboard's charts ask for them apart)."""
    if not raw:  # absent, or empty as an empty keys= or sort=: not given
        return None
    shown = [m.name for m in registry.closures_shown]
    asked = {f.strip() for f in raw.split(",") if f.strip()}
    if not asked:
        raise QueryError(f"fields lists no metric, got {raw!r}; a row shows {', '.join(shown)}")
    if unknown := sorted(asked - set(shown)):
        named = ", ".join(map(repr, unknown))
        raise QueryError(f"fields: {named} not shown by /v1/closures; it shows {', '.join(shown)}")
    return tuple(name for name in shown if name in asked)


def _keys(raw: str | None, by: str, int_keyed: bool) -> tuple[str, ...] | None:
    """`keys=A,B,C`: the keys asked for (an integer grouping's as integers), deduplicated."""
    if raw is None or raw == "":
        return None
    keys = tuple(dict.fromkeys(k.strip() for k in raw.split(",") if k.strip()))
    if not keys:
        raise QueryError(f"keys lists no key, got {raw!r}")
    if len(keys) > MAX_KEYS:
        raise QueryError(f"keys takes at most {MAX_KEYS} keys, got {len(keys)}")
    if not int_keyed:
        return keys
    ids = [as_id(k) for k in keys]
    if None in ids:
        raise QueryError(f"keys must be {by} ids (integers) when by={by}, got {keys[ids.index(None)]!r}")
    return tuple(dict.fromkeys(k for k in ids if k is not None))


def encode_cursor(start: int, key: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([start, key])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        start, key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(start, int) or not I64_MIN <= start <= I64_MAX:
            raise ValueError("window start out of range")
        return start, str(key)
    except (ValueError, TypeError) as exc:
        raise QueryError(f"cursor {cursor!r} is not one this API handed out") from exc


def encode_rank_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"offset": offset})).decode().rstrip("=")


def decode_rank_cursor(cursor: str) -> int:
    try:
        offset = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["offset"]
        if not isinstance(offset, int) or not 0 <= offset <= I64_MAX:
            raise ValueError("offset out of range")
        return offset
    except (ValueError, TypeError, KeyError) as exc:
        raise QueryError(f"cursor {cursor!r} is not one this API handed out for a sorted listing") from exc


def response_json(
    q: ClosureQuery, rows: list[MetricRow], registry: Registry = REGISTRY, total: int | None = None
) -> dict[str, Any]:
    """The response body; `rows` holds up to limit+1 rows (the extra one means: more). A
    ranked listing also says how it is sorted and how many rows match in all (`total`)."""
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    body: dict[str, Any] = {"by": q.by, "window": q.window}
    if q.sort is not None:
        body |= {"sort": ("-" if q.descending else "") + q.sort, "total": total}
        nxt = encode_rank_cursor(q.offset + q.limit) if more else None
    else:
        nxt = encode_cursor(rows[-1].window_start, rows[-1].key) if more and rows else None
    names = q.shown(registry)
    shown = tuple(m for m in registry.closures_shown if m.name in names)
    body |= {"rows": [row_json(r, registry, shown) for r in rows], "next": nxt}
    return body
