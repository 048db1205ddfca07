//! One worker thread's loop: the single path of a datagram.
//!
//! ```text
//! pool.alloc() x batch -> recvmmsg (sys::MsgBatch::recv) -> pipeline.process()
//!   -> sendmmsg of the Echo verdicts (sys::MsgBatch::send_back)
//!   -> latency samples -> pool.free() for every buffer used
//! ```
//!
//! The worker owns its socket handle, pool, batch arrays and pipeline; it
//! shares only its published counters and the sample channel.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::counters::{Counters, SharedCounters};
use crate::packet::PacketPool;
use crate::pool::Slot;
use crate::process::{DropReason, Pipeline, Verdict};
use crate::samples::SampleSink;
use crate::sys::{self, Epoll, MsgBatch, RecvWait};

/// How long an idle worker waits before checking for shutdown.
pub const IDLE_WAKE: Duration = Duration::from_millis(100);
/// How often samples are flushed to the metrics thread at the latest.
const FLUSH_NS: u64 = 100_000_000;

/// How a worker waits for datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    /// Blocking batched receive (`recvmmsg` + `MSG_WAITFORONE`, woken every 100 ms).
    #[default]
    Blocking,
    /// Non-blocking socket, `epoll_wait` for readiness.
    Epoll,
    /// Non-blocking busy polling: lowest latency, one core per worker at 100%.
    Spin,
}

/// Everything a worker owns.
pub struct Worker {
    id: usize,
    socket: UdpSocket,
    io: IoMode,
    epoll: Option<Epoll>,
    pool: PacketPool,
    batch: MsgBatch,
    slots: Vec<Slot>,
    echo: Vec<u16>,
    scratch: Box<[u8]>,
    pipeline: Pipeline,
    counters: Counters,
    shared: Arc<SharedCounters>,
    samples: SampleSink,
    stop: Arc<AtomicBool>,
    last_flush_ns: u64,
    kernel_clock: bool,
}

impl Worker {
    /// A worker receiving on `socket` with `pool`, up to `batch` datagrams a
    /// call. Sets the socket's timestamps, drop counter and blocking mode.
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
    ) -> io::Result<Worker> {
        let batch = batch.clamp(1, u16::MAX as usize);
        let fd = socket.as_raw_fd();
        let kernel_clock = sys::enable_rx_timestamps(fd).is_ok();
        let _ = sys::enable_rxq_ovfl(fd);
        let epoll = match io {
            IoMode::Blocking => {
                socket.set_nonblocking(false)?;
                socket.set_read_timeout(Some(IDLE_WAKE))?;
                None
            }
            IoMode::Epoll => {
                socket.set_nonblocking(true)?;
                Some(Epoll::new(fd)?)
            }
            IoMode::Spin => {
                socket.set_nonblocking(true)?;
                None
            }
        };
        let scratch = vec![0u8; pool.packet_size().max(1)].into_boxed_slice();
        Ok(Worker {
            id,
            socket,
            io,
            epoll,
            pool,
            batch: MsgBatch::new(batch),
            slots: Vec::with_capacity(batch),
            echo: Vec::with_capacity(batch),
            scratch,
            pipeline,
            counters: Counters::default(),
            shared,
            samples,
            stop,
            last_flush_ns: sys::now_realtime_ns(),
            kernel_clock,
        })
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
    /// returns every buffer, publishes the final counters and returns them.
    pub fn run(mut self) -> io::Result<Counters> {
        let mut result = Ok(());
        while !self.stop.load(Ordering::Relaxed) {
            if let Err(e) = self.poll_once() {
                result = Err(e);
                break;
            }
        }
        for s in self.slots.drain(..) {
            self.pool.free(s);
        }
        self.samples.flush();
        self.publish(true);
        result.map(|_| self.counters)
    }

    fn publish(&mut self, wait: bool) {
        self.counters.pool = self.pool.stats();
        self.counters.kernel_drops = self.batch.kernel_drops;
        self.counters.samples_dropped = self.samples.dropped;
        if wait {
            self.shared.publish(&self.counters);
        } else {
            self.shared.try_publish(&self.counters);
        }
    }

    /// One round: wait for datagrams, receive a batch, process, echo,
    /// return buffers. Returns `Err` only for errors that end the worker.
    pub fn poll_once(&mut self) -> io::Result<()> {
        // Post as many buffers as the pool has free, up to one batch: a pool
        // smaller than the batch just means smaller batches, not exhaustion.
        while self.slots.len() < self.batch.capacity() && self.pool.available() > 0 {
            match self.pool.alloc() {
                Some(s) => self.slots.push(s),
                None => break,
            }
        }
        let wait = match self.io {
            IoMode::Blocking => RecvWait::WaitForOne,
            IoMode::Epoll => {
                let ep = self.epoll.as_ref().expect("epoll mode has an epoll");
                if !ep.wait(IDLE_WAKE.as_millis() as i32)? {
                    self.idle();
                    return Ok(());
                }
                RecvWait::DontWait
            }
            IoMode::Spin => RecvWait::DontWait,
        };
        if self.slots.is_empty() {
            return self.discard_one();
        }
        let fd = self.socket.as_raw_fd();
        let n = match self.batch.recv(fd, &mut self.pool, &self.slots, wait) {
            Ok(n) => n,
            Err(e) => return self.recv_failed(e),
        };
        self.echo.clear();
        for i in 0..n {
            let mut pkt = self.pool.buffer(&self.slots[i]);
            self.counters.rx_packets += 1;
            self.counters.rx_bytes += pkt.meta.len as u64;
            match self.pipeline.process(&mut pkt) {
                Verdict::Echo => self.echo.push(i as u16),
                Verdict::Drop(r) => self.counters.drop(r),
            }
        }
        let counters = &mut self.counters;
        let sent = self
            .batch
            .send_back(fd, &mut self.pool, &self.slots[..n], &self.echo, |e| {
                counters.send_error(e)
            });
        let now = sys::now_realtime_ns();
        for &i in &self.echo[..sent.packets] {
            let rx = self.pool.meta(&self.slots[i as usize]).rx_ns;
            self.samples.record(now.saturating_sub(rx));
        }
        self.counters.tx_packets += sent.packets as u64;
        self.counters.tx_bytes += sent.bytes as u64;
        for s in self.slots.drain(..n) {
            self.pool.free(s);
        }
        if now.saturating_sub(self.last_flush_ns) >= FLUSH_NS {
            self.samples.flush();
            self.last_flush_ns = now;
        }
        self.publish(false);
        Ok(())
    }

    /// Nothing arrived in time: flush samples and publish counters.
    fn idle(&mut self) {
        self.samples.flush();
        self.last_flush_ns = sys::now_realtime_ns();
        self.publish(false);
    }

    fn recv_failed(&mut self, e: io::Error) -> io::Result<()> {
        match e.raw_os_error() {
            Some(libc::EAGAIN) => {
                self.idle();
                Ok(())
            }
            Some(libc::EINTR) => Ok(()),
            Some(libc::EBADF | libc::ENOTSOCK | libc::EFAULT | libc::EINVAL) => {
                Err(io::Error::new(
                    e.kind(),
                    format!("worker {}: receive failed, socket unusable: {e}", self.id),
                ))
            }
            Some(errno) => {
                self.counters.recv_errors.count(errno);
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
    fn discard_one(&mut self) -> io::Result<()> {
        // This failed allocation is what counts the exhaustion event.
        if let Some(s) = self.pool.alloc() {
            self.slots.push(s); // a buffer came back meanwhile: receive normally next round
            return Ok(());
        }
        // Blocking mode waits up to IDLE_WAKE (SO_RCVTIMEO); the others never wait.
        match self.socket.recv(&mut self.scratch) {
            Ok(n) => {
                self.counters.rx_packets += 1;
                self.counters.rx_bytes += n as u64;
                self.counters.drop(DropReason::PoolExhausted);
                self.publish(false);
                Ok(())
            }
            Err(e) => self.recv_failed(e),
        }
    }
}
