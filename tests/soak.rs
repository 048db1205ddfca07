//! End-to-end tests of the `soak` tool (short runs on loopback): a clean
//! run passes with flat RSS; loss the server counts (kernel drops on a
//! tiny receive buffer) and loss the relay counts (`--loss 5`) are
//! attributed exactly and pass; loss nobody counts (echoes held by the
//! relay past loadgen's drain period, so they arrive after it stopped
//! listening) fails with exit 1 and names the unexplained loss.

use std::process::{Command, Output};

use serde_json::Value;

/// Runs `soak --json ARGS...` to completion (soak bounds its own children).
fn soak(args: &[&str]) -> (Output, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_soak"))
        .args(args)
        .arg("--json")
        .output()
        .expect("run soak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "soak printed no JSON ({e}); status {}; stdout {stdout}; stderr {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, v)
}

fn n(v: &Value, path: &[&str]) -> u64 {
    let mut x = v;
    for k in path {
        x = &x[*k];
    }
    x.as_u64()
        .unwrap_or_else(|| panic!("{path:?} not a count in {v}"))
}

/// Every loss is explained (the exact part plus the sampled part).
fn assert_explained(v: &Value) {
    assert_eq!(
        n(v, &["lost"]),
        n(v, &["loss_explained_exact"]) + n(v, &["loss_explained_sampled"]),
        "{v}"
    );
}

#[test]
fn clean_run_passes_with_flat_rss() {
    let (out, v) = soak(&["--duration", "3", "--rate", "20000"]);
    assert!(out.status.success(), "{v}");
    assert_eq!(v["verdict"], "ok", "{v}");
    assert!(v["failures"].as_array().unwrap().is_empty(), "{v}");
    assert!(n(&v, &["sent"]) > 0);
    assert_eq!(
        n(&v, &["counts", "reached_socket"]),
        n(&v, &["sent"]),
        "{v}"
    );
    assert_eq!(v["counts"]["unaccounted"], 0, "{v}");
    let growth = v["rss"]["growth_kib"].as_i64().unwrap();
    assert!(growth <= n(&v, &["max_rss_growth_kib"]) as i64, "{v}");
    assert!(n(&v, &["rss", "first_kib"]) > 0, "{v}");
    assert_explained(&v);
}

#[test]
fn kernel_drops_on_a_tiny_receive_buffer_are_explained() {
    let (out, v) = soak(&[
        "--duration",
        "3",
        "--rate",
        "20000",
        "--server-args",
        "--rcvbuf 4096 --threads 1",
    ]);
    assert!(out.status.success(), "{v}");
    assert_eq!(v["verdict"], "ok", "{v}");
    assert!(n(&v, &["counts", "server_kernel_drops"]) > 0, "{v}");
    assert!(
        n(&v, &["lost"]) >= n(&v, &["counts", "server_kernel_drops"]),
        "{v}"
    );
    assert_explained(&v);
}

#[test]
fn relay_loss_is_attributed_to_the_relay() {
    let (out, v) = soak(&[
        "--duration",
        "3",
        "--rate",
        "20000",
        "--via-impair",
        "--impair-args",
        "--loss 5 --seed 3",
    ]);
    assert!(out.status.success(), "{v}");
    assert_eq!(v["verdict"], "ok", "{v}");
    let relay = n(&v, &["counts", "relay_losses"]);
    assert!(relay > 0, "{v}");
    assert_eq!(
        n(&v, &["loss_explained_exact"]),
        relay
            + n(&v, &["counts", "server_kernel_drops"])
            + n(&v, &["counts", "server_drops"])
            + n(&v, &["counts", "server_send_errors"]),
        "{v}"
    );
    assert_explained(&v);
}

#[test]
fn loss_nobody_counts_fails() {
    // 800 ms each way: the last echoes come back after loadgen's 1 s drain,
    // to sockets already closed. No counter anywhere holds them.
    let (out, v) = soak(&[
        "--duration",
        "2",
        "--rate",
        "5000",
        "--via-impair",
        "--impair-args",
        "--delay-ms 800",
    ]);
    assert_eq!(out.status.code(), Some(1), "{v}");
    assert_eq!(v["verdict"], "FAILED", "{v}");
    let f = v["failures"].as_array().unwrap();
    assert!(
        f.iter()
            .any(|m| m.as_str().unwrap().starts_with("unexplained loss:")),
        "{v}"
    );
    assert!(n(&v, &["lost"]) > 0, "{v}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("soak: FAILED: unexplained loss"),
        "{stderr}"
    );
}
