//! Load from several hosts, merged exactly (`loadgen --shard I/N` and
//! `loadgen merge`). Four network namespaces joined by a Linux bridge: the
//! server host (one `server --json`, two threads) and three load hosts,
//! each running `loadgen --shard i/3` with the same flags at the same time.
//! Then `loadgen merge --json` of the three reports and three hlogs must
//! give: counts that are the sums of the shards', latency percentiles equal
//! to those of a histogram this test adds up itself from the three hlogs
//! (not averaged percentiles), a server receive count equal to merged sent
//! minus merged lost (no warm-up: the server sees only measured packets),
//! and per shard exactly its share of the one schedule: shard i sends the
//! global packets k < rate * duration with k mod 3 = i. The shards start
//! together (`--start-at`, a few seconds ahead). Needs root and
//! `ip`; CI sets `REQUIRE_NETNS=1`. Traffic goes only to the namespaces'
//! own addresses.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use base64::Engine;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use serde_json::Value;

use util::bridge::{BridgedLan, SERVER_IP};
use util::netns;
use util::*;

/// Global rate and seconds: 5998 packets, not a multiple of 3, so the
/// shares differ (2000, 1999, 1999).
const RATE: u64 = 2999;
const DURATION_S: u64 = 2;
/// Flows over all shards, not a multiple of 3 either (3, 2, 2).
const FLOWS: u32 = 7;
const SHARDS: u64 = 3;

/// A scratch directory for the reports and hlogs, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The sum of every interval of the hlogs, as `loadgen` keeps latency
/// (1 ns to 60 s, 3 significant digits).
fn sum_hlogs(paths: &[PathBuf]) -> Histogram<u64> {
    let mut sum = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    let mut de = Deserializer::new();
    for p in paths {
        let text = std::fs::read(p).unwrap();
        for e in IntervalLogIterator::new(&text) {
            if let LogEntry::Interval(iv) = e.unwrap() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(iv.encoded_histogram())
                    .unwrap();
                let h: Histogram<u64> = de.deserialize(&mut &bytes[..]).unwrap();
                sum.add(&h).unwrap();
            }
        }
    }
    sum
}

/// Runs loadgen shard `i` of 3 on load host `i`, its schedule starting at
/// `start_at` (seconds since the epoch).
fn shard(ns: &str, target: &str, i: u64, hlog: &Path, start_at: &str) -> Value {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_loadgen")]);
    let (rate, dur, flows) = (RATE.to_string(), DURATION_S.to_string(), FLOWS.to_string());
    cmd.args(["--target", target, "--rate", &rate, "--duration", &dur]);
    cmd.args(["--flows", &flows, "--threads", "2", "--warmup", "0"]);
    cmd.args(["--shard", &format!("{i}/{SHARDS}"), "--start-at", start_at]);
    cmd.args(["--json", "--hlog"]);
    cmd.arg(hlog);
    let out = run_loadgen(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "shard {i} failed: {stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("shard {i} JSON ({e}); stderr: {stderr}"))
}

#[test]
fn three_shards_on_three_hosts_merge_into_one_run() {
    if !prerequisite(netns::available(), "REQUIRE_NETNS", "root with ip and tc") {
        return;
    }
    let lan = BridgedLan::create(SHARDS as usize);
    let dir = std::env::temp_dir().join(format!("upp-multihost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scratch = Scratch(dir);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lan.server_ns, server_bin()]);
    cmd.args(["--bind", SERVER_IP, "--port", "0", "--threads", "2"]);
    cmd.args(["--stats-interval", "0", "--json"]);
    let srv = ServerProc::start_cmd(&mut cmd);
    let target = srv.addr.to_string();

    let hlogs: Vec<PathBuf> = (0..SHARDS)
        .map(|i| scratch.0.join(format!("shard-{i}.hlog")))
        .collect();
    // Time enough for all three to start, even on a busy machine.
    let start_at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        + Duration::from_secs(3);
    let start_at = format!("{:.3}", start_at.as_secs_f64());
    let runs: Vec<_> = (0..SHARDS)
        .map(|i| {
            let start_at = start_at.clone();
            let (ns, target, hlog) = (
                lan.host_ns[i as usize].clone(),
                target.clone(),
                hlogs[i as usize].clone(),
            );
            std::thread::spawn(move || shard(&ns, &target, i, &hlog, &start_at))
        })
        .collect();
    let reports: Vec<Value> = runs.into_iter().map(|t| t.join().unwrap()).collect();
    let server = srv.stop();
    assert!(server.status.success(), "{}", server.stderr);
    // A --start-at in the past is refused before anything is sent (were it
    // not, the datagrams would go only to the stopped server's address).
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &lan.host_ns[0],
        env!("CARGO_BIN_EXE_loadgen"),
    ]);
    cmd.args(["--start-at", "1", "--target", &target, "--duration", "0.1"]);
    let out = run_loadgen(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--start-at 1 is past"), "{stderr}");
    drop(lan);

    let mut files = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        let p = scratch.0.join(format!("shard-{i}.json"));
        std::fs::write(&p, r.to_string()).unwrap();
        files.push(p);
    }
    files.extend(hlogs.iter().cloned());
    let out = run_loadgen(
        Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(["merge", "--json"])
            .args(&files),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "merge failed: {stderr}");
    let merged: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("merged: {merged}");

    // Each shard: its share of the one schedule, its flows, its label.
    let total = RATE * DURATION_S;
    for (i, r) in reports.iter().enumerate() {
        assert_loadgen_consistent(r);
        let share = (0..total).filter(|k| k % SHARDS == i as u64).count() as u64;
        // A shard the busy machine held back past the end stops with the
        // rest unsent (wrk2); what it sent and left unsent is its share.
        let (sent, unsent) = (count(r, "sent"), count(r, "unsent"));
        assert_eq!(sent + unsent, share, "shard {i}'s schedule: {r}");
        assert_eq!(r["shard"], format!("{i}/{SHARDS}"), "{r}");
        assert_eq!(count(r, "rate_global"), RATE, "{r}");
        let flows = (0..FLOWS)
            .filter(|f| u64::from(*f) % SHARDS == i as u64)
            .count();
        assert_eq!(count(r, "flows"), flows as u64, "{r}");
    }
    for key in [
        "sent",
        "received",
        "lost",
        "duplicates",
        "unsent",
        "flows",
        "send_errors",
    ] {
        let sum: u64 = reports.iter().map(|r| count(r, key)).sum();
        assert_eq!(count(&merged, key), sum, "merged {key}: {merged}");
    }
    assert_eq!(
        count(&merged, "sent") + count(&merged, "unsent"),
        total,
        "{merged}"
    );
    assert_eq!(count(&merged, "flows"), u64::from(FLOWS));
    assert_eq!(count(&merged, "rate_requested"), RATE, "{merged}");
    assert_eq!(count(&merged, "shards"), SHARDS, "{merged}");

    // Percentiles of the summed histogram, as the report prints them.
    let sum = sum_hlogs(&hlogs);
    assert_eq!(
        sum.len(),
        count(&merged, "received"),
        "every reply is in the hlogs"
    );
    let us = |v: u64| Value::from(v as f64 / 1000.0);
    for (key, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
        assert_eq!(
            merged["latency_us"][key],
            us(sum.value_at_quantile(q)),
            "{key}: {merged}"
        );
    }
    assert_eq!(merged["latency_us"]["max"], us(sum.max()), "{merged}");

    // The server saw every measured packet that was not lost on the way.
    let s = json(&server.stdout);
    let (rx, _) = assert_reconciled(&s);
    let (sent, lost) = (count(&merged, "sent"), count(&merged, "lost"));
    assert_eq!(rx, sent - lost, "server rx vs merged sent - lost: {s}");
}
