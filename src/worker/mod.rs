//! One worker thread's loop: the single path of a datagram.
//!
//! ```text
//! RecvBatch (buffers posted from the pool) -> recvmmsg
//!   -> dispatch: pipeline.process() per datagram (per segment of a GRO
//!      train): Drop(reason) -> pool.free
//!              Echo -> SendBacklog (a train's echoed segments as one)
//!   -> SendBacklog::flush: sendmmsg from the front, latency sample,
//!      pool.free; what the socket refuses stays held until it is writable
//! ```
//!
//! The worker owns its socket handle, pool, receive ring, send backlog and
//! pipeline; it shares only its published counters and the sample channel.

use std::io::{Error, Result};
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::backlog::{SendBacklog, Stall, DEFAULT_SEND_DEADLINE};
use crate::counters::{Counters, SharedCounters};
use crate::io::uring::{self, Uring};

mod fanout;
mod train;
mod uring_loop;
pub use crate::io::IoMode;
use crate::io::{self, Held, RecvBatch, RecvWait, SendFault, Waiter, Wake};
use crate::packet::PacketPool;
use crate::pool::Slot;
use crate::process::{DropReason, Pipeline, Verdict};
use crate::samples::SampleSink;

/// How long an idle worker waits before checking for shutdown.
pub const IDLE_WAKE: Duration = Duration::from_millis(100);
/// How often samples are flushed to the metrics thread at the latest.
const FLUSH_NS: u64 = 100_000_000;

/// Everything a worker owns.
pub struct Worker {
    id: usize,
    /// Owns `fd`.
    _socket: UdpSocket,
    fd: RawFd,
    waiter: Waiter,
    /// `--io uring`: the backend that receives instead of `waiter` + `rx`.
    /// Declared before `pool`, so it is dropped (stopping the kernel's
    /// writes into the buffers) before the pool is freed.
    uring: Option<Uring>,
    pool: PacketPool,
    rx: RecvBatch,
    backlog: SendBacklog,
    work: Vec<Slot>,
    scratch: Box<[u8]>,
    pipeline: Pipeline,
    counters: Counters,
    shared: Arc<SharedCounters>,
    samples: SampleSink,
    stop: Arc<AtomicBool>,
    last_flush_ns: u64,
    kernel_clock: bool,
    woken: bool,
    /// The largest datagram echoed (`--packet-size`); with GRO the buffers
    /// are larger, to hold whole trains.
    max_datagram: usize,
}

impl Worker {
    /// A worker receiving on `socket` with `pool`, up to `batch` datagrams a
    /// call. Sets the socket's timestamps, drop counter, extended error
    /// reporting and blocking mode. With [`IoMode::Uring`] the pool needs
    /// [`uring::HEADROOM`] (see [`Worker::pool_for`]); a pool without it is
    /// rebuilt here with the same capacity and packet size.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: usize,
        socket: UdpSocket,
        io: IoMode,
        pool: PacketPool,
        batch: usize,
        pipeline: Pipeline,
        samples: SampleSink,
        shared: Arc<SharedCounters>,
        stop: Arc<AtomicBool>,
    ) -> Result<Worker> {
        let mut pool = pool;
        if io == IoMode::Uring && pool.headroom() < uring::HEADROOM {
            pool = Worker::pool_for(io, pool.stats().capacity, pool.packet_size());
        }
        let batch = batch.clamp(1, u16::MAX as usize);
        let fd = socket.as_raw_fd();
        let kernel_clock = io::enable_rx_timestamps(fd).is_ok();
        let _ = io::enable_rxq_ovfl(fd);
        let local = socket.local_addr()?;
        let ipv6 = local.is_ipv6();
        let _ = io::enable_recverr(fd, ipv6);
        // Each datagram's destination: replies leave from it, and group
        // destinations can be refused (guard::dest). Only a wildcard bind
        // needs it: a socket bound to one unicast address receives only
        // datagrams sent to that address, and its replies leave from it.
        if local.ip().is_unspecified() {
            let _ = io::enable_pktinfo(fd, ipv6);
        }
        // The TTL / hop limit only for a pipeline that reads it (STAMP).
        if pipeline.wants_ttl() {
            let _ = io::enable_recv_ttl(fd, ipv6);
        }
        let waiter = Waiter::new(io, &socket, IDLE_WAKE)?;
        let uring = match io {
            IoMode::Uring => Some(Uring::new(fd, &mut pool)?),
            _ => None,
        };
        let scratch = vec![0u8; pool.packet_size().max(1)].into_boxed_slice();
        let capacity = pool.stats().capacity;
        Ok(Worker {
            id,
            _socket: socket,
            fd,
            waiter,
            uring,
            rx: RecvBatch::new(batch),
            backlog: SendBacklog::new(capacity, batch, DEFAULT_SEND_DEADLINE),
            work: Vec::with_capacity(batch),
            pool,
            scratch,
            pipeline,
            counters: Counters::default(),
            shared,
            samples,
            stop,
            last_flush_ns: io::now_realtime_ns(),
            kernel_clock,
            woken: false,
            max_datagram: usize::MAX,
        })
    }

    /// Turns on `UDP_GRO`: the kernel may hand over trains of datagrams in
    /// one buffer, echoed as one `UDP_SEGMENT` send; each datagram of a
    /// train still counts, and is filtered, on its own. Datagrams larger
    /// than `max_datagram` (the buffers are larger, for trains) are dropped
    /// as truncated. `Err`: the kernel refused `UDP_GRO`.
    pub fn enable_gro(&mut self, max_datagram: usize) -> Result<()> {
        io::enable_udp_gro(self.fd)?;
        self.max_datagram = max_datagram;
        Ok(())
    }

    /// A pool of `capacity` buffers of `packet_size` payload bytes laid out
    /// for `io` (with io_uring's headroom before each payload for
    /// [`IoMode::Uring`]).
    pub fn pool_for(io: IoMode, capacity: usize, packet_size: usize) -> PacketPool {
        let headroom = if io == IoMode::Uring {
            uring::HEADROOM
        } else {
            0
        };
        PacketPool::with_headroom(capacity, packet_size, headroom)
    }

    /// Replaces the send deadline (default [`DEFAULT_SEND_DEADLINE`]).
    pub fn set_send_deadline(&mut self, deadline: Duration) {
        let cap = self.pool.stats().capacity;
        let batch = self.rx.capacity();
        self.backlog = SendBacklog::new(cap, batch, deadline);
    }

    /// Fault injection for tests: make send calls short or failing.
    pub fn set_send_fault(&mut self, fault: Option<SendFault>) {
        self.backlog.batch_mut().set_fault(fault);
    }

    /// Worker index.
    pub fn id(&self) -> usize {
        self.id
    }

    /// True when latency comes from kernel receive timestamps.
    pub fn kernel_clock(&self) -> bool {
        self.kernel_clock
    }

    /// The worker's pool (tests hold buffers to provoke exhaustion).
    pub fn pool_mut(&mut self) -> &mut PacketPool {
        &mut self.pool
    }

    /// The worker's counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Runs until the stop flag is set or the socket fails for good, then
    /// sends or drops what the backlog holds, returns every buffer,
    /// publishes the final counters and returns them.
    pub fn run(mut self) -> Result<Counters> {
        let mut result = Ok(());
        while !self.stop.load(Ordering::Relaxed) {
            if let Err(e) = self.poll_once() {
                result = Err(e);
                break;
            }
        }
        self.finish();
        result.map(|_| self.counters)
    }

    fn finish(&mut self) {
        self.finish_uring();
        self.backlog.close(
            self.fd,
            &mut self.pool,
            &mut self.counters,
            &mut self.samples,
        );
        self.rx.release(&mut self.pool);
        if let Some(u) = self.uring.as_mut() {
            u.release(&mut self.pool);
        }
        self.samples.flush();
        self.counters.sleeps = io::thread_voluntary_switches();
        self.pipeline.publish(io::now_realtime_ns(), true);
        self.publish(true);
    }

    fn publish(&mut self, wait: bool) {
        let c = &mut self.counters;
        c.pool = self.pool.stats();
        c.kernel_drops = self.rx.kernel_drops;
        c.samples_dropped = self.samples.dropped;
        c.backlog = self.backlog.len() - self.backlog.fan_outs();
        c.broadcast.held = self.backlog.fan_outs() as u64;
        c.backlog_high_water = self.backlog.high_water();
        if wait {
            self.shared.publish(c);
        } else {
            self.shared.try_publish(c);
        }
    }

    /// One round: send what the backlog holds, wait for datagrams, receive
    /// a batch, decide each one's fate, send. Returns `Err` only for errors
    /// that end the worker.
    pub fn poll_once(&mut self) -> Result<()> {
        if self.uring.is_some() {
            return self.poll_once_uring();
        }
        if !self.backlog.is_empty() {
            self.flush_backlog();
        }
        self.rx.refill(&mut self.pool);
        let Some(wait) = self.wait_for_work()? else {
            return Ok(());
        };
        if self.rx.posted() == 0 {
            return self.discard_one(wait);
        }
        let n = match self.rx.recv(self.fd, &mut self.pool, wait) {
            Ok(n) => n,
            Err(e) => return self.recv_failed(e),
        };
        self.woken = false;
        self.rx.take_received(n, &mut self.pool, &mut self.work);
        let mut work = std::mem::take(&mut self.work);
        for slot in work.drain(..) {
            self.dispatch(slot);
        }
        self.work = work;
        self.flush_backlog();
        self.tick(false);
        Ok(())
    }

    /// One received buffer, whatever the I/O model received it: count it,
    /// run the pipeline, and hold the echo in the backlog or free the
    /// buffer.
    fn dispatch(&mut self, slot: Slot) {
        let mut pkt = self.pool.buffer(&slot);
        if pkt.meta.segment != 0 {
            return self.dispatch_train(slot);
        }
        pkt.meta.truncated |= pkt.meta.len > self.max_datagram;
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += pkt.meta.len as u64;
        match self.pipeline.process(&mut pkt) {
            Verdict::Echo => self.backlog.push(slot),
            Verdict::Drop(r) => {
                self.counters.drop(r);
                self.pool.free(slot);
            }
        }
        // Extra sends a stage asked for (a broadcast), after its reply.
        self.fan_out();
    }

    fn flush_backlog(&mut self) {
        self.backlog.flush(
            self.fd,
            &mut self.pool,
            &mut self.counters,
            &mut self.samples,
        );
    }

    /// Waits as the I/O model says. `None`: nothing to receive yet (the
    /// round is over); `Some(wait)`: receive with this wait.
    fn wait_for_work(&mut self) -> Result<Option<RecvWait>> {
        let held = self.held();
        let w = self.waiter.wait(self.fd, held)?;
        if w.writable {
            self.backlog.mark_writable();
        }
        match w.wake {
            Wake::Receive { wait, woken } => {
                if woken {
                    self.counters.wakeups += 1;
                    self.woken = true;
                }
                Ok(Some(wait))
            }
            Wake::Idle { idle } => {
                self.tick(idle);
                Ok(None)
            }
        }
    }

    /// What the send backlog asks of the next wait, if it holds echoes.
    fn held(&self) -> Option<Held> {
        (!self.backlog.is_empty()).then(|| Held {
            want_writable: self.backlog.stall() == Stall::WouldBlock,
            timeout_ms: self.backlog_timeout_ms(),
        })
    }

    /// How long to wait while echoes are held: until the next retry or
    /// deadline, at most [`IDLE_WAKE`].
    fn backlog_timeout_ms(&self) -> i32 {
        let now = io::now_realtime_ns();
        let mut until = now + IDLE_WAKE.as_nanos() as u64;
        if let Stall::NoBufs(at) = self.backlog.stall() {
            until = until.min(at);
        }
        if let Some(exp) = self.backlog.next_expiry(&self.pool) {
            until = until.min(exp);
        }
        (until.saturating_sub(now).div_ceil(1_000_000)) as i32
    }

    /// End of a round or an idle wait: flush samples every 100 ms (or now,
    /// when `idle_timeout` says the worker waited a whole idle period) and
    /// publish counters.
    fn tick(&mut self, idle_timeout: bool) {
        let now = io::now_realtime_ns();
        if idle_timeout || now.saturating_sub(self.last_flush_ns) >= FLUSH_NS {
            self.samples.flush();
            self.last_flush_ns = now;
            let icmp = &mut self.counters.icmp_errors;
            io::drain_error_queue(self.fd, 64, |e| icmp.count(e));
            self.counters.sleeps = io::thread_voluntary_switches();
            self.pipeline.publish(now, false);
        }
        self.publish(false);
    }

    fn recv_failed(&mut self, e: Error) -> Result<()> {
        let woken = std::mem::replace(&mut self.woken, false);
        match e.raw_os_error() {
            Some(libc::EAGAIN) => {
                if woken {
                    self.counters.spurious_wakeups += 1;
                }
                // Blocking mode: the receive waited a whole idle period.
                self.tick(self.waiter.receive_waits() && !woken);
                Ok(())
            }
            Some(libc::EINTR) => Ok(()),
            Some(libc::EBADF | libc::ENOTSOCK | libc::EFAULT | libc::EINVAL) => Err(Error::new(
                e.kind(),
                format!("worker {}: receive failed, socket unusable: {e}", self.id),
            )),
            Some(errno) => {
                self.counters.recv_errors.count(errno);
                let icmp = &mut self.counters.icmp_errors;
                io::drain_error_queue(self.fd, 64, |e| icmp.count(e));
                if errno == libc::ENOMEM || errno == libc::ENOBUFS {
                    std::thread::sleep(Duration::from_millis(1));
                }
                self.publish(false);
                Ok(())
            }
            None => Err(e),
        }
    }

    /// The pool is empty: take one datagram off the socket into scratch
    /// space and count it as dropped, so the books still balance.
    fn discard_one(&mut self, wait: RecvWait) -> Result<()> {
        // This failed allocation is what counts the exhaustion event.
        if let Some(s) = self.pool.alloc() {
            self.pool.free(s); // a buffer came back meanwhile: post it next round
            return Ok(());
        }
        let flags = libc::MSG_TRUNC
            | match wait {
                RecvWait::WaitForOne => 0, // bounded by SO_RCVTIMEO
                RecvWait::DontWait => libc::MSG_DONTWAIT,
            };
        match io::recv_discard(self.fd, &mut self.scratch, flags) {
            Ok((datagrams, bytes)) => {
                self.woken = false;
                self.counters.rx_packets += datagrams;
                self.counters.rx_bytes += bytes as u64;
                self.counters.drop_n(DropReason::PoolExhausted, datagrams);
                self.publish(false);
                Ok(())
            }
            Err(e) => self.recv_failed(e),
        }
    }
}

impl Drop for Worker {
    /// A worker that panics still publishes what it counted, so the final
    /// report has everything up to the panic.
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.publish(true);
        }
    }
}
