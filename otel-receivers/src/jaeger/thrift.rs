//! A bounded Thrift reader for the binary and compact protocols: a message or struct is
//! read into a generic tree, which `model` maps to Jaeger's types.
//!
//! Written here rather than taken from the `thrift` crate, whose protocols allocate a
//! string or list of the length a client declares before reading it: four crafted bytes
//! ask for gigabytes. Here every declared length is checked against the bytes that are
//! left (each element takes at least one), and nesting is bounded.

/// A Thrift value, with the protocols' types folded together.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TValue {
    Bool(bool),
    /// byte, i16, i32 and i64.
    Int(i64),
    Double(f64),
    Binary(Vec<u8>),
    /// Fields by id, in the order read.
    Struct(Vec<(i16, TValue)>),
    /// Lists and sets.
    List(Vec<TValue>),
    Map(Vec<(TValue, TValue)>),
}

impl TValue {
    /// Field `id` of a struct.
    pub(crate) fn field(&self, id: i16) -> Option<&TValue> {
        match self {
            Self::Struct(fields) => fields.iter().rev().find(|(i, _)| *i == id).map(|(_, v)| v),
            _ => None,
        }
    }

    pub(crate) fn int(&self, id: i16) -> Option<i64> {
        match self.field(id)? {
            Self::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub(crate) fn string(&self, id: i16) -> Option<String> {
        match self.field(id)? {
            Self::Binary(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    pub(crate) fn list(&self, id: i16) -> &[TValue] {
        match self.field(id) {
            Some(Self::List(l)) => l,
            _ => &[],
        }
    }
}

/// The protocol of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Binary,
    Compact,
}

/// The deepest nesting read; Jaeger's batches are four deep.
const MAX_DEPTH: usize = 32;

// Binary-protocol type ids, which the tree's reader uses for both protocols.
const T_BOOL: u8 = 2;
const T_BYTE: u8 = 3;
const T_DOUBLE: u8 = 4;
const T_I16: u8 = 6;
const T_I32: u8 = 8;
const T_I64: u8 = 10;
const T_STRING: u8 = 11;
const T_STRUCT: u8 = 12;
const T_MAP: u8 = 13;
const T_SET: u8 = 14;
const T_LIST: u8 = 15;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    protocol: Protocol,
    /// Compact: the last field id of each struct being read.
    last_field: Vec<i16>,
    /// Compact: a boolean field's value, carried in its header.
    pending_bool: Option<bool>,
    /// Values that may still be read: one per two bytes of input. Real Jaeger batches
    /// take three or more bytes per value; a payload of empty structs, one byte each,
    /// would otherwise become forty times its size in memory.
    budget: usize,
}

type R<T> = Result<T, String>;

/// The values a payload of `len` bytes may hold (see `Reader::budget`).
fn budget(len: usize) -> usize {
    len / 2 + 64
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        if n > self.left() {
            return Err(format!(
                "{n} bytes declared at offset {}, {} left",
                self.pos,
                self.left()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn byte(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> R<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a varint runs past 10 bytes".into())
    }

    fn zigzag(&mut self) -> R<i64> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn be_i32(&mut self) -> R<i32> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A declared element count, bounded by the bytes left (an element takes at least
    /// one byte).
    fn count(&mut self, n: i64) -> R<usize> {
        match usize::try_from(n) {
            Ok(n) if n <= self.left() => Ok(n),
            _ => Err(format!(
                "a collection of {n} elements declared with {} bytes left",
                self.left()
            )),
        }
    }

    /// Map a compact type id to the binary protocol's.
    fn compact_type(t: u8) -> R<u8> {
        Ok(match t {
            1 | 2 => T_BOOL,
            3 => T_BYTE,
            4 => T_I16,
            5 => T_I32,
            6 => T_I64,
            7 => T_DOUBLE,
            8 => T_STRING,
            9 => T_LIST,
            10 => T_SET,
            11 => T_MAP,
            12 => T_STRUCT,
            other => return Err(format!("unknown compact type {other}")),
        })
    }

    fn value(&mut self, t: u8, depth: usize) -> R<TValue> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH}"));
        }
        self.budget = self.budget.checked_sub(1).ok_or_else(|| {
            "more values than a payload of this size holds (one per two bytes)".to_string()
        })?;
        let compact = self.protocol == Protocol::Compact;
        Ok(match t {
            T_BOOL => match self.pending_bool.take() {
                Some(b) => TValue::Bool(b),
                None => TValue::Bool(self.byte()? == 1),
            },
            T_BYTE => TValue::Int(i64::from(self.byte()? as i8)),
            T_I16 | T_I32 | T_I64 if compact => TValue::Int(self.zigzag()?),
            T_I16 => {
                let b = self.take(2)?;
                TValue::Int(i64::from(i16::from_be_bytes([b[0], b[1]])))
            }
            T_I32 => TValue::Int(i64::from(self.be_i32()?)),
            T_I64 => {
                let b = self.take(8)?;
                TValue::Int(i64::from_be_bytes(b.try_into().unwrap_or_default()))
            }
            T_DOUBLE => {
                let b: [u8; 8] = self.take(8)?.try_into().unwrap_or_default();
                TValue::Double(if compact {
                    f64::from_le_bytes(b)
                } else {
                    f64::from_be_bytes(b)
                })
            }
            T_STRING => {
                let n = if compact {
                    self.varint()? as i64
                } else {
                    i64::from(self.be_i32()?)
                };
                let n = self.count(n)?;
                TValue::Binary(self.take(n)?.to_vec())
            }
            T_STRUCT => self.structure(depth + 1)?,
            T_LIST | T_SET => {
                let (elem, n) = if compact {
                    let h = self.byte()?;
                    let n = match h >> 4 {
                        15 => self.varint()? as i64,
                        n => i64::from(n),
                    };
                    (Self::compact_type(h & 0x0f)?, n)
                } else {
                    let elem = self.byte()?;
                    (elem, i64::from(self.be_i32()?))
                };
                let n = self.count(n)?;
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    items.push(self.value(elem, depth + 1)?);
                }
                TValue::List(items)
            }
            T_MAP => {
                let (k, v, n) = if compact {
                    let n = self.varint()? as i64;
                    if n == 0 {
                        (0, 0, 0)
                    } else {
                        let kv = self.byte()?;
                        (
                            Self::compact_type(kv >> 4)?,
                            Self::compact_type(kv & 0x0f)?,
                            n,
                        )
                    }
                } else {
                    let k = self.byte()?;
                    let v = self.byte()?;
                    (k, v, i64::from(self.be_i32()?))
                };
                let n = self.count(n)?;
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    let key = self.value(k, depth + 1)?;
                    items.push((key, self.value(v, depth + 1)?));
                }
                TValue::Map(items)
            }
            other => return Err(format!("unknown type {other}")),
        })
    }

    fn structure(&mut self, depth: usize) -> R<TValue> {
        let mut fields = Vec::new();
        self.last_field.push(0);
        loop {
            let (t, id) = match self.protocol {
                Protocol::Binary => {
                    let t = self.byte()?;
                    if t == 0 {
                        break;
                    }
                    let b = self.take(2)?;
                    (t, i16::from_be_bytes([b[0], b[1]]))
                }
                Protocol::Compact => {
                    let h = self.byte()?;
                    if h == 0 {
                        break;
                    }
                    let last = self.last_field.last().copied().unwrap_or_default();
                    let id = match h >> 4 {
                        0 => i16::try_from(self.zigzag()?)
                            .map_err(|_| "a field id out of range".to_string())?,
                        delta => last.wrapping_add(i16::from(delta)),
                    };
                    if let Some(l) = self.last_field.last_mut() {
                        *l = id;
                    }
                    let t = h & 0x0f;
                    if t == 1 || t == 2 {
                        self.pending_bool = Some(t == 1);
                    }
                    (Self::compact_type(t)?, id)
                }
            };
            let v = self.value(t, depth)?;
            fields.push((id, v));
        }
        self.last_field.pop();
        Ok(TValue::Struct(fields))
    }
}

/// Read one struct from `buf` (a thrift_http body).
pub(crate) fn read_struct(buf: &[u8], protocol: Protocol) -> Result<TValue, String> {
    let mut r = Reader {
        buf,
        pos: 0,
        protocol,
        last_field: Vec::new(),
        pending_bool: None,
        budget: budget(buf.len()),
    };
    r.structure(0)
}

/// Read one message (a UDP agent packet): its method name and its arguments struct.
pub(crate) fn read_message(buf: &[u8], protocol: Protocol) -> Result<(String, TValue), String> {
    let mut r = Reader {
        buf,
        pos: 0,
        protocol,
        last_field: Vec::new(),
        pending_bool: None,
        budget: budget(buf.len()),
    };
    let name = match protocol {
        Protocol::Compact => {
            if r.byte()? != 0x82 {
                return Err("not a compact-protocol message (protocol id is not 0x82)".into());
            }
            let vt = r.byte()?;
            if vt & 0x1f != 1 {
                return Err(format!("compact protocol version {} is not 1", vt & 0x1f));
            }
            let _seq = r.varint()?;
            let n = r.varint()? as i64;
            let n = r.count(n)?;
            String::from_utf8_lossy(r.take(n)?).into_owned()
        }
        Protocol::Binary => {
            let first = r.be_i32()?;
            if first < 0 {
                // Strict: version and type, then the name and the sequence id.
                if (first as u32) & 0xffff_0000 != 0x8001_0000 {
                    return Err("binary protocol version is not 1".into());
                }
                let n = r.be_i32()?;
                let n = r.count(i64::from(n))?;
                let name = String::from_utf8_lossy(r.take(n)?).into_owned();
                let _seq = r.be_i32()?;
                name
            } else {
                let n = r.count(i64::from(first))?;
                let name = String::from_utf8_lossy(r.take(n)?).into_owned();
                let _type = r.byte()?;
                let _seq = r.be_i32()?;
                name
            }
        }
    };
    Ok((name, r.structure(0)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TValue {
        TValue::Struct(vec![
            (1, TValue::Int(-5)),
            (2, TValue::Binary(b"name".to_vec())),
            (3, TValue::Bool(true)),
            (4, TValue::Double(1.5)),
            (20, TValue::Bool(false)),
            (
                21,
                TValue::List(vec![
                    TValue::Struct(vec![(1, TValue::Int(i64::MAX))]),
                    TValue::Struct(vec![(1, TValue::Int(i64::MIN))]),
                ]),
            ),
        ])
    }

    #[test]
    fn both_protocols_read_what_they_wrote() {
        for p in [Protocol::Binary, Protocol::Compact] {
            let mut buf = Vec::new();
            write::value(&mut buf, &sample(), p);
            assert_eq!(read_struct(&buf, p).unwrap(), sample(), "{p:?}");
            let msg = write::message("emitBatch", &sample(), p);
            let (name, args) = read_message(&msg, p).unwrap();
            assert_eq!((name.as_str(), args), ("emitBatch", sample()));
        }
    }

    #[test]
    fn lies_about_lengths_and_depth_are_errors_not_allocations() {
        // A string that says it has 2 GB.
        let huge = [11u8, 0, 1, 0x7f, 0xff, 0xff, 0xff, b'x'];
        assert!(
            read_struct(&huge, Protocol::Binary)
                .unwrap_err()
                .contains("declared")
        );
        // A list of a billion structs in a few bytes.
        let list = [15u8, 0, 1, 12, 0x40, 0, 0, 0, 0];
        assert!(read_struct(&list, Protocol::Binary).is_err());
        // Nesting past the bound.
        let mut deep = Vec::new();
        for _ in 0..100 {
            deep.extend_from_slice(&[12, 0, 1]);
        }
        assert!(
            read_struct(&deep, Protocol::Binary)
                .unwrap_err()
                .contains("nested")
        );
        // Every truncation of a valid payload is an error, never a panic.
        for p in [Protocol::Binary, Protocol::Compact] {
            let msg = write::message("emitBatch", &sample(), p);
            for cut in 0..msg.len() {
                assert!(read_message(&msg[..cut], p).is_err());
            }
        }
        assert!(read_message(&[0x82, 0x21, 0, 0], Protocol::Compact).is_err());
        // A list of 100 000 empty structs (one byte each): refused, not 4 MB of values.
        let mut list = vec![15u8, 0, 1, 12];
        list.extend_from_slice(&100_000i32.to_be_bytes());
        list.extend(std::iter::repeat_n(0u8, 100_000));
        list.push(0);
        let err = read_struct(&list, Protocol::Binary).unwrap_err();
        assert!(err.contains("more values"), "{err}");
    }
}

/// Encoders for tests: the inverse of the reader for the values Jaeger uses.
#[cfg(test)]
pub(crate) mod write {
    use super::{Protocol, TValue};

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn zigzag(out: &mut Vec<u8>, v: i64) {
        varint(out, ((v << 1) ^ (v >> 63)) as u64);
    }

    /// The (binary, compact) type ids of a value.
    fn types(v: &TValue) -> (u8, u8) {
        match v {
            TValue::Bool(true) => (2, 1),
            TValue::Bool(false) => (2, 2),
            TValue::Int(_) => (10, 6),
            TValue::Double(_) => (4, 7),
            TValue::Binary(_) => (11, 8),
            TValue::Struct(_) => (12, 12),
            TValue::List(_) => (15, 9),
            TValue::Map(_) => (13, 11),
        }
    }

    pub(crate) fn value(out: &mut Vec<u8>, v: &TValue, p: Protocol) {
        let compact = p == Protocol::Compact;
        match v {
            TValue::Bool(b) => out.push(if *b { 1 } else { 0 }),
            TValue::Int(i) if compact => zigzag(out, *i),
            TValue::Int(i) => out.extend_from_slice(&i.to_be_bytes()),
            TValue::Double(d) if compact => out.extend_from_slice(&d.to_le_bytes()),
            TValue::Double(d) => out.extend_from_slice(&d.to_be_bytes()),
            TValue::Binary(b) => {
                if compact {
                    varint(out, b.len() as u64);
                } else {
                    out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                }
                out.extend_from_slice(b);
            }
            TValue::Struct(fields) => {
                let mut last = 0i16;
                for (id, f) in fields {
                    let (bt, ct) = types(f);
                    if compact {
                        let delta = id - last;
                        if (1..=15).contains(&delta) {
                            out.push(((delta as u8) << 4) | ct);
                        } else {
                            out.push(ct);
                            zigzag(out, i64::from(*id));
                        }
                        last = *id;
                        if matches!(f, TValue::Bool(_)) {
                            continue;
                        }
                    } else {
                        out.push(bt);
                        out.extend_from_slice(&id.to_be_bytes());
                    }
                    value(out, f, p);
                }
                out.push(0);
            }
            TValue::List(items) => {
                let (bt, ct) = items.first().map_or((12, 12), types);
                if compact {
                    if items.len() < 15 {
                        out.push(((items.len() as u8) << 4) | ct);
                    } else {
                        out.push(0xf0 | ct);
                        varint(out, items.len() as u64);
                    }
                } else {
                    out.push(bt);
                    out.extend_from_slice(&(items.len() as i32).to_be_bytes());
                }
                for i in items {
                    value(out, i, p);
                }
            }
            TValue::Map(_) => unreachable!("Jaeger sends no maps"),
        }
    }

    /// A oneway call of `name` with `args`.
    pub(crate) fn message(name: &str, args: &TValue, p: Protocol) -> Vec<u8> {
        let mut out = Vec::new();
        match p {
            Protocol::Compact => {
                out.push(0x82);
                out.push((4 << 5) | 1); // ONEWAY, version 1
                varint(&mut out, 1);
                varint(&mut out, name.len() as u64);
            }
            Protocol::Binary => {
                out.extend_from_slice(&(0x8001_0004u32 as i32).to_be_bytes());
                out.extend_from_slice(&(name.len() as i32).to_be_bytes());
            }
        }
        out.extend_from_slice(name.as_bytes());
        if p == Protocol::Binary {
            out.extend_from_slice(&1i32.to_be_bytes());
        }
        value(&mut out, args, p);
        out
    }
}
