"""The store side of the commit pipeline: a writer thread that lands commits in order.

The polling thread takes each partition's changes (`MetricsConsumer.commit`) and hands
them here; the writer thread runs the store transaction while the next batch is decoded
and folded (SQLite and PostgreSQL release the GIL while they work). At most
`MAX_IN_FLIGHT` commits are handed over at once. Its cadence: a commit is never landed
after one that failed (it builds on the failed one's deltas and offsets); while the
store is unreachable the same commit is retried with backoff; partitions fenced off by a
newer owner are left out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from confluent_kafka import TopicPartition

from consumer.exceptions import FencedError, RefusedCommitError, StoreUnavailableError
from consumer.store import PartitionCommit, Store

log = logging.getLogger(__name__)

#: commits handed to the writer thread at once. One: the polling thread folds the next
#: commit's events while the writer lands the last. A second one queued behind it let the
#: writer go on without waiting for the polling thread, but where the writer is the limit
#: (the full metric set) it kept one more commit's changes in memory (bench/results/consumer.md)
#: for no measured throughput (either set)
MAX_IN_FLIGHT = 1
#: what a commit on the writer thread hands back: offsets for Kafka, partitions fenced off
WriteResult = tuple[list[TopicPartition], list[int]]


def _libc_trim() -> Callable[[], None]:
    try:
        import ctypes

        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return lambda: None
    return lambda: trim(0)


_trim = _libc_trim()


@dataclass(frozen=True)
class CommitReport:
    """What one durable commit wrote, for metrics exporters and the metrics topic."""

    partitions: list[PartitionCommit]  # what was committed (fenced partitions left out)
    flush_seconds: float  # from the snapshot to durable
    store_seconds: float  # the store transaction alone
    fenced: list[int]


CommitHook = Callable[[CommitReport], None]


class StoreWriter:
    """Lands commits on one writer thread, in order.

    Args:
        store: the store (used on the writer thread only, once running).
        topic: the events topic the offsets belong to.
        stopping: set when the consumer stops (a commit retried against an unreachable
            store then gives up after a few attempts).
        on_commit: called on the writer thread after each durable commit; exceptions are
            logged, never propagated.
        beat: called with what the writer starts next (`Watchdog.beat`): a commit attempt,
            a purge, the commit hook.
    """

    def __init__(
        self,
        store: Store,
        topic: str,
        stopping: threading.Event,
        on_commit: CommitHook | None = None,
        *,
        beat: Callable[[str], None] = lambda doing: None,
    ) -> None:
        self.store = store
        self.topic = topic
        self.stopping = stopping
        self.on_commit = on_commit
        self.beat = beat
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
        #: commits handed to the writer thread, oldest first (at most MAX_IN_FLIGHT)
        self.in_flight: deque[Future[WriteResult]] = deque()
        self._failed = False  # a commit failed: the ones queued after it must not land

    def submit(self, commits: list[PartitionCommit], purge: bool, started: float) -> None:
        self.in_flight.append(self.pool.submit(self.write, commits, purge, started))

    def oldest_done(self) -> bool:
        return bool(self.in_flight) and self.in_flight[0].done()

    def results(self, keep: int = 0) -> list[WriteResult]:
        """Block until all but the newest `keep` commits in flight are durable, oldest
        first, and return what they wrote; re-raise a failure (a commit refused because an
        earlier one failed is dropped quietly: that failure was raised from its own)."""
        out = []
        while len(self.in_flight) > keep:
            future = self.in_flight.popleft()
            try:
                out.append(future.result())
            except RefusedCommitError:
                continue
        return out

    def shutdown(self) -> None:
        self.pool.shutdown()

    def write(self, commits: list[PartitionCommit], purge: bool, started: float) -> WriteResult:
        """Writer thread: one commit, unless an earlier one failed (this one builds on it)."""
        if self._failed:
            raise RefusedCommitError(
                "an earlier store commit failed: the commits queued after it are dropped"
            )
        try:
            return self._write_one(commits, purge, started)
        except BaseException:
            self._failed = True
            raise
        finally:
            self.beat("idle")

    def _write_one(self, commits: list[PartitionCommit], purge: bool, flush_started: float) -> WriteResult:
        """Writer thread: the store transaction. Partitions fenced off by a newer owner are
        left out and the rest is committed; the polling thread then drops their state
        (they come back with the offsets to hand to Kafka).

        While the store is unreachable the same commit is retried with backoff (capped at
        5 s); the polling thread waits at its next commit, so consumption pauses. A retried
        commit that had in fact landed is recognised by its stored offsets and skipped by
        the store. Past max.poll.interval.ms the group moves the partitions on; the
        retried commit is then refused by the new owner's epoch (FencedError). Any other
        error is a bug or a misconfiguration and is raised.
        """

        started = time.perf_counter()
        fenced: list[int] = []
        attempt, delay, said = 0, 0.2, ""
        while commits:
            self.beat(f"writing a commit to the store (attempt {attempt + 1})")
            try:
                self.store.commit(self.topic, commits)
                break
            except FencedError as exc:
                log.warning("%s", exc)
                fenced.extend(exc.partitions)
                commits = [c for c in commits if c.partition not in exc.partitions]
            except StoreUnavailableError as exc:
                attempt += 1
                if self.stopping.is_set() and attempt > 10:
                    log.error(
                        "stopping with the store still unavailable: the last commit is dropped "
                        "(its records are replayed from the store's offsets on restart)"
                    )
                    raise
                cause = " ".join(str(exc).split())  # libpq's messages hold newlines
                # each cause once (an outage retries every 5 s), the retries at DEBUG
                log.log(
                    logging.WARNING if cause != said else logging.DEBUG,
                    "store unavailable, commit attempt %d failed (%s): retrying the same commit "
                    "until it lands (every %.1fs at most)",
                    attempt,
                    cause,
                    5.0,
                )
                said = cause
                self.beat(f"waiting {delay:.1f} s to retry a commit (the store unavailable)")
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        if attempt:
            log.info("store available again: commit landed after %d retries", attempt)
        store_seconds = time.perf_counter() - started
        if purge:
            self.beat("purging the rows past their retention")
            try:
                self.store.purge()
            except StoreUnavailableError as exc:  # retention catches up at the next purge
                log.warning("purge skipped, store unavailable: %s", exc)
        _trim()
        if self.on_commit is not None:
            self.beat("running the commit hook (the exporter, the metrics topics)")
            report = CommitReport(commits, time.perf_counter() - flush_started, store_seconds, fenced)
            try:
                self.on_commit(report)
            except Exception:  # an exporter must never break the commit path
                log.exception("commit hook failed")
        return [TopicPartition(self.topic, c.partition, c.next_offset) for c in commits], fenced
