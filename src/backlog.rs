//! The worker's send backlog: echoes the socket could not take yet.
//!
//! Every echo verdict is appended here, in arrival order, and
//! [`SendBacklog::flush`] sends from the front with one `sendmmsg` per
//! attempt. When the socket refuses (`EAGAIN` with a full send buffer,
//! `ENOBUFS` from a full device queue, or a short count), the unsent
//! datagrams simply stay in their pool buffers: no copy, no allocation
//! (the queue's capacity is the pool's). The worker then waits for the
//! socket to become writable (`EAGAIN`; [`SendBacklog::mark_writable`]) or
//! for 1 ms (`ENOBUFS`, where the socket stays writable) before the next
//! attempt: new datagrams arriving meanwhile cost no failed send call. Meanwhile new datagrams
//! keep arriving into the pool, so pool use, its high-water mark and
//! exhaustion measure real send pressure. An echo held longer than the
//! send deadline is dropped, oldest first, as `send_deadline`.
//!
//! A buffer may hold a GRO train (`PacketMeta::segment`): it goes out as
//! one `UDP_SEGMENT` send, and every count here (echoes, latency samples,
//! drops, send errors) counts each of its segments.
//!
//! A hard error (unreachable, denied, ...) gives up on the datagram at the
//! front only, after one retry: with `IP_RECVERR` on, a send can fail with
//! an ICMP error that an earlier datagram to another peer caused.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::counters::Counters;
use crate::io::{self, SendBatch, SendError};
use crate::packet::PacketPool;
use crate::pool::Slot;
use crate::process::DropReason;
use crate::samples::SampleSink;

/// Default `--send-deadline`.
pub const DEFAULT_SEND_DEADLINE: Duration = Duration::from_millis(200);
/// Wait after `ENOBUFS` before the next attempt.
const NOBUFS_RETRY_NS: u64 = 1_000_000;

/// Why the last attempt stopped short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// Nothing held, or the last attempt sent everything.
    Clear,
    /// The send buffer is full: wait until the socket is writable.
    WouldBlock,
    /// The device queue is full: retry at this `CLOCK_REALTIME` time.
    NoBufs(u64),
}

/// Echoes waiting to be sent, oldest first.
pub struct SendBacklog {
    queue: VecDeque<Slot>,
    batch: SendBatch,
    deadline_ns: u64,
    stall: Stall,
    high_water: usize,
    /// Of the held datagrams, the fan-out sends (`PacketMeta::fan_out`).
    fan_outs: usize,
}

impl SendBacklog {
    /// A backlog that can hold every buffer of a pool of `pool_capacity`,
    /// sending up to `batch` datagrams per call.
    pub fn new(pool_capacity: usize, batch: usize, deadline: Duration) -> SendBacklog {
        SendBacklog {
            queue: VecDeque::with_capacity(pool_capacity),
            batch: SendBatch::new(batch),
            deadline_ns: deadline.as_nanos().min(u64::MAX as u128) as u64,
            stall: Stall::Clear,
            high_water: 0,
            fan_outs: 0,
        }
    }

    /// Echoes held.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Most echoes held at once.
    pub fn high_water(&self) -> usize {
        self.high_water
    }

    /// Why the last attempt stopped short.
    pub fn stall(&self) -> Stall {
        self.stall
    }

    /// The send calls (fault injection, call count).
    pub fn batch_mut(&mut self) -> &mut SendBatch {
        &mut self.batch
    }

    /// The socket reported room to write: the next flush tries again.
    pub fn mark_writable(&mut self) {
        if self.stall == Stall::WouldBlock {
            self.stall = Stall::Clear;
        }
    }

    /// Appends an echo.
    #[inline]
    pub fn push(&mut self, slot: Slot) {
        self.queue.push_back(slot);
        self.high_water = self.high_water.max(self.queue.len());
    }

    /// Appends a fan-out send (its meta has `fan_out` set): sent and
    /// counted like an echo, but under `Counters::broadcast`.
    pub fn push_fan_out(&mut self, slot: Slot) {
        self.fan_outs += 1;
        self.push(slot);
    }

    /// Fan-out sends held (included in [`SendBacklog::len`]).
    pub fn fan_outs(&self) -> usize {
        self.fan_outs
    }

    /// Takes the front datagram off; a fan-out send loses its mark, so its
    /// buffer comes back to the pool as a plain one.
    fn pop_front(&mut self, pool: &mut PacketPool) -> Option<(Slot, bool)> {
        let s = self.queue.pop_front()?;
        let meta = pool.meta_mut(&s);
        let fan_out = std::mem::replace(&mut meta.fan_out, false);
        self.fan_outs -= usize::from(fan_out);
        Some((s, fan_out))
    }

    /// Drops the front datagram as `send_deadline`.
    fn expire_front(&mut self, pool: &mut PacketPool, counters: &mut Counters) {
        if let Some((s, fan_out)) = self.pop_front(pool) {
            match fan_out {
                true => counters.broadcast.send_deadline += 1,
                false => counters.drop_n(DropReason::SendDeadline, pool.meta(&s).datagrams()),
            }
            pool.free(s);
        }
    }

    /// When the oldest held echo passes its deadline (`CLOCK_REALTIME` ns).
    pub fn next_expiry(&self, pool: &PacketPool) -> Option<u64> {
        let front = self.queue.front()?;
        Some(pool.meta(front).rx_ns.saturating_add(self.deadline_ns))
    }

    /// Drops expired echoes, then sends from the front until everything
    /// went out or the socket refused (one system call per attempt).
    pub fn flush(
        &mut self,
        fd: RawFd,
        pool: &mut PacketPool,
        counters: &mut Counters,
        samples: &mut SampleSink,
    ) {
        let now = io::now_realtime_ns();
        while let Some(front) = self.queue.front() {
            if pool.meta(front).rx_ns.saturating_add(self.deadline_ns) >= now {
                break;
            }
            self.expire_front(pool, counters);
        }
        match self.stall {
            Stall::NoBufs(at) if now < at && !self.queue.is_empty() => return,
            // Not until the socket said it is writable: a new datagram
            // arriving is no reason to try again.
            Stall::WouldBlock if !self.queue.is_empty() => return,
            _ => {}
        }
        self.stall = Stall::Clear;
        let mut retried = false;
        while !self.queue.is_empty() {
            let front = self.queue.as_slices().0;
            let n = front.len().min(self.batch.capacity());
            match self.batch.send(fd, pool, &front[..n]) {
                Ok(m) if m > 0 => {
                    retried = false;
                    let t = io::now_realtime_ns();
                    for _ in 0..m {
                        let (s, fan_out) = self.pop_front(pool).expect("sent from the queue");
                        let meta = pool.meta(&s);
                        if fan_out {
                            counters.broadcast.sent += 1;
                            pool.free(s);
                            continue;
                        }
                        // A GSO train: every segment is an echo.
                        for _ in 0..meta.datagrams() {
                            samples.record(t.saturating_sub(meta.rx_ns));
                        }
                        counters.tx_packets += meta.datagrams();
                        counters.tx_bytes += meta.len as u64;
                        pool.free(s);
                    }
                    if m < n {
                        counters.send_stall(None);
                    }
                }
                Ok(_) => self.give_up_front(pool, counters, SendError::Other),
                Err(errno) => {
                    let e = SendError::from_errno(errno);
                    if e == SendError::WouldBlock {
                        counters.send_stall(Some(e));
                        self.stall = Stall::WouldBlock;
                        return;
                    }
                    if e == SendError::NoBufs {
                        counters.send_stall(Some(e));
                        self.stall = Stall::NoBufs(now.saturating_add(NOBUFS_RETRY_NS));
                        return;
                    }
                    if !retried {
                        // Possibly a pending ICMP error of another peer's
                        // (IP_RECVERR): read it off and try once more.
                        retried = true;
                        io::drain_error_queue(fd, 64, |e| counters.icmp_errors.count(e));
                        continue;
                    }
                    retried = false;
                    self.give_up_front(pool, counters, e);
                }
            }
        }
    }

    fn give_up_front(&mut self, pool: &mut PacketPool, counters: &mut Counters, e: SendError) {
        if let Some((s, fan_out)) = self.pop_front(pool) {
            match fan_out {
                true => counters.broadcast.send_errors += 1,
                false => counters.send_error_n(e, pool.meta(&s).datagrams()),
            }
            pool.free(s);
        }
    }

    /// At shutdown: one last attempt, then every echo still held is
    /// dropped as `send_deadline`, so the books balance and every buffer
    /// is back in the pool.
    pub fn close(
        &mut self,
        fd: RawFd,
        pool: &mut PacketPool,
        counters: &mut Counters,
        samples: &mut SampleSink,
    ) {
        self.stall = Stall::Clear;
        self.flush(fd, pool, counters, samples);
        while !self.queue.is_empty() {
            self.expire_front(pool, counters);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::SendFault;
    use crate::samples;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn held(pool: &mut PacketPool, peer: std::net::SocketAddr, n: u8, rx_ns: u64) -> Slot {
        let s = pool.alloc().unwrap();
        let b = pool.buffer(&s);
        b.data[0] = n;
        b.meta.len = 1;
        b.meta.peer = peer;
        b.meta.rx_ns = rx_ns;
        s
    }

    #[test]
    fn partial_and_refused_sends_keep_order_and_reconcile() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = client.local_addr().unwrap();
        let (mut sinks, _source) = samples::channels(1);
        let mut pool = PacketPool::new(16, 8);
        let mut b = SendBacklog::new(16, 8, Duration::from_secs(60));
        b.batch_mut().set_fault(Some(SendFault {
            max_per_call: 3,
            fail_every: 3,
            errno: libc::EAGAIN,
        }));
        let mut c = Counters::default();
        let now = io::now_realtime_ns();
        for i in 0..10 {
            b.push(held(&mut pool, peer, i, now));
        }
        c.rx_packets = 10;
        let fd = server.as_raw_fd();
        b.flush(fd, &mut pool, &mut c, &mut sinks[0]);
        // Calls: 3 sent (partial), 3 sent (partial), EAGAIN.
        assert_eq!(
            (c.tx_packets, b.len(), b.stall()),
            (6, 4, Stall::WouldBlock)
        );
        assert_eq!(c.send_stalls, [1, 0, 2]);
        assert_eq!(c.unaccounted(), b.len() as i64);
        b.flush(fd, &mut pool, &mut c, &mut sinks[0]);
        assert_eq!(b.batch_mut().calls(), 3, "no new attempt until writable");
        b.mark_writable();
        // Calls: 3 sent (partial), the last 1 sent.
        b.flush(fd, &mut pool, &mut c, &mut sinks[0]);
        assert_eq!((c.tx_packets, b.len(), b.stall()), (10, 0, Stall::Clear));
        assert_eq!(c.send_stalls, [1, 0, 3]);
        assert_eq!(b.batch_mut().calls(), 5, "one call per attempt");
        let mut buf = [0u8; 8];
        for i in 0..10 {
            client.recv(&mut buf).unwrap();
            assert_eq!(buf[0], i, "echoes leave in arrival order");
        }
        assert_eq!(c.unaccounted(), 0);
        assert_eq!(pool.stats().in_use, 0);
    }

    #[test]
    fn expired_echoes_drop_oldest_first_and_close_drops_the_rest() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (mut sinks, _source) = samples::channels(1);
        let mut pool = PacketPool::new(8, 8);
        let mut b = SendBacklog::new(8, 8, Duration::from_millis(50));
        b.batch_mut().set_fault(Some(SendFault {
            max_per_call: 8,
            fail_every: 1,
            errno: libc::ENOBUFS,
        }));
        let mut c = Counters::default();
        let now = io::now_realtime_ns();
        b.push(held(&mut pool, peer, 0, now - 1_000_000_000)); // a second old
        b.push(held(&mut pool, peer, 1, now));
        b.push(held(&mut pool, peer, 2, now));
        c.rx_packets = 3;
        b.flush(server.as_raw_fd(), &mut pool, &mut c, &mut sinks[0]);
        assert_eq!(c.drops[DropReason::SendDeadline.index()], 1);
        assert!(matches!(b.stall(), Stall::NoBufs(_)));
        assert_eq!(c.send_stalls[1], 1);
        assert_eq!(b.len(), 2);
        b.close(server.as_raw_fd(), &mut pool, &mut c, &mut sinks[0]);
        assert_eq!(c.drops[DropReason::SendDeadline.index()], 3);
        assert_eq!((c.unaccounted(), pool.stats().in_use), (0, 0));
        assert_eq!(b.high_water(), 3);
    }

    #[test]
    fn a_hard_error_gives_up_on_the_front_only_after_a_retry() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (mut sinks, _source) = samples::channels(1);
        let mut pool = PacketPool::new(4, 8);
        let mut b = SendBacklog::new(4, 4, Duration::from_secs(60));
        // Every call fails with EPERM: the retry fails too, so the front
        // datagram is given up and the next one tried the same way.
        b.batch_mut().set_fault(Some(SendFault {
            max_per_call: 4,
            fail_every: 1,
            errno: libc::EPERM,
        }));
        let mut c = Counters::default();
        let now = io::now_realtime_ns();
        b.push(held(&mut pool, client.local_addr().unwrap(), 0, now));
        b.push(held(&mut pool, client.local_addr().unwrap(), 1, now));
        c.rx_packets = 2;
        b.flush(server.as_raw_fd(), &mut pool, &mut c, &mut sinks[0]);
        assert_eq!(c.send_errors, [0, 2, 0]);
        assert_eq!(b.batch_mut().calls(), 4);
        assert_eq!((c.unaccounted(), pool.stats().in_use), (0, 0));
    }
}
