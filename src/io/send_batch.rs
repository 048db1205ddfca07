//! One `sendmmsg` call over pool buffers, with the outcome as a value.
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

/// Room for one `IP_PKTINFO` or `IPV6_PKTINFO` control message.
type CtrlBuf = [u64; 8];

/// Writes the packet-info control message that makes a reply leave from
/// `d.local` (the address the request was sent to) into `buf`; returns its
/// length.
#[allow(clippy::unnecessary_cast)]
fn write_pktinfo(buf: &mut CtrlBuf, d: &Destination) -> usize {
    *buf = [0; 8];
    // SAFETY: msghdr is a plain C struct; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_control = buf.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of::<CtrlBuf>() as _;
    // SAFETY: `msg` describes `buf` (64 bytes, 8-byte aligned), which holds
    // one cmsghdr plus the larger of in_pktinfo (12 bytes) and in6_pktinfo
    // (20 bytes): CMSG_FIRSTHDR is non-null and CMSG_DATA stays inside
    // `buf`; the data is written unaligned-safe.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        match d.local {
            IpAddr::V4(a) => {
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<libc::in_pktinfo>() as u32) as _;
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(a).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), info);
                libc::CMSG_SPACE(mem::size_of::<libc::in_pktinfo>() as u32) as usize
            }
            IpAddr::V6(a) => {
                (*c).cmsg_level = libc::IPPROTO_IPV6;
                (*c).cmsg_type = libc::IPV6_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<libc::in6_pktinfo>() as u32) as _;
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: a.octets(),
                    },
                    ipi6_ifindex: d.ifindex,
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), info);
                libc::CMSG_SPACE(mem::size_of::<libc::in6_pktinfo>() as u32) as usize
            }
        }
    }
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
            ctrls: vec![[0u64; 8]; cap].into_boxed_slice(),
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
            // Reply from the address the request was sent to.
            match dest {
                Some(d) => {
                    let n = write_pktinfo(&mut self.ctrls[k], &d);
                    h.msg_hdr.msg_control = self.ctrls[k].as_mut_ptr().cast();
                    h.msg_hdr.msg_controllen = n as _;
                }
                None => {
                    h.msg_hdr.msg_control = std::ptr::null_mut();
                    h.msg_hdr.msg_controllen = 0;
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
