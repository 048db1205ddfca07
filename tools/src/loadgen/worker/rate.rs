//! Rate mode of a sending thread: the open-loop schedule, walked train by
//! train (a train is one packet without `--gso`; trains go to the flows in
//! turn, see `schedule`): a train is taken when its last member is due, and
//! what was taken goes out in `sendmmsg` batches or `UDP_SEGMENT` trains. A thread still behind when `--duration` is over
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
        // Whole trains per transmit: at least one, at most --batch packets
        // unless a train is longer.
        let room = self.batch.max(self.train as usize);
        let mut done = 0;
        while done < budget {
            self.due.clear();
            while let Some((i, len)) = self.next_train() {
                if self.sched.intended_ns(i + len - 1) > now
                    || (self.due.len() + len as usize > room && !self.due.is_empty())
                {
                    break;
                }
                let seq = self.round * u64::from(self.train);
                for k in 0..len {
                    self.due.push(Due {
                        local: self.pos,
                        seq: seq + k,
                        intended_ns: self.sched.intended_ns(i + k),
                        sent: false,
                    });
                }
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

    /// The thread's next train: global index of its first packet and its
    /// length; `None` when the schedule is exhausted.
    fn next_train(&self) -> Option<(u64, u64)> {
        let seq = self.round * u64::from(self.train);
        let (i, len) = self.sched.train_at(self.flows[self.pos].id, seq);
        (i < self.total && len > 0).then_some((i, len))
    }

    /// When the thread's next train is due: when its last member is.
    pub(super) fn next_train_due_ns(&self) -> u64 {
        match self.next_train() {
            Some((i, len)) => self.sched.intended_ns(i + len - 1),
            None => u64::MAX,
        }
    }

    /// Counts what is left of the rate-mode schedule as unsent and ends it.
    fn give_up_rest(&mut self) {
        let mut left = 0;
        let g = u64::from(self.train);
        for (local, f) in self.flows.iter().enumerate() {
            let next_seq = if local >= self.pos {
                self.round * g
            } else {
                (self.round + 1) * g
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
        let seq = self.round * u64::from(self.train);
        self.sched.index(self.flows[self.pos].id, seq)
    }
}
