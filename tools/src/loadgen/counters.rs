//! Event counters of a run, per thread and per one-second interval; added
//! together at the end. Only measured packets (intended send time after the
//! warm-up) are counted, except `corrupted` and `foreign`, whose fields cannot
//! be trusted and which count when they arrive after the warm-up.

use std::ops::{AddAssign, Sub};

/// Packet counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams the kernel accepted.
    pub sent: u64,
    /// Unique valid replies.
    pub received: u64,
    /// Replies seen before.
    pub duplicates: u64,
    /// Unique replies that came after a higher sequence number of their flow
    /// (includes `late`).
    pub reordered: u64,
    /// Replies older than the duplicate window: not counted as received.
    pub late: u64,
    /// Replies with our magic but a bad checksum.
    pub corrupted: u64,
    /// Datagrams that are not replies to us (too short, wrong magic, unknown
    /// flow or sequence number, or sockperf requests with CLIENT still set).
    pub foreign: u64,
    /// The part of `foreign` that were sockperf messages with CLIENT set.
    pub not_replies: u64,
    /// `--psk-file`: datagrams that did not open as sealed replies under
    /// the key (forged, corrupted, another key, or not sealed at all).
    pub unauthenticated: u64,
    /// `framed`/`stamp`: datagrams that are not a valid reply to one of our
    /// requests (bad frame, wrong type, length or sequence; a STAMP reply
    /// that matches nothing sent).
    pub bad_replies: u64,
    /// The part of `bad_replies` that were our own requests sent back
    /// unchanged (the target does not speak the protocol).
    pub echoed_requests: u64,
    /// `framed`: error replies (type 0xFF).
    pub error_replies: u64,
    /// Pingpong packets given up after --timeout-ms.
    pub timeouts: u64,
    /// Datagrams the kernel refused (never sent, not in `sent`).
    pub send_errors: u64,
    /// Sends retried after a full socket buffer (EAGAIN/ENOBUFS).
    pub send_retries: u64,
    /// Scheduled packets never sent: the sender was still behind when
    /// `--duration` ended (not in `sent`, so not lost either).
    pub unsent: u64,
    /// Paced pingpong: packets whose slot went by while their flow was
    /// still waiting for an earlier echo (they went late, or not at all).
    pub skipped_slots: u64,
    /// ICMP port unreachable reports (ECONNREFUSED on a flow's socket).
    pub refused: u64,
    /// Datagrams sent before their intended time (a bug if ever not 0: the
    /// schedule never lets one go early).
    pub sent_early: u64,
    /// Sends that carried a train (`UDP_SEGMENT`, 2 datagrams or more).
    pub train_sends: u64,
    /// Datagrams (of `sent`) that went in such trains.
    pub train_datagrams: u64,
    /// Reads that delivered a coalesced train (`UDP_GRO`, 2 segments or more).
    pub gro_reads: u64,
    /// Datagrams that arrived in such reads (each counted once, valid or not).
    pub gro_datagrams: u64,
}

impl AddAssign for Counters {
    fn add_assign(&mut self, o: Counters) {
        self.sent += o.sent;
        self.received += o.received;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        self.late += o.late;
        self.corrupted += o.corrupted;
        self.foreign += o.foreign;
        self.not_replies += o.not_replies;
        self.unauthenticated += o.unauthenticated;
        self.bad_replies += o.bad_replies;
        self.echoed_requests += o.echoed_requests;
        self.error_replies += o.error_replies;
        self.timeouts += o.timeouts;
        self.send_errors += o.send_errors;
        self.send_retries += o.send_retries;
        self.unsent += o.unsent;
        self.skipped_slots += o.skipped_slots;
        self.refused += o.refused;
        self.sent_early += o.sent_early;
        self.train_sends += o.train_sends;
        self.train_datagrams += o.train_datagrams;
        self.gro_reads += o.gro_reads;
        self.gro_datagrams += o.gro_datagrams;
    }
}

impl Sub for Counters {
    type Output = Counters;

    /// What happened between two snapshots (`later - earlier`).
    fn sub(self, e: Counters) -> Counters {
        Counters {
            sent: self.sent - e.sent,
            received: self.received - e.received,
            duplicates: self.duplicates - e.duplicates,
            reordered: self.reordered - e.reordered,
            late: self.late - e.late,
            corrupted: self.corrupted - e.corrupted,
            foreign: self.foreign - e.foreign,
            not_replies: self.not_replies - e.not_replies,
            unauthenticated: self.unauthenticated - e.unauthenticated,
            bad_replies: self.bad_replies - e.bad_replies,
            echoed_requests: self.echoed_requests - e.echoed_requests,
            error_replies: self.error_replies - e.error_replies,
            timeouts: self.timeouts - e.timeouts,
            send_errors: self.send_errors - e.send_errors,
            send_retries: self.send_retries - e.send_retries,
            unsent: self.unsent - e.unsent,
            skipped_slots: self.skipped_slots - e.skipped_slots,
            refused: self.refused - e.refused,
            sent_early: self.sent_early - e.sent_early,
            train_sends: self.train_sends - e.train_sends,
            train_datagrams: self.train_datagrams - e.train_datagrams,
            gro_reads: self.gro_reads - e.gro_reads,
            gro_datagrams: self.gro_datagrams - e.gro_datagrams,
        }
    }
}

impl Counters {
    /// Sent but never received (duplicates do not make up for losses).
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }

    /// `lost` as a percentage of `sent` (0 when nothing was sent).
    pub fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.lost() as f64 * 100.0 / self.sent as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_field_by_field_and_derives_loss() {
        let mut a = Counters {
            sent: 10,
            received: 7,
            duplicates: 1,
            ..Counters::default()
        };
        a += Counters {
            sent: 10,
            received: 9,
            corrupted: 2,
            ..Counters::default()
        };
        assert_eq!(
            (a.sent, a.received, a.duplicates, a.corrupted),
            (20, 16, 1, 2)
        );
        assert_eq!(a.lost(), 4);
        assert_eq!(a.loss_pct(), 20.0);
        assert_eq!(Counters::default().loss_pct(), 0.0);
        let before = a;
        a.sent += 5;
        assert_eq!(
            a - before,
            Counters {
                sent: 5,
                ..Counters::default()
            }
        );
    }
}
