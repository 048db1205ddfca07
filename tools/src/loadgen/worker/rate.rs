//! Rate mode of a sending thread: the open-loop schedule, walked flow by
//! flow (packet `i` goes to flow `i % flows`), sending what is due in
//! `sendmmsg` batches. A thread still behind when `--duration` is over
//! (after a short grace) stops like wrk2: the packets it never sent are
//! counted `unsent`, not lost.

use std::io;

use super::{Due, Worker};

/// How long after the end of `--duration` a sender that is behind may
/// still send packets due before it. wrk2 stops at the end exactly; this
/// grace keeps a brief hiccup (a descheduled thread) right at the end from
/// costing packets, while an overloaded sender still stops.
const STOP_GRACE_NS: u64 = 250_000_000;

impl Worker {
    /// Sends every rate-mode packet due by `now` (bounded per turn); true
    /// once the schedule is exhausted.
    pub(super) fn send_rate_due(&mut self, now: u64) -> io::Result<bool> {
        if now >= self.sched.end_ns() + STOP_GRACE_NS && self.next_index() < self.total {
            // Still behind when --duration is over: like wrk2, stop; what
            // was never sent is `unsent`, not lost.
            self.give_up_rest();
            return Ok(true);
        }
        let budget = self.batch * self.flows.len();
        let mut done = 0;
        while done < budget {
            self.due.clear();
            while self.due.len() < self.batch {
                let i = self.next_index();
                if i >= self.total {
                    break;
                }
                let intended_ns = self.sched.intended_ns(i);
                if intended_ns > now {
                    break;
                }
                self.due.push(Due {
                    local: self.pos,
                    seq: self.round,
                    intended_ns,
                    sent: false,
                });
                self.pos += 1;
                if self.pos == self.flows.len() {
                    self.pos = 0;
                    self.round += 1;
                }
            }
            if self.due.is_empty() {
                break;
            }
            done += self.due.len();
            self.transmit()?;
        }
        Ok(self.next_index() >= self.total)
    }

    /// Counts what is left of the rate-mode schedule as unsent and ends it.
    fn give_up_rest(&mut self) {
        let mut left = 0;
        for (local, f) in self.flows.iter().enumerate() {
            let next_seq = if local >= self.pos {
                self.round
            } else {
                self.round + 1
            };
            left += self.sched.measured_left(f.id, next_seq);
        }
        self.tally.unsent(left);
        // Sequence `total` of any flow is past the end of the schedule.
        self.pos = 0;
        self.round = self.total;
    }

    /// Global index of the next rate-mode packet.
    pub(super) fn next_index(&self) -> u64 {
        self.sched.index(self.flows[self.pos].id, self.round)
    }
}
