//! The open-loop send schedule (wrk2 model): packet `i` of the run is due
//! at `start + i / rate`, whatever happened to earlier packets. Packets go
//! to the flows in *trains* of `train` consecutive packets (1 without
//! `--gso`): packet `i` belongs to train `b = i / train`, which belongs to
//! flow `b % flows`; within a flow the sequence numbers count up without a
//! gap. With `train` 1 that is packet `i` to flow `i % flows` with sequence
//! `i / flows`. A train leaves when its *last* member is due, so no packet
//! goes before its time (see `train_at`); each packet keeps its own intended
//! time. Packets due before `start + warmup` are sent but not measured.
//! Pingpong without `--rate` (back to back) has no rate: only the time frame
//! (start, warm-up, end) applies, every packet is due at once and nothing is
//! spaced.
//!
//! `--shard I/N` takes share I of N of the one global schedule: global
//! packet `k` is due at `start + k / rate`, and this generator sends the
//! packets with `k % N == I`. Everything above then works on the shard's
//! own (local) packet numbers `j`, global `k = j * N + I`, and on the
//! shard's own flows (see [`Shard::flows`]); only the times and the counts
//! go through the global numbering.

const NS_PER_SEC: u128 = 1_000_000_000;

/// Which share of the global schedule this generator sends: `index` of
/// `count` (`--shard I/N`; 0 of 1 without it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// I: this generator's share.
    pub index: u32,
    /// N: the number of generators.
    pub count: u32,
}

impl Shard {
    /// The whole schedule (no `--shard`).
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// How many global numbers below `limit` (packets or flows) are this
    /// shard's: the `k < limit` with `k % count == index`.
    pub fn below(&self, limit: u64) -> u64 {
        limit
            .saturating_sub(u64::from(self.index))
            .div_ceil(u64::from(self.count))
    }

    /// How many of `--flows` global flows are this shard's (flow `f` is
    /// shard `f % count`'s); the shards' flows add up to `flows`.
    pub fn flows(&self, flows: u32) -> u32 {
        self.below(u64::from(flows)) as u32
    }

    /// Whether this is a share of a schedule rather than the whole.
    pub fn is_shared(&self) -> bool {
        self.count > 1
    }
}

/// Absolute send times of one run (CLOCK_MONOTONIC nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// When packet 0 is due.
    pub start_ns: u64,
    /// Packets per second over all flows; `None`: back to back, no schedule.
    pub rate: Option<u64>,
    /// Number of this generator's flows (with `--shard`, its share).
    pub flows: u32,
    /// Packets per train (consecutive packets of one flow); at least 1.
    pub train: u32,
    /// Warm-up length.
    pub warmup_ns: u64,
    /// Measurement length.
    pub duration_ns: u64,
    /// The share of the global schedule sent here.
    pub shard: Shard,
}

impl Schedule {
    /// Start of the measured part.
    pub fn measure_start_ns(&self) -> u64 {
        self.start_ns + self.warmup_ns
    }

    /// End of the schedule: nothing is due at or after it.
    pub fn end_ns(&self) -> u64 {
        self.measure_start_ns() + self.duration_ns
    }

    /// How many packets the whole run (warm-up included) sends: every
    /// global `k` with `k / rate < warmup + duration` that is this shard's
    /// (no limit back to back).
    pub fn total_packets(&self) -> u64 {
        let Some(rate) = self.rate else {
            return u64::MAX;
        };
        let span = u128::from(self.warmup_ns + self.duration_ns);
        self.shard
            .below((span * u128::from(rate)).div_ceil(NS_PER_SEC) as u64)
    }

    /// Index of the first measured packet (0 back to back).
    pub fn first_measured_index(&self) -> u64 {
        match self.rate {
            Some(rate) => self
                .shard
                .below((u128::from(self.warmup_ns) * u128::from(rate)).div_ceil(NS_PER_SEC) as u64),
            None => 0,
        }
    }

    /// How many sequence numbers of `flow` belong to packets with an index
    /// below `limit` (they are the lowest ones: a flow's indices grow with
    /// its sequence numbers).
    fn seqs_below(&self, flow: u32, limit: u64) -> u64 {
        let (g, flows, id) = (self.train_len(), u64::from(self.flows), u64::from(flow));
        // Whole trains below `limit`, then the one `limit` cuts.
        let (whole, cut) = (limit / g, limit % g);
        let mine = if whole > id {
            (whole - id).div_ceil(flows)
        } else {
            0
        };
        mine * g + if whole % flows == id { cut } else { 0 }
    }

    /// How many measured packets of `flow` have a sequence number of at
    /// least `next_seq`: what is left of the flow's schedule.
    pub fn measured_left(&self, flow: u32, next_seq: u64) -> u64 {
        let end = self.seqs_below(flow, self.total_packets());
        let first = self.seqs_below(flow, self.first_measured_index());
        end.saturating_sub(next_seq.max(first))
    }

    /// Packets per train, as a `u64`.
    fn train_len(&self) -> u64 {
        u64::from(self.train.max(1))
    }

    /// The train of `flow` that holds `seq`, from `seq` on: the global index
    /// of `seq` and how many packets of the train are left from it (fewer
    /// than `train` for the last train of the schedule, 0 past its end).
    /// The train is due when its last member is: `intended_ns(index + len - 1)`.
    pub fn train_at(&self, flow: u32, seq: u64) -> (u64, u64) {
        let g = self.train_len();
        let i = self.index(flow, seq);
        let len = (g - seq % g).min(self.total_packets().saturating_sub(i));
        (i, len)
    }

    /// When packet `i` is due (back to back: at the start): global packet
    /// `i * N + I` of the schedule.
    pub fn intended_ns(&self, i: u64) -> u64 {
        let k = u128::from(i) * u128::from(self.shard.count) + u128::from(self.shard.index);
        match self.rate {
            Some(rate) => self.start_ns + (k * NS_PER_SEC / u128::from(rate)) as u64,
            None => self.start_ns,
        }
    }

    /// Global index of `seq` in `flow`.
    pub fn index(&self, flow: u32, seq: u64) -> u64 {
        let g = self.train_len();
        ((seq / g) * u64::from(self.flows) + u64::from(flow)) * g + seq % g
    }

    /// Time between two packets of one flow (back to back: none).
    pub fn flow_interval_ns(&self) -> u64 {
        match self.rate {
            Some(rate) => {
                let flows = u128::from(self.flows) * u128::from(self.shard.count);
                (flows * NS_PER_SEC / u128::from(rate)) as u64
            }
            None => 0,
        }
    }

    /// Whether there is no schedule (pingpong without `--rate`).
    pub fn back_to_back(&self) -> bool {
        self.rate.is_none()
    }

    /// Whether a packet intended at `intended_ns` belongs to the results.
    pub fn is_measured(&self, intended_ns: u64) -> bool {
        intended_ns >= self.measure_start_ns()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(rate: u64, flows: u32, warmup_ns: u64, duration_ns: u64) -> Schedule {
        Schedule {
            start_ns: 1_000,
            rate: Some(rate),
            flows,
            train: 1,
            warmup_ns,
            duration_ns,
            shard: Shard::WHOLE,
        }
    }

    #[test]
    fn packet_count_covers_the_span_exactly() {
        assert_eq!(sched(1000, 1, 0, 1_000_000_000).total_packets(), 1000);
        assert_eq!(sched(3, 1, 0, 1_000_000_000).total_packets(), 3);
        // 1.5 packets' worth of time: packets 0 and 1 are both due inside it.
        assert_eq!(sched(3, 1, 0, 500_000_000).total_packets(), 2);
        let s = sched(7, 2, 300_000_000, 1_100_000_000);
        let n = s.total_packets();
        assert!(s.intended_ns(n - 1) < s.end_ns());
        assert!(s.intended_ns(n) >= s.end_ns());
    }

    #[test]
    fn warmup_boundary_is_by_intended_time() {
        let s = sched(10, 1, 250_000_000, 1_000_000_000);
        let measured: Vec<u64> = (0..s.total_packets())
            .filter(|&i| s.is_measured(s.intended_ns(i)))
            .collect();
        // 0.25 s at 10/s: packets 0, 1 and 2 are warm-up.
        assert_eq!(measured.first(), Some(&3));
        assert_eq!(measured.len(), 10);
    }

    #[test]
    fn flows_are_round_robin() {
        let s = sched(100, 4, 0, 1_000_000_000);
        assert_eq!(s.index(0, 0), 0);
        assert_eq!(s.index(3, 0), 3);
        assert_eq!(s.index(1, 2), 9);
        assert_eq!(s.flow_interval_ns(), 40_000_000);
        assert_eq!(s.intended_ns(100), 1_000 + 1_000_000_000);
    }

    #[test]
    fn what_is_left_counts_measured_packets_only() {
        let s = sched(10, 3, 250_000_000, 1_000_000_000);
        // 12.5 -> 13 packets in all, 0..=2 warm-up; flow 1 has 1, 4, 7, 10.
        assert_eq!(s.total_packets(), 13);
        assert_eq!(s.first_measured_index(), 3);
        let all: u64 = (0..3).map(|f| s.measured_left(f, 0)).sum();
        assert_eq!(all, 10);
        assert_eq!(s.measured_left(1, 0), 3);
        assert_eq!(s.measured_left(1, 3), 1);
        assert_eq!(s.measured_left(1, 4), 0);
        assert_eq!(s.measured_left(0, 9), 0);
    }

    #[test]
    fn huge_indices_do_not_overflow() {
        let s = sched(1, 1, 0, 1_000_000_000);
        assert_eq!(s.intended_ns(1 << 33), 1_000 + (1u64 << 33) * 1_000_000_000);
    }

    #[test]
    fn back_to_back_has_a_time_frame_but_no_spacing() {
        let s = Schedule {
            rate: None,
            ..sched(1, 2, 100, 1_000)
        };
        assert!(s.back_to_back());
        assert_eq!(s.total_packets(), u64::MAX);
        assert_eq!((s.intended_ns(7), s.flow_interval_ns()), (1_000, 0));
        assert_eq!(s.end_ns(), 2_100);
    }

    #[test]
    fn trains_are_consecutive_packets_of_one_flow() {
        let s = Schedule {
            train: 4,
            ..sched(1000, 3, 0, 1_000_000_000)
        };
        // Indices 0..4 are flow 0's seqs 0..4, 4..8 flow 1's, 8..12 flow 2's,
        // 12..16 flow 0's seqs 4..8.
        assert_eq!(s.index(0, 0), 0);
        assert_eq!(s.index(0, 3), 3);
        assert_eq!(s.index(1, 0), 4);
        assert_eq!(s.index(2, 3), 11);
        assert_eq!(s.index(0, 4), 12);
        assert_eq!(s.index(1, 5), 17);
        // Every index has exactly one (flow, seq).
        let mut seen = [false; 120];
        for f in 0..3 {
            for q in 0..40 {
                let i = s.index(f, q) as usize;
                assert!(!seen[i], "index {i} twice");
                seen[i] = true;
            }
        }
        assert!(seen.iter().all(|&b| b));
    }

    #[test]
    fn a_train_is_due_when_its_last_member_is() {
        // 10 packets at 1000/s: indices 0..10, trains of 4 over 2 flows.
        let s = Schedule {
            train: 4,
            ..sched(1000, 2, 0, 10_000_000)
        };
        assert_eq!(s.total_packets(), 10);
        assert_eq!(s.train_at(0, 0), (0, 4));
        assert_eq!(s.train_at(1, 0), (4, 4));
        // Flow 0's second train is cut by the end of the schedule.
        assert_eq!(s.train_at(0, 4), (8, 2));
        assert_eq!(s.train_at(1, 4), (12, 0));
        // Starting inside a train: what is left of it.
        assert_eq!(s.train_at(0, 1), (1, 3));
        let (i, len) = s.train_at(1, 0);
        // Its first member waits 3 ms for the last one: never early.
        let due = s.intended_ns(i + len - 1);
        assert_eq!(due - s.intended_ns(i), 3_000_000);
        assert!((i..i + len).all(|k| s.intended_ns(k) <= due));
    }

    #[test]
    fn what_is_left_counts_measured_packets_of_trains() {
        // 13 packets, 0..=2 warm-up, trains of 2 over 3 flows:
        // flow 0 has 0,1 | 6,7 | 12; flow 1 has 2,3 | 8,9; flow 2 4,5 | 10,11.
        let s = Schedule {
            train: 2,
            ..sched(10, 3, 250_000_000, 1_000_000_000)
        };
        assert_eq!(s.total_packets(), 13);
        assert_eq!(s.measured_left(0, 0), 3);
        assert_eq!(s.measured_left(1, 0), 3);
        assert_eq!(s.measured_left(2, 0), 4);
        assert_eq!(s.measured_left(0, 4), 1);
        assert_eq!(s.measured_left(0, 5), 0);
        // Against brute force, for several shapes.
        for (train, flows) in [(1, 1), (1, 4), (3, 2), (5, 3), (16, 16)] {
            let s = Schedule {
                train,
                ..sched(1000, flows, 7_300_000, 90_000_000)
            };
            for f in 0..flows {
                for next in [0, 1, 5, 17] {
                    let want = (next..10_000)
                        .map(|q| s.index(f, q))
                        .filter(|&i| i >= s.first_measured_index() && i < s.total_packets())
                        .count() as u64;
                    assert_eq!(s.measured_left(f, next), want, "{train} {flows} {f} {next}");
                }
            }
        }
    }

    #[test]
    fn shards_together_are_the_whole_schedule() {
        // 10 s at 997/s, 0.25 s warm-up, 7 flows over 3 shards.
        let whole = sched(997, 7, 250_000_000, 10_000_000_000);
        let mut times = Vec::new();
        let (mut flows, mut measured) = (0, 0);
        for index in 0..3 {
            let shard = Shard { index, count: 3 };
            let s = Schedule {
                flows: shard.flows(7),
                shard,
                ..whole
            };
            flows += s.flows;
            measured += (0..s.flows).map(|f| s.measured_left(f, 0)).sum::<u64>();
            times.extend((0..s.total_packets()).map(|j| s.intended_ns(j)));
            // Its packets are every third of the global schedule.
            assert_eq!(
                s.intended_ns(5),
                whole.intended_ns(5 * 3 + u64::from(index))
            );
        }
        times.sort_unstable();
        let all: Vec<u64> = (0..whole.total_packets())
            .map(|k| whole.intended_ns(k))
            .collect();
        assert_eq!(times, all);
        assert_eq!(flows, 7);
        let whole_measured: u64 = (0..7).map(|f| whole.measured_left(f, 0)).sum();
        assert_eq!(measured, whole_measured);
        assert_eq!(Shard { index: 2, count: 3 }.below(10), 3);
        assert_eq!(Shard { index: 2, count: 3 }.below(2), 0);
    }
}
