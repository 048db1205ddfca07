//! The text form of the final report: a sockperf/dnsperf-style summary,
//! with the rare counters (late, time-outs, send trouble, unsent, skipped
//! slots, refusals) shown only when they are not zero, and the sender's
//! side (lateness, trains, thread CPU; see `send_side`).

use std::fmt;

use super::Report;
use crate::latency::text_block;

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = if self.target_arg == self.target {
            self.target.clone()
        } else {
            format!("{} ({})", self.target_arg, self.target)
        };
        writeln!(f, "Statistics:")?;
        writeln!(f)?;
        writeln!(f, "  Target:             {target}")?;
        writeln!(
            f,
            "  Load:               {} mode, {} protocol, {} flow{} on {} thread{}, {}-byte datagrams",
            self.mode,
            self.protocol,
            self.flows,
            if self.flows == 1 { "" } else { "s" },
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            self.size
        )?;
        writeln!(
            f,
            "  Duration:           {:.3} s (after {:.3} s of warm-up)",
            self.duration_s, self.warmup_s
        )?;
        writeln!(f, "  Packets sent:       {}", self.sent)?;
        writeln!(
            f,
            "  Packets received:   {} ({:.3}%)",
            self.received,
            pct(self.received, self.sent)
        )?;
        writeln!(
            f,
            "  Packets lost:       {} ({:.3}%)",
            self.lost, self.loss_pct
        )?;
        writeln!(f, "  Duplicates:         {}", self.duplicates)?;
        writeln!(f, "  Reordered:          {}", self.reordered)?;
        writeln!(f, "  Corrupted:          {}", self.corrupted)?;
        writeln!(f, "  Foreign:            {}", self.foreign)?;
        self.replies.write_text(f)?;
        for (name, v) in [
            ("Late (too old):     ", self.late),
            ("Timed out:          ", self.timeouts),
            ("Send errors:        ", self.send_errors),
            ("Send retries:       ", self.send_retries),
            ("Skipped slots:      ", self.skipped_slots),
            ("Sent early (bug):   ", self.sent_early),
            ("Unauthenticated:    ", self.unauthenticated),
        ] {
            if v > 0 {
                writeln!(f, "  {name}{v}")?;
            }
        }
        if self.unsent > 0 {
            writeln!(
                f,
                "  Unsent:             {} (the sender fell behind and stopped at the end of --duration)",
                self.unsent
            )?;
        }
        if self.refused > 0 {
            writeln!(
                f,
                "  Refused:            {} (ICMP port unreachable{})",
                self.refused,
                if self.no_server() {
                    ": no server at the target"
                } else {
                    ""
                }
            )?;
        }
        match self.rate_requested {
            Some(r) => match (&self.shard, self.rate_global) {
                (Some(sh), Some(g)) => writeln!(
                    f,
                    "  Rate asked:         {r:.3} pkt/s ({}; shard {sh} of {g} pkt/s)",
                    self.pacing
                )?,
                _ => writeln!(f, "  Rate asked:         {r} pkt/s ({})", self.pacing)?,
            },
            None => writeln!(
                f,
                "  Rate asked:         none (back_to_back: next packet as soon as the echo arrives)"
            )?,
        }
        writeln!(f, "  Send rate:          {:.1} pkt/s", self.send_rate)?;
        writeln!(f, "  Echo rate:          {:.1} pkt/s", self.echo_rate)?;
        self.send_side.write_text(f, self.sent)?;
        writeln!(f)?;
        let block = if self.corrected_applicable {
            text_block(&[
                ("corrected", self.latency_us),
                ("uncorrected", self.latency_uncorrected_us),
            ])
        } else {
            text_block(&[("uncorrected", self.latency_uncorrected_us)])
        };
        write!(f, "{block}")?;
        writeln!(f, "  note: {}", self.latency_note)?;
        match &self.stamp {
            Some(s) => write!(f, "{s}"),
            None => Ok(()),
        }
    }
}
