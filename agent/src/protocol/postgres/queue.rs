//! A FIFO that keeps the sum of a cost its items were pushed with: the session's queue of
//! messages awaiting an answer is bounded by the statement text it holds as well as by its
//! length (see `session::MAX_QUEUED_TEXT`).

use std::collections::VecDeque;

#[derive(Debug)]
pub(super) struct Costed<T> {
    items: VecDeque<(T, usize)>,
    total: usize,
}

impl<T> Default for Costed<T> {
    fn default() -> Self {
        Self {
            items: VecDeque::new(),
            total: 0,
        }
    }
}

impl<T> Costed<T> {
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    /// The sum of the costs of the items queued.
    pub(super) fn total(&self) -> usize {
        self.total
    }

    pub(super) fn push_back(&mut self, item: T, cost: usize) {
        self.total += cost;
        self.items.push_back((item, cost));
    }

    pub(super) fn pop_front(&mut self) -> Option<T> {
        let (item, cost) = self.items.pop_front()?;
        self.total -= cost;
        Some(item)
    }

    pub(super) fn pop_back(&mut self) -> Option<T> {
        let (item, cost) = self.items.pop_back()?;
        self.total -= cost;
        Some(item)
    }

    pub(super) fn front(&self) -> Option<&T> {
        self.items.front().map(|(item, _)| item)
    }

    pub(super) fn front_mut(&mut self) -> Option<&mut T> {
        self.items.front_mut().map(|(item, _)| item)
    }

    pub(super) fn back(&self) -> Option<&T> {
        self.items.back().map(|(item, _)| item)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter().map(|(item, _)| item)
    }

    /// Every item, oldest first, removed.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.total = 0;
        self.items.drain(..).map(|(item, _)| item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_follows_every_removal() {
        let mut q = Costed::default();
        q.push_back('a', 3);
        q.push_back('b', 5);
        q.push_back('c', 0);
        assert_eq!((q.len(), q.total()), (3, 8));
        assert_eq!(q.pop_front(), Some('a'));
        assert_eq!(q.total(), 5);
        assert_eq!(q.pop_back(), Some('c'));
        assert_eq!(q.total(), 5);
        assert_eq!(q.front(), Some(&'b'));
        assert_eq!(q.drain().collect::<String>(), "b");
        assert_eq!((q.len(), q.total()), (0, 0));
        assert_eq!(q.pop_front(), None);
    }
}
