//! Helpers of the `loadgen --protocol framed|stamp` tests
//! (tests/loadgen_framed.rs, tests/loadgen_stamp.rs).

use std::net::SocketAddr;

use super::{assert_loadgen_consistent, count, loadgen_json_err};

/// Packets a [`short_run`] sends: 2000 pkt/s for 1 s.
pub const SHORT_RUN_PACKETS: u64 = 2000;

/// `loadgen --protocol PROTOCOL --target TO` at 2000 pkt/s for 1 s, no
/// warm-up (so a server's counts equal loadgen's), plus `extra`, with
/// `--json`: the checked report and stderr.
pub fn short_run(protocol: &str, to: SocketAddr, extra: &[&str]) -> (serde_json::Value, String) {
    let target = to.to_string();
    let mut args = vec!["--protocol", protocol, "--target", &target];
    args.extend(["--rate", "2000", "--duration", "1", "--warmup", "0"]);
    args.extend_from_slice(extra);
    let (r, err) = loadgen_json_err(&args);
    assert_loadgen_consistent(&r);
    assert_eq!(r["protocol"], protocol, "{r}");
    (r, err)
}

/// Checks a run against a byte-exact echo server: nothing counted as
/// received, every reply bad and our own request back, and a warning on
/// stderr that says so and names `fix`.
pub fn assert_requests_echoed_back(r: &serde_json::Value, stderr: &str, fix: &str) {
    let sent = count(r, "sent");
    assert_eq!(count(r, "received"), 0, "{r}");
    assert_eq!(count(r, "bad_replies"), sent, "{r}");
    assert_eq!(count(r, "echoed_requests"), sent, "{r}");
    assert!(
        stderr.contains("sent back unchanged") && stderr.contains(fix),
        "{stderr}"
    );
}
