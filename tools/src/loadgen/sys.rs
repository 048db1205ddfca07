//! The only module of `loadgen` that calls the OS directly: batched
//! `sendmmsg` to one target, batched non-blocking `recvmmsg` (with the
//! `UDP_GRO` segment size of each read when asked), `ppoll` with a
//! nanosecond timeout, the thread's timer slack and CPU time; UDP GSO/GRO
//! in the submodule `gso`. Every `unsafe` block of the binary is here or in
//! `sys/gso.rs`, each with a `// SAFETY:` note.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use socket2::SockAddr;

mod gso;

pub use gso::{is_refusal, probe_gso, send_train, set_gro, set_timestamps};

/// An all-zero `mmsghdr`, the "empty" value the kernel API expects.
fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is a plain C struct of integers and raw pointers, for
    // which all-zero bytes are a valid value (null pointers, zero lengths).
    unsafe { mem::zeroed() }
}

fn empty_iovec() -> libc::iovec {
    libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }
}

/// Points one `mmsghdr` at an address (null for none) and a single iovec,
/// with no control buffer, clearing what the kernel reports back.
fn point_hdr(
    h: &mut libc::mmsghdr,
    name: *mut libc::c_void,
    namelen: libc::socklen_t,
    iov: *mut libc::iovec,
) {
    h.msg_len = 0;
    h.msg_hdr.msg_name = name;
    h.msg_hdr.msg_namelen = namelen;
    h.msg_hdr.msg_iov = iov;
    h.msg_hdr.msg_iovlen = 1;
    h.msg_hdr.msg_control = std::ptr::null_mut();
    h.msg_hdr.msg_controllen = 0;
    h.msg_hdr.msg_flags = 0;
}

/// Pre-allocated headers for sending up to `cap` datagrams to one address
/// per `sendmmsg` call.
pub struct SendBatch {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addr: SockAddr,
}

impl SendBatch {
    /// Headers for up to `cap` datagrams to `target`.
    pub fn new(cap: usize, target: SocketAddr) -> SendBatch {
        let cap = cap.max(1);
        SendBatch {
            hdrs: (0..cap).map(|_| zeroed_mmsghdr()).collect(),
            iovs: vec![empty_iovec(); cap],
            addr: SockAddr::from(target),
        }
    }

    /// Sends `buf[o..o + len]` for each `o` in `offsets` (at most
    /// [`SendBatch::capacity`] of them) with one `sendmmsg(MSG_DONTWAIT)`.
    /// Returns how many leading datagrams the kernel accepted (at least one),
    /// or the error that stopped the first.
    pub fn send(
        &mut self,
        fd: RawFd,
        buf: &[u8],
        offsets: &[usize],
        len: usize,
    ) -> io::Result<usize> {
        let n = offsets.len().min(self.hdrs.len());
        if n == 0 {
            return Ok(0);
        }
        for (iov, &o) in self.iovs.iter_mut().zip(&offsets[..n]) {
            let d = buf.get(o..o + len).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "datagram outside the buffer")
            })?;
            *iov = libc::iovec {
                iov_base: d.as_ptr() as *mut libc::c_void,
                iov_len: len,
            };
        }
        let iov_base = self.iovs.as_mut_ptr();
        let name = self.addr.as_ptr() as *mut libc::c_void;
        let namelen = self.addr.len();
        for (i, h) in self.hdrs[..n].iter_mut().enumerate() {
            point_hdr(h, name, namelen, iov_base.wrapping_add(i));
        }
        // SAFETY: the first `n` headers are fully initialised just above:
        // each points at one iovec of `self.iovs` (live, not otherwise
        // borrowed during the call), each iovec at `len` bytes inside `buf`
        // (bounds checked above; the kernel only reads them), and the name
        // at `self.addr`, a valid socket address of `namelen` bytes.
        let r = unsafe {
            libc::sendmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }
}

/// Pre-allocated buffers for receiving up to `cap` datagrams of up to
/// `slot` bytes per `recvmmsg` call, with room for each read's control
/// messages (receive timestamp, `UDP_GRO` segment size).
pub struct RecvBatch {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    buf: Vec<u8>,
    slot: usize,
    /// `gso::CONTROL_WORDS` words per header (u64: aligned for cmsghdr).
    control: Vec<u64>,
}

impl RecvBatch {
    /// Room for `cap` datagrams of `slot` bytes each (with GRO a datagram
    /// may be a coalesced train: make `slot` hold one).
    pub fn new(cap: usize, slot: usize) -> RecvBatch {
        let cap = cap.max(1);
        let slot = slot.max(1);
        RecvBatch {
            hdrs: (0..cap).map(|_| zeroed_mmsghdr()).collect(),
            iovs: vec![empty_iovec(); cap],
            buf: vec![0; cap * slot],
            slot,
            control: vec![0; cap * gso::CONTROL_WORDS],
        }
    }

    /// The `UDP_GRO` segment size (`Some` only for a coalesced train) and
    /// the kernel receive time (`CLOCK_REALTIME` ns, with `SO_TIMESTAMPNS`)
    /// of datagram `i` of the last [`RecvBatch::recv`].
    pub fn control(&self, i: usize) -> (Option<usize>, Option<u64>) {
        gso::read_control(&self.hdrs[i].msg_hdr)
    }

    /// Most datagrams per call.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Takes what is queued on `fd` without waiting (`MSG_DONTWAIT`): the
    /// number of datagrams now readable with [`RecvBatch::datagram`], 0 if
    /// none was queued.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let base = self.buf.as_mut_ptr();
        for (i, iov) in self.iovs.iter_mut().enumerate() {
            *iov = libc::iovec {
                iov_base: base.wrapping_add(i * self.slot).cast(),
                iov_len: self.slot,
            };
        }
        let iov_base = self.iovs.as_mut_ptr();
        let control = self.control.as_mut_ptr();
        let words = gso::CONTROL_WORDS;
        for (i, h) in self.hdrs.iter_mut().enumerate() {
            point_hdr(h, std::ptr::null_mut(), 0, iov_base.wrapping_add(i));
            h.msg_hdr.msg_control = control.wrapping_add(i * words).cast();
            h.msg_hdr.msg_controllen = words * mem::size_of::<u64>();
        }
        // SAFETY: every header points at its own iovec in `self.iovs`, and
        // iovec i at bytes [i*slot, (i+1)*slot) of `self.buf`, which holds
        // cap*slot bytes; header i's control buffer is words
        // [i*W, (i+1)*W) of `self.control` (cap*W words, msg_controllen
        // bytes of it); all are owned by `self`, which is exclusively
        // borrowed for the call, so the kernel's writes alias nothing.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as libc::c_uint,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
            _ => Err(e),
        }
    }

    /// Datagram `i` of the last [`RecvBatch::recv`] (cut to the slot size if
    /// it was longer, which then fails the probe checksum).
    pub fn datagram(&self, i: usize) -> &[u8] {
        let len = (self.hdrs[i].msg_len as usize).min(self.slot);
        &self.buf[i * self.slot..i * self.slot + len]
    }
}

/// Sleeps `ns` nanoseconds (`ppoll` without descriptors: the same timer
/// and slack as [`poll`]); a signal ends it early.
pub fn sleep_ns(ns: u64) -> io::Result<()> {
    poll(&mut [], ns).map(|_| ())
}

/// Waits until one of `fds` is ready or `timeout_ns` passed (`ppoll`, so the
/// timeout is not rounded to milliseconds). Returns the number of ready
/// descriptors; an interrupted wait returns 0.
pub fn poll(fds: &mut [libc::pollfd], timeout_ns: u64) -> io::Result<usize> {
    let ts = libc::timespec {
        tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()`
    // pollfd structs, `ts` a valid timespec, and a null signal mask means
    // "keep the current one".
    let r = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    if r >= 0 {
        return Ok(r as usize);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::Interrupted {
        Ok(0)
    } else {
        Err(e)
    }
}

fn set_int_opt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and exactly its size is passed; the
    // kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets both socket buffers past net.core.rmem_max / wmem_max
/// (`SO_RCVBUFFORCE`, `SO_SNDBUFFORCE`); needs CAP_NET_ADMIN.
pub fn force_buffer_sizes(fd: RawFd, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, v)?;
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, v)
}

/// CPU time this thread has used (`CLOCK_THREAD_CPUTIME_ID`), in ns.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, exclusively borrowed timespec for the
    // kernel to fill; the clock id is a constant the kernel knows.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r < 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sets how late the kernel may fire this thread's timers (`PR_SET_TIMERSLACK`).
pub fn set_timer_slack_ns(ns: u64) -> io::Result<()> {
    // SAFETY: PR_SET_TIMERSLACK takes one unsigned long argument by value;
    // it only changes a field of the calling thread.
    let r = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn batched_send_and_receive() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut send = SendBatch::new(4, rx.local_addr().unwrap());
        let buf: Vec<u8> = (0..30u8).collect();
        let n = send.send(tx.as_raw_fd(), &buf, &[0, 10, 20], 10).unwrap();
        assert_eq!(n, 3);
        let mut recv = RecvBatch::new(8, 8);
        let mut fds = [libc::pollfd {
            fd: rx.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        assert_eq!(poll(&mut fds, 2_000_000_000).unwrap(), 1);
        let mut got = Vec::new();
        while got.len() < 3 {
            let n = recv.recv(rx.as_raw_fd()).unwrap();
            for i in 0..n {
                got.push(recv.datagram(i).to_vec());
            }
        }
        // 10-byte datagrams into 8-byte slots: cut, never overrun.
        assert_eq!(got[0], (0..8u8).collect::<Vec<_>>());
        assert_eq!(got[2], (20..28u8).collect::<Vec<_>>());
        assert_eq!(recv.recv(rx.as_raw_fd()).unwrap(), 0);
    }

    #[test]
    fn bad_offsets_are_an_error_not_a_read_overrun() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut send = SendBatch::new(2, "127.0.0.1:9".parse().unwrap());
        let e = send.send(tx.as_raw_fd(), &[0u8; 10], &[5], 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn poll_times_out() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut fds = [libc::pollfd {
            fd: rx.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        assert_eq!(poll(&mut fds, 1_000_000).unwrap(), 0);
        set_timer_slack_ns(10_000).unwrap();
        assert!(thread_cpu_ns() > 0);
    }
}
