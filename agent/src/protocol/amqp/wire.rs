//! Primitive data of AMQP 0-9-1 (spec §4.2.5, all integers big-endian) and field tables as
//! RabbitMQ encodes them.
//!
//! Field tables follow RabbitMQ, not the letter of the spec (see the "AMQP 0-9-1 Errata" page,
//! section "Field types", and RabbitMQ's own table parser): the spec's 0-9-1 table lists `s` as
//! a short string and `U`/`L` as short and long-long integers, but RabbitMQ (like Qpid) uses `s`
//! for a signed 16-bit integer, has no `U`, decodes both `l` and `L` as a signed 64-bit
//! integer, and adds `x` (byte array, long-uint length). Letters outside this set make the
//! table undecodable: a value's size depends on its type, so nothing after it can be found.

use thiserror::Error;

/// Tables and arrays nest at most this deep. RabbitMQ sets no limit; real messages nest a few
/// levels (`x-death` is an array of tables), so deeper input is hostile or garbage and would
/// otherwise cost unbounded recursion.
pub(super) const MAX_NESTING: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(super) enum WireError {
    #[error("truncated")]
    Truncated,
    #[error("unknown field type {0:#04x}")]
    UnknownFieldType(u8),
    #[error("tables nested deeper than {MAX_NESTING}")]
    TooDeep,
}

/// A cursor over a method's arguments, a property list or a table. Every read is checked.
#[derive(Debug, Clone)]
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(super) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    pub(super) fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(super) fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// short-string: octet length, then that many octets.
    pub(super) fn shortstr(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// long-string (and field-table, field-array, byte array): long-uint length, then octets.
    pub(super) fn longstr(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u32()?;
        // A length beyond the buffer fails in `take`; the conversion cannot lose anything
        // that `take` would accept.
        self.take(usize::try_from(n).map_err(|_| WireError::Truncated)?)
    }

    /// A field-table: validated to `MAX_NESTING`, then skipped; returns its content.
    pub(super) fn table(&mut self) -> Result<&'a [u8], WireError> {
        let content = self.longstr()?;
        walk_table(content, 1, &mut |_, _| {})?;
        Ok(content)
    }
}

/// A field value, as far as the parser cares: strings and byte arrays are exposed, everything
/// else is only validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FieldValue<'a> {
    /// `S`: long string (RabbitMQ does not check it is UTF-8).
    LongString(&'a [u8]),
    /// `x`: byte array (a RabbitMQ/Qpid extension).
    Bytes(&'a [u8]),
    Other,
}

/// Walk the content of a field table at nesting `depth` (1 for a top-level table): every entry
/// is validated, nested tables and arrays included, and `visit` sees the top-level entries.
pub(super) fn walk_table<'a>(
    table: &'a [u8],
    depth: usize,
    visit: &mut dyn FnMut(&'a [u8], FieldValue<'a>),
) -> Result<(), WireError> {
    if depth > MAX_NESTING {
        return Err(WireError::TooDeep);
    }
    let mut r = Reader::new(table);
    while !r.is_empty() {
        let key = r.shortstr()?;
        let value = field_value(&mut r, depth)?;
        visit(key, value);
    }
    Ok(())
}

/// One field value (type octet and value) inside a table or array at nesting `depth`.
fn field_value<'a>(r: &mut Reader<'a>, depth: usize) -> Result<FieldValue<'a>, WireError> {
    let letter = r.u8()?;
    let fixed = match letter {
        b'V' => 0,
        // t boolean, b int8, B uint8
        b't' | b'b' | b'B' => 1,
        // s int16 (RabbitMQ; the spec's short string), u uint16
        b's' | b'u' => 2,
        // I int32, i uint32, f float
        b'I' | b'i' | b'f' => 4,
        // D decimal: scale octet, then a 32-bit value
        b'D' => 5,
        // l and L int64 (RabbitMQ reads both as signed), d double, T timestamp
        b'l' | b'L' | b'd' | b'T' => 8,
        b'S' => return Ok(FieldValue::LongString(r.longstr()?)),
        b'x' => return Ok(FieldValue::Bytes(r.longstr()?)),
        b'F' => {
            walk_table(r.longstr()?, depth + 1, &mut |_, _| {})?;
            return Ok(FieldValue::Other);
        }
        b'A' => {
            walk_array(r.longstr()?, depth + 1)?;
            return Ok(FieldValue::Other);
        }
        other => return Err(WireError::UnknownFieldType(other)),
    };
    r.take(fixed)?;
    Ok(FieldValue::Other)
}

/// A field-array: values with their type octets, no keys.
fn walk_array(array: &[u8], depth: usize) -> Result<(), WireError> {
    if depth > MAX_NESTING {
        return Err(WireError::TooDeep);
    }
    let mut r = Reader::new(array);
    while !r.is_empty() {
        field_value(&mut r, depth)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &[u8]) -> Vec<u8> {
        let mut v = vec![key.len() as u8];
        v.extend_from_slice(key.as_bytes());
        v.extend_from_slice(value);
        v
    }

    fn long(letter: u8, content: &[u8]) -> Vec<u8> {
        let mut v = vec![letter];
        v.extend_from_slice(&(content.len() as u32).to_be_bytes());
        v.extend_from_slice(content);
        v
    }

    fn collect(table: &[u8]) -> Result<Vec<(Vec<u8>, FieldValue<'_>)>, WireError> {
        let mut seen = Vec::new();
        walk_table(table, 1, &mut |k, v| seen.push((k.to_vec(), v)))?;
        Ok(seen)
    }

    #[test]
    fn every_rabbitmq_field_type() {
        let mut t = Vec::new();
        for (k, v) in [
            ("t", &b"t\x01"[..]),
            ("b", b"b\xfb"),
            ("B", b"B\xfa"),
            ("s", b"s\xfe\xd4"),
            ("u", b"u\xfd\xe8"),
            ("I", b"I\xff\xfe\xee\x90"),
            ("i", b"i\xee\x6b\x28\x00"),
            ("l", b"l\x00\x00\x01\x00\x00\x00\x00\x00"),
            ("L", b"L\xff\xfc\x00\x00\x00\x00\x00\x00"),
            ("f", b"f\x3f\xa0\x00\x00"),
            ("d", b"d\x40\x04\x00\x00\x00\x00\x00\x00"),
            ("D", b"D\x02\x00\x00\x01\x3a"),
            ("T", b"T\x00\x00\x00\x00\x65\x93\x7e\x45"),
            ("V", b"V"),
        ] {
            t.extend(entry(k, v));
        }
        t.extend(entry("S", &long(b'S', b"text")));
        t.extend(entry("x", &long(b'x', b"\x00\xff")));
        let inner = entry("n", &long(b'S', b"deep"));
        t.extend(entry("F", &long(b'F', &inner)));
        let array = [&b"I\x00\x00\x00\x01"[..], b"V", &long(b'S', b"a"), b"t\x00"].concat();
        t.extend(entry("A", &long(b'A', &array)));
        let seen = collect(&t).expect("valid table");
        assert_eq!(seen.len(), 18);
        assert_eq!(seen[14], (b"S".to_vec(), FieldValue::LongString(b"text")));
        assert_eq!(seen[15], (b"x".to_vec(), FieldValue::Bytes(b"\x00\xff")));
        assert_eq!(seen[16].1, FieldValue::Other);
    }

    #[test]
    fn spec_only_letters_are_unknown() {
        // 'U' (spec short-int) does not exist for RabbitMQ; nor do made-up letters.
        for letter in [b'U', b'c', b'?', 0] {
            let t = entry("k", &[letter, 0, 0, 0, 0]);
            assert_eq!(collect(&t), Err(WireError::UnknownFieldType(letter)));
        }
        // 's' is an int16, not a short string: "s\x05hello" leaves "llo" as a broken entry.
        let t = entry("k", b"s\x05hello");
        assert!(collect(&t).is_err());
    }

    #[test]
    fn lengths_that_lie_are_truncation() {
        let t = entry("k", b"S\x00\x00\x00\x09abc");
        assert_eq!(collect(&t), Err(WireError::Truncated));
        let t = entry("k", b"S\xff\xff\xff\xffabc");
        assert_eq!(collect(&t), Err(WireError::Truncated));
        assert_eq!(collect(b"\x05ab"), Err(WireError::Truncated));
        assert_eq!(collect(&entry("k", b"I\x00")), Err(WireError::Truncated));
        assert_eq!(collect(&entry("k", b"")), Err(WireError::Truncated));
        // A nested table whose content is cut short.
        let t = entry("k", &long(b'F', b"\x01a"));
        assert_eq!(collect(&t), Err(WireError::Truncated));
    }

    #[test]
    fn nesting_is_bounded() {
        fn nest(levels: usize, array: bool) -> Vec<u8> {
            let mut value = b"V".to_vec();
            for _ in 0..levels {
                value = if array {
                    long(b'A', &value)
                } else {
                    long(b'F', &entry("k", &value))
                };
            }
            entry("top", &value)
        }
        for array in [false, true] {
            assert!(collect(&nest(MAX_NESTING - 1, array)).is_ok());
            assert_eq!(
                collect(&nest(MAX_NESTING, array)),
                Err(WireError::TooDeep),
                "array {array}"
            );
            // Far deeper input fails the same way, without deep recursion.
            assert_eq!(collect(&nest(1000, array)), Err(WireError::TooDeep));
        }
    }

    #[test]
    fn reader_primitives() {
        let mut r = Reader::new(
            b"\x01\x00\x02\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00\x04\x02hi\x00\x00\x00\x01z",
        );
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(2));
        assert_eq!(r.u32(), Ok(3));
        assert_eq!(r.u64(), Ok(4));
        assert_eq!(r.shortstr(), Ok(&b"hi"[..]));
        assert_eq!(r.longstr(), Ok(&b"z"[..]));
        assert!(r.is_empty());
        assert_eq!(r.u8(), Err(WireError::Truncated));
        let mut r = Reader::new(b"\x05ab");
        assert_eq!(r.shortstr(), Err(WireError::Truncated));
    }
}
