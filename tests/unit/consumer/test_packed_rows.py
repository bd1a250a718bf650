"""Rows staged as a packed blob (consumer/native/src/packed_rows.rs): what `pack_rows` packs,
the `packed_rows` table yields unchanged; what is not its blob is an SQL error, never a
wrong row."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.fold import native as fold_native
from consumer.store.sqlite import bins as sqlite_bins
from support import native_build

NATIVE = fold_native.NATIVE
pytestmark = native_build.needs("the compiled packed_rows functions", NATIVE is not None)

cell = st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.text() | st.binary()
tables = st.integers(1, 10).flatmap(
    lambda n: st.tuples(st.just(n), st.lists(st.tuples(*[cell] * n), max_size=40))
)


def connection() -> sqlite3.Connection:
    sqlite_bins.install()
    db = sqlite3.connect(":memory:")
    assert sqlite_bins.register(db, prefer="native") == "native"
    return db


def pack(rows: list[Any], columns: int) -> bytes:
    assert fold_native.native is not None
    return fold_native.native.pack_rows(rows, columns)


def read(db: sqlite3.Connection, blob: object, columns: int) -> list[tuple[Any, ...]]:
    cols = ", ".join(f"c{i}" for i in range(columns))
    return db.execute(f"SELECT {cols} FROM packed_rows(?)", (blob,)).fetchall()


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 10).flatmap(lambda n: st.tuples(st.just(n), st.lists(st.tuples(*[cell] * n), max_size=9)))
)
def test_rows_come_back_as_packed(case: tuple[int, list[tuple[Any, ...]]]) -> None:
    columns, rows = case
    assert read(connection(), pack(rows, columns), columns) == rows


def test_lists_and_bools_pack_as_json_would_give_them() -> None:
    db = connection()
    got = read(db, pack([[True, False, "x"]], 3), 3)
    json = db.execute("SELECT value->>0, value->>1, value->>2 FROM json_each(?)", ('[[true, false, "x"]]',))
    assert got == json.fetchall()
    assert got == [(1, 0, "x")]


def test_the_widest_row_and_a_blob_cell_come_back() -> None:
    row = (*range(63), b"\x00\xff")
    assert read(connection(), pack([row], 64), 64) == [row]


def test_columns_beyond_the_rows_are_null_and_no_blob_is_no_rows() -> None:
    db = connection()
    assert db.execute("SELECT c1, c9 FROM packed_rows(?)", (pack([(5,)], 1),)).fetchall() == [(None, None)]
    assert db.execute("SELECT count(*) FROM packed_rows(NULL)").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM packed_rows(?)", (pack([], 4),)).fetchone() == (0,)


def good() -> bytes:
    """A valid blob, packed when a test runs (never at import: without the compiled
    functions this module must still be collected, and skip)."""
    return pack([("whatsapp", 1, None)], 3)


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\x03\x00\x00",  # a short header
        b"\x00\x00\x00\x00",  # no columns
        b"\x41\x00\x00\x00",  # 65 columns
        lambda: good()[:-1],  # truncated
        lambda: good()[:6],  # inside a text's length
        lambda: good() + b"\x07",  # a bad tag
        b"\x01\x00\x00\x00\x02\xff\xff\xff\x7f",  # a text longer than the blob
        b"\x01\x00\x00\x00\x02\x01\x00\x00\x00\xff",  # not UTF-8
        b"\x01\x00\x00\x00\x03\x02\x00\x00\x00\xff",  # a blob longer than the blob
        "text",
        42,
    ],
)
def test_what_is_not_a_packed_blob_is_an_error(blob: object) -> None:
    if callable(blob):
        blob = blob()
    with pytest.raises(sqlite3.Error, match="packed_rows"):
        read(connection(), blob, 3)


@pytest.mark.parametrize(
    ("rows", "columns", "error"),
    [
        ([(1.5,)], 1, TypeError),
        ([(bytearray(b"x"),)], 1, TypeError),
        ([(1, 2)], 1, ValueError),
        (["x"], 1, TypeError),
        ([(2**63,)], 1, OverflowError),
        ([()], 0, ValueError),
        ([(1,) * 65], 65, ValueError),
    ],
)
def test_pack_rows_refuses_what_it_cannot_pack(rows: list[Any], columns: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        pack(rows, columns)
