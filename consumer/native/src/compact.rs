//! A compact in-memory form of an idle conversation of the closures set (`[last, starts,
//! closures, seen]`): the fold keeps hundreds of thousands of them between events, and
//! their JSON text spent ~20 bytes on each 8-byte event hash in `seen` (a mean of 173
//! bytes per conversation on the memory benchmark, 85 MB of its RSS).
//!
//! It lives in memory only: the store, snapshots and `conversations()` get the JSON text,
//! made from it on the way out (`to_json`, byte for byte what `PartitionFold::encode`
//! writes). A blob is compact when its first byte is TAG (JSON starts with `[`).
//!
//! Layout after TAG: last; the starts (a count, then each); the closures (a count, then
//! each: its 8 hash bytes, closed, a flags byte (start, inbox, app present), the channel
//! type (length byte, UTF-8), then those present); the seen hashes (a count, then 8 bytes
//! each). Integers other than hashes are zigzag LEB128 varints, counts plain LEB128.

use super::{ClosureIn, ClosureOut, ConvIn, ConvOut};

pub const TAG: u8 = 0;
const START: u8 = 1;
const INBOX: u8 = 2;
const APP: u8 = 4;

/// A closure to write: (hash, closed, channel type, start, inbox, app).
pub type ClosureRef<'a> = (i64, i64, &'a str, Option<i64>, Option<i64>, Option<i64>);

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
/// is longer than a length byte holds (the caller keeps the JSON then).
pub fn encode<'a>(
    last: i64,
    starts: &[i64],
    closures: impl ExactSizeIterator<Item = ClosureRef<'a>>,
    seen: &[i64],
) -> Option<Box<[u8]>> {
    let mut out = Vec::with_capacity(16 + 8 * seen.len() + 32 * closures.len());
    out.push(TAG);
    put_int(&mut out, last);
    put_count(&mut out, starts.len() as u64);
    for &s in starts {
        put_int(&mut out, s);
    }
    put_count(&mut out, closures.len() as u64);
    for (hash, closed, ch, start, inbox, app) in closures {
        out.extend_from_slice(&hash.to_le_bytes());
        put_int(&mut out, closed);
        let bit = |present: bool, b: u8| if present { b } else { 0 };
        let flags =
            bit(start.is_some(), START) | bit(inbox.is_some(), INBOX) | bit(app.is_some(), APP);
        out.push(flags);
        out.push(u8::try_from(ch.len()).ok()?);
        out.extend_from_slice(ch.as_bytes());
        for v in [start, inbox, app].into_iter().flatten() {
            put_int(&mut out, v);
        }
    }
    put_count(&mut out, seen.len() as u64);
    for &h in seen {
        out.extend_from_slice(&h.to_le_bytes());
    }
    Some(out.into_boxed_slice())
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
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

    fn bytes(&mut self, n: usize) -> Result<&[u8], String> {
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
}

/// The last event time of a compact blob (the first field after TAG).
pub fn last_time(blob: &[u8]) -> Result<i64, String> {
    Reader { b: blob, at: 1 }.int()
}

/// A compact blob read back as a stored conversation.
pub fn decode(blob: &[u8]) -> Result<ConvIn, String> {
    let mut r = Reader { b: blob, at: 1 };
    let last = r.int()?;
    let n = r.len()?;
    let starts = (0..n).map(|_| r.int()).collect::<Result<Vec<_>, _>>()?;
    let n = r.len()?;
    let mut closures = Vec::with_capacity(n);
    for _ in 0..n {
        let hash = r.hash()?;
        let closed = r.int()?;
        let flags = r.byte()?;
        let len = usize::from(r.byte()?);
        let ch = std::str::from_utf8(r.bytes(len)?)
            .map_err(|e| e.to_string())?
            .to_owned();
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
    let n = r.len()?;
    let seen = (0..n).map(|_| r.hash()).collect::<Result<Vec<_>, _>>()?;
    if r.at != blob.len() {
        return Err("a compact conversation has bytes after its end".into());
    }
    Ok(ConvIn(last, starts, closures, seen, None, None))
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
    serde_json::to_string(&ConvOut::Short(c.0, &c.1, closures, &c.3)).map_err(|e| e.to_string())
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
}
