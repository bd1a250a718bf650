"""A partition's remembered conversations as both stores keep them: a snapshot (chunks of
`PartitionFold.snapshot`) plus a log of each commit's changes after it, rather than a row
per conversation upserted at every commit (a random B-tree write per changed conversation,
and on PostgreSQL a dead row version each).

A commit appends a log row per chunk of its `Changes`, its expired conversations on the
last one (a conversation changed and then forgotten in one commit is forgotten on load). A
commit carrying a snapshot replaces the partition's snapshot and empties its log. Loading
reads the snapshot, else the `conversations` table that stores written before the log
still have, then replays the log in order. Each store writes these rows in its own
driver's way; the reading is here, once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from consumer.fold import ConvKey, decode_snapshot

Fetch = Callable[[str, Sequence[Any]], Iterable[Sequence[Any]]]


def load_conversations(fetch: Fetch, partition: int, mark: str) -> dict[ConvKey, str]:
    """The partition's conversations (their stored states), `fetch(sql, args)` running a
    query with `mark` as its parameter placeholder."""
    convs: dict[ConvKey, str] = {}
    sql = f"SELECT state FROM conversation_snapshot_chunks WHERE partition={mark} ORDER BY chunk"
    chunks = list(fetch(sql, (partition,)))
    if chunks:
        for (chunk,) in chunks:
            convs.update(decode_snapshot(chunk))
    else:
        sql = f"SELECT account, conversation, state FROM conversations WHERE partition={mark}"
        convs.update(((a, c), state) for a, c, state in fetch(sql, (partition,)))
    sql = f"SELECT changed, expired FROM conversation_log WHERE partition={mark} ORDER BY id"
    for changed, expired in fetch(sql, (partition,)):
        convs.update(((a, c), state) for a, c, state in orjson.loads(changed))
        for a, c in orjson.loads(expired):
            convs.pop((a, c), None)
    return convs


def log_rows(changes: Sequence[bytes], expired: Sequence[ConvKey]) -> list[tuple[bytes, bytes]]:
    """A commit's (changed, expired) log rows, in order: a row per chunk of its changes (one
    empty chunk where it has none), the expired with the last."""
    chunks = changes or (b"[]",)
    last = len(chunks) - 1
    return [(chunk, orjson.dumps(expired) if i == last else b"[]") for i, chunk in enumerate(chunks)]
