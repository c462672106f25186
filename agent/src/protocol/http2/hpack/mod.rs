//! HPACK header block decoding (RFC 7541), one [`Decoder`] per direction.
//!
//! Owns the wire representations (section 6), integer and string literals (section 5),
//! Huffman decoding (`huffman`, Appendix B) and the tables (`table`, section 2.3). It does not
//! own deciding which fields matter (`super::stream`) or assembling header blocks out of
//! HEADERS/CONTINUATION frames (`super`).
//!
//! Joining mid-connection: the decoder starts "unsynced", with an empty dynamic table. A
//! reference to a dynamic entry it never saw yields an unknown field (never a guess, never an
//! error); insertions are still applied so that later blocks can refer to them. Once synced
//! (the connection was seen from its start), such a reference is a decoding error.
//!
//! Work and memory are linear in the bytes received, whatever a peer sends: fields are handed
//! out as borrowed slices (of the block, the table, or one reused scratch buffer), so a
//! one-byte reference to a large table entry costs no copy; table entries share their names
//! (`Arc`), so a literal that indexes a large name costs no copy either; the table stores at
//! most [`MAX_STORED_TABLE_SIZE`] bytes whatever size the peers agreed; and at most
//! [`MAX_FIELDS_PER_BLOCK`] fields of one block reach the caller (the rest are still decoded,
//! to keep the table in sync, and counted in [`BlockStats::cut`]).

pub mod huffman;
pub mod table;

use std::sync::Arc;

use table::{DynamicTable, Entry, STATIC};

/// RFC 9113 section 6.5.2: SETTINGS_HEADER_TABLE_SIZE starts at 4096.
pub const DEFAULT_TABLE_SIZE: usize = 4096;
/// Table size assumed when joining mid-connection: keeping too much is harmless (see
/// `table::Entry::size`), evicting too early only loses entries.
const UNSYNCED_TABLE_SIZE: usize = 64 * 1024;
/// Largest table size accepted from SETTINGS or a size update.
pub const MAX_TABLE_SIZE: usize = 1024 * 1024;
/// Largest table this decoder stores, whatever size was agreed: beyond it the oldest entries
/// are dropped early and references to them decode as unknown fields (never an error). Real
/// peers use 4 KiB (the default) to 64 KiB; a peer announcing 1 MiB must not make the agent
/// hold 1 MiB per connection and direction.
pub const MAX_STORED_TABLE_SIZE: usize = 64 * 1024;
/// Fields of one header block passed to the caller; real blocks have tens. A block may be
/// 256 KiB of one-byte references; those beyond this are decoded but not handed out.
pub const MAX_FIELDS_PER_BLOCK: u32 = 512;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    #[error("header block truncated")]
    Truncated,
    #[error("integer overflow")]
    IntegerOverflow,
    #[error("index {0} out of range")]
    BadIndex(usize),
    #[error("invalid Huffman string: {0:?}")]
    Huffman(huffman::HuffmanError),
    #[error("table size update to {0} above the allowed maximum")]
    TableSizeTooLarge(usize),
    #[error("table size update after the first field")]
    LateSizeUpdate,
}

/// One decoded field, borrowed from the block, the table or the decoder's scratch space;
/// `None` parts could not be resolved. Copy out what is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// What decoding one block did beyond handing out its fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockStats {
    /// Fields decoded.
    pub fields: u32,
    /// Fields decoded but not handed out ([`MAX_FIELDS_PER_BLOCK`]).
    pub cut: u32,
}

/// The decoding context of the header blocks sent in one direction.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    synced: bool,
    /// Largest size update the receiver allowed (the largest SETTINGS_HEADER_TABLE_SIZE it
    /// advertised, at least the default: SETTINGS and blocks race across directions).
    allowed: usize,
    /// Huffman-decoded names and values (reused: no allocation per field once warm).
    name_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

/// Where a field's name came from, so inserting it shares rather than copies.
enum Name<'a> {
    Unknown,
    Shared(&'a Arc<[u8]>),
    Bytes(&'a [u8]),
}

impl Decoder {
    /// `synced`: the connection is seen from its start, so the table is known exactly.
    pub fn new(synced: bool) -> Self {
        let size = if synced {
            DEFAULT_TABLE_SIZE
        } else {
            UNSYNCED_TABLE_SIZE
        };
        Self::with(size, synced)
    }

    fn with(size: usize, synced: bool) -> Self {
        Self {
            table: DynamicTable::new(size, MAX_STORED_TABLE_SIZE),
            synced,
            allowed: size,
            name_buf: Vec::new(),
            value_buf: Vec::new(),
        }
    }

    /// The receiver advertised SETTINGS_HEADER_TABLE_SIZE (RFC 9113 section 6.5.2).
    pub fn allow_table_size(&mut self, size: u32) {
        self.allowed = self.allowed.max((size as usize).min(MAX_TABLE_SIZE));
    }

    /// Test vectors assume a table size agreed out of band (RFC 7541 C.5, C.6).
    #[cfg(test)]
    pub fn with_table_size(size: usize) -> Self {
        Self::with(size, true)
    }

    #[cfg(test)]
    pub fn table(&self) -> &DynamicTable {
        &self.table
    }

    /// Decode one complete header block, calling `field` for each field in order (at most
    /// [`MAX_FIELDS_PER_BLOCK`] of them).
    pub fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(Field<'_>),
    ) -> Result<BlockStats, HpackError> {
        let mut stats = BlockStats::default();
        let mut at = 0;
        let mut first = true;
        while at < block.len() {
            let b = block[at];
            if b & 0xe0 == 0x20 {
                // Section 6.3: dynamic table size update, only at the start of a block
                // (section 4.2).
                if !first {
                    return Err(HpackError::LateSizeUpdate);
                }
                let size = integer(block, &mut at, 5)?;
                if size > self.allowed {
                    if self.synced {
                        return Err(HpackError::TableSizeTooLarge(size));
                    }
                    self.table.set_max_size(size.min(MAX_TABLE_SIZE));
                } else {
                    self.table.set_max_size(size);
                }
                continue;
            }
            first = false;
            stats.fields += 1;
            let emit = stats.fields <= MAX_FIELDS_PER_BLOCK;
            if !emit {
                stats.cut += 1;
            }
            if b & 0x80 != 0 {
                // Section 6.1: indexed header field.
                let idx = integer(block, &mut at, 7)?;
                if idx == 0 {
                    return Err(HpackError::BadIndex(0));
                }
                let (name, value) = self.lookup(idx)?;
                if emit {
                    field(Field {
                        name: name.bytes(),
                        value,
                    });
                }
                continue;
            }
            // Sections 6.2.1 (with incremental indexing, 6-bit prefix), 6.2.2 / 6.2.3
            // (without indexing / never indexed, 4-bit prefix).
            let indexing = b & 0xc0 == 0x40;
            let idx = integer(block, &mut at, if indexing { 6 } else { 4 })?;
            let name = if idx == 0 {
                Name::Bytes(string(block, &mut at, &mut self.name_buf)?)
            } else {
                lookup(&self.table, self.synced, idx)?.0
            };
            let value = string(block, &mut at, &mut self.value_buf)?;
            if emit {
                field(Field {
                    name: name.bytes(),
                    value: Some(value),
                });
            }
            if indexing {
                let name = match name {
                    Name::Unknown => None,
                    Name::Shared(n) => Some(n.clone()),
                    Name::Bytes(n) => Some(Arc::from(n)),
                };
                self.table.insert(Entry {
                    name,
                    value: Some(Arc::from(value)),
                });
            }
        }
        Ok(stats)
    }

    fn lookup(&self, idx: usize) -> Result<(Name<'_>, Option<&[u8]>), HpackError> {
        lookup(&self.table, self.synced, idx)
    }
}

impl Name<'_> {
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Name::Unknown => None,
            Name::Shared(n) => Some(n),
            Name::Bytes(n) => Some(n),
        }
    }
}

/// Resolve an index (section 2.3.3): 1..=61 static, then dynamic newest first.
fn lookup(
    table: &DynamicTable,
    synced: bool,
    idx: usize,
) -> Result<(Name<'_>, Option<&[u8]>), HpackError> {
    if let Some((n, v)) = idx.checked_sub(1).and_then(|i| STATIC.get(i)) {
        return Ok((Name::Bytes(n.as_bytes()), Some(v.as_bytes())));
    }
    match table.get(idx - STATIC.len() - 1) {
        Some(e) => Ok((
            e.name.as_ref().map_or(Name::Unknown, Name::Shared),
            e.value.as_deref(),
        )),
        // Entries dropped early (see `MAX_STORED_TABLE_SIZE`) may still be referenced, but
        // no table holds more entries than its size over the 32-byte entry overhead.
        None if synced && (!table.capped() || idx - STATIC.len() > table.max_size() / 32) => {
            Err(HpackError::BadIndex(idx))
        }
        None => Ok((Name::Unknown, None)),
    }
}

/// Section 5.1: an integer with an N-bit prefix starting at `block[*at]`.
pub fn integer(block: &[u8], at: &mut usize, prefix: u8) -> Result<usize, HpackError> {
    let mask = (1usize << prefix) - 1;
    let first = *block.get(*at).ok_or(HpackError::Truncated)?;
    *at += 1;
    let mut value = usize::from(first) & mask;
    if value < mask {
        return Ok(value);
    }
    let mut shift = 0u32;
    loop {
        let b = *block.get(*at).ok_or(HpackError::Truncated)?;
        *at += 1;
        // Values beyond 2^32 are never legitimate here (lengths, indexes, table sizes).
        if shift > 28 {
            return Err(HpackError::IntegerOverflow);
        }
        value = value
            .checked_add(usize::from(b & 0x7f) << shift)
            .filter(|v| *v <= u32::MAX as usize)
            .ok_or(HpackError::IntegerOverflow)?;
        if b & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
    }
}

/// Section 5.2: a string literal, Huffman-coded (decoded into `scratch`) or raw (borrowed).
fn string<'a>(
    block: &'a [u8],
    at: &mut usize,
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8], HpackError> {
    let huff = block.get(*at).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = integer(block, at, 7)?;
    let end = at.checked_add(len).ok_or(HpackError::Truncated)?;
    let raw = block.get(*at..end).ok_or(HpackError::Truncated)?;
    *at = end;
    if huff {
        scratch.clear();
        huffman::decode(raw, scratch).map_err(HpackError::Huffman)?;
        Ok(scratch)
    } else {
        Ok(raw)
    }
}
