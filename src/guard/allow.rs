//! `--allow CIDR`: echo only to senders inside these networks.
//!
//! Networks are `ipnet::IpNet` (a well-kept crate for CIDR parsing and
//! containment). IPv4 senders on a dual-stack socket (`::ffff:a.b.c.d`)
//! match IPv4 networks.

use ipnet::IpNet;

use crate::packet::PacketBuffer;
use crate::process::{DropReason, Stage, Verdict};

use super::canonical;

/// The allowed networks (an empty list would refuse everything, so the
/// server only adds this stage when `--allow` was given).
#[derive(Debug, Clone)]
pub struct AllowList {
    nets: Vec<IpNet>,
}

impl AllowList {
    /// Allows exactly these networks.
    pub fn new(nets: Vec<IpNet>) -> AllowList {
        AllowList { nets }
    }

    /// True when `ip` is inside one of the networks.
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

impl Stage for AllowList {
    #[inline]
    fn process(&mut self, pkt: &mut PacketBuffer<'_>) -> Verdict {
        if self.allows(canonical(&pkt.meta.peer)) {
            Verdict::Echo
        } else {
            Verdict::Drop(DropReason::NotAllowed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_by_network_and_maps_ipv4_senders() {
        let a = AllowList::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ]);
        assert!(a.allows("127.1.2.3".parse().unwrap()));
        assert!(!a.allows("128.0.0.1".parse().unwrap()));
        assert!(a.allows("2001:db8::5".parse().unwrap()));
        assert!(!a.allows("2001:db9::5".parse().unwrap()));
        let peer = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        assert!(a.allows(canonical(&peer)));
    }
}
