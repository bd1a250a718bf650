"""The subset in Quix Streams, written as its docs show; run by run.py.

    source topic --(Avro via schemas.Codec)--> filter closures --> project
        |-- group_by(channel type) -> tumbling_window(60 s, event time).count().current()
        `-- group_by(account)      -> stateful apply: all-time count

Event time comes from a ``timestamp_extractor`` (data.closedAt, in ms); ``group_by``
re-produces each closure to a repartition topic with that timestamp, the windows read it
back. State: RocksDB (Quix's only store) under a fresh ``state_dir``, changelog topics on
(its default). Timed from the first source record processed to the moment every source
record and every repartitioned closure has been processed; the final checkpoint (state
flush, changelog and offset commit) is timed separately.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from peerlib import (
    GRACE_SECONDS,
    WINDOW_SECONDS,
    Tally,
    child_args,
    closure_of,
    emit,
    new_codec,
    now,
    parse_ends,
    start_clock,
)
from quixstreams import Application, State
from quixstreams.models import TimestampType
from quixstreams.models.serializers import Deserializer, SerializationContext

# librdkafka fetch settings our consumer uses (consumer/runner.py), for equal footing.
FETCH = {"fetch.max.bytes": 16 * 1024 * 1024, "queued.max.messages.kbytes": 32 * 1024}


class AvroEventDeserializer(Deserializer):
    """Our codec, our reader projection: the same decoding work as our consumer."""

    def __init__(self) -> None:
        super().__init__()
        self.codec = new_codec()

    def __call__(self, value: bytes, ctx: SerializationContext) -> dict[str, Any]:
        return self.codec.decode(value)


def event_time_ms(value: dict[str, Any], headers: Any, timestamp: int, ts_type: TimestampType) -> int:
    c = closure_of(value)
    return (value["createdAt"] if c is None else c.closed_at) * 1000


class Progress:
    def __init__(self, app: Application, source: str, total: int) -> None:
        self.app, self.source, self.total = app, source, total
        self.processed: dict[str, int] = {}
        self.closures = 0  # closures sent to each repartition topic
        self.first: float | None = None
        self.done: float | None = None

    def on_processed(self, topic: str, partition: int, offset: int) -> None:
        if self.first is None:
            self.first = start_clock()
        self.processed[topic] = self.processed.get(topic, 0) + 1
        if self.processed.get(self.source, 0) < self.total or self.done is not None:
            return
        repartitioned = [n for t, n in self.processed.items() if t != self.source]
        if len(repartitioned) == 2 and all(n == self.closures for n in repartitioned):
            self.done = now()
            self.app.stop()


def main() -> None:
    args = child_args(__doc__ or "")
    ends = parse_ends(args.ends)
    opts = dict(o.split("=", 1) for o in args.option)
    box: list[Progress] = []
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=Path(args.workdir) / "state",
        use_changelog_topics=opts.get("changelog", "on") == "on",
        consumer_extra_config=dict(FETCH),
        on_message_processed=lambda t, p, o: box[0].on_processed(t, p, o),
        loglevel="WARNING",
    )
    progress = Progress(app, args.topic, sum(ends.values()))
    box.append(progress)
    tally = Tally()
    topic = app.topic(
        args.topic,
        value_deserializer=AvroEventDeserializer(),
        key_deserializer="bytes",
        timestamp_extractor=event_time_ms,
    )
    sdf = app.dataframe(topic)

    def project(value: dict[str, Any]) -> dict[str, Any] | None:
        c = closure_of(value)
        if c is None:
            return None
        progress.closures += 1
        return {"ct": c.channel_type, "acct": c.account, "t": c.closed_at}

    closures = sdf.apply(project).filter(lambda v: v is not None)

    def mirror_minute(value: dict[str, Any], key: Any, timestamp: int, headers: Any) -> None:
        tally.per_minute[(key, value["start"] // 1000)] = value["value"]

    by_channel = closures.group_by(lambda v: v["ct"], name="by_channel")
    (
        by_channel.tumbling_window(WINDOW_SECONDS * 1000, grace_ms=GRACE_SECONDS * 1000)
        .count()
        .current()
        .update(mirror_minute, metadata=True)
    )

    def count_account(value: dict[str, Any], state: State) -> int:
        n: int = state.get("n", 0) + 1
        state.set("n", n)
        tally.per_account[value["acct"]] = n
        return n

    by_account = closures.group_by(lambda v: v["acct"], name="by_account")
    by_account.apply(count_account, stateful=True)

    # Time the final checkpoint (state flush, changelog and offset commit) that run() does on stop.
    ctx = app._processing_context
    original = ctx.commit_checkpoint
    final: dict[str, float] = {}

    def commit_checkpoint(force: bool = False, **kwargs: Any) -> None:
        started = now()
        original(force=force, **kwargs)
        if force and progress.done is not None and "seconds" not in final:
            final["seconds"] = now() - started

    ctx.commit_checkpoint = commit_checkpoint  # type: ignore[method-assign]
    app.run()
    assert progress.first is not None and progress.done is not None
    emit(
        args.workdir,
        "quix",
        records=progress.processed[args.topic],
        first=progress.first,
        done=progress.done,
        extra={
            "final_checkpoint_s": final.get("seconds"),
            "changelog": opts.get("changelog", "on"),
            "repartitioned": {t: n for t, n in progress.processed.items() if t != args.topic},
            **tally.summary(),
        },
    )


if __name__ == "__main__":
    main()
