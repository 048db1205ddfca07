//! The report's warnings: what deserves a line of its own on stderr (a
//! sender that fell behind, stalls, refusals, replies of the wrong kind, an
//! interruption), each saying what it means for the figures.

use super::Report;

/// Paced pingpong sends this late (microseconds; a late echo held them
/// back) earn a warning even when the rate was met.
const LATE_WARNING_US: f64 = 10_000.0;

impl Report {
    /// Warnings worth a line of their own.
    pub fn warnings(&self, not_replies: u64) -> Vec<String> {
        let mut w = Vec::new();
        if self.fell_behind() {
            let unsent = if self.unsent > 0 {
                format!(
                    "; it stopped at the end of --duration with {} scheduled packets unsent",
                    self.unsent
                )
            } else {
                String::new()
            };
            let kept = if self.rate_missed() || self.unsent > 0 {
                ""
            } else {
                " (it kept the rate, but not the schedule)"
            };
            w.push(format!(
                "the sender fell behind: asked {} pkt/s, sent {:.0} pkt/s, sends {}{kept}{unsent}; \
                 corrected latencies include that delay",
                self.rate_requested.unwrap_or(0.0),
                self.send_rate,
                self.send_side.lateness_text()
            ));
        } else if let Some(rate) = self
            .rate_requested
            .filter(|_| self.send_side.behind_max_us > LATE_WARNING_US)
        {
            w.push(format!(
                "the sender was up to {:.3} ms behind schedule at times (it caught up: \
                 {:.0} of {} pkt/s); corrected latencies include that delay",
                self.send_side.behind_max_us / 1000.0,
                self.send_rate,
                rate
            ));
        }
        if self.skipped_slots > 0 {
            w.push(format!(
                "{} slots went by while a flow waited for a late echo (the server stalled); \
                 corrected latencies include the wait",
                self.skipped_slots
            ));
        }
        if self.refused > 0 {
            let what = if self.no_server() {
                "no server at"
            } else {
                "some packets were refused by"
            };
            w.push(format!(
                "{what} {} (ICMP port unreachable, {} times)",
                self.target, self.refused
            ));
        }
        if not_replies > 0 {
            w.push(format!(
                "{not_replies} replies still had sockperf's CLIENT flag set: the target echoes \
                 byte for byte; use --protocol echo, or a sockperf server (or `server --sockperf`)"
            ));
        }
        w.extend(self.replies.warnings(self.protocol));
        if self.interrupted {
            w.push("interrupted: results cover the part that ran".to_string());
        }
        w
    }
}
