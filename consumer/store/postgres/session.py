"""The PostgreSQL store's connection: one psycopg connection, opened again after it broke,
transactions retried on lock races, and lost connections reported as transient
(`StoreUnavailableError`: the caller retries the same call)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors

from consumer.exceptions import ConfigError, StoreError, StoreUnavailableError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: retried inside the store: another transaction won a lock race
_RACES = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
#: a server that answered but is going down, starting up or full: try again later
_TRANSIENT_FATAL = ("starting up", "shutting down", "recovery mode", "too many clients", "not yet accepting")
#: PostgreSQL ends a session whose transaction waits this long for its client's next
#: statement, and so releases its locks. A commit locks its partitions' `owners` rows
#: first; a consumer frozen mid-commit (a VM paused, a network that hangs without closing)
#: would otherwise hold them until its TCP connection dies, maybe hours, and the members
#: that take its partitions over would wait in `claim` all that time, the whole group's
#: rebalance with them. The frozen one's commit rolls back; on waking it finds its
#: connection gone, retries, and is fenced. Our transactions send their statements back
#: to back: no healthy one waits seconds between two. It is set where it is 0 (off): a
#: non-zero value set for the server, the database, the role or in the URL's options is kept.
IDLE_IN_TRANSACTION_TIMEOUT_S = 30
#: ... and JIT compilation is turned off: PostgreSQL compiles a query whose plan costs more
#: than `jit_above_cost`, and the store's queries (short aggregations over indexed rows)
#: spend more in compiling than they gain; the ranking of 10,000 accounts' rows sits just
#: under the threshold, so a larger store would cross it (docs/operations.md). JIT is turned
#: off only where the server, the database, the role and the URL's options left it at its default.
_SESSION_DEFAULTS = (
    "SELECT set_config(name, CASE name WHEN 'jit' THEN 'off' ELSE %s END, false) FROM pg_settings "
    "WHERE (name = 'idle_in_transaction_session_timeout' AND setting = '0') "
    "OR (name = 'jit' AND source = 'default')"
)


#: libpq's refusals of a URL's setting, before any connection (`port=554x2`,
#: `sslmode=requir`): the store will never answer, so it is the settings' fault (exit 2)
_BAD_SETTING = re.compile(r"invalid (?:integer |sslmode |\w+ )?value|invalid connection option|invalid URI")


class Session:
    """One connection to the store's database (one per thread, as the store)."""

    def __init__(
        self,
        url: str,
        connect_timeout: float = 5,
        race_retries: int = 5,
        idle_in_transaction_timeout: float = IDLE_IN_TRANSACTION_TIMEOUT_S,
    ) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self.race_retries = race_retries
        self.idle_in_transaction_timeout = idle_in_transaction_timeout
        self._conn: psycopg.Connection[Any] | None = None

    def connection(self) -> psycopg.Connection[Any]:
        """The live connection, reconnecting first when the last one broke."""
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(
                    self.url,
                    autocommit=True,
                    connect_timeout=max(1, int(self.connect_timeout)),
                    application_name="convmetrics",
                    # no server-side prepared statements (psycopg prepares a query run 5
                    # times): after 5 runs of a prepared statement PostgreSQL may plan it
                    # once for any parameters, and that generic plan of a read whose keys
                    # and span come as parameters took 215 s instead of 2.2 s (a page of
                    # 10,000 accounts' bins, 30,000 accounts: docs/operations.md). Each run
                    # is planned for its own parameters.
                    prepare_threshold=None,
                )
            except psycopg.OperationalError as exc:
                msg = " ".join(str(exc).split())
                if _BAD_SETTING.search(msg):  # libpq refuses a value before it connects: never answers
                    raise ConfigError(
                        f"the PostgreSQL store URL has a setting libpq refuses: {msg}"
                    ) from None
                refused = "FATAL:" in msg or "no password supplied" in msg  # the server asked for one
                if refused and not any(t in msg for t in _TRANSIENT_FATAL):
                    raise StoreError(f"PostgreSQL store refused the connection: {msg}") from exc
                raise StoreUnavailableError(f"PostgreSQL store unreachable: {msg}") from exc
            except psycopg.Error:  # a URL libpq cannot parse: its text may hold the password
                raise ConfigError(
                    "the PostgreSQL store URL is not one libpq can parse (a password with '%' or "
                    "spaces must be percent-encoded); the URL is not shown, it may hold a password"
                ) from None
            try:
                ms = max(1, round(self.idle_in_transaction_timeout * 1000))
                self._conn.execute(_SESSION_DEFAULTS, (f"{ms}ms",))
            except psycopg.Error as exc:
                self.reconnect()
                raise StoreUnavailableError(f"PostgreSQL store connection lost: {exc}") from exc
        return self._conn

    def reconnect(self) -> None:
        """Drop the connection; the next call opens a new one."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`work` in one transaction; lock races retried, lost connections made transient.

        A connection kept from an earlier call that turns out lost (the server restarted
        meanwhile: every kept connection is) is opened again and `work` tried once more at
        once, so the first call after a restart answers instead of reporting the store down
        (a transaction on a lost connection did not happen; one whose commit may have
        landed is retried by its caller in any case, as every commit can be)."""
        reused = self._conn is not None and not self._conn.closed
        attempt = 0
        while True:
            conn = self.connection()
            try:
                with conn.transaction():
                    return work(conn)
            except _RACES as exc:
                if attempt == self.race_retries:
                    raise StoreUnavailableError(f"PostgreSQL store: {exc} (after {attempt} retries)") from exc
                log.info("PostgreSQL store: %s; retrying the transaction", exc)
                time.sleep(0.05 * (attempt + 1))
                attempt += 1
            except psycopg.Error as exc:
                lost = conn.broken or conn.closed
                if lost or isinstance(exc, psycopg.OperationalError):
                    self.reconnect()
                    if lost and reused:  # a kept connection the server dropped: once more, on a new one
                        reused = False
                        log.debug("PostgreSQL store: a kept connection was lost (%s); opening another", exc)
                        continue
                    raise StoreUnavailableError(f"PostgreSQL store connection lost: {exc}") from exc
                raise StoreError(f"PostgreSQL store failed: {exc}") from exc


def retrying(
    call: Callable[[], T],
    what: str,
    patience: float = 120,
    on_retry: Callable[[str], None] | None = None,
) -> T:
    """Ownership calls run inside Kafka's rebalance callback: ride out a short outage
    (`on_retry(what)` at each retry: the consumer's watchdog counts it as progress)."""
    deadline, delay = time.monotonic() + patience, 0.2
    while True:
        try:
            return call()
        except StoreUnavailableError as exc:
            if time.monotonic() >= deadline:
                raise
            if on_retry is not None:
                on_retry(what)
            log.warning("%s: %s; retrying in %.1fs", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
