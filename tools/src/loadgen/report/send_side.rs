//! The sender's side of the report (flattened into the JSON object): how
//! far behind its schedule the sender fell, as the lateness of every
//! measured send against its *own* intended time (with `--gso` that
//! includes the wait of a train's early members for its last one), how
//! many datagrams went as trains (`UDP_SEGMENT`) and arrived coalesced
//! (`UDP_GRO`), and each sending thread's CPU time, so that one can see
//! whether the threads really ran side by side.

use std::fmt;

use serde::Serialize;

use crate::latency::{fmt_us, Percentiles};

/// A sender whose sends were later than this (microseconds) against their
/// intended times fell behind its schedule, even if it kept the rate.
pub const BEHIND_LIMIT_US: f64 = 1_000.0;

/// What the sending threads measured about themselves.
#[derive(Debug, Clone, Serialize)]
pub struct SendSide {
    /// Worst lateness of a send against its intended time (microseconds).
    pub behind_max_us: f64,
    /// Lateness of the measured sends (microseconds; `max` is rounded to
    /// the histogram's precision, `behind_max_us` is exact).
    pub lateness_us: Percentiles,
    /// Packets per train (`--gso`, cut to 64 KiB); `None` without `--gso`.
    pub gso: Option<u32>,
    /// Why trains were not sent as trains (the kernel refused), if so.
    pub gso_fallback: Option<String>,
    /// `UDP_SEGMENT` sends (measured part).
    pub train_sends: u64,
    /// Measured datagrams that went in them.
    pub train_datagrams: u64,
    /// Whether replies were received with `UDP_GRO`.
    pub gro: bool,
    /// Why `--gro` is not in effect (the kernel refused), if so.
    pub gro_fallback: Option<String>,
    /// Reads that delivered a coalesced train.
    pub gro_reads: u64,
    /// Datagrams that arrived in them.
    pub gro_datagrams: u64,
    /// CPU time of each sending thread (seconds).
    pub thread_cpu_s: Vec<f64>,
}

impl SendSide {
    /// Nothing measured: no lateness, no trains.
    #[cfg(test)]
    pub fn none(behind_max_us: f64) -> SendSide {
        SendSide {
            behind_max_us,
            lateness_us: Percentiles::of(&crate::latency::new_histogram()),
            gso: None,
            gso_fallback: None,
            train_sends: 0,
            train_datagrams: 0,
            gro: false,
            gro_fallback: None,
            gro_reads: 0,
            gro_datagrams: 0,
            thread_cpu_s: Vec::new(),
        }
    }

    /// Whether some send was more than [`BEHIND_LIMIT_US`] late.
    pub fn behind(&self) -> bool {
        self.behind_max_us > BEHIND_LIMIT_US
    }

    /// `up to X ms late, p99 Y ms` for warnings.
    pub fn lateness_text(&self) -> String {
        let p99 = self.lateness_us.p99.unwrap_or(0.0);
        format!(
            "up to {:.3} ms late, p99 {:.3} ms",
            self.behind_max_us / 1000.0,
            p99 / 1000.0
        )
    }

    /// The text report's lines: lateness always, the rest when in use.
    pub fn write_text(&self, f: &mut fmt::Formatter<'_>, sent: u64) -> fmt::Result {
        writeln!(
            f,
            "  Behind schedule:    max {:.1} us, p99 {} us, p50 {} us{}",
            self.behind_max_us,
            fmt_us(self.lateness_us.p99),
            fmt_us(self.lateness_us.p50),
            if self.behind() {
                " (FELL BEHIND: over 1 ms late)"
            } else {
                ""
            }
        )?;
        if let Some(g) = self.gso {
            let pct = if sent == 0 {
                0.0
            } else {
                self.train_datagrams as f64 * 100.0 / sent as f64
            };
            writeln!(
                f,
                "  Trains (GSO):       {} datagrams ({pct:.1}% of sent) in {} sends, up to {g} per train",
                self.train_datagrams, self.train_sends
            )?;
        }
        if let Some(why) = &self.gso_fallback {
            writeln!(f, "  GSO fallback:       {why}")?;
        }
        if self.gro || self.gro_fallback.is_some() {
            writeln!(
                f,
                "  Coalesced (GRO):    {} datagrams in {} reads",
                self.gro_datagrams, self.gro_reads
            )?;
        }
        if let Some(why) = &self.gro_fallback {
            writeln!(f, "  GRO fallback:       {why}")?;
        }
        if !self.thread_cpu_s.is_empty() {
            let cpu: Vec<String> = self
                .thread_cpu_s
                .iter()
                .map(|s| format!("{s:.3}"))
                .collect();
            writeln!(f, "  Thread CPU (s):     {}", cpu.join(" "))?;
        }
        Ok(())
    }
}
