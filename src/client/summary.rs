//! The result of a run: [`Summary`] (every probe counted once) with its
//! ping-style text form, and [`RttStats`], built by the run's RTT recorder
//! (exact min, max and mean, p99 from an HdrHistogram).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Round-trip time statistics over the probes that got a correct echo, in
/// microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RttStats {
    /// Fastest round trip.
    pub min_us: f64,
    /// Mean round trip.
    pub avg_us: f64,
    /// 99th percentile (HdrHistogram, 3 significant digits, clamped to
    /// `min_us..=max_us`).
    pub p99_us: f64,
    /// Slowest round trip.
    pub max_us: f64,
}

/// Outcome of a run. Every probe ends up in exactly one of `received`,
/// `lost` and `mismatched`, so these add up to `sent`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Server address.
    pub target: SocketAddr,
    /// Bytes per probe.
    pub payload_bytes: usize,
    /// Probes attempted.
    pub sent: u64,
    /// Probes answered by a byte-for-byte correct echo.
    pub received: u64,
    /// Probes without an echo: `timeouts + refused`.
    pub lost: u64,
    /// `lost` as a percentage of `sent`.
    pub loss_percent: f64,
    /// Probes whose echo did not arrive within the timeout.
    pub timeouts: u64,
    /// Probes answered by ICMP port unreachable (no server listening).
    pub refused: u64,
    /// Probes answered by a corrupted echo.
    pub mismatched: u64,
    /// Datagrams ignored because they answered no probe in flight: late or
    /// duplicate echoes of earlier probes, and anything received between
    /// probes.
    pub stale: u64,
    /// RTT statistics, `None` if no probe got a correct echo.
    pub rtt: Option<RttStats>,
    /// Whether the run was stopped early (Ctrl+C, SIGTERM): the counts
    /// cover the probes done by then.
    pub interrupted: bool,
}

impl Summary {
    /// True when every probe got a correct echo.
    pub fn is_success(&self) -> bool {
        self.sent > 0 && self.received == self.sent
    }

    /// Probes that failed (lost or mismatched).
    pub fn failed(&self) -> u64 {
        self.sent - self.received
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let early = if self.interrupted {
            " (interrupted)"
        } else {
            ""
        };
        writeln!(f, "--- {} udp echo statistics{early} ---", self.target)?;
        write!(
            f,
            "{} sent, {} received, {} lost ({:.1}%), {} mismatched, {} stale ignored",
            self.sent, self.received, self.lost, self.loss_percent, self.mismatched, self.stale
        )?;
        if self.lost > 0 {
            write!(f, " [{} timeouts, {} refused]", self.timeouts, self.refused)?;
        }
        writeln!(f)?;
        match &self.rtt {
            Some(r) => writeln!(
                f,
                "rtt min/avg/p99/max = {:.1}/{:.1}/{:.1}/{:.1} us",
                r.min_us, r.avg_us, r.p99_us, r.max_us
            ),
            None => writeln!(f, "rtt: no correct echoes"),
        }
    }
}

/// Accumulates RTTs: exact min, max and mean, p99 from an HdrHistogram.
pub(super) struct RttRecorder {
    hist: Histogram<u64>,
    min_ns: u64,
    max_ns: u64,
    sum_ns: u128,
}

impl RttRecorder {
    pub(super) fn new() -> Self {
        RttRecorder {
            // Three significant digits, auto-resizing: cannot fail.
            hist: Histogram::new(3).expect("valid histogram precision"),
            min_ns: u64::MAX,
            max_ns: 0,
            sum_ns: 0,
        }
    }

    pub(super) fn record(&mut self, rtt: Duration) {
        let ns = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX);
        // Auto-resizing histogram: recording only fails beyond u64 range.
        let _ = self.hist.record(ns);
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
        self.sum_ns += u128::from(ns);
    }

    pub(super) fn stats(&self) -> Option<RttStats> {
        let n = self.hist.len();
        if n == 0 {
            return None;
        }
        let p99 = self
            .hist
            .value_at_quantile(0.99)
            .clamp(self.min_ns, self.max_ns);
        Some(RttStats {
            min_us: self.min_ns as f64 / 1e3,
            avg_us: self.sum_ns as f64 / n as f64 / 1e3,
            p99_us: p99 as f64 / 1e3,
            max_us: self.max_ns as f64 / 1e3,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_stats() {
        let mut r = RttRecorder::new();
        assert_eq!(r.stats(), None);
        for us in 1..=100u64 {
            r.record(Duration::from_micros(us));
        }
        let s = r.stats().unwrap();
        assert_eq!(s.min_us, 1.0);
        assert_eq!(s.max_us, 100.0);
        assert!((s.avg_us - 50.5).abs() < 1e-9);
        assert!(s.p99_us >= 98.0 && s.p99_us <= 100.0, "{s:?}");
    }
}
