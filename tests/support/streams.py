"""A generated stream as the consumer sees it: webhooks through the gateway's intake, spread
over partitions by key, decoded by the consumer's codec, with poison values among them."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from consumer.fold.model import READER_SCHEMA
from consumer.fold.native import FoldKind
from consumer.store import PartitionCommit
from convmetrics.generate import GenerateConfig, generate_webhooks
from producer.intake import Prepared, prepare
from schemas import CONVERSATION_EVENT, Codec, subject

PARTITIONS = 3


@dataclass
class Msg:
    p: int
    off: int

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.off


def stream(events: int, seed: int) -> tuple[list[Msg], list[object]]:
    """Generated webhooks through the gateway's intake and the consumer's decoder, spread
    over partitions by key, with a few poison values among them."""
    cfg = GenerateConfig(
        seed=seed, events=events, accounts=40, conversations=events // 5, duplicate_rate=0.05,
        late_rate=0.1, unknown_channel_rate=0.05, noise_rate=0.03,
    )  # fmt: skip
    writer = Codec(subject(CONVERSATION_EVENT))
    values: list[bytes] = []
    parts: list[int] = []
    for i, webhook in enumerate(generate_webhooks(cfg)):
        p = prepare(webhook, writer, received_at_millis=1_700_000_000_000 + i)
        if isinstance(p, Prepared):
            values.append(p.value)
            parts.append(zlib.crc32(p.key) % PARTITIONS)
        if i % 97 == 0:
            values.append(b"\xc3\x01poison")
            parts.append(i % PARTITIONS)
    reader = Codec(subject(CONVERSATION_EVENT), reader_schema=READER_SCHEMA)
    offsets = [0] * PARTITIONS
    msgs = []
    for p in parts:
        msgs.append(Msg(p, offsets[p]))
        offsets[p] += 1
    return msgs, list(reader.decode_many(values))


def commit_stream(store: Any, kind: FoldKind, msgs: list[Msg], records: list[object], batch: int) -> None:
    """Fold the stream with `kind` in batches into `store`, one commit per batch."""
    folds = {p: kind.new(p) for p in range(PARTITIONS)}
    epochs = {p: store.claim("t", p, "test") for p in range(PARTITIONS)}
    for i in range(0, len(msgs), batch):
        offsets: dict[int, int] = {}
        kind.apply_batch(folds, msgs[i : i + batch], records[i : i + batch], offsets)
        commits = []
        for p, off in offsets.items():
            delta, changed = folds[p].take_changes()
            commits.append(PartitionCommit(p, delta, off, folds[p].watermark, changed, [], epochs[p]))
        store.commit("t", commits)
