//! Spin mode under load: samples are handed to the metrics thread by time
//! (every 100 ms or when a batch of 1024 fills), not on every empty poll,
//! so at 100k datagrams/s none are dropped and the server's histogram
//! holds every echo (not a sample biased toward quiet moments).

mod util;

use std::process::Command;

use util::*;

#[test]
fn spin_mode_keeps_every_latency_sample_at_100k_per_second() {
    let srv = ServerProc::start(&["--threads", "1", "--io", "spin", "--json"]);
    let target = srv.addr.to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--target", &target, "--rate", "100000", "--duration", "1"])
        .args(["--warmup", "0", "--flows", "4", "--json"])
        .output()
        .expect("run loadgen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = srv.stop();
    let r = json(&f.stdout);
    let (_, tx) = assert_reconciled(&r);
    eprintln!("spin mode: {tx} echoes, report {}", r["latency_us"]);
    assert!(tx > 10_000, "the load did not reach the server: {r}");
    assert_eq!(r["samples_dropped"], 0, "{r}");
    assert_eq!(
        r["latency_us"]["count"].as_u64(),
        Some(tx),
        "one sample per echo"
    );
}
