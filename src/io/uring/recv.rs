//! What multishot `recvmsg` leaves in a provided buffer, and how it is
//! read back into a [`PacketMeta`].
//!
//! The kernel lays each datagram out in the buffer it picked as:
//!
//! ```text
//! | io_uring_recvmsg_out (16) | name (NAME_LEN) | control (CONTROL_LEN) | payload ... |
//! ```
//!
//! The name and control areas have the fixed sizes given in the request's
//! `msghdr` ([`template`]), so the payload always starts at [`HEADROOM`]:
//! the pool is built with that headroom and its payload views start after
//! it, which keeps `--packet-size` the largest datagram echoed.
//! `io_uring_recvmsg_out` holds the name's and control's real lengths, the
//! datagram's real length (the request carries `MSG_TRUNC`, so it is the
//! full length even when the buffer was too small) and the `recvmsg` flags
//! (`MSG_TRUNC` when it was).

use std::mem;
use std::net::SocketAddr;

use crate::io::addr;
use crate::io::recv_batch::{parse_cmsgs, train_segment};
use crate::packet::{Clock, PacketMeta};

/// `sizeof(struct io_uring_recvmsg_out)`: namelen, controllen, payloadlen, flags.
pub const OUT_LEN: usize = 16;
/// Room for the sender's address (`sockaddr_in6` is 28 bytes), 8-aligned.
pub const NAME_LEN: usize = 32;
/// Room for `SCM_TIMESTAMPNS` (32), `SO_RXQ_OVFL` (24), `IPV6_PKTINFO`
/// (40), `UDP_GRO` (24) and `IPV6_HOPLIMIT` or `IP_TTL` (24) control
/// messages: 144 bytes, with room to spare.
pub const CONTROL_LEN: usize = 160;
/// Bytes before the payload in every provided buffer.
pub const HEADROOM: usize = OUT_LEN + NAME_LEN + CONTROL_LEN;

/// The `msghdr` a multishot `recvmsg` request points at: only the name and
/// control lengths matter (the buffers come from the ring).
pub fn template() -> libc::msghdr {
    // SAFETY: msghdr is a plain C struct; all-zero is valid.
    let mut m: libc::msghdr = unsafe { mem::zeroed() };
    m.msg_namelen = NAME_LEN as libc::socklen_t;
    m.msg_controllen = CONTROL_LEN as _;
    m
}

/// One received datagram as the kernel described it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Sender, when the name decodes.
    pub peer: Option<SocketAddr>,
    /// The datagram's full length.
    pub len: usize,
    /// Larger than the payload room (`MSG_TRUNC`).
    pub truncated: bool,
    /// `SCM_TIMESTAMPNS`, ns since the epoch.
    pub rx_ns: Option<u64>,
    /// `SO_RXQ_OVFL`, when attached.
    pub ovfl: Option<u32>,
    /// `IP_PKTINFO` / `IPV6_PKTINFO`.
    pub dest: Option<crate::packet::Destination>,
    /// `UDP_GRO`: the segment size of a coalesced train.
    pub gro: Option<u16>,
    /// `IP_TTL` / `IPV6_HOPLIMIT`.
    pub ttl: Option<u8>,
}

impl Received {
    /// Writes what was received into `meta` (the wall clock `wall` when the
    /// kernel gave no timestamp).
    pub fn fill(&self, meta: &mut PacketMeta, wall: u64) {
        meta.len = self.len;
        meta.truncated = self.truncated;
        meta.peer = self.peer.unwrap_or(meta.peer);
        meta.dest = self.dest;
        meta.segment = train_segment(self.len, self.gro);
        meta.ttl = self.ttl;
        (meta.rx_ns, meta.rx_clock) = match self.rx_ns {
            Some(ns) => (ns, Clock::Kernel),
            None => (wall, Clock::User),
        };
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads the header, name and control messages of a buffer's `head`
/// (its first [`HEADROOM`] bytes). `None` if `head` is too short.
#[allow(clippy::unnecessary_cast)]
pub fn parse(head: &[u8]) -> Option<Received> {
    if head.len() < HEADROOM {
        return None;
    }
    let namelen = (u32_at(head, 0) as usize).min(NAME_LEN);
    let controllen = (u32_at(head, 4) as usize).min(CONTROL_LEN);
    let len = u32_at(head, 8) as usize;
    let flags = u32_at(head, 12) as i32;

    let mut ss = addr::zeroed_storage();
    let name = &head[OUT_LEN..OUT_LEN + namelen];
    // SAFETY: `namelen <= NAME_LEN (32) < size_of::<sockaddr_storage>()`
    // bytes are copied from a slice of that length into our own storage.
    unsafe {
        std::ptr::copy_nonoverlapping(
            name.as_ptr(),
            (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(),
            namelen,
        )
    };
    let peer = addr::decode(&ss, namelen as libc::socklen_t);

    // The control messages, copied to an 8-aligned buffer for CMSG_*.
    let mut control = [0u64; CONTROL_LEN / 8];
    let start = OUT_LEN + NAME_LEN;
    for (i, chunk) in head[start..start + controllen].chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        control[i] = u64::from_ne_bytes(w);
    }
    let mut msg = template();
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = controllen as _;
    let c = parse_cmsgs(&msg);
    Some(Received {
        peer,
        len,
        truncated: flags & libc::MSG_TRUNC != 0,
        rx_ns: c.ts,
        ovfl: c.ovfl,
        dest: c.dest,
        gro: c.gro,
        ttl: c.ttl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer head as the kernel writes it for a 100-byte datagram from
    /// 10.1.2.3:4000 cut to fit, with one SO_RXQ_OVFL message.
    #[test]
    fn header_name_and_control_are_read_back() {
        let mut head = vec![0u8; HEADROOM];
        head[0..4].copy_from_slice(&16u32.to_ne_bytes()); // sockaddr_in
        head[4..8].copy_from_slice(&24u32.to_ne_bytes()); // CMSG_SPACE(4)
        head[8..12].copy_from_slice(&100u32.to_ne_bytes());
        head[12..16].copy_from_slice(&libc::MSG_TRUNC.to_ne_bytes());
        head[16..18].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        head[18..20].copy_from_slice(&4000u16.to_be_bytes());
        head[20..24].copy_from_slice(&[10, 1, 2, 3]);
        let c = OUT_LEN + NAME_LEN;
        head[c..c + 8].copy_from_slice(&20u64.to_ne_bytes()); // cmsg_len
        head[c + 8..c + 12].copy_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        head[c + 12..c + 16].copy_from_slice(&libc::SO_RXQ_OVFL.to_ne_bytes());
        head[c + 16..c + 20].copy_from_slice(&7u32.to_ne_bytes());
        let r = parse(&head).unwrap();
        assert_eq!(r.peer, Some("10.1.2.3:4000".parse().unwrap()));
        assert_eq!((r.len, r.truncated), (100, true));
        assert_eq!((r.ovfl, r.rx_ns, r.dest), (Some(7), None, None));
        assert_eq!(parse(&head[..HEADROOM - 1]), None);
    }
}
