"""Our consumer (exactly-once store commits; the default metric set, closures, or ``--option
metric_set=full``) on the bench topic (run.py).

Timed from the first batch received to the durable store commit that holds every
partition's end offset (the store's ``offsets`` table is read back to confirm).
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from confluent_kafka import Message
from peerlib import child_args, emit, now, parse_ends, start_clock

from consumer.fold.registry import DEFAULT_METRIC_SET
from consumer.stream.checkpoint import CommitReport
from consumer.stream.runner import MetricsConsumer
from consumer.stream.settings import ConsumerSettings


class TimedConsumer(MetricsConsumer):
    """MetricsConsumer that stamps its first received batch and the commit reaching the ends."""

    def __init__(self, settings: ConsumerSettings, ends: dict[int, int]) -> None:
        super().__init__(settings, on_commit=self._on_commit)
        self.ends = ends
        self.committed: dict[int, int] = {}
        self.first: float | None = None
        self.done: float | None = None

    def process(self, msgs: list[Message]) -> None:
        if self.first is None:
            self.first = start_clock()
        super().process(msgs)

    def _on_commit(self, report: CommitReport) -> None:  # on the store-writer thread
        for p in report.partitions:
            self.committed[p.partition] = p.next_offset
        if self.done is None and all(self.committed.get(p, 0) >= end for p, end in self.ends.items()):
            self.done = now()


def main() -> None:
    args = child_args(__doc__ or "")
    ends = parse_ends(args.ends)
    db = Path(args.workdir) / "ours.db"
    options = dict(o.split("=", 1) for o in args.option)
    settings = ConsumerSettings(
        bootstrap_servers=args.bootstrap,
        topic=args.topic,
        group=args.group,
        store_url=f"sqlite:///{db}",
        metric_set=options.get("metric_set", DEFAULT_METRIC_SET),
    )
    c = TimedConsumer(settings, ends)
    c.run(until=lambda c: c.done is not None)  # type: ignore[attr-defined]
    assert c.first is not None and c.done is not None
    with sqlite3.connect(db) as conn:
        stored = dict(conn.execute("SELECT partition, next_offset FROM offsets").fetchall())
        closures = conn.execute("SELECT count(*) FROM closures").fetchone()[0]
        ttc_n, ttc_s = conn.execute("SELECT count(ttc), coalesce(sum(ttc), 0) FROM closures").fetchone()
    if stored != ends:
        raise SystemExit(f"store offsets {stored} != topic ends {ends}")
    emit(
        args.workdir,
        "ours",
        records=sum(ends.values()),
        first=c.first,
        done=c.done,
        extra={
            "consumed": c.stats.consumed,
            "duplicates": c.stats.duplicates,
            "closures_folded": c.stats.by_type.get("conversation.closed", 0),
            "closure_rows": closures,
            # the closures' times to close as stored, checked against the scan by run.py
            "ttc": {"closures": ttc_n, "seconds": ttc_s},
            "commits": c.stats.commits,
        },
    )


if __name__ == "__main__":
    main()
