//! Holding packets back, free of I/O: the delay queue (a binary heap keyed
//! by release time, first in first out among equal times) and the reorder
//! stage (one packet held back until the next one of its direction has
//! gone). Times are ns on the caller's monotonic clock.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

struct Entry<T> {
    at: u64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// Packets waiting for their release time.
pub struct DelayQueue<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    seq: u64,
}

impl<T> Default for DelayQueue<T> {
    fn default() -> Self {
        DelayQueue {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<T> DelayQueue<T> {
    pub fn push(&mut self, at: u64, item: T) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.seq,
            item,
        }));
    }

    /// The earliest release time.
    pub fn next_at(&self) -> Option<u64> {
        self.heap.peek().map(|e| e.0.at)
    }

    /// The next packet due at or before `now` (all of them, with `u64::MAX`).
    pub fn pop_due(&mut self, now: u64) -> Option<T> {
        if self.next_at()? <= now {
            self.heap.pop().map(|e| e.0.item)
        } else {
            None
        }
    }
}

/// A packet leaving the reorder stage; `reordered` when it went out after a
/// packet that arrived at the stage later than it did.
#[derive(Debug, PartialEq, Eq)]
pub struct Released<T> {
    pub item: T,
    pub reordered: bool,
}

/// Holds at most one packet back; it goes out right after the next packet,
/// or unreordered after `max_hold_ns` if no other packet comes.
pub struct Reorderer<T> {
    held: Option<(T, u64)>,
    max_hold_ns: u64,
}

impl<T> Reorderer<T> {
    pub fn new(max_hold_ns: u64) -> Reorderer<T> {
        Reorderer {
            held: None,
            max_hold_ns,
        }
    }

    /// A packet whose release time has come. With one already held, this
    /// one goes first and the held one after it (even if this one was to be
    /// held too: only one is held at a time).
    pub fn push(&mut self, item: T, reorder: bool, now: u64, out: &mut Vec<Released<T>>) {
        if let Some((held, _)) = self.held.take() {
            out.push(Released {
                item,
                reordered: false,
            });
            out.push(Released {
                item: held,
                reordered: true,
            });
        } else if reorder {
            self.held = Some((item, now));
        } else {
            out.push(Released {
                item,
                reordered: false,
            });
        }
    }

    /// When a held packet must go out anyway.
    pub fn deadline(&self) -> Option<u64> {
        self.held
            .as_ref()
            .map(|(_, since)| since.saturating_add(self.max_hold_ns))
    }

    /// Lets a held packet go, unreordered, once its deadline is reached.
    pub fn expire(&mut self, now: u64, out: &mut Vec<Released<T>>) {
        if self.deadline().is_some_and(|d| d <= now) {
            self.flush(out);
        }
    }

    /// Lets a held packet go now, unreordered.
    pub fn flush(&mut self, out: &mut Vec<Released<T>>) {
        if let Some((item, _)) = self.held.take() {
            out.push(Released {
                item,
                reordered: false,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_queue_releases_in_time_order_fifo_on_ties() {
        let mut q = DelayQueue::default();
        q.push(30, "c");
        q.push(10, "a1");
        q.push(20, "b");
        q.push(10, "a2");
        assert_eq!(q.next_at(), Some(10));
        assert_eq!(q.pop_due(5), None);
        assert_eq!(q.pop_due(10), Some("a1"));
        assert_eq!(q.pop_due(10), Some("a2"));
        assert_eq!(q.pop_due(10), None);
        assert_eq!(q.next_at(), Some(20));
        assert_eq!(q.pop_due(u64::MAX), Some("b"));
        assert_eq!(q.pop_due(u64::MAX), Some("c"));
        assert_eq!(q.next_at(), None);
    }

    #[test]
    fn held_packet_goes_after_the_next_one() {
        let mut r = Reorderer::new(100);
        let mut out = Vec::new();
        r.push(1, true, 0, &mut out);
        assert!(out.is_empty());
        assert_eq!(r.deadline(), Some(100));
        r.push(2, true, 5, &mut out);
        r.push(3, false, 6, &mut out);
        let got: Vec<_> = out.iter().map(|x| (x.item, x.reordered)).collect();
        assert_eq!(got, [(2, false), (1, true), (3, false)]);
    }

    #[test]
    fn lone_held_packet_expires_unreordered() {
        let mut r = Reorderer::new(100);
        let mut out = Vec::new();
        r.push(1, true, 0, &mut out);
        r.expire(99, &mut out);
        assert!(out.is_empty());
        r.expire(100, &mut out);
        assert_eq!(
            out,
            [Released {
                item: 1,
                reordered: false
            }]
        );
        assert_eq!(r.deadline(), None);
    }
}
