//! `--rate-limit PPS` per source prefix, in a table of fixed size.
//!
//! Modelled on NSD's response rate limiting (`rrl.c`): a fixed array of
//! buckets indexed by a keyed hash of the source prefix (`--rate-prefix-v4`,
//! `--rate-prefix-v6`), allocated once at start (`--rate-table-size`). A
//! prefix whose hash lands on a bucket held by another prefix simply takes
//! it over, so memory never grows, whatever the number of sources; the
//! price is that two prefixes colliding in one bucket may each get a fresh
//! allowance when they alternate (a bound on leniency, never a block of an
//! innocent prefix).
//!
//! The rate algorithm is GCRA (the generic cell rate algorithm, as in the
//! `governor` crate, whose keyed store grows without bound and so is not
//! used): each bucket stores the prefix's theoretical arrival time (TAT); a
//! datagram at time `t` passes when `max(TAT, t) - t <= tau`, with
//! `tau = (burst - 1) / rate`, and then `TAT = max(TAT, t) + 1 / rate`. So a
//! prefix may send `--rate-burst` datagrams at once and `--rate-limit` per
//! second after that.
//!
//! One table is shared by all workers: each bucket is one `AtomicU64`
//! holding a 16-bit tag of the prefix's hash and its TAT in microseconds
//! since the table was made (48 bits: 8.9 years), updated with one
//! compare-and-swap, no lock, so the limit is exact however many workers
//! serve a prefix. Rates are therefore counted in whole microseconds
//! (`--rate-limit` at most 1,000,000; 3000/s runs at 1/333 us = 3003/s). With `--reuseport`
//! the sockets are also steered by source prefix (a reuseport BPF program,
//! `io::reuseport`), so one prefix is served by one worker and its bucket
//! is never contended; with a shared socket, workers contend only on the
//! bucket of a prefix that several of them serve at once.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::packet::PacketBuffer;
use crate::process::{DropReason, Stage, Verdict};

use super::canonical;

/// Rate limit settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateConfig {
    /// Datagrams per second per prefix, after the burst.
    pub pps: u64,
    /// Datagrams a prefix may send at once.
    pub burst: u64,
    /// IPv4 prefix length that makes one source (BIND's default: 24).
    pub prefix_v4: u8,
    /// IPv6 prefix length that makes one source (BIND's default: 56).
    pub prefix_v6: u8,
    /// Buckets in the table (rounded up to a power of two).
    pub table_size: usize,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            pps: 1000,
            burst: 1000,
            prefix_v4: 24,
            prefix_v6: 56,
            table_size: 1 << 20,
        }
    }
}

/// A source prefix: the masked address and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// The address with the host bits cleared.
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Receive timestamps of one prefix decided out of order by different
/// workers are tolerated up to this far apart, in microseconds.
const REORDER_SLACK_US: u64 = 100;

/// Bits of a bucket that hold the TAT (the rest hold the tag).
const TAT_BITS: u32 = 48;
const TAT_MASK: u64 = (1 << TAT_BITS) - 1;

/// The fixed table of per-prefix GCRA states.
#[derive(Debug)]
pub struct RateTable {
    buckets: Box<[AtomicU64]>,
    mask: usize,
    hasher: RandomState,
    epoch_ns: u64,
    interval_us: u64,
    tolerance_us: u64,
    cfg: RateConfig,
}

impl RateTable {
    /// Allocates every bucket now (8 bytes each); time counts from an hour
    /// before now (receive timestamps are `CLOCK_REALTIME`).
    pub fn new(cfg: RateConfig) -> RateTable {
        let epoch = crate::io::now_realtime_ns().saturating_sub(3_600_000_000_000);
        RateTable::with_epoch(cfg, epoch)
    }

    /// Like [`new`](Self::new), with time counted from `epoch_ns`.
    pub fn with_epoch(cfg: RateConfig, epoch_ns: u64) -> RateTable {
        let n = cfg.table_size.clamp(1, 1 << 30).next_power_of_two();
        let interval_us = (1_000_000 / cfg.pps.clamp(1, 1_000_000)).max(1);
        let buckets: Box<[AtomicU64]> = (0..n).map(|_| AtomicU64::new(0)).collect();
        // Touch every page now (a zeroed allocation is committed lazily):
        // the table's memory is resident from the start and never grows,
        // whatever sources later hash where.
        for b in buckets.iter() {
            b.store(0, Ordering::Relaxed);
        }
        RateTable {
            buckets,
            mask: n - 1,
            // SipHash with keys random per process: sources cannot aim at
            // one bucket without knowing them.
            hasher: RandomState::new(),
            epoch_ns,
            interval_us,
            // Workers sharing a socket may decide two datagrams of one
            // prefix out of their arrival order; up to REORDER_SLACK_US of
            // that is tolerated (less than one interval, so never an extra
            // datagram in a burst).
            tolerance_us: interval_us.saturating_mul(cfg.burst.max(1) - 1)
                + REORDER_SLACK_US.min(interval_us - 1),
            cfg,
        }
    }

    /// Buckets in the table.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True when the table has no buckets (never: at least one).
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Bytes the table holds.
    pub fn bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<AtomicU64>()
    }

    /// The settings.
    pub fn config(&self) -> RateConfig {
        self.cfg
    }

    /// The prefix `ip` counts under.
    pub fn prefix(&self, ip: IpAddr) -> Prefix {
        match ip {
            IpAddr::V4(a) => {
                let len = self.cfg.prefix_v4.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                Prefix {
                    addr: IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask)),
                    len,
                }
            }
            IpAddr::V6(a) => {
                let len = self.cfg.prefix_v6.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                Prefix {
                    addr: IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask)),
                    len,
                }
            }
        }
    }

    /// Decides one datagram from `ip` arriving at `now_ns`: true = within
    /// the limit.
    pub fn allow(&self, ip: IpAddr, now_ns: u64) -> bool {
        let h = self.hasher.hash_one(self.prefix(ip));
        // Tag 0 marks an empty bucket, so a tag is never 0.
        let tag = (h >> TAT_BITS).max(1);
        let b = &self.buckets[h as usize & self.mask];
        let now = (now_ns.saturating_sub(self.epoch_ns) / 1000).min(TAT_MASK);
        let mut cur = b.load(Ordering::Relaxed);
        loop {
            let tat = if cur >> TAT_BITS != tag {
                // Empty, or held by another prefix: take it over.
                now + self.interval_us
            } else {
                let start = (cur & TAT_MASK).max(now);
                if start - now > self.tolerance_us {
                    return false;
                }
                start + self.interval_us
            };
            let new = (tag << TAT_BITS) | tat.min(TAT_MASK);
            match b.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(seen) => cur = seen,
            }
        }
    }
}

/// Entries kept per worker of the most-limited prefixes.
pub const TOP_LIMITED: usize = 8;

/// Per worker, the prefixes limited most (space-saving: a new prefix takes
/// the smallest entry's place with that count + 1, so counts are upper
/// bounds and any prefix limited more than 1/8 of the time is listed).
#[derive(Debug, Default)]
pub struct TopLimited {
    workers: Vec<Mutex<TopEntries>>,
}

/// One worker's entries: prefix (if any) and count.
type TopEntries = [(Option<Prefix>, u64); TOP_LIMITED];

impl TopLimited {
    /// Slots for `workers` workers.
    pub fn new(workers: usize) -> TopLimited {
        TopLimited {
            workers: (0..workers)
                .map(|_| Mutex::new([(None, 0); TOP_LIMITED]))
                .collect(),
        }
    }

    /// Counts a limited datagram of `p` for `worker` (skipped if the report
    /// is reading that slot right now: never waits).
    fn count(&self, worker: usize, p: Prefix) {
        let Some(slot) = self.workers.get(worker) else {
            return;
        };
        let Some(mut top) = slot.try_lock() else {
            return;
        };
        if let Some(e) = top.iter_mut().find(|e| e.0 == Some(p)) {
            e.1 += 1;
            return;
        }
        let min = top.iter_mut().min_by_key(|e| e.1).expect("non-empty");
        *min = (Some(p), min.1 + 1);
    }

    /// The most-limited prefixes over all workers, most first.
    pub fn top(&self) -> Vec<(String, u64)> {
        let mut all: std::collections::HashMap<Prefix, u64> = Default::default();
        for w in &self.workers {
            for (p, n) in w.lock().iter() {
                if let Some(p) = p {
                    *all.entry(*p).or_default() += n;
                }
            }
        }
        let mut v: Vec<(String, u64)> = all.into_iter().map(|(p, n)| (p.to_string(), n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(TOP_LIMITED);
        v
    }
}

/// The stage: one per worker, all sharing one table.
pub struct RateLimit {
    table: Arc<RateTable>,
    top: Arc<TopLimited>,
    worker: usize,
}

impl RateLimit {
    /// Worker `worker`'s stage over the shared `table`.
    pub fn new(table: Arc<RateTable>, top: Arc<TopLimited>, worker: usize) -> RateLimit {
        RateLimit { table, top, worker }
    }
}

impl Stage for RateLimit {
    #[inline]
    fn process(&mut self, pkt: &mut PacketBuffer<'_>) -> Verdict {
        let ip = canonical(&pkt.meta.peer);
        if self.table.allow(ip, pkt.meta.rx_ns) {
            Verdict::Echo
        } else {
            self.top.count(self.worker, self.table.prefix(ip));
            Verdict::Drop(DropReason::RateLimited)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pps: u64, burst: u64, size: usize) -> RateTable {
        RateTable::with_epoch(
            RateConfig {
                pps,
                burst,
                table_size: size,
                ..RateConfig::default()
            },
            0,
        )
    }

    #[test]
    fn burst_then_rate() {
        let t = table(1000, 10, 64);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let t0 = 1_000_000_000_000u64;
        let passed = (0..100).filter(|_| t.allow(ip, t0)).count();
        assert_eq!(passed, 10, "the burst, all at one instant");
        // One second later: 1000 more over that second, at 1 per ms.
        let mut n = 0;
        for i in 0..2000u64 {
            if t.allow(ip, t0 + 1_000_000_000 + i * 500_000) {
                n += 1;
            }
        }
        // 1 s at 2000/s offered: about 1000 pass (+ the refilled burst).
        assert!((1000..=1011).contains(&n), "{n}");
    }

    #[test]
    fn prefixes_share_a_limit_and_others_do_not() {
        let t = table(10, 5, 1024);
        let now = 5_000_000_000u64;
        let a = (0..20)
            .filter(|i| t.allow(format!("10.1.2.{i}").parse().unwrap(), now))
            .count();
        assert_eq!(a, 5, "one /24, one limit");
        assert!(t.allow("10.1.3.1".parse().unwrap(), now), "another /24");
        assert_eq!(
            t.prefix("10.1.2.200".parse().unwrap()).to_string(),
            "10.1.2.0/24"
        );
        assert_eq!(
            t.prefix("2001:db8:1:2ff::1".parse().unwrap()).to_string(),
            "2001:db8:1:200::/56"
        );
    }

    #[test]
    fn a_burst_decided_out_of_arrival_order_is_still_whole() {
        let t = table(2, 2, 64);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        // The second datagram (arrived 3 us later) is decided first.
        assert!(t.allow(ip, 1_000_003_000));
        assert!(t.allow(ip, 1_000_000_000), "out of order by 3 us");
        assert!(!t.allow(ip, 1_000_004_000), "but no third");
    }

    #[test]
    fn memory_is_fixed_whatever_the_sources() {
        let t = table(1, 1, 1000);
        assert_eq!(t.len(), 1024);
        let bytes = t.bytes();
        for i in 0..100_000u32 {
            t.allow(IpAddr::V4(Ipv4Addr::from(i << 8)), 1_000);
        }
        assert_eq!(t.bytes(), bytes);
    }

    #[test]
    fn shared_by_threads_one_limit() {
        let t = Arc::new(table(1, 1000, 64));
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || (0..1000).filter(|_| t.allow(ip, 7_000)).count())
            })
            .collect();
        let total: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 1000, "the burst once, not once per thread");
    }

    #[test]
    fn top_limited_lists_the_heaviest() {
        let top = TopLimited::new(2);
        let t = table(1, 1, 64);
        for i in 0..50 {
            top.count(0, t.prefix("10.0.0.1".parse().unwrap()));
            top.count(1, t.prefix("10.0.0.2".parse().unwrap()));
            if i % 10 == 0 {
                top.count(0, t.prefix(format!("10.0.{i}.1").parse().unwrap()));
            }
        }
        let v = top.top();
        assert_eq!(v[0], ("10.0.0.0/24".to_string(), 101), "{v:?}");
        assert_eq!(v.len(), 5);
    }
}
