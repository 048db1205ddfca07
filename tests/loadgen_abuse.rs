//! `loadgen` under hostile conditions: asked for far more than the machine
//! can send (it must stop at the end of `--duration`, count what it could
//! not send as `unsent` and say that it fell behind), and pointed at a port
//! where nothing listens (ICMP port unreachable: `refused`, a clear note and
//! exit 1) or at port 0 (a usage error).
//!
//! Loopback only, ephemeral ports, bounded waits; no timing is asserted
//! beyond a generous guard. The tests run one at a time (a lock).

use std::net::UdpSocket;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use std::time::Duration;

mod util;

use util::count;

/// A 1 s run that stops on time finishes well within this, even with the
/// drain and a loaded machine; the old behaviour (send every scheduled
/// packet however late) took over 10 s at 2M pkt/s.
const STOPS_WITHIN: Duration = Duration::from_secs(15);

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `loadgen ARGS`, killing it (and failing) after `limit`.
fn loadgen_within(args: &[&str], limit: Duration) -> Output {
    util::run_loadgen_within(
        Command::new(env!("CARGO_BIN_EXE_loadgen")).args(args),
        limit,
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A loopback UDP port with nothing listening on it (bound, then closed).
fn closed_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

/// 2M pkt/s for 1 s is far beyond one sending thread: loadgen stops when
/// the second is over, and the schedule is split exactly into what went
/// out and what did not.
#[test]
fn overload_stops_at_the_end_of_duration_and_counts_unsent() {
    let _g = serial();
    let server = util::ServerProc::start(&["--threads", "2", "--reuseport"]);
    let target = server.addr.to_string();
    let out = loadgen_within(
        &[
            "--target",
            &target,
            "--rate",
            "2000000",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--json",
        ],
        STOPS_WITHIN,
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{:?}\n{stderr}", out.status);
    let r = util::json(&text(&out.stdout));
    util::assert_loadgen_consistent(&r);
    let (sent, unsent) = (count(&r, "sent"), count(&r, "unsent"));
    assert!(unsent > 0, "a 2M pkt/s sender kept up? {r}");
    assert_eq!(
        sent + unsent + count(&r, "send_errors"),
        2_000_000,
        "sent + unsent is the schedule: {r}"
    );
    assert_eq!(r["fell_behind"], true, "{r}");
    assert!(
        stderr.contains("fell behind") && stderr.contains("unsent"),
        "no loud warning on stderr: {stderr}"
    );
    drop(server);
}

/// The text report has an `Unsent:` line too.
#[test]
fn overload_text_report_has_an_unsent_line() {
    let _g = serial();
    let server = util::ServerProc::start(&[]);
    let target = server.addr.to_string();
    let out = loadgen_within(
        &[
            "--target",
            &target,
            "--rate",
            "2000000",
            "--duration",
            "0.5",
            "--warmup",
            "0",
        ],
        STOPS_WITHIN,
    );
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}\n{}",
        out.status,
        text(&out.stderr)
    );
    assert!(
        stdout.contains("Unsent:") && stdout.contains("fell behind"),
        "{stdout}"
    );
    drop(server);
}

/// Nothing listens: every datagram meets ICMP port unreachable. loadgen
/// counts the refusals, names the address, and exits 1 (no server is a
/// run-time failure, not a measurement of 100% loss).
#[test]
fn closed_port_is_reported_as_no_server() {
    let _g = serial();
    let target = format!("127.0.0.1:{}", closed_port());
    let out = loadgen_within(
        &[
            "--target",
            &target,
            "--rate",
            "1000",
            "--duration",
            "0.5",
            "--warmup",
            "0",
            "--drain-ms",
            "200",
            "--json",
        ],
        util::LOADGEN_GUARD,
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let r = util::json(&text(&out.stdout));
    assert!(count(&r, "refused") > 0, "{r}");
    assert_eq!(count(&r, "received"), 0, "{r}");
    let note = format!("no server at {target} (ICMP port unreachable");
    assert!(stderr.contains(&note), "{note:?} missing: {stderr}");

    let out = loadgen_within(
        &[
            "--target",
            &target,
            "--rate",
            "1000",
            "--duration",
            "0.3",
            "--warmup",
            "0",
            "--drain-ms",
            "200",
        ],
        util::LOADGEN_GUARD,
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("Refused:") && stdout.contains("no server at the target"),
        "{stdout}"
    );
}

#[test]
fn port_zero_is_a_usage_error_naming_the_port() {
    let out = loadgen_within(&["--target", "127.0.0.1:0"], util::LOADGEN_GUARD);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("127.0.0.1:0") && stderr.contains("port 0"),
        "{stderr}"
    );
}
