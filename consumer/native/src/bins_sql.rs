//! The SQLite store's sketch-bin functions, compiled (consumer/store/sqlite/bins.py is the
//! reference and holds the blob format): `bins_pack(bin, n)` and `bins_union(blob)`
//! aggregates, `bins_one(bin, n)` and `bins_merge(a, b)`, and the `packed_rows` table.
//!
//! They reach the store's connections through SQLite's documented interfaces only:
//! `install_sqlite_auto_extension` hands SQLite an entry point with
//! `sqlite3_auto_extension`, and SQLite itself calls it with the `sqlite3 *` of every
//! connection opened afterwards in the process, where it registers the functions with
//! `sqlite3_create_function_v2` and `sqlite3_create_module_v2`. Nothing reads Python's
//! connection object (no interpreter struct layout is assumed); the Python side checks
//! per connection that the functions are there, and registers its own where they are not.
//!
//! They run inside `sqlite3_step`, which Python's sqlite3 calls without the GIL: merging a
//! commit's bins into its rows takes no Python time at all. The SQLite functions are looked
//! up through Python's own `_sqlite3` module (`RTLD_NOLOAD`), never a second copy: two
//! copies of SQLite on one file in one process break each other's POSIX locks, and a
//! connection must only ever be handled by the functions of the copy that made it.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::OnceLock;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::packed_rows;

pub(crate) type Ctx = c_void; // sqlite3_context
pub(crate) type Val = c_void; // sqlite3_value
type XFunc = unsafe extern "C" fn(*mut Ctx, c_int, *mut *mut Val);
type XFinal = unsafe extern "C" fn(*mut Ctx);
/// One SQL function to register: name, argument count, scalar, aggregate step and final.
type SqlFunction = (
    &'static CStr,
    c_int,
    Option<XFunc>,
    Option<XFunc>,
    Option<XFinal>,
);

pub(crate) const SQLITE_OK: c_int = 0;
const SQLITE_INTEGER: c_int = 1;
const SQLITE_TEXT: c_int = 3;
pub(crate) const SQLITE_BLOB: c_int = 4;
pub(crate) const SQLITE_NULL: c_int = 5;
pub(crate) const SQLITE_UTF8: c_int = 1;
const SQLITE_DETERMINISTIC: c_int = 0x800;
const RTLD_LAZY: c_int = 1;
const RTLD_NOLOAD: c_int = 4;

unsafe extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

#[allow(clippy::type_complexity)]
pub(crate) struct Api {
    create_function_v2: unsafe extern "C" fn(
        *mut c_void,
        *const c_char,
        c_int,
        c_int,
        *mut c_void,
        Option<XFunc>,
        Option<XFunc>,
        Option<XFinal>,
        Option<unsafe extern "C" fn(*mut c_void)>,
    ) -> c_int,
    aggregate_context: unsafe extern "C" fn(*mut Ctx, c_int) -> *mut c_void,
    pub(crate) value_type: unsafe extern "C" fn(*mut Val) -> c_int,
    value_int64: unsafe extern "C" fn(*mut Val) -> i64,
    value_text: unsafe extern "C" fn(*mut Val) -> *const u8,
    pub(crate) value_blob: unsafe extern "C" fn(*mut Val) -> *const c_void,
    pub(crate) value_bytes: unsafe extern "C" fn(*mut Val) -> c_int,
    pub(crate) result_blob64: unsafe extern "C" fn(*mut Ctx, *const c_void, u64, isize),
    pub(crate) result_null: unsafe extern "C" fn(*mut Ctx),
    result_error: unsafe extern "C" fn(*mut Ctx, *const c_char, c_int),
    create_module_v2: unsafe extern "C" fn(
        *mut c_void,
        *const c_char,
        *const packed_rows::Module,
        *mut c_void,
        Option<unsafe extern "C" fn(*mut c_void)>,
    ) -> c_int,
    pub(crate) declare_vtab: unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int,
    pub(crate) result_int64: unsafe extern "C" fn(*mut Ctx, i64),
    pub(crate) result_text64: unsafe extern "C" fn(*mut Ctx, *const c_char, u64, isize, u8),
    pub(crate) malloc: unsafe extern "C" fn(c_int) -> *mut c_void,
    pub(crate) free: unsafe extern "C" fn(*mut c_void),
    auto_extension: unsafe extern "C" fn(Option<unsafe extern "C" fn()>) -> c_int,
}

static API: OnceLock<Result<Api, String>> = OnceLock::new();

/// SQLite's functions as Python's `_sqlite3` module (already loaded, at `module`) resolves
/// them: dlsym on that module's handle searches it and the libraries it was linked with, so
/// these are the very functions its connections use (its own copy when SQLite is built in
/// and exported; an error, and the Python functions, when it is not exported).
// Each symbol becomes the function type of its `Api` field, declared once there: spelling
// the 17 signatures again at each transmute would only give them a second place to differ.
#[allow(clippy::missing_transmute_annotations)]
fn load(module: &str) -> Result<&'static Api, String> {
    API.get_or_init(|| unsafe {
        let path = CString::new(module).map_err(|_| "module path with a NUL".to_string())?;
        let lib = dlopen(path.as_ptr(), RTLD_LAZY | RTLD_NOLOAD);
        if lib.is_null() {
            return Err(format!("{module} is not loaded in this process"));
        }
        macro_rules! sym {
            ($name:literal) => {{
                let p = dlsym(lib, CString::new($name).expect("no NUL").as_ptr());
                if p.is_null() {
                    return Err(format!("{module} exports no {}", $name));
                }
                std::mem::transmute::<*mut c_void, _>(p)
            }};
        }
        Ok(Api {
            create_function_v2: sym!("sqlite3_create_function_v2"),
            aggregate_context: sym!("sqlite3_aggregate_context"),
            value_type: sym!("sqlite3_value_type"),
            value_int64: sym!("sqlite3_value_int64"),
            value_text: sym!("sqlite3_value_text"),
            value_blob: sym!("sqlite3_value_blob"),
            value_bytes: sym!("sqlite3_value_bytes"),
            result_blob64: sym!("sqlite3_result_blob64"),
            result_null: sym!("sqlite3_result_null"),
            result_error: sym!("sqlite3_result_error"),
            create_module_v2: sym!("sqlite3_create_module_v2"),
            declare_vtab: sym!("sqlite3_declare_vtab"),
            result_int64: sym!("sqlite3_result_int64"),
            result_text64: sym!("sqlite3_result_text64"),
            malloc: sym!("sqlite3_malloc"),
            free: sym!("sqlite3_free"),
            auto_extension: sym!("sqlite3_auto_extension"),
        })
    })
    .as_ref()
    .map_err(Clone::clone)
}

pub(crate) fn loaded() -> &'static Api {
    API.get()
        .and_then(|a| a.as_ref().ok())
        .expect("registered, so loaded")
}

/// (bin, n) pairs: sorted by bin, equal bins summed, zero counts dropped; None when a sum
/// leaves 64 bits (an error, as SQLite's own sum() makes it).
fn normalize(mut pairs: Vec<(i64, i64)>) -> Option<Vec<(i64, i64)>> {
    pairs.sort_unstable(); // by (bin, n): the reference adds in that order too
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(pairs.len());
    for (b, n) in pairs {
        match out.last_mut() {
            Some(last) if last.0 == b => last.1 = last.1.checked_add(n)?,
            _ => out.push((b, n)),
        }
    }
    out.retain(|p| p.1 != 0);
    Some(out)
}

/// An integer argument: an INTEGER, or a TEXT that is one (json_each's object keys are
/// TEXT); anything else is an error (None).
unsafe fn integer(api: &Api, v: *mut Val) -> Option<i64> {
    unsafe {
        match (api.value_type)(v) {
            SQLITE_INTEGER => Some((api.value_int64)(v)),
            SQLITE_TEXT => {
                let p = (api.value_text)(v);
                let len = (api.value_bytes)(v) as usize;
                if p.is_null() {
                    return None;
                }
                std::str::from_utf8(std::slice::from_raw_parts(p, len))
                    .ok()?
                    .parse::<i64>()
                    .ok()
            }
            _ => None,
        }
    }
}

/// Appends a blob's pairs; false when it is not a bins blob (not a BLOB, or its length not
/// a multiple of 16).
unsafe fn read_blob(api: &Api, v: *mut Val, into: &mut Vec<(i64, i64)>) -> bool {
    unsafe {
        match (api.value_type)(v) {
            SQLITE_NULL => return true,
            SQLITE_BLOB => {}
            _ => return false,
        }
        let p = (api.value_blob)(v) as *const u8;
        let len = (api.value_bytes)(v) as usize;
        if !len.is_multiple_of(16) {
            return false;
        }
        if len == 0 {
            return true;
        }
        let bytes = std::slice::from_raw_parts(p, len);
        into.extend(bytes.chunks_exact(16).map(|c| {
            (
                i64::from_le_bytes(c[..8].try_into().expect("8 bytes")),
                i64::from_le_bytes(c[8..].try_into().expect("8 bytes")),
            )
        }));
        true
    }
}

unsafe fn result(api: &Api, ctx: *mut Ctx, pairs: Vec<(i64, i64)>) {
    unsafe {
        let Some(pairs) = normalize(pairs) else {
            (api.result_error)(ctx, c"bins: a bin's count overflows 64 bits".as_ptr(), -1);
            return;
        };
        if pairs.is_empty() {
            (api.result_null)(ctx);
            return;
        }
        let mut out = Vec::with_capacity(pairs.len() * 16);
        for (b, n) in pairs {
            out.extend_from_slice(&b.to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
        }
        (api.result_blob64)(ctx, out.as_ptr() as *const c_void, out.len() as u64, -1); // SQLITE_TRANSIENT
    }
}

unsafe fn bad_blob(api: &Api, ctx: *mut Ctx) {
    unsafe {
        (api.result_error)(
            ctx,
            c"bins: not a sketch-bins blob (16-byte pairs)".as_ptr(),
            -1,
        )
    }
}

unsafe fn bad_integer(api: &Api, ctx: *mut Ctx) {
    unsafe { (api.result_error)(ctx, c"bins_pack: bin and n must be integers".as_ptr(), -1) }
}

/// The aggregate's pairs so far, made at its first step (None: SQLite is out of memory).
unsafe fn state(api: &Api, ctx: *mut Ctx) -> Option<&'static mut Vec<(i64, i64)>> {
    unsafe {
        let size = std::mem::size_of::<*mut Vec<(i64, i64)>>() as c_int;
        let slot = (api.aggregate_context)(ctx, size) as *mut *mut Vec<(i64, i64)>;
        if slot.is_null() {
            return None;
        }
        if (*slot).is_null() {
            *slot = Box::into_raw(Box::new(Vec::new()));
        }
        Some(&mut **slot)
    }
}

unsafe fn take_state(api: &Api, ctx: *mut Ctx) -> Vec<(i64, i64)> {
    unsafe {
        let slot = (api.aggregate_context)(ctx, 0) as *mut *mut Vec<(i64, i64)>;
        if slot.is_null() || (*slot).is_null() {
            return Vec::new();
        }
        let boxed = Box::from_raw(*slot);
        *slot = std::ptr::null_mut();
        *boxed
    }
}

unsafe extern "C" fn pack_step(ctx: *mut Ctx, _n: c_int, argv: *mut *mut Val) {
    let api = loaded();
    unsafe {
        let (b, n) = (*argv, *argv.add(1));
        if (api.value_type)(b) == SQLITE_NULL || (api.value_type)(n) == SQLITE_NULL {
            return;
        }
        let (Some(bin), Some(count)) = (integer(api, b), integer(api, n)) else {
            bad_integer(api, ctx);
            return;
        };
        if count == 0 {
            return;
        }
        if let Some(pairs) = state(api, ctx) {
            pairs.push((bin, count));
        }
    }
}

/// bins_one(bin, n): the blob of one pair (NULL when either is NULL or n is 0), a scalar
/// for rows that take one fact each (merged into their rows by bins_merge).
unsafe extern "C" fn one(ctx: *mut Ctx, _n: c_int, argv: *mut *mut Val) {
    let api = loaded();
    unsafe {
        let (b, n) = (*argv, *argv.add(1));
        if (api.value_type)(b) == SQLITE_NULL || (api.value_type)(n) == SQLITE_NULL {
            (api.result_null)(ctx);
            return;
        }
        let (Some(bin), Some(count)) = (integer(api, b), integer(api, n)) else {
            bad_integer(api, ctx);
            return;
        };
        result(api, ctx, vec![(bin, count)]);
    }
}

unsafe extern "C" fn union_step(ctx: *mut Ctx, _n: c_int, argv: *mut *mut Val) {
    let api = loaded();
    unsafe {
        let v = *argv;
        if (api.value_type)(v) == SQLITE_NULL {
            return;
        }
        if let Some(pairs) = state(api, ctx)
            && !read_blob(api, v, pairs)
        {
            bad_blob(api, ctx);
        }
    }
}

unsafe extern "C" fn finish(ctx: *mut Ctx) {
    let api = loaded();
    unsafe {
        let pairs = take_state(api, ctx);
        result(api, ctx, pairs);
    }
}

unsafe extern "C" fn merge(ctx: *mut Ctx, _n: c_int, argv: *mut *mut Val) {
    let api = loaded();
    let mut pairs = Vec::new();
    unsafe {
        if !read_blob(api, *argv, &mut pairs) || !read_blob(api, *argv.add(1), &mut pairs) {
            bad_blob(api, ctx);
            return;
        }
        result(api, ctx, pairs);
    }
}

/// Registers bins_pack, bins_one, bins_union, bins_merge and the packed_rows table on a
/// connection (SQLite's `sqlite3 *`, as SQLite hands it to an auto extension).
unsafe fn register_on(api: &Api, db: *mut c_void) -> Result<(), String> {
    let flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC;
    let funcs: [SqlFunction; 4] = [
        (c"bins_pack", 2, None, Some(pack_step), Some(finish)),
        (c"bins_one", 2, Some(one), None, None),
        (c"bins_union", 1, None, Some(union_step), Some(finish)),
        (c"bins_merge", 2, Some(merge), None, None),
    ];
    for (name, args, func, step, fin) in funcs {
        let rc = unsafe {
            (api.create_function_v2)(
                db,
                name.as_ptr(),
                args,
                flags,
                std::ptr::null_mut(),
                func,
                step,
                fin,
                None,
            )
        };
        if rc != SQLITE_OK {
            return Err(format!(
                "sqlite3_create_function_v2({}) failed: {rc}",
                name.to_string_lossy()
            ));
        }
    }
    let rc = unsafe {
        (api.create_module_v2)(
            db,
            c"packed_rows".as_ptr(),
            &packed_rows::MODULE,
            std::ptr::null_mut(),
            None,
        )
    };
    if rc != SQLITE_OK {
        return Err(format!(
            "sqlite3_create_module_v2(packed_rows) failed: {rc}"
        ));
    }
    Ok(())
}

/// The entry point SQLite calls for each new connection (`sqlite3_auto_extension`'s
/// documented signature: the connection, where to put an error message, the API routines).
unsafe extern "C" fn entry(db: *mut c_void, _err: *mut *mut c_char, _api: *const c_void) -> c_int {
    match API.get().and_then(|a| a.as_ref().ok()) {
        Some(api) => match unsafe { register_on(api, db) } {
            Ok(()) => SQLITE_OK,
            Err(_) => 1, // SQLITE_ERROR: the connection opens, without the functions
        },
        None => SQLITE_OK,
    }
}

static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();

/// Makes SQLite (the copy Python's `_sqlite3` at `module` uses) register the functions on
/// every connection opened from now on in this process. Idempotent.
#[pyfunction]
pub fn install_sqlite_auto_extension(module: &str) -> PyResult<()> {
    INSTALLED
        .get_or_init(|| {
            let api = load(module)?;
            type Entry =
                unsafe extern "C" fn(*mut c_void, *mut *mut c_char, *const c_void) -> c_int;
            let point = unsafe { std::mem::transmute::<Entry, unsafe extern "C" fn()>(entry) };
            let rc = unsafe { (api.auto_extension)(Some(point)) };
            if rc == SQLITE_OK {
                Ok(())
            } else {
                Err(format!("sqlite3_auto_extension failed: {rc}"))
            }
        })
        .clone()
        .map_err(PyRuntimeError::new_err)
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn normalize_sorts_sums_and_drops_zeros() {
        let pairs = vec![(5, 1), (-3, 2), (5, 4), (9, 1), (9, -1), (-3, -2), (0, 7)];
        assert_eq!(normalize(pairs), Some(vec![(0, 7), (5, 5)]));
        assert_eq!(normalize(vec![]), Some(vec![]));
    }

    #[test]
    fn normalize_refuses_a_sum_beyond_64_bits() {
        assert_eq!(normalize(vec![(1, i64::MAX), (1, 1)]), None);
        assert_eq!(
            normalize(vec![(1, i64::MAX), (1, -1)]),
            Some(vec![(1, i64::MAX - 1)])
        );
    }
}
