//! One thread's bookkeeping: counters and latency histograms for the whole
//! run and for the current one-second interval, and what is still
//! unanswered. Only measured packets (intended send time after the warm-up)
//! are counted; see `counters` for the two exceptions.

use hdrhistogram::Histogram;

use crate::codec::{Invalid, Probe};
use crate::counters::Counters;
use crate::latency::{self, new_histogram};
use crate::schedule::Schedule;
use crate::seq_window::Arrival;
use crate::stamp_stats::StampStats;

/// What a thread hands back when it is done.
#[derive(Debug)]
pub struct ThreadResult {
    /// Its counts.
    pub counters: Counters,
    /// Receive time - intended send time (ns).
    pub corrected: Histogram<u64>,
    /// Receive time - actual send time (ns).
    pub uncorrected: Histogram<u64>,
    /// Worst lateness of a send against its intended time (ns).
    pub behind_max_ns: u64,
    /// Lateness of every measured send against its intended time (ns).
    pub lateness: Histogram<u64>,
    /// Time of the last measured send (0 if none).
    pub last_send_ns: u64,
    /// CPU time of the thread (ns).
    pub cpu_ns: u64,
    /// Why the thread stopped sending trains, if the kernel refused them.
    pub gso_fallback: Option<String>,
    /// Why the thread receives without `UDP_GRO` though asked, if so.
    pub gro_fallback: Option<String>,
    /// `--protocol stamp`: one-way delays and forward loss.
    pub stamp: StampStats,
}

/// Per-thread bookkeeping.
#[derive(Debug)]
pub struct Tally {
    sched: Schedule,
    total: Counters,
    at_last_tick: Counters,
    corrected: Histogram<u64>,
    uncorrected: Histogram<u64>,
    interval: Histogram<u64>,
    lateness: Histogram<u64>,
    /// Packets sent (warm-up included) without a unique valid reply yet.
    pub unanswered: u64,
    /// Whether any send ever succeeded.
    pub ever_sent: bool,
    behind_max_ns: u64,
    last_send_ns: u64,
    stamp: StampStats,
}

impl Tally {
    /// Empty bookkeeping for `sched`.
    pub fn new(sched: Schedule) -> Tally {
        Tally {
            sched,
            total: Counters::default(),
            at_last_tick: Counters::default(),
            corrected: new_histogram(),
            uncorrected: new_histogram(),
            interval: new_histogram(),
            lateness: new_histogram(),
            unanswered: 0,
            ever_sent: false,
            behind_max_ns: 0,
            last_send_ns: 0,
            stamp: StampStats::default(),
        }
    }

    /// Counts so far.
    #[cfg(test)]
    pub fn counters(&self) -> &Counters {
        &self.total
    }

    /// A datagram intended at `intended_ns` was accepted by the kernel at `sent_ns`.
    pub fn sent(&mut self, intended_ns: u64, sent_ns: u64) {
        self.ever_sent = true;
        self.unanswered += 1;
        if self.sched.is_measured(intended_ns) {
            self.total.sent += 1;
            self.last_send_ns = self.last_send_ns.max(sent_ns);
            self.total.sent_early += u64::from(sent_ns < intended_ns);
            let late = sent_ns.saturating_sub(intended_ns);
            self.behind_max_ns = self.behind_max_ns.max(late);
            latency::record(&mut self.lateness, late);
        }
    }

    /// `measured` of the datagrams just sent went in one train of two or more.
    pub fn train_sent(&mut self, measured: u64) {
        if measured > 0 {
            self.total.train_sends += 1;
            self.total.train_datagrams += measured;
        }
    }

    /// A read at `now_ns` delivered a coalesced train of `segments` datagrams.
    pub fn gro_read(&mut self, segments: u64, now_ns: u64) {
        if segments > 1 && now_ns >= self.sched.measure_start_ns() {
            self.total.gro_reads += 1;
            self.total.gro_datagrams += segments;
        }
    }

    /// The kernel refused a datagram for good.
    pub fn send_failed(&mut self) {
        self.total.send_errors += 1;
    }

    /// A send is retried after a full buffer.
    pub fn send_retried(&mut self) {
        self.total.send_retries += 1;
    }

    /// `n` measured packets will never be sent: `--duration` ended first.
    pub fn unsent(&mut self, n: u64) {
        self.total.unsent += n;
    }

    /// A paced pingpong slot (intended at `intended_ns`) went by while its
    /// flow was still waiting for an echo.
    pub fn skipped_slot(&mut self, intended_ns: u64) {
        if self.sched.is_measured(intended_ns) {
            self.total.skipped_slots += 1;
        }
    }

    /// An ICMP port unreachable came back (ECONNREFUSED) at `now_ns`.
    pub fn refused(&mut self, now_ns: u64) {
        if now_ns >= self.sched.measure_start_ns() {
            self.total.refused += 1;
        }
    }

    /// A pingpong packet timed out.
    pub fn timed_out(&mut self, intended_ns: u64) {
        if self.sched.is_measured(intended_ns) {
            self.total.timeouts += 1;
        }
    }

    /// A datagram that is not a valid reply arrived at `now_ns`.
    pub fn invalid(&mut self, why: Invalid, now_ns: u64) {
        if now_ns < self.sched.measure_start_ns() {
            return;
        }
        match why {
            Invalid::Corrupted => self.total.corrupted += 1,
            Invalid::Unauthenticated => self.total.unauthenticated += 1,
            Invalid::Foreign => self.total.foreign += 1,
            Invalid::NotAReply => {
                self.total.foreign += 1;
                self.total.not_replies += 1;
            }
            Invalid::BadReply { echoed_request } => {
                self.total.bad_replies += 1;
                self.total.echoed_requests += u64::from(echoed_request);
            }
            Invalid::ErrorReply => self.total.error_replies += 1,
        }
    }

    /// A valid reply of one of our flows arrived at `now_ns`; `arrival` is
    /// what the flow's window made of it.
    pub fn reply(&mut self, p: &Probe, arrival: Arrival, now_ns: u64) {
        if let Arrival::New { .. } = arrival {
            self.unanswered = self.unanswered.saturating_sub(1);
        }
        if !self.sched.is_measured(p.intended_ns) {
            return;
        }
        match arrival {
            Arrival::New { reordered } => {
                self.total.received += 1;
                if reordered {
                    self.total.reordered += 1;
                }
                let corrected = now_ns.saturating_sub(p.intended_ns);
                latency::record(&mut self.corrected, corrected);
                latency::record(&mut self.interval, corrected);
                latency::record(&mut self.uncorrected, now_ns.saturating_sub(p.sent_ns));
                if let Some(t) = &p.stamp {
                    self.stamp.record(t);
                }
            }
            Arrival::Duplicate => self.total.duplicates += 1,
            Arrival::TooOld => {
                self.total.late += 1;
                self.total.reordered += 1;
            }
        }
    }

    /// Closes the current interval: its counts and corrected latencies.
    pub fn take_interval(&mut self) -> (Counters, Histogram<u64>) {
        let c = self.total - self.at_last_tick;
        self.at_last_tick = self.total;
        (c, std::mem::replace(&mut self.interval, new_histogram()))
    }

    /// The thread's totals.
    pub fn finish(self) -> ThreadResult {
        ThreadResult {
            counters: self.total,
            corrected: self.corrected,
            uncorrected: self.uncorrected,
            behind_max_ns: self.behind_max_ns,
            lateness: self.lateness,
            last_send_ns: self.last_send_ns,
            cpu_ns: 0,
            gso_fallback: None,
            gro_fallback: None,
            stamp: self.stamp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched() -> Schedule {
        Schedule {
            start_ns: 1_000,
            rate: Some(1000),
            flows: 1,
            train: 1,
            warmup_ns: 1_000_000,
            duration_ns: 1_000_000_000,
            shard: crate::schedule::Shard::WHOLE,
        }
    }

    fn probe(seq: u64, intended_ns: u64) -> Probe {
        Probe {
            flow: 0,
            seq,
            intended_ns,
            sent_ns: intended_ns + 10,
            stamp: None,
        }
    }

    #[test]
    fn warmup_packets_are_left_out() {
        let s = sched();
        let mut t = Tally::new(s);
        let warm = s.start_ns;
        let meas = s.measure_start_ns();
        t.sent(warm, warm);
        t.sent(meas, meas + 5);
        assert_eq!((t.counters().sent, t.unanswered), (1, 2));
        t.reply(
            &probe(0, warm),
            Arrival::New { reordered: false },
            meas + 100,
        );
        t.reply(&probe(0, warm), Arrival::Duplicate, meas + 100);
        assert_eq!(
            *t.counters(),
            Counters {
                sent: 1,
                ..Counters::default()
            }
        );
        t.reply(
            &probe(1, meas),
            Arrival::New { reordered: true },
            meas + 1_000,
        );
        t.reply(&probe(1, meas), Arrival::Duplicate, meas + 1_001);
        let c = *t.counters();
        assert_eq!((c.received, c.reordered, c.duplicates), (1, 1, 1));
        assert_eq!(t.unanswered, 0);
        let r = t.finish();
        assert_eq!(r.corrected.len(), 1);
        assert_eq!(r.corrected.max(), 1_000);
        assert_eq!(r.uncorrected.max(), 990);
        assert_eq!(r.behind_max_ns, 5);
        assert_eq!((r.lateness.len(), r.lateness.max()), (1, 5));
    }

    #[test]
    fn too_old_is_late_not_received() {
        let s = sched();
        let mut t = Tally::new(s);
        let m = s.measure_start_ns();
        t.sent(m, m);
        t.reply(&probe(0, m), Arrival::TooOld, m + 1);
        let c = *t.counters();
        assert_eq!((c.received, c.late, c.reordered, c.lost()), (0, 1, 1, 1));
        assert_eq!(t.unanswered, 1);
    }

    #[test]
    fn invalid_datagrams_count_after_warmup_only() {
        let s = sched();
        let mut t = Tally::new(s);
        t.invalid(Invalid::Corrupted, s.start_ns);
        let m = s.measure_start_ns();
        t.invalid(Invalid::Corrupted, m);
        t.invalid(Invalid::Foreign, m);
        t.invalid(Invalid::NotAReply, m);
        let c = *t.counters();
        assert_eq!((c.corrupted, c.foreign, c.not_replies), (1, 2, 1));
    }

    #[test]
    fn intervals_are_differences() {
        let s = sched();
        let mut t = Tally::new(s);
        let m = s.measure_start_ns();
        t.sent(m, m);
        t.reply(&probe(0, m), Arrival::New { reordered: false }, m + 50);
        let (c, h) = t.take_interval();
        assert_eq!((c.sent, c.received, h.len()), (1, 1, 1));
        t.sent(m + 1, m + 1);
        let (c, h) = t.take_interval();
        assert_eq!((c.sent, c.received, h.len()), (1, 0, 0));
        assert_eq!(t.counters().sent, 2);
    }
}
