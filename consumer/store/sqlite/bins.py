"""A metric row's sketch bins as one BLOB in the row (SQLite store), and the SQL functions
that build and merge them.

Blob format: little-endian int64 pairs ``(bin, n)``, sorted by bin, equal bins summed, no
zero counts; NULL when a row has no bins. One blob per row means one B-tree upsert per
changed row, where a bins table took one more per changed (row, bin): about 60% of the
store's upserts on the benchmark stream.

SQL functions (on every connection of the store):
    bins_pack(bin, n)  aggregate: the blob of the (bin, n) pairs of a group (NULLs and 0 skipped)
    bins_union(blob)   aggregate: the blobs of a group merged
    bins_one(bin, n)   the blob of one pair (NULL when either is NULL or n is 0)
    bins_merge(a, b)   two blobs merged (NULL is empty)

This module is the reference; the compiled twin (consumer/native/src/bins_sql.rs) runs
inside `sqlite3_step` without the GIL. SQLite registers it on each new connection itself
(`sqlite3_auto_extension`, installed by `install`): no interpreter internals are read, so
it works on any CPython whose `_sqlite3` links a SQLite that exports its functions.
tests/unit/consumer/test_sqlite_bins.py holds the two equal.
"""

from __future__ import annotations

import _sqlite3
import logging
import os
import re
import sqlite3
import struct
from collections.abc import Iterable

from consumer.exceptions import StoreError
from consumer.fold.native import ENV, choose, native
from consumer.fold.state import I64_MAX, I64_MIN
from consumer.store.rollup import normalize

log = logging.getLogger(__name__)

_PAIR = struct.Struct("<qq")
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")


def _integer(v: object) -> int:
    """An integer argument: an int, or a text that is one (as JSON object keys are, which
    SQL may pass straight from json_each)."""
    if isinstance(v, int) and I64_MIN <= v <= I64_MAX:
        return v
    if isinstance(v, str) and _INTEGER_TEXT.fullmatch(v) and I64_MIN <= int(v) <= I64_MAX:
        return int(v)
    raise TypeError("bins_pack: bin and n must be integers")


def pack(pairs: Iterable[tuple[int, int]]) -> bytes | None:
    """The blob of some (bin, n) pairs (None when nothing is left)."""
    done = normalize(pairs)
    return b"".join(_PAIR.pack(b, n) for b, n in done) if done else None


def unpack(blob: bytes | None) -> list[tuple[int, int]]:
    """The (bin, n) pairs of a blob."""
    if blob is None:
        return []
    if not isinstance(blob, bytes) or len(blob) % _PAIR.size:
        raise StoreError("a metric row's bins are not a sketch-bins blob (16-byte pairs)")
    return list(_PAIR.iter_unpack(blob))


def merge(a: bytes | None, b: bytes | None) -> bytes | None:
    return pack([*unpack(a), *unpack(b)])


def one(b: object, n: object) -> bytes | None:
    """bins_one: the blob of one (bin, n) pair, as bins_pack makes it of a group of one."""
    return None if b is None or n is None else pack([(_integer(b), _integer(n))])


class _Pairs:
    """An aggregate that gathers (bin, n) pairs and packs them at the end."""

    def __init__(self) -> None:
        self.pairs: list[tuple[int, int]] = []

    def finalize(self) -> bytes | None:
        return pack(self.pairs)


class _Pack(_Pairs):
    def step(self, b: object, n: object) -> None:
        if b is not None and n is not None and (count := _integer(n)) != 0:
            self.pairs.append((_integer(b), count))


class _Union(_Pairs):
    def step(self, blob: bytes | None) -> None:
        self.pairs.extend(unpack(blob))


def register_python(db: sqlite3.Connection) -> None:
    """The reference functions, called through Python (slower: the GIL per row)."""
    db.create_aggregate("bins_pack", 2, _Pack)  # type: ignore[arg-type]
    db.create_aggregate("bins_union", 1, _Union)  # type: ignore[arg-type]
    db.create_function("bins_one", 2, one, deterministic=True)
    db.create_function("bins_merge", 2, merge, deterministic=True)


def install() -> bool:
    """Have SQLite register the compiled functions on every connection opened from now on
    (`sqlite3_auto_extension`, in the SQLite that Python's `_sqlite3` uses); call before
    connecting. False where the compiled part is not built or that SQLite does not export
    its functions (a warning says why): connections then get the Python functions."""
    global _installed
    if _installed is None:
        module = getattr(_sqlite3, "__file__", None)
        _installed = False
        if native is not None and module:
            try:
                native.install_sqlite_auto_extension(module)
            except RuntimeError as exc:  # _sqlite3 does not export SQLite's functions
                log.warning("sqlite bins: compiled functions unavailable (%s); the Python ones run", exc)
            else:
                _installed = True
    return _installed


_installed: bool | None = None


def _compiled_present(db: sqlite3.Connection) -> bool:
    """Whether SQLite registered the compiled functions on this connection."""
    try:
        db.execute("SELECT bins_one(1, 1)").fetchone()
    except sqlite3.OperationalError:  # no such function: opened before install(), or another SQLite
        return False
    return True


def register(db: sqlite3.Connection, *, prefer: str | None = None) -> str:
    """Make sure `db` has the bins functions: the compiled ones where SQLite registered them
    (`install` before connecting), else the reference. Returns which ("native" or "python").
    `prefer` (or $CONVMETRICS_FOLD) as for the fold: python, native (an error when they
    are not there) or auto."""
    if choose(prefer).name == "native" and install() and _compiled_present(db):
        return "native"
    if (prefer or os.environ.get(ENV) or "auto").lower() == "native":
        raise StoreError(
            "CONVMETRICS_FOLD=native but SQLite's compiled bins functions are not on this connection "
            "(not built, or Python's sqlite3 does not export SQLite's functions)"
        )
    register_python(db)  # replaces compiled ones of the same names, where SQLite added them
    return "python"
