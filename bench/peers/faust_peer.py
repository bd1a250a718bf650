"""The subset in Faust (faust-streaming), written as its docs show; run by run.py.

    source topic --(Avro via schemas.Codec, a faust.Codec)--> agent `split`: closures only
        |-- send to <app>-by_channel, keyed by channel type -> agent: windowed Table
        |       .tumbling(60 s).relative_to_field(Closure.t)  (event time)
        `-- send to <app>-by_account, keyed by account      -> agent: Table, all-time count

Forwarding to a topic keyed by the new key is what ``Stream.group_by`` does; done by hand
so that the source is decoded once for both aggregations (two ``group_by`` agents on one
topic would each decode it). Client: aiokafka (pure Python), the only one Faust ships.
Store: RocksDB via rocksdict (``--option store=memory`` for Faust's default in-memory
store); tables always write changelog topics. Timed from the first source record to the
moment every source record and every forwarded closure has been counted; Faust's offset
commits run on its timer (``broker_commit_interval``) and are not waited for.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import faust
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from faust.serializers import codecs
from peerlib import (
    WINDOW_SECONDS,
    Tally,
    child_args,
    closure_of,
    emit,
    minute_of,
    new_codec,
    now,
    parse_ends,
    start_clock,
)

#: Faust expires windows against the wall clock (tables/base.py `_del_old_keys`), not event
#: time: the generated events start in 2023, so any expiry shorter than that would delete
#: windows mid-run. Quix gets a 40-day event-time grace instead; neither drops a closure.
NEVER = timedelta(days=100 * 365)


class AvroEventCodec(codecs.Codec):
    """Our codec, our reader projection: the same decoding work as our consumer."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.avro = new_codec()

    def _loads(self, s: bytes) -> Any:
        return self.avro.decode(s)

    def _dumps(self, s: Any) -> bytes:
        raise NotImplementedError("the benchmark only reads conversation events")


class Closure(faust.Record, serializer="json"):
    ct: str
    acct: int
    t: float  # event time, unix seconds


def exit_on_crash(agent: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    """A crashed Faust agent leaves the worker running; the benchmark must fail instead."""

    @functools.wraps(agent)
    async def wrapper(stream: Any) -> None:
        try:
            await agent(stream)
        except Exception:
            traceback.print_exc()
            os._exit(1)

    return wrapper


def main() -> None:
    args = child_args(__doc__ or "")
    ends = parse_ends(args.ends)
    total = sum(ends.values())
    opts = dict(o.split("=", 1) for o in args.option)
    store = opts.get("store", "rocksdb")
    partitions = len(ends)
    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        store="memory://" if store == "memory" else "rocksdb://",
        datadir=str(Path(args.workdir) / "faust"),
        topic_partitions=partitions,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
    )
    source = app.topic(args.topic, key_serializer="raw", value_serializer=AvroEventCodec())
    by_channel = app.topic(  # internal: Faust creates it with `partitions` (not the broker default)
        f"{args.group}-by_channel", key_type=str, value_type=Closure, partitions=partitions, internal=True
    )
    by_account = app.topic(  # internal: Faust creates it with `partitions` (not the broker default)
        f"{args.group}-by_account", key_type=str, value_type=Closure, partitions=partitions, internal=True
    )
    per_minute = (
        app.Table("per_minute", default=int, key_type=str, partitions=partitions)
        .tumbling(WINDOW_SECONDS, expires=NEVER)
        .relative_to_field(Closure.t)
    )
    per_account = app.Table("per_account", default=int, key_type=str, partitions=partitions)
    tally = Tally()
    counts = {"source": 0, "closures": 0, "by_channel": 0, "by_account": 0}
    stamps: dict[str, float] = {}

    def check_done() -> None:
        if counts["source"] == total and counts["by_channel"] == counts["by_account"] == counts["closures"]:
            stamps["done"] = now()
            emit(
                args.workdir,
                "faust",
                records=total,
                first=stamps["first"],
                done=stamps["done"],
                extra={"store": store, "forwarded": counts["closures"], **tally.summary()},
            )
            os._exit(0)  # measured; Faust's own shutdown (minutes with open windows) is not of interest

    @app.agent(source)
    @exit_on_crash
    async def split(stream: faust.StreamT[Any]) -> None:
        async for record in stream:
            if "first" not in stamps:
                stamps["first"] = start_clock()
            counts["source"] += 1
            c = closure_of(record)
            if c is not None:
                counts["closures"] += 1
                value = Closure(ct=c.channel_type, acct=c.account, t=float(c.closed_at))
                await by_channel.send(key=c.channel_type, value=value)
                await by_account.send(key=str(c.account), value=value)
            elif counts["source"] == total:
                check_done()

    @app.agent(by_channel)
    @exit_on_crash
    async def count_by_channel(stream: faust.StreamT[Closure]) -> None:
        async for c in stream:
            per_minute[c.ct] += 1
            tally.per_minute[(c.ct, minute_of(int(c.t)))] = per_minute[c.ct].value()
            counts["by_channel"] += 1
            check_done()

    @app.agent(by_account)
    @exit_on_crash
    async def count_by_account(stream: faust.StreamT[Closure]) -> None:
        async for c in stream:
            per_account[str(c.acct)] += 1
            tally.per_account[c.acct] = per_account[str(c.acct)]
            counts["by_account"] += 1
            check_done()

    # Created up front: declared by the worker, they can miss the first subscription, and the
    # consumer then only notices them at the next metadata refresh (5 minutes later).
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    names = [by_channel.get_topic_name(), by_account.get_topic_name()]
    for future in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
        future.result(30)
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
