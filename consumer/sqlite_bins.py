"""A metric row's sketch bins as one BLOB in the row (SQLite store), and the SQL functions
that build and merge them.

Blob format: little-endian int64 pairs ``(bin, n)``, sorted by bin, equal bins summed, no
zero counts; NULL when a row has no bins. One blob per row means one B-tree upsert per
changed row, where a bins table took one more per changed (row, bin): about 60% of the
store's upserts on the benchmark stream.

SQL functions (on every connection of the store):
    bins_pack(bin, n)  aggregate: the blob of the (bin, n) pairs of a group (NULLs and 0 skipped)
    bins_union(blob)   aggregate: the blobs of a group merged
    bins_merge(a, b)   two blobs merged (NULL is empty)

This module is the reference; the compiled twin (consumer/native/src/bins_sql.rs) runs
inside `sqlite3_step` without the GIL and is registered where it was built and the
interpreter's connection layout is the known CPython one. tests/unit/consumer/test_sqlite_bins.py
holds the two equal.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sqlite3
import struct
import sys
from collections.abc import Iterable

from consumer.exceptions import StoreError

log = logging.getLogger(__name__)

_PAIR = struct.Struct("<qq")
_I64 = 2**64


def _wrap(n: int) -> int:
    """Two's-complement int64, as the compiled functions add."""
    n %= _I64
    return n - _I64 if n >= 2**63 else n


def normalize(pairs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted by bin, equal bins summed, zero counts dropped."""
    sums: dict[int, int] = {}
    for b, n in pairs:
        sums[b] = sums.get(b, 0) + n
    return [(b, _wrap(n)) for b, n in sorted(sums.items()) if _wrap(n) != 0]


def pack(pairs: Iterable[tuple[int, int]]) -> bytes | None:
    """The blob of some (bin, n) pairs (None when nothing is left)."""
    done = normalize(pairs)
    return b"".join(_PAIR.pack(b, n) for b, n in done) if done else None


def unpack(blob: bytes | None) -> list[tuple[int, int]]:
    """The (bin, n) pairs of a blob."""
    if not blob:
        return []
    if len(blob) % _PAIR.size:
        raise StoreError("a metric row's bins are not a sketch-bins blob (16-byte pairs)")
    return list(_PAIR.iter_unpack(blob))


def merge(a: bytes | None, b: bytes | None) -> bytes | None:
    return pack([*unpack(a), *unpack(b)])


class _Pack:
    def __init__(self) -> None:
        self.pairs: list[tuple[int, int]] = []

    def step(self, b: int | None, n: int | None) -> None:
        if b is not None and n is not None and int(n) != 0:
            self.pairs.append((int(b), int(n)))

    def finalize(self) -> bytes | None:
        return pack(self.pairs)


class _Union:
    def __init__(self) -> None:
        self.pairs: list[tuple[int, int]] = []

    def step(self, blob: bytes | None) -> None:
        self.pairs.extend(unpack(blob))

    def finalize(self) -> bytes | None:
        return pack(self.pairs)


def register_python(db: sqlite3.Connection) -> None:
    """The reference functions, called through Python (slower: the GIL per row)."""
    db.create_aggregate("bins_pack", 2, _Pack)  # type: ignore[arg-type]
    db.create_aggregate("bins_union", 1, _Union)  # type: ignore[arg-type]
    db.create_function("bins_merge", 2, merge, deterministic=True)


def _handle(db: sqlite3.Connection) -> int | None:
    """The `sqlite3 *` of a connection, on CPython's known layout (3.10-3.13: the first field
    after the object header), else None."""
    if platform.python_implementation() != "CPython" or not (3, 10) <= sys.version_info[:2] <= (3, 13):
        return None
    if hasattr(sys, "gettotalrefcount"):  # a debug build: another header size
        return None
    return ctypes.c_void_p.from_address(id(db) + object.__basicsize__).value


def register(db: sqlite3.Connection, path: str, *, prefer: str | None = None) -> str:
    """Register the bins functions on `db` (opened on `path`): compiled where it can, else the
    reference. Returns which ("native" or "python"). `prefer="python"` (or
    $CONVMETRICS_FOLD=python) takes the reference."""
    from consumer.fold_native import ENV, native

    want = (prefer or os.environ.get(ENV) or "auto").lower()
    handle = _handle(db) if native is not None and want != "python" else None
    if handle is not None:
        assert native is not None
        try:
            name = native.sqlite_filename(handle)
        except RuntimeError as exc:  # no shared libsqlite3 in this process
            log.warning("sqlite bins: compiled functions unavailable (%s); the Python ones run", exc)
        else:
            expected = "" if path in ("", ":memory:") else os.path.realpath(path)
            if (os.path.realpath(name) if name else "") == expected:
                native.register_sqlite_bins(handle)
                return "native"
            log.warning("sqlite bins: unexpected connection layout; the Python functions run")
    register_python(db)
    return "python"
