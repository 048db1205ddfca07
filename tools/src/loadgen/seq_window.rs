//! Per-flow duplicate and reordering detection: a sliding bitmap over the
//! last [`WINDOW`] sequence numbers below the highest one seen.
//!
//! A sequence number lower than the highest seen so far is *reordered*; one
//! already in the bitmap is a *duplicate*; one so old that it fell out of the
//! window is *too old* (late): we can no longer tell whether it is new, so
//! it is never counted as received.

/// Sequence numbers remembered below the highest.
pub const WINDOW: u64 = 1 << 16;
const WORDS: usize = (WINDOW / 64) as usize;

/// What one arrival was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// First time seen; `reordered` if a higher one came before it.
    New {
        /// Arrived after a higher sequence number.
        reordered: bool,
    },
    /// Seen before.
    Duplicate,
    /// Older than the window: late (and reordered), uniqueness unknown.
    TooOld,
}

/// The sliding bitmap of one flow.
#[derive(Debug, Clone)]
pub struct SeqWindow {
    bits: Box<[u64; WORDS]>,
    highest: Option<u64>,
}

impl Default for SeqWindow {
    fn default() -> Self {
        SeqWindow::new()
    }
}

impl SeqWindow {
    /// An empty window.
    pub fn new() -> SeqWindow {
        SeqWindow {
            bits: Box::new([0; WORDS]),
            highest: None,
        }
    }

    fn slot(seq: u64) -> (usize, u64) {
        let i = seq % WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    fn test_and_set(&mut self, seq: u64) -> bool {
        let (w, m) = Self::slot(seq);
        let seen = self.bits[w] & m != 0;
        self.bits[w] |= m;
        seen
    }

    fn clear(&mut self, seq: u64) {
        let (w, m) = Self::slot(seq);
        self.bits[w] &= !m;
    }

    /// Records the arrival of `seq`.
    pub fn record(&mut self, seq: u64) -> Arrival {
        let Some(high) = self.highest else {
            self.highest = Some(seq);
            self.test_and_set(seq);
            return Arrival::New { reordered: false };
        };
        if seq > high {
            if seq - high >= WINDOW {
                self.bits.fill(0);
            } else {
                for s in high + 1..seq {
                    self.clear(s);
                }
                self.clear(seq);
            }
            self.highest = Some(seq);
            self.test_and_set(seq);
            return Arrival::New { reordered: false };
        }
        if high - seq >= WINDOW {
            return Arrival::TooOld;
        }
        if self.test_and_set(seq) {
            Arrival::Duplicate
        } else {
            Arrival::New {
                reordered: seq < high,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: Arrival = Arrival::New { reordered: false };
    const LATE_NEW: Arrival = Arrival::New { reordered: true };

    #[test]
    fn in_order_duplicates_and_reordering() {
        let mut w = SeqWindow::new();
        assert_eq!(w.record(0), NEW);
        assert_eq!(w.record(2), NEW);
        assert_eq!(w.record(1), LATE_NEW);
        assert_eq!(w.record(1), Arrival::Duplicate);
        assert_eq!(w.record(2), Arrival::Duplicate);
        assert_eq!(w.record(3), NEW);
    }

    #[test]
    fn first_arrival_may_be_any_seq() {
        let mut w = SeqWindow::new();
        assert_eq!(w.record(1_000_000), NEW);
        assert_eq!(w.record(999_999), LATE_NEW);
    }

    #[test]
    fn old_sequence_numbers_are_late_never_a_panic() {
        let mut w = SeqWindow::new();
        assert_eq!(w.record(5), NEW);
        assert_eq!(w.record(5 + WINDOW), NEW);
        assert_eq!(w.record(5), Arrival::TooOld);
        assert_eq!(w.record(6), LATE_NEW);
        assert_eq!(w.record(u64::MAX), NEW);
        assert_eq!(w.record(0), Arrival::TooOld);
        assert_eq!(w.record(u64::MAX), Arrival::Duplicate);
    }

    #[test]
    fn sliding_forgets_bits_that_wrap() {
        let mut w = SeqWindow::new();
        for s in 0..WINDOW {
            assert_eq!(w.record(s), NEW);
        }
        // seq WINDOW + 3 reuses the bit of seq 3: it must have been cleared.
        assert_eq!(w.record(WINDOW + 3), NEW);
        assert_eq!(w.record(WINDOW + 1), LATE_NEW);
        assert_eq!(w.record(WINDOW + 2), LATE_NEW);
        assert_eq!(w.record(WINDOW + 2), Arrival::Duplicate);
        // Seq 4 is still inside the window (highest WINDOW + 3) and was seen.
        assert_eq!(w.record(4), Arrival::Duplicate);
    }

    #[test]
    fn big_jump_clears_everything() {
        let mut w = SeqWindow::new();
        for s in 0..100 {
            w.record(s);
        }
        assert_eq!(w.record(10 * WINDOW), NEW);
        assert_eq!(w.record(10 * WINDOW - 1), LATE_NEW);
        assert_eq!(w.record(9 * WINDOW + 50), LATE_NEW);
    }
}
