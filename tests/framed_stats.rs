//! The framed stats reply over loopback: the document reassembled from
//! fragments is the server's counters as JSON (matching what was sent),
//! every reply is exactly as long as its request, short or bad stats
//! requests get error replies of their own length, and `client --protocol
//! framed --stats` prints the document or fails clearly.

mod util;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use udp_packet_pool::wire::framed::{self, ErrorCode, Packet, Type};
use udp_packet_pool::wire::framed_stats::{self, MIN_PAYLOAD};
use util::*;

/// A hang guard for the polling loops (the document is republished every
/// 200 ms), not a timing assertion.
const POLL_GUARD: Duration = Duration::from_secs(15);

/// Fetches the document with requests of `len` payload bytes, starting
/// over when the generation changes; returns it and its fragment count.
/// Every reply must be exactly as long as its request.
fn fetch(sock: &UdpSocket, to: SocketAddr, len: usize, seq: &mut u32) -> (serde_json::Value, u16) {
    'again: loop {
        let (mut doc, mut generation, mut index) = (Vec::new(), 0, 0u16);
        loop {
            *seq += 1;
            let req = framed_stats::request(*seq, index, generation, len);
            let got = echo(sock, to, &req);
            assert_eq!(
                got.len(),
                req.len(),
                "a reply exactly as long as its request"
            );
            let f = framed_stats::parse_reply(&got).unwrap();
            assert_eq!((f.seq, f.index), (*seq, index));
            if index > 0 && f.generation != generation {
                continue 'again;
            }
            generation = f.generation;
            doc.extend_from_slice(f.data);
            index += 1;
            if index == f.count {
                let v = serde_json::from_slice(&doc).expect("the document is JSON");
                return (v, f.count);
            }
        }
    }
}

#[test]
fn the_document_counts_what_was_sent_and_replies_never_outgrow_requests() {
    const ECHOES: u64 = 7;
    const BAD: u64 = 3;
    let srv = ServerProc::start(&["--threads", "1", "--protocol", "framed", "--json"]);
    let sock = client_socket(srv.addr);
    let mut sent = 0u64;
    for i in 0..ECHOES {
        echo(
            &sock,
            srv.addr,
            &framed::encode(Type::EchoRequest, i as u32, &pattern(50, i as u8)),
        );
        sent += 1;
    }
    for i in 0..BAD {
        let mut bad = framed::encode(Type::EchoRequest, 100 + i as u32, b"bad crc");
        bad[20] ^= 1;
        sock.send_to(&bad, srv.addr).unwrap();
        sent += 1;
    }
    // Small requests: many fragments, each reply as long as its request.
    let mut seq = 1000;
    let deadline = Instant::now() + POLL_GUARD;
    let (doc, fragments) = loop {
        let before = seq;
        let (doc, fragments) = fetch(&sock, srv.addr, 40, &mut seq);
        sent += u64::from(seq - before);
        if doc["drops"]["bad_frame"] == BAD {
            break (doc, fragments);
        }
        assert!(
            Instant::now() < deadline,
            "the document never showed the bad frames: {doc}"
        );
    };
    assert!(
        fragments > 5,
        "40-byte requests cut the document: {fragments}"
    );
    let (rx, tx) = (
        doc["rx_packets"].as_u64().unwrap(),
        doc["tx_packets"].as_u64().unwrap(),
    );
    assert!(tx >= ECHOES, "{doc}");
    assert_eq!(rx - tx, BAD, "only the bad frames were dropped: {doc}");
    assert_eq!(doc["unaccounted"], 0, "{doc}");
    assert_eq!(doc["kernel_drops"], 0, "{doc}");
    // The client's request size: one fragment, same document shape.
    let (big, n) = fetch(&sock, srv.addr, framed_stats::MAX_PAYLOAD, &mut seq);
    sent += u64::from(n);
    assert_eq!(big["drops"]["bad_frame"], BAD, "{big}");
    // Short or bad stats requests: an error reply of their own length.
    let short = framed::encode(Type::StatsRequest, 1, &[0; MIN_PAYLOAD - 1]);
    let empty = framed::encode(Type::StatsRequest, 2, &[]);
    let past = framed_stats::request(3, 9999, 0, 40);
    for req in [short, empty, past] {
        let got = echo(&sock, srv.addr, &req);
        sent += 1;
        assert_eq!(got.len(), req.len(), "never more bytes than the request");
        let p = Packet::new_checked(&got[..]).unwrap();
        assert_eq!(
            (p.frame_type(), p.status()),
            (Some(Type::Error), ErrorCode::BadRequest as u8)
        );
    }
    let r = json(&srv.stop().stdout);
    let (rx, tx) = assert_reconciled(&r);
    assert_eq!((rx, rx - tx), (sent, BAD), "{r}");
    assert!(r["tx_bytes"].as_u64() <= r["rx_bytes"].as_u64(), "{r}");
}

fn client(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_client"))
        .args(args)
        .output()
        .expect("run client");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn client_stats_prints_the_counters() {
    let srv = ServerProc::start(&["--threads", "1", "--protocol", "framed", "--json"]);
    let sock = client_socket(srv.addr);
    for i in 0..4u32 {
        echo(
            &sock,
            srv.addr,
            &framed::encode(Type::EchoRequest, i, b"hello"),
        );
    }
    let port = srv.addr.port().to_string();
    let deadline = Instant::now() + POLL_GUARD;
    loop {
        let (code, out, err) = client(&["127.0.0.1", &port, "--protocol", "framed", "--stats"]);
        assert_eq!(code, Some(0), "{err}");
        let doc: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
        assert_eq!(doc["unaccounted"], 0, "{doc}");
        assert!(
            doc["drops"].as_object().is_some_and(|d| d.len() > 5),
            "{doc}"
        );
        if doc["tx_packets"].as_u64() >= Some(4) {
            break;
        }
        assert!(Instant::now() < deadline, "never counted the echoes: {doc}");
    }
    assert_reconciled(&json(&srv.stop().stdout));
}

#[test]
fn client_stats_fails_clearly() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    let (code, _, err) = client(&[
        "127.0.0.1",
        &port,
        "--protocol",
        "framed",
        "--stats",
        "--timeout",
        "100",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no stats reply for fragment 0"), "{err}");
    let (code, _, err) = client(&["127.0.0.1", &port, "--stats"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("add --protocol framed"), "{err}");
    let plain = ServerProc::start(&["--threads", "1"]);
    let port = plain.addr.port().to_string();
    let (code, _, err) = client(&["127.0.0.1", &port, "--protocol", "framed", "--stats"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not a stats reply"), "{err}");
}
