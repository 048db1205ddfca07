//! The io_uring receive backend (`--io uring`).
//!
//! One io_uring instance per worker with one multishot `recvmsg` request
//! (`IORING_OP_RECVMSG` + `IORING_RECV_MULTISHOT`) on the worker's socket
//! and a provided-buffer ring ([`buf_ring`]) whose buffers are the
//! worker's pool buffers: **the ring is the free list**. Every free pool
//! buffer is allocated from the pool and posted to the ring, so the pool's
//! in-use count includes what the kernel holds; a completion names the
//! buffer the kernel filled, [`Uring::complete`] hands that buffer's slot
//! to the worker with its [`PacketMeta`](crate::packet::PacketMeta) filled
//! from the layout [`recv`] describes (timestamp, `SO_RXQ_OVFL`, packet
//! info, `MSG_TRUNC`), and the worker dispatches it like any other.
//! Buffers come back through the pool and [`Uring::refill`] posts them
//! again.
//!
//! The kernel ends a multishot request when the ring is empty (`ENOBUFS`)
//! or on an error; [`Uring::refill`] re-arms it once buffers are posted.
//! While it is not armed, datagrams wait in the socket queue (or are
//! dropped there and counted by `SO_MEMINFO`), so received + kernel drops
//! still equals what reached the socket. An `ENOBUFS` end counts one pool
//! exhaustion event (a failed allocation, as in the other modes).
//!
//! Waiting is `io_uring_enter` with a timeout (`IORING_ENTER_EXT_ARG`), so
//! the stop flag is seen within the idle wake; while the send backlog
//! waits for room, a one-shot `POLLOUT` poll request says when the socket
//! is writable. Sends stay `sendmmsg` through the worker's send backlog.
//! At shutdown [`Uring::cancel`] cancels the requests, the worker drains
//! the last completions, and [`Uring::release`] takes every posted buffer
//! back into the pool.

pub mod buf_ring;
pub mod recv;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use io_uring::{cqueue, opcode, types, IoUring};

use crate::packet::PacketPool;
use crate::pool::Slot;

use self::buf_ring::BufRing;
pub use self::recv::HEADROOM;

/// `user_data` of the multishot receive.
const RECV: u64 = 1;
/// `user_data` of the one-shot `POLLOUT` poll.
const POLL_OUT: u64 = 2;
/// `user_data` of cancel requests.
const CANCEL: u64 = 3;
/// The one buffer group of each instance.
const BGID: u16 = 0;
/// Submission queue entries: at most a receive, a poll and two cancels
/// are queued at once.
const SQ_ENTRIES: u32 = 8;

/// Most pool buffers per worker with `--io uring` (a buffer ring's limit).
pub const MAX_POOL: usize = buf_ring::MAX_ENTRIES;

/// Bytes of a pool of `capacity` buffers that io_uring needs beyond the
/// payload bytes: the headroom of every buffer and the ring entries.
pub fn extra_bytes(capacity: usize) -> usize {
    capacity * HEADROOM + capacity.next_power_of_two() * 16
}

/// What one wait did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waited {
    /// Completions are ready.
    pub ready: bool,
    /// The wait went to sleep in the kernel (the queue was empty before).
    pub slept: bool,
}

/// What [`Uring::complete`] found.
#[derive(Debug, Default)]
pub struct Completed {
    /// Datagrams moved out (their slots appended to `out`).
    pub received: usize,
    /// The socket has room to send (the `POLLOUT` poll completed).
    pub writable: bool,
    /// The receive ended with an error to report (not `ENOBUFS`, not a
    /// cancel).
    pub error: Option<io::Error>,
}

/// One worker's io_uring instance, buffer ring and multishot receive.
pub struct Uring {
    /// Dropped first: the kernel is done with the ring and the buffers.
    ring: IoUring,
    bufs: BufRing,
    /// The request's `msghdr` (name and control lengths), at a fixed address.
    msg: Box<libc::msghdr>,
    fd: RawFd,
    /// Slot `i` while buffer `i` is posted to the kernel.
    held: Box<[Option<Slot>]>,
    posted: usize,
    frame_len: u32,
    armed: bool,
    poll_out: bool,
    /// Built disabled: enabled by the first wait, on the worker's thread.
    disabled: bool,
}

// SAFETY: the msghdr and ring memory are owned by this value and only
// touched by the thread that owns it; the io_uring instance is Send.
unsafe impl Send for Uring {}

fn with_context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl Uring {
    /// Sets up io_uring for socket `fd` and posts every free buffer of
    /// `pool`, which must have been built with [`HEADROOM`].
    pub fn new(fd: RawFd, pool: &mut PacketPool) -> io::Result<Uring> {
        let cap = pool.stats().capacity;
        if pool.headroom() < HEADROOM || cap == 0 || cap > MAX_POOL {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("--io uring needs 1 to {MAX_POOL} buffers per worker (--pool-size), each with {HEADROOM} bytes of headroom"),
            ));
        }
        let entries = cap.next_power_of_two();
        let cq = (entries as u32 + SQ_ENTRIES).next_power_of_two();
        // Completions are posted only when the worker waits (deferred task
        // work, one issuer: the worker thread, fixed when it first waits
        // and enables the ring); kernels before 6.1 get a plain ring.
        let (ring, disabled) = match IoUring::builder()
            .setup_cqsize(cq)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_r_disabled()
            .build(SQ_ENTRIES)
        {
            Ok(r) => (r, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (
                IoUring::builder()
                    .setup_cqsize(cq)
                    .build(SQ_ENTRIES)
                    .map_err(|e| with_context(e, "io_uring_setup"))?,
                false,
            ),
            Err(e) => return Err(with_context(e, "io_uring_setup")),
        };
        if !ring.params().is_feature_ext_arg() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring without IORING_FEAT_EXT_ARG (kernel before 5.11)",
            ));
        }
        let bufs = BufRing::new(entries)?;
        // SAFETY: the ring memory (`bufs`) is page-aligned, holds
        // `entries` entries and lives as long as this value, whose `ring`
        // field is dropped (closing the instance) before `bufs`.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(bufs.addr(), bufs.entries(), BGID, 0)
        }
        .map_err(|e| with_context(e, "io_uring buffer ring (IORING_REGISTER_PBUF_RING)"))?;
        let frame_len = (pool.headroom() + pool.packet_size()) as u32;
        let mut u = Uring {
            ring,
            bufs,
            msg: Box::new(recv::template()),
            fd,
            held: (0..cap).map(|_| None).collect(),
            posted: 0,
            frame_len,
            armed: false,
            poll_out: false,
            disabled,
        };
        u.refill(pool);
        Ok(u)
    }

    /// Buffers posted to the kernel now.
    pub fn posted(&self) -> usize {
        self.posted
    }

    /// True while the multishot receive is armed.
    pub fn armed(&self) -> bool {
        self.armed
    }

    fn post(&mut self, pool: &mut PacketPool, s: Slot) {
        let i = s.index();
        self.bufs
            .push(pool.frame_ptr(&s) as u64, self.frame_len, i as u16);
        self.held[i] = Some(s);
        self.posted += 1;
    }

    /// Posts every free pool buffer to the kernel and (re-)arms the
    /// multishot receive if it ended and buffers are posted.
    pub fn refill(&mut self, pool: &mut PacketPool) {
        let mut n = 0;
        while pool.available() > 0 {
            let Some(s) = pool.alloc() else { break };
            self.post(pool, s);
            n += 1;
        }
        if n > 0 {
            self.bufs.publish();
        }
        if !self.armed && self.posted > 0 {
            let e = opcode::RecvMsgMulti::new(types::Fd(self.fd), &*self.msg, BGID)
                .flags(libc::MSG_TRUNC as u32)
                .build()
                .user_data(RECV);
            // SAFETY: the msghdr is boxed in `self` and outlives the
            // request (cancelled before `self` is gone); the buffers come
            // from the registered ring, every one a whole pool buffer.
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                self.armed = true;
            }
        }
    }

    /// Submits what is queued and waits up to `timeout` for a completion
    /// (not at all if one is ready); with `want_writable`, also for room
    /// to send.
    pub fn wait(&mut self, timeout: Duration, want_writable: bool) -> io::Result<Waited> {
        if self.disabled {
            self.ring
                .submitter()
                .register_enable_rings()
                .map_err(|e| with_context(e, "io_uring enable"))?;
            self.disabled = false;
        }
        if want_writable && !self.poll_out {
            let e = opcode::PollAdd::new(types::Fd(self.fd), libc::POLLOUT as u32)
                .build()
                .user_data(POLL_OUT);
            // SAFETY: a poll request carries no pointers.
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                self.poll_out = true;
            }
        }
        if !self.ring.completion().is_empty() {
            if !self.ring.submission().is_empty() {
                self.ring.submit()?;
            }
            return Ok(Waited {
                ready: true,
                slept: false,
            });
        }
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => return Err(with_context(e, "io_uring_enter")),
        }
        Ok(Waited {
            ready: !self.ring.completion().is_empty(),
            slept: true,
        })
    }

    /// Takes completions: up to `max` received datagrams (their slots,
    /// metadata filled, appended to `out`) and any control completions.
    /// The latest `SO_RXQ_OVFL` value goes to `kernel_drops`. An `ENOBUFS`
    /// end of the receive counts a pool exhaustion event if the pool
    /// really has no free buffer (a failed allocation).
    pub fn complete(
        &mut self,
        pool: &mut PacketPool,
        out: &mut Vec<Slot>,
        max: usize,
        kernel_drops: &mut Option<u32>,
    ) -> Completed {
        let mut done = Completed::default();
        let wall = crate::io::now_realtime_ns();
        let mut freed = None;
        let mut cq = self.ring.completion();
        while done.received < max {
            let Some(cqe) = cq.next() else { break };
            let (res, flags) = (cqe.result(), cqe.flags());
            match cqe.user_data() {
                RECV => {
                    if !cqueue::more(flags) {
                        self.armed = false;
                    }
                    if res < 0 {
                        match -res {
                            libc::ENOBUFS => {
                                // Exhausted only if no buffer is free.
                                if let Some(s) = pool.alloc() {
                                    freed = Some(s);
                                }
                            }
                            libc::ECANCELED => {}
                            errno => done.error = Some(io::Error::from_raw_os_error(errno)),
                        }
                        continue;
                    }
                    let Some(bid) = cqueue::buffer_select(flags) else {
                        continue;
                    };
                    let Some(slot) = self.held.get_mut(bid as usize).and_then(Option::take) else {
                        continue;
                    };
                    self.posted -= 1;
                    if let Some(r) = recv::parse(pool.headroom_bytes(&slot)) {
                        if r.ovfl.is_some() {
                            *kernel_drops = r.ovfl;
                        }
                        r.fill(pool.meta_mut(&slot), wall);
                    }
                    out.push(slot);
                    done.received += 1;
                }
                POLL_OUT => {
                    self.poll_out = false;
                    done.writable = true;
                }
                _ => {}
            }
        }
        drop(cq);
        if let Some(s) = freed {
            pool.free(s); // posted again by the next refill
        }
        done
    }

    /// Asks the kernel to end the receive and the poll (at shutdown). Their
    /// last completions arrive through [`wait`](Self::wait) and
    /// [`complete`](Self::complete); [`idle`](Self::idle) says when.
    pub fn cancel(&mut self) {
        for (armed, target) in [(self.armed, RECV), (self.poll_out, POLL_OUT)] {
            if armed {
                let e = opcode::AsyncCancel::new(target).build().user_data(CANCEL);
                // SAFETY: a cancel request carries no pointers.
                let _ = unsafe { self.ring.submission().push(&e) };
            }
        }
        let _ = self.ring.submit();
    }

    /// True when no request can still use a buffer or complete.
    pub fn idle(&mut self) -> bool {
        !self.armed && !self.poll_out && self.ring.completion().is_empty()
    }

    /// Takes every buffer still posted back into the pool (after the
    /// receive ended: [`idle`](Self::idle)) and unregisters the ring.
    pub fn release(&mut self, pool: &mut PacketPool) {
        self.sync_cancel();
        for s in self.held.iter_mut().filter_map(Option::take) {
            pool.free(s);
        }
        self.posted = 0;
        let _ = self.ring.submitter().unregister_buf_ring(BGID);
    }

    /// Cancels whatever is still armed and waits for it (bounded), so no
    /// request uses a buffer after this returns.
    fn sync_cancel(&mut self) {
        if self.armed || self.poll_out {
            let _ = self.ring.submitter().register_sync_cancel(
                Some(types::Timespec::from(Duration::from_secs(1))),
                types::CancelBuilder::any(),
            );
            self.armed = false;
            self.poll_out = false;
        }
    }
}

impl Drop for Uring {
    /// A worker that unwinds still stops the kernel from writing into its
    /// pool before the pool is freed.
    fn drop(&mut self) {
        self.sync_cancel();
    }
}

impl AsRawFd for Uring {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

/// Whether `--io uring` can run here: `Err` says why not, in one line
/// (io_uring_setup refused, no buffer rings, no multishot `recvmsg`).
pub fn probe() -> Result<(), String> {
    let ring = IoUring::new(SQ_ENTRIES).map_err(|e| {
        let hint = match e.raw_os_error() {
            Some(libc::ENOSYS) => " (kernel without io_uring)",
            Some(libc::EPERM) => {
                " (disabled: sysctl kernel.io_uring_disabled, or a seccomp/container policy)"
            }
            _ => "",
        };
        format!("io_uring_setup failed: {e}{hint}")
    })?;
    if !ring.params().is_feature_ext_arg() {
        return Err("io_uring lacks IORING_FEAT_EXT_ARG (kernel before 5.11)".into());
    }
    let bufs = BufRing::new(1).map_err(|e| format!("buffer ring: {e}"))?;
    // SAFETY: as in `Uring::new`: page-aligned ring of 1 entry that outlives
    // the instance (`ring` is dropped before `bufs`, below).
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(bufs.addr(), bufs.entries(), BGID, 0)
    }
    .map_err(|e| format!("io_uring buffer rings unsupported (kernel before 5.19?): {e}"))?;
    // A multishot recvmsg on an unbound UDP socket with an empty buffer
    // ring ends with ENOBUFS or waits until cancelled (supported), or fails
    // at once with EINVAL (kernel before 6.0).
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(|e| format!("probe socket: {e}"))?;
    let msg = Box::new(recv::template());
    let mut ring = ring;
    let recv = opcode::RecvMsgMulti::new(types::Fd(sock.as_raw_fd()), &*msg, BGID)
        .build()
        .user_data(RECV);
    let cancel = opcode::AsyncCancel::new(RECV).build().user_data(CANCEL);
    // SAFETY: `msg` and `sock` outlive the requests: the loop below waits
    // for the receive's last completion before either is dropped.
    unsafe {
        let mut sq = ring.submission();
        let _ = sq.push(&recv);
        let _ = sq.push(&cancel);
    }
    let mut verdict = Err("multishot recvmsg did not complete".to_string());
    for _ in 0..10 {
        let ts = types::Timespec::from(Duration::from_millis(100));
        let args = types::SubmitArgs::new().timespec(&ts);
        match ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
            Err(e) => return Err(format!("io_uring_enter: {e}")),
        }
        let mut done = false;
        for cqe in ring.completion() {
            if cqe.user_data() == RECV && !cqueue::more(cqe.flags()) {
                done = true;
                verdict = match -cqe.result() {
                    libc::ECANCELED | libc::ENOBUFS => Ok(()),
                    libc::EINVAL => Err("multishot recvmsg unsupported (kernel before 6.0)".into()),
                    e => Err(format!(
                        "multishot recvmsg probe: {}",
                        io::Error::from_raw_os_error(e)
                    )),
                };
            }
        }
        if done {
            break;
        }
    }
    drop(ring);
    drop(bufs);
    drop(msg);
    verdict
}
