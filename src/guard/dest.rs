//! Refuses datagrams that were not sent to one of this host's unicast
//! addresses.
//!
//! A datagram sent to a subnet's broadcast address or to a multicast group
//! (224.0.0.1 reaches every host of a LAN) would otherwise be answered by
//! every echo server on the network: one forged datagram, many replies to
//! the victim. The kernel reports each datagram's destination
//! (`IP_PKTINFO`: the header's destination and the local address a reply
//! would come from; `IPV6_PKTINFO`). A destination that is multicast,
//! limited broadcast, or differs from that local address (a subnet
//! broadcast: the kernel then names the interface's own address) is
//! dropped as `bad_dest`.

use std::net::IpAddr;

use crate::packet::{Destination, PacketBuffer};
use crate::process::{DropReason, Stage, Verdict};

/// The destination check (on by default, with the loop guard).
#[derive(Debug, Clone, Copy, Default)]
pub struct DestGuard;

impl DestGuard {
    /// True when a datagram with this destination may be answered.
    pub fn unicast_to_us(d: &Destination) -> bool {
        let group = match d.addr {
            IpAddr::V4(a) => a.is_multicast() || a.is_broadcast(),
            IpAddr::V6(a) => a.is_multicast(),
        };
        !group && d.addr == d.local
    }
}

impl Stage for DestGuard {
    #[inline]
    fn process(&mut self, pkt: &mut PacketBuffer<'_>) -> Verdict {
        match &pkt.meta.dest {
            Some(d) if !DestGuard::unicast_to_us(d) => Verdict::Drop(DropReason::BadDest),
            _ => Verdict::Echo,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(addr: &str, local: &str) -> Destination {
        Destination {
            addr: addr.parse().unwrap(),
            local: local.parse().unwrap(),
            ifindex: 1,
        }
    }

    #[test]
    fn only_unicast_to_a_local_address_passes() {
        assert!(DestGuard::unicast_to_us(&d("127.0.0.2", "127.0.0.2")));
        assert!(DestGuard::unicast_to_us(&d("2001:db8::1", "2001:db8::1")));
        assert!(!DestGuard::unicast_to_us(&d("224.0.0.1", "198.18.0.1")));
        assert!(!DestGuard::unicast_to_us(&d(
            "255.255.255.255",
            "198.18.0.1"
        )));
        assert!(
            !DestGuard::unicast_to_us(&d("198.18.0.3", "198.18.0.1")),
            "subnet broadcast"
        );
        assert!(!DestGuard::unicast_to_us(&d("ff02::1", "ff02::1")));
    }
}
