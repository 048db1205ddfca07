//! Pingpong mode of a sending thread: one packet in flight per flow. Back
//! to back (no `--rate`) a flow sends its next packet as soon as the echo
//! arrives (or the time-out gives it up). Paced (`--rate`) each flow keeps
//! its own schedule, `--rate / --flows` packets a second: the next packet is
//! intended for the flow's next slot even when that slot passed while the
//! flow waited for an echo; it then goes at once and its corrected latency
//! includes the wait (the wrk2 model). Paced sending stops at the end of
//! `--duration` even if slots are still due: those are counted `unsent`.
//! A packet whose slot went by while its flow was still waiting for the
//! previous echo (or its time-out) counts as a skipped slot, so a stall of
//! the server shows in the report as a count too.

use std::io;

use udp_packet_pool::io::now_monotonic_ns;

use super::{Due, Worker};
use crate::flow::{Flow, Outstanding};
use crate::schedule::Schedule;
use crate::tally::Tally;

impl Worker {
    /// Pingpong: gives up timed-out packets, sends the next packet of every
    /// flow that is ready; true once no flow has anything left to do.
    pub(super) fn send_pingpong_due(&mut self, now: u64) -> io::Result<bool> {
        let spacing = self.sched.flow_interval_ns();
        let end = self.sched.end_ns();
        let mut active = false;
        self.due.clear();
        for (local, f) in self.flows.iter_mut().enumerate() {
            if let Some(o) = f.outstanding {
                if now < o.deadline_ns {
                    active = true;
                    continue;
                }
                self.tally.timed_out(f.last_intended_ns);
                released(&self.sched, &mut self.tally, f, now);
            }
            if f.ready_ns >= end {
                continue;
            }
            if now >= end {
                // Paced and behind at the end: what is still due is not sent.
                if spacing > 0 && self.sched.is_measured(f.ready_ns) {
                    self.tally.unsent((end - f.ready_ns).div_ceil(spacing));
                }
                f.ready_ns = end;
                continue;
            }
            active = true;
            if f.ready_ns <= now && self.due.len() < self.batch {
                self.due.push(Due {
                    local,
                    seq: f.next_seq,
                    intended_ns: f.ready_ns,
                    sent: false,
                });
            }
        }
        if self.due.is_empty() {
            return Ok(!active);
        }
        self.transmit()?;
        let deadline_ns = now_monotonic_ns() + self.timeout_ns;
        for d in &self.due {
            let f = &mut self.flows[d.local];
            f.last_intended_ns = d.intended_ns;
            if d.sent {
                f.outstanding = Some(Outstanding {
                    seq: d.seq,
                    deadline_ns,
                });
            } else {
                f.ready_ns = d.intended_ns + spacing;
            }
        }
        Ok(false)
    }

    /// When a flow next has something to send or to time out.
    pub(super) fn next_pingpong_due_ns(&self) -> u64 {
        let end = self.sched.end_ns();
        self.flows
            .iter()
            .filter_map(|f| match f.outstanding {
                Some(o) => Some(o.deadline_ns),
                None => (f.ready_ns < end).then_some(f.ready_ns),
            })
            .min()
            .unwrap_or(u64::MAX)
    }
}

/// Pingpong: flow `f`'s packet in flight was answered or given up at
/// `now`; its next packet may go. Paced, if that packet's slot already went
/// by while the flow waited, the slot counts as skipped (a stall).
pub(super) fn released(sched: &Schedule, tally: &mut Tally, f: &mut Flow, now: u64) {
    f.outstanding = None;
    f.ready_ns = next_ready_ns(sched, f.last_intended_ns, now);
    if !sched.back_to_back() && f.ready_ns < now && f.ready_ns < sched.end_ns() {
        tally.skipped_slot(f.ready_ns);
    }
}

/// Pingpong: when a flow whose last packet was intended at `last_intended_ns`
/// and was answered (or given up) at `now` may send its next one. Paced, the
/// next slot of the flow's schedule, even if it already passed (the packet
/// then goes at once and its corrected latency counts the wait: wrk2);
/// back to back, right now.
pub(super) fn next_ready_ns(sched: &Schedule, last_intended_ns: u64, now: u64) -> u64 {
    if sched.back_to_back() {
        now
    } else {
        last_intended_ns + sched.flow_interval_ns()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pingpong_keeps_its_schedule_when_paced_only() {
        let mut s = Schedule {
            start_ns: 0,
            rate: Some(1000),
            flows: 2,
            train: 1,
            warmup_ns: 0,
            duration_ns: 1_000_000_000,
            shard: crate::schedule::Shard::WHOLE,
        };
        // Echo 5 ms late for a 2 ms slot: the next slot stays on schedule.
        assert_eq!(next_ready_ns(&s, 10_000_000, 15_000_000), 12_000_000);
        s.rate = None;
        assert_eq!(next_ready_ns(&s, 10_000_000, 15_000_000), 15_000_000);
    }
}
