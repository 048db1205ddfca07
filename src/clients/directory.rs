//! Where the workers' client tables meet: each worker publishes a copy of
//! its live clients here (at its 100 ms flush with `try_lock`, never
//! waiting; once with a wait at exit), and the metrics thread and the
//! broadcast stage read the copies, merged by address (with one shared
//! socket a client's datagrams spread over every worker).
//!
//! The copies are allocated once, as large as a table, so publishing never
//! allocates. A reader holds a worker's lock only to copy or add up its
//! entries.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

use super::{ClientStats, ClientTable};

/// Clients the report and the SIGHUP summary list.
pub const TOP_TALKERS: usize = 10;

#[derive(Default)]
struct Published {
    live: Vec<ClientStats>,
    evicted_idle: u64,
    evicted_full: u64,
}

/// The workers' published client tables.
pub struct ClientDirectory {
    workers: Vec<Mutex<Published>>,
    table_size: usize,
    ttl_ns: u64,
}

/// One client in the report: its figures added up over every worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TopTalker {
    /// `address:port`.
    pub addr: String,
    /// Datagrams received from it.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Of the datagrams, those answered.
    pub answered: u64,
    /// Seconds between its first datagram and the report.
    pub first_seen_s_ago: f64,
    /// Seconds between its last datagram and the report.
    pub last_seen_s_ago: f64,
}

/// What the metrics thread says about clients.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClientsSummary {
    /// Distinct clients (address and port) seen within `--client-ttl`.
    pub active: usize,
    /// Table entries per worker (`--clients`, in whole sets of 8).
    pub table_entries: usize,
    /// `--client-ttl` in seconds.
    pub ttl_s: f64,
    /// Entries taken over from clients idle past the TTL, all workers.
    pub evicted_idle: u64,
    /// Entries taken over from live clients because a set was full.
    pub evicted_full: u64,
    /// The clients that sent the most datagrams, most first (at most
    /// [`TOP_TALKERS`]).
    pub top: Vec<TopTalker>,
}

impl ClientDirectory {
    /// Room for `threads` tables of `table_size` entries (rounded up to
    /// whole sets), forgetting clients idle for longer than `ttl_ns`.
    pub fn new(threads: usize, table_size: usize, ttl_ns: u64) -> Arc<ClientDirectory> {
        let cap = ClientTable::capacity_for(table_size);
        let workers = (0..threads)
            .map(|_| {
                Mutex::new(Published {
                    live: Vec::with_capacity(cap),
                    ..Published::default()
                })
            })
            .collect();
        Arc::new(ClientDirectory {
            workers,
            table_size,
            ttl_ns,
        })
    }

    /// Entries each worker's table asks for.
    pub fn table_size(&self) -> usize {
        self.table_size
    }

    /// The TTL in nanoseconds.
    pub fn ttl_ns(&self) -> u64 {
        self.ttl_ns
    }

    /// Every worker's entries, at most.
    pub fn capacity(&self) -> usize {
        ClientTable::capacity_for(self.table_size) * self.workers.len()
    }

    /// Worker `worker` publishes its table's live clients. Without `wait`
    /// it skips this publish if a reader holds the lock.
    pub fn publish(&self, worker: usize, table: &ClientTable, now_ns: u64, wait: bool) {
        let Some(slot) = self.workers.get(worker) else {
            return;
        };
        let guard = match wait {
            true => Some(slot.lock()),
            false => slot.try_lock(),
        };
        if let Some(mut p) = guard {
            p.live.clear();
            p.live.extend(table.live(now_ns)); // within its capacity
            p.evicted_idle = table.evicted_idle;
            p.evicted_full = table.evicted_full;
        }
    }

    /// Fills `out` with every client seen within the TTL of `now_ns` whose
    /// last datagram was answered (as the worker that saw it last says),
    /// except `exclude`. `scratch` and `out` must have room for
    /// [`Self::capacity`] entries, so nothing allocates.
    pub fn answered_clients(
        &self,
        now_ns: u64,
        exclude: SocketAddr,
        scratch: &mut Vec<(SocketAddr, u64, bool)>,
        out: &mut Vec<SocketAddr>,
    ) {
        scratch.clear();
        for w in &self.workers {
            let p = w.lock();
            let live = p.live.iter().filter(|e| e.live(now_ns, self.ttl_ns));
            scratch.extend(live.map(|e| (e.addr, e.last_ns, e.last_answered)));
        }
        // Per address, the latest sighting first; keep only that one.
        scratch.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        scratch.dedup_by_key(|c| c.0);
        out.clear();
        let answered = scratch.iter().filter(|c| c.2 && c.0 != exclude);
        out.extend(answered.map(|c| c.0));
    }

    /// The clients seen within the TTL of `now_ns`, merged by address over
    /// the workers, with the top talkers.
    pub fn summary(&self, now_ns: u64) -> ClientsSummary {
        let mut merged: HashMap<SocketAddr, ClientStats> = HashMap::new();
        let mut sum = ClientsSummary {
            table_entries: ClientTable::capacity_for(self.table_size),
            ttl_s: self.ttl_ns as f64 / 1e9,
            ..ClientsSummary::default()
        };
        for w in &self.workers {
            let p = w.lock();
            sum.evicted_idle += p.evicted_idle;
            sum.evicted_full += p.evicted_full;
            for e in p.live.iter().filter(|e| e.live(now_ns, self.ttl_ns)) {
                merged
                    .entry(e.addr)
                    .and_modify(|m| {
                        (m.packets, m.bytes) = (m.packets + e.packets, m.bytes + e.bytes);
                        m.answered += e.answered;
                        m.first_ns = m.first_ns.min(e.first_ns);
                        if e.last_ns > m.last_ns {
                            (m.last_ns, m.last_answered) = (e.last_ns, e.last_answered);
                        }
                    })
                    .or_insert(*e);
            }
        }
        sum.active = merged.len();
        let mut all: Vec<ClientStats> = merged.into_values().collect();
        all.sort_unstable_by(|a, b| b.packets.cmp(&a.packets).then(a.addr.cmp(&b.addr)));
        let ago = |ns: u64| now_ns.saturating_sub(ns) as f64 / 1e9;
        sum.top = all
            .iter()
            .take(TOP_TALKERS)
            .map(|e| TopTalker {
                addr: e.addr.to_string(),
                packets: e.packets,
                bytes: e.bytes,
                answered: e.answered,
                first_seen_s_ago: ago(e.first_ns),
                last_seen_s_ago: ago(e.last_ns),
            })
            .collect();
        sum
    }
}

impl ClientsSummary {
    /// The report's text lines (after the `clients` line's label).
    pub fn lines(&self) -> Vec<String> {
        let mut v = vec![format!(
            "{} active within --client-ttl {} s (tables {} entries per worker; evicted {} idle, {} when full)",
            self.active, self.ttl_s, self.table_entries, self.evicted_idle, self.evicted_full
        )];
        for t in &self.top {
            v.push(format!(
                "{} packets {} bytes {} answered {} first seen {:.1} s ago, last {:.1} s ago",
                t.addr, t.packets, t.bytes, t.answered, t.first_seen_s_ago, t.last_seen_s_ago
            ));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn workers_merge_by_address() {
        let dir = ClientDirectory::new(2, 16, 1_000);
        let (mut a, mut b) = (ClientTable::new(16, 1_000), ClientTable::new(16, 1_000));
        // Client 1 on both workers (answered last on b), client 2 refused.
        let i = a.record(addr(1), 10, 100);
        a.answered(i, false);
        let i = b.record(addr(1), 30, 200);
        b.answered(i, true);
        let i = b.record(addr(2), 5, 150);
        b.answered(i, false);
        dir.publish(0, &a, 300, false);
        dir.publish(1, &b, 300, true);
        let s = dir.summary(1_100);
        assert_eq!(s.active, 2);
        assert_eq!(s.top[0].addr, "10.0.0.1:1");
        assert_eq!(
            (s.top[0].packets, s.top[0].bytes, s.top[0].answered),
            (2, 40, 1)
        );
        assert_eq!(
            (s.top[0].first_seen_s_ago, s.top[0].last_seen_s_ago),
            (1e-6, 9e-7)
        );
        let (mut scratch, mut out) = (Vec::with_capacity(32), Vec::with_capacity(32));
        dir.answered_clients(1_100, addr(9), &mut scratch, &mut out);
        assert_eq!(out, vec![addr(1)], "client 2 was refused");
        dir.answered_clients(1_100, addr(1), &mut scratch, &mut out);
        assert!(out.is_empty(), "the excluded admin is left out");
        dir.answered_clients(1_201, addr(9), &mut scratch, &mut out);
        assert!(out.is_empty(), "idle past the ttl");
        assert_eq!(dir.summary(1_201).active, 0);
    }
}
