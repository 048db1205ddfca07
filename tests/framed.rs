//! `server --protocol framed` over loopback: echo requests come back as
//! echo replies with a fresh CRC-32C; bad frames and reply frames are never
//! answered and are counted under their reasons; requests it cannot serve
//! get an error reply no longer than them; `client --protocol framed`
//! passes against it and fails clearly against a plain echo server.

mod util;

use std::process::Command;
use std::time::Duration;

use udp_packet_pool::wire::framed::{self, ErrorCode, Packet, Type, HEADER_LEN};
use util::*;

const QUIET: Duration = Duration::from_millis(300);

fn framed_server() -> ServerProc {
    ServerProc::start(&["--threads", "1", "--protocol", "framed", "--json"])
}

fn drops(r: &serde_json::Value, reason: &str) -> u64 {
    r["drops"][reason].as_u64().unwrap()
}

#[test]
fn echo_requests_come_back_as_replies() {
    let srv = framed_server();
    let sock = client_socket(srv.addr);
    let mut sent = 0;
    for (seq, n) in [(0u32, 0usize), (1, 1), (7, 64), (u32::MAX, 1400), (9, 2000)] {
        let payload = pattern(n, seq as u8);
        let req = framed::encode(Type::EchoRequest, seq, &payload);
        let got = echo(&sock, srv.addr, &req);
        sent += req.len() as u64;
        assert_eq!(got.len(), req.len(), "amplification 1");
        let p = Packet::new_checked(&got[..]).expect("a valid frame back");
        assert_eq!(p.frame_type(), Some(Type::EchoReply));
        assert_eq!((p.seq(), p.payload()), (seq, &payload[..]));
        assert_eq!(got, framed::encode(Type::EchoReply, seq, &payload));
    }
    let r = json(&srv.stop().stdout);
    let (rx, tx) = assert_reconciled(&r);
    assert_eq!((rx, tx), (5, 5), "{r}");
    assert_eq!(r["tx_bytes"].as_u64(), Some(sent), "{r}");
}

#[test]
fn bad_frames_and_replies_are_dropped_and_counted() {
    let srv = framed_server();
    let sock = client_socket(srv.addr);
    let good = framed::encode(Type::EchoRequest, 5, b"some payload");
    let mut bad_crc = good.clone();
    bad_crc[HEADER_LEN + 3] ^= 0x10;
    let mut bad_len = good.clone();
    Packet::new_unchecked(&mut bad_len[..]).set_len(3);
    Packet::new_unchecked(&mut bad_len[..]).fill_crc();
    let mut other_version = good.clone();
    Packet::new_unchecked(&mut other_version[..]).set_version(2);
    Packet::new_unchecked(&mut other_version[..]).fill_crc();
    let bad = [
        bad_crc,
        bad_len,
        good[..HEADER_LEN - 1].to_vec(),
        good[..good.len() - 1].to_vec(),
        other_version,
        Vec::new(),
        b"hello".to_vec(),
    ];
    for d in &bad {
        expect_silence(&sock, srv.addr, d, QUIET);
    }
    let replies = [
        framed::encode(Type::EchoReply, 1, b"x"),
        framed::encode(Type::Error, 2, b""),
        framed::encode(Type::StatsReply, 3, b"{}"),
    ];
    for d in &replies {
        expect_silence(&sock, srv.addr, d, QUIET);
    }
    // Still answering after all that.
    let got = echo(&sock, srv.addr, &good);
    assert_eq!(got, framed::encode(Type::EchoReply, 5, b"some payload"));
    let r = json(&srv.stop().stdout);
    let (rx, tx) = assert_reconciled(&r);
    assert_eq!(tx, 1, "{r}");
    assert_eq!(drops(&r, "bad_frame"), bad.len() as u64, "{r}");
    assert_eq!(drops(&r, "frame_no_reply"), replies.len() as u64, "{r}");
    assert_eq!(rx, 1 + (bad.len() + replies.len()) as u64, "{r}");
}

#[test]
fn unserved_requests_get_an_error_reply_never_longer() {
    let srv = framed_server();
    let sock = client_socket(srv.addr);
    let mut unknown = framed::encode(Type::EchoRequest, 11, b"0123456789abcdef0123");
    Packet::new_unchecked(&mut unknown[..]).set_type(0x42);
    Packet::new_unchecked(&mut unknown[..]).fill_crc();
    let mut flagged = framed::encode(Type::EchoRequest, 12, b"");
    Packet::new_unchecked(&mut flagged[..]).set_flags(1);
    Packet::new_unchecked(&mut flagged[..]).fill_crc();
    let cases = [
        (unknown, 11, ErrorCode::UnknownType),
        (flagged, 12, ErrorCode::BadRequest),
        (
            framed::encode(Type::StatsRequest, 13, &[0; 5]),
            13,
            ErrorCode::BadRequest,
        ),
        (
            framed::encode(Type::Broadcast, 14, b"hi"),
            14,
            ErrorCode::NotAllowed,
        ),
    ];
    for (req, seq, code) in &cases {
        let got = echo(&sock, srv.addr, req);
        assert!(got.len() <= req.len(), "amplification <= 1");
        let p = Packet::new_checked(&got[..]).expect("a valid error frame");
        assert_eq!(p.frame_type(), Some(Type::Error));
        assert_eq!((p.seq(), p.status()), (*seq, *code as u8));
        let text = code.text().as_bytes();
        let n = text.len().min(p.payload().len());
        assert_eq!(&p.payload()[..n], &text[..n]);
    }
    let r = json(&srv.stop().stdout);
    let (rx, tx) = assert_reconciled(&r);
    assert_eq!((rx, tx), (4, 4), "{r}");
}

fn client(port: u16, extra: &[&str]) -> (bool, String) {
    let port = port.to_string();
    let mut args = vec![
        "127.0.0.1",
        &port,
        "--protocol",
        "framed",
        "--timeout",
        "1000",
    ];
    args.extend_from_slice(extra);
    let out = Command::new(env!("CARGO_BIN_EXE_client"))
        .args(&args)
        .output()
        .expect("run client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn client_speaks_framed() {
    let srv = framed_server();
    let (ok, text) = client(srv.addr.port(), &["-c", "5", "-i", "10", "--size", "100"]);
    assert!(ok, "{text}");
    assert!(text.contains("5 sent, 5 received"), "{text}");
    let (ok, text) = client(srv.addr.port(), &["framed hello"]);
    assert!(ok, "{text}");
    let r = json(&srv.stop().stdout);
    let (rx, tx) = assert_reconciled(&r);
    assert_eq!((rx, tx), (6, 6), "{r}");
}

#[test]
fn client_framed_against_plain_echo_fails_clearly() {
    let srv = ServerProc::start(&["--threads", "1", "--json"]);
    let (ok, text) = client(srv.addr.port(), &[]);
    assert!(!ok, "{text}");
    assert!(text.contains("MISMATCH"), "{text}");
    assert!(
        text.contains("an echo request came back, not a reply"),
        "{text}"
    );
    assert_reconciled(&json(&srv.stop().stdout));
}
