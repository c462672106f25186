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

pub mod huffman;
pub mod table;

use table::{DynamicTable, Entry, STATIC};

/// RFC 9113 section 6.5.2: SETTINGS_HEADER_TABLE_SIZE starts at 4096.
pub const DEFAULT_TABLE_SIZE: usize = 4096;
/// Table size assumed when joining mid-connection: keeping too much is harmless (see
/// `table::Entry::size`), evicting too early only loses entries.
const UNSYNCED_TABLE_SIZE: usize = 64 * 1024;
/// Largest table size accepted from SETTINGS or a size update (bounds memory).
pub const MAX_TABLE_SIZE: usize = 1024 * 1024;

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

/// One decoded field; `None` parts could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// The decoding context of the header blocks sent in one direction.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    synced: bool,
    /// Largest size update the receiver allowed (the largest SETTINGS_HEADER_TABLE_SIZE it
    /// advertised, at least the default: SETTINGS and blocks race across directions).
    allowed: usize,
}

impl Decoder {
    /// `synced`: the connection is seen from its start, so the table is known exactly.
    pub fn new(synced: bool) -> Self {
        let size = if synced {
            DEFAULT_TABLE_SIZE
        } else {
            UNSYNCED_TABLE_SIZE
        };
        Self {
            table: DynamicTable::new(size),
            synced,
            allowed: size,
        }
    }

    /// The receiver advertised SETTINGS_HEADER_TABLE_SIZE (RFC 9113 section 6.5.2).
    pub fn allow_table_size(&mut self, size: u32) {
        self.allowed = self.allowed.max((size as usize).min(MAX_TABLE_SIZE));
    }

    /// Test vectors assume a table size agreed out of band (RFC 7541 C.5, C.6).
    #[cfg(test)]
    pub fn with_table_size(size: usize) -> Self {
        Self {
            table: DynamicTable::new(size),
            synced: true,
            allowed: size,
        }
    }

    #[cfg(test)]
    pub fn table(&self) -> &DynamicTable {
        &self.table
    }

    /// Decode one complete header block, calling `field` for each field in order.
    pub fn decode(&mut self, block: &[u8], mut field: impl FnMut(Field)) -> Result<(), HpackError> {
        let mut at = 0;
        let mut first = true;
        while at < block.len() {
            let b = block[at];
            if b & 0x80 != 0 {
                // Section 6.1: indexed header field.
                let idx = integer(block, &mut at, 7)?;
                if idx == 0 {
                    return Err(HpackError::BadIndex(0));
                }
                field(self.lookup(idx)?);
            } else if b & 0xc0 == 0x40 {
                // Section 6.2.1: literal with incremental indexing.
                let f = self.literal(block, &mut at, 6)?;
                self.table.insert(Entry {
                    name: f.name.clone(),
                    value: f.value.clone(),
                });
                field(f);
            } else if b & 0xe0 == 0x20 {
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
            } else {
                // Sections 6.2.2 / 6.2.3: literal without indexing / never indexed.
                let f = self.literal(block, &mut at, 4)?;
                field(f);
            }
            first = false;
        }
        Ok(())
    }

    /// Resolve an index (section 2.3.3): 1..=61 static, then dynamic newest first.
    fn lookup(&self, idx: usize) -> Result<Field, HpackError> {
        if let Some((n, v)) = idx.checked_sub(1).and_then(|i| STATIC.get(i)) {
            return Ok(Field {
                name: Some(n.as_bytes().to_vec()),
                value: Some(v.as_bytes().to_vec()),
            });
        }
        match self.table.get(idx - STATIC.len() - 1) {
            Some(e) => Ok(Field {
                name: e.name.clone(),
                value: e.value.clone(),
            }),
            None if self.synced => Err(HpackError::BadIndex(idx)),
            None => Ok(Field {
                name: None,
                value: None,
            }),
        }
    }

    /// A literal field whose name is indexed (`prefix`-bit index) or literal (index 0).
    fn literal(&self, block: &[u8], at: &mut usize, prefix: u8) -> Result<Field, HpackError> {
        let idx = integer(block, at, prefix)?;
        let name = if idx == 0 {
            Some(string(block, at)?)
        } else {
            self.lookup(idx)?.name
        };
        let value = Some(string(block, at)?);
        Ok(Field { name, value })
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

/// Section 5.2: a string literal, Huffman-coded or raw.
fn string(block: &[u8], at: &mut usize) -> Result<Vec<u8>, HpackError> {
    let huff = block.get(*at).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = integer(block, at, 7)?;
    let end = at.checked_add(len).ok_or(HpackError::Truncated)?;
    let raw = block.get(*at..end).ok_or(HpackError::Truncated)?;
    *at = end;
    if huff {
        let mut out = Vec::with_capacity(len + len / 2);
        huffman::decode(raw, &mut out).map_err(HpackError::Huffman)?;
        Ok(out)
    } else {
        Ok(raw.to_vec())
    }
}
