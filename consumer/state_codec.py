"""Compact bytes for per-conversation state and dedupe ids, shared by every store."""

from __future__ import annotations

from array import array

import orjson

from consumer.fold import Closure, Conversation


def encode_conversation(c: Conversation) -> bytes:
    return orjson.dumps(
        [c.last_time, c.starts, [[x.event_hash, x.closed_at, x.channel_type, x.start] for x in c.closures]]
    )


def decode_conversation(blob: bytes) -> Conversation:
    last_time, starts, closures = orjson.loads(blob)
    return Conversation(starts, [Closure(h, t, ch, s) for h, t, ch, s in closures], last_time)


def encode_ids(ids: list[int]) -> bytes:
    return array("q", ids).tobytes()


def decode_ids(blob: bytes) -> list[int]:
    a = array("q")
    a.frombytes(blob)
    return a.tolist()
