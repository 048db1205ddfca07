//! Overload: the server's counters against the kernel's own.
//!
//! A stopped server (`SIGSTOP`) cannot drain its socket, so a flood fills
//! the receive buffer and the kernel drops the rest. The report must then
//! agree exactly with the socket's line in `/proc/net/udp` (the
//! `SO_MEMINFO` drop counter), and received + kernel drops must equal what
//! was sent. `SO_RXQ_OVFL` alone misses these drops: it is attached only to
//! datagrams queued after them.

mod util;

use std::time::{Duration, Instant};

use util::*;

#[test]
fn stopped_server_flood_reconciles_exactly_with_proc_net_udp() {
    let srv = ServerProc::start(&["--threads", "1", "--rcvbuf", "65536", "--json"]);
    let port = srv.addr.port();
    let before = proc_net_udp(port).expect("server socket in /proc/net/udp");
    assert_eq!(before.drops, 0);
    let rcvbuf_errors_before = snmp_udp("RcvbufErrors");
    srv.signal(libc::SIGSTOP);
    let c = client_socket(srv.addr);
    let sent = 20_000u64;
    for i in 0..sent {
        c.send_to(&pattern(64, i as u8), srv.addr).unwrap();
    }
    let stopped = proc_net_udp(port).unwrap();
    srv.signal(libc::SIGCONT);
    // Let the server drain what was queued (bounded wait, not a timing assertion).
    let deadline = Instant::now() + GUARD;
    while proc_net_udp(port).unwrap().rx_queue > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let drained = proc_net_udp(port).unwrap();
    assert_eq!(drained.rx_queue, 0, "server never drained its socket");
    assert_eq!(drained.drops, stopped.drops, "no drops after the flood");
    let rcvbuf_errors = snmp_udp("RcvbufErrors") - rcvbuf_errors_before;
    let f = srv.stop();
    assert!(f.status.success(), "{}", f.stderr);
    let r = json(&f.stdout);
    let (rx, _) = assert_reconciled(&r);
    let kernel_drops = r["kernel_drops"].as_u64().unwrap();
    assert!(kernel_drops > 0, "64 KiB cannot hold 20,000 datagrams: {r}");
    assert_eq!(kernel_drops, drained.drops, "report vs /proc/net/udp");
    assert_eq!(rx + kernel_drops, sent, "received + kernel drops = sent");
    assert_eq!(r["reached_socket"].as_u64(), Some(sent));
    // System-wide, so other sockets may add to it; it can never be less.
    assert!(
        rcvbuf_errors >= kernel_drops,
        "snmp {rcvbuf_errors} < {kernel_drops}"
    );
    // The old figure: SO_RXQ_OVFL never saw these drops (nothing was queued after them).
    assert!(r["kernel_drops_rxq_ovfl"].as_u64().unwrap() < kernel_drops);
}

#[test]
fn reuseport_sockets_add_their_drop_counters() {
    let srv = ServerProc::start(&[
        "--threads",
        "2",
        "--reuseport",
        "--rcvbuf",
        "65536",
        "--json",
    ]);
    srv.signal(libc::SIGSTOP);
    // Many source ports, so the kernel spreads them over both sockets.
    let clients: Vec<_> = (0..16).map(|_| client_socket(srv.addr)).collect();
    let mut sent = 0u64;
    for round in 0..1_000 {
        for c in &clients {
            c.send_to(&pattern(64, round as u8), srv.addr).unwrap();
            sent += 1;
        }
    }
    let (_, proc_drops) = proc_sum(srv.addr.port());
    srv.signal(libc::SIGCONT);
    let deadline = Instant::now() + GUARD;
    while proc_sum(srv.addr.port()).0 > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let f = srv.stop();
    let r = json(&f.stdout);
    let (rx, _) = assert_reconciled(&r);
    let kernel_drops = r["kernel_drops"].as_u64().unwrap();
    assert_eq!(kernel_drops, proc_drops);
    assert_eq!(rx + kernel_drops, sent);
}

/// Sums of the receive queues and `drops` columns over every socket bound
/// to `port`.
fn proc_sum(port: u16) -> (u64, u64) {
    let want = format!(":{port:04X}");
    let text = std::fs::read_to_string("/proc/net/udp").unwrap();
    text.lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 13 && f[1].ends_with(&want))
        .map(|f| {
            let q = u64::from_str_radix(f[4].split(':').nth(1).unwrap(), 16).unwrap();
            (q, f[f.len() - 1].parse::<u64>().unwrap())
        })
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}
