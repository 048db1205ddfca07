//! End-to-end tests of the `server` binary: echoes, truncation, counters,
//! pools, I/O modes, signals and error messages.

mod util;

use std::process::{Command, Stdio};
use std::time::Duration;

use util::*;

const SIZES: [usize; 5] = [0, 1, 64, 1472, 2048];

fn echo_sizes_from_many_clients(args: &[&str]) {
    let srv = ServerProc::start(args);
    let clients: Vec<_> = (0..8).map(|_| client_socket(srv.addr)).collect();
    let mut sent = 0;
    for (ci, c) in clients.iter().enumerate() {
        for &n in &SIZES {
            let p = pattern(n, ci as u8);
            assert_eq!(echo(c, srv.addr, &p), p, "size {n} client {ci}");
            sent += 1;
        }
    }
    let f = srv.stop();
    assert!(f.status.success(), "exit {:?}: {}", f.status, f.stderr);
    let r = json(&f.stdout);
    let (rx, tx) = assert_reconciled(&r);
    assert_eq!((rx, tx), (sent, sent));
    let workers = r["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 4);
    let per_worker_rx: u64 = workers
        .iter()
        .map(|w| w["rx_packets"].as_u64().unwrap())
        .sum();
    assert_eq!(per_worker_rx, sent);
    for w in workers {
        let pool = &w["pool"];
        assert_eq!(pool["capacity"], 1000);
        assert_eq!(pool["in_use"], 0);
        assert!(pool["high_water"].as_u64().unwrap() >= 1);
        // One batch posted to the receive call plus the batch being
        // processed; loopback never refuses a send, so nothing is held.
        assert!(
            pool["high_water"].as_u64().unwrap() <= 64,
            "more than two batches in flight on an unloaded loopback"
        );
        assert!(w["backlog_high_water"].as_u64().unwrap() <= 32);
        assert_eq!(pool["exhaustion_events"], 0);
    }
    assert_eq!(r["latency_us"]["count"].as_u64(), Some(sent));
    // Memory: four pools of 1000 buffers of 64 KiB (GRO on: room for a
    // train), plus metadata and free lists.
    let pool_bytes = r["pool_bytes"].as_u64().unwrap();
    assert!(
        pool_bytes > 4 * 1000 * 65536 && pool_bytes < 4 * 1000 * (65536 + 300),
        "{pool_bytes}"
    );
    assert!(r["peak_rss_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn reuseport_four_workers_echo_every_size_byte_exact() {
    echo_sizes_from_many_clients(&["--threads", "4", "--reuseport", "--json"]);
}

#[test]
fn shared_socket_four_workers_echo_every_size_byte_exact() {
    echo_sizes_from_many_clients(&["--threads", "4", "--json"]);
}

#[test]
fn reuseport_spreads_flows_over_workers() {
    let srv = ServerProc::start(&["--threads", "4", "--reuseport", "--json"]);
    let clients: Vec<_> = (0..64).map(|_| client_socket(srv.addr)).collect();
    for c in &clients {
        assert_eq!(echo(c, srv.addr, b"x"), b"x");
    }
    let r = json(&srv.stop().stdout);
    let busy = r["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["rx_packets"].as_u64().unwrap() > 0)
        .count();
    // 64 random source ports over 4 sockets: all four get some with overwhelming probability.
    assert!(busy >= 2, "flows not spread: {r}");
}

#[test]
fn oversized_datagram_is_dropped_and_counted_never_echoed_truncated() {
    let srv = ServerProc::start(&["--threads", "2", "--packet-size", "512", "--json"]);
    let c = client_socket(srv.addr);
    expect_silence(&c, srv.addr, &pattern(513, 1), Duration::from_millis(300));
    let p = pattern(512, 2);
    assert_eq!(echo(&c, srv.addr, &p), p);
    let r = json(&srv.stop().stdout);
    assert_reconciled(&r);
    assert_eq!(r["drops"]["truncated"], 1);
    assert_eq!(r["rx_packets"], 2);
    assert_eq!(r["tx_packets"], 1);
    assert_eq!(
        r["rx_bytes"],
        513 + 512,
        "rx_bytes counts the full length of a truncated datagram"
    );
}

#[test]
fn counters_reconcile_after_a_burst_from_several_flows() {
    let srv = ServerProc::start(&["--threads", "2", "--reuseport", "--json"]);
    let clients: Vec<_> = (0..4).map(|_| client_socket(srv.addr)).collect();
    let mut sent = 0u64;
    let mut got = 0u64;
    // Paced in rounds small enough for the socket buffers, so nothing is lost.
    for round in 0..25 {
        for c in &clients {
            for i in 0..20 {
                c.send_to(&pattern(100 + i, round), srv.addr).unwrap();
                sent += 1;
            }
        }
        for c in &clients {
            let mut buf = [0u8; 512];
            for _ in 0..20 {
                c.recv_from(&mut buf).expect("echo");
                got += 1;
            }
        }
    }
    let mut c = client_socket(srv.addr);
    // One oversized datagram too, so a drop reason takes part in the sum.
    c = {
        c.send_to(&[0u8; 4000], srv.addr).unwrap();
        sent += 1;
        c
    };
    assert_eq!(echo(&c, srv.addr, b"last"), b"last");
    sent += 1;
    got += 1;
    let r = json(&srv.stop().stdout);
    let (rx, tx) = assert_reconciled(&r);
    assert_eq!(rx + r["kernel_drops"].as_u64().unwrap(), sent);
    assert_eq!(tx, got);
    assert_eq!(r["drops"]["truncated"], 1);
}

#[test]
fn epoll_and_spin_modes_echo() {
    for mode in ["epoll", "spin"] {
        let srv = ServerProc::start(&["--threads", "1", "--io", mode, "--json"]);
        let c = client_socket(srv.addr);
        for &n in &SIZES {
            let p = pattern(n, 9);
            assert_eq!(echo(&c, srv.addr, &p), p, "mode {mode} size {n}");
        }
        let f = srv.stop();
        assert!(f.status.success());
        let (rx, _) = assert_reconciled(&json(&f.stdout));
        assert_eq!(rx, SIZES.len() as u64);
    }
}

#[test]
fn sigterm_when_idle_prints_text_summary_and_exits_zero() {
    let srv = ServerProc::start(&["--threads", "4", "--reuseport"]);
    let f = srv.stop_with(libc::SIGTERM);
    assert!(f.status.success(), "{:?} {}", f.status, f.stderr);
    assert!(f.stdout.contains("server summary"), "{}", f.stdout);
    assert!(f.stdout.contains("reconciled    yes"), "{}", f.stdout);
    assert_eq!(f.stdout.matches("returned all").count(), 4, "{}", f.stdout);
}

#[test]
fn a_second_signal_exits_at_once() {
    let srv = ServerProc::start(&["--threads", "1"]);
    srv.signal(libc::SIGINT);
    let f = srv.stop_with(libc::SIGTERM);
    assert_eq!(f.status.code(), Some(130), "{}", f.stderr);
}

#[test]
fn sighup_prints_summary_and_keeps_serving() {
    let mut srv = ServerProc::start(&["--threads", "1"]);
    let c = client_socket(srv.addr);
    assert_eq!(echo(&c, srv.addr, b"before"), b"before");
    srv.signal(libc::SIGHUP);
    assert!(srv.wait_stderr(|l| l.contains("server summary")).is_some());
    assert_eq!(echo(&c, srv.addr, b"after"), b"after");
    assert!(srv.stop().status.success());
}

#[test]
fn periodic_stats_line_goes_to_stderr_and_json_stays_clean() {
    let mut srv = ServerProc::start_exact(&[
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--threads",
        "2",
        "--stats-interval",
        "0.1",
        "--json",
    ]);
    let c = client_socket(srv.addr);
    assert_eq!(echo(&c, srv.addr, b"hi"), b"hi");
    let line = srv
        .wait_stderr(|l| l.contains("rx ") && l.contains("lat us p50"))
        .expect("a stats line");
    for field in [
        "tx ",
        "drops",
        "send_err",
        "recv_err",
        "kernel_drops",
        "pool in-use/hw",
        "exh",
        "p99.9",
    ] {
        assert!(line.contains(field), "missing {field} in {line}");
    }
    let f = srv.stop();
    json(&f.stdout); // stdout holds only the JSON report
}

#[test]
fn verbose_logs_sender_length_and_preview() {
    let mut srv = ServerProc::start(&["--threads", "1", "-v"]);
    let c = client_socket(srv.addr);
    assert_eq!(echo(&c, srv.addr, b"hello"), b"hello");
    let me = c.local_addr().unwrap().to_string();
    let line = srv
        .wait_stderr(|l| l.contains(&me))
        .expect("a packet log line");
    assert!(line.contains("len 5"), "{line}");
    assert!(
        line.contains("68 65 6c 6c 6f") && line.contains("|hello|"),
        "{line}"
    );
}

#[test]
fn dual_stack_bind_serves_ipv4_and_ipv6() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 on this host; skipping");
        return;
    }
    let srv = ServerProc::start_exact(&[
        "--port",
        "0",
        "--bind",
        "::",
        "--stats-interval",
        "0",
        "--threads",
        "2",
    ]);
    let port = srv.addr.port();
    let v4 = client_socket(format!("127.0.0.1:{port}").parse().unwrap());
    assert_eq!(
        echo(&v4, format!("127.0.0.1:{port}").parse().unwrap(), b"v4"),
        b"v4"
    );
    let v6 = client_socket(format!("[::1]:{port}").parse().unwrap());
    assert_eq!(
        echo(&v6, format!("[::1]:{port}").parse().unwrap(), b"v6"),
        b"v6"
    );
    assert!(srv.stop().status.success());
}

#[test]
fn address_in_use_names_the_address_and_exits_one() {
    let holder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    let out = Command::new(server_bin())
        .args(["--bind", "127.0.0.1", "--port", &port])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("ss -ulnp"), "{err}");
}

#[test]
fn permission_denied_on_a_low_port_explains_the_fix() {
    // Needs root to drop to an unprivileged user; skipped elsewhere.
    let is_root = std::env::var("USER").map(|u| u == "root").unwrap_or(false) || running_as_root();
    let setpriv = std::path::Path::new("/usr/bin/setpriv").exists();
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .unwrap_or_default();
    if !is_root || !setpriv || start.trim().parse::<u32>().unwrap_or(0) <= 7 {
        eprintln!("cannot provoke EACCES here; skipping");
        return;
    }
    let out = Command::new("/usr/bin/setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            server_bin(),
            "--port",
            "7",
            "--bind",
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("Permission denied") && err.contains("execut") {
        eprintln!("binary not executable by nobody; skipping: {err}");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("127.0.0.1:7"), "{err}");
    assert!(
        err.contains("CAP_NET_BIND_SERVICE") && err.contains("1024"),
        "{err}"
    );
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn usage_errors_exit_two_and_name_the_flag() {
    for (args, needle) in [
        (vec!["--threads", "0"], "--threads"),
        (vec!["--bind", "not-an-ip"], "--bind"),
        (vec!["--packet-size", "0"], "--packet-size"),
        (vec!["--io", "carrier-pigeon"], "--io"),
        (vec!["--stats-interval", "-1"], "--stats-interval"),
    ] {
        let out = Command::new(server_bin()).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn positional_port_like_the_seed() {
    // `server PORT` as in the seed's `./server 8888` (here port 0: any free port).
    let srv = ServerProc::start_exact(&[
        "0",
        "--bind",
        "127.0.0.1",
        "--threads",
        "1",
        "--stats-interval",
        "0",
    ]);
    let c = client_socket(srv.addr);
    assert_eq!(echo(&c, srv.addr, b"seed"), b"seed");
    assert!(srv.stop().status.success());
}

#[test]
fn client_binary_verifies_against_real_server() {
    let srv = ServerProc::start(&["--threads", "4", "--reuseport"]);
    let out = Command::new(env!("CARGO_BIN_EXE_client"))
        .args(["127.0.0.1", &srv.addr.port().to_string(), "test"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("4 bytes from") && text.contains("rtt="),
        "{text}"
    );
    assert!(srv.stop().status.success());
}

#[test]
fn stats_interval_out_of_range_is_a_usage_error_naming_the_range() {
    for v in ["1e300", "1e19", "1e-9", "-1", "0.01", "86401", "nan", "inf"] {
        let out = Command::new(server_bin())
            .args(["--port", "0", "--bind", "127.0.0.1", "--stats-interval", v])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{v}: {err}");
        assert!(err.contains("--stats-interval"), "{v}: {err}");
        assert!(err.contains("0.05") && err.contains("86400"), "{v}: {err}");
    }
    // The ends of the range start (and stop cleanly).
    for v in ["0", "0.05", "86400"] {
        let f =
            ServerProc::start_exact(&["--port", "0", "--bind", "127.0.0.1", "--stats-interval", v])
                .stop();
        assert_eq!(f.status.code(), Some(0), "{v}: {}", f.stderr);
    }
}

#[test]
fn a_configuration_larger_than_memory_is_refused_before_allocating() {
    let out = std::process::Command::new(server_bin())
        .args(["--port", "0", "--bind", "127.0.0.1", "--threads", "1024"])
        .args(["--pool-size", "10000000", "--stats-interval", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not enough memory") && err.contains("MiB"),
        "{err}"
    );
    assert!(err.contains("--pool-size"), "{err}");
}
