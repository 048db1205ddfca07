//! Breaks forwarding loops between this server and another echo service on
//! an unprivileged port, without the other side's cooperation.
//!
//! One forged datagram whose source is another echo server's address makes
//! the two answer each other forever; port rules cannot stop it when both
//! ports are unprivileged. By timing alone a loop cannot be told from a
//! client that sends one payload over and over: both send the payload they
//! were just answered with, right after the answer. What tells them apart
//! is what happens when we stop answering: a loop stops at once (every
//! datagram in it is one of our answers coming back), a client goes on.
//! So the breaker works in three steps, per peer (address and port):
//!
//! 1. **Suspect.** The peer's datagram carries the payload it was last
//!    answered with and arrives (kernel timestamp) within [`WINDOW_NS`] of
//!    that answer, [`STREAK`] times in a row, over at least
//!    [`MIN_SPAN_NS`] (a short burst of copies is not enough).
//! 2. **Probe.** Nothing from the peer is answered for [`PROBE_NS`]
//!    (dropped as `loop`). Every datagram of a loop whose round trip is
//!    shorter than that is dropped, so the loop is broken, whatever the
//!    number of datagrams bouncing in it.
//! 3. **Judge.** If the peer kept sending through the second half of the
//!    probe, it is a client: it is not suspected again for [`EXEMPT_NS`],
//!    as long as it sends no more than about twice the rate it kept up
//!    during the probe (more means answers are coming back on top of its
//!    own traffic: suspected again). Otherwise the loop is gone and the
//!    peer is answered as usual.
//!
//! The workers of one server share the probes ([`LoopProbes`]: one atomic
//! word per slot, allocated once), since a shared socket spreads a peer's
//! datagrams over every worker: a probe one worker starts silences the
//! peer in all of them.
//!
//! False-positive bound: a client that sends the payload it was just
//! answered with, 64 times in a row, each within 1 ms of the answer, loses
//! what it sends during one 10 ms probe (counted as `loop`) and is then
//! left alone for 10 s: at most 0.1% of a steady stream. Ping-style
//! repeats at intervals of a millisecond or more, and every tool with a
//! sequence number or timestamp in its payload, are never suspected.
//! Memory: [`ENTRIES`] entries of 64 bytes per worker, allocated once.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::packet::PacketBuffer;
use crate::process::{DropReason, Stage, Verdict};

/// Entries per worker (peers hashed into a fixed table; a colliding peer
/// takes the entry over).
pub const ENTRIES: usize = 1024;
/// A repeat must arrive within this long of the previous answer.
pub const WINDOW_NS: u64 = 1_000_000;
/// Repeats in a row that make a peer suspect.
pub const STREAK: u32 = 64;
/// ... spread over at least this long.
pub const MIN_SPAN_NS: u64 = 2_000_000;
/// How long a suspect is not answered.
pub const PROBE_NS: u64 = 10_000_000;
/// How long a peer that kept sending through a probe is left alone.
pub const EXEMPT_NS: u64 = 10_000_000_000;

/// Slots in the probe table shared by the workers.
pub const PROBE_SLOTS: usize = 4096;

/// The probes in progress, shared by the workers of one server: per slot
/// (peer hash), the peer's 16-bit tag and the probe's start in
/// microseconds since the table was made (48 bits: nine years).
pub struct LoopProbes {
    slots: Box<[AtomicU64]>,
    keys: RandomState,
    epoch_ns: u64,
}

impl LoopProbes {
    /// An empty table, its clock starting at `now_ns`.
    pub fn new(now_ns: u64) -> Arc<LoopProbes> {
        Arc::new(LoopProbes {
            slots: (0..PROBE_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            keys: RandomState::new(),
            epoch_ns: now_ns,
        })
    }

    fn slot(&self, key: u64) -> (&AtomicU64, u64) {
        (
            &self.slots[(key >> 16) as usize % PROBE_SLOTS],
            key & 0xffff,
        )
    }

    /// Records that a probe of the peer `key` started at `since_ns`.
    fn start(&self, key: u64, since_ns: u64) {
        let (slot, tag) = self.slot(key);
        let us = (since_ns.saturating_sub(self.epoch_ns) / 1_000).max(1);
        slot.store((us << 16) | tag, Ordering::Relaxed);
    }

    /// When the last probe of the peer `key` started, if there was one.
    fn started(&self, key: u64) -> Option<u64> {
        let (slot, tag) = self.slot(key);
        let v = slot.load(Ordering::Relaxed);
        (v != 0 && v & 0xffff == tag).then(|| self.epoch_ns + (v >> 16) * 1_000)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    #[default]
    Watch,
    /// Not answering since `since`; `late` arrivals in the second half.
    Probe { since: u64, late: u32 },
    /// A client: not suspected until `until`, unless it sends more than
    /// `allowance` datagrams in one probe-length window.
    Exempt {
        until: u64,
        allowance: u32,
        window: u64,
        seen: u32,
    },
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    peer: u64,
    payload: u64,
    answered_ns: u64,
    streak_start: u64,
    streak: u32,
    state: State,
}

/// The per-worker loop breaker stage.
pub struct LoopBreaker {
    table: Box<[Entry]>,
    probes: Arc<LoopProbes>,
}

impl LoopBreaker {
    /// One worker's breaker, sharing `probes` with the other workers.
    pub fn new(probes: Arc<LoopProbes>) -> Self {
        LoopBreaker {
            table: vec![Entry::default(); ENTRIES].into_boxed_slice(),
            probes,
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
        let keys = &self.probes.keys;
        let key = keys.hash_one(peer) | 1;
        let ph = fingerprint(payload, key);
        let e = &mut self.table[key as usize % ENTRIES];
        if e.peer != key {
            *e = Entry {
                peer: key,
                ..Entry::default()
            };
        }
        // A probe another worker started. (One this worker has judged a
        // client stays exempt here: its own rate check still applies.)
        if e.state == State::Watch {
            if let Some(since) = self.probes.started(key) {
                if now_ns >= since && now_ns < since + PROBE_NS {
                    e.state = State::Probe { since, late: 0 };
                }
            }
        }
        match e.state {
            State::Probe { since, late } => {
                // Everything decided during the probe is dropped, whenever
                // it arrived: a loop's datagrams may wait in the queue.
                if now_ns < since + PROBE_NS {
                    let late = late + u32::from(rx_ns >= since + PROBE_NS / 2);
                    e.state = State::Probe { since, late };
                    return false;
                }
                // The probe is over: a client kept sending through it.
                e.state = if late > 0 {
                    State::Exempt {
                        until: since + EXEMPT_NS,
                        allowance: 2 * late + 8,
                        window: rx_ns,
                        seen: 0,
                    }
                } else {
                    State::Watch
                };
                e.streak = 0;
            }
            State::Exempt {
                until,
                allowance,
                window,
                seen,
            } => {
                let (window, seen) = if rx_ns >= window + PROBE_NS / 2 {
                    (rx_ns, 1)
                } else {
                    (window, seen + 1)
                };
                e.state = if rx_ns >= until || seen > allowance {
                    e.streak = 0;
                    State::Watch
                } else {
                    State::Exempt {
                        until,
                        allowance,
                        window,
                        seen,
                    }
                };
            }
            State::Watch => {}
        }
        if e.state == State::Watch {
            let repeat =
                e.answered_ns != 0 && ph == e.payload && rx_ns.abs_diff(e.answered_ns) <= WINDOW_NS;
            if !repeat {
                e.streak = 0;
            } else {
                if e.streak == 0 {
                    e.streak_start = rx_ns;
                }
                e.streak += 1;
                if e.streak >= STREAK && rx_ns.saturating_sub(e.streak_start) >= MIN_SPAN_NS {
                    // Microseconds, as the shared table keeps it.
                    let since = now_ns - now_ns % 1_000;
                    self.probes.start(key, since);
                    e.state = State::Probe { since, late: 0 };
                    return false;
                }
            }
        }
        e.payload = ph;
        e.answered_ns = now_ns;
        true
    }
}

/// The length, the first 64 and the last 16 bytes, folded 8 at a time with
/// a multiply-rotate (seeded per peer): a few nanoseconds, and enough to
/// tell our own answer coming back from a client's next datagram. Not a
/// defence against crafted collisions; it does not need to be (a collision
/// can only make a peer look like a loop, and the probe sorts that out).
fn fingerprint(payload: &[u8], seed: u64) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mix = |h: u64, w: u64| (h ^ w).wrapping_mul(K).rotate_left(29);
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(w)
    };
    let head = &payload[..payload.len().min(64)];
    let tail = &payload[payload.len().saturating_sub(16)..];
    let mut h = mix(seed, payload.len() as u64);
    for c in head.chunks(8).chain(tail.chunks(8)) {
        h = mix(h, word(c));
    }
    h
}

impl Stage for LoopBreaker {
    #[inline]
    fn process(&mut self, pkt: &mut PacketBuffer<'_>) -> Verdict {
        let now = crate::io::now_realtime_ns();
        let rx = if pkt.meta.rx_ns != 0 {
            pkt.meta.rx_ns
        } else {
            now
        };
        if self.allow(&pkt.meta.peer, pkt.payload(), rx, now) {
            Verdict::Echo
        } else {
            Verdict::Drop(DropReason::Loop)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    const T0: u64 = 1_000_000_000;

    impl Default for LoopBreaker {
        fn default() -> Self {
            LoopBreaker::new(LoopProbes::new(0))
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Another echo server: each datagram is our last answer, back `rtt`
    /// later, for as long as we answer. Returns how many we answered.
    fn bounce(b: &mut LoopBreaker, peer: SocketAddr, t: &mut u64, rtt: u64) -> u32 {
        for answered in 0..100_000 {
            *t += rtt;
            if !b.allow(&peer, b"bounce", *t, *t + 1_000) {
                return answered;
            }
        }
        panic!("never broken");
    }

    #[test]
    fn a_loop_is_broken_and_stays_broken() {
        let mut b = LoopBreaker::default();
        let mut t = T0;
        let answered = bounce(&mut b, addr(4000), &mut t, 20_000);
        assert_eq!(
            answered, 101,
            "the first, then repeats for 2 ms of 20 us round trips"
        );
        // The loop died with the dropped datagram. Much later the same
        // forged start gives the same bounded run, not an endless one.
        t += 1_000_000_000;
        assert!(b.allow(&addr(4000), b"bounce", t, t + 1_000));
        assert_eq!(bounce(&mut b, addr(4000), &mut t, 20_000), 100);
    }

    #[test]
    fn a_steady_flood_of_one_payload_loses_one_probe_then_is_left_alone() {
        let mut b = LoopBreaker::default();
        let peer = addr(5000);
        let mut dropped = 0;
        // 4,000 identical datagrams a second for 5 s, each answered 10 us
        // after it arrives (so each arrives 240 us after the last answer).
        for i in 0..20_000u64 {
            let rx = T0 + i * 250_000;
            if !b.allow(&peer, &[0x5a; 1000], rx, rx + 10_000) {
                dropped += 1;
            }
        }
        assert_eq!(dropped, 40, "one 10 ms probe at 4,000/s");
    }

    #[test]
    fn bursts_pings_and_sequence_numbers_are_never_suspected() {
        let mut b = LoopBreaker::default();
        // Bursts of 40 copies back to back, every 10 ms.
        for burst in 0..500u64 {
            for i in 0..40u64 {
                let rx = T0 + burst * 10_000_000 + i * 5_000;
                assert!(b.allow(&addr(1), b"same", rx, rx + 1_000));
            }
        }
        // Ping: the same payload every 1.5 ms, a reply after 20 us.
        assert!((0..10_000u64).all(|i| {
            let t = T0 + i * 1_500_000;
            b.allow(&addr(2), b"ping", t, t + 1_000)
        }));
        // Ping-pong back to back with a sequence number.
        assert!((0..10_000u64).all(|i| {
            let rx = T0 + i * 20_000;
            b.allow(&addr(3), &i.to_le_bytes(), rx, rx + 1_000)
        }));
    }

    #[test]
    fn fingerprints_tell_payloads_apart() {
        let f = |p: &[u8]| fingerprint(p, 7);
        assert_eq!(f(b"same"), f(b"same"));
        assert_ne!(f(b"same"), f(b"samf"));
        assert_ne!(f(b""), f(&[0]), "length counts");
        let (mut a, mut b) = ([0u8; 1000], [0u8; 1000]);
        b[999] = 1;
        assert_ne!(f(&a), f(&b), "the tail counts");
        a[500] = 1;
        assert_eq!(f(&a), f(&[0u8; 1000]), "the middle does not");
    }

    #[test]
    fn a_probe_started_by_one_worker_silences_the_peer_in_all() {
        let probes = LoopProbes::new(T0 - 1_000);
        let (mut w1, mut w2) = (LoopBreaker::new(probes.clone()), LoopBreaker::new(probes));
        let peer = addr(4000);
        // The loop's datagrams alternate between the two workers.
        let mut t = T0;
        let mut answered = 0;
        for i in 0..10_000 {
            t += 20_000;
            let w = if i % 2 == 0 { &mut w1 } else { &mut w2 };
            if !w.allow(&peer, b"bounce", t, t + 1_000) {
                break;
            }
            answered += 1;
        }
        assert!(answered < 300, "{answered}");
        // Within the probe the other worker drops the peer too.
        assert!(!w1.allow(&peer, b"x", t + 2_000_000, t + 2_001_000));
        assert!(!w2.allow(&peer, b"y", t + 3_000_000, t + 3_001_000));
        // Quiet through the second half: answered again afterwards.
        assert!(w2.allow(&peer, b"z", t + PROBE_NS + 5_000, t + PROBE_NS + 6_000));
        assert!(w1.allow(&peer, b"z", t + PROBE_NS + 7_000, t + PROBE_NS + 8_000));
    }

    #[test]
    fn a_loop_hidden_behind_a_flood_is_caught_when_it_outgrows_the_flood() {
        let mut b = LoopBreaker::default();
        let peer = addr(6000);
        // An attacker floods copies at 2,000/s (forging the peer) through
        // a probe: the peer is taken for a client...
        let mut t = T0;
        let mut dropped = 0;
        for _ in 0..100 {
            t += 500_000;
            if !b.allow(&peer, b"x", t, t + 1_000) {
                dropped += 1;
            }
        }
        assert_eq!(dropped, 20, "one probe");
        // ...then stops, and the loop it started bounces every 20 us: far
        // more than the flood it showed during the probe, so it is suspected
        // and broken again within milliseconds.
        let answered = bounce(&mut b, peer, &mut t, 20_000);
        assert!(answered < 300, "{answered} answers before the loop broke");
    }
}
