//! The final report: JSON (`--json`) or a sockperf/dnsperf-style text
//! summary. Rates are per second over the measured duration, which is the
//! asked duration unless the sender finished late (then the longer, real
//! span, so a sender that fell behind shows a lower send rate) or the run
//! was interrupted. The report says what its latency columns mean in the
//! run's mode (`pacing`, `corrected_applicable`, `latency_note`): back to
//! back (pingpong without `--rate`) has no schedule, so there is no
//! corrected latency; `latency_us` then repeats the uncorrected figures.

use serde::Serialize;

use crate::cli::{Mode, Protocol};
use crate::counters::Counters;
use crate::latency::Percentiles;
use crate::schedule::Shard;
use crate::stamp_stats::StampReport;

mod replies;
mod send_side;
mod text;
mod warnings;

pub use replies::Replies;
pub use send_side::{SendSide, BEHIND_LIMIT_US};

/// What the columns mean in rate mode.
const OPEN_LOOP_NOTE: &str = "corrected = receive - intended send time on the open-loop \
    schedule (includes any lateness of the sender: no coordinated omission); \
    uncorrected = receive - actual send time";
/// What the columns mean in pingpong mode with `--rate`.
const PACED_NOTE: &str = "corrected = receive - intended send time on each flow's schedule \
    (includes the wait for a late echo before the packet could go: wrk2); \
    uncorrected = receive - actual send time (the round trip)";
/// What the columns mean in pingpong mode without `--rate`.
const BACK_TO_BACK_NOTE: &str = "back to back, no schedule: corrected is not applicable and \
    equals uncorrected = receive - actual send time (the round trip, as sockperf ping-pong \
    reports it)";

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Resolved target address.
    pub target: String,
    /// `--rate` (10000 by default in rate mode); with `--shard I/N` this
    /// generator's share, `rate / N`; `None` back to back. An integer in
    /// JSON when it is one.
    #[serde(serialize_with = "whole_if_integral")]
    pub rate_requested: Option<f64>,
    /// `--shard I/N`: which share of the schedule this report covers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// `--shard`: the rate of the whole schedule (all N shards), `--rate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_global: Option<u64>,
    /// `open_loop` (rate mode), `paced` (pingpong with `--rate`) or
    /// `back_to_back` (pingpong without `--rate`).
    pub pacing: &'static str,
    /// Whether `latency_us` is a corrected figure (false back to back,
    /// where it equals `latency_uncorrected_us`).
    pub corrected_applicable: bool,
    /// What `latency_us` and `latency_uncorrected_us` mean in this mode.
    pub latency_note: &'static str,
    /// Achieved send rate (packets/s).
    pub send_rate: f64,
    /// Unique valid replies per second.
    pub echo_rate: f64,
    /// Datagrams sent after the warm-up.
    pub sent: u64,
    /// Unique valid replies to them.
    pub received: u64,
    /// `sent - received`.
    pub lost: u64,
    /// `lost` in percent of `sent`.
    pub loss_pct: f64,
    /// Replies seen more than once (extra copies).
    pub duplicates: u64,
    /// Replies that arrived after a higher sequence number of their flow.
    pub reordered: u64,
    /// Replies with a bad checksum.
    pub corrupted: u64,
    /// Datagrams that were not replies to us.
    pub foreign: u64,
    /// `--psk-file`: datagrams that did not open as sealed replies.
    pub unauthenticated: u64,
    /// `framed`/`stamp`: replies that did not count.
    #[serde(flatten)]
    pub replies: Replies,
    /// `stamp`: one-way delays, residence time and the loss split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stamp: Option<StampReport>,
    /// Replies too old for the duplicate window (counted lost).
    pub late: u64,
    /// Pingpong packets given up after the time-out.
    pub timeouts: u64,
    /// Datagrams the kernel refused.
    pub send_errors: u64,
    /// Sends retried after a full buffer.
    pub send_retries: u64,
    /// Scheduled (measured) packets never sent: the sender was still
    /// behind when `--duration` ended. Not lost: `sent + unsent` is the
    /// schedule.
    pub unsent: u64,
    /// Datagrams sent before their intended time: always 0 (a self-check).
    pub sent_early: u64,
    /// Paced pingpong: packets whose slot went by while their flow waited
    /// for an earlier echo (a stall); 0 in other modes.
    pub skipped_slots: u64,
    /// ICMP port unreachable reports: nothing listens at the target.
    pub refused: u64,
    /// Whether the sender fell behind (it says why on stderr): it missed
    /// the asked rate by more than 1%, left packets unsent, or (open loop)
    /// some send was more than 1 ms later than its intended time.
    pub fell_behind: bool,
    /// Lateness, trains, coalesced reads, thread CPU (flattened).
    #[serde(flatten)]
    pub send_side: SendSide,
    /// Receive - intended send time (back to back: - actual send time).
    pub latency_us: Percentiles,
    /// Receive - actual send time.
    pub latency_uncorrected_us: Percentiles,
    /// Measured duration (seconds).
    pub duration_s: f64,
    /// Warm-up (seconds).
    pub warmup_s: f64,
    /// Whether the run was cut short by a signal.
    pub interrupted: bool,
    /// `rate` or `pingpong`.
    pub mode: &'static str,
    /// `echo` or `sockperf`.
    pub protocol: &'static str,
    /// Number of flows.
    pub flows: u32,
    /// Number of threads.
    pub threads: u32,
    /// Datagram size (bytes).
    pub size: usize,
    /// `--target` as given.
    #[serde(skip)]
    pub target_arg: String,
}

/// The run's shape, for the report.
#[derive(Debug, Clone)]
pub struct RunShape {
    /// Resolved target.
    pub target: String,
    /// `--target` as given.
    pub target_arg: String,
    /// `--rate` as used; `None` back to back.
    pub rate: Option<u64>,
    /// `--shard`.
    pub shard: Shard,
    /// `--mode`.
    pub mode: Mode,
    /// `--protocol`.
    pub protocol: Protocol,
    /// `--flows`.
    pub flows: u32,
    /// `--threads`.
    pub threads: u32,
    /// `--size`.
    pub size: usize,
    /// `--warmup` in seconds.
    pub warmup_s: f64,
}

impl Report {
    /// Builds the report from the merged results.
    pub fn new(
        shape: RunShape,
        c: &Counters,
        latency: Percentiles,
        uncorrected: Percentiles,
        duration_s: f64,
        send_side: SendSide,
        interrupted: bool,
    ) -> Report {
        let per_sec = |n: u64| {
            if duration_s > 0.0 {
                n as f64 / duration_s
            } else {
                0.0
            }
        };
        let (pacing, latency_note) = match (shape.mode, shape.rate) {
            (_, None) => ("back_to_back", BACK_TO_BACK_NOTE),
            (Mode::Rate, Some(_)) => ("open_loop", OPEN_LOOP_NOTE),
            (Mode::Pingpong, Some(_)) => ("paced", PACED_NOTE),
        };
        let mut r = Report {
            target: shape.target,
            rate_requested: shape.rate.map(|r| r as f64 / f64::from(shape.shard.count)),
            shard: shape
                .shard
                .is_shared()
                .then(|| format!("{}/{}", shape.shard.index, shape.shard.count)),
            rate_global: shape.rate.filter(|_| shape.shard.is_shared()),
            pacing,
            corrected_applicable: shape.rate.is_some(),
            latency_note,
            send_rate: per_sec(c.sent),
            echo_rate: per_sec(c.received),
            sent: c.sent,
            received: c.received,
            lost: c.lost(),
            loss_pct: c.loss_pct(),
            duplicates: c.duplicates,
            reordered: c.reordered,
            corrupted: c.corrupted,
            foreign: c.foreign,
            unauthenticated: c.unauthenticated,
            replies: Replies::of(c),
            stamp: None,
            late: c.late,
            timeouts: c.timeouts,
            send_errors: c.send_errors,
            send_retries: c.send_retries,
            unsent: c.unsent,
            sent_early: c.sent_early,
            skipped_slots: c.skipped_slots,
            refused: c.refused,
            fell_behind: false,
            send_side,
            latency_us: latency,
            latency_uncorrected_us: uncorrected,
            duration_s,
            warmup_s: shape.warmup_s,
            interrupted,
            mode: match shape.mode {
                Mode::Rate => "rate",
                Mode::Pingpong => "pingpong",
            },
            protocol: match shape.protocol {
                Protocol::Echo => "echo",
                Protocol::Sockperf => "sockperf",
                Protocol::Framed => "framed",
                Protocol::Stamp => "stamp",
            },
            flows: shape.flows,
            threads: shape.threads,
            size: shape.size,
            target_arg: shape.target_arg,
        };
        r.fell_behind = r.fell_behind();
        r
    }

    /// Whether a paced sender missed the asked rate by more than 1% or
    /// left packets unsent, or an open-loop one sent anything more than
    /// [`BEHIND_LIMIT_US`] late.
    pub fn fell_behind(&self) -> bool {
        self.unsent > 0
            || self.rate_missed()
            || (self.pacing == "open_loop" && self.send_side.behind())
    }

    fn rate_missed(&self) -> bool {
        self.rate_requested
            .is_some_and(|r| !self.interrupted && self.send_rate < 0.99 * r)
    }

    /// Whether nothing answered and the target's host said that nothing
    /// listens there (ICMP port unreachable): the run failed (exit 1).
    pub fn no_server(&self) -> bool {
        self.refused > 0 && self.received == 0
    }
}

/// Serializes a rate as an integer when it is one (`10000`, not `10000.0`).
fn whole_if_integral<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match *v {
        Some(r) if r.fract() == 0.0 && r < 1e15 => s.serialize_u64(r as u64),
        Some(r) => s.serialize_f64(r),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::{new_histogram, record};

    fn sample() -> Report {
        let mut h = new_histogram();
        record(&mut h, 30_000);
        let c = Counters {
            sent: 1000,
            received: 990,
            duplicates: 2,
            ..Counters::default()
        };
        Report::new(
            RunShape {
                target: "127.0.0.1:8888".into(),
                target_arg: "localhost:8888".into(),
                rate: Some(1000),
                shard: Shard::WHOLE,
                mode: Mode::Rate,
                protocol: Protocol::Echo,
                flows: 2,
                threads: 1,
                size: 64,
                warmup_s: 1.0,
            },
            &c,
            Percentiles::of(&h),
            Percentiles::of(&h),
            2.0,
            SendSide::none(12.5),
            false,
        )
    }

    #[test]
    fn json_has_every_required_key() {
        let v = serde_json::to_value(sample()).unwrap();
        for k in [
            "target",
            "rate_requested",
            "send_rate",
            "echo_rate",
            "sent",
            "received",
            "lost",
            "loss_pct",
            "duplicates",
            "reordered",
            "corrupted",
            "latency_us",
            "latency_uncorrected_us",
            "duration_s",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        for k in ["p50", "p90", "p99", "p999", "p9999", "max"] {
            assert!(v["latency_us"][k].is_number(), "latency_us.{k}");
            assert!(
                v["latency_uncorrected_us"][k].is_number(),
                "uncorrected.{k}"
            );
        }
        assert_eq!(v["lost"], 10);
        assert_eq!(v["loss_pct"], 1.0);
        assert_eq!(v["send_rate"], 500.0);
        assert_eq!(v["target"], "127.0.0.1:8888");
    }

    #[test]
    fn text_summary_reads_like_sockperf() {
        let r = sample();
        let t = r.to_string();
        for needle in [
            "Target:             localhost:8888 (127.0.0.1:8888)",
            "Packets sent:       1000",
            "Packets lost:       10 (1.000%)",
            "Duplicates:         2",
            "Rate asked:         1000 pkt/s (open_loop)",
            "note: corrected = receive - intended send time",
            "Send rate:          500.0 pkt/s",
            "p99.99",
            "max",
        ] {
            assert!(t.contains(needle), "{needle:?} missing in\n{t}");
        }
        assert!(!t.contains("Timed out"), "zero extras are left out");
        let header = t.lines().find(|l| l.starts_with("Latency (usec)")).unwrap();
        assert!(header.contains(" corrected "), "{t}");
        assert!(r.fell_behind());
        assert_eq!(r.warnings(0).len(), 1);
        assert_eq!(r.warnings(3).len(), 2);
    }

    #[test]
    fn late_sender_fell_behind_even_at_full_rate() {
        let mut r = sample();
        r.send_rate = 1000.0;
        assert!(r.warnings(0).is_empty());
        assert!(!r.fell_behind());
        r.send_side.behind_max_us = 900.0;
        assert!(!r.fell_behind(), "under 1 ms is on schedule");
        r.send_side.behind_max_us = 20_000.0;
        assert!(r.fell_behind());
        let w = r.warnings(0);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("fell behind") && w[0].contains("up to 20.000 ms late"),
            "{w:?}"
        );
        assert!(w[0].contains("kept the rate"), "{w:?}");
        let t = r.to_string();
        assert!(t.contains("FELL BEHIND"), "{t}");
        // Paced pingpong: a late echo held the send back, not the sender.
        r.pacing = "paced";
        assert!(!r.fell_behind());
        assert!(r.warnings(0)[0].contains("20.000 ms behind"));
    }

    #[test]
    fn back_to_back_says_corrected_does_not_apply() {
        let mut h = new_histogram();
        record(&mut h, 30_000);
        let shape = RunShape {
            target: "127.0.0.1:8888".into(),
            target_arg: "127.0.0.1:8888".into(),
            rate: None,
            shard: Shard::WHOLE,
            mode: Mode::Pingpong,
            protocol: Protocol::Echo,
            flows: 1,
            threads: 1,
            size: 64,
            warmup_s: 0.0,
        };
        let c = Counters {
            sent: 10,
            received: 10,
            ..Counters::default()
        };
        let p = Percentiles::of(&h);
        let r = Report::new(shape.clone(), &c, p, p, 1.0, SendSide::none(0.0), false);
        let v = serde_json::to_value(&r).unwrap();
        assert!(v["rate_requested"].is_null(), "{v}");
        assert_eq!(v["pacing"], "back_to_back");
        assert_eq!(v["corrected_applicable"], false);
        assert!(v["latency_note"]
            .as_str()
            .unwrap()
            .contains("not applicable"));
        let t = r.to_string();
        assert!(t.contains("Rate asked:         none (back_to_back"), "{t}");
        let header = t.lines().find(|l| l.starts_with("Latency (usec)")).unwrap();
        assert_eq!(
            header.split_whitespace().collect::<Vec<_>>(),
            ["Latency", "(usec)", "uncorrected"],
            "no corrected column:\n{t}"
        );
        assert!(t.contains("corrected is not applicable"), "{t}");
        assert!(r.warnings(0).is_empty(), "no rate, so never behind");

        let paced = Report::new(
            RunShape {
                rate: Some(10),
                ..shape
            },
            &c,
            p,
            p,
            1.0,
            SendSide::none(0.0),
            false,
        );
        assert_eq!((paced.pacing, paced.corrected_applicable), ("paced", true));
        assert!(paced.to_string().contains("each flow's schedule"));
    }
}
