//! One captured datagram ([`Record`]) and its encoding as a raw IP packet
//! (pcap linktype RAW): an IPv4 or IPv6 header and a UDP header built by
//! `etherparse`, with correct IPv4 header and UDP checksums, then the
//! payload.
//!
//! Records are allocated once (with room for a whole `--packet-size`
//! datagram) and recycled, so filling one on a worker never allocates.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::PacketBuilder;

/// IP hop limit written into every synthetic header (the real one is not
/// known for echoes, and not asked for on received datagrams).
pub const TTL: u8 = 64;

/// Bytes of IP and UDP header at most in front of a payload: IPv6 (40) + UDP (8).
pub const MAX_HEADERS: usize = 48;

/// A datagram on its way to the capture file.
#[derive(Debug, Clone)]
pub struct Record {
    /// When it was received (or, for an echo, when the reply was made),
    /// nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// The UDP payload (capacity fixed at creation: never grows).
    pub data: Vec<u8>,
}

impl Record {
    /// An empty record with room for `capacity` payload bytes.
    pub fn with_capacity(capacity: usize) -> Record {
        let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
        Record {
            ts_ns: 0,
            src: any,
            dst: any,
            data: Vec::with_capacity(capacity),
        }
    }

    /// Fills the record; false (record unchanged) if the payload does not
    /// fit its capacity (so filling never allocates).
    pub fn fill(&mut self, ts_ns: u64, src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> bool {
        if payload.len() > self.data.capacity() {
            return false;
        }
        self.data.clear();
        self.data.extend_from_slice(payload);
        self.ts_ns = ts_ns;
        self.src = src;
        self.dst = dst;
        true
    }

    /// Appends the record as one raw IP packet (IP + UDP headers + payload)
    /// to `out`. Fails only for a payload too large for one UDP datagram.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
        let (sport, dport) = (self.src.port(), self.dst.port());
        let builder = match ip_pair(self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), TTL),
            (s, d) => PacketBuilder::ipv6(v6(s).octets(), v6(d).octets(), TTL),
        }
        .udp(sport, dport);
        builder
            .write(out, &self.data)
            .map_err(|e| format!("cannot encode a {}-byte datagram: {e}", self.data.len()))
    }
}

/// The address as IPv6 (IPv4 mapped).
fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// One family for both ends of a packet: IPv4 when both are IPv4 (or
/// IPv4-mapped IPv6, as on a dual-stack `::` socket, or the unspecified
/// address of the other family, as from an unspecified bound address);
/// otherwise IPv6 with IPv4 addresses mapped.
pub fn ip_pair(src: IpAddr, dst: IpAddr) -> (IpAddr, IpAddr) {
    let as_v4 = |a: IpAddr| match a {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) if a.is_unspecified() => Some(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    };
    let v4_side = |a: IpAddr| matches!(a, IpAddr::V4(_)) || v6(a).to_ipv4_mapped().is_some();
    match (as_v4(src), as_v4(dst)) {
        (Some(s), Some(d)) if v4_side(src) || v4_side(dst) => (IpAddr::V4(s), IpAddr::V4(d)),
        _ => (IpAddr::V6(v6(src)), IpAddr::V6(v6(dst))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    fn parse(bytes: &[u8]) -> (IpAddr, IpAddr, u16, u16, Vec<u8>, bool) {
        let p = SlicedPacket::from_ip(bytes).expect("parses back");
        let (s, d, ok) = match p.net.expect("ip") {
            NetSlice::Ipv4(v4) => {
                let h = v4.header().to_header();
                let ok = h.header_checksum == h.calc_header_checksum();
                (h.source.into(), h.destination.into(), ok)
            }
            NetSlice::Ipv6(v6) => {
                let h = v6.header();
                (h.source_addr().into(), h.destination_addr().into(), true)
            }
            _ => panic!("not IP"),
        };
        match p.transport.expect("udp") {
            TransportSlice::Udp(u) => {
                let h = u.to_header();
                let sum = match (s, d) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => h
                        .calc_checksum_ipv4_raw(s.octets(), d.octets(), u.payload())
                        .unwrap(),
                    (IpAddr::V6(s), IpAddr::V6(d)) => h
                        .calc_checksum_ipv6_raw(s.octets(), d.octets(), u.payload())
                        .unwrap(),
                    _ => unreachable!(),
                };
                let ok = ok && sum == h.checksum && h.checksum != 0;
                (
                    s,
                    d,
                    h.source_port,
                    h.destination_port,
                    u.payload().to_vec(),
                    ok,
                )
            }
            _ => panic!("not UDP"),
        }
    }

    fn record(src: &str, dst: &str, payload: &[u8]) -> Record {
        let mut r = Record::with_capacity(64);
        assert!(r.fill(7, src.parse().unwrap(), dst.parse().unwrap(), payload));
        r
    }

    #[test]
    fn ipv4_and_ipv6_parse_back_with_valid_checksums() {
        for (src, dst) in [
            ("192.0.2.1:40000", "198.51.100.7:8888"),
            ("[2001:db8::1]:40000", "[2001:db8::2]:8888"),
        ] {
            let r = record(src, dst, b"hello capture");
            let mut out = Vec::new();
            r.encode(&mut out).unwrap();
            let (s, d, sp, dp, payload, sums_ok) = parse(&out);
            assert_eq!(SocketAddr::new(s, sp), r.src);
            assert_eq!(SocketAddr::new(d, dp), r.dst);
            assert_eq!(payload, b"hello capture");
            assert!(sums_ok, "checksums of {src} -> {dst}");
        }
    }

    #[test]
    fn mapped_and_unspecified_addresses_become_ipv4() {
        let r = record("[::ffff:192.0.2.1]:5000", "[::]:8888", b"x");
        let mut out = Vec::new();
        r.encode(&mut out).unwrap();
        let (s, d, ..) = parse(&out);
        assert_eq!(s, "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(d, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        // A real IPv6 peer with an IPv4 local end: IPv6, the IPv4 end mapped.
        let (s, d) = ip_pair("2001:db8::1".parse().unwrap(), "192.0.2.9".parse().unwrap());
        assert_eq!(s, "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(d, "::ffff:192.0.2.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn fill_refuses_what_does_not_fit_and_never_grows() {
        let mut r = Record::with_capacity(4);
        assert!(!r.fill(1, r.src, r.dst, b"too long"));
        assert!(r.data.is_empty());
        assert!(r.fill(1, r.src, r.dst, b"four"));
        assert_eq!(r.data.capacity(), 4);
        let mut out = Vec::new();
        r.encode(&mut out).unwrap();
        assert_eq!(out.len(), 20 + 8 + 4);
    }
}
