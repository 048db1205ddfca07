//! Replay protection for sealed requests: one sliding window of
//! [`WINDOW`] counters per sender (RFC 6479 / IPsec style), in a table of
//! fixed size allocated at start and shared by every worker.
//!
//! A sender is its address and port *and* its 31-bit sender id (random per
//! run), so a client that restarts gets a fresh window and two clients
//! behind one NAT address never share one. With one shared socket any
//! worker may receive any sender's datagram, so the windows cannot be per
//! worker: the table is split into [`STRIPES`] stripes, each behind its own
//! mutex, and a sender always hashes to the same stripe; two workers wait
//! for each other only when their senders share a stripe, for the few
//! nanoseconds of a bit test.
//!
//! Only datagrams whose tag verified reach the table (the stage checks the
//! tag first), so nobody without the key can add senders, move a window
//! or evict anyone. A new sender takes the least recently seen of the
//! [`WAYS`] slots its hash may use; an evicted sender that comes back gets
//! a fresh window, so datagrams of its older than the eviction can be
//! replayed once. The table holds [`DEFAULT_SENDERS`] senders (about 1.5
//! MiB), far more than a test run uses.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use parking_lot::Mutex;

/// Counters each window covers: a counter more than this far below the
/// highest one seen from its sender is refused as replayed.
pub const WINDOW: u64 = 1024;
/// Senders the server's table holds.
pub const DEFAULT_SENDERS: usize = 8192;
/// Independent locks.
pub const STRIPES: usize = 64;
/// Slots a sender's hash may use (the eviction window).
pub const WAYS: usize = 8;

const WORDS: usize = (WINDOW / 64) as usize;

/// One sender's window.
#[derive(Clone, Copy)]
struct Entry {
    peer: SocketAddr,
    sender: u32,
    used: bool,
    last_seen: u64,
    /// Highest counter accepted.
    top: u64,
    /// Bit `c % WINDOW` is set when counter `c` (within the window) was
    /// accepted.
    bits: [u64; WORDS],
}

impl Entry {
    const EMPTY: Entry = Entry {
        peer: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
        sender: 0,
        used: false,
        last_seen: 0,
        top: 0,
        bits: [0; WORDS],
    };

    fn bit(c: u64) -> (usize, u64) {
        let i = c % WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    /// Accepts `c` once: false if it was seen or is below the window.
    fn accept(&mut self, c: u64) -> bool {
        if c > self.top {
            if c - self.top >= WINDOW {
                self.bits = [0; WORDS];
            } else {
                // Forget the counters the window slides past.
                for k in self.top + 1..c {
                    let (w, m) = Entry::bit(k);
                    self.bits[w] &= !m;
                }
            }
            self.top = c;
            let (w, m) = Entry::bit(c);
            self.bits[w] |= m;
            return true;
        }
        if self.top - c >= WINDOW {
            return false;
        }
        let (w, m) = Entry::bit(c);
        let fresh = self.bits[w] & m == 0;
        self.bits[w] |= m;
        fresh
    }
}

struct Stripe {
    entries: Box<[Entry]>,
    tick: u64,
}

impl Stripe {
    fn accept(&mut self, start: usize, peer: SocketAddr, sender: u32, counter: u64) -> bool {
        self.tick += 1;
        let n = self.entries.len();
        let mut victim = start % n;
        for k in 0..WAYS {
            let i = (start + k) % n;
            let e = &self.entries[i];
            if e.used && e.peer == peer && e.sender == sender {
                let e = &mut self.entries[i];
                e.last_seen = self.tick;
                return e.accept(counter);
            }
            let v = &self.entries[victim];
            if v.used && (!e.used || e.last_seen < v.last_seen) {
                victim = i;
            }
        }
        let mut e = Entry {
            peer,
            sender,
            used: true,
            last_seen: self.tick,
            top: counter,
            ..Entry::EMPTY
        };
        let (w, m) = Entry::bit(counter);
        e.bits[w] = m;
        self.entries[victim] = e;
        true
    }
}

/// The shared table of windows.
pub struct ReplayTable {
    stripes: Box<[Mutex<Stripe>]>,
    hasher: RandomState,
}

impl ReplayTable {
    /// A table for about `senders` senders (at least [`WAYS`] per stripe),
    /// all of it allocated now.
    pub fn new(senders: usize) -> ReplayTable {
        let per = senders.div_ceil(STRIPES).max(WAYS);
        let stripes = (0..STRIPES)
            .map(|_| {
                Mutex::new(Stripe {
                    entries: vec![Entry::EMPTY; per].into_boxed_slice(),
                    tick: 0,
                })
            })
            .collect();
        ReplayTable {
            stripes,
            hasher: RandomState::new(),
        }
    }

    /// Records `counter` of sender (`peer`, `sender`): true the first time,
    /// false for a replay or a counter below the window. Never allocates.
    pub fn accept(&self, peer: SocketAddr, sender: u32, counter: u64) -> bool {
        let h = self.hasher.hash_one((peer, sender)) as usize;
        self.stripes[h % STRIPES]
            .lock()
            .accept(h / STRIPES, peer, sender, counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn window_accepts_each_counter_once() {
        let t = ReplayTable::new(64);
        let p = peer(5000);
        assert!(t.accept(p, 1, 100));
        assert!(!t.accept(p, 1, 100), "replay");
        assert!(t.accept(p, 1, 99), "late but new, inside the window");
        assert!(!t.accept(p, 1, 99));
        assert!(t.accept(p, 1, 100 + WINDOW), "slides the window");
        assert!(!t.accept(p, 1, 100), "now below the window");
        assert!(t.accept(p, 1, 101), "last counter inside the window");
        assert!(!t.accept(p, 1, 100 + WINDOW));
        // A jump of more than a window forgets everything below.
        assert!(t.accept(p, 1, 10 * WINDOW));
        assert!(!t.accept(p, 1, 101));
        assert!(t.accept(p, 1, 10 * WINDOW - 1));
        // Another sender id, or another port, is another window.
        assert!(t.accept(p, 2, 100));
        assert!(t.accept(peer(5001), 1, 100));
    }

    #[test]
    fn sliding_clears_only_what_it_passes() {
        let mut e = Entry::EMPTY;
        e.used = true;
        for c in 0..WINDOW {
            assert!(e.accept(c));
        }
        assert!(e.accept(WINDOW + 3), "slides by 4");
        for c in 0..4 {
            assert!(!e.accept(c), "{c} fell out");
        }
        for c in 4..WINDOW {
            assert!(!e.accept(c), "{c} still remembered");
        }
        for c in WINDOW..WINDOW + 3 {
            assert!(e.accept(c), "{c} is new");
        }
    }

    #[test]
    fn full_stripes_evict_the_least_recent() {
        let t = ReplayTable::new(1);
        // Far more senders than slots: every accept still answers, and a
        // sender still in its slot keeps refusing replays.
        for s in 0..10_000u32 {
            assert!(t.accept(peer(7), s, 5));
        }
        assert!(!t.accept(peer(7), 9_999, 5));
    }
}
