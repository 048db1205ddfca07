//! One flow: a UDP socket with its own source port, the sequence numbers it
//! has used, its duplicate/reordering window and, in pingpong mode, its one
//! outstanding packet. The socket is connected to the target, so that an
//! ICMP port unreachable (nothing listens there) comes back to it as
//! ECONNREFUSED instead of being dropped silently. The kernel stamps every
//! reply on arrival (`SO_TIMESTAMPNS`) when it agrees to, so that a reply's
//! receive time does not depend on when the thread reads it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Socket, Type};

use crate::seq_window::SeqWindow;
use crate::sys;

/// Socket buffer sizes asked for: room for a few milliseconds of replies at
/// high rates, so that a briefly descheduled thread does not drop them.
/// Forced past net.core.rmem_max when allowed (root), else capped by it.
const SOCKET_BUFFER: usize = 4 << 20;

/// The pingpong packet waiting for its echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outstanding {
    /// Its sequence number.
    pub seq: u64,
    /// When it counts as timed out.
    pub deadline_ns: u64,
}

/// A flow.
#[derive(Debug)]
pub struct Flow {
    /// Flow id carried in every probe.
    pub id: u32,
    socket: Socket,
    /// Next sequence number to send (all lower ones were sent or attempted).
    pub next_seq: u64,
    /// Duplicate and reordering detection.
    pub window: SeqWindow,
    /// Pingpong: the packet in flight.
    pub outstanding: Option<Outstanding>,
    /// Pingpong: when the next packet may go (its intended send time).
    pub ready_ns: u64,
    /// Pingpong: intended send time of the last packet.
    pub last_intended_ns: u64,
    /// Whether the kernel stamps the replies on arrival (`SO_TIMESTAMPNS`).
    pub kernel_stamps: bool,
}

impl Flow {
    /// Opens the flow's socket: bound to an ephemeral port on the wildcard
    /// address of `target`'s family and connected to `target` (the kernel
    /// then reports ICMP port unreachable as ECONNREFUSED; datagrams from
    /// other addresses are not delivered).
    pub fn open(id: u32, target: SocketAddr) -> io::Result<Flow> {
        let (domain, any) = match target {
            SocketAddr::V4(_) => (Domain::IPV4, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            SocketAddr::V6(_) => (Domain::IPV6, IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        };
        let socket = Socket::new(domain, Type::DGRAM, Some(socket2::Protocol::UDP))?;
        // Larger buffers only help; a refusal is not worth failing over.
        if sys::force_buffer_sizes(socket.as_raw_fd(), SOCKET_BUFFER).is_err() {
            let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
            let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        }
        let kernel_stamps = sys::set_timestamps(socket.as_raw_fd()).is_ok();
        socket.bind(&SocketAddr::new(any, 0).into())?;
        socket.connect(&target.into())?;
        Ok(Flow {
            id,
            socket,
            next_seq: 0,
            window: SeqWindow::new(),
            outstanding: None,
            ready_ns: 0,
            last_intended_ns: 0,
            kernel_stamps,
        })
    }

    /// The socket's local address.
    #[cfg(test)]
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("flow socket has no IP address"))
    }

    /// Whether a reply with `seq` can be ours: we sent it.
    pub fn was_sent(&self, seq: u64) -> bool {
        seq < self.next_seq
    }
}

impl AsRawFd for Flow {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_flow_gets_its_own_port() {
        let t: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let a = Flow::open(0, t).unwrap();
        let b = Flow::open(1, t).unwrap();
        assert_ne!(
            a.local_addr().unwrap().port(),
            b.local_addr().unwrap().port()
        );
        assert!(!a.was_sent(0));
    }

    #[test]
    fn ipv6_target_gets_an_ipv6_socket() {
        let f = Flow::open(0, "[::1]:9".parse().unwrap()).unwrap();
        assert!(f.local_addr().unwrap().is_ipv6());
    }
}
