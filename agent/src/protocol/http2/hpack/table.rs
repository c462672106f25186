//! HPACK header tables (RFC 7541 section 2.3): the static table and one dynamic table.
//!
//! Entries whose name or value the agent never saw (joined mid-connection: a literal with
//! incremental indexing whose name referenced an unknown entry) are kept as `None` so the
//! indexes of later entries stay right; looking them up yields "unknown", never a guess.

use std::collections::VecDeque;
use std::sync::Arc;

/// RFC 7541 Appendix A.
pub const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// RFC 7541 section 4.1: an entry's size is its name and value lengths plus 32.
const ENTRY_OVERHEAD: usize = 32;

/// A header field as stored: `None` parts are unknown. Shared, so that an entry whose name
/// refers to another entry's costs no copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Option<Arc<[u8]>>,
    pub value: Option<Arc<[u8]>>,
}

impl Entry {
    /// Unknown parts count as empty: the estimate is low, so the table keeps too much rather
    /// than too little (an entry the encoder evicted is never referenced again; one we evicted
    /// too early would only turn a later reference into "unknown").
    fn size(&self) -> usize {
        ENTRY_OVERHEAD
            + self.name.as_ref().map_or(0, |n| n.len())
            + self.value.as_ref().map_or(0, |v| v.len())
    }
}

/// The dynamic table of one direction (RFC 7541 section 2.3.2), newest entry first.
///
/// `max_size` is the size the peers agreed; at most `stored` bytes of it are kept (a bound on
/// the agent's memory): when the agreed size is larger the table is [`capped`](Self::capped)
/// and its oldest entries may be gone while the encoder still refers to them.
#[derive(Debug)]
pub struct DynamicTable {
    entries: VecDeque<Entry>,
    size: usize,
    max_size: usize,
    stored: usize,
}

impl DynamicTable {
    pub fn new(max_size: usize, stored: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max_size,
            stored,
        }
    }

    /// The agreed size exceeds what is stored: a missing entry is not proof of a bad index.
    pub fn capped(&self) -> bool {
        self.max_size > self.stored
    }

    fn limit(&self) -> usize {
        self.max_size.min(self.stored)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// Dynamic table size update (RFC 7541 section 4.3 / 6.3): evict down to the new size.
    pub fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict(0);
    }

    /// Section 4.4: evict from the end until the new entry fits; an entry larger than the
    /// whole table empties it and is not added.
    pub fn insert(&mut self, entry: Entry) {
        let size = entry.size();
        self.evict(size);
        if size <= self.limit() {
            self.size += size;
            self.entries.push_front(entry);
        }
    }

    fn evict(&mut self, room: usize) {
        while self.size + room > self.limit() {
            match self.entries.pop_back() {
                Some(e) => self.size -= e.size(),
                None => break,
            }
        }
    }

    /// 0-based position, newest first.
    pub fn get(&self, i: usize) -> Option<&Entry> {
        self.entries.get(i)
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.size = 0;
    }

    #[cfg(test)]
    pub fn size(&self) -> usize {
        self.size
    }
}
