//! The compiled twin of consumer/store/rollup.py: a commit's facts (`Facts`: the
//! compiled fold's own, or tuples packed by `pack_rows` and decoded by `unpack_facts`),
//! rolled up into metric rows, packed for `packed_rows` (crate::packed_rows) or as
//! PostgreSQL's binary COPY tuples, without the GIL. The plan (which rows, which values)
//! comes from the registry through consumer/store/rollup_plan.py; the Python module's
//! docstring has the contract, and
//! tests/unit/consumer/test_rollup.py holds the two equal.

use foldhash::{HashMap, HashMapExt};
use pyo3::exceptions::{PyIndexError, PyOverflowError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};
use std::hash::BuildHasher as _;

use crate::packed_rows::{
    Cell, MAX_COLUMNS, TAG_BLOB, TAG_INT, TAG_NULL, TAG_TEXT, TAG_ZERO, read_row,
};

// consumer.store.rollup.Op
const ZERO: u8 = 0;
const NULL: u8 = 1;
const SUM: u8 = 2;
const SUM_PRODUCT: u8 = 3;
const MIN: u8 = 4;
const MAX: u8 = 5;
const BUCKET: u8 = 6;

/// (op, a, b, lo, hi) of a value column
type Column = (u8, usize, usize, Option<i64>, Option<i64>);
/// (by, win, size, key positions, present positions, columns, (sign, bin, bin_base) of the
/// distributions, key positions whose missing value is empty text)
type Target = (
    String,
    String,
    i64,
    Vec<usize>,
    Vec<usize>,
    Vec<Column>,
    Vec<(usize, usize, i64)>,
    Vec<usize>,
);

enum Fail {
    Value(String),
    Overflow,
}

/// Every row of one target in one flat vector, a record of `HEADER + width` integers each
/// (its header beside its values: one place in memory per row touched): [start, null bits
/// (bit c: value c is NULL), key offset, key length, values...]; the keys' texts in `keys`.
struct Rows {
    data: Vec<i64>,
    keys: Vec<u8>,
    width: usize,
}

const HEADER: usize = 4;

impl Rows {
    fn len(&self) -> usize {
        self.data.len() / (HEADER + self.width)
    }

    fn record(&self, i: usize) -> &[i64] {
        let stride = HEADER + self.width;
        &self.data[i * stride..(i + 1) * stride]
    }

    fn key(&self, record: &[i64]) -> &[u8] {
        &self.keys[record[2] as usize..(record[2] + record[3]) as usize]
    }
}

/// A commit's facts decoded once (`unpack_facts`) for the rollups of all its targets: a
/// cell per field of each fact, its integer (a text: its index in `texts`; NULL and a blob:
/// 0) in `ints` and its kind in `kinds`. Decoding the packed facts again for each of the
/// full metric set's 17 targets was ~40% of the rollup.
#[pyclass(module = "consumer.fold._fold_native", frozen, sequence)]
pub struct Facts {
    width: usize,
    ints: Vec<i64>,
    kinds: Vec<u8>,
    /// the facts' texts (dimension values: a few channel types), each once
    texts: Vec<Box<str>>,
}

pub(crate) const K_NULL: u8 = 0;
pub(crate) const K_INT: u8 = 1;
pub(crate) const K_TEXT: u8 = 2;
const K_BLOB: u8 = 3;

impl Facts {
    /// Facts made by the compiled fold (`PartitionFold.take_changes`): `kinds` and `ints`
    /// hold `width` cells per fact, a text cell the index of its text in `texts`.
    pub(crate) fn new(width: usize, ints: Vec<i64>, kinds: Vec<u8>, texts: Vec<Box<str>>) -> Self {
        debug_assert!(width > 0 && kinds.len() == ints.len() && kinds.len().is_multiple_of(width));
        Facts {
            width,
            ints,
            kinds,
            texts,
        }
    }

    fn len(&self) -> usize {
        self.kinds.len() / self.width
    }
}

/// A read-only sequence of the facts as tuples (`consumer.fold.delta.Fact`), for the stores
/// that read them one by one (PostgreSQL stages them) and for tests: indexes and iteration,
/// no slices, no pickling.
#[pymethods]
impl Facts {
    /// the fields of a fact
    #[getter]
    fn width(&self) -> usize {
        self.width
    }

    fn __len__(&self) -> usize {
        self.len()
    }

    fn __getitem__<'py>(&self, py: Python<'py>, index: isize) -> PyResult<Bound<'py, PyTuple>> {
        let n = self.len() as isize;
        let i = if index < 0 { index + n } else { index };
        if !(0..n).contains(&i) {
            return Err(PyIndexError::new_err("fact index out of range"));
        }
        let cells = i as usize * self.width..(i as usize + 1) * self.width;
        let mut items: Vec<Bound<'py, PyAny>> = Vec::with_capacity(self.width);
        for c in cells {
            items.push(match self.kinds[c] {
                K_NULL => py.None().into_bound(py),
                K_INT => self.ints[c].into_pyobject(py)?.into_any(),
                K_TEXT => PyString::new(py, &self.texts[self.ints[c] as usize]).into_any(),
                _ => return Err(PyValueError::new_err("a fact holds a blob")),
            });
        }
        PyTuple::new(py, items)
    }
}

/// The packed `facts` (`pack_rows`: `count` of them, `width` fields each), decoded.
#[pyfunction]
pub fn unpack_facts<'py>(
    py: Python<'py>,
    facts: &Bound<'py, PyBytes>,
    count: usize,
    width: usize,
) -> PyResult<Facts> {
    let data = facts.as_bytes();
    py.detach(|| decode(data, count, width)).map_err(to_py)
}

/// The rows of some `Facts` (partitions' facts, of one width; the event time at field
/// `t`) in one `target` of a plan (a grouping and window): a `pack_rows` blob of (by, win,
/// start, key, *values, bins) rows, sorted by key.
#[pyfunction]
pub fn rollup_rows<'py>(
    py: Python<'py>,
    facts: Vec<Bound<'py, Facts>>,
    t: usize,
    target: Target,
) -> PyResult<Bound<'py, PyBytes>> {
    rolled(py, facts, t, target, Format::Packed)
}

/// The rows of some `Facts` in one `target`, as `rollup_rows` makes them, in PostgreSQL's
/// binary COPY format (tuples only: the caller writes the signature and the trailer, so
/// that several targets' and partitions' tuples go in one COPY), as rows of one
/// partition's commit: (by, win, start, key, partition, *values, seq, bin_ids, bin_ns),
/// the bins two int8 arrays (NULL when none are left).
#[pyfunction]
pub fn rollup_copy<'py>(
    py: Python<'py>,
    facts: Vec<Bound<'py, Facts>>,
    t: usize,
    target: Target,
    partition: i32,
    seq: i64,
) -> PyResult<Bound<'py, PyBytes>> {
    rolled(py, facts, t, target, Format::Copy { partition, seq })
}

/// The rollup of `facts` in `target`, written in `format`, without the GIL.
fn rolled<'py>(
    py: Python<'py>,
    facts: Vec<Bound<'py, Facts>>,
    t: usize,
    target: Target,
    format: Format,
) -> PyResult<Bound<'py, PyBytes>> {
    let facts: Vec<&Facts> = facts.iter().map(|f| f.get()).collect();
    match py.detach(|| rollup(&facts, t, &target, format)) {
        Ok(rows) => Ok(PyBytes::new(py, &rows)),
        Err(fail) => Err(to_py(fail)),
    }
}

/// How the rows are written: packed for `packed_rows` (bins as a blob in the row), or as
/// PostgreSQL's binary COPY tuples of a partition's commit (bins as two arrays in the row).
#[derive(Clone, Copy)]
enum Format {
    Packed,
    Copy { partition: i32, seq: i64 },
}

fn to_py(fail: Fail) -> PyErr {
    match fail {
        Fail::Value(msg) => PyValueError::new_err(msg),
        Fail::Overflow => {
            PyOverflowError::new_err("rollup: a metric row's value overflows 64 bits")
        }
    }
}

fn decode(data: &[u8], count: usize, width: usize) -> Result<Facts, Fail> {
    let columns = data
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
    if columns != Some(width) || !(1..=MAX_COLUMNS).contains(&width) {
        return Err(Fail::Value(format!(
            "unpack_facts: facts of {width} fields expected"
        )));
    }
    // `count` is a hint: `data` holds at most one fact per byte and field
    let cells_hint = count.min(data.len() / width) * width;
    let mut ints = Vec::with_capacity(cells_hint);
    let mut kinds = Vec::with_capacity(cells_hint);
    let mut texts: Vec<Box<str>> = Vec::new();
    let mut known: HashMap<&[u8], i64> = HashMap::new();
    let mut cells = vec![Cell::Null; width];
    let mut pos = 4;
    while pos < data.len() {
        pos = read_row(data, pos, &mut cells)
            .ok_or_else(|| Fail::Value("unpack_facts: malformed facts".into()))?;
        for cell in &cells {
            let (kind, v) = match *cell {
                Cell::Null => (K_NULL, 0),
                Cell::Int(n) => (K_INT, n),
                Cell::Text(s, len) => {
                    let bytes = &data[s..s + len];
                    let at = *known.entry(bytes).or_insert_with(|| {
                        let text = std::str::from_utf8(bytes).expect("read_row checked UTF-8");
                        texts.push(text.into());
                        (texts.len() - 1) as i64
                    });
                    (K_TEXT, at)
                }
                Cell::Blob(..) => (K_BLOB, 0),
            };
            kinds.push(kind);
            ints.push(v);
        }
    }
    Ok(Facts {
        width,
        ints,
        kinds,
        texts,
    })
}

fn check(width: usize, t: usize, target: &Target) -> Result<(), Fail> {
    if t >= width {
        return Err(Fail::Value(format!(
            "rollup: facts of {width} fields have no time at {t}"
        )));
    }
    let (_, _, _, key, present, cols, dists, may_miss) = target;
    if cols.iter().any(|c| c.0 > BUCKET) {
        return Err(Fail::Value(
            "rollup: a plan with an unknown operation".into(),
        ));
    }
    let mut fields = key
        .iter()
        .chain(present)
        .chain(may_miss)
        .copied()
        .chain(cols.iter().flat_map(|c| [c.1, c.2]))
        .chain(dists.iter().flat_map(|d| [d.0, d.1]));
    if fields.any(|i| i >= width) || 5 + cols.len() > MAX_COLUMNS {
        return Err(Fail::Value(
            "rollup: a plan beyond the facts' fields".into(),
        ));
    }
    Ok(())
}

fn rollup(facts: &[&Facts], t: usize, target: &Target, format: Format) -> Result<Vec<u8>, Fail> {
    let Some(width) = facts.first().map(|f| f.width) else {
        let none = Rows {
            data: Vec::new(),
            keys: Vec::new(),
            width: target.5.len(),
        };
        return write_rows(none, Vec::new(), target, format); // no facts, no rows
    };
    if facts.iter().any(|f| f.width != width) {
        return Err(Fail::Value("rollup: facts of different widths".into()));
    }
    check(width, t, target)?;
    let (_, _, size, key_at, present, cols, dists, may_miss) = target;
    let columns = cols.len();
    // the value columns each fact field drives (the `a` of their op): a fact's zero or
    // NULL fields add nothing, and a fact has a few non-zero ones
    let mut driven: Vec<Vec<(usize, Column)>> = vec![Vec::new(); width];
    for (c, col) in cols.iter().enumerate() {
        if !matches!(col.0, ZERO | NULL) {
            driven[col.1].push((c, *col));
        }
    }
    let drivers: Vec<usize> = (0..width).filter(|&f| !driven[f].is_empty()).collect();
    // the fields read as integers (NULL or an integer; a text or blob there is refused)
    let mut numeric = vec![false; width];
    numeric[t] = true;
    for c in cols.iter().filter(|c| !matches!(c.0, ZERO | NULL)) {
        numeric[c.1] = true;
        numeric[c.2] |= c.0 != SUM;
    }
    for d in dists {
        numeric[d.0] = true;
        numeric[d.1] = true;
    }
    let numeric: Vec<usize> = (0..width).filter(|&f| numeric[f]).collect();
    let fresh_nulls: u64 = cols
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c.0, NULL | MIN | MAX))
        .fold(0, |m, (i, _)| m | 1 << i);
    let mut active: Vec<usize> = Vec::with_capacity(width);
    let count: usize = facts.iter().map(|f| f.len()).sum();
    let stride = HEADER + columns;
    let mut rows = Rows {
        // room for a row per fact, reserved, not touched (no copy as it grows)
        data: Vec::with_capacity(count * stride),
        keys: Vec::new(),
        width: columns,
    };
    // a row by the hash of (start, key); the rare key whose hash another row holds is
    // found by its bytes in `collided`
    let hasher = foldhash::fast::FixedState::with_seed(0x5eed);
    let mut by_hash: HashMap<u64, usize> = HashMap::new();
    let mut collided: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut bins: Vec<(usize, i64, i64)> = Vec::new(); // (row, bin, n)
    let mut key = String::new();
    let mut lookup: Vec<u8> = Vec::new();
    for (facts, f) in facts
        .iter()
        .flat_map(|&fs| (0..fs.len()).map(move |f| (fs, f)))
    {
        let kinds = &facts.kinds[f * width..(f + 1) * width];
        let ints = &facts.ints[f * width..(f + 1) * width];
        if present.iter().any(|&i| kinds[i] == K_NULL) {
            continue;
        }
        if let Some(&i) = numeric.iter().find(|&&i| kinds[i] > K_INT) {
            return Err(Fail::Value(format!(
                "rollup: a fact's field {i} is not an integer"
            )));
        }
        let int = |i: usize| (kinds[i] == K_INT).then_some(ints[i]);
        let time = int(t).ok_or_else(|| Fail::Value("rollup: a fact without a time".into()))?;
        let start = if *size > 0 {
            time.checked_sub(time.rem_euclid(*size))
                .ok_or(Fail::Overflow)?
        } else {
            0
        };
        key.clear();
        for (j, &i) in key_at.iter().enumerate() {
            if j > 0 {
                key.push('|');
            }
            match kinds[i] {
                K_INT => {
                    use std::fmt::Write as _;
                    write!(key, "{}", ints[i]).expect("a String takes any write");
                }
                K_TEXT => key.push_str(&facts.texts[ints[i] as usize]),
                // a source's missing inbox or app: empty text
                K_NULL if may_miss.contains(&i) => {}
                K_NULL => {
                    return Err(Fail::Value(format!(
                        "rollup: a fact without its key field {i}"
                    )));
                }
                _ => {
                    return Err(Fail::Value(format!("rollup: a fact's field {i} is a blob")));
                }
            }
        }
        lookup.clear();
        lookup.extend_from_slice(&start.to_le_bytes());
        lookup.extend_from_slice(key.as_bytes());
        let h = hasher.hash_one(lookup.as_slice());
        let same = |rows: &Rows, at: usize| {
            let r = rows.record(at);
            r[0] == start && rows.key(r) == key.as_bytes()
        };
        let found = match by_hash.get(&h) {
            Some(&at) if same(&rows, at) => Some(at),
            Some(_) => collided.get(lookup.as_slice()).copied(),
            None => None,
        };
        let at = match found {
            Some(at) => at,
            None => {
                let at = rows.len();
                let header = [
                    start,
                    fresh_nulls as i64,
                    rows.keys.len() as i64,
                    key.len() as i64,
                ];
                rows.data.extend_from_slice(&header);
                rows.data.resize(rows.data.len() + columns, 0);
                rows.keys.extend_from_slice(key.as_bytes());
                match by_hash.entry(h) {
                    std::collections::hash_map::Entry::Occupied(_) => {
                        collided.insert(lookup.clone(), at);
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(at);
                    }
                }
                at
            }
        };
        let (header, values) = rows.data[at * stride..(at + 1) * stride].split_at_mut(HEADER);
        let mut nulls = header[1] as u64;
        // the fields that drive a value with something to add
        active.clear();
        active.extend(drivers.iter().filter(|&&f| int(f).is_some_and(|n| n != 0)));
        for &f in &active {
            let n = ints[f];
            for &(c, (op, _, b, lo, hi)) in &driven[f] {
                let v = &mut values[c];
                match op {
                    SUM => *v = v.checked_add(n).ok_or(Fail::Overflow)?,
                    SUM_PRODUCT => {
                        if let Some(x) = int(b) {
                            let p = n.checked_mul(x).ok_or(Fail::Overflow)?;
                            *v = v.checked_add(p).ok_or(Fail::Overflow)?;
                        }
                    }
                    MIN | MAX => {
                        if let (true, Some(x)) = (n > 0, int(b)) {
                            let bit = 1u64 << c;
                            *v = if nulls & bit != 0 {
                                x
                            } else if op == MIN {
                                (*v).min(x)
                            } else {
                                (*v).max(x)
                            };
                            nulls &= !bit;
                        }
                    }
                    _ => {
                        // BUCKET
                        if let Some(x) = int(b)
                            && lo.is_none_or(|lo| x > lo)
                            && hi.is_none_or(|hi| x <= hi)
                        {
                            *v = v.checked_add(n).ok_or(Fail::Overflow)?;
                        }
                    }
                }
            }
        }
        header[1] = nulls as i64;
        for &(n, b, base) in dists {
            if let Some(n) = int(n).filter(|&n| n != 0) {
                let bin =
                    int(b).ok_or_else(|| Fail::Value("rollup: a value without a bin".into()))?;
                bins.push((at, bin.checked_add(base).ok_or(Fail::Overflow)?, n));
                break;
            }
        }
    }
    drop(by_hash);
    drop(collided);
    write_rows(rows, bins, target, format)
}

/// The rows in key order, each with its bins (sorted by bin, equal bins summed, zero
/// counts dropped, as consumer.store.rollup.normalize), in `format`: packed (the bins a
/// blob in the row), or COPY tuples (the bins two arrays); NULL when none are left.
fn write_rows(
    rows: Rows,
    mut bins: Vec<(usize, i64, i64)>,
    target: &Target,
    format: Format,
) -> Result<Vec<u8>, Fail> {
    let width = rows.width;
    let n = rows.len();
    // sorted by (start, the key's first 8 bytes, zero-padded), the whole key breaking ties:
    // the comparisons read this vector, not the rows
    let mut order: Vec<(i64, u64, usize)> = (0..n)
        .map(|i| {
            let r = rows.record(i);
            let mut prefix = [0u8; 8];
            let key = rows.key(r);
            let m = key.len().min(8);
            prefix[..m].copy_from_slice(&key[..m]);
            (r[0], u64::from_be_bytes(prefix), i)
        })
        .collect();
    order.sort_unstable_by(|a, b| {
        (a.0, a.1)
            .cmp(&(b.0, b.1))
            .then_with(|| rows.key(rows.record(a.2)).cmp(rows.key(rows.record(b.2))))
    });
    // the bins by their row's place in that order, so that they are read front to back
    let mut place = vec![0usize; n];
    for (p, o) in order.iter().enumerate() {
        place[o.2] = p;
    }
    for bin in bins.iter_mut() {
        bin.0 = place[bin.0];
    }
    drop(place);
    bins.sort_unstable();
    let mut next_bin = 0;
    let mut out = Vec::with_capacity(4 + n * (width * 9 + 64));
    if let Format::Packed = format {
        out.extend_from_slice(&((5 + width) as u32).to_le_bytes());
    }
    let mut pairs: Vec<(i64, i64)> = Vec::new();
    for (p, (_, _, i)) in order.into_iter().enumerate() {
        let r = rows.record(i);
        pairs.clear();
        let first = next_bin;
        while next_bin < bins.len() && bins[next_bin].0 == p {
            next_bin += 1;
        }
        for &(_, b, n) in &bins[first..next_bin] {
            match pairs.last_mut() {
                Some((pb, pn)) if *pb == b => *pn = pn.checked_add(n).ok_or(Fail::Overflow)?,
                _ => pairs.push((b, n)),
            }
        }
        pairs.retain(|&(_, n)| n != 0);
        let nulls = r[1] as u64;
        let values = r[HEADER..]
            .iter()
            .enumerate()
            .map(|(c, &v)| (nulls & (1 << c) == 0).then_some(v));
        match format {
            Format::Packed => {
                text(&mut out, TAG_TEXT, target.0.as_bytes());
                text(&mut out, TAG_TEXT, target.1.as_bytes());
                integer(&mut out, Some(r[0]));
                text(&mut out, TAG_TEXT, rows.key(r));
                for v in values {
                    integer(&mut out, v);
                }
                if pairs.is_empty() {
                    out.push(TAG_NULL);
                } else {
                    out.push(TAG_BLOB);
                    out.extend_from_slice(&((pairs.len() * 16) as u32).to_le_bytes());
                    for &(b, n) in &pairs {
                        out.extend_from_slice(&b.to_le_bytes());
                        out.extend_from_slice(&n.to_le_bytes());
                    }
                }
            }
            Format::Copy { partition, seq } => {
                out.extend_from_slice(&((8 + width) as i16).to_be_bytes());
                copy_field(&mut out, target.0.as_bytes());
                copy_field(&mut out, target.1.as_bytes());
                copy_field(&mut out, &r[0].to_be_bytes());
                copy_field(&mut out, rows.key(r));
                copy_field(&mut out, &partition.to_be_bytes());
                for v in values {
                    match v {
                        Some(v) => copy_field(&mut out, &v.to_be_bytes()),
                        None => out.extend_from_slice(&COPY_NULL),
                    }
                }
                copy_field(&mut out, &seq.to_be_bytes());
                copy_array(&mut out, pairs.iter().map(|p| p.0), pairs.len());
                copy_array(&mut out, pairs.iter().map(|p| p.1), pairs.len());
            }
        }
    }
    Ok(out)
}

/// A NULL field of a binary COPY tuple (its length -1).
const COPY_NULL: [u8; 4] = (-1i32).to_be_bytes();
/// The type of an int8 array's elements (`int8`'s oid)
const INT8_OID: i32 = 20;

/// A non-NULL field of a binary COPY tuple: its length, then its bytes (an integer's big-endian).
fn copy_field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// An int8[] field of a binary COPY tuple (`array_send`'s format: dimensions, no NULLs, the
/// element type, the length and lower bound 1, each element with its length), NULL when empty.
fn copy_array(out: &mut Vec<u8>, items: impl Iterator<Item = i64>, len: usize) {
    if len == 0 {
        out.extend_from_slice(&COPY_NULL);
        return;
    }
    out.extend_from_slice(&((20 + 12 * len) as i32).to_be_bytes());
    for word in [1, 0, INT8_OID, len as i32, 1] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    for v in items {
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&v.to_be_bytes());
    }
}

fn text(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn integer(out: &mut Vec<u8>, v: Option<i64>) {
    match v {
        None => out.push(TAG_NULL),
        Some(0) => out.push(TAG_ZERO), // most of a row's values: 1 byte, not 9
        Some(n) => {
            out.push(TAG_INT);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}
