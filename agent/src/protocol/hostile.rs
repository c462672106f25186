//! Worst-case inputs for the parsers' bounds on work and memory, built from their wire formats.
//! Shared by the unit tests that check each bound and the benchmarks that print what the worst
//! case costs per input byte; not used by the agent itself.

/// RFC 7541 section 5.1: `value` as an integer with a `prefix`-bit prefix, the first byte's
/// other bits set to `flags`.
pub fn hpack_integer(out: &mut Vec<u8>, flags: u8, prefix: u8, mut value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A raw (not Huffman) string literal (section 5.2).
fn hpack_string(out: &mut Vec<u8>, s: &[u8]) {
    hpack_integer(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// An indexed field (section 6.1).
pub fn hpack_index(index: usize) -> Vec<u8> {
    let mut v = Vec::new();
    hpack_integer(&mut v, 0x80, 7, index);
    v
}

/// A request block of `total` bytes: `:method GET`, `:scheme http`, a literal with incremental
/// indexing `name: <big bytes>`, then one-byte references to that entry (index 62) to the end.
/// Copying each referenced field would cost `big` bytes per input byte.
pub fn hpack_reference_flood(total: usize, name: &str, big: usize) -> Vec<u8> {
    let mut v = vec![0x82, 0x86];
    hpack_integer(&mut v, 0x40, 6, 0);
    hpack_string(&mut v, name.as_bytes());
    hpack_string(&mut v, &vec![b'a'; big]);
    v.resize(total.max(v.len()), 0xbe);
    v
}

/// A block of `total` bytes: a literal with incremental indexing whose name is `big` bytes,
/// then two-byte literals with incremental indexing naming the newest entry (index 62) with an
/// empty value. Copying the name per insertion would cost `big / 2` bytes per input byte.
pub fn hpack_name_reference_flood(total: usize, big: usize) -> Vec<u8> {
    let mut v = Vec::new();
    hpack_integer(&mut v, 0x40, 6, 0);
    hpack_string(&mut v, &vec![b'n'; big]);
    hpack_string(&mut v, b"");
    while v.len() + 2 <= total {
        v.extend_from_slice(&[0x7e, 0x00]);
    }
    v
}

/// A size update to `size`, then literals with incremental indexing of `entry`-byte values
/// until `size` is more than full.
pub fn hpack_table_fill(size: usize, entry: usize) -> Vec<u8> {
    let mut v = Vec::new();
    hpack_integer(&mut v, 0x20, 5, size);
    let value = vec![b'v'; entry];
    for _ in 0..size / entry + 10 {
        hpack_integer(&mut v, 0x40, 6, 0);
        hpack_string(&mut v, b"x");
        hpack_string(&mut v, &value);
    }
    v
}

/// An HTTP/2 frame (RFC 9113 section 4.1).
pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    v.extend([kind, flags]);
    v.extend(stream.to_be_bytes());
    v.extend(payload);
    v
}

/// A client's preface, empty SETTINGS, then `block` as stream 1's request headers: one HEADERS
/// frame and as many CONTINUATION frames as the default frame size needs.
pub fn h2_request_with_block(block: &[u8]) -> Vec<u8> {
    const HEADERS: u8 = 1;
    const CONTINUATION: u8 = 9;
    const END_STREAM: u8 = 1;
    const END_HEADERS: u8 = 4;
    let mut v = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    v.extend(h2_frame(4, 0, 0, &[]));
    let chunks: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    for (i, c) in chunks.iter().enumerate() {
        let last = if i + 1 == chunks.len() {
            END_HEADERS
        } else {
            0
        };
        if i == 0 {
            v.extend(h2_frame(HEADERS, END_STREAM | last, 1, c));
        } else {
            v.extend(h2_frame(CONTINUATION, last, 1, c));
        }
    }
    v
}
