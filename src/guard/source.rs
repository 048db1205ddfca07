//! Loop and reflection protection by source address and port.
//!
//! An echo server answers whoever the source address claims to be, so a
//! forged source aims it at another service. The classic loop is echo
//! (port 7) and chargen (19) answering each other forever (CVE-1999-0103).
//! Like OpenBSD's inetd (`dg_badinput`: source ports below 1024 and 2049)
//! and NetBSD's (`port_good_dg`: 7, 9, 13, 19, 37; multicast, 0/8 and 255/8
//! sources), this stage refuses:
//!
//! - source port 0, a source port below 1024 or 2049 (NFS): services, not
//!   clients, use those (`--allow-privileged-ports` lifts this rule for
//!   networks where clients really send from them);
//! - the server's own listening port (another echo server like this one);
//! - multicast, broadcast (255.255.255.255 and the rest of 255/8) and
//!   unspecified (0.0.0.0/8, `::`) sources, which no real client has.
//!
//! Subnet-directed broadcast sources cannot be told from unicast without
//! knowing the sender's netmask; they are not caught here.

use std::net::IpAddr;

use crate::packet::PacketBuffer;
use crate::process::{DropReason, Stage, Verdict};

use super::{bogus_v4, canonical};

/// NFS: refused along with the privileged ports, as OpenBSD's inetd does.
const NFS_PORT: u16 = 2049;

/// The source checks.
#[derive(Debug, Clone, Copy)]
pub struct SourceGuard {
    own_port: u16,
    allow_privileged: bool,
}

impl SourceGuard {
    /// Guards a server listening on `own_port`; `allow_privileged` lifts the
    /// privileged-port and NFS rule (never the own-port rule).
    pub fn new(own_port: u16, allow_privileged: bool) -> SourceGuard {
        SourceGuard {
            own_port,
            allow_privileged,
        }
    }

    /// Why a datagram from `ip`:`port` is refused, if it is.
    pub fn check(&self, ip: IpAddr, port: u16) -> Option<DropReason> {
        let bad_addr = match ip {
            IpAddr::V4(a) => a.is_multicast() || bogus_v4(a),
            IpAddr::V6(a) => a.is_multicast() || a.is_unspecified(),
        };
        if bad_addr {
            return Some(DropReason::BadSourceAddr);
        }
        let privileged = port < 1024 || port == NFS_PORT;
        if port == 0 || port == self.own_port || (privileged && !self.allow_privileged) {
            return Some(DropReason::BadSourcePort);
        }
        None
    }
}

impl Stage for SourceGuard {
    #[inline]
    fn process(&mut self, pkt: &mut PacketBuffer<'_>) -> Verdict {
        let peer = pkt.meta.peer;
        match self.check(canonical(&peer), peer.port()) {
            Some(r) => Verdict::Drop(r),
            None => Verdict::Echo,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_service_ports_own_port_and_bogus_sources() {
        let g = SourceGuard::new(8888, false);
        let port = Some(DropReason::BadSourcePort);
        let addr = Some(DropReason::BadSourceAddr);
        for p in [0, 7, 9, 13, 19, 37, 53, 123, 1023, 2049, 8888] {
            assert_eq!(g.check(ip("192.0.2.1"), p), port, "port {p}");
        }
        for p in [1024, 2048, 2050, 40000, 65535] {
            assert_eq!(g.check(ip("192.0.2.1"), p), None, "port {p}");
        }
        for a in [
            "224.0.0.1",
            "239.1.2.3",
            "255.255.255.255",
            "255.1.2.3",
            "0.0.0.0",
            "0.1.2.3",
            "ff02::1",
            "::",
        ] {
            assert_eq!(g.check(ip(a), 40000), addr, "{a}");
        }
        assert_eq!(g.check(ip("2001:db8::1"), 40000), None);
    }

    #[test]
    fn allow_privileged_lifts_only_the_port_rule() {
        let g = SourceGuard::new(8888, true);
        assert_eq!(g.check(ip("192.0.2.1"), 7), None);
        assert_eq!(g.check(ip("192.0.2.1"), 2049), None);
        assert_eq!(
            g.check(ip("192.0.2.1"), 8888),
            Some(DropReason::BadSourcePort)
        );
        assert_eq!(g.check(ip("192.0.2.1"), 0), Some(DropReason::BadSourcePort));
        assert_eq!(
            g.check(ip("224.0.0.1"), 40000),
            Some(DropReason::BadSourceAddr)
        );
    }
}
