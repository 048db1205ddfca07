//! Breaks forwarding loops between this server and another echo service on
//! an unprivileged port, without the other side's cooperation.
//!
//! One forged datagram whose source is another echo server's address makes
//! the two answer each other forever; port rules cannot stop it when both
//! ports are unprivileged. What marks such a loop: the *same payload* comes
//! back from the *same peer* it was just sent to, again and again, each
//! time within a few milliseconds. Per worker, a fixed table (indexed by a
//! hash of the peer's address and port; a colliding peer takes the entry
//! over) remembers, for each recent peer, a hash of the last payload
//! answered and when the answer was decided. A bounce is causal: it
//! arrives (kernel receive timestamp) *after* that decision, and soon. When
//! a peer's datagram carries the payload it was last answered with and
//! arrives within [`WINDOW_NS`] after that answer, [`STREAK`] times in a
//! row, the peer is not answered for [`COOLDOWN_NS`] (dropped as `loop`).
//!
//! False-positive bound: only a client that waits for each reply and sends
//! the identical payload again within [`WINDOW_NS`] of it, [`STREAK`] + 1
//! times in a row, is cut off, for [`COOLDOWN_NS`]: that is exactly what
//! another echo server does. A client that floods identical payloads
//! without waiting is not (its datagrams arrive before the previous one is
//! answered), nor are ping-style repeats at intervals, nor any tool whose
//! payloads carry a sequence number.
//! Memory: [`ENTRIES`] x 40 bytes per worker, allocated once.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};

use crate::packet::PacketBuffer;
use crate::process::{DropReason, Stage, Verdict};

/// Entries per worker.
pub const ENTRIES: usize = 1024;
/// A bounce must arrive within this long after the previous answer.
pub const WINDOW_NS: u64 = 1_000_000;
/// Consecutive bounces that make a loop.
pub const STREAK: u16 = 32;
/// How long a looping peer is not answered.
pub const COOLDOWN_NS: u64 = 10_000_000_000;

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    peer: u64,
    payload: u64,
    answered_ns: u64,
    blocked_until: u64,
    streak: u16,
}

/// The per-worker loop breaker stage.
pub struct LoopBreaker {
    table: Box<[Entry]>,
    keys: RandomState,
}

impl Default for LoopBreaker {
    fn default() -> Self {
        LoopBreaker {
            table: vec![Entry::default(); ENTRIES].into_boxed_slice(),
            keys: RandomState::new(),
        }
    }
}

impl LoopBreaker {
    /// Decides one datagram that arrived at `rx_ns`, deciding at `now_ns`
    /// (both `CLOCK_REALTIME`): `true` = answer it.
    pub fn allow(
        &mut self,
        peer: &std::net::SocketAddr,
        payload: &[u8],
        rx_ns: u64,
        now_ns: u64,
    ) -> bool {
        let key = self.keys.hash_one(peer) | 1;
        // Length, the first 64 and the last 16 bytes: cheap, and enough to
        // tell a bouncing datagram from a client's next one.
        let mut h = self.keys.build_hasher();
        payload.len().hash(&mut h);
        payload[..payload.len().min(64)].hash(&mut h);
        payload[payload.len().saturating_sub(16)..].hash(&mut h);
        let ph = h.finish();
        let e = &mut self.table[key as usize % ENTRIES];
        if e.peer != key {
            *e = Entry {
                peer: key,
                ..Entry::default()
            };
        }
        if now_ns < e.blocked_until {
            return false;
        }
        // A bounce: our last answer's payload, arriving after that answer
        // was decided, and soon after.
        let bounce = e.answered_ns != 0
            && ph == e.payload
            && rx_ns > e.answered_ns
            && rx_ns - e.answered_ns <= WINDOW_NS;
        if bounce {
            e.streak += 1;
        } else {
            e.streak = 0;
        }
        if e.streak >= STREAK {
            e.blocked_until = now_ns + COOLDOWN_NS;
            e.streak = 0;
            return false;
        }
        e.payload = ph;
        e.answered_ns = now_ns;
        true
    }
}

impl Stage for LoopBreaker {
    #[inline]
    fn process(&mut self, pkt: &mut PacketBuffer<'_>) -> Verdict {
        let (peer, rx) = (pkt.meta.peer, pkt.meta.rx_ns);
        if self.allow(&peer, pkt.payload(), rx, crate::io::now_realtime_ns()) {
            Verdict::Echo
        } else {
            Verdict::Drop(DropReason::Loop)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bouncing_payload_is_cut_off_and_clients_are_not() {
        let mut b = LoopBreaker::default();
        let echo: std::net::SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let mut t = 1_000_000_000u64;
        let mut answered = 0;
        for _ in 0..100 {
            t += 20_000; // arrives 20 us after the previous answer
            if b.allow(&echo, b"bounce", t, t + 1_000) {
                answered += 1;
            }
            t += 1_000;
        }
        assert_eq!(answered, STREAK as usize, "cut off after the streak");
        assert!(
            !b.allow(&echo, b"other", t + 1_000_000, t + 1_000_000),
            "cooling down"
        );
        let later = t + COOLDOWN_NS + 1;
        assert!(b.allow(&echo, b"other", later, later), "answered again");
        // Identical payloads 10 ms apart (a ping): always answered.
        let ping: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert!((0..1000).all(|i| {
            let t = 5_000_000_000 + i * 10_000_000;
            b.allow(&ping, b"ping", t, t + 1_000)
        }));
        // A flood of identical payloads, queued before each is answered.
        let flood: std::net::SocketAddr = "127.0.0.1:6000".parse().unwrap();
        for i in 0..1000u64 {
            let rx = 9_000_000_000 + i * 1_000;
            assert!(
                b.allow(&flood, b"same", rx, rx + 50_000),
                "flood datagram {i}"
            );
        }
        // Back to back, each after the answer, but with sequence numbers.
        let seq: std::net::SocketAddr = "127.0.0.1:7000".parse().unwrap();
        assert!((0..1000u64).all(|i| {
            let rx = 20_000_000_000 + i * 2_000;
            b.allow(&seq, &i.to_le_bytes(), rx, rx + 500)
        }));
    }
}
