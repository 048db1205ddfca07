//! `--replay FILE.pcap`: reading the datagrams to replay out of a capture.
//!
//! Any classic pcap file (not pcapng) whose linktype is RAW (101), IPv4
//! (228), IPv6 (229) or Ethernet (1), e.g. one written by `server
//! --capture`. Each packet that is an unfragmented IPv4 or IPv6 UDP
//! datagram, whole (not cut by the snap length), is a candidate; anything
//! else is skipped and counted.
//!
//! Direction: the first UDP datagram in the file names the server (its
//! destination address and port); the datagrams sent to that endpoint are
//! replayed, the others (the server's replies, e.g. `--capture-echoes`
//! records, or other traffic) are skipped. Each distinct source endpoint
//! of a replayed datagram becomes one flow (its own local socket).
//!
//! The whole file is read into memory and parsed by `pcap-file` and
//! `etherparse`, which check every length against the bytes there are:
//! a hostile or damaged file gives an error naming the file, never a panic.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::pcap::PcapParser;
use pcap_file::DataLink;

/// One datagram to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Capture time, nanoseconds (only differences matter).
    pub ts_ns: u64,
    /// Which flow (distinct source endpoint in the file), from 0.
    pub flow: usize,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// What a capture holds for replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capture {
    /// The datagrams to the server, in file order.
    pub datagrams: Vec<Datagram>,
    /// The server endpoint (the first datagram's destination).
    pub server: Option<SocketAddr>,
    /// Distinct source endpoints of the replayed datagrams.
    pub flows: usize,
    /// Packets in the file.
    pub packets: u64,
    /// UDP datagrams in another direction (not to the server).
    pub other_direction: u64,
    /// Packets that are not whole, unfragmented IP/UDP datagrams.
    pub not_udp: u64,
}

/// Reads `path`; every error names the file and what is wrong.
pub fn read(path: &Path) -> Result<Capture, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read --replay file {}: {e}", path.display()))?;
    let cap = parse(&bytes).map_err(|e| format!("--replay file {}: {e}", path.display()))?;
    if cap.datagrams.is_empty() {
        return Err(format!(
            "--replay file {}: no IPv4 or IPv6 UDP datagrams to replay ({} packets, {} not UDP)",
            path.display(),
            cap.packets,
            cap.not_udp
        ));
    }
    Ok(cap)
}

/// Parses a pcap file's bytes.
pub fn parse(bytes: &[u8]) -> Result<Capture, String> {
    if bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        return Err("this is a pcapng file; replay reads classic pcap (convert it with `editcap -F pcap IN OUT`)".into());
    }
    let (mut rest, parser) =
        PcapParser::new(bytes).map_err(|e| format!("not a pcap file ({e})"))?;
    let link = parser.header().datalink;
    if !matches!(
        link,
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 | DataLink::ETHERNET
    ) {
        return Err(format!(
            "unsupported linktype {link:?} ({}); replay reads RAW (101), IPV4 (228), IPV6 (229) or ETHERNET (1) captures",
            u32::from(link)
        ));
    }
    let mut cap = Capture::default();
    let mut flows: HashMap<SocketAddr, usize> = HashMap::new();
    while !rest.is_empty() {
        let (next, pkt) = parser
            .next_packet(rest)
            .map_err(|e| format!("packet {} is damaged or cut short ({e})", cap.packets + 1))?;
        rest = next;
        cap.packets += 1;
        let whole = pkt.data.len() as u64 == u64::from(pkt.orig_len);
        let udp = if link == DataLink::ETHERNET {
            SlicedPacket::from_ethernet(&pkt.data)
        } else {
            SlicedPacket::from_ip(&pkt.data)
        };
        let Some((src, dst, payload)) = udp.ok().filter(|_| whole).and_then(|p| udp_parts(&p))
        else {
            cap.not_udp += 1;
            continue;
        };
        let server = *cap.server.get_or_insert(dst);
        if dst != server {
            cap.other_direction += 1;
            continue;
        }
        let n = flows.len();
        let flow = *flows.entry(src).or_insert(n);
        let ts = pkt.timestamp;
        cap.datagrams.push(Datagram {
            ts_ns: ts.as_secs().saturating_mul(1_000_000_000) + u64::from(ts.subsec_nanos()),
            flow,
            payload: payload.to_vec(),
        });
    }
    cap.flows = flows.len();
    Ok(cap)
}

/// Source, destination and payload of an unfragmented UDP datagram.
fn udp_parts<'a>(p: &SlicedPacket<'a>) -> Option<(SocketAddr, SocketAddr, &'a [u8])> {
    let (s, d): (IpAddr, IpAddr) = match p.net.as_ref()? {
        NetSlice::Ipv4(v4) => (
            v4.header().source_addr().into(),
            v4.header().destination_addr().into(),
        ),
        NetSlice::Ipv6(v6) => (
            v6.header().source_addr().into(),
            v6.header().destination_addr().into(),
        ),
        _ => return None,
    };
    match p.transport.as_ref()? {
        TransportSlice::Udp(u) => Some((
            SocketAddr::new(s, u.source_port()),
            SocketAddr::new(d, u.destination_port()),
            u.payload(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    use std::time::Duration;

    fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4(src, dst, 64)
            .udp(sport, dport)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    fn file(link: DataLink, packets: &[Vec<u8>]) -> Vec<u8> {
        let header = PcapHeader {
            datalink: link,
            ..PcapHeader::default()
        };
        let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
        for (i, p) in packets.iter().enumerate() {
            let ts = Duration::from_millis(10 * i as u64);
            w.write_packet(&PcapPacket::new(ts, p.len() as u32, p))
                .unwrap();
        }
        w.into_writer()
    }

    #[test]
    fn requests_are_kept_replies_skipped_and_flows_told_apart() {
        let (c1, c2, srv) = ([10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 9]);
        let bytes = file(
            DataLink::RAW,
            &[
                udp(c1, 4000, srv, 7, b"one"),
                udp(srv, 7, c1, 4000, b"one"),
                udp(c2, 5000, srv, 7, b"two"),
                vec![0x45, 0, 0],
                udp(c1, 4000, srv, 7, b"three"),
            ],
        );
        let cap = parse(&bytes).unwrap();
        let got: Vec<_> = cap
            .datagrams
            .iter()
            .map(|d| (d.flow, &d.payload[..]))
            .collect();
        assert_eq!(got, [(0, &b"one"[..]), (1, b"two"), (0, b"three")]);
        assert_eq!(cap.datagrams[2].ts_ns - cap.datagrams[0].ts_ns, 40_000_000);
        assert_eq!(
            (cap.packets, cap.other_direction, cap.not_udp, cap.flows),
            (5, 1, 1, 2)
        );
        assert_eq!(cap.server, Some("10.0.0.9:7".parse().unwrap()));
    }

    #[test]
    fn hostile_files_give_errors_not_panics() {
        let good = file(
            DataLink::RAW,
            &[udp([1, 1, 1, 1], 1, [2, 2, 2, 2], 2, b"x")],
        );
        // Cut anywhere inside: header or packet.
        for cut in [0, 3, 23, good.len() - 1] {
            let e = parse(&good[..cut]);
            assert!(e.is_err() || cut == 0, "cut at {cut}: {e:?}");
        }
        assert!(parse(&good[..good.len() - 1])
            .unwrap_err()
            .contains("packet 1"));
        assert!(parse(b"garbage that is no pcap at all")
            .unwrap_err()
            .contains("not a pcap"));
        assert!(parse(&[0x0a, 0x0d, 0x0d, 0x0a, 0, 0])
            .unwrap_err()
            .contains("pcapng"));
        let e = parse(&file(DataLink::USB_LINUX, &[vec![1, 2, 3]])).unwrap_err();
        assert!(e.contains("unsupported linktype"), "{e}");
        // A record header claiming 4 GiB: refused, nothing allocated for it.
        let mut huge = good[..24].to_vec();
        huge.extend_from_slice(&[
            0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ]);
        assert!(parse(&huge).is_err());
        // Random bytes after a valid header never panic.
        let mut x: u32 = 12345;
        for _ in 0..200 {
            let mut f = good[..24].to_vec();
            for _ in 0..64 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                f.push((x >> 16) as u8);
            }
            let _ = parse(&f);
        }
    }

    #[test]
    fn ethernet_captures_are_read_and_empty_ones_refused() {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv6([1; 16], [2; 16], 64)
            .udp(9999, 7)
            .write(&mut frame, b"v6")
            .unwrap();
        let cap = parse(&file(DataLink::ETHERNET, &[frame])).unwrap();
        assert_eq!(cap.datagrams[0].payload, b"v6");
        let empty = parse(&file(DataLink::RAW, &[])).unwrap();
        assert!(empty.datagrams.is_empty());
        let path = std::env::temp_dir().join(format!("replay-empty-{}.pcap", std::process::id()));
        std::fs::write(&path, file(DataLink::RAW, &[vec![1, 2]])).unwrap();
        let e = read(&path).unwrap_err();
        assert!(e.contains("no IPv4 or IPv6 UDP datagrams"), "{e}");
        std::fs::remove_file(&path).unwrap();
        let e = read(Path::new("/nonexistent/x.pcap")).unwrap_err();
        assert!(
            e.contains("/nonexistent/x.pcap") && e.contains("No such file"),
            "{e}"
        );
    }
}
