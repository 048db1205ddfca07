//! Interoperability with sockperf, a client nobody on this team wrote:
//! sockperf's own `ping-pong`, `under-load` and `throughput` clients measure
//! `server --sockperf`, and a plain (RFC 862) server stays byte-exact, which
//! sockperf's client rightly refuses to count.
//!
//! Needs the `sockperf` binary (`.ci/run` installs it). Without it the tests
//! print a note and pass, unless `REQUIRE_SOCKPERF=1` is set (as in CI).

mod util;

use std::process::{Command, Output};

use util::*;

fn sockperf(mode: &str, port: u16, extra: &[&str]) -> (Output, String) {
    let port = port.to_string();
    let mut args = vec![mode, "-i", "127.0.0.1", "-p", &port, "-t", "1", "-m", "64"];
    args.extend_from_slice(extra);
    let out = Command::new("timeout")
        .arg("20")
        .arg("sockperf")
        .args(&args)
        .output()
        .expect("run sockperf");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

/// `(sent, received)` from sockperf's `[Valid Duration] ... SentMessages=N;
/// ReceivedMessages=M` line (the measured window, without warm-up and
/// without the last message still in flight when the timer fired).
fn valid_duration(text: &str) -> (u64, u64) {
    let line = text
        .lines()
        .find(|l| l.contains("[Valid Duration]"))
        .unwrap_or_else(|| panic!("no [Valid Duration] line in:\n{text}"));
    let field = |name: &str| -> u64 {
        let rest = line
            .split(name)
            .nth(1)
            .unwrap_or_else(|| panic!("{name} missing: {line}"));
        rest.trim_start_matches('=')
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect::<String>()
            .parse()
            .unwrap()
    };
    (field("SentMessages"), field("ReceivedMessages"))
}

#[test]
fn sockperf_ping_pong_measures_our_sockperf_mode() {
    if !sockperf_available() {
        return;
    }
    let srv = ServerProc::start(&["--threads", "2", "--reuseport", "--sockperf", "--json"]);
    let (out, text) = sockperf("ping-pong", srv.addr.port(), &[]);
    assert!(out.status.success(), "{text}");
    let (sent, received) = valid_duration(&text);
    assert!(sent > 0, "{text}");
    assert_eq!(sent, received, "every ping answered:\n{text}");
    assert!(text.contains("percentile 50"), "{text}");
    let r = json(&srv.stop().stdout);
    let (rx, tx) = assert_reconciled(&r);
    assert!(
        tx >= received,
        "server echoed {tx}, sockperf received {received}"
    );
    assert_eq!(rx, tx + r["drops"]["sockperf_no_reply"].as_u64().unwrap());
}

#[test]
fn sockperf_under_load_measures_our_sockperf_mode() {
    if !sockperf_available() {
        return;
    }
    let srv = ServerProc::start(&["--threads", "2", "--sockperf", "--json"]);
    let (out, text) = sockperf(
        "under-load",
        srv.addr.port(),
        &["--mps", "2000", "--reply-every", "1"],
    );
    assert!(out.status.success(), "{text}");
    let (sent, received) = valid_duration(&text);
    assert!(sent > 0 && received > 0, "{text}");
    let r = json(&srv.stop().stdout);
    assert_reconciled(&r);
    assert_eq!(r["drops"]["malformed"], 0);
}

#[test]
fn sockperf_throughput_asks_no_replies_and_gets_none() {
    if !sockperf_available() {
        return;
    }
    let srv = ServerProc::start(&["--threads", "1", "--sockperf", "--json"]);
    let (out, text) = sockperf("throughput", srv.addr.port(), &["--mps", "2000"]);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Message Rate"), "{text}");
    let r = json(&srv.stop().stdout);
    let (rx, tx) = assert_reconciled(&r);
    assert!(rx > 0);
    // Only sockperf's few warm-up/sync pings (if any) ask for replies.
    assert_eq!(r["drops"]["sockperf_no_reply"].as_u64().unwrap() + tx, rx);
    assert!(
        r["drops"]["sockperf_no_reply"].as_u64().unwrap() > tx,
        "{r}"
    );
}

#[test]
fn plain_mode_is_byte_exact_so_sockperf_counts_nothing() {
    if !sockperf_available() {
        return;
    }
    let srv = ServerProc::start(&["--threads", "1", "--json"]);
    let (_, text) = sockperf("ping-pong", srv.addr.port(), &[]);
    assert!(text.contains("No messages were received"), "{text}");
    let r = json(&srv.stop().stdout);
    let (rx, tx) = assert_reconciled(&r);
    assert!(
        rx >= 1 && rx == tx,
        "plain mode echoes everything unchanged: {r}"
    );
}
