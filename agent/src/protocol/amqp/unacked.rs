//! Deliveries a consumer has not settled yet, per channel, keyed by delivery tag.
//!
//! Delivery tags are per channel and increase with every delivery (spec basic.deliver,
//! "delivery-tag"), so the list is kept sorted and the oldest delivery is at the front:
//! `multiple` acks (all tags up to n) and eviction of the oldest are pops from the front. An
//! out-of-order tag (only seen with broken input) is inserted in place.

use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    tag: u64,
    seq: u64,
}

#[derive(Debug, Default)]
pub(super) struct Unacked(VecDeque<Entry>);

impl Unacked {
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// Track delivery `tag` as exchange `seq`. Returns the seq of a delivery that had the same
    /// tag (it can never be settled now).
    pub(super) fn insert(&mut self, tag: u64, seq: u64) -> Option<u64> {
        let entry = Entry { tag, seq };
        if self.0.back().is_none_or(|e| e.tag < tag) {
            self.0.push_back(entry);
            return None;
        }
        match self.0.binary_search_by_key(&tag, |e| e.tag) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i], entry).seq),
            Err(i) => {
                self.0.insert(i, entry);
                None
            }
        }
    }

    /// Settle `tag` (spec basic.ack / basic.nack: with `multiple`, every tag up to and
    /// including it, and tag 0 means all outstanding). Returns the settled seqs, oldest first.
    pub(super) fn settle(&mut self, tag: u64, multiple: bool, settled: &mut Vec<u64>) {
        if multiple {
            while let Some(e) = self.0.front() {
                if tag != 0 && e.tag > tag {
                    break;
                }
                settled.push(e.seq);
                self.0.pop_front();
            }
        } else if let Ok(i) = self.0.binary_search_by_key(&tag, |e| e.tag) {
            if let Some(e) = self.0.remove(i) {
                settled.push(e.seq);
            }
        }
    }

    /// The oldest delivery, removed.
    pub(super) fn pop_oldest(&mut self) -> Option<u64> {
        self.0.pop_front().map(|e| e.seq)
    }

    /// Every delivery, oldest first, removed.
    pub(super) fn drain(&mut self, settled: &mut Vec<u64>) {
        settled.extend(self.0.drain(..).map(|e| e.seq));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settle(u: &mut Unacked, tag: u64, multiple: bool) -> Vec<u64> {
        let mut v = Vec::new();
        u.settle(tag, multiple, &mut v);
        v
    }

    #[test]
    fn single_multiple_and_all() {
        let mut u = Unacked::default();
        for tag in 1..=6 {
            assert_eq!(u.insert(tag, tag * 10), None);
        }
        assert_eq!(settle(&mut u, 2, false), vec![20]);
        assert_eq!(settle(&mut u, 2, false), Vec::<u64>::new());
        assert_eq!(settle(&mut u, 4, true), vec![10, 30, 40]);
        assert_eq!(settle(&mut u, 99, false), Vec::<u64>::new());
        assert_eq!(settle(&mut u, 0, true), vec![50, 60]);
        assert_eq!(u.len(), 0);
    }

    #[test]
    fn out_of_order_and_duplicates() {
        let mut u = Unacked::default();
        u.insert(5, 1);
        u.insert(3, 2);
        u.insert(4, 3);
        assert_eq!(u.insert(3, 4), Some(2));
        assert_eq!(settle(&mut u, 4, true), vec![4, 3]);
        assert_eq!(u.pop_oldest(), Some(1));
        assert_eq!(u.pop_oldest(), None);
    }
}
