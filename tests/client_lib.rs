//! Integration tests for the `udp_packet_pool::client` library API
//! (`run`, `run_until`, `resolve`) against in-test responders on loopback
//! (`util::client`): every probe accounted once, stale and duplicate echoes
//! ignored and counted, corrupted echoes reported as mismatches, timeouts,
//! IPv6, invalid configurations and the stop flag. The tests assert
//! behaviour only, never timings.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use udp_packet_pool::client::{self, ClientConfig, Payload, Summary};
use util::client::{text, Mode, Responder};

mod util;

fn config(addr: SocketAddr, payload: Payload, count: u32) -> ClientConfig {
    ClientConfig {
        target: addr,
        payload,
        count,
        interval: Duration::from_millis(5),
        timeout: Duration::from_secs(2),
        framed: false,
        psk: None,
    }
}

fn run_lib(config: &ClientConfig) -> (Summary, String) {
    let mut out = Vec::new();
    let summary = client::run(config, &mut out).expect("client::run");
    (summary, text(&out))
}

fn assert_accounted(s: &Summary) {
    assert_eq!(s.received + s.lost + s.mismatched, s.sent, "{s:?}");
    assert_eq!(s.lost, s.timeouts + s.refused, "{s:?}");
}

#[test]
fn lib_pattern_probes_all_echoed() {
    let r = Responder::start(Mode::Echo);
    let (s, out) = run_lib(&config(r.addr, Payload::Pattern(64), 4));
    assert!(s.is_success(), "{s:?}\n{out}");
    assert_eq!(
        (s.sent, s.received, s.lost, s.mismatched, s.stale),
        (4, 4, 0, 0, 0)
    );
    assert_eq!(s.payload_bytes, 64);
    assert_eq!(s.target, r.addr);
    let rtt = s.rtt.expect("rtt stats");
    assert!(
        rtt.min_us <= rtt.avg_us && rtt.avg_us <= rtt.max_us,
        "{rtt:?}"
    );
    assert!(
        rtt.min_us <= rtt.p99_us && rtt.p99_us <= rtt.max_us,
        "{rtt:?}"
    );
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(out.contains("seq=3 rtt="), "{out}");
    assert_accounted(&s);
}

#[test]
fn lib_duplicates_are_ignored_and_counted() {
    let r = Responder::start(Mode::Duplicate);
    let (s, out) = run_lib(&config(r.addr, Payload::Pattern(32), 3));
    assert!(s.is_success(), "{s:?}\n{out}");
    assert_eq!(s.received, 3);
    assert_eq!(s.mismatched, 0);
    // The duplicates of seq 0 and 1 arrive before the echoes of seq 1 and
    // 2 (one responder thread, in-order loopback); the last one is unseen.
    assert_eq!(s.stale, 2, "{out}");
    assert!(out.contains("stale echo of seq=0"), "{out}");
    assert!(out.contains("stale echo of seq=1"), "{out}");
    assert_accounted(&s);
}

#[test]
fn lib_stale_echo_after_timeout_is_not_a_mismatch() {
    let r = Responder::start(Mode::ReplayFirst);
    let mut c = config(r.addr, Payload::Pattern(16), 3);
    c.timeout = Duration::from_millis(100);
    let (s, out) = run_lib(&c);
    // seq 0 is never answered in time; its late copy arrives before each of
    // the next echoes and is recognised as stale.
    assert_eq!(
        (s.sent, s.received, s.timeouts, s.mismatched),
        (3, 2, 1, 0),
        "{out}"
    );
    assert_eq!(s.stale, 2, "{out}");
    assert!(out.contains("seq=0 timeout after 100 ms"), "{out}");
    assert!(out.contains("stale echo of seq=0"), "{out}");
    assert!(!s.is_success());
    assert_accounted(&s);
}

#[test]
fn lib_corrupted_pattern_is_a_mismatch() {
    let r = Responder::start(Mode::Corrupt(10));
    let (s, out) = run_lib(&config(r.addr, Payload::Pattern(64), 2));
    assert_eq!(
        (s.sent, s.received, s.mismatched, s.stale),
        (2, 0, 2, 0),
        "{out}"
    );
    assert!(out.contains("seq=1 MISMATCH"), "{out}");
    assert!(out.contains("first difference at byte 10"), "{out}");
    assert!(!s.is_success());
    assert_eq!(s.rtt, None);
    assert_accounted(&s);
}

#[test]
fn lib_corrupted_message_is_a_mismatch() {
    let r = Responder::start(Mode::Corrupt(0));
    let c = config(r.addr, Payload::Message(b"ping".to_vec()), 1);
    let (s, out) = run_lib(&c);
    assert_eq!(s.mismatched, 1, "{out}");
    assert!(out.contains("first difference at byte 0"), "{out}");
    assert!(!s.is_success());
}

#[test]
fn lib_silent_server_times_out() {
    let r = Responder::start(Mode::Silent);
    let mut c = config(r.addr, Payload::Message(b"anyone?".to_vec()), 2);
    c.timeout = Duration::from_millis(50);
    let (s, out) = run_lib(&c);
    assert_eq!(
        (s.sent, s.received, s.lost, s.timeouts),
        (2, 0, 2, 2),
        "{out}"
    );
    assert_eq!(s.loss_percent, 100.0);
    assert!(!s.is_success());
    assert_accounted(&s);
}

#[test]
fn lib_ipv6_loopback_when_available() {
    let Ok(r) = Responder::start_on("[::1]:0", Mode::Echo) else {
        eprintln!("skipped: no IPv6 loopback");
        return;
    };
    let target = client::resolve("::1", r.addr.port()).unwrap();
    assert!(target.is_ipv6());
    let (s, out) = run_lib(&config(
        target,
        Payload::Pattern(client::MAX_UDP_PAYLOAD_V4),
        1,
    ));
    assert!(s.is_success(), "{out}");
}

#[test]
fn lib_invalid_config_is_an_error() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut out = Vec::new();
    let c = config(addr, Payload::Pattern(client::MAX_UDP_PAYLOAD_V4 + 1), 1);
    let e = client::run(&c, &mut out).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("65507"), "{e}");
    let c = config(addr, Payload::Pattern(8), 0);
    assert!(client::run(&c, &mut out).is_err());
    assert!(out.is_empty());
}

#[test]
fn lib_resolve_errors_name_the_host() {
    let e = client::resolve("nonexistent.invalid", 7).unwrap_err();
    assert!(e.to_string().contains("nonexistent.invalid"), "{e}");
    assert_eq!(
        client::resolve("127.0.0.1", 7).unwrap(),
        "127.0.0.1:7".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        client::resolve("[::1]", 7).unwrap(),
        "[::1]:7".parse::<SocketAddr>().unwrap()
    );
}

/// A stop before the first probe: nothing counted, and the summary (JSON
/// too) says it was interrupted.
#[test]
fn lib_stop_flag_ends_the_run_with_a_summary() {
    let r = Responder::start(Mode::Echo);
    let stop = AtomicBool::new(true);
    let cfg = config(r.addr, Payload::Pattern(8), 5);
    let s = client::run_until(&cfg, &mut Vec::new(), &stop).unwrap();
    assert_eq!(
        (s.sent, s.lost, s.loss_percent, s.interrupted),
        (0, 0, 0.0, true)
    );
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["interrupted"], true, "{v}");
}
