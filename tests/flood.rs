//! A flood from many distinct sources (all of 127.0.0.0/8 is local, so a
//! test can send from 800 different /24 prefixes without raw sockets): the
//! server's memory stays flat (the rate table is allocated and touched at
//! start) and every prefix gets exactly its burst, no more.

mod util;

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use util::*;

/// Resident set size of process `pid` (`VmRSS`), bytes.
fn rss(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

#[test]
fn many_sources_memory_stays_flat_and_each_prefix_gets_its_burst() {
    let srv = ServerProc::start(&["--json", "--rate-limit", "2", "--rate-burst", "2"]);
    // Warm up from one source first (pool buffers, sample buffers, stacks),
    // so that what follows measures only what many sources add.
    let warm = client_socket(srv.addr);
    for _ in 0..200 {
        warm.send_to(&[0u8; 100], srv.addr).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = rss(srv.pid());
    let sources = 800u32;
    let per_source = 5u64;
    let socks: Vec<UdpSocket> = (0..sources)
        .map(|i| {
            // 127.X.Y.1: one socket in each of 800 distinct /24 prefixes.
            let ip = Ipv4Addr::new(127, 1 + (i / 250) as u8, (i % 250) as u8, 1);
            let s = UdpSocket::bind((ip, 0)).expect("bind a 127/8 source");
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    for s in &socks {
        for k in 0..per_source {
            s.send_to(&[k as u8; 100], srv.addr).unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut buf = [0u8; 256];
    let mut total = 0u64;
    for s in &socks {
        let mut n = 0;
        while s.recv(&mut buf).is_ok() {
            n += 1;
        }
        assert!(n <= 2, "a prefix got {n} echoes, over its burst of 2");
        total += n;
    }
    let after = rss(srv.pid());
    let r = json(&srv.stop().stdout);
    let (rx, tx) = assert_reconciled(&r);
    let warm_rx = 200;
    assert_eq!(rx, u64::from(sources) * per_source + warm_rx, "{r}");
    assert_eq!(tx - total, 2, "the warm-up source gets its burst too: {r}");
    assert_eq!(
        total,
        u64::from(sources) * 2,
        "every prefix got exactly its burst: {r}"
    );
    assert_eq!(r["drops"]["rate_limited"].as_u64(), Some(rx - tx));
    let grew = after.saturating_sub(before);
    eprintln!(
        "{sources} sources: RSS {} KiB before, {} KiB after (+{} KiB); rate table {} KiB",
        before / 1024,
        after / 1024,
        grew / 1024,
        r["rate_table_bytes"].as_u64().unwrap() / 1024
    );
    assert!(
        grew < 1 << 20,
        "RSS grew by {grew} bytes under a flood from {sources} sources"
    );
}
