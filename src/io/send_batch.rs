//! One `sendmmsg` call over pool buffers, with the outcome as a value.
//!
//! Each entry carries the packet info that makes the reply leave from the
//! request's destination address, and a buffer holding a GRO train goes
//! out as one `UDP_SEGMENT` (GSO) send that the kernel cuts into the
//! original datagrams.
//!
//! A [`SendBatch`] points its headers at the buffers it is given and makes
//! exactly one system call (`EINTR` is retried): the caller (the worker's
//! send backlog) decides what a short count or an errno means. A
//! [`SendFault`] can be installed to make the call accept fewer datagrams
//! than the kernel would, so partial sends are testable on loopback, where
//! the kernel never refuses one.

use std::io;
use std::mem;
use std::os::fd::RawFd;

use std::net::IpAddr;

use crate::packet::{Destination, PacketPool};
use crate::pool::Slot;

use super::addr;

/// Why a datagram could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// Socket send buffer full (`EAGAIN`/`EWOULDBLOCK`): backpressure.
    WouldBlock,
    /// The device queue refused it (`ENOBUFS`, visible with `IP_RECVERR`):
    /// backpressure.
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

    /// True for the errors that mean "not now" rather than "never".
    pub fn is_backpressure(self) -> bool {
        matches!(self, SendError::WouldBlock | SendError::NoBufs)
    }
}

/// Fault injection: every call offers at most `max_per_call` datagrams to
/// the kernel, and every `fail_every`-th call (if non-zero) fails with
/// `errno` before sending anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendFault {
    /// Most datagrams one call may send.
    pub max_per_call: usize,
    /// Fail every Nth call (0: never).
    pub fail_every: u64,
    /// The errno of a failed call.
    pub errno: i32,
}

/// Room for one `IP_PKTINFO` or `IPV6_PKTINFO` control message and one
/// `UDP_SEGMENT` (u16) after it.
type CtrlBuf = [u64; 12];

/// Writes the control messages of one reply into `buf` and returns their
/// length: the packet info that makes it leave from `dest.local` (the
/// address the request was sent to), and with `segment` > 0 a
/// `UDP_SEGMENT` that makes the kernel cut the buffer into datagrams of
/// that size (a GSO train, the echo of a GRO train).
#[allow(clippy::unnecessary_cast)]
fn write_ctrl(buf: &mut CtrlBuf, dest: Option<&Destination>, segment: u16) -> usize {
    *buf = [0; 12];
    let base = buf.as_mut_ptr().cast::<u8>();
    let mut used = 0usize;
    // SAFETY: `buf` is 96 bytes, 8-byte aligned; each message is written at
    // a CMSG_SPACE-aligned offset, and the two together (at most
    // CMSG_SPACE(20) + CMSG_SPACE(2) = 40 + 24 bytes) stay inside it; data
    // is written unaligned-safe.
    unsafe {
        let mut put = |level: i32, ty: i32, data: &[u8]| {
            let c = base.add(used).cast::<libc::cmsghdr>();
            (*c).cmsg_level = level;
            (*c).cmsg_type = ty;
            (*c).cmsg_len = libc::CMSG_LEN(data.len() as u32) as _;
            let dst = libc::CMSG_DATA(c);
            std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len());
            used += libc::CMSG_SPACE(data.len() as u32) as usize;
        };
        match dest.map(|d| (d.local, d.ifindex)) {
            Some((IpAddr::V4(a), _)) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(a).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                put(libc::IPPROTO_IP, libc::IP_PKTINFO, as_bytes(&info));
            }
            Some((IpAddr::V6(a), ifindex)) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: a.octets(),
                    },
                    ipi6_ifindex: ifindex,
                };
                put(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, as_bytes(&info));
            }
            None => {}
        }
        if segment > 0 {
            put(libc::SOL_UDP, libc::UDP_SEGMENT, &segment.to_ne_bytes());
        }
    }
    used
}

/// The bytes of a plain C struct (no padding read: both pktinfo structs
/// are padding-free).
fn as_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: `v` is a live `T` of `size_of::<T>()` bytes; the callers pass
    // only in_pktinfo and in6_pktinfo, which have no padding.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), mem::size_of::<T>()) }
}

/// Sends `buf` to `to` as one GSO train: the kernel cuts it into datagrams
/// of `segment` bytes (the last may be shorter), with one `sendmsg`. At
/// most 64 KiB and (on Linux) 64 segments. For tests and tools that need
/// a sender of trains.
pub fn send_train(
    sock: &std::net::UdpSocket,
    to: std::net::SocketAddr,
    buf: &[u8],
    segment: u16,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut name = addr::zeroed_storage();
    let namelen = addr::encode(&to, &mut name);
    let mut ctrl: CtrlBuf = [0; 12];
    let clen = write_ctrl(&mut ctrl, None, segment);
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = namelen;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctrl.as_mut_ptr().cast();
    msg.msg_controllen = clen as _;
    // SAFETY: `msg` points at `name`, `iov` (describing `buf`, only read by
    // the kernel) and `ctrl`, all live for the call.
    syscall!(sendmsg(sock.as_raw_fd(), &msg, 0)).map(|n| n as usize)
}

/// Pre-allocated `mmsghdr` arrays for one worker's batched send.
pub struct SendBatch {
    cap: usize,
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_storage]>,
    ctrls: Box<[CtrlBuf]>,
    fault: Option<SendFault>,
    calls: u64,
}

// SAFETY: the raw pointers inside the headers are rewritten before every
// call and point only into this batch's arrays or into the pool passed to
// that call; nothing is shared between threads.
unsafe impl Send for SendBatch {}

impl SendBatch {
    /// Arrays for up to `cap` datagrams per call.
    pub fn new(cap: usize) -> SendBatch {
        let cap = cap.max(1);
        // SAFETY: mmsghdr is a plain C struct for which all-zero is valid.
        let zero_hdr: libc::mmsghdr = unsafe { mem::zeroed() };
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        SendBatch {
            cap,
            hdrs: vec![zero_hdr; cap].into_boxed_slice(),
            iovs: vec![zero_iov; cap].into_boxed_slice(),
            names: vec![addr::zeroed_storage(); cap].into_boxed_slice(),
            ctrls: vec![[0u64; 12]; cap].into_boxed_slice(),
            fault: None,
            calls: 0,
        }
    }

    /// Datagrams per call at most.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Installs (or clears) fault injection.
    pub fn set_fault(&mut self, fault: Option<SendFault>) {
        self.fault = fault;
    }

    /// System calls made so far (including failed ones).
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Sends the payloads behind `slots` (at most [`capacity`](Self::capacity))
    /// to each buffer's sender with one `sendmmsg(MSG_DONTWAIT)`. Returns how
    /// many the kernel took, in order (`Ok(m)`, `m` may be short), or the
    /// errno that refused the first one.
    pub fn send(&mut self, fd: RawFd, pool: &mut PacketPool, slots: &[Slot]) -> Result<usize, i32> {
        let mut n = slots.len().min(self.cap);
        if n == 0 {
            return Ok(0);
        }
        if let Some(f) = self.fault {
            if f.fail_every > 0 && (self.calls + 1) % f.fail_every == 0 {
                self.calls += 1;
                return Err(f.errno);
            }
            n = n.min(f.max_per_call.max(1));
        }
        let size = pool.packet_size();
        for (k, slot) in slots.iter().take(n).enumerate() {
            let meta = pool.meta(slot);
            let (len, peer, dest) = (meta.len.min(size), meta.peer, meta.dest);
            let segment = if (meta.segment as usize) < len {
                meta.segment
            } else {
                0
            };
            let namelen = addr::encode(&peer, &mut self.names[k]);
            self.iovs[k] = libc::iovec {
                iov_base: pool.data_ptr(slot).cast(),
                iov_len: len,
            };
            let h = &mut self.hdrs[k];
            h.msg_len = 0;
            h.msg_hdr.msg_name = (&mut self.names[k] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = namelen;
            h.msg_hdr.msg_iov = &mut self.iovs[k];
            h.msg_hdr.msg_iovlen = 1;
            // Reply from the address the request was sent to; a train as
            // one GSO send.
            match write_ctrl(&mut self.ctrls[k], dest.as_ref(), segment) {
                0 => {
                    h.msg_hdr.msg_control = std::ptr::null_mut();
                    h.msg_hdr.msg_controllen = 0;
                }
                n => {
                    h.msg_hdr.msg_control = self.ctrls[k].as_mut_ptr().cast();
                    h.msg_hdr.msg_controllen = n as _;
                }
            }
            h.msg_hdr.msg_flags = 0;
        }
        loop {
            self.calls += 1;
            // SAFETY: headers 0..n point at pool buffers (the caller holds
            // `&mut pool`, so nothing else touches them) of the lengths set
            // above, at this batch's own address storage and, where set, at
            // its own control buffers.
            let r = syscall!(sendmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT
            ));
            match r {
                Ok(m) => return Ok(m as usize),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(super::errno(&e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn filled(pool: &mut PacketPool, peer: std::net::SocketAddr, msgs: &[&[u8]]) -> Vec<Slot> {
        msgs.iter()
            .map(|m| {
                let s = pool.alloc().unwrap();
                let b = pool.buffer(&s);
                b.data[..m.len()].copy_from_slice(m);
                b.meta.len = m.len();
                b.meta.peer = peer;
                s
            })
            .collect()
    }

    #[test]
    fn sends_in_order_and_a_fault_makes_it_short_or_fail() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = client.local_addr().unwrap();
        let mut pool = PacketPool::new(8, 64);
        let slots = filled(&mut pool, peer, &[b"a", b"bb", b"", b"dddd"]);
        let mut b = SendBatch::new(8);
        b.set_fault(Some(SendFault {
            max_per_call: 3,
            fail_every: 2,
            errno: libc::EAGAIN,
        }));
        let fd = server.as_raw_fd();
        assert_eq!(b.send(fd, &mut pool, &slots), Ok(3));
        assert_eq!(b.send(fd, &mut pool, &slots[3..]), Err(libc::EAGAIN));
        assert_eq!(b.send(fd, &mut pool, &slots[3..]), Ok(1));
        assert_eq!(b.calls(), 3);
        let mut buf = [0u8; 16];
        for want in [&b"a"[..], b"bb", b"", b"dddd"] {
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], want);
            assert_eq!(from, server.local_addr().unwrap());
        }
        for s in slots {
            pool.free(s);
        }
    }

    #[test]
    fn send_errors_are_classified() {
        assert_eq!(SendError::from_errno(libc::EAGAIN), SendError::WouldBlock);
        assert_eq!(SendError::from_errno(libc::ENOBUFS), SendError::NoBufs);
        assert!(SendError::NoBufs.is_backpressure());
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
        assert!(!SendError::Other.is_backpressure());
    }
}
