"""Per-record Avro read/write with schemas parsed once.

fastavro's public `schemaless_reader`/`schemaless_writer` re-walk the schema on every
call, which costs as much as the encoding itself on records of this size (measured: 2x).
Its compiled `_read_data`/`write_data` take the parsed schema and named types directly;
when a fastavro release lacks them, this falls back to the public functions (same bytes,
just slower). The golden-bytes and interop tests hold either way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from io import BytesIO
from typing import Any

import fastavro

try:  # compiled fast path
    from fastavro._read import _read_data as _c_read_data  # type: ignore[attr-defined]
    from fastavro._write import write_data as _c_write_data  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - pure-Python fastavro builds
    _c_read_data = None
    _c_write_data = None

_READ_OPTIONS = {
    "return_record_name": True,
    "return_record_name_override": True,
    "handle_unicode_errors": "strict",
    "return_named_type": False,
    "return_named_type_override": False,
}
_WRITE_OPTIONS = {"strict": False, "strict_allow_default": False, "disable_tuple_notation": False}

Reader = Callable[[BytesIO], Any]
Writer = Callable[[Mapping[str, Any]], bytes]


def make_reader(writer_raw: Mapping[str, Any], reader_raw: Mapping[str, Any] | None) -> Reader:
    """A function decoding one body (a BytesIO) written with `writer_raw` into `reader_raw`."""
    named: dict[str, dict[str, Any]] = {"writer": {}, "reader": {}}
    writer = fastavro.parse_schema(dict(writer_raw), named["writer"], _write_hint=False)
    reader = (
        None
        if reader_raw is None
        else fastavro.parse_schema(dict(reader_raw), named["reader"], _write_hint=False)
    )
    if _c_read_data is not None:
        read = _c_read_data

        def fast(buf: BytesIO) -> Any:
            return read(buf, writer, named, reader, _READ_OPTIONS)

        return fast

    def slow(buf: BytesIO) -> Any:  # pragma: no cover
        return fastavro.schemaless_reader(
            buf, writer, reader, return_record_name=True, return_record_name_override=True
        )

    return slow


def make_writer(raw: Mapping[str, Any]) -> Writer:
    """A function encoding one record with schema `raw` (no framing)."""
    named: dict[str, Any] = {}
    schema = fastavro.parse_schema(dict(raw), named, _write_hint=False)
    if _c_write_data is not None:
        write = _c_write_data

        def fast(record: Mapping[str, Any]) -> bytes:
            buf = bytearray()
            write(buf, record, schema, named, "", _WRITE_OPTIONS)
            return bytes(buf)

        return fast

    def slow(record: Mapping[str, Any]) -> bytes:  # pragma: no cover
        out = BytesIO()
        fastavro.schemaless_writer(out, schema, record, strict_allow_default=True)
        return out.getvalue()

    return slow
