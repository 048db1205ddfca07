//! One worker's client table: a fixed, set-associative table of the
//! senders it received from (address and port), allocated once.
//!
//! A sender hashes to one set of up to [`WAYS`] entries. A new sender takes
//! an empty entry of its set, else one idle for longer than the TTL
//! (counted in `evicted_idle`), else the idlest (least recently seen:
//! counted in `evicted_full`). A sender idle for longer than the TTL that
//! comes back starts over as a new client.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// Entries per set.
pub const WAYS: usize = 8;

/// What is known about one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientStats {
    /// Address and port.
    pub addr: SocketAddr,
    /// Datagrams received from it (0: the entry is empty).
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Of them, those answered.
    pub answered: u64,
    /// Receive time of its first datagram, ns since the Unix epoch.
    pub first_ns: u64,
    /// Receive time of its last datagram.
    pub last_ns: u64,
    /// Whether its last datagram was answered (not refused, limited or
    /// dropped): only such clients receive broadcasts.
    pub last_answered: bool,
}

impl Default for ClientStats {
    fn default() -> Self {
        ClientStats {
            addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
            packets: 0,
            bytes: 0,
            answered: 0,
            first_ns: 0,
            last_ns: 0,
            last_answered: false,
        }
    }
}

impl ClientStats {
    /// Seen within `ttl_ns` of `now_ns`.
    pub fn live(&self, now_ns: u64, ttl_ns: u64) -> bool {
        self.packets > 0 && now_ns.saturating_sub(self.last_ns) <= ttl_ns
    }
}

/// The table (see the module docs).
pub struct ClientTable {
    entries: Box<[ClientStats]>,
    ways: usize,
    ttl_ns: u64,
    keys: RandomState,
    /// Entries taken over from a client idle for longer than the TTL.
    pub evicted_idle: u64,
    /// Entries taken over from a live client because the set was full.
    pub evicted_full: u64,
}

impl ClientTable {
    /// Entries a table asked for `size` really has (whole sets).
    pub fn capacity_for(size: usize) -> usize {
        let ways = size.clamp(1, WAYS);
        size.max(1).div_ceil(ways) * ways
    }

    /// A table of at least `size` entries (see [`Self::capacity_for`])
    /// forgetting clients idle for longer than `ttl_ns`.
    pub fn new(size: usize, ttl_ns: u64) -> ClientTable {
        ClientTable {
            entries: vec![ClientStats::default(); Self::capacity_for(size)].into_boxed_slice(),
            ways: size.clamp(1, WAYS),
            ttl_ns,
            keys: RandomState::new(),
            evicted_idle: 0,
            evicted_full: 0,
        }
    }

    /// Entries in the table.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// The TTL in nanoseconds.
    pub fn ttl_ns(&self) -> u64 {
        self.ttl_ns
    }

    /// Counts one datagram of `len` bytes from `addr` received at `now_ns`;
    /// returns its entry's index (for [`Self::answered`]).
    pub fn record(&mut self, addr: SocketAddr, len: usize, now_ns: u64) -> usize {
        let sets = self.entries.len() / self.ways;
        let start = (self.keys.hash_one(addr) % sets as u64) as usize * self.ways;
        let set = start..start + self.ways;
        let (ttl, mut pick, mut idlest) = (self.ttl_ns, None, None);
        for i in set {
            let e = &self.entries[i];
            if e.packets > 0 && e.addr == addr {
                pick = Some(i);
                break;
            }
            let better =
                |j: Option<usize>| !j.is_some_and(|j| e.last_ns >= self.entries[j].last_ns);
            if better(idlest) {
                idlest = Some(i);
            }
        }
        let i = match pick {
            Some(i) if self.entries[i].live(now_ns, ttl) => i,
            Some(i) => self.take(i, now_ns), // back after idling: a new client
            None => self.take(idlest.expect("a set has entries"), now_ns),
        };
        let e = &mut self.entries[i];
        if e.packets == 0 {
            *e = ClientStats {
                addr,
                first_ns: now_ns,
                ..ClientStats::default()
            };
        }
        e.packets += 1;
        e.bytes += len as u64;
        e.last_ns = e.last_ns.max(now_ns);
        i
    }

    /// Empties entry `i` for a new client, counting what it held.
    fn take(&mut self, i: usize, now_ns: u64) -> usize {
        let e = &mut self.entries[i];
        if e.packets > 0 {
            match e.live(now_ns, self.ttl_ns) {
                true => self.evicted_full += 1,
                false => self.evicted_idle += 1,
            }
        }
        *e = ClientStats::default();
        i
    }

    /// Records whether the datagram just counted in entry `i` was answered.
    pub fn answered(&mut self, i: usize, yes: bool) {
        if let Some(e) = self.entries.get_mut(i) {
            e.answered += u64::from(yes);
            e.last_answered = yes;
        }
    }

    /// The clients seen within the TTL of `now_ns`.
    pub fn live(&self, now_ns: u64) -> impl Iterator<Item = &ClientStats> + '_ {
        let ttl = self.ttl_ns;
        self.entries.iter().filter(move |e| e.live(now_ns, ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn counts_each_client_exactly() {
        let mut t = ClientTable::new(64, 1_000);
        for round in 0..5u64 {
            for p in 0..10u16 {
                let i = t.record(addr(2000 + p), 100 + p as usize, 10 + round);
                t.answered(i, p % 2 == 0);
            }
        }
        let mut live: Vec<_> = t.live(20).copied().collect();
        live.sort_by_key(|e| e.addr);
        assert_eq!(live.len(), 10);
        for (p, e) in live.iter().enumerate() {
            assert_eq!(e.addr, addr(2000 + p as u16));
            assert_eq!((e.packets, e.bytes), (5, 5 * (100 + p as u64)));
            assert_eq!((e.first_ns, e.last_ns), (10, 14));
            assert_eq!((e.answered > 0, e.last_answered), (p % 2 == 0, p % 2 == 0));
        }
        assert_eq!((t.evicted_idle, t.evicted_full), (0, 0));
    }

    #[test]
    fn a_full_set_gives_up_its_idlest_client() {
        // One set of 8: the 9th and 10th clients take the two idlest.
        let mut t = ClientTable::new(8, u64::MAX);
        assert_eq!(t.capacity(), 8);
        for p in 0..10u16 {
            t.record(addr(3000 + p), 1, 100 + p as u64);
        }
        t.record(addr(3002), 1, 200); // seen again: still there
        let mut ports: Vec<u16> = t.live(300).map(|e| e.addr.port()).collect();
        ports.sort_unstable();
        assert_eq!(ports, (3002..3010).collect::<Vec<_>>());
        assert_eq!((t.evicted_full, t.evicted_idle), (2, 0));
        let e = t.live(300).find(|e| e.addr == addr(3002)).unwrap();
        assert_eq!(e.packets, 2);
    }

    #[test]
    fn idle_clients_are_forgotten_and_come_back_as_new() {
        let mut t = ClientTable::new(8, 50);
        t.record(addr(1), 10, 100);
        t.record(addr(2), 10, 100);
        assert_eq!(t.live(150).count(), 2);
        assert_eq!(t.live(151).count(), 0, "idle past the ttl");
        t.record(addr(1), 7, 400);
        let e: Vec<_> = t.live(400).copied().collect();
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].packets, e[0].bytes, e[0].first_ns), (1, 7, 400));
        assert_eq!(t.evicted_idle, 1);
        // A table smaller than a set, and the empty table, still work.
        let mut small = ClientTable::new(3, 50);
        for p in 0..5 {
            small.record(addr(p), 1, 1 + p as u64);
        }
        assert_eq!((small.capacity(), small.live(5).count()), (3, 3));
        assert_eq!(ClientTable::capacity_for(0), 1);
    }
}
