//! The consumer's fold, compiled: `consumer/fold.py` is the reference and the contract.
//!
//! Same semantics, same state format (a conversation is the JSON text
//! `[last_time, starts, closures, seen]`, snapshots are `[[key, text], ...]`), same
//! `Delta` handed to the stores, so either implementation reads what the other wrote.
//! What differs is where the work happens: the records' fields are read straight from the
//! decoded dicts, the event id digest, the dedupe lookup, the bisection and the facts are
//! native, and a slice of a consumed batch is folded by one call (`apply_batch`). In memory, the
//! idle conversations are kept in a compact binary form (`compact`),
//! turned into that JSON text wherever they leave the fold.
//! `tests/unit/consumer/test_fold_native.py` holds both implementations equal.

use foldhash::{HashMap, HashMapExt};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::collections::hash_map::Entry;
use std::io::Write as _;
use std::sync::OnceLock;

use pyo3::exceptions::{PyOverflowError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use serde::{Deserialize, Serialize};

const CREATED: u8 = 0;
const OPENED: u8 = 1;
const CLOSED: u8 = 2;
const SNOOZED: u8 = 3;
const ASSIGNED: u8 = 4;
const KINDS: usize = 5;
/// data.<verb>At of each kind, by kind (consumer.fold.model.TIME_FIELDS)
const TIME_FIELDS: [&str; KINDS] = [
    "createdAt",
    "openedAt",
    "closedAt",
    "snoozedAt",
    "assignedAt",
];

const A_LIMIT: i64 = 1 << 31;
const C_LIMIT: i64 = 1 << 32;

/// What `configure` is given once by consumer/fold_native.py: the sketch mapping's
/// constants (so bins are the Python arithmetic's, bit for bit), the Delta and Changes classes.
struct Config {
    multiplier: f64,
    offset: f64,
    zero_bin: i64,
    lag_base: i64,
    delta_class: Py<PyAny>,
    changes_class: Py<PyAny>,
}

/// A counter of the registry that counts events by declaration (`Metric.counts`, `when`):
/// events of these kinds for which these conditions (bits of `UNREAD`, `WINDOW_EXPIRED`)
/// all hold. A fold is given its registry's counters in fact order.
#[derive(Clone, Copy, PartialEq)]
struct Counter {
    kinds: u8, // a bit per event kind
    when: u8,
}

/// The conditions a counter may put on the events it counts (consumer.fold.registry.CONDITIONS).
const UNREAD: u8 = 1;
const WINDOW_EXPIRED: u8 = 2;
/// Counters a fact can carry.
const MAX_COUNTERS: usize = 16;
/// The dimensions a fact carries, in order, and its distributions' columns
/// (consumer.fold.facts.FOLD_DIMENSIONS; consumer/fold/native.py checks the registry's
/// fact layout against them and the counters `configure` was given).
const DIMENSIONS: [&str; 4] = ["channel_type", "account", "inbox", "app"];
const DISTRIBUTIONS: [&str; 2] = ["ttc", "ttfa"];

static CONFIG: OnceLock<Config> = OnceLock::new();

fn config() -> PyResult<&'static Config> {
    CONFIG.get().ok_or_else(|| {
        PyRuntimeError::new_err("consumer.fold._fold_native used before configure()")
    })
}

/// consumer.fold.sketch.bin_of: `int(ceil(log(seconds, 2) * multiplier) + offset)`; 0 s and
/// less in the zero bin. CPython's log(x, 2) is log(x) / log(2), both from the C library.
fn bin_of(cfg: &Config, seconds: i64) -> i64 {
    if seconds <= 0 {
        return cfg.zero_bin;
    }
    let l = (seconds as f64).ln() / 2f64.ln();
    ((l * cfg.multiplier).ceil() + cfg.offset) as i64
}

fn floor_to(t: i64, size: i64) -> PyResult<i64> {
    t.checked_sub(t.rem_euclid(size)).ok_or_else(overflow)
}

struct Closure {
    hash: i64,
    closed: i64,
    ch: u32,
    start: Option<i64>,
    inbox: Option<i64>,
    app: Option<i64>,
}

/// A conversation's first close: `[closed, event id, hash]`; an id of null: a state stored
/// before first_closes, whose first close was never counted (consumer.fold.reference).
#[derive(Deserialize, Serialize, Clone)]
struct First(i64, Option<String>, i64);

/// An assignment that is or may become the conversation's first.
#[derive(Clone)]
struct Assign {
    t: i64,
    id: String,
    ch: u32,
    inbox: Option<i64>,
    app: Option<i64>,
}

#[derive(Deserialize)]
struct AssignIn(i64, String, String, Option<i64>, Option<i64>);

/// A conversation's latest event (the gauges' state): `[time, event id, kind, channel
/// type, inbox, app]` (consumer.fold.reference).
#[derive(Clone)]
struct Latest {
    t: i64,
    id: String,
    kind: u8,
    ch: u32,
    inbox: Option<i64>,
    app: Option<i64>,
}

#[derive(Deserialize)]
struct LatestIn(i64, String, u8, String, Option<i64>, Option<i64>);

/// (channel type, account, inbox, app): where a conversation counts in the gauges
type GaugeKey = (u32, i64, Option<i64>, Option<i64>);

#[derive(Default)]
struct Conv {
    last: i64,
    starts: Vec<i64>,
    closures: Vec<Closure>,
    seen: Vec<i64>,
    /// the state carries `first`, `created` and `assigns` (a fold of first_closes or time
    /// to first assignment keeps them; a state of the closures set has none)
    firsts: bool,
    first: Option<First>,
    created: Option<i64>,
    assigns: Vec<Assign>,
    /// the state carries `latest` (a fold of the gauges keeps it)
    gauges: bool,
    latest: Option<Latest>,
}

impl Conv {
    /// The index of the assignment time to first assignment counts: the earliest at or
    /// after the created time (consumer.fold.state.first_assignment).
    fn first_assignment(&self) -> Option<usize> {
        let created = self.created?;
        self.assigns.iter().position(|a| a.t >= created)
    }

    /// Where the conversation counts in the gauges and what it counts there (open,
    /// unassigned, snoozed): consumer.fold.state.gauges_of.
    fn gauges_of(&self, account: i64) -> Option<(GaugeKey, [i64; 3])> {
        let l = self.latest.as_ref()?;
        let counted = match l.kind {
            CREATED | OPENED | ASSIGNED => [1, i64::from(self.assigns.is_empty()), 0],
            SNOOZED => [0, 0, 1],
            _ => return None,
        };
        Some(((l.ch, account, l.inbox, l.app), counted))
    }
}

/// Adds (sign 1) or takes back (-1) one conversation's gauges at a key.
fn add_gauges(pending: &mut Pending, g: Option<(GaugeKey, [i64; 3])>, sign: i64) {
    if let Some((key, values)) = g {
        let e = pending.gauges.entry(key).or_insert([0; 3]);
        for i in 0..3 {
            e[i] += sign * values[i];
        }
    }
}

/// A stored conversation: `[last, starts, closures, seen]`, or with `first, created,
/// assigns` after them.
struct ConvIn(
    i64,
    Vec<i64>,
    Vec<ClosureIn>,
    Vec<i64>,
    Option<(Option<First>, Option<i64>, Vec<AssignIn>)>,
    Option<Option<LatestIn>>,
);

impl<'de> Deserialize<'de> for ConvIn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = ConvIn;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a conversation: [last, starts, closures, seen(, first, created, assigns(, latest))]",
                )
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ConvIn, A::Error> {
                use serde::de::Error;
                let missing = |i| A::Error::invalid_length(i, &self);
                let last = seq.next_element()?.ok_or_else(|| missing(0))?;
                let starts = seq.next_element()?.ok_or_else(|| missing(1))?;
                let closures = seq.next_element()?.ok_or_else(|| missing(2))?;
                let seen = seq.next_element()?.ok_or_else(|| missing(3))?;
                let firsts = match seq.next_element::<Option<First>>()? {
                    None => None,
                    Some(first) => {
                        let created = seq.next_element()?.ok_or_else(|| missing(5))?;
                        let assigns = seq.next_element()?.ok_or_else(|| missing(6))?;
                        Some((first, created, assigns))
                    }
                };
                let latest = if firsts.is_some() {
                    seq.next_element::<Option<LatestIn>>()?
                } else {
                    None
                };
                Ok(ConvIn(last, starts, closures, seen, firsts, latest))
            }
        }
        d.deserialize_seq(Visit)
    }
}

/// A stored closure: `[hash, closed, channel type, start, inbox, app]`, or its first four
/// (stored before closures kept their inbox and app: those are then null).
struct ClosureIn(i64, i64, String, Option<i64>, Option<i64>, Option<i64>);

impl<'de> Deserialize<'de> for ClosureIn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = ClosureIn;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a closure: [hash, closed, channel type, start(, inbox, app)]")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ClosureIn, A::Error> {
                use serde::de::Error;
                let missing = |i| A::Error::invalid_length(i, &self);
                let hash = seq.next_element()?.ok_or_else(|| missing(0))?;
                let closed = seq.next_element()?.ok_or_else(|| missing(1))?;
                let ch = seq.next_element()?.ok_or_else(|| missing(2))?;
                let start = seq.next_element()?.ok_or_else(|| missing(3))?;
                let inbox = seq.next_element()?.unwrap_or(None);
                let app = seq.next_element()?.unwrap_or(None);
                Ok(ClosureIn(hash, closed, ch, start, inbox, app))
            }
        }
        d.deserialize_seq(Visit)
    }
}

/// A closure as stored: its inbox and app only where it has one of them (the reference's
/// rule: a fold whose registry groups by neither keeps neither, and its states stay short).
#[derive(Serialize)]
#[serde(untagged)]
enum ClosureOut<'a> {
    Short(i64, i64, &'a str, Option<i64>),
    Full(i64, i64, &'a str, Option<i64>, Option<i64>, Option<i64>),
}

impl<'a> ClosureOut<'a> {
    /// A closure as stored: `[hash, closed, channel type, start]`, with inbox and app
    /// after them only where it has one of them.
    fn of(
        hash: i64,
        closed: i64,
        ch: &'a str,
        start: Option<i64>,
        inbox: Option<i64>,
        app: Option<i64>,
    ) -> Self {
        if inbox.is_none() && app.is_none() {
            ClosureOut::Short(hash, closed, ch, start)
        } else {
            ClosureOut::Full(hash, closed, ch, start, inbox, app)
        }
    }
}

/// An assignment as stored: `[assigned_at, event id, channel type, inbox, app]`.
type AssignOut<'a> = (i64, &'a str, &'a str, Option<i64>, Option<i64>);

#[derive(Serialize)]
#[serde(untagged)]
enum ConvOut<'a> {
    Short(i64, &'a [i64], Vec<ClosureOut<'a>>, &'a [i64]),
    Full(
        i64,
        &'a [i64],
        Vec<ClosureOut<'a>>,
        &'a [i64],
        &'a Option<First>,
        Option<i64>,
        Vec<AssignOut<'a>>,
    ),
    WithLatest(
        i64,
        &'a [i64],
        Vec<ClosureOut<'a>>,
        &'a [i64],
        &'a Option<First>,
        Option<i64>,
        Vec<AssignOut<'a>>,
        Option<LatestOut<'a>>,
    ),
}

impl<'a> ConvOut<'a> {
    /// A conversation as stored: the closures set's four fields, and with `firsts` (a fold
    /// of first closes or time to first assignment) its first close, created time and
    /// assignments, then its latest event where the gauges are folded.
    fn of(
        last: i64,
        starts: &'a [i64],
        closures: Vec<ClosureOut<'a>>,
        seen: &'a [i64],
        firsts: Option<compact::Firsts<'a>>,
    ) -> Self {
        let Some(f) = firsts else {
            return ConvOut::Short(last, starts, closures, seen);
        };
        match f.latest {
            None => ConvOut::Full(last, starts, closures, seen, f.first, f.created, f.assigns),
            Some(latest) => ConvOut::WithLatest(
                last, starts, closures, seen, f.first, f.created, f.assigns, latest,
            ),
        }
    }
}

/// A latest event as stored: `[time, event id, kind, channel type, inbox, app]`.
type LatestOut<'a> = (i64, &'a str, u8, &'a str, Option<i64>, Option<i64>);

/// The dimensions of the event a fact counts (consumer.fold.facts.Dims).
#[derive(Clone, Copy)]
struct Dims {
    ch: u32,
    acc: i64,
    inbox: Option<i64>,
    app: Option<i64>,
}

struct Fact {
    dims: Dims,
    t: i64,
    counts: [i8; MAX_COUNTERS],
    ttc_n: i8,
    ttc: Option<i64>,
    bin: Option<i64>,
    /// time to first assignment: sign, value, bin
    fa_n: i8,
    fa: Option<i64>,
    fa_bin: Option<i64>,
}

impl Fact {
    fn new(dims: Dims, t: i64) -> Self {
        Fact {
            dims,
            t,
            counts: [0; MAX_COUNTERS],
            ttc_n: 0,
            ttc: None,
            bin: None,
            fa_n: 0,
            fa: None,
            fa_bin: None,
        }
    }

    /// A fact of time to first assignment added (sign 1) or retracted (-1).
    fn assignment(cfg: &Config, dims: Dims, t: i64, sign: i8, value: i64) -> Self {
        let mut f = Fact::new(dims, t);
        (f.fa_n, f.fa, f.fa_bin) = (sign, Some(value), Some(bin_of(cfg, value)));
        f
    }
}

/// The counters' increments for an event of `kind` for which `conditions` hold, or None
/// when no counter counts it (consumer.fold.facts.FactMaker.counted).
fn counted(counters: &[Counter], kind: u8, conditions: u8, dims: Dims, t: i64) -> Option<Fact> {
    let mut fact: Option<Fact> = None;
    for (i, c) in counters.iter().enumerate() {
        if c.kinds & (1 << kind) != 0 && c.when & conditions == c.when {
            fact.get_or_insert_with(|| Fact::new(dims, t)).counts[i] += 1;
        }
    }
    fact
}

struct ClosureRow {
    account: i64,
    conversation: i64,
    ch: u32,
    closed: i64,
    ttc: Option<i64>,
    inbox: Option<i64>,
    app: Option<i64>,
    /// the event id; None where a later commit re-sends the closure (the state keeps no
    /// ids: the store keeps the one it has)
    id: Option<String>,
}

struct Lag {
    count: i64,
    sum: i128,
    max: i64,
    bins: HashMap<i64, i64>,
}

/// consumer.fold.delta.FirstAssignmentRow, by (account, conversation)
struct FirstAssignmentRow {
    ch: u32,
    inbox: Option<i64>,
    app: Option<i64>,
    assigned: i64,
    ttfa: i64,
}

#[derive(Default)]
struct Pending {
    facts: Vec<Fact>,
    closures: HashMap<i64, ClosureRow>,
    lags: HashMap<(u32, i64), Lag>,
    retractions: Vec<usize>, // indices into facts
    first_assignments: HashMap<(i64, i64), FirstAssignmentRow>,
    gauges: HashMap<GaugeKey, [i64; 3]>,
}

/// Channel type names, interned per fold: facts and closures carry an index.
/// `take_changes` starts the table afresh once it holds more than MAX_CHANNEL_NAMES (nothing
/// refers to an index then): a stream of ever-new unknown channel types cannot grow it
/// without bound.
#[derive(Default)]
struct Channels {
    names: Vec<String>,
    objects: Vec<Py<PyString>>,
    ids: HashMap<String, u32>,
}

const MAX_CHANNEL_NAMES: usize = 4096;

impl Channels {
    fn id(&mut self, py: Python<'_>, name: &str) -> u32 {
        if let Some(&i) = self.ids.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.objects.push(PyString::new(py, name).unbind());
        self.ids.insert(name.to_owned(), i);
        i
    }
}

/// One event as the fold sees it (consumer.fold.model.Event).
struct Ev {
    kind: u8,
    hash: i64,
    account: i64,
    conversation: i64,
    ch: u32,
    time: i64,
    last_read: Option<i64>,
    last_inbound: Option<i64>,
    received_ms: Option<i64>,
    inbox: Option<i64>,
    app: Option<i64>,
    window_expires: Option<i64>,
    /// the event id of a closure (its store row keeps it) or, where time to first
    /// assignment breaks ties by it, of an assignment; else None
    id: Option<String>,
}

fn event_hash(id: &str) -> i64 {
    let d = blake2b_simd::Params::new()
        .hash_length(8)
        .hash(id.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(d.as_bytes());
    i64::from_le_bytes(b)
}

fn kind_of(name: &str) -> Option<u8> {
    match name {
        "conversation.created" => Some(CREATED),
        "conversation.opened" => Some(OPENED),
        "conversation.closed" => Some(CLOSED),
        "conversation.snoozed" => Some(SNOOZED),
        "conversation.assigned" => Some(ASSIGNED),
        _ => None,
    }
}

/// consumer.fold.last_time_of: a stored conversation's newest event time (ValueError, as
/// there, when the text does not start like a conversation).
fn last_time_of(blob: &str) -> PyResult<i64> {
    blob.find(',')
        .and_then(|end| blob.get(1..end))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| PyValueError::new_err(format!("not a stored conversation: {:.40}", blob)))
}

/// The newest event time of an idle conversation, JSON or compact.
fn idle_last_time(blob: &[u8]) -> PyResult<i64> {
    if compact::is_compact(blob) {
        return compact::last_time(blob).map_err(PyValueError::new_err);
    }
    last_time_of(&String::from_utf8_lossy(blob))
}

/// An idle conversation as the JSON text the store keeps.
fn idle_json(blob: &[u8]) -> PyResult<std::borrow::Cow<'_, str>> {
    if compact::is_compact(blob) {
        return compact::to_json(blob)
            .map(Into::into)
            .map_err(PyValueError::new_err);
    }
    std::str::from_utf8(blob)
        .map(Into::into)
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Event-time arithmetic beyond 64 bits fails loudly, as the reference's does when the
/// value reaches the store (Python ints do not wrap; the store's integers are 64-bit).
fn overflow() -> PyErr {
    PyOverflowError::new_err("event time arithmetic outside the 64-bit range")
}

/// The snapshot key of a conversation (consumer.fold.mem_key): one int where it fits.
fn write_mem_key(out: &mut Vec<u8>, (a, c): (i64, i64)) {
    if (0..A_LIMIT).contains(&a) && (0..C_LIMIT).contains(&c) {
        let _ = write!(out, "{}", (a << 32) | c);
    } else {
        let _ = write!(out, "[{a},{c}]");
    }
}

/// JSON arrays of at most `size` items each, every array a bytes object: a snapshot's
/// chunks and a consumer.fold.Changes' (each built whole before it is copied out, so the
/// size bounds that transient copy).
struct JsonChunks<'py> {
    py: Python<'py>,
    size: usize,
    n: usize,
    text: Vec<u8>,
    out: Vec<Bound<'py, PyBytes>>,
}

impl<'py> JsonChunks<'py> {
    fn new(py: Python<'py>, size: usize) -> Self {
        let size = size.max(1);
        Self {
            py,
            size,
            n: 0,
            text: Vec::new(),
            out: Vec::new(),
        }
    }

    /// One more item: an array of what `write` writes.
    fn push(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        self.text.push(if self.n == 0 { b'[' } else { b',' });
        self.text.push(b'[');
        write(&mut self.text);
        self.text.push(b']');
        self.n += 1;
        if self.n == self.size {
            self.flush();
        }
    }

    fn flush(&mut self) {
        self.text.push(b']');
        self.out.push(PyBytes::new(self.py, &self.text));
        self.text.clear();
        self.n = 0;
    }

    fn finish(mut self) -> Vec<Bound<'py, PyBytes>> {
        if self.n > 0 {
            self.flush();
        }
        self.out
    }
}

/// Applies one partition's events to its conversations and to its pending Delta
/// (consumer.fold.PartitionFold, whose docstrings hold for every method here).
#[pyclass(module = "consumer.fold._fold_native", name = "PartitionFold")]
pub struct PartitionFold {
    #[pyo3(get)]
    partition: i64,
    #[pyo3(get, set)]
    watermark: i64,
    /// events later than this (unix s) are refused as out of range: the consumer sets it
    /// to its clock plus `MAX_AHEAD_S` before each batch (one wrong clock must not move
    /// the watermark, which retention and the conversations' expiry count from)
    #[pyo3(get, set)]
    ceiling: i64,
    #[pyo3(get, set)]
    max_seen: usize,
    #[pyo3(get)]
    duplicates: i64,
    /// idle conversations: their JSON text as stored, or compact (`compact`: the closures
    /// set's, once the fold has written them)
    idle: HashMap<(i64, i64), Box<[u8]>>,
    hot: HashMap<(i64, i64), Conv>,
    pending: Pending,
    channels: Channels,
    counters: Vec<Counter>,
    /// the registry groups by inbox or app: events' and closures' are kept (else None)
    inbox_app: bool,
    /// the position of first_closes among the counters (None: not folded)
    first_close: Option<usize>,
    /// time to first assignment folded
    ttfa: bool,
    /// the gauges folded (conversations keep their latest event)
    gauges: bool,
}

/// The counters of a registry, from (the event kinds each counts, its condition).
fn counters_of(spec: Vec<(Vec<u8>, Option<String>)>) -> PyResult<Vec<Counter>> {
    if spec.len() > MAX_COUNTERS {
        return Err(PyValueError::new_err(format!(
            "the compiled fold carries at most {MAX_COUNTERS} counters, not {}",
            spec.len()
        )));
    }
    let mut rules = Vec::with_capacity(spec.len());
    for (kinds, when) in spec {
        let when = match when.as_deref() {
            None => 0,
            Some("unread") => UNREAD,
            Some("window_expired") => WINDOW_EXPIRED,
            Some(other) => {
                return Err(PyValueError::new_err(format!(
                    "the compiled fold knows no condition {other:?}"
                )));
            }
        };
        let mut bits = 0u8;
        for k in kinds {
            if usize::from(k) >= KINDS {
                return Err(PyValueError::new_err(format!("no event kind {k}")));
            }
            bits |= 1 << k;
        }
        rules.push(Counter { kinds: bits, when });
    }
    Ok(rules)
}

/// A stored conversation's JSON text, its channel names interned in `channels`; `firsts`:
/// the fold keeps first close and assignments, so a state without them gets them
/// (consumer.fold.state.legacy_first).
fn parse(
    channels: &mut Channels,
    py: Python<'_>,
    key: (i64, i64),
    blob: &[u8],
    firsts: bool,
    gauges: bool,
) -> PyResult<Conv> {
    let read = if compact::is_compact(blob) {
        compact::decode(blob)
    } else {
        serde_json::from_slice::<ConvIn>(blob).map_err(|e| e.to_string())
    };
    let c = read.map_err(|e| {
        PyValueError::new_err(format!(
            "stored state of conversation {key:?} is not a conversation: {e}"
        ))
    })?;
    let closures =
        c.2.into_iter()
            .map(|ClosureIn(hash, closed, ch, start, inbox, app)| Closure {
                hash,
                closed,
                ch: channels.id(py, &ch),
                start,
                inbox,
                app,
            })
            .collect::<Vec<Closure>>();
    let (firsts, first, created, assigns) = match c.4 {
        Some((first, created, assigns)) => {
            let assigns = assigns
                .into_iter()
                .map(|AssignIn(t, id, ch, inbox, app)| Assign {
                    t,
                    id,
                    ch: channels.id(py, &ch),
                    inbox,
                    app,
                })
                .collect();
            (true, first, created, assigns)
        }
        None if firsts => {
            let first = closures
                .iter()
                .min_by_key(|c| (c.closed, c.hash))
                .map(|c| First(c.closed, None, c.hash));
            (true, first, None, Vec::new())
        }
        None => (false, None, None, Vec::new()),
    };
    let had_latest = c.5.is_some();
    let latest =
        c.5.flatten()
            .map(|LatestIn(t, id, kind, ch, inbox, app)| Latest {
                t,
                id,
                kind,
                ch: channels.id(py, &ch),
                inbox,
                app,
            });
    Ok(Conv {
        last: c.0,
        starts: c.1,
        closures,
        seen: c.3,
        firsts,
        first,
        created,
        assigns,
        gauges: firsts && (gauges || had_latest),
        latest,
    })
}

impl PartitionFold {
    /// What a full-set conversation keeps beyond the closures set's (None for the closures
    /// set's), its channel types by name.
    fn firsts<'a>(&'a self, c: &'a Conv) -> Option<compact::Firsts<'a>> {
        if !c.firsts {
            return None;
        }
        let name = |ch: u32| self.channels.names[ch as usize].as_str();
        Some(compact::Firsts {
            first: &c.first,
            created: c.created,
            assigns: c
                .assigns
                .iter()
                .map(|a| (a.t, a.id.as_str(), name(a.ch), a.inbox, a.app))
                .collect(),
            latest: c.gauges.then(|| {
                c.latest
                    .as_ref()
                    .map(|l| (l.t, l.id.as_str(), l.kind, name(l.ch), l.inbox, l.app))
            }),
        })
    }

    /// The compact form of a conversation (`compact`; `firsts`: `self.firsts(c)`); None
    /// where a channel type name is too long for it (the JSON is kept then).
    fn compact(&self, c: &Conv, firsts: Option<&compact::Firsts<'_>>) -> Option<Box<[u8]>> {
        let name = |ch: u32| self.channels.names[ch as usize].as_str();
        let closures = c
            .closures
            .iter()
            .map(|x| (x.hash, x.closed, name(x.ch), x.start, x.inbox, x.app));
        match firsts {
            None => compact::encode(c.last, &c.starts, closures, &c.seen),
            Some(firsts) => compact::encode_full(c.last, &c.starts, closures, &c.seen, firsts),
        }
    }

    /// A conversation's JSON text as stored (`firsts`: `self.firsts(c)`).
    fn encode(&self, c: &Conv, firsts: Option<compact::Firsts<'_>>) -> String {
        let closures = c
            .closures
            .iter()
            .map(|x| {
                let ch = self.channels.names[x.ch as usize].as_str();
                ClosureOut::of(x.hash, x.closed, ch, x.start, x.inbox, x.app)
            })
            .collect();
        let out = ConvOut::of(c.last, &c.starts, closures, &c.seen, firsts);
        serde_json::to_string(&out).expect("JSON of ints and strings")
    }

    fn apply_event(&mut self, py: Python<'_>, e: &Ev) -> PyResult<bool> {
        let cfg = config()?;
        let key = (e.account, e.conversation);
        let firsts = self.first_close.is_some() || self.ttfa;
        if !self.hot.contains_key(&key) {
            let conv = match self.idle.get(&key) {
                Some(blob) => parse(&mut self.channels, py, key, blob, firsts, self.gauges)?,
                None => Conv {
                    firsts,
                    gauges: firsts && self.gauges,
                    ..Conv::default()
                },
            };
            self.hot.insert(key, conv);
        }
        if e.time > self.ceiling {
            return Err(PyOverflowError::new_err(
                "event time after the consumer's clock plus MAX_AHEAD_S",
            ));
        }
        let Self {
            hot,
            pending,
            watermark,
            duplicates,
            max_seen,
            counters,
            first_close,
            ttfa,
            gauges,
            ..
        } = self;
        let (first_close, ttfa, gauges) = (*first_close, *ttfa, *gauges);
        let conv = hot.get_mut(&key).expect("inserted above");
        check_range(e, conv)?;
        if conv.seen.contains(&e.hash) {
            *duplicates += 1;
            return Ok(false);
        }
        conv.seen.push(e.hash);
        if conv.seen.len() > *max_seen {
            conv.seen.remove(0);
        }
        let before = if gauges {
            conv.gauges_of(e.account)
        } else {
            None
        };
        let t = e.time;
        if t > *watermark {
            *watermark = t;
        }
        if t > conv.last {
            conv.last = t;
        }
        if let Some(rec) = e.received_ms {
            let millis = t
                .checked_mul(1000)
                .and_then(|ms| rec.checked_sub(ms))
                .ok_or_else(overflow)?;
            let lag = pending
                .lags
                .entry((e.ch, floor_to(t, 3600)?))
                .or_insert_with(|| Lag {
                    count: 0,
                    sum: 0,
                    max: millis,
                    bins: HashMap::new(),
                });
            lag.count += 1;
            lag.sum += millis as i128;
            if millis > lag.max {
                lag.max = millis;
            }
            *lag.bins
                .entry(cfg.lag_base + bin_of(cfg, millis))
                .or_insert(0) += 1;
        }
        let a = e.account;
        let (inbox, app) = if self.inbox_app {
            (e.inbox, e.app)
        } else {
            (None, None)
        };
        let dims = Dims {
            ch: e.ch,
            acc: a,
            inbox,
            app,
        };
        if e.kind == CLOSED {
            let i = conv.starts.partition_point(|&s| s <= t);
            let start = if i > 0 {
                Some(conv.starts[i - 1])
            } else {
                None
            };
            let unread = match (e.last_inbound, e.last_read) {
                (Some(inbound), Some(read)) => read < inbound,
                (Some(_), None) => true,
                (None, _) => false,
            };
            let expired = e.window_expires.is_some_and(|w| w < t);
            let conditions =
                if unread { UNREAD } else { 0 } | if expired { WINDOW_EXPIRED } else { 0 };
            let ttc = match start {
                Some(s) => Some(t.checked_sub(s).ok_or_else(overflow)?),
                None => None,
            };
            let mut fact = counted(counters, e.kind, conditions, dims, t);
            if let Some(d) = ttc {
                let f = fact.get_or_insert_with(|| Fact::new(dims, t));
                f.ttc_n = 1;
                f.ttc = Some(d);
                f.bin = Some(bin_of(cfg, d));
            }
            let mut taken_back = None;
            if let Some(at) = first_close {
                let id = e.id.as_deref().unwrap_or("");
                let earlier = match &conv.first {
                    None => true,
                    Some(First(closed, old_id, _)) => {
                        t < *closed || (t == *closed && old_id.as_deref().is_some_and(|o| id < o))
                    }
                };
                if earlier {
                    fact.get_or_insert_with(|| Fact::new(dims, t)).counts[at] += 1;
                    if let Some(First(closed, Some(_), hash)) = &conv.first {
                        let c = conv
                            .closures
                            .iter()
                            .find(|c| c.hash == *hash)
                            .expect("a first close is one of its conversation's closures");
                        let cdims = Dims {
                            ch: c.ch,
                            acc: a,
                            inbox: c.inbox,
                            app: c.app,
                        };
                        let mut f = Fact::new(cdims, *closed);
                        f.counts[at] = -1;
                        taken_back = Some(f);
                    }
                    conv.first = Some(First(t, Some(id.to_owned()), e.hash));
                }
            }
            pending.facts.extend(fact);
            pending.facts.extend(taken_back);
            conv.closures.push(Closure {
                hash: e.hash,
                closed: t,
                ch: e.ch,
                start,
                inbox,
                app,
            });
            pending.closures.insert(
                e.hash,
                ClosureRow {
                    account: a,
                    conversation: e.conversation,
                    ch: e.ch,
                    closed: t,
                    ttc,
                    inbox,
                    app,
                    id: e.id.clone(),
                },
            );
        } else if e.kind == ASSIGNED && ttfa {
            let mut fact = counted(counters, e.kind, 0, dims, t);
            let old = conv.first_assignment().map(|i| conv.assigns[i].clone());
            let id = e.id.clone().unwrap_or_default();
            let pos = conv
                .assigns
                .partition_point(|x| (x.t, x.id.as_str()) <= (t, id.as_str()));
            conv.assigns.insert(
                pos,
                Assign {
                    t,
                    id,
                    ch: e.ch,
                    inbox,
                    app,
                },
            );
            match conv.first_assignment() {
                Some(k) if k == pos => {
                    let created = conv.created.expect("a first assignment has a created time");
                    let value = t.checked_sub(created).ok_or_else(overflow)?;
                    let f = fact.get_or_insert_with(|| Fact::new(dims, t));
                    (f.fa_n, f.fa, f.fa_bin) = (1, Some(value), Some(bin_of(cfg, value)));
                    pending.facts.extend(fact);
                    if let Some(o) = old {
                        retract_assignment(cfg, pending, a, &o, created)?;
                    }
                    counted_assignment(pending, key, conv, k)?;
                }
                found => {
                    pending.facts.extend(fact);
                    if found.is_some_and(|k| k < pos) {
                        conv.assigns.remove(pos); // after the counted one: it can never count
                    }
                }
            }
        } else {
            pending.facts.extend(counted(counters, e.kind, 0, dims, t));
        }
        if e.kind == CREATED || e.kind == OPENED {
            let i = conv.starts.partition_point(|&s| s <= t);
            conv.starts.insert(i, t);
            // a start at t: fix closures whose latest start it now is
            for c in conv.closures.iter_mut() {
                if c.closed < t || c.start.is_some_and(|s| s >= t) {
                    continue;
                }
                let cdims = Dims {
                    ch: c.ch,
                    acc: a,
                    inbox: c.inbox,
                    app: c.app,
                };
                if let Some(s) = c.start {
                    let old = c.closed.checked_sub(s).ok_or_else(overflow)?;
                    pending.retractions.push(pending.facts.len());
                    let mut f = Fact::new(cdims, c.closed);
                    (f.ttc_n, f.ttc, f.bin) = (-1, Some(old), Some(bin_of(cfg, old)));
                    pending.facts.push(f);
                }
                c.start = Some(t);
                let ttc = c.closed.checked_sub(t).ok_or_else(overflow)?;
                let mut f = Fact::new(cdims, c.closed);
                (f.ttc_n, f.ttc, f.bin) = (1, Some(ttc), Some(bin_of(cfg, ttc)));
                pending.facts.push(f);
                // the event id where this commit folded the closure (the state keeps none)
                let id = pending.closures.remove(&c.hash).and_then(|r| r.id);
                pending.closures.insert(
                    c.hash,
                    ClosureRow {
                        account: a,
                        conversation: e.conversation,
                        ch: c.ch,
                        closed: c.closed,
                        ttc: Some(ttc),
                        inbox: c.inbox,
                        app: c.app,
                        id,
                    },
                );
            }
        }
        if e.kind == CREATED && ttfa && conv.created.is_none_or(|w| t < w) {
            // the created time moves earlier: the first assignment, or its duration, may change
            let was = conv.created;
            let old = conv.first_assignment().map(|i| conv.assigns[i].clone());
            conv.created = Some(t);
            if let Some(k) = conv.first_assignment() {
                if let (Some(o), Some(w)) = (old, was) {
                    retract_assignment(cfg, pending, a, &o, w)?;
                }
                let n = &conv.assigns[k];
                let value = n.t.checked_sub(t).ok_or_else(overflow)?;
                let ndims = Dims {
                    ch: n.ch,
                    acc: a,
                    inbox: n.inbox,
                    app: n.app,
                };
                pending
                    .facts
                    .push(Fact::assignment(cfg, ndims, n.t, 1, value));
                counted_assignment(pending, key, conv, k)?;
            }
        }
        if gauges {
            let id = e.id.as_deref().unwrap_or("");
            let later = match &conv.latest {
                None => true,
                Some(l) => t > l.t || (t == l.t && id > l.id.as_str()),
            };
            if later {
                conv.latest = Some(Latest {
                    t,
                    id: id.to_owned(),
                    kind: e.kind,
                    ch: e.ch,
                    inbox,
                    app,
                });
            }
            let after = conv.gauges_of(a);
            if after != before {
                add_gauges(pending, before, -1);
                add_gauges(pending, after, 1);
            }
        }
        Ok(true)
    }

    /// Drops an idle conversation, its gauges taken back (consumer.fold.PartitionFold._forget).
    fn forget(&mut self, py: Python<'_>, key: (i64, i64)) -> PyResult<()> {
        if let Some(blob) = self.idle.remove(&key)
            && self.gauges
        {
            let conv = parse(&mut self.channels, py, key, &blob, true, true)?;
            add_gauges(&mut self.pending, conv.gauges_of(key.0), -1);
        }
        Ok(())
    }

    /// The pending facts, laid out as `consumer.fold.delta.Fact` tuples are (dimensions,
    /// time, counters, each distribution's sign, value and bin), without making a Python
    /// object per fact: the stores read them packed (a full-set commit's facts were ~25 MB
    /// of tuples).
    fn facts(&self) -> rollup::Facts {
        use rollup::{K_INT, K_NULL, K_TEXT};
        fn cell(kinds: &mut Vec<u8>, ints: &mut Vec<i64>, v: Option<i64>) {
            kinds.push(if v.is_some() { K_INT } else { K_NULL });
            ints.push(v.unwrap_or(0));
        }
        let n = self.counters.len();
        let width = DIMENSIONS.len() + 1 + n + if self.ttfa { 6 } else { 3 };
        let facts = &self.pending.facts;
        let mut ints = Vec::with_capacity(facts.len() * width);
        let mut kinds = Vec::with_capacity(facts.len() * width);
        for f in facts {
            kinds.push(K_TEXT); // the channel type: its index in the names
            ints.push(i64::from(f.dims.ch));
            let (k, i) = (&mut kinds, &mut ints);
            cell(k, i, Some(f.dims.acc));
            cell(k, i, f.dims.inbox);
            cell(k, i, f.dims.app);
            cell(k, i, Some(f.t));
            for &c in &f.counts[..n] {
                cell(k, i, Some(i64::from(c)));
            }
            cell(k, i, Some(i64::from(f.ttc_n)));
            cell(k, i, f.ttc);
            cell(k, i, f.bin);
            if self.ttfa {
                cell(k, i, Some(i64::from(f.fa_n)));
                cell(k, i, f.fa);
                cell(k, i, f.fa_bin);
            }
        }
        let names = self
            .channels
            .names
            .iter()
            .map(|n| n.as_str().into())
            .collect();
        rollup::Facts::new(width, ints, kinds, names)
    }

    /// The pending changes as a consumer.fold.Delta.
    fn delta_object<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let cfg = config()?;
        let ch = |i: u32| self.channels.objects[i as usize].clone_ref(py);
        let facts = Py::new(py, self.facts())?;
        let retractions = PyList::new(
            py,
            self.pending
                .retractions
                .iter()
                .map(|&i| facts.bind(py).get_item(i))
                .collect::<PyResult<Vec<_>>>()?,
        )?;
        let closures = PyDict::new(py);
        for (h, c) in &self.pending.closures {
            closures.set_item(
                h,
                (
                    *h,
                    self.partition,
                    c.account,
                    c.conversation,
                    ch(c.ch),
                    c.closed,
                    c.ttc,
                    c.inbox,
                    c.app,
                    c.id.as_deref(),
                ),
            )?;
        }
        let lags = PyDict::new(py);
        for ((c, hour), lag) in &self.pending.lags {
            let bins = PyDict::new(py);
            for (b, n) in &lag.bins {
                bins.set_item(b, n)?;
            }
            let agg = PyList::new(
                py,
                [
                    lag.count.into_pyobject(py)?.into_any(),
                    lag.sum.into_pyobject(py)?.into_any(),
                    lag.max.into_pyobject(py)?.into_any(),
                    bins.into_any(),
                ],
            )?;
            lags.set_item((ch(*c), *hour), agg)?;
        }
        let firsts = PyDict::new(py);
        for ((a, c), r) in &self.pending.first_assignments {
            firsts.set_item(
                (*a, *c),
                (
                    *a,
                    *c,
                    self.partition,
                    ch(r.ch),
                    r.inbox,
                    r.app,
                    r.assigned,
                    r.ttfa,
                ),
            )?;
        }
        let gauges = PyDict::new(py);
        for ((c, a, inbox, app), g) in &self.pending.gauges {
            gauges.set_item((ch(*c), *a, *inbox, *app), PyList::new(py, g)?)?;
        }
        let kwargs = PyDict::new(py);
        kwargs.set_item("gauges", gauges)?;
        kwargs.set_item("first_assignments", firsts)?;
        kwargs.set_item("facts", facts)?;
        kwargs.set_item("closures", closures)?;
        kwargs.set_item("lags", lags)?;
        kwargs.set_item("retractions", retractions)?;
        cfg.delta_class.bind(py).call((), Some(&kwargs))
    }

    fn event_of(&mut self, py: Python<'_>, e: &Bound<'_, PyAny>) -> PyResult<Ev> {
        let t = e.cast::<PyTuple>()?;
        let ch: String = t.get_item(4)?.extract()?;
        Ok(Ev {
            kind: t.get_item(0)?.extract()?,
            hash: t.get_item(1)?.extract()?,
            account: t.get_item(2)?.extract()?,
            conversation: t.get_item(3)?.extract()?,
            ch: self.channels.id(py, &ch),
            time: t.get_item(5)?.extract()?,
            last_read: t.get_item(6)?.extract()?,
            last_inbound: t.get_item(7)?.extract()?,
            received_ms: t.get_item(8)?.extract()?,
            inbox: t.get_item(9)?.extract()?,
            app: t.get_item(10)?.extract()?,
            window_expires: t.get_item(11)?.extract()?,
            id: Some(t.get_item(12)?.extract()?),
        })
    }
}

/// The retraction of a counted first assignment `o` (its duration from `created`).
fn retract_assignment(
    cfg: &Config,
    pending: &mut Pending,
    account: i64,
    o: &Assign,
    created: i64,
) -> PyResult<()> {
    let value = o.t.checked_sub(created).ok_or_else(overflow)?;
    let dims = Dims {
        ch: o.ch,
        acc: account,
        inbox: o.inbox,
        app: o.app,
    };
    pending.retractions.push(pending.facts.len());
    pending
        .facts
        .push(Fact::assignment(cfg, dims, o.t, -1, value));
    Ok(())
}

/// The counted first assignment is the k-th: its store row, and the assignments after it
/// forgotten (none of them can become the first).
fn counted_assignment(
    pending: &mut Pending,
    key: (i64, i64),
    conv: &mut Conv,
    k: usize,
) -> PyResult<()> {
    conv.assigns.truncate(k + 1);
    let n = &conv.assigns[k];
    let created = conv.created.expect("a first assignment has a created time");
    pending.first_assignments.insert(
        key,
        FirstAssignmentRow {
            ch: n.ch,
            inbox: n.inbox,
            app: n.app,
            assigned: n.t,
            ttfa: n.t.checked_sub(created).ok_or_else(overflow)?,
        },
    );
    Ok(())
}

/// consumer.fold.check_range: an event whose time arithmetic leaves 64 bits (a lag, a
/// duration, a window start) is refused before it changes anything (OverflowError).
fn check_range(e: &Ev, conv: &Conv) -> PyResult<()> {
    let t = e.time;
    floor_to(t, 86400)?;
    if let Some(rec) = e.received_ms {
        t.checked_mul(1000)
            .and_then(|ms| rec.checked_sub(ms))
            .ok_or_else(overflow)?;
    }
    if e.kind == CLOSED {
        let i = conv.starts.partition_point(|&s| s <= t);
        if i > 0 {
            t.checked_sub(conv.starts[i - 1]).ok_or_else(overflow)?;
        }
    } else if e.kind == CREATED || e.kind == OPENED {
        for c in &conv.closures {
            if c.closed >= t && c.start.is_none_or(|s| s < t) {
                c.closed.checked_sub(t).ok_or_else(overflow)?;
            }
        }
    }
    if conv.firsts {
        if e.kind == CREATED {
            for a in &conv.assigns {
                if a.t >= t {
                    a.t.checked_sub(t).ok_or_else(overflow)?;
                }
            }
        } else if e.kind == ASSIGNED
            && let Some(c) = conv.created
            && t >= c
        {
            t.checked_sub(c).ok_or_else(overflow)?;
        }
    }
    Ok(())
}

/// Keys of a decoded record, interned once.
struct Keys<'py> {
    event: Bound<'py, PyString>,
    id: Bound<'py, PyString>,
    account: Bound<'py, PyString>,
    created_at: Bound<'py, PyString>,
    received: Bound<'py, PyString>,
    data: Bound<'py, PyString>,
    channel: Bound<'py, PyString>,
    last_read: Bound<'py, PyString>,
    last_inbound: Bound<'py, PyString>,
    app: Bound<'py, PyString>,
    inbox: Bound<'py, PyString>,
    window_expires: Bound<'py, PyString>,
    times: Vec<Bound<'py, PyString>>,
}

impl<'py> Keys<'py> {
    fn new(py: Python<'py>) -> Self {
        Keys {
            event: PyString::intern(py, "event"),
            id: PyString::intern(py, "id"),
            account: PyString::intern(py, "account"),
            created_at: PyString::intern(py, "createdAt"),
            received: PyString::intern(py, "receivedAtMillis"),
            data: PyString::intern(py, "data"),
            channel: PyString::intern(py, "channelType"),
            last_read: PyString::intern(py, "lastReadByAppUserAt"),
            last_inbound: PyString::intern(py, "lastInboundMessageAt"),
            app: PyString::intern(py, "app"),
            inbox: PyString::intern(py, "channel"),
            window_expires: PyString::intern(py, "messageWindowExpiresAt"),
            times: TIME_FIELDS
                .iter()
                .map(|f| PyString::intern(py, f))
                .collect(),
        }
    }
}

fn item<'py>(d: &Bound<'py, PyDict>, k: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
    d.get_item(k)?
        .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(k.clone().unbind()))
}

/// consumer.fold.model.from_record, on this fold's channel names; None for a kind not used.
fn record_event(
    fold: &mut PartitionFold,
    py: Python<'_>,
    keys: &Keys<'_>,
    rec: &Bound<'_, PyDict>,
) -> PyResult<Option<Ev>> {
    let name = item(rec, &keys.event)?;
    let Some(kind) = kind_of(name.cast::<PyString>()?.to_str()?) else {
        return Ok(None);
    };
    let data_any = item(rec, &keys.data)?;
    let data = data_any.cast::<PyDict>()?;
    let t: Option<i64> = match data.get_item(&keys.times[kind as usize])? {
        Some(v) => v.extract()?,
        None => None,
    };
    let time = match t {
        Some(t) => t,
        None => item(rec, &keys.created_at)?.extract()?,
    };
    let id = item(rec, &keys.id)?;
    let ch_any = item(data, &keys.channel)?;
    let ch = fold.channels.id(py, ch_any.cast::<PyString>()?.to_str()?);
    // app, data.channel ({"id": inbox} or None) and data.messageWindowExpiresAt: absent
    // where the metric set needs none of them (consumer.fold.model.reader_schema)
    let inbox: Option<i64> = match data.get_item(&keys.inbox)? {
        Some(channel) if !channel.is_none() => {
            Some(item(channel.cast::<PyDict>()?, &keys.id)?.extract()?)
        }
        _ => None,
    };
    let app: Option<i64> = match rec.get_item(&keys.app)? {
        Some(v) => v.extract()?,
        None => None,
    };
    let window_expires: Option<i64> = match data.get_item(&keys.window_expires)? {
        Some(v) => v.extract()?,
        None => None,
    };
    let id = id.cast::<PyString>()?.to_str()?;
    let keep_id = kind == CLOSED || (kind == ASSIGNED && fold.ttfa) || fold.gauges;
    Ok(Some(Ev {
        kind,
        hash: event_hash(id),
        id: keep_id.then(|| id.to_owned()),
        account: item(rec, &keys.account)?.extract()?,
        conversation: item(data, &keys.id)?.extract()?, // data.id: the conversation's id
        ch,
        time,
        last_read: item(data, &keys.last_read)?.extract()?,
        last_inbound: item(data, &keys.last_inbound)?.extract()?,
        received_ms: item(rec, &keys.received)?.extract()?,
        inbox,
        app,
        window_expires,
    }))
}

#[pymethods]
impl PartitionFold {
    /// `counters`: the registry's counters in fact order, each (the event kinds it counts,
    /// its condition): consumer/fold/native.py derives them from the registry.
    #[new]
    /// `first_close`: the position of first_closes among them (None: not folded); `ttfa`:
    /// time to first assignment folded (its facts carry the distribution's three fields);
    /// `gauges`: the gauges folded (they need time to first assignment's state).
    #[pyo3(signature = (partition, idle=None, watermark=0, *, max_seen=256, counters=Vec::new(), inbox_app=true, first_close=None, ttfa=false, gauges=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        partition: i64,
        idle: Option<&Bound<'_, PyDict>>,
        watermark: i64,
        max_seen: usize,
        counters: Vec<(Vec<u8>, Option<String>)>,
        inbox_app: bool,
        first_close: Option<usize>,
        ttfa: bool,
        gauges: bool,
    ) -> PyResult<Self> {
        let counters = counters_of(counters)?;
        if gauges && !ttfa {
            return Err(PyValueError::new_err(
                "the gauges need time to first assignment folded (its conversation state)",
            ));
        }
        if first_close.is_some_and(|i| i >= counters.len()) {
            return Err(PyValueError::new_err(
                "first_close must be the position of a counter",
            ));
        }
        let mut map = HashMap::new();
        if let Some(idle) = idle {
            map.reserve(idle.len());
            for (k, v) in idle.iter() {
                let key: (i64, i64) = k.extract()?;
                let blob: String = v.extract()?;
                map.insert(key, blob.into_bytes().into_boxed_slice());
            }
        }
        Ok(PartitionFold {
            partition,
            watermark,
            ceiling: i64::MAX,
            max_seen,
            duplicates: 0,
            idle: map,
            hot: HashMap::new(),
            pending: Pending::default(),
            channels: Channels::default(),
            counters,
            inbox_app,
            first_close,
            ttfa,
            gauges,
        })
    }

    /// Idle conversations (as `len(fold.idle)` of the Python fold).
    fn __len__(&self) -> usize {
        self.idle.len()
    }

    /// Conversations touched since the last `take_changes`.
    #[getter]
    fn hot_count(&self) -> usize {
        self.hot.len()
    }

    /// Channel type names interned now (at most MAX_CHANNEL_NAMES after `take_changes`).
    #[getter]
    fn channel_names(&self) -> usize {
        self.channels.names.len()
    }

    /// The pending changes (a copy: the fold goes on with its own).
    #[getter]
    fn delta<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.delta_object(py)
    }

    fn apply(&mut self, py: Python<'_>, e: &Bound<'_, PyAny>) -> PyResult<bool> {
        let ev = self.event_of(py, e)?;
        self.apply_event(py, &ev)
    }

    fn conversations<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (k, b) in &self.idle {
            out.set_item(*k, &*idle_json(b)?)?;
        }
        Ok(out)
    }

    #[pyo3(signature = (chunk=100_000))]
    fn snapshot<'py>(&self, py: Python<'py>, chunk: usize) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let mut chunks = JsonChunks::new(py, chunk);
        for (k, b) in &self.idle {
            let state = idle_json(b)?;
            chunks.push(|text| {
                write_mem_key(text, *k);
                text.push(b',');
                serde_json::to_writer(text, &*state).expect("JSON of a str");
            });
        }
        let mut out = chunks.finish();
        if out.is_empty() {
            out.push(PyBytes::new(py, b"[]"));
        }
        Ok(out)
    }

    /// The pending delta and a consumer.fold.Changes of the touched conversations: JSON
    /// arrays of `[account, conversation id, state text]`, `chunk` to a text.
    #[pyo3(signature = (chunk=10_000))]
    fn take_changes<'py>(
        &mut self,
        py: Python<'py>,
        chunk: usize,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let delta = self.delta_object(py)?;
        self.pending = Pending::default();
        let hot = std::mem::take(&mut self.hot);
        let count = hot.len();
        let mut chunks = JsonChunks::new(py, chunk);
        for (k, conv) in hot {
            // the full set's fields, gathered once for both forms
            let firsts = self.firsts(&conv);
            let kept = self.compact(&conv, firsts.as_ref());
            let state = self.encode(&conv, firsts);
            chunks.push(|text| {
                let _ = write!(text, "{},{},", k.0, k.1);
                serde_json::to_writer(text, &state).expect("JSON of a str");
            });
            let kept = kept.unwrap_or_else(|| state.into_bytes().into_boxed_slice());
            self.idle.insert(k, kept);
        }
        if self.channels.names.len() > MAX_CHANNEL_NAMES {
            self.channels = Channels::default(); // pending and hot are empty: no index is left
        }
        let changes = config()?
            .changes_class
            .bind(py)
            .call1((PyTuple::new(py, chunks.finish())?, count))?;
        Ok((delta, changes))
    }

    /// Longest idle first, ties by (account, conversation id): as the reference.
    /// A forgotten conversation's gauges are taken back in the pending delta.
    #[pyo3(signature = (ttl, max_conversations=None))]
    fn expire(
        &mut self,
        py: Python<'_>,
        ttl: i64,
        max_conversations: Option<usize>,
    ) -> PyResult<Vec<(i64, i64)>> {
        let horizon = self.watermark.saturating_sub(ttl);
        let mut by_age: Vec<(i64, (i64, i64))> = Vec::with_capacity(self.idle.len());
        for (k, b) in &self.idle {
            by_age.push((idle_last_time(b)?, *k));
        }
        let mut gone: Vec<(i64, i64)> = by_age
            .iter()
            .filter(|(t, _)| *t < horizon)
            .map(|(_, k)| *k)
            .collect();
        gone.sort_unstable();
        for k in &gone {
            self.forget(py, *k)?;
        }
        if let Some(most) = max_conversations
            && self.idle.len() > most
        {
            by_age.retain(|(t, _)| *t >= horizon);
            by_age.sort_unstable();
            let over = by_age.len() - most;
            for (_, k) in &by_age[..over] {
                self.forget(py, *k)?;
                gone.push(*k);
            }
        }
        Ok(gone)
    }
}

/// Folds a consumed batch: `msgs[i]` (a confluent_kafka Message) decoded as `records[i]`
/// (a dict, or the DecodeError of a poison record). Messages of a partition without a fold
/// (revoked meanwhile) are skipped; `offsets[p]` becomes the offset after partition p's
/// last message. Returns (events folded per kind, duplicates, ignored, indices of the
/// poison records: undecodable, or out of range): consumer.fold.apply_batch in Python.
#[pyfunction]
fn apply_batch<'py>(
    py: Python<'py>,
    folds: &Bound<'py, PyDict>,
    msgs: &Bound<'py, PyList>,
    records: &Bound<'py, PyList>,
    offsets: &Bound<'py, PyDict>,
) -> PyResult<(Vec<i64>, i64, i64, Vec<usize>)> {
    if msgs.len() != records.len() {
        return Err(PyValueError::new_err(
            "apply_batch: as many records as messages, please",
        ));
    }
    let keys = Keys::new(py);
    let partition_name = PyString::intern(py, "partition");
    let offset_name = PyString::intern(py, "offset");
    let mut bound: HashMap<i64, Option<PyRefMut<'py, PartitionFold>>> = HashMap::new();
    let mut last: HashMap<i64, i64> = HashMap::new();
    let (mut folded, mut duplicates, mut ignored, mut dead) =
        (vec![0i64; KINDS], 0i64, 0i64, Vec::new());
    for (i, (m, rec)) in msgs.iter().zip(records.iter()).enumerate() {
        let p: i64 = m.call_method0(&partition_name)?.extract()?;
        let slot = match bound.entry(p) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let fold = match folds.get_item(p)? {
                    Some(f) => Some(f.cast_into::<PartitionFold>()?.try_borrow_mut()?),
                    None => None,
                };
                e.insert(fold)
            }
        };
        let Some(fold) = slot.as_mut() else {
            continue; // revoked while the batch was in flight
        };
        match rec.cast::<PyDict>() {
            Ok(d) => match record_event(fold, py, &keys, d)? {
                None => ignored += 1,
                Some(ev) => match fold.apply_event(py, &ev) {
                    Ok(true) => folded[ev.kind as usize] += 1,
                    Ok(false) => duplicates += 1,
                    Err(err) if err.is_instance_of::<PyOverflowError>(py) => dead.push(i),
                    Err(err) => return Err(err),
                },
            },
            Err(_) => dead.push(i),
        }
        let off: i64 = m.call_method0(&offset_name)?.extract()?;
        last.insert(p, off + 1);
    }
    for (p, off) in last {
        offsets.set_item(p, off)?;
    }
    Ok((folded, duplicates, ignored, dead))
}

/// Given once, before any fold: the DDSketch mapping's multiplier and offset, the zero and
/// lag bin constants of consumer.fold.sketch, and the consumer.fold.Delta class.
#[pyfunction]
fn configure(
    multiplier: f64,
    offset: f64,
    zero_bin: i64,
    lag_base: i64,
    delta_class: Py<PyAny>,
    changes_class: Py<PyAny>,
) -> PyResult<()> {
    let cfg = Config {
        multiplier,
        offset,
        zero_bin,
        lag_base,
        delta_class,
        changes_class,
    };
    if let Err(cfg) = CONFIG.set(cfg) {
        let was = CONFIG.get().expect("set");
        if (was.multiplier, was.offset, was.zero_bin, was.lag_base)
            != (cfg.multiplier, cfg.offset, cfg.zero_bin, cfg.lag_base)
        {
            return Err(PyRuntimeError::new_err(
                "consumer._fold_native configured twice, differently",
            ));
        }
    }
    Ok(())
}

/// consumer.fold.model.event_hash (for tests: the digest must be the same).
#[pyfunction(name = "event_hash")]
fn event_hash_py(event_id: &str) -> i64 {
    event_hash(event_id)
}

/// consumer.fold.sketch.bin_of (for tests: the bins must be the same).
#[pyfunction(name = "bin_of")]
fn bin_of_py(seconds: i64) -> PyResult<i64> {
    Ok(bin_of(config()?, seconds))
}

mod bins_sql;
mod compact;
mod packed_rows;
mod rollup;

#[pymodule]
fn _fold_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(
        bins_sql::install_sqlite_auto_extension,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(packed_rows::pack_rows, m)?)?;
    m.add_function(wrap_pyfunction!(rollup::rollup_rows, m)?)?;
    m.add_function(wrap_pyfunction!(rollup::rollup_copy, m)?)?;
    m.add_function(wrap_pyfunction!(rollup::unpack_facts, m)?)?;
    m.add_class::<rollup::Facts>()?;
    m.add_class::<PartitionFold>()?;
    m.add_function(wrap_pyfunction!(apply_batch, m)?)?;
    m.add_function(wrap_pyfunction!(configure, m)?)?;
    m.add_function(wrap_pyfunction!(event_hash_py, m)?)?;
    m.add_function(wrap_pyfunction!(bin_of_py, m)?)?;
    // the dimensions and distributions of the facts this fold emits (its counters are
    // configured): consumer/fold/native.py refuses to run it beside a registry whose fact
    // layout (consumer.fold.delta.FACT_FIELDS) has others
    m.add("DIMENSIONS", DIMENSIONS.to_vec())?;
    m.add("DISTRIBUTIONS", DISTRIBUTIONS.to_vec())?;
    m.add("MAX_COUNTERS", MAX_COUNTERS)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_hash_is_the_reference_digest() {
        // consumer.fold.model.event_hash: the first 8 bytes of BLAKE2b, little-endian, signed
        assert_eq!(event_hash("evt-1"), 5142162847298372542);
        assert_eq!(event_hash(""), -5426141060434712860);
    }

    #[test]
    fn every_conversation_event_has_its_kind() {
        let names = [
            "conversation.created",
            "conversation.opened",
            "conversation.closed",
            "conversation.snoozed",
            "conversation.assigned",
        ];
        let kinds: Vec<_> = names.iter().map(|n| kind_of(n)).collect();
        assert_eq!(
            kinds,
            [
                Some(CREATED),
                Some(OPENED),
                Some(CLOSED),
                Some(SNOOZED),
                Some(ASSIGNED)
            ]
        );
        assert_eq!(kind_of("message.created"), None);
        assert_eq!(kinds.len(), KINDS);
    }

    #[test]
    fn mem_keys_pack_small_ids_into_one_integer() {
        let key = |a, c| {
            let mut s = Vec::new();
            write_mem_key(&mut s, (a, c));
            String::from_utf8(s).expect("ASCII")
        };
        assert_eq!(key(7, 42), ((7i64 << 32) | 42).to_string());
        assert_eq!(key(1 << 31, 5), "[2147483648,5]");
        assert_eq!(key(-1, 5), "[-1,5]");
    }

    #[test]
    fn floor_to_rounds_down_also_before_1970() {
        assert_eq!(floor_to(3599, 3600).unwrap(), 0);
        assert_eq!(floor_to(-1, 3600).unwrap(), -3600);
        assert_eq!(floor_to(7200, 3600).unwrap(), 7200);
        assert!(floor_to(i64::MIN, 3600).is_err());
    }

    #[test]
    fn last_time_of_reads_a_stored_conversation() {
        assert_eq!(last_time_of("[1700000000,[],[],[]]").unwrap(), 1700000000);
    }
}
