//! Rows handed to the SQLite store in a binary blob instead of JSON: `pack_rows(rows, n)`
//! packs a list of n-tuples (None, int, str or bytes each; a bool is its int), and the table-valued function
//! `packed_rows(blob)` (an eponymous virtual table, registered with the bins functions on
//! the store's connection) yields them as columns c0..c63. SQLite 3.40's `value->>i` parses
//! a JSON row's text again for each of its fields: staging a commit's facts and closures
//! that way cost more than inserting them (bench/pipeline.py).
//!
//! Blob: u32 column count (1-64), then per row and column a tag byte: 0 NULL; 1 an int64
//! (8 bytes); 2 a text (u32 byte length, UTF-8 bytes); 3 a blob (u32 byte length, bytes);
//! 4 the integer 0 (no bytes: most of a metric row's values are 0).
//! All little-endian. Only `pack_rows` and `rollup_rows` (crate::rollup) write it; the
//! reader checks every length and refuses a malformed blob (an SQL error, never a read out
//! of bounds).

use std::ffi::{c_char, c_int, c_void};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyInt, PyList, PySequence, PyString, PyTuple};
use std::ffi::CString;

use crate::bins_sql::{Api, Ctx, SQLITE_BLOB, SQLITE_NULL, SQLITE_OK, SQLITE_UTF8, Val, loaded};

/// Columns a packed row may have (c0..c63 of the virtual table): room for the registry's
/// fact fields and metric rows' value columns to grow.
pub const MAX_COLUMNS: usize = 64;
const DATA_COLUMN: c_int = MAX_COLUMNS as c_int; // the hidden `data` argument
pub(crate) const TAG_NULL: u8 = 0;
pub(crate) const TAG_INT: u8 = 1;
pub(crate) const TAG_TEXT: u8 = 2;
pub(crate) const TAG_BLOB: u8 = 3;
pub(crate) const TAG_ZERO: u8 = 4;
const SQLITE_ERROR: c_int = 1;
const SQLITE_CONSTRAINT: c_int = 19;
const SQLITE_INDEX_CONSTRAINT_EQ: u8 = 2;
const SQLITE_TRANSIENT: isize = -1;

/// Packs `rows` (a list of tuples or lists of `columns` items each: None, int within 64
/// bits, str, bytes).
#[pyfunction]
pub fn pack_rows<'py>(
    py: Python<'py>,
    rows: &Bound<'py, PyList>,
    columns: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    if !(1..=MAX_COLUMNS).contains(&columns) {
        return Err(PyValueError::new_err(format!(
            "pack_rows: 1 to {MAX_COLUMNS} columns, not {columns}"
        )));
    }
    let mut out: Vec<u8> = Vec::with_capacity(4 + rows.len() * columns * 9);
    out.extend_from_slice(&(columns as u32).to_le_bytes());
    for row in rows.iter() {
        let items = if row.is_instance_of::<PyTuple>() || row.is_instance_of::<PyList>() {
            row.cast::<PySequence>()?
        } else {
            return Err(PyTypeError::new_err(
                "pack_rows: a row is a tuple or a list",
            ));
        };
        let len = items.len()?;
        if len != columns {
            return Err(PyValueError::new_err(format!(
                "pack_rows: a row of {len} items, not {columns}"
            )));
        }
        for i in 0..len {
            let item = items.get_item(i)?;
            if item.is_none() {
                out.push(TAG_NULL);
            } else if let Ok(s) = item.cast::<PyString>() {
                let text = s.to_str()?;
                let len = u32::try_from(text.len())
                    .map_err(|_| PyValueError::new_err("pack_rows: a text over 4 GiB"))?;
                out.push(TAG_TEXT);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(text.as_bytes());
            } else if let Ok(b) = item.cast::<PyBytes>() {
                let bytes = b.as_bytes();
                let len = u32::try_from(bytes.len())
                    .map_err(|_| PyValueError::new_err("pack_rows: a blob over 4 GiB"))?;
                out.push(TAG_BLOB);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(bytes);
            } else if item.is_instance_of::<PyInt>() {
                // bool too: 1 or 0, as JSON's true reads
                match item.extract::<i64>()? {
                    0 => out.push(TAG_ZERO),
                    n => {
                        out.push(TAG_INT);
                        out.extend_from_slice(&n.to_le_bytes());
                    }
                }
            } else {
                return Err(PyTypeError::new_err(format!(
                    "pack_rows: a row holds None, int, str or bytes, not {}",
                    item.get_type().name()?
                )));
            }
        }
    }
    Ok(PyBytes::new(py, &out))
}

#[derive(Clone, Copy)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    Text(usize, usize), // start and length in the cursor's data
    Blob(usize, usize),
}

#[repr(C)]
struct VTab {
    module: *const c_void, // sqlite3_vtab: pModule, nRef, zErrMsg
    n_ref: c_int,
    err: *mut c_char,
}

#[repr(C)]
struct Cursor {
    vtab: *mut VTab, // sqlite3_vtab_cursor: pVtab
    data: Vec<u8>,
    columns: usize,
    pos: usize, // where the next row starts in data
    row: i64,
    eof: bool,
    cells: [Cell; MAX_COLUMNS],
}

#[repr(C)]
struct IndexConstraint {
    column: c_int,
    op: u8,
    usable: u8,
    term_offset: c_int,
}

#[repr(C)]
struct ConstraintUsage {
    argv_index: c_int,
    omit: u8,
}

#[repr(C)]
struct IndexInfo {
    n_constraint: c_int,
    constraints: *const IndexConstraint,
    n_order_by: c_int,
    order_by: *const c_void,
    usage: *mut ConstraintUsage,
    idx_num: c_int,
    idx_str: *mut c_char,
    need_to_free_idx_str: c_int,
    order_by_consumed: c_int,
    estimated_cost: f64,
    estimated_rows: i64,
    idx_flags: c_int,
    col_used: u64,
}

type Unused = Option<unsafe extern "C" fn()>;
type Connect = unsafe extern "C" fn(
    *mut c_void,
    *mut c_void,
    c_int,
    *const *const c_char,
    *mut *mut VTab,
    *mut *mut c_char,
) -> c_int;

/// sqlite3_module, version 1 (the fields SQLite reads of a version-1 module, in order).
#[repr(C)]
pub struct Module {
    version: c_int,
    create: Option<Connect>,
    connect: Option<Connect>,
    best_index: Option<unsafe extern "C" fn(*mut VTab, *mut IndexInfo) -> c_int>,
    disconnect: Option<unsafe extern "C" fn(*mut VTab) -> c_int>,
    destroy: Option<unsafe extern "C" fn(*mut VTab) -> c_int>,
    open: Option<unsafe extern "C" fn(*mut VTab, *mut *mut Cursor) -> c_int>,
    close: Option<unsafe extern "C" fn(*mut Cursor) -> c_int>,
    filter: Option<
        unsafe extern "C" fn(*mut Cursor, c_int, *const c_char, c_int, *mut *mut Val) -> c_int,
    >,
    next: Option<unsafe extern "C" fn(*mut Cursor) -> c_int>,
    eof: Option<unsafe extern "C" fn(*mut Cursor) -> c_int>,
    column: Option<unsafe extern "C" fn(*mut Cursor, *mut Ctx, c_int) -> c_int>,
    rowid: Option<unsafe extern "C" fn(*mut Cursor, *mut i64) -> c_int>,
    update: Unused,
    begin: Unused,
    sync: Unused,
    commit: Unused,
    rollback: Unused,
    find_function: Unused,
    rename: Unused,
}

/// An eponymous-only table (no `create`): `SELECT ... FROM packed_rows(?)`, read-only.
pub static MODULE: Module = Module {
    version: 1,
    create: None,
    connect: Some(connect),
    best_index: Some(best_index),
    disconnect: Some(disconnect),
    destroy: Some(disconnect),
    open: Some(open),
    close: Some(close),
    filter: Some(filter),
    next: Some(next),
    eof: Some(eof),
    column: Some(column),
    rowid: Some(rowid),
    update: None,
    begin: None,
    sync: None,
    commit: None,
    rollback: None,
    find_function: None,
    rename: None,
};

unsafe extern "C" fn connect(
    db: *mut c_void,
    _aux: *mut c_void,
    _argc: c_int,
    _argv: *const *const c_char,
    out: *mut *mut VTab,
    _err: *mut *mut c_char,
) -> c_int {
    let api = loaded();
    unsafe {
        let columns: Vec<String> = (0..MAX_COLUMNS).map(|i| format!("c{i}")).collect();
        let schema = CString::new(format!(
            "CREATE TABLE x({}, data HIDDEN)",
            columns.join(", ")
        ))
        .expect("no NUL in the schema");
        let rc = (api.declare_vtab)(db, schema.as_ptr());
        if rc != SQLITE_OK {
            return rc;
        }
        *out = Box::into_raw(Box::new(VTab {
            module: std::ptr::null(),
            n_ref: 0,
            err: std::ptr::null_mut(),
        }));
    }
    SQLITE_OK
}

unsafe extern "C" fn disconnect(vtab: *mut VTab) -> c_int {
    unsafe {
        let vtab = Box::from_raw(vtab);
        if !vtab.err.is_null() {
            (loaded().free)(vtab.err as *mut c_void);
        }
    }
    SQLITE_OK
}

/// Usable only with its blob argument (`packed_rows(?)`): an equality on `data`.
unsafe extern "C" fn best_index(_vtab: *mut VTab, info: *mut IndexInfo) -> c_int {
    unsafe {
        let info = &mut *info;
        let n = info.n_constraint.max(0) as usize;
        let constraints = if n == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(info.constraints, n)
        };
        let on_data =
            |c: &IndexConstraint| c.column == DATA_COLUMN && c.op == SQLITE_INDEX_CONSTRAINT_EQ;
        match constraints.iter().position(|c| on_data(c) && c.usable != 0) {
            Some(i) => {
                let usage = &mut *info.usage.add(i);
                usage.argv_index = 1;
                usage.omit = 1;
                info.idx_num = 1;
                info.estimated_cost = 1.0;
                info.estimated_rows = 100_000;
            }
            None if constraints.iter().any(on_data) => return SQLITE_CONSTRAINT, // try another order
            None => {
                info.idx_num = 0; // no blob: no rows
                info.estimated_cost = 1.0;
                info.estimated_rows = 0;
            }
        }
    }
    SQLITE_OK
}

unsafe extern "C" fn open(vtab: *mut VTab, out: *mut *mut Cursor) -> c_int {
    let cursor = Cursor {
        vtab,
        data: Vec::new(),
        columns: 0,
        pos: 0,
        row: 0,
        eof: true,
        cells: [Cell::Null; MAX_COLUMNS],
    };
    unsafe { *out = Box::into_raw(Box::new(cursor)) };
    SQLITE_OK
}

unsafe extern "C" fn close(cursor: *mut Cursor) -> c_int {
    drop(unsafe { Box::from_raw(cursor) });
    SQLITE_OK
}

/// An SQL error with `msg` (SQLite takes the message from the vtab and frees it).
unsafe fn fail(api: &Api, cursor: &mut Cursor, msg: &str) -> c_int {
    unsafe {
        let vtab = &mut *cursor.vtab;
        if !vtab.err.is_null() {
            (api.free)(vtab.err as *mut c_void);
        }
        let p = (api.malloc)((msg.len() + 1) as c_int) as *mut u8;
        if !p.is_null() {
            std::ptr::copy_nonoverlapping(msg.as_ptr(), p, msg.len());
            *p.add(msg.len()) = 0;
        }
        vtab.err = p as *mut c_char;
    }
    SQLITE_ERROR
}

unsafe extern "C" fn filter(
    cursor: *mut Cursor,
    idx_num: c_int,
    _idx_str: *const c_char,
    argc: c_int,
    argv: *mut *mut Val,
) -> c_int {
    let api = loaded();
    unsafe {
        let cursor = &mut *cursor;
        cursor.data.clear();
        cursor.row = 0;
        cursor.eof = true;
        if idx_num != 1 || argc < 1 {
            return SQLITE_OK;
        }
        let v = *argv;
        match (api.value_type)(v) {
            SQLITE_NULL => return SQLITE_OK,
            SQLITE_BLOB => {}
            _ => {
                return fail(
                    api,
                    cursor,
                    "packed_rows: the argument is not a blob of pack_rows",
                );
            }
        }
        let len = (api.value_bytes)(v) as usize;
        let p = (api.value_blob)(v) as *const u8;
        if len < 4 || p.is_null() {
            return fail(api, cursor, "packed_rows: a blob without its header");
        }
        cursor
            .data
            .extend_from_slice(std::slice::from_raw_parts(p, len));
        let columns = u32::from_le_bytes(cursor.data[..4].try_into().expect("4 bytes")) as usize;
        if !(1..=MAX_COLUMNS).contains(&columns) {
            return fail(api, cursor, "packed_rows: a blob with a bad column count");
        }
        cursor.columns = columns;
        cursor.pos = 4;
        cursor.eof = false;
        cursor.row = -1;
        next(cursor)
    }
}

/// The cells of the row at `data[pos..]` and where the next one starts (None: malformed).
pub(crate) fn read_row(data: &[u8], mut pos: usize, cells: &mut [Cell]) -> Option<usize> {
    for cell in cells.iter_mut() {
        let tag = *data.get(pos)?;
        pos += 1;
        *cell = match tag {
            TAG_NULL => Cell::Null,
            TAG_INT => {
                let bytes = data.get(pos..pos + 8)?;
                pos += 8;
                Cell::Int(i64::from_le_bytes(bytes.try_into().ok()?))
            }
            TAG_TEXT => {
                let len = u32::from_le_bytes(data.get(pos..pos + 4)?.try_into().ok()?) as usize;
                pos += 4;
                let text = data.get(pos..pos.checked_add(len)?)?;
                std::str::from_utf8(text).ok()?;
                let start = pos;
                pos += len;
                Cell::Text(start, len)
            }
            TAG_ZERO => Cell::Int(0),
            TAG_BLOB => {
                let len = u32::from_le_bytes(data.get(pos..pos + 4)?.try_into().ok()?) as usize;
                pos += 4;
                data.get(pos..pos.checked_add(len)?)?;
                let start = pos;
                pos += len;
                Cell::Blob(start, len)
            }
            _ => return None,
        };
    }
    Some(pos)
}

unsafe extern "C" fn next(cursor: *mut Cursor) -> c_int {
    unsafe {
        let cursor = &mut *cursor;
        if cursor.pos >= cursor.data.len() {
            cursor.eof = true;
            return SQLITE_OK;
        }
        let columns = cursor.columns;
        match read_row(&cursor.data, cursor.pos, &mut cursor.cells[..columns]) {
            Some(pos) => {
                cursor.pos = pos;
                cursor.row += 1;
                SQLITE_OK
            }
            None => {
                cursor.eof = true;
                fail(
                    loaded(),
                    cursor,
                    "packed_rows: a malformed blob (truncated or a bad tag)",
                )
            }
        }
    }
}

unsafe extern "C" fn eof(cursor: *mut Cursor) -> c_int {
    unsafe { (*cursor).eof as c_int }
}

unsafe extern "C" fn column(cursor: *mut Cursor, ctx: *mut Ctx, i: c_int) -> c_int {
    let api = loaded();
    unsafe {
        let cursor = &*cursor;
        let cell = if (0..cursor.columns as c_int).contains(&i) {
            cursor.cells[i as usize]
        } else {
            Cell::Null
        };
        match cell {
            Cell::Null => (api.result_null)(ctx),
            Cell::Int(n) => (api.result_int64)(ctx, n),
            Cell::Text(start, len) => (api.result_text64)(
                ctx,
                cursor.data.as_ptr().add(start) as *const c_char,
                len as u64,
                SQLITE_TRANSIENT,
                SQLITE_UTF8 as u8,
            ),
            Cell::Blob(start, len) => (api.result_blob64)(
                ctx,
                cursor.data.as_ptr().add(start) as *const c_void,
                len as u64,
                SQLITE_TRANSIENT,
            ),
        }
    }
    SQLITE_OK
}

unsafe extern "C" fn rowid(cursor: *mut Cursor, out: *mut i64) -> c_int {
    unsafe { *out = (*cursor).row };
    SQLITE_OK
}
