//! The one module that talks to the OS directly: batched `recvmmsg` /
//! `sendmmsg`, control messages (`SO_TIMESTAMPNS`, `SO_RXQ_OVFL`), socket
//! options socket2 lacks, epoll, and clocks. Every `unsafe` block in the
//! crate is here, each with a `// SAFETY:` note.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use crate::packet::{Clock, PacketPool};
use crate::pool::Slot;

/// Calls a libc function and turns a `-1` result into `io::Error`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        #[allow(unused_unsafe)]
        // SAFETY: the caller's `unsafe` block states why the arguments are valid.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// Room for one `SCM_TIMESTAMPNS` (timespec) and one `SO_RXQ_OVFL` (u32)
/// control message, 8-byte aligned as `cmsghdr` requires.
const CMSG_WORDS: usize = 16;
type CmsgBuf = [u64; CMSG_WORDS];

/// How a batched receive should wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvWait {
    /// Block for the first datagram (bounded by `SO_RCVTIMEO`), then take
    /// what is queued (`MSG_WAITFORONE`).
    WaitForOne,
    /// Never block (`MSG_DONTWAIT`).
    DontWait,
}

/// Why one datagram of a batch could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// Socket send buffer full (`EAGAIN`/`EWOULDBLOCK`).
    WouldBlock,
    /// Kernel out of buffers or queue full (`ENOBUFS`).
    NoBufs,
    /// The peer or its network is unreachable (`ECONNREFUSED`,
    /// `EHOSTUNREACH`, `ENETUNREACH`, `EHOSTDOWN`, `ENETDOWN`).
    Unreachable,
    /// Not allowed by a firewall rule or a broadcast restriction (`EPERM`, `EACCES`).
    Denied,
    /// Anything else.
    Other,
}

impl SendError {
    /// Classifies an errno from `sendmmsg`.
    pub fn from_errno(errno: i32) -> SendError {
        match errno {
            libc::EAGAIN => SendError::WouldBlock,
            libc::ENOBUFS => SendError::NoBufs,
            libc::ECONNREFUSED
            | libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::EHOSTDOWN
            | libc::ENETDOWN => SendError::Unreachable,
            libc::EPERM | libc::EACCES => SendError::Denied,
            _ => SendError::Other,
        }
    }
}

/// What a batched send achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Datagrams the kernel accepted (the first `packets` of those asked for).
    pub packets: usize,
    /// Their bytes.
    pub bytes: usize,
}

/// Pre-allocated `mmsghdr` arrays for one worker's batched receive and send.
pub struct MsgBatch {
    cap: usize,
    recv_hdrs: Box<[libc::mmsghdr]>,
    recv_iovs: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_storage]>,
    cmsgs: Box<[CmsgBuf]>,
    send_hdrs: Box<[libc::mmsghdr]>,
    send_iovs: Box<[libc::iovec]>,
    /// Latest kernel drop counter seen (`SO_RXQ_OVFL`), if the socket reports one.
    pub kernel_drops: Option<u32>,
}

// SAFETY: the raw pointers inside the headers are rewritten before every
// system call and point only into this batch or into the pool passed to that
// call; nothing is shared between threads.
unsafe impl Send for MsgBatch {}

impl MsgBatch {
    /// Arrays for up to `cap` datagrams per call.
    pub fn new(cap: usize) -> MsgBatch {
        let cap = cap.max(1);
        // SAFETY: these are plain C structs for which all-zero is a valid value.
        let zero_hdr: libc::mmsghdr = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let zero_name: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        MsgBatch {
            cap,
            recv_hdrs: vec![zero_hdr; cap].into_boxed_slice(),
            recv_iovs: vec![zero_iov; cap].into_boxed_slice(),
            names: vec![zero_name; cap].into_boxed_slice(),
            cmsgs: vec![[0u64; CMSG_WORDS]; cap].into_boxed_slice(),
            send_hdrs: vec![zero_hdr; cap].into_boxed_slice(),
            send_iovs: vec![zero_iov; cap].into_boxed_slice(),
            kernel_drops: None,
        }
    }

    /// Datagrams per call.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Receives up to `slots.len()` datagrams into the pool buffers behind
    /// `slots` and fills each one's metadata. Returns how many arrived;
    /// `Err` carries the errno (`EAGAIN` when nothing was there in time).
    pub fn recv(
        &mut self,
        fd: RawFd,
        pool: &mut PacketPool,
        slots: &[Slot],
        wait: RecvWait,
    ) -> io::Result<usize> {
        let n = slots.len().min(self.cap);
        let size = pool.packet_size();
        for (i, slot) in slots.iter().take(n).enumerate() {
            self.recv_iovs[i] = libc::iovec {
                iov_base: pool.data_ptr(slot).cast(),
                iov_len: size,
            };
            let h = &mut self.recv_hdrs[i];
            point_hdr(
                h,
                &mut self.names[i],
                mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
                &mut self.recv_iovs[i],
                (self.cmsgs[i].as_mut_ptr().cast(), mem::size_of::<CmsgBuf>()),
            );
        }
        // MSG_TRUNC as an input flag makes msg_len the datagram's real length.
        let flags = libc::MSG_TRUNC
            | match wait {
                RecvWait::WaitForOne => libc::MSG_WAITFORONE,
                RecvWait::DontWait => libc::MSG_DONTWAIT,
            };
        // SAFETY: the first `n` headers point at `n` distinct pool buffers of
        // `size` bytes (we hold `&mut pool`, so nothing else touches them),
        // at this batch's address and control buffers, all live for the call.
        let got = syscall!(recvmmsg(
            fd,
            self.recv_hdrs.as_mut_ptr(),
            n as libc::c_uint,
            flags,
            std::ptr::null_mut()
        ))? as usize;
        let wall = now_realtime_ns();
        for (i, slot) in slots.iter().take(got).enumerate() {
            let h = &self.recv_hdrs[i];
            let (ts, ovfl) = parse_cmsgs(&h.msg_hdr);
            if ovfl.is_some() {
                self.kernel_drops = ovfl;
            }
            let peer = decode_addr(&self.names[i], h.msg_hdr.msg_namelen);
            let meta = pool.meta_mut(slot);
            meta.len = h.msg_len as usize;
            meta.truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            meta.peer = peer.unwrap_or(meta.peer);
            match ts {
                Some(ns) => {
                    meta.rx_ns = ns;
                    meta.rx_clock = Clock::Kernel;
                }
                None => {
                    meta.rx_ns = wall;
                    meta.rx_clock = Clock::User;
                }
            }
        }
        Ok(got)
    }

    /// Sends the buffers behind `slots[i]` for each `i` in `which` (indices
    /// into the batch just received) back to the address each came from,
    /// with `sendmmsg` and `MSG_DONTWAIT`: a worker never blocks on a slow
    /// peer. Returns what was sent; each failure is passed to `on_error`
    /// and skipped, never fatal. Samples for the sent datagrams are taken
    /// in order, so a failure in the middle shifts which ones count.
    pub fn send_back(
        &mut self,
        fd: RawFd,
        pool: &mut PacketPool,
        slots: &[Slot],
        which: &[u16],
        mut on_error: impl FnMut(SendError),
    ) -> Sent {
        let total = which.len().min(self.cap);
        for (k, &i) in which.iter().take(total).enumerate() {
            let i = i as usize;
            let len = pool.meta(&slots[i]).len;
            self.send_iovs[k] = libc::iovec {
                iov_base: pool.data_ptr(&slots[i]).cast(),
                iov_len: len.min(pool.packet_size()),
            };
            let namelen = self.recv_hdrs[i].msg_hdr.msg_namelen;
            let h = &mut self.send_hdrs[k];
            point_hdr(
                h,
                &mut self.names[i],
                namelen,
                &mut self.send_iovs[k],
                (std::ptr::null_mut(), 0),
            );
        }
        let mut sent = Sent::default();
        let mut k = 0;
        while k < total {
            // SAFETY: headers k..total point at pool buffers (we hold `&mut
            // pool`) of the lengths set above and at this batch's addresses.
            let r = syscall!(sendmmsg(
                fd,
                self.send_hdrs[k..].as_mut_ptr(),
                (total - k) as libc::c_uint,
                libc::MSG_DONTWAIT
            ));
            match r {
                Ok(m) if m > 0 => {
                    let m = m as usize;
                    sent.packets += m;
                    sent.bytes += self.send_hdrs[k..k + m]
                        .iter()
                        .map(|h| h.msg_len as usize)
                        .sum::<usize>();
                    k += m;
                }
                Ok(_) => {
                    on_error(SendError::Other);
                    k += 1;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => {
                    on_error(SendError::from_errno(e.raw_os_error().unwrap_or(0)));
                    k += 1;
                }
            }
        }
        sent
    }
}

/// Points one `mmsghdr` at an address, a single iovec and a control buffer
/// (`(null, 0)` for none), clearing what the kernel reports back.
fn point_hdr(
    h: &mut libc::mmsghdr,
    name: &mut libc::sockaddr_storage,
    namelen: libc::socklen_t,
    iov: &mut libc::iovec,
    control: (*mut libc::c_void, usize),
) {
    h.msg_len = 0;
    h.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
    h.msg_hdr.msg_namelen = namelen;
    h.msg_hdr.msg_iov = iov;
    h.msg_hdr.msg_iovlen = 1;
    h.msg_hdr.msg_control = control.0;
    h.msg_hdr.msg_controllen = control.1 as _;
    h.msg_hdr.msg_flags = 0;
}

/// Reads `SCM_TIMESTAMPNS` and `SO_RXQ_OVFL` from a received header.
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
fn parse_cmsgs(hdr: &libc::msghdr) -> (Option<u64>, Option<u32>) {
    let mut ts = None;
    let mut ovfl = None;
    if hdr.msg_control.is_null() || hdr.msg_controllen < mem::size_of::<libc::cmsghdr>() {
        return (ts, ovfl);
    }
    // SAFETY: `hdr` was filled by the kernel in `recvmmsg`: its control
    // buffer holds `msg_controllen` bytes of well-formed cmsgs, which the
    // CMSG_* macros walk without leaving it; data reads are unaligned-safe.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                    let t: libc::timespec = std::ptr::read_unaligned(data.cast());
                    ts = Some(t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64);
                }
                (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => {
                    ovfl = Some(std::ptr::read_unaligned(data.cast::<u32>()));
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    (ts, ovfl)
}

/// Turns a kernel-filled address into a `SocketAddr`.
fn decode_addr(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match ss.ss_family as i32 {
        libc::AF_INET if len as usize >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says this storage holds a sockaddr_in, and
            // sockaddr_storage is large and aligned enough for it.
            let a: &libc::sockaddr_in = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn set_int_opt(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and its exact size is passed.
    syscall!(setsockopt(
        fd,
        level,
        name,
        (&value as *const i32).cast(),
        mem::size_of::<i32>() as libc::socklen_t
    ))
    .map(|_| ())
}

/// Sets `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` (`recv` chooses which), which
/// ignore the `net.core.[rw]mem_max` caps but need `CAP_NET_ADMIN`.
pub fn force_buffer_size(fd: RawFd, recv: bool, bytes: usize) -> io::Result<()> {
    let name = if recv {
        libc::SO_RCVBUFFORCE
    } else {
        libc::SO_SNDBUFFORCE
    };
    set_int_opt(
        fd,
        libc::SOL_SOCKET,
        name,
        bytes.min(i32::MAX as usize) as i32,
    )
}

/// Asks the kernel to stamp every datagram on arrival (`SO_TIMESTAMPNS`).
pub fn enable_rx_timestamps(fd: RawFd) -> io::Result<()> {
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

/// Asks the kernel to report its per-socket drop counter (`SO_RXQ_OVFL`).
pub fn enable_rxq_ovfl(fd: RawFd) -> io::Result<()> {
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)
}

/// Delivers ICMP errors to the socket (`IP_RECVERR`); used by tests to
/// provoke receive and send errors on purpose.
pub fn enable_ip_recverr(fd: RawFd) -> io::Result<()> {
    set_int_opt(fd, libc::IPPROTO_IP, libc::IP_RECVERR, 1)
}

/// `CLOCK_REALTIME` in nanoseconds (the clock `SO_TIMESTAMPNS` uses).
pub fn now_realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// `CLOCK_MONOTONIC` in nanoseconds.
pub fn now_monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write into; clock ids are constants.
    unsafe { libc::clock_gettime(clock, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// A minimal epoll instance watching one socket for readability.
pub struct Epoll {
    fd: RawFd,
}

impl Epoll {
    /// An epoll instance with `sock` registered for `EPOLLIN`.
    pub fn new(sock: RawFd) -> io::Result<Epoll> {
        let fd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        let ep = Epoll { fd };
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        // SAFETY: both descriptors are open and `ev` is a valid event.
        syscall!(epoll_ctl(ep.fd, libc::EPOLL_CTL_ADD, sock, &mut ev))?;
        Ok(ep)
    }

    /// Waits up to `timeout_ms` for the socket to become readable.
    pub fn wait(&self, timeout_ms: i32) -> io::Result<bool> {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: `ev` has room for the one event we ask for.
        match syscall!(epoll_wait(self.fd, &mut ev, 1, timeout_ms)) {
            Ok(n) => Ok(n > 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own this descriptor and close it once.
        unsafe { libc::close(self.fd) };
    }
}

/// CPU time (user + system) this process has used, in nanoseconds.
pub fn process_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn batch_roundtrip_with_timestamps_and_truncation() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_rx_timestamps(server.as_raw_fd()).unwrap();
        enable_rxq_ovfl(server.as_raw_fd()).unwrap();
        let to = server.local_addr().unwrap();
        client.send_to(b"abc", to).unwrap();
        client.send_to(&[7u8; 100], to).unwrap(); // larger than the 64-byte buffers
        client.send_to(b"", to).unwrap();
        let mut pool = PacketPool::new(8, 64);
        let slots: Vec<Slot> = (0..4).map(|_| pool.alloc().unwrap()).collect();
        let mut batch = MsgBatch::new(4);
        let mut got = 0;
        while got < 3 {
            got += batch
                .recv(
                    server.as_raw_fd(),
                    &mut pool,
                    &slots[got..],
                    RecvWait::WaitForOne,
                )
                .unwrap();
        }
        assert_eq!(pool.meta(&slots[0]).len, 3);
        assert!(!pool.meta(&slots[0]).truncated);
        assert_eq!(pool.meta(&slots[0]).rx_clock, Clock::Kernel);
        assert_eq!(pool.meta(&slots[0]).peer, client.local_addr().unwrap());
        assert!(pool.meta(&slots[1]).truncated);
        assert_eq!(pool.meta(&slots[1]).len, 100);
        assert_eq!(pool.meta(&slots[2]).len, 0);
        // Kernel quirk: SO_RXQ_OVFL is only attached once the drop count is non-zero.
        assert_eq!(batch.kernel_drops, None);
        let sent = batch.send_back(server.as_raw_fd(), &mut pool, &slots, &[0, 2], |_| {
            panic!("send failed")
        });
        assert_eq!(
            sent,
            Sent {
                packets: 2,
                bytes: 3
            }
        );
        let mut buf = [0u8; 16];
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"abc");
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(n, 0);
        for s in slots {
            pool.free(s);
        }
    }

    #[test]
    fn dontwait_on_empty_socket_is_eagain() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut pool = PacketPool::new(1, 64);
        let slots = vec![pool.alloc().unwrap()];
        let mut batch = MsgBatch::new(1);
        let e = batch
            .recv(server.as_raw_fd(), &mut pool, &slots, RecvWait::DontWait)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EAGAIN));
        for s in slots {
            pool.free(s);
        }
    }

    #[test]
    fn send_errors_are_classified() {
        assert_eq!(SendError::from_errno(libc::EAGAIN), SendError::WouldBlock);
        assert_eq!(SendError::from_errno(libc::ENOBUFS), SendError::NoBufs);
        assert_eq!(
            SendError::from_errno(libc::ENETUNREACH),
            SendError::Unreachable
        );
        assert_eq!(
            SendError::from_errno(libc::ECONNREFUSED),
            SendError::Unreachable
        );
        assert_eq!(SendError::from_errno(libc::EPERM), SendError::Denied);
        assert_eq!(SendError::from_errno(libc::EINVAL), SendError::Other);
    }

    #[test]
    fn kernel_doubles_requested_buffer_sizes() {
        // The kernel quirk users trip over: SO_RCVBUF reports twice the request.
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        s.set_recv_buffer_size(65536).unwrap();
        assert_eq!(s.recv_buffer_size().unwrap(), 131072);
    }
}
