//! Per-worker counters and the way they reach the metrics thread.
//!
//! A worker counts into its own [`Counters`] (plain integers) and publishes a
//! copy into its [`SharedCounters`] once per batch with `try_lock`: if the
//! metrics thread happens to hold the lock, the worker skips that publish
//! and never waits. Every received datagram lands in exactly one of
//! `tx_packets`, `drops[reason]` or `send_errors[kind]`, or is still held
//! in the worker's send backlog (`backlog`), so [`Counters::unaccounted`]
//! is zero whenever a round is finished.

use parking_lot::Mutex;

use crate::clients::FanOutCounters;
use crate::io::SendError;
use crate::pool::PoolStats;
use crate::process::DropReason;

/// Send error kinds (echoes given up on), in report order.
pub const SEND_ERROR_NAMES: [&str; 3] = ["unreachable", "denied", "other"];

/// Send stall kinds (the socket refused some of a send attempt; the
/// datagrams stay in the backlog), in report order.
pub const SEND_STALL_NAMES: [&str; 3] = ["would_block", "no_bufs", "partial"];

/// Which stall a partial `sendmmsg` count is.
pub const STALL_PARTIAL: usize = 2;

fn send_error_index(e: SendError) -> usize {
    match e {
        SendError::Unreachable => 0,
        SendError::Denied => 1,
        SendError::Other | SendError::WouldBlock | SendError::NoBufs => 2,
    }
}

/// Receive errors by errno, in a small fixed table (no allocation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrnoTable {
    entries: [(i32, u64); 8],
    /// Errors whose errno did not fit in the table.
    pub overflow: u64,
}

impl ErrnoTable {
    /// Counts one error with this errno.
    pub fn count(&mut self, errno: i32) {
        self.add(errno, 1)
    }

    /// Counts `n` errors with this errno.
    pub fn add(&mut self, errno: i32, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(e) = self.entries.iter_mut().find(|e| e.1 > 0 && e.0 == errno) {
            e.1 += n;
        } else if let Some(e) = self.entries.iter_mut().find(|e| e.1 == 0) {
            *e = (errno, n);
        } else {
            self.overflow += n;
        }
    }

    /// Non-zero (errno, count) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        self.entries.iter().copied().filter(|e| e.1 > 0)
    }

    /// All errors counted.
    pub fn total(&self) -> u64 {
        self.iter().map(|e| e.1).sum::<u64>() + self.overflow
    }

    /// Adds another table into this one.
    pub fn merge(&mut self, other: &ErrnoTable) {
        for (errno, n) in other.iter() {
            self.add(errno, n);
        }
        self.overflow += other.overflow;
    }
}

/// One worker's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams handed to us by the kernel (including truncated ones).
    pub rx_packets: u64,
    /// Their bytes (full datagram length, even when truncated).
    pub rx_bytes: u64,
    /// Datagrams echoed.
    pub tx_packets: u64,
    /// Bytes echoed.
    pub tx_bytes: u64,
    /// Datagrams not echoed, by [`DropReason::index`].
    pub drops: [u64; DropReason::ALL.len()],
    /// Echoes the kernel refused for good, by [`SEND_ERROR_NAMES`] index.
    pub send_errors: [u64; 3],
    /// Send attempts the socket refused in part or whole (backpressure),
    /// by [`SEND_STALL_NAMES`] index. Not datagrams: they stay held.
    pub send_stalls: [u64; 3],
    /// Echoes held in the send backlog right now.
    pub backlog: usize,
    /// Most echoes held in the send backlog at once.
    pub backlog_high_water: usize,
    /// Waits that returned with the socket readable (epoll mode, or while a
    /// backlog is held).
    pub wakeups: u64,
    /// Of those, the ones where the receive then found nothing (another
    /// worker took the datagram): wasted wake-ups.
    pub spurious_wakeups: u64,
    /// Buffers that held a GRO train (several datagrams coalesced by the
    /// kernel), and the datagrams they held (each also in `rx_packets`).
    pub gro_trains: u64,
    /// See `gro_trains`.
    pub gro_datagrams: u64,
    /// Times the worker thread went to sleep (voluntary context switches,
    /// `getrusage(RUSAGE_THREAD)`): every wake-up, useful or not, ends in
    /// one. Read every 100 ms and at exit.
    pub sleeps: u64,
    /// Failed receive calls (not datagrams), by errno. `EINTR` is retried
    /// and a receive timeout is idleness; neither is counted.
    pub recv_errors: ErrnoTable,
    /// ICMP (and local) errors the kernel queued for the socket, by errno,
    /// read from its error queue (`IP_RECVERR`): e.g. `ECONNREFUSED` when
    /// an echo went to a port nobody listens on any more.
    pub icmp_errors: ErrnoTable,
    /// Latency samples lost because the metrics channel was full.
    pub samples_dropped: u64,
    /// The socket's kernel drop counter (`SO_RXQ_OVFL`), when reported.
    pub kernel_drops: Option<u32>,
    /// The worker's pool.
    pub pool: PoolStats,
    /// Fan-out sends (broadcasts): not received datagrams, so outside
    /// [`Counters::unaccounted`], with books of their own.
    pub broadcast: FanOutCounters,
}

impl Counters {
    /// Counts a dropped datagram.
    #[inline]
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }

    /// Counts `n` datagrams dropped for one reason (a GRO train's segments).
    #[inline]
    pub fn drop_n(&mut self, reason: DropReason, n: u64) {
        self.drops[reason.index()] += n;
    }

    /// Counts an echo given up on (a backpressure kind counts as `other`:
    /// the backlog never gives up on those).
    #[inline]
    pub fn send_error(&mut self, e: SendError) {
        self.send_error_n(e, 1);
    }

    /// Counts `n` echoes given up on at once (a GSO train's segments).
    #[inline]
    pub fn send_error_n(&mut self, e: SendError, n: u64) {
        self.send_errors[send_error_index(e)] += n;
    }

    /// Counts a send attempt the socket refused in part (`STALL_PARTIAL`)
    /// or whole (`EAGAIN`, `ENOBUFS`).
    #[inline]
    pub fn send_stall(&mut self, e: Option<SendError>) {
        let i = match e {
            Some(SendError::NoBufs) => 1,
            Some(_) => 0,
            None => STALL_PARTIAL,
        };
        self.send_stalls[i] += 1;
    }

    /// All drops.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// All failed echoes.
    pub fn send_failed(&self) -> u64 {
        self.send_errors.iter().sum()
    }

    /// All send stalls.
    pub fn stalled(&self) -> u64 {
        self.send_stalls.iter().sum()
    }

    /// received - (echoed + dropped + send errors + held in the backlog):
    /// zero when the books balance.
    pub fn unaccounted(&self) -> i64 {
        self.rx_packets as i64
            - (self.tx_packets + self.dropped() + self.send_failed() + self.backlog as u64) as i64
    }

    /// Adds another worker's counters (pool figures are summed too).
    pub fn merge(&mut self, o: &Counters) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        for (a, b) in self.drops.iter_mut().zip(o.drops) {
            *a += b;
        }
        for (a, b) in self.send_errors.iter_mut().zip(o.send_errors) {
            *a += b;
        }
        for (a, b) in self.send_stalls.iter_mut().zip(o.send_stalls) {
            *a += b;
        }
        self.backlog += o.backlog;
        self.backlog_high_water += o.backlog_high_water;
        self.wakeups += o.wakeups;
        self.spurious_wakeups += o.spurious_wakeups;
        self.gro_trains += o.gro_trains;
        self.gro_datagrams += o.gro_datagrams;
        self.sleeps += o.sleeps;
        self.recv_errors.merge(&o.recv_errors);
        self.icmp_errors.merge(&o.icmp_errors);
        self.samples_dropped += o.samples_dropped;
        self.pool.capacity += o.pool.capacity;
        self.pool.in_use += o.pool.in_use;
        self.pool.high_water += o.pool.high_water;
        self.pool.exhaustion_events += o.pool.exhaustion_events;
        self.pool.total_allocations += o.pool.total_allocations;
        self.pool.bytes += o.pool.bytes;
        self.broadcast.merge(&o.broadcast);
    }
}

/// Where a worker publishes its counters for the metrics thread.
#[derive(Debug, Default)]
pub struct SharedCounters {
    inner: Mutex<Counters>,
}

impl SharedCounters {
    /// Publishes unless the reader holds the lock right now (never waits).
    #[inline]
    pub fn try_publish(&self, c: &Counters) -> bool {
        match self.inner.try_lock() {
            Some(mut g) => {
                *g = *c;
                true
            }
            None => false,
        }
    }

    /// Publishes, waiting for the lock (used once, at worker exit).
    pub fn publish(&self, c: &Counters) {
        *self.inner.lock() = *c;
    }

    /// The last published copy.
    pub fn snapshot(&self) -> Counters {
        *self.inner.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_table_counts_and_overflows() {
        let mut t = ErrnoTable::default();
        for errno in 1..=10 {
            t.count(errno);
        }
        t.count(3);
        assert_eq!(t.iter().find(|e| e.0 == 3), Some((3, 2)));
        assert_eq!(t.overflow, 2);
        assert_eq!(t.total(), 11);
        let mut u = ErrnoTable::default();
        u.count(3);
        u.merge(&t);
        assert_eq!(u.iter().find(|e| e.0 == 3), Some((3, 3)));
        assert_eq!(u.total(), 12);
    }

    #[test]
    fn reconciliation() {
        let mut c = Counters {
            rx_packets: 5,
            tx_packets: 2,
            ..Default::default()
        };
        c.drop(DropReason::Truncated);
        c.send_error(SendError::Denied);
        c.send_stall(Some(SendError::NoBufs));
        assert_eq!(c.unaccounted(), 1);
        c.backlog = 1;
        assert_eq!(c.unaccounted(), 0);
        c.backlog = 0;
        c.drop(DropReason::PoolExhausted);
        assert_eq!(c.unaccounted(), 0);
        let mut total = Counters::default();
        total.merge(&c);
        total.merge(&c);
        assert_eq!(total.rx_packets, 10);
        assert_eq!(total.unaccounted(), 0);
    }
}
