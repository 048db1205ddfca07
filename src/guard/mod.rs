//! Filter stages that make the server safe to expose, run before any reply
//! stage on every datagram (see `Pipeline`):
//!
//! - [`source::SourceGuard`]: loop and reflection protection by source
//!   (privileged and NFS source ports, the server's own port, multicast,
//!   broadcast and unspecified sources), on by default as in the BSD inetds;
//! - [`dest::DestGuard`]: datagrams sent to a broadcast or multicast
//!   destination (one datagram would make every server on a LAN answer);
//! - [`loop_breaker::LoopBreaker`]: a peer that keeps bouncing our reply
//!   back (another echo service) stops being answered for a while;
//! - [`allow::AllowList`]: `--allow CIDR`, echo only to these networks;
//! - [`rate::RateLimit`]: `--rate-limit PPS` per source prefix, in a fixed
//!   table allocated once ([`rate::RateTable`]), shared by the workers
//!   without a lock.
//!
//! Each refuses with its own [`DropReason`](crate::process::DropReason), so
//! the statistics line and the report say which rule dropped what.

pub mod allow;
pub mod dest;
pub mod loop_breaker;
pub mod rate;
pub mod source;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The sender's address with IPv4-mapped IPv6 (`::ffff:a.b.c.d`, what a
/// dual-stack socket reports for IPv4 senders) turned back into IPv4, so
/// every rule sees one address family per sender.
pub fn canonical(peer: &SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// True for IPv4 addresses no datagram may come from: unspecified and the
/// rest of 0/8 ("this network"), limited broadcast and the rest of 255/8.
pub fn bogus_v4(a: Ipv4Addr) -> bool {
    let first = a.octets()[0];
    first == 0 || first == 255
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_become_ipv4() {
        let p: SocketAddr = "[::ffff:192.0.2.1]:9".parse().unwrap();
        assert_eq!(canonical(&p), "192.0.2.1".parse::<IpAddr>().unwrap());
        let p: SocketAddr = "[2001:db8::1]:9".parse().unwrap();
        assert!(canonical(&p).is_ipv6());
    }
}
