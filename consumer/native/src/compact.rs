//! A compact in-memory form of an idle conversation: the fold keeps hundreds of thousands
//! of them between events, and their JSON text spent ~20 bytes on each 8-byte event hash
//! in `seen` and ~11 on each time (a mean of 173 bytes per conversation of the closures
//! set on the memory benchmark, 85 MB of its RSS; 394 for the full set).
//!
//! It lives in memory only: the store, snapshots and `conversations()` get the JSON text,
//! made from it on the way out (`to_json`, byte for byte what `PartitionFold::encode`
//! writes). A blob is compact when its first byte is one of the tags (JSON starts with `[`):
//! TAG for `[last, starts, closures, seen]` (the closures set), TAG_FIRSTS with first
//! close, created and assignments after them, TAG_LATEST with the latest event too.
//!
//! Layout after the tag: last; the starts (a count, then each); the seen hashes (a count,
//! then 8 bytes each); the closures (a count, then each: its hash, closed, a flags byte
//! (start, inbox, app present), the channel type, then those present). Then, for
//! TAG_FIRSTS and TAG_LATEST: the first close (a byte: 0 none, 1 without an event id, 2
//! with one; then closed, the id, the hash), created (a byte 0/1, then the time), the
//! assignments (a count, then each: time, id, channel type, a flags byte (inbox, app
//! present), those present); for TAG_LATEST the latest event (a byte 0/1, then time, id,
//! kind byte, channel type, flags, inbox and app present).
//!
//! A closure's or first close's hash is its event's, which `seen` holds unless it was
//! forgotten: a count i + 1 where it is the i-th seen hash, else a 0 and its 8 bytes. A
//! channel type is a length byte (at most MAX_NAME) and its UTF-8 the first time the blob
//! holds it, then a byte NAME_REF + k for the blob's k-th name (a conversation's events
//! share one channel type, so most names are one byte). An event id is a byte 1 and 16
//! bytes where it is a lowercase hyphenated UUID, else a byte 0, its length and its UTF-8.
//! Integers other than hashes are zigzag LEB128 varints, counts plain LEB128.

use super::{
    AssignIn, AssignOut, ClosureIn, ClosureOut, ConvIn, ConvOut, First, LatestIn, LatestOut,
};

pub const TAG: u8 = 0;
pub const TAG_FIRSTS: u8 = 1;
pub const TAG_LATEST: u8 = 2;
const START: u8 = 1;
const INBOX: u8 = 2;
const APP: u8 = 4;
/// The longest channel type name written (longer: the caller keeps the JSON); a byte
/// above it refers to a name written before (`put_name`).
const MAX_NAME: usize = 239;
const NAME_REF: u8 = MAX_NAME as u8 + 1;
/// The names a byte refers to (NAME_REF..=255)
const NAME_REFS: usize = 256 - NAME_REF as usize;

/// A closure to write: (hash, closed, channel type, start, inbox, app).
pub type ClosureRef<'a> = (i64, i64, &'a str, Option<i64>, Option<i64>, Option<i64>);

/// Whether a kept blob is compact (else it is JSON text).
pub fn is_compact(blob: &[u8]) -> bool {
    matches!(blob.first(), Some(&(TAG | TAG_FIRSTS | TAG_LATEST)))
}

/// What a full-set conversation keeps beyond the closures set's: its first close, created
/// time, assignments and, where the gauges are folded, its latest event.
pub struct Firsts<'a> {
    pub first: &'a Option<First>,
    pub created: Option<i64>,
    pub assigns: Vec<AssignOut<'a>>,
    /// None: the state keeps no latest event (no gauges); Some(None): none yet
    pub latest: Option<Option<LatestOut<'a>>>,
}

fn put_count(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_int(out: &mut Vec<u8>, v: i64) {
    put_count(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// The compact blob of a conversation of the closures set. None when a channel type name
/// is longer than MAX_NAME bytes (the caller keeps the JSON then).
pub fn encode<'a>(
    last: i64,
    starts: &[i64],
    closures: impl ExactSizeIterator<Item = ClosureRef<'a>>,
    seen: &[i64],
) -> Option<Box<[u8]>> {
    let mut out = Vec::with_capacity(16 + 8 * seen.len() + 32 * closures.len());
    out.push(TAG);
    put_core(&mut out, &mut Vec::new(), last, starts, closures, seen)?;
    Some(out.into_boxed_slice())
}

/// The compact blob of a full-set conversation (TAG_FIRSTS, or TAG_LATEST with a latest
/// event kept). None when a channel type name is longer than MAX_NAME bytes.
pub fn encode_full<'a>(
    last: i64,
    starts: &[i64],
    closures: impl ExactSizeIterator<Item = ClosureRef<'a>>,
    seen: &[i64],
    firsts: &Firsts<'_>,
) -> Option<Box<[u8]>> {
    let mut out = Vec::with_capacity(64 + 8 * seen.len() + 32 * closures.len());
    out.push(if firsts.latest.is_some() {
        TAG_LATEST
    } else {
        TAG_FIRSTS
    });
    let mut names = Vec::new();
    put_core(&mut out, &mut names, last, starts, closures, seen)?;
    match firsts.first {
        None => out.push(0),
        Some(First(closed, id, hash)) => {
            out.push(if id.is_some() { 2 } else { 1 });
            put_int(&mut out, *closed);
            if let Some(id) = id {
                put_id(&mut out, id);
            }
            put_hash(&mut out, seen, *hash);
        }
    }
    put_opt(&mut out, firsts.created);
    put_count(&mut out, firsts.assigns.len() as u64);
    for &(t, id, ch, inbox, app) in &firsts.assigns {
        put_int(&mut out, t);
        put_id(&mut out, id);
        put_name(&mut out, &mut names, ch)?;
        put_flagged(&mut out, &[inbox, app]);
    }
    if let Some(latest) = firsts.latest {
        match latest {
            None => out.push(0),
            Some((t, id, kind, ch, inbox, app)) => {
                out.push(1);
                put_int(&mut out, t);
                put_id(&mut out, id);
                out.push(kind);
                put_name(&mut out, &mut names, ch)?;
                put_flagged(&mut out, &[inbox, app]);
            }
        }
    }
    Some(out.into_boxed_slice())
}

fn put_core<'n, 'a: 'n>(
    out: &mut Vec<u8>,
    names: &mut Vec<&'n str>,
    last: i64,
    starts: &[i64],
    closures: impl ExactSizeIterator<Item = ClosureRef<'a>>,
    seen: &[i64],
) -> Option<()> {
    put_int(out, last);
    put_count(out, starts.len() as u64);
    for &s in starts {
        put_int(out, s);
    }
    put_count(out, seen.len() as u64);
    for &h in seen {
        out.extend_from_slice(&h.to_le_bytes());
    }
    put_count(out, closures.len() as u64);
    for (hash, closed, ch, start, inbox, app) in closures {
        put_hash(out, seen, hash);
        put_int(out, closed);
        let bit = |present: bool, b: u8| if present { b } else { 0 };
        let flags =
            bit(start.is_some(), START) | bit(inbox.is_some(), INBOX) | bit(app.is_some(), APP);
        out.push(flags);
        put_name(out, names, ch)?;
        for v in [start, inbox, app].into_iter().flatten() {
            put_int(out, v);
        }
    }
    Some(())
}

/// An event hash: its place among the seen hashes (i + 1), else 0 and its 8 bytes.
fn put_hash(out: &mut Vec<u8>, seen: &[i64], hash: i64) {
    match seen.iter().position(|&h| h == hash) {
        Some(i) => put_count(out, i as u64 + 1),
        None => {
            out.push(0);
            out.extend_from_slice(&hash.to_le_bytes());
        }
    }
}

/// A channel type: NAME_REF + k where it is the k-th name the blob holds (`names`), else
/// a length byte and its UTF-8 (None when longer than MAX_NAME bytes).
fn put_name<'a>(out: &mut Vec<u8>, names: &mut Vec<&'a str>, name: &'a str) -> Option<()> {
    if let Some(k) = names.iter().take(NAME_REFS).position(|n| *n == name) {
        out.push(NAME_REF + k as u8);
        return Some(());
    }
    if name.len() > MAX_NAME {
        return None;
    }
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    names.push(name);
    Some(())
}

/// A byte 0 (None) or 1 and the value.
fn put_opt(out: &mut Vec<u8>, v: Option<i64>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put_int(out, v);
        }
    }
}

/// A flags byte (bit i: the i-th value present), then those present.
fn put_flagged(out: &mut Vec<u8>, values: &[Option<i64>]) {
    let flags = values
        .iter()
        .enumerate()
        .fold(0u8, |f, (i, v)| if v.is_some() { f | (1 << i) } else { f });
    out.push(flags);
    for v in values.iter().flatten() {
        put_int(out, *v);
    }
}

const HYPHENS: [usize; 4] = [8, 13, 18, 23];

/// An event id: 16 bytes where it is a lowercase hyphenated UUID (what it reads back as
/// exactly), else its text.
fn put_id(out: &mut Vec<u8>, id: &str) {
    if let Some(raw) = uuid_bytes(id) {
        out.push(1);
        out.extend_from_slice(&raw);
    } else {
        out.push(0);
        put_count(out, id.len() as u64);
        out.extend_from_slice(id.as_bytes());
    }
}

fn uuid_bytes(id: &str) -> Option<[u8; 16]> {
    let b = id.as_bytes();
    if b.len() != 36 || HYPHENS.iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 16];
    let mut digits = b.iter().enumerate().filter(|(i, _)| !HYPHENS.contains(i));
    for byte in &mut out {
        let hi = nibble(*digits.next()?.1)?;
        let lo = nibble(*digits.next()?.1)?;
        *byte = hi << 4 | lo;
    }
    Some(out)
}

fn uuid_text(raw: &[u8]) -> String {
    let mut s = String::with_capacity(36);
    for (i, byte) in raw.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    /// the channel type names read so far (`put_name`'s references)
    names: Vec<&'a str>,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader {
            b,
            at: 1,
            names: Vec::new(),
        }
    }

    fn byte(&mut self) -> Result<u8, String> {
        let v = *self
            .b
            .get(self.at)
            .ok_or("a compact conversation ends early")?;
        self.at += 1;
        Ok(v)
    }

    fn count(&mut self) -> Result<u64, String> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(n);
            }
        }
        Err("a compact conversation's varint is too long".into())
    }

    fn int(&mut self) -> Result<i64, String> {
        let z = self.count()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    fn len(&mut self) -> Result<usize, String> {
        let n = usize::try_from(self.count()?).map_err(|e| e.to_string())?;
        if n > self.b.len() {
            return Err("a compact conversation's count is past its end".into());
        }
        Ok(n)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or("a compact conversation ends early")?;
        let out = &self.b[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn hash(&mut self) -> Result<i64, String> {
        let raw = self.bytes(8)?;
        Ok(i64::from_le_bytes(raw.try_into().expect("8 bytes")))
    }

    /// An event hash (`put_hash`), given the seen hashes read before it.
    fn hash_in(&mut self, seen: &[i64]) -> Result<i64, String> {
        match usize::try_from(self.count()?).map_err(|e| e.to_string())? {
            0 => self.hash(),
            i => seen
                .get(i - 1)
                .copied()
                .ok_or_else(|| "a compact conversation's hash refers past its seen ones".into()),
        }
    }

    fn name(&mut self) -> Result<String, String> {
        let b = self.byte()?;
        if b >= NAME_REF {
            let k = usize::from(b - NAME_REF);
            return self.names.get(k).map(|n| (*n).to_owned()).ok_or_else(|| {
                format!("a compact conversation refers to channel type {k} before it")
            });
        }
        let name = self.str(usize::from(b))?;
        self.names.push(name);
        Ok(name.to_owned())
    }

    fn str(&mut self, len: usize) -> Result<&'a str, String> {
        std::str::from_utf8(self.bytes(len)?).map_err(|e| e.to_string())
    }

    fn text(&mut self, len: usize) -> Result<String, String> {
        self.str(len).map(str::to_owned)
    }

    fn id(&mut self) -> Result<String, String> {
        match self.byte()? {
            1 => Ok(uuid_text(self.bytes(16)?)),
            0 => {
                let n = self.len()?;
                self.text(n)
            }
            other => Err(format!(
                "a compact conversation has an event id marked {other}"
            )),
        }
    }

    fn opt(&mut self) -> Result<Option<i64>, String> {
        match self.byte()? {
            0 => Ok(None),
            _ => self.int().map(Some),
        }
    }

    /// A flags byte and the values it marks present (`n` of them at most).
    fn flagged<const N: usize>(&mut self) -> Result<[Option<i64>; N], String> {
        let flags = self.byte()?;
        let mut out = [None; N];
        for (i, v) in out.iter_mut().enumerate() {
            if flags & (1 << i) != 0 {
                *v = Some(self.int()?);
            }
        }
        Ok(out)
    }
}

/// The last event time of a compact blob (the first field after TAG).
pub fn last_time(blob: &[u8]) -> Result<i64, String> {
    Reader::new(blob).int()
}

/// A compact blob read back as a stored conversation.
pub fn decode(blob: &[u8]) -> Result<ConvIn, String> {
    let tag = *blob.first().ok_or("a compact conversation is empty")?;
    let mut r = Reader::new(blob);
    let last = r.int()?;
    let n = r.len()?;
    let starts = (0..n).map(|_| r.int()).collect::<Result<Vec<_>, _>>()?;
    let n = r.len()?;
    let seen = (0..n).map(|_| r.hash()).collect::<Result<Vec<_>, _>>()?;
    let n = r.len()?;
    let mut closures = Vec::with_capacity(n);
    for _ in 0..n {
        let hash = r.hash_in(&seen)?;
        let closed = r.int()?;
        let flags = r.byte()?;
        let ch = r.name()?;
        let mut opt = |bit: u8| -> Result<Option<i64>, String> {
            if flags & bit != 0 {
                r.int().map(Some)
            } else {
                Ok(None)
            }
        };
        let (start, inbox, app) = (opt(START)?, opt(INBOX)?, opt(APP)?);
        closures.push(ClosureIn(hash, closed, ch, start, inbox, app));
    }
    let (firsts, latest) = if tag == TAG {
        (None, None)
    } else {
        let first = match r.byte()? {
            0 => None,
            marker => {
                let closed = r.int()?;
                let id = if marker == 2 { Some(r.id()?) } else { None };
                Some(First(closed, id, r.hash_in(&seen)?))
            }
        };
        let created = r.opt()?;
        let n = r.len()?;
        let mut assigns = Vec::with_capacity(n);
        for _ in 0..n {
            let (t, id, ch) = (r.int()?, r.id()?, r.name()?);
            let [inbox, app] = r.flagged::<2>()?;
            assigns.push(AssignIn(t, id, ch, inbox, app));
        }
        let latest = if tag == TAG_LATEST {
            Some(match r.byte()? {
                0 => None,
                _ => {
                    let (t, id, kind, ch) = (r.int()?, r.id()?, r.byte()?, r.name()?);
                    let [inbox, app] = r.flagged::<2>()?;
                    Some(LatestIn(t, id, kind, ch, inbox, app))
                }
            })
        } else {
            None
        };
        (Some((first, created, assigns)), latest)
    };
    if r.at != blob.len() {
        return Err("a compact conversation has bytes after its end".into());
    }
    Ok(ConvIn(last, starts, closures, seen, firsts, latest))
}

/// The JSON text of a compact blob: what `PartitionFold::encode` writes for the same state.
pub fn to_json(blob: &[u8]) -> Result<String, String> {
    let c = decode(blob)?;
    let closures =
        c.2.iter()
            .map(|ClosureIn(hash, closed, ch, start, inbox, app)| {
                ClosureOut::of(*hash, *closed, ch, *start, *inbox, *app)
            })
            .collect();
    let firsts = c.4.as_ref().map(|(first, created, assigns)| Firsts {
        first,
        created: *created,
        assigns: assigns
            .iter()
            .map(|AssignIn(t, id, ch, inbox, app)| (*t, id.as_str(), ch.as_str(), *inbox, *app))
            .collect(),
        latest: c.5.as_ref().map(|latest| {
            latest
                .as_ref()
                .map(|LatestIn(t, id, kind, ch, inbox, app)| {
                    (*t, id.as_str(), *kind, ch.as_str(), *inbox, *app)
                })
        }),
    });
    let out = ConvOut::of(c.0, &c.1, closures, &c.3, firsts);
    serde_json::to_string(&out).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compact_conversation_reads_back_as_its_json() {
        let closures = [
            (i64::MIN, -5, "TELEGRAM", Some(-1), None, None),
            (i64::MAX, 1 << 40, "", None, Some(7), None),
            (-1, 0, "VIBER", Some(i64::MIN), None, Some(i64::MAX)),
        ];
        let blob = encode(
            i64::MAX,
            &[i64::MIN, 0, 63, 64, -65],
            closures.into_iter(),
            &[0, -1, 5],
        )
        .expect("short names");
        assert_eq!(blob[0], TAG);
        assert_eq!(last_time(&blob).unwrap(), i64::MAX);
        assert_eq!(
            to_json(&blob).unwrap(),
            format!(
                "[{},[{},0,63,64,-65],[[{},-5,\"TELEGRAM\",-1],[{},1099511627776,\"\",null,7,null],\
                 [-1,0,\"VIBER\",{},null,{}]],[0,-1,5]]",
                i64::MAX,
                i64::MIN,
                i64::MIN,
                i64::MAX,
                i64::MIN,
                i64::MAX
            )
        );
        let empty = encode(0, &[], std::iter::empty(), &[]).unwrap();
        assert_eq!(to_json(&empty).unwrap(), "[0,[],[],[]]");
        assert!(decode(&blob[..blob.len() - 1]).is_err()); // cut short
        let mut longer = blob.to_vec();
        longer.push(0);
        assert!(decode(&longer).is_err()); // trailing bytes
        let long_name = "x".repeat(256);
        let one = [(1, 2, long_name.as_str(), None, None, None)];
        assert!(encode(0, &[], one.into_iter(), &[]).is_none());
    }

    #[test]
    fn names_and_hashes_are_written_once() {
        let round_trip = |closures: &[ClosureRef<'_>], seen: &[i64]| {
            let blob = encode(9, &[], closures.iter().copied(), seen).expect("short names");
            let out: Vec<ClosureOut<'_>> = closures
                .iter()
                .map(|&(h, c, ch, s, i, a)| ClosureOut::of(h, c, ch, s, i, a))
                .collect();
            let json = serde_json::to_string(&ConvOut::of(9, &[], out, seen, None)).unwrap();
            assert_eq!(to_json(&blob).unwrap(), json);
            blob.len()
        };
        // a seen hash is a count, another one 9 bytes; a repeated name one byte
        let one = round_trip(&[(7, 1, "VIBER", None, None, None)], &[7]);
        assert_eq!(
            round_trip(&[(8, 1, "VIBER", None, None, None)], &[7]),
            one + 8
        );
        let two = round_trip(
            &[
                (7, 1, "VIBER", None, None, None),
                (7, 1, "VIBER", None, None, None),
            ],
            &[7],
        );
        assert_eq!(two, one + 1 + 1 + 1 + 1); // hash ref, closed, flags, name ref
        // the boundaries: MAX_NAME bytes written, one more keeps the JSON; more names
        // than a byte refers to are written out again, and every one reads back
        let longest = "x".repeat(MAX_NAME);
        round_trip(&[(1, 2, longest.as_str(), None, None, None)], &[]);
        let longer = "x".repeat(MAX_NAME + 1);
        let too_long = [(1, 2, longer.as_str(), None, None, None)];
        assert!(encode(0, &[], too_long.into_iter(), &[]).is_none());
        let names: Vec<String> = (0..40).map(|i| format!("C{i}")).collect();
        let many: Vec<ClosureRef<'_>> = names
            .iter()
            .chain(names.iter())
            .map(|n| (1, 2, n.as_str(), None, None, None))
            .collect();
        round_trip(&many, &[1]);
        // a reference to a name or hash the blob does not hold is an error, not a guess
        let mut valid = vec![TAG, 0, 0, 1, 7, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 0, 1, b'V'];
        assert_eq!(to_json(&valid).unwrap(), "[0,[],[[7,1,\"V\",null]],[7]]");
        valid.truncate(valid.len() - 2);
        valid.push(NAME_REF); // the closure's channel type refers to a name never written
        assert!(decode(&valid).is_err());
        assert!(decode(&[TAG, 0, 0, 0, 1, 2, 2, 0, 0]).is_err());
        assert!(decode(&[TAG, 0, 0, 0, 1, 0, 2, 0, 0]).is_err()); // hash 0: 8 bytes follow
    }

    fn full_json(firsts: &Firsts<'_>, closures: &[ClosureRef<'_>], seen: &[i64]) -> String {
        let out: Vec<ClosureOut<'_>> = closures
            .iter()
            .map(|&(h, c, ch, s, i, a)| ClosureOut::of(h, c, ch, s, i, a))
            .collect();
        let f = Firsts {
            first: firsts.first,
            created: firsts.created,
            assigns: firsts.assigns.clone(),
            latest: firsts.latest,
        };
        let conv = ConvOut::of(-3, &[1, 2], out, seen, Some(f));
        serde_json::to_string(&conv).unwrap()
    }

    #[test]
    fn a_compact_full_conversation_reads_back_as_its_json() {
        let uuid = "00603a60-04d5-4fef-97dc-646a5d935cb3";
        let upper = "00603A60-04D5-4FEF-97DC-646A5D935CB3"; // not what it would read back as
        let odd = "evt-\u{e9}\"quoted\"";
        let not_hex = "00603a60-04d5-4fef-97dc-646a5d935cbz";
        let firsts_of = [
            Some(First(1_700_000_000, Some(uuid.to_owned()), i64::MIN)),
            Some(First(-1, None, 5)),
            Some(First(7, Some(odd.to_owned()), -1)),
            Some(First(7, Some(String::new()), 0)),
            None,
        ];
        let closures = [
            (i64::MAX, 1 << 40, "TELEGRAM", Some(-1), Some(3), None),
            (-1, 0, "", None, None, Some(i64::MIN)),
        ];
        for (i, first) in firsts_of.iter().enumerate() {
            let assigns = vec![
                (5, uuid, "VIBER", Some(1), Some(2)),
                (-5, upper, "", None, None),
                (i64::MAX, not_hex, "X", None, Some(i64::MAX)),
                (0, odd, "TELEGRAM", Some(i64::MIN), None),
            ];
            let latests = [
                None,
                Some(None),
                Some(Some((9, uuid, 2u8, "VIBER", None, Some(4)))),
                Some(Some((i64::MIN, upper, 255u8, "", Some(0), None))),
            ];
            for latest in latests {
                let firsts = Firsts {
                    first,
                    created: if i % 2 == 0 { Some(-(i as i64)) } else { None },
                    assigns: assigns[..i.min(assigns.len())].to_vec(),
                    latest,
                };
                let blob = encode_full(-3, &[1, 2], closures.into_iter(), &[0, -1], &firsts)
                    .expect("short names");
                assert_eq!(
                    blob[0],
                    if latest.is_some() {
                        TAG_LATEST
                    } else {
                        TAG_FIRSTS
                    }
                );
                assert!(is_compact(&blob));
                assert_eq!(last_time(&blob).unwrap(), -3);
                assert_eq!(
                    to_json(&blob).unwrap(),
                    full_json(&firsts, &closures, &[0, -1])
                );
                assert!(decode(&blob[..blob.len() - 1]).is_err()); // cut short
                let mut longer = blob.to_vec();
                longer.push(0);
                assert!(decode(&longer).is_err()); // trailing bytes
            }
        }
        // a UUID takes 17 bytes, other ids their text
        let with = |id: &str| {
            let f = Firsts {
                first: &None,
                created: None,
                assigns: vec![(0, id, "", None, None)],
                latest: None,
            };
            encode_full(0, &[], std::iter::empty(), &[], &f)
                .unwrap()
                .len()
        };
        assert_eq!(with(upper) - with(uuid), 36 + 1 - 16);
        let long_name = "x".repeat(256);
        let f = Firsts {
            first: &None,
            created: None,
            assigns: vec![(0, uuid, long_name.as_str(), None, None)],
            latest: None,
        };
        assert!(encode_full(0, &[], std::iter::empty(), &[], &f).is_none());
    }
}
