//! The posted receive ring: `recvmmsg` into pool buffers.
//!
//! With `UDP_GRO` on the socket, one entry may receive a train of
//! datagrams coalesced by the kernel; its `UDP_GRO` control message gives
//! the segment size, kept in `PacketMeta::segment`.
//!
//! Entry `i` of the ring holds one pool buffer, with its `mmsghdr`, iovec,
//! address and control buffer already pointed at it. A receive fills the
//! first `n` entries; [`RecvBatch::take_received`] moves those `n` buffers
//! out and re-points only those `n` entries (at fresh buffers, or at the
//! last posted ones when the pool runs short), so a call costs work per
//! datagram received, not per `--batch` entry posted.

use std::io;
use std::mem;
use std::os::fd::RawFd;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::packet::{Clock, Destination, PacketPool};
use crate::pool::Slot;

use super::addr;
use super::clock::now_realtime_ns;

/// Room for `SCM_TIMESTAMPNS` (timespec, 32 bytes with its header),
/// `SO_RXQ_OVFL` (u32, 24), `IP_PKTINFO` or `IPV6_PKTINFO` (32 or 40),
/// `UDP_GRO` (int, 24) and `IP_TTL` or `IPV6_HOPLIMIT` (int, 24) control
/// messages: 144 of 192 bytes, 8-byte aligned as `cmsghdr` requires.
const CMSG_WORDS: usize = 24;
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

/// Pre-allocated `mmsghdr` ring for one worker's batched receive.
pub struct RecvBatch {
    cap: usize,
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_storage]>,
    cmsgs: Box<[CmsgBuf]>,
    posted: Vec<Slot>,
    /// Latest kernel drop counter seen (`SO_RXQ_OVFL`), if the socket reports one.
    pub kernel_drops: Option<u32>,
    /// Entries re-pointed since creation (for tests and benches: it grows
    /// by the datagrams received, not by the ring's capacity).
    pub repointed: u64,
}

// SAFETY: the raw pointers inside the headers point only into this batch's
// own boxed arrays (which never move) or into the pool buffers of `posted`,
// which this batch owns as slots; nothing is shared between threads.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// A ring of up to `cap` datagrams per call, nothing posted yet.
    pub fn new(cap: usize) -> RecvBatch {
        let cap = cap.max(1);
        // SAFETY: mmsghdr is a plain C struct for which all-zero is valid.
        let zero_hdr: libc::mmsghdr = unsafe { mem::zeroed() };
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        RecvBatch {
            cap,
            hdrs: vec![zero_hdr; cap].into_boxed_slice(),
            iovs: vec![zero_iov; cap].into_boxed_slice(),
            names: vec![addr::zeroed_storage(); cap].into_boxed_slice(),
            cmsgs: vec![[0u64; CMSG_WORDS]; cap].into_boxed_slice(),
            posted: Vec::with_capacity(cap),
            kernel_drops: None,
            repointed: 0,
        }
    }

    /// Datagrams per call at most.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Buffers posted now.
    pub fn posted(&self) -> usize {
        self.posted.len()
    }

    /// Points entry `i` at the buffer of `posted[i]`.
    fn point(&mut self, i: usize, pool: &mut PacketPool) {
        self.iovs[i] = libc::iovec {
            iov_base: pool.data_ptr(&self.posted[i]).cast(),
            iov_len: pool.packet_size(),
        };
        let control = self.cmsgs[i].as_mut_ptr().cast();
        let h = &mut self.hdrs[i];
        h.msg_len = 0;
        h.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
        h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        h.msg_hdr.msg_iov = &mut self.iovs[i];
        h.msg_hdr.msg_iovlen = 1;
        h.msg_hdr.msg_control = control;
        h.msg_hdr.msg_controllen = mem::size_of::<CmsgBuf>() as _;
        h.msg_hdr.msg_flags = 0;
        self.repointed += 1;
    }

    /// Posts free pool buffers until the ring is full or the pool has none
    /// left (never a failed allocation: that is not exhaustion yet).
    pub fn refill(&mut self, pool: &mut PacketPool) {
        while self.posted.len() < self.cap && pool.available() > 0 {
            let Some(s) = pool.alloc() else { break };
            self.posted.push(s);
            let i = self.posted.len() - 1;
            self.point(i, pool);
        }
    }

    /// Receives up to [`posted`](Self::posted) datagrams and fills each
    /// one's metadata. Returns how many arrived (the first `n` entries);
    /// `Err` carries the errno (`EAGAIN` when nothing was there in time).
    pub fn recv(&mut self, fd: RawFd, pool: &mut PacketPool, wait: RecvWait) -> io::Result<usize> {
        let n = self.posted.len();
        if n == 0 {
            return Ok(0);
        }
        // MSG_TRUNC as an input flag makes msg_len the datagram's real length.
        let flags = libc::MSG_TRUNC
            | match wait {
                RecvWait::WaitForOne => libc::MSG_WAITFORONE,
                RecvWait::DontWait => libc::MSG_DONTWAIT,
            };
        // SAFETY: the first `n` headers were pointed (by `point`) at `n`
        // distinct posted pool buffers of `packet_size` bytes, which this
        // ring owns as slots, and at this ring's own address and control
        // buffers; all stay put for the call.
        let got = syscall!(recvmmsg(
            fd,
            self.hdrs.as_mut_ptr(),
            n as libc::c_uint,
            flags,
            std::ptr::null_mut()
        ))? as usize;
        let wall = now_realtime_ns();
        for i in 0..got {
            let h = &mut self.hdrs[i];
            let Cmsgs {
                ts,
                ovfl,
                dest,
                gro,
                ttl,
            } = parse_cmsgs(&h.msg_hdr);
            if ovfl.is_some() {
                self.kernel_drops = ovfl;
            }
            let peer = addr::decode(&self.names[i], h.msg_hdr.msg_namelen);
            let meta = pool.meta_mut(&self.posted[i]);
            meta.len = h.msg_len as usize;
            meta.truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            meta.peer = peer.unwrap_or(meta.peer);
            meta.dest = dest;
            meta.segment = train_segment(meta.len, gro);
            meta.ttl = ttl;
            (meta.rx_ns, meta.rx_clock) = match ts {
                Some(ns) => (ns, Clock::Kernel),
                None => (wall, Clock::User),
            };
        }
        Ok(got)
    }

    /// Moves the `n` buffers just received into `out`, in arrival order,
    /// and re-points only their entries: at fresh pool buffers while the
    /// pool has them, otherwise at the last posted buffers (the ring
    /// shrinks; [`refill`](Self::refill) grows it again).
    pub fn take_received(&mut self, n: usize, pool: &mut PacketPool, out: &mut Vec<Slot>) {
        let n = n.min(self.posted.len());
        let start = out.len();
        // From the back, so an entry moved in from the tail is always one
        // already posted (never a received one still to be taken).
        for i in (0..n).rev() {
            if pool.available() > 0 {
                if let Some(fresh) = pool.alloc() {
                    out.push(mem::replace(&mut self.posted[i], fresh));
                    self.point(i, pool);
                    continue;
                }
            }
            out.push(self.posted.swap_remove(i));
            if i < self.posted.len() {
                self.point(i, pool);
            }
        }
        out[start..].reverse();
    }

    /// Gives every posted buffer back to the pool.
    pub fn release(&mut self, pool: &mut PacketPool) {
        for s in self.posted.drain(..) {
            pool.free(s);
        }
    }
}

/// The segment size of a GRO train of `len` bytes whose `UDP_GRO` control
/// message said `gro`; 0 when it is one datagram.
pub(crate) fn train_segment(len: usize, gro: Option<u16>) -> u16 {
    match gro {
        Some(seg) if seg > 0 && len > seg as usize => seg,
        _ => 0,
    }
}

/// Takes one datagram (or GRO train) off the socket into `scratch` and
/// forgets it; returns how many datagrams that was (the segments of a
/// train, from its real length and `UDP_GRO` segment size, even when it
/// did not fit) and their bytes. For a worker whose pool is empty.
pub fn recv_discard(fd: RawFd, scratch: &mut [u8], flags: i32) -> io::Result<(u64, usize)> {
    let mut ctrl: CmsgBuf = [0; CMSG_WORDS];
    let mut iov = libc::iovec {
        iov_base: scratch.as_mut_ptr().cast(),
        iov_len: scratch.len(),
    };
    // SAFETY: msghdr is a plain C struct; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctrl.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of::<CmsgBuf>() as _;
    // SAFETY: `msg` points at `iov` (describing `scratch`) and `ctrl`, all
    // live and writable for the call; no address is asked for.
    let n = syscall!(recvmsg(fd, &mut msg, flags | libc::MSG_TRUNC))? as usize;
    let seg = train_segment(n, parse_cmsgs(&msg).gro);
    let datagrams = if seg == 0 {
        1
    } else {
        n.div_ceil(seg as usize) as u64
    };
    Ok((datagrams, n))
}

/// What the control messages of one received datagram said.
#[derive(Debug, Default)]
pub(crate) struct Cmsgs {
    /// `SCM_TIMESTAMPNS`, ns since the epoch.
    pub(crate) ts: Option<u64>,
    /// `SO_RXQ_OVFL`.
    pub(crate) ovfl: Option<u32>,
    /// `IP_PKTINFO` / `IPV6_PKTINFO`.
    pub(crate) dest: Option<Destination>,
    /// `UDP_GRO`: the segment size of a coalesced train.
    pub(crate) gro: Option<u16>,
    /// `IP_TTL` / `IPV6_HOPLIMIT`: the TTL or hop limit it arrived with.
    pub(crate) ttl: Option<u8>,
}

/// Reads `SCM_TIMESTAMPNS`, `SO_RXQ_OVFL`, the packet info, `UDP_GRO` and
/// the TTL / hop limit from a received header.
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
pub(crate) fn parse_cmsgs(hdr: &libc::msghdr) -> Cmsgs {
    let mut ts = None;
    let mut ovfl = None;
    let mut dest = None;
    let mut gro = None;
    let mut ttl = None;
    if hdr.msg_control.is_null() || (hdr.msg_controllen as usize) < mem::size_of::<libc::cmsghdr>()
    {
        return Cmsgs::default();
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
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let p: libc::in_pktinfo = std::ptr::read_unaligned(data.cast());
                    let v4 = |a: libc::in_addr| IpAddr::V4(Ipv4Addr::from(u32::from_be(a.s_addr)));
                    dest = Some(Destination {
                        addr: v4(p.ipi_addr),
                        local: v4(p.ipi_spec_dst),
                        ifindex: p.ipi_ifindex as u32,
                    });
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let p: libc::in6_pktinfo = std::ptr::read_unaligned(data.cast());
                    let a = IpAddr::V6(Ipv6Addr::from(p.ipi6_addr.s6_addr));
                    dest = Some(Destination {
                        addr: a,
                        local: a,
                        ifindex: p.ipi6_ifindex as u32,
                    });
                }
                (libc::SOL_UDP, libc::UDP_GRO) => {
                    let seg = std::ptr::read_unaligned(data.cast::<libc::c_int>());
                    gro = u16::try_from(seg).ok();
                }
                (libc::IPPROTO_IP, libc::IP_TTL) | (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                    let t = std::ptr::read_unaligned(data.cast::<libc::c_int>());
                    ttl = u8::try_from(t).ok();
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    Cmsgs {
        ts,
        ovfl,
        dest,
        gro,
        ttl,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::sockopt::{enable_rx_timestamps, enable_rxq_ovfl};
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn recv_all(b: &mut RecvBatch, s: &UdpSocket, pool: &mut PacketPool, want: usize) -> Vec<Slot> {
        let mut out = Vec::new();
        while out.len() < want {
            let n = b.recv(s.as_raw_fd(), pool, RecvWait::WaitForOne).unwrap();
            b.take_received(n, pool, &mut out);
        }
        out
    }

    #[test]
    fn receives_with_timestamps_and_truncation_in_order() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_rx_timestamps(server.as_raw_fd()).unwrap();
        enable_rxq_ovfl(server.as_raw_fd()).unwrap();
        let to = server.local_addr().unwrap();
        client.send_to(b"abc", to).unwrap();
        client.send_to(&[7u8; 100], to).unwrap(); // larger than the 64-byte buffers
        client.send_to(b"", to).unwrap();
        let mut pool = PacketPool::new(8, 64);
        let mut b = RecvBatch::new(4);
        b.refill(&mut pool);
        let got = recv_all(&mut b, &server, &mut pool, 3);
        assert_eq!(pool.meta(&got[0]).len, 3);
        assert_eq!(pool.buffer(&got[0]).payload(), b"abc");
        assert!(!pool.meta(&got[0]).truncated);
        assert_eq!(pool.meta(&got[0]).rx_clock, Clock::Kernel);
        assert_eq!(pool.meta(&got[0]).peer, client.local_addr().unwrap());
        assert!(pool.meta(&got[1]).truncated);
        assert_eq!(pool.meta(&got[1]).len, 100);
        assert_eq!(pool.meta(&got[2]).len, 0);
        // Kernel quirk: SO_RXQ_OVFL is only attached once the drop count is non-zero.
        assert_eq!(b.kernel_drops, None);
        assert_eq!(b.posted(), 4, "refilled from the pool");
        for s in got {
            pool.free(s);
        }
        b.release(&mut pool);
        assert_eq!(pool.stats().in_use, 0);
    }

    #[test]
    fn only_consumed_entries_are_repointed_and_a_short_pool_shrinks_the_ring() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        let mut pool = PacketPool::new(6, 64);
        let mut b = RecvBatch::new(4);
        b.refill(&mut pool);
        assert_eq!(b.repointed, 4);
        client.send_to(b"one", to).unwrap();
        let got = recv_all(&mut b, &server, &mut pool, 1);
        assert_eq!(b.repointed, 5, "one datagram, one entry re-pointed");
        // 2 free buffers left: 3 datagrams leave the ring one short.
        for m in [b"two", b"thr", b"fou"] {
            client.send_to(m, to).unwrap();
        }
        let more = recv_all(&mut b, &server, &mut pool, 3);
        let payloads: Vec<_> = more
            .iter()
            .map(|s| pool.buffer(s).payload().to_vec())
            .collect();
        assert_eq!(
            payloads,
            [b"two".to_vec(), b"thr".to_vec(), b"fou".to_vec()]
        );
        assert_eq!(b.posted(), 2);
        assert_eq!(pool.stats().exhaustion_events, 0, "no failed allocation");
        // The shrunken ring still receives into valid buffers.
        client.send_to(b"fiv", to).unwrap();
        let last = recv_all(&mut b, &server, &mut pool, 1);
        assert_eq!(pool.buffer(&last[0]).payload(), b"fiv");
        for s in got.into_iter().chain(more).chain(last) {
            pool.free(s);
        }
        b.release(&mut pool);
        assert_eq!(pool.stats().in_use, 0);
    }

    #[test]
    fn dontwait_on_empty_socket_is_eagain() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut pool = PacketPool::new(1, 64);
        let mut b = RecvBatch::new(1);
        b.refill(&mut pool);
        let e = b
            .recv(server.as_raw_fd(), &mut pool, RecvWait::DontWait)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EAGAIN));
        b.release(&mut pool);
    }
}
