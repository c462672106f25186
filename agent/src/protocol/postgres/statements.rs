//! Prepared statements and portals of one connection, as the frontend defined them
//! (Extended Query: Parse creates a statement, Bind a portal from a statement, Close drops
//! either; the unnamed statement and the unnamed portal are replaced by the next Parse/Bind).
//!
//! Bounded: at most [`MAX_STATEMENTS`] named statements holding at most [`MAX_TEXT_BYTES`]
//! of text and names, and [`MAX_PORTALS`] named portals holding at most as much (a portal
//! keeps its statement's text alive after the statement is evicted); beyond either bound the
//! least recently used entry is evicted. An evicted (or never seen) statement is still
//! reported by name, with unknown text. Texts are shared (`Arc<str>`), so binding and
//! executing a statement copies nothing until an event is built.
//!
//! Every operation costs O(log n): the least recently used entry is found through an index by
//! last use, not by a pass over the map (a client preparing a new name per statement would
//! otherwise pay a pass over 256 entries per Parse once the cache is full).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub(super) const MAX_STATEMENTS: usize = 256;
pub(super) const MAX_TEXT_BYTES: usize = 256 * 1024;
pub(super) const MAX_PORTALS: usize = 64;

/// What a portal executes: the statement it was bound from, as it was at Bind time (a later
/// Parse of the same name does not change an existing portal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Bound {
    /// The statement's name (`""` for the unnamed statement).
    pub name: Arc<str>,
    /// `None`: the statement was prepared before the agent saw the connection (or evicted).
    pub text: Option<Arc<str>>,
}

#[derive(Debug)]
struct Entry<T> {
    value: T,
    used: u64,
    cost: usize,
}

/// A small least-recently-used map whose keys are shared with the values handed out.
#[derive(Debug)]
struct Lru<T> {
    map: HashMap<Arc<str>, Entry<T>>,
    /// Keys by last use (`Entry::used`, unique: the clock ticks on every use).
    order: BTreeMap<u64, Arc<str>>,
    clock: u64,
    cost: usize,
    max_len: usize,
    max_cost: usize,
}

impl<T> Lru<T> {
    fn new(max_len: usize, max_cost: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: BTreeMap::new(),
            clock: 0,
            cost: 0,
            max_len,
            max_cost,
        }
    }

    /// Set `key` to `value` (costing `cost` plus the key's length), evicting the least
    /// recently used entries as needed. Returns the stored key; the key is allocated only
    /// when new.
    fn upsert(&mut self, key: &str, value: T, cost: usize) -> Option<Arc<str>> {
        let cost = cost + key.len();
        self.clock += 1;
        if let Some((k, _)) = self.map.get_key_value(key) {
            let k = Arc::clone(k);
            self.remove(key);
            self.make_room(cost);
            return self.put(k, value, cost);
        }
        self.make_room(cost);
        self.put(Arc::from(key), value, cost)
    }

    fn make_room(&mut self, cost: usize) {
        while !self.map.is_empty()
            && (self.map.len() >= self.max_len || self.cost + cost > self.max_cost)
        {
            match self.order.first_key_value() {
                Some((_, k)) => {
                    let k = Arc::clone(k);
                    self.remove(&k);
                }
                None => break,
            }
        }
    }

    fn put(&mut self, key: Arc<str>, value: T, cost: usize) -> Option<Arc<str>> {
        if cost > self.max_cost {
            return None;
        }
        self.cost += cost;
        let entry = Entry {
            value,
            used: self.clock,
            cost,
        };
        self.order.insert(self.clock, Arc::clone(&key));
        self.map.insert(Arc::clone(&key), entry);
        Some(key)
    }

    fn get(&mut self, key: &str) -> Option<(&Arc<str>, &T)> {
        self.clock += 1;
        let (k, e) = self.map.get_key_value(key)?;
        let (k, before) = (Arc::clone(k), e.used);
        self.order.remove(&before);
        self.order.insert(self.clock, k);
        self.map.get_mut(key)?.used = self.clock;
        self.map.get_key_value(key).map(|(k, e)| (k, &e.value))
    }

    fn remove(&mut self, key: &str) {
        if let Some(e) = self.map.remove(key) {
            self.cost -= e.cost;
            self.order.remove(&e.used);
        }
    }
}

#[derive(Debug)]
pub(super) struct Statements {
    /// Named statements; `None` text for names seen only in Binds (prepared before the agent
    /// saw the connection), kept so their names are not allocated again on every Bind.
    named: Lru<Option<Arc<str>>>,
    unnamed: Option<Arc<str>>,
    portals: Lru<Bound>,
    unnamed_portal: Option<Bound>,
    /// The unnamed statement's name, shared.
    empty: Arc<str>,
}

impl Statements {
    pub(super) fn new() -> Self {
        Self {
            named: Lru::new(MAX_STATEMENTS, MAX_TEXT_BYTES),
            unnamed: None,
            portals: Lru::new(MAX_PORTALS, MAX_TEXT_BYTES),
            unnamed_portal: None,
            empty: Arc::from(""),
        }
    }

    /// Parse: statement `name` is `text` from now on. Returns it as bound.
    pub(super) fn parse(&mut self, name: &[u8], text: &[u8]) -> Bound {
        let text: Arc<str> = Arc::from(String::from_utf8_lossy(text));
        let name = if name.is_empty() {
            self.unnamed = Some(Arc::clone(&text));
            Arc::clone(&self.empty)
        } else {
            let key = String::from_utf8_lossy(name);
            let cost = text.len();
            match self.named.upsert(&key, Some(Arc::clone(&text)), cost) {
                Some(name) => name,
                // Too large to cache: reported by name once executed.
                None => Arc::from(key),
            }
        };
        Bound {
            name,
            text: Some(text),
        }
    }

    /// The statement `name` as a Bind would bind it.
    pub(super) fn lookup(&mut self, name: &[u8]) -> Bound {
        if name.is_empty() {
            return Bound {
                name: Arc::clone(&self.empty),
                text: self.unnamed.clone(),
            };
        }
        let key = String::from_utf8_lossy(name);
        if let Some((name, text)) = self.named.get(&key) {
            return Bound {
                name: Arc::clone(name),
                text: text.clone(),
            };
        }
        let name = self
            .named
            .upsert(&key, None, 0)
            .unwrap_or_else(|| Arc::from(key));
        Bound { name, text: None }
    }

    /// Bind: portal `portal` executes `statement` from now on.
    pub(super) fn bind(&mut self, portal: &[u8], statement: &[u8]) {
        let bound = self.lookup(statement);
        if portal.is_empty() {
            self.unnamed_portal = Some(bound);
        } else {
            // Charged its statement's text: the portal keeps it alive once the statement is
            // evicted (shared while both are cached, so this over-counts, never under).
            let cost = bound.text.as_ref().map_or(0, |t| t.len()) + bound.name.len();
            self.portals
                .upsert(&String::from_utf8_lossy(portal), bound, cost);
        }
    }

    /// What an Execute of `portal` runs; `None` if the portal was bound before the agent saw
    /// the connection.
    pub(super) fn portal(&mut self, portal: &[u8]) -> Option<Bound> {
        if portal.is_empty() {
            return self.unnamed_portal.clone();
        }
        let key = String::from_utf8_lossy(portal);
        self.portals.get(&key).map(|(_, b)| b.clone())
    }

    /// Close ('S' statement or 'P' portal).
    pub(super) fn close(&mut self, kind: u8, name: &[u8]) {
        let key = String::from_utf8_lossy(name);
        match (kind, name.is_empty()) {
            (b'S', true) => self.unnamed = None,
            (b'S', false) => self.named.remove(&key),
            (b'P', true) => self.unnamed_portal = None,
            (b'P', false) => self.portals.remove(&key),
            _ => {}
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> (usize, usize) {
        (self.named.map.len(), self.portals.map.len())
    }

    #[cfg(test)]
    pub(super) fn text_bytes(&self) -> usize {
        self.named.cost
    }

    /// Bytes charged to the named portals (their statements' texts and names).
    #[cfg(test)]
    pub(super) fn portal_bytes(&self) -> usize {
        self.portals.cost
    }

    /// The recency indexes list exactly the entries of their maps.
    #[cfg(test)]
    pub(super) fn consistent(&self) -> bool {
        fn ok<T>(l: &Lru<T>) -> bool {
            l.order.len() == l.map.len()
                && l.order
                    .iter()
                    .all(|(used, k)| l.map.get(k).is_some_and(|e| e.used == *used))
        }
        ok(&self.named) && ok(&self.portals)
    }
}
