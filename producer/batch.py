"""Many webhooks in one body: a JSON array, or NDJSON (one JSON object per line).

Pure parsing: each item comes back parsed, or as the `MalformedJSONError` of its line,
so that one bad line costs only that item.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from producer.exceptions import MalformedJSONError

_WHITESPACE = b" \t\r\n"


@dataclass(slots=True)  # not frozen: a batch makes one per webhook, and frozen ones cost 3x
class Item:
    """One webhook of a batch: its position (0-based; NDJSON: also its line) and body."""

    index: int
    line: int
    body: Any
    error: MalformedJSONError | None = None


def parse_json(raw: bytes | str) -> Any:
    """Parse one JSON document.

    Raises:
        MalformedJSONError: not JSON (or not UTF-8), with orjson's position and reason.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _malformed(exc) from None


def parse_batch(raw: bytes) -> list[Item]:
    """Items of a JSON array or NDJSON body.

    Raises:
        MalformedJSONError: a body starting with ``[`` that is not one JSON array.
    """
    stripped = raw.lstrip(_WHITESPACE)
    if stripped.startswith(b"["):
        doc = parse_json(raw)
        if not isinstance(doc, list):  # pragma: no cover - a "[" document is an array
            raise MalformedJSONError("expected a JSON array")
        return [Item(i, i + 1, body) for i, body in enumerate(doc)]
    return list(iter_ndjson(raw.splitlines()))


def iter_ndjson(lines: Iterable[bytes | str]) -> Iterator[Item]:
    """Items of NDJSON lines; blank lines are skipped but still counted as lines."""
    index = 0
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    for number, line in enumerate(lines, start=1):
        if not line or line.isspace():  # isspace: the same whitespace as strip(), without a copy
            continue
        try:
            yield Item(index, number, loads(line))
        except decode_error as exc:
            yield Item(index, number, None, _malformed(exc))
        index += 1


def _malformed(exc: orjson.JSONDecodeError) -> MalformedJSONError:
    return MalformedJSONError(f"malformed JSON: {exc}")
