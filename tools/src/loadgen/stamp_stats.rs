//! What `--protocol stamp` measures beyond the round trip, from the four
//! timestamps of each unique measured reply: forward one-way delay
//! (T2 - T1), backward one-way delay (T4 - T3) and the reflector's
//! residence time (T3 - T2), as HDR histograms (ns), and the report block
//! with the loss split into forward and backward (stateful reflectors).
//!
//! One-way delays compare two clocks: on one host they are exact, across
//! hosts they include the offset between the clocks (synchronize them,
//! e.g. with PTP). A difference that comes out negative (clock offset, or
//! a reflector whose T3 is before its T2) is counted and recorded as 0,
//! never a panic.

use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::codec::StampTimes;
use crate::latency::{self, new_histogram, text_block, Percentiles};

/// What the report says about the clocks behind the one-way delays.
pub const CLOCK_NOTE: &str = "one-way delays compare the sender's and the reflector's clocks: \
    exact on one host, across hosts they include the clock offset (synchronize the clocks); \
    negative differences are counted and recorded as 0";

/// One thread's (or the run's) STAMP figures.
#[derive(Debug)]
pub struct StampStats {
    /// T2 - T1 (ns).
    pub forward: Histogram<u64>,
    /// T4 - T3 (ns).
    pub backward: Histogram<u64>,
    /// T3 - T2 (ns).
    pub residence: Histogram<u64>,
    /// Replies whose T2 - T1 was negative.
    pub negative_forward: u64,
    /// Replies whose T4 - T3 was negative.
    pub negative_backward: u64,
    /// Replies whose T3 - T2 was negative.
    pub negative_residence: u64,
    /// Measured requests a stateful reflector's sequence numbers show it
    /// never received.
    pub forward_lost: u64,
}

impl Default for StampStats {
    fn default() -> StampStats {
        StampStats {
            forward: new_histogram(),
            backward: new_histogram(),
            residence: new_histogram(),
            negative_forward: 0,
            negative_backward: 0,
            negative_residence: 0,
            forward_lost: 0,
        }
    }
}

/// Records `later - earlier` (0 and one more in `negative` if below 0).
fn record_diff(h: &mut Histogram<u64>, negative: &mut u64, later: u64, earlier: u64) {
    if later < earlier {
        *negative += 1;
    }
    latency::record(h, later.saturating_sub(earlier));
}

impl StampStats {
    /// Records one unique measured reply.
    pub fn record(&mut self, t: &StampTimes) {
        record_diff(&mut self.forward, &mut self.negative_forward, t.t2, t.t1);
        record_diff(&mut self.backward, &mut self.negative_backward, t.t4, t.t3);
        record_diff(
            &mut self.residence,
            &mut self.negative_residence,
            t.t3,
            t.t2,
        );
    }

    /// Adds another thread's figures.
    pub fn add(&mut self, o: &StampStats) {
        // Same bounds everywhere: adding cannot fail.
        let _ = self.forward.add(&o.forward);
        let _ = self.backward.add(&o.backward);
        let _ = self.residence.add(&o.residence);
        self.negative_forward += o.negative_forward;
        self.negative_backward += o.negative_backward;
        self.negative_residence += o.negative_residence;
        self.forward_lost += o.forward_lost;
    }

    /// The report block; `lost` is the round-trip loss, split when the
    /// reflector is `stateful`.
    pub fn report(&self, stateful: bool, lost: u64) -> StampReport {
        let forward_lost = stateful.then_some(self.forward_lost.min(lost));
        StampReport {
            reflector: if stateful { "stateful" } else { "stateless" },
            forward_lost,
            backward_lost: forward_lost.map(|f| lost - f),
            forward_delay_us: Percentiles::of(&self.forward),
            backward_delay_us: Percentiles::of(&self.backward),
            residence_us: Percentiles::of(&self.residence),
            negative_forward: self.negative_forward,
            negative_backward: self.negative_backward,
            negative_residence: self.negative_residence,
            clock_note: CLOCK_NOTE,
        }
    }
}

/// The `stamp` object of the report.
#[derive(Debug, Clone, Serialize)]
pub struct StampReport {
    /// `stateful` (`--stamp-stateful`: loss split) or `stateless`.
    pub reflector: &'static str,
    /// Lost on the way to the reflector (stateful only).
    pub forward_lost: Option<u64>,
    /// Lost on the way back: the rest of the round-trip loss (stateful only).
    pub backward_lost: Option<u64>,
    /// T2 - T1.
    pub forward_delay_us: Percentiles,
    /// T4 - T3.
    pub backward_delay_us: Percentiles,
    /// T3 - T2.
    pub residence_us: Percentiles,
    /// Negative T2 - T1 (recorded as 0).
    pub negative_forward: u64,
    /// Negative T4 - T3 (recorded as 0).
    pub negative_backward: u64,
    /// Negative T3 - T2 (recorded as 0).
    pub negative_residence: u64,
    /// What the one-way delays need of the clocks.
    pub clock_note: &'static str,
}

impl fmt::Display for StampReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f)?;
        match (self.forward_lost, self.backward_lost) {
            (Some(fw), Some(bw)) => writeln!(
                f,
                "  STAMP loss:         {fw} forward, {bw} backward (stateful reflector)"
            )?,
            _ => writeln!(
                f,
                "  STAMP loss:         round trip only (stateless reflector; \
                 --stamp-stateful splits it)"
            )?,
        }
        let negative = self.negative_forward + self.negative_backward + self.negative_residence;
        if negative > 0 {
            writeln!(
                f,
                "  Negative delays:    {} forward, {} backward, {} residence (clock offset?)",
                self.negative_forward, self.negative_backward, self.negative_residence
            )?;
        }
        writeln!(f)?;
        let block = text_block(&[
            ("forward", self.forward_delay_us),
            ("backward", self.backward_delay_us),
            ("residence", self.residence_us),
        ]);
        write!(
            f,
            "{}",
            block.replacen("Latency (usec)", "One-way (usec)", 1)
        )?;
        writeln!(f, "  note: {}", self.clock_note)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(t1: u64, t2: u64, t3: u64, t4: u64) -> StampTimes {
        StampTimes {
            t1,
            t2,
            t3,
            t4,
            reflector_seq: 0,
        }
    }

    #[test]
    fn differences_are_recorded_and_negative_ones_counted() {
        let mut s = StampStats::default();
        s.record(&times(1_000, 11_000, 13_000, 33_000));
        // The reflector's clock 50 us behind ours.
        s.record(&times(100_000, 60_000, 61_000, 121_000));
        let mut all = StampStats::default();
        all.add(&s);
        assert_eq!(all.negative_forward, 1);
        assert_eq!((all.negative_backward, all.negative_residence), (0, 0));
        assert_eq!(all.forward.len(), 2);
        assert_eq!(all.forward.min(), 0);
        assert!(all.backward.max() >= 60_000);
        let r = all.report(false, 3);
        assert_eq!((r.forward_lost, r.backward_lost), (None, None));
        let text = r.to_string();
        assert!(
            text.contains("One-way (usec)") && text.contains("1 forward"),
            "{text}"
        );
    }

    #[test]
    fn stateful_loss_is_split() {
        let s = StampStats {
            forward_lost: 2,
            ..StampStats::default()
        };
        let r = s.report(true, 5);
        assert_eq!((r.forward_lost, r.backward_lost), (Some(2), Some(3)));
        assert!(r.to_string().contains("2 forward, 3 backward"));
        // Never more forward loss than round-trip loss.
        assert_eq!(s.report(true, 1).forward_lost, Some(1));
    }
}
