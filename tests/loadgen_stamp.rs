//! `loadgen --protocol stamp` (an RFC 8762 Session-Sender) against our own
//! reflector (`server --protocol stamp`, stateless and `--stamp-stateful`)
//! and stamp-suite's (gated like tests/stamp.rs: skipped with a note when
//! stamp-suite is missing, a failure with `REQUIRE_STAMP=1`). Loopback,
//! short runs, no warm-up so that the server's counts equal ours; counts
//! are asserted, timings never (only that the one-way delays exist and are
//! not negative: one host, one clock). The tests run one at a time.

mod util;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use util::lgproto::*;
use util::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A short `loadgen --protocol stamp` run to `to` over two flows (unless
/// `extra` says otherwise), plus `extra`.
fn stamp_run(to: SocketAddr, extra: &[&str]) -> serde_json::Value {
    let mut args = extra.to_vec();
    if !extra.contains(&"--flows") {
        args.extend(["--flows", "2"]);
    }
    short_run("stamp", to, &args).0
}

/// Checks the one-way delays were measured and never negative (one host).
fn assert_one_way_delays(r: &serde_json::Value) {
    let s = &r["stamp"];
    for k in ["forward_delay_us", "backward_delay_us", "residence_us"] {
        let p50 = s[k]["p50"].as_f64();
        assert!(p50.is_some_and(|v| v >= 0.0), "{k} missing: {r}");
    }
    for k in [
        "negative_forward",
        "negative_backward",
        "negative_residence",
    ] {
        assert_eq!(count(s, k), 0, "{k}: {r}");
    }
}

#[test]
fn measures_our_reflector_stateless_and_stateful() {
    let _g = serial();
    for stateful in [false, true] {
        let mut args = vec!["--protocol", "stamp", "--json"];
        let mut lg: Vec<&str> = vec![];
        if stateful {
            args.push("--stamp-stateful");
            lg.push("--stamp-stateful");
        }
        let srv = ServerProc::start(&args);
        let r = stamp_run(srv.addr, &lg);
        let sent = count(&r, "sent");
        assert_eq!(sent, SHORT_RUN_PACKETS, "{r}");
        assert_eq!(count(&r, "received"), sent, "{r}");
        assert_eq!(count(&r, "bad_replies") + count(&r, "foreign"), 0, "{r}");
        assert_eq!(r["protocol"], "stamp");
        assert_one_way_delays(&r);
        let s = &r["stamp"];
        if stateful {
            assert_eq!(s["reflector"], "stateful", "{r}");
            assert_eq!(
                (count(s, "forward_lost"), count(s, "backward_lost")),
                (0, 0)
            );
        } else {
            assert_eq!(s["reflector"], "stateless", "{r}");
            assert!(s["forward_lost"].is_null(), "{r}");
        }
        let rep = json(&srv.stop().stdout);
        assert_eq!(assert_reconciled(&rep), (sent, sent), "{rep}");
    }
}

#[test]
fn stateful_reflector_shows_forward_loss() {
    let _g = serial();
    // The rate limiter drops requests before the reflector counts them:
    // forward loss, exactly what the server dropped. One flow: with two,
    // the limiter's tokens may always fall to the same one, and a flow
    // that gets no more replies cannot tell which way its packets went.
    let (rate, limit) = (SHORT_RUN_PACKETS, 500);
    let srv = ServerProc::start(&[
        "--protocol",
        "stamp",
        "--stamp-stateful",
        "--rate-limit",
        &limit.to_string(),
        "--json",
    ]);
    let r = stamp_run(srv.addr, &["--stamp-stateful", "--flows", "1"]);
    assert_eq!(count(&r, "sent"), rate, "{r}");
    let rep = json(&srv.stop().stdout);
    let (rx, tx) = assert_reconciled(&rep);
    let limited = rep["drops"]["rate_limited"].as_u64().unwrap();
    assert!(limited > 0, "nothing rate-limited: {rep}");
    assert_eq!((rx, tx), (count(&r, "sent"), count(&r, "received")), "{r}");
    assert_eq!(count(&r, "lost"), limited, "{r}");
    let s = &r["stamp"];
    let (fw, bw) = (count(s, "forward_lost"), count(s, "backward_lost"));
    assert_eq!(fw + bw, limited, "{r}");
    // Only the requests after the last reply count as backward: at most
    // the few the limiter drops between two it lets through.
    assert!(bw <= rate / limit, "{fw} forward, {bw} backward: {r}");
}

#[test]
fn measures_stamp_suite_reflector() {
    let Some(bin) = stamp_suite() else { return };
    let _g = serial();
    for stateful in [false, true] {
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(&bin);
        cmd.args(["-i", "-S", "127.0.0.1", "-o", &port.to_string()]);
        if stateful {
            cmd.arg("--stateful-reflector");
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn stamp-suite -i");
        let to: SocketAddr = ([127, 0, 0, 1], port).into();
        let checked = std::panic::catch_unwind(|| {
            // Ready when a 44-byte test packet (from another socket) comes back.
            let sock = client_socket(to);
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let ready = (0..50).any(|_| {
                sock.send_to(&[0u8; 44], to).unwrap();
                sock.recv_from(&mut [0u8; 100]).is_ok()
            });
            assert!(ready, "stamp-suite's reflector never answered on {to}");
            let r = stamp_run(to, if stateful { &["--stamp-stateful"] } else { &[] });
            assert_eq!(count(&r, "received"), count(&r, "sent"), "{r}");
            assert_eq!(count(&r, "bad_replies"), 0, "{r}");
            assert_one_way_delays(&r);
            if stateful {
                assert_eq!(count(&r["stamp"], "forward_lost"), 0, "{r}");
            }
        });
        let _ = child.kill();
        let _ = child.wait();
        if let Err(e) = checked {
            std::panic::resume_unwind(e);
        }
    }
}

#[test]
fn plain_echo_server_gives_bad_replies() {
    let _g = serial();
    let srv = ServerProc::start(&["--json"]);
    let (r, stderr) = short_run("stamp", srv.addr, &[]);
    assert_requests_echoed_back(&r, &stderr, "--protocol stamp");
    drop(srv);
}

#[test]
fn bad_flags_are_usage_errors() {
    for (args, says) in [
        (&["--protocol", "stamp", "--size", "40"][..], "--size 40"),
        (&["--stamp-stateful"][..], "--protocol stamp"),
        (
            &["--protocol", "framed", "--size", "51"][..],
            "16-byte frame",
        ),
    ] {
        let out = loadgen(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
