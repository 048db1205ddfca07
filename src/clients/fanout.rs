//! Extra datagrams a stage asks its worker to send (a broadcast's
//! fan-out), and how they are counted.
//!
//! They are not received datagrams, so they have their own books:
//! `targets = sent + pool_exhausted + send_deadline + send_errors + held`
//! ([`FanOutCounters::unaccounted`] is zero when they balance).

use std::net::SocketAddr;

use serde::Serialize;

use crate::packet::Destination;

/// One datagram for several peers, allocated once (no allocation per
/// broadcast).
pub struct FanOut {
    frame: Box<[u8]>,
    len: usize,
    from: Option<Destination>,
    targets: Vec<SocketAddr>,
    pending: bool,
}

impl FanOut {
    /// Room for a datagram of `max_len` bytes to `max_targets` peers.
    pub fn new(max_len: usize, max_targets: usize) -> FanOut {
        FanOut {
            frame: vec![0; max_len].into_boxed_slice(),
            len: 0,
            from: None,
            targets: Vec::with_capacity(max_targets),
            pending: false,
        }
    }

    /// True when a stage asked for this fan-out and it was not sent yet.
    pub fn is_pending(&self) -> bool {
        self.pending
    }

    /// The datagram to send.
    pub fn datagram(&self) -> &[u8] {
        &self.frame[..self.len]
    }

    /// The local address to send from (that of the request that asked for
    /// it), when the kernel said.
    pub fn from(&self) -> Option<Destination> {
        self.from
    }

    /// Who gets it.
    pub fn targets(&self) -> &[SocketAddr] {
        &self.targets
    }

    /// Asks for a fan-out: the datagram is `len` bytes written by `write`
    /// into the buffer, to the peers `fill` puts in the (emptied) target
    /// list. `len` is cut to the buffer.
    pub fn request(
        &mut self,
        len: usize,
        from: Option<Destination>,
        write: impl FnOnce(&mut [u8]),
        fill: impl FnOnce(&mut Vec<SocketAddr>),
    ) {
        self.len = len.min(self.frame.len());
        write(&mut self.frame[..self.len]);
        self.from = from;
        fill(&mut self.targets);
        self.pending = true;
    }

    /// The worker took the request.
    pub fn clear(&mut self) {
        self.pending = false;
        self.targets.clear();
    }
}

/// The books of fan-out sends (broadcasts), per worker and in the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FanOutCounters {
    /// Broadcasts relayed (requests from `--admin` sources).
    pub broadcasts: u64,
    /// Datagrams they asked for: one per live, answered client.
    pub targets: u64,
    /// Of them, sent.
    pub sent: u64,
    /// Not sent: no free pool buffer at the time.
    pub pool_exhausted: u64,
    /// Not sent: held in the send backlog past `--send-deadline`, or at
    /// shutdown.
    pub send_deadline: u64,
    /// Not sent: the kernel refused them for good.
    pub send_errors: u64,
    /// Held in the send backlog now.
    pub held: u64,
}

impl FanOutCounters {
    /// targets - (sent + every reason not sent + held): zero when the
    /// books balance.
    pub fn unaccounted(&self) -> i64 {
        self.targets as i64
            - (self.sent + self.pool_exhausted + self.send_deadline + self.send_errors + self.held)
                as i64
    }

    /// Adds another worker's counts.
    pub fn merge(&mut self, o: &FanOutCounters) {
        self.broadcasts += o.broadcasts;
        self.targets += o.targets;
        self.sent += o.sent;
        self.pool_exhausted += o.pool_exhausted;
        self.send_deadline += o.send_deadline;
        self.send_errors += o.send_errors;
        self.held += o.held;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_pending_until_cleared_and_reconciles() {
        let mut f = FanOut::new(4, 2);
        assert!(!f.is_pending());
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        f.request(6, None, |b| b.copy_from_slice(b"abcd"), |t| t.push(to));
        assert!(f.is_pending());
        assert_eq!((f.datagram(), f.targets()), (&b"abcd"[..], &[to][..]));
        f.clear();
        assert!(!f.is_pending() && f.targets().is_empty());
        let mut c = FanOutCounters {
            targets: 5,
            sent: 2,
            pool_exhausted: 1,
            send_deadline: 1,
            ..Default::default()
        };
        assert_eq!(c.unaccounted(), 1);
        c.held = 1;
        let mut t = FanOutCounters::default();
        t.merge(&c);
        t.merge(&c);
        assert_eq!((t.unaccounted(), t.targets), (0, 10));
    }
}
