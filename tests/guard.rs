//! Protection against hostile sources, through the real `server` binary:
//! loop protection (a real RFC 862 echo on port 7 aimed at the server, the
//! server's own port), `--allow`, the per-prefix rate limit with four
//! `--reuseport` workers, and amplification of exactly 1 in every reply mode.
//! Loopback only (127.0.0.0/8 is all local); bounded durations.

mod util;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use util::*;

/// An RFC 862 echo service on `addr` (a thread), counting what it answers.
struct Responder {
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sock: UdpSocket,
    t: Option<thread::JoinHandle<()>>,
}

impl Responder {
    fn start(addr: &str) -> Responder {
        let sock = UdpSocket::bind(addr).expect("bind responder");
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let (count, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (c, s, r) = (count.clone(), stop.clone(), sock.try_clone().unwrap());
        let t = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, from)) = r.recv_from(&mut buf) {
                    c.fetch_add(1, Ordering::Relaxed);
                    let _ = r.send_to(&buf[..n], from);
                }
            }
        });
        Responder {
            count,
            stop,
            sock,
            t: Some(t),
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.t.take() {
            let _ = t.join();
        }
    }
}

/// One datagram from a real echo service on port 7 to the server: with the
/// loop guard the server refuses it; with it lifted, echo and server answer
/// each other until stopped (the CVE-1999-0103 loop).
#[test]
fn a_service_port_cannot_start_a_loop() {
    if !prerequisite(is_root(), "REQUIRE_NETNS", "root (to bind port 7)") {
        return;
    }
    for (lifted, args) in [
        (false, vec!["--json"]),
        (true, vec!["--json", "--allow-privileged-ports"]),
    ] {
        let srv = ServerProc::start(&args);
        let echo7 = Responder::start("127.0.0.7:7");
        echo7
            .sock
            .send_to(b"one forged datagram", srv.addr)
            .unwrap();
        thread::sleep(Duration::from_millis(300));
        let answered = echo7.count.load(Ordering::Relaxed);
        drop(echo7);
        let r = json(&srv.stop().stdout);
        assert_reconciled(&r);
        if lifted {
            assert!(answered > 10, "no loop without the guard? {answered} {r}");
        } else {
            assert_eq!(answered, 0, "the server answered port 7: {r}");
            assert_eq!(r["drops"]["bad_source_port"], 1, "{r}");
            assert_eq!(r["tx_packets"], 0);
        }
    }
}

#[test]
fn own_port_and_allowlist() {
    let srv = ServerProc::start(&["--json", "--allow", "127.0.0.2/32", "--allow", "::1"]);
    let port = srv.addr.port();
    // From the server's own port (another host's echo server, say).
    let twin = UdpSocket::bind(("127.0.0.3", port)).unwrap();
    twin.send_to(b"from my own port", srv.addr).unwrap();
    // From outside the allowed networks.
    let outsider = client_socket(srv.addr);
    expect_silence(
        &outsider,
        srv.addr,
        b"not allowed",
        Duration::from_millis(300),
    );
    // From inside.
    let insider = UdpSocket::bind("127.0.0.2:0").unwrap();
    insider.set_read_timeout(Some(GUARD)).unwrap();
    assert_eq!(echo(&insider, srv.addr, b"allowed"), b"allowed");
    let r = json(&srv.stop().stdout);
    assert_reconciled(&r);
    assert_eq!(r["drops"]["bad_source_port"], 1, "{r}");
    assert_eq!(r["drops"]["not_allowed"], 1, "{r}");
    assert_eq!(r["tx_packets"], 1);
}

/// 64 source ports of one address at ~2,000/s for a second, against 4
/// `--reuseport` workers limited to 200/s after a burst of 50: one prefix,
/// one worker, one limit.
#[test]
fn one_prefix_one_limit_with_four_reuseport_workers() {
    let srv = ServerProc::start(&[
        "--json",
        "--threads",
        "4",
        "--reuseport",
        "--rate-limit",
        "200",
        "--rate-burst",
        "50",
    ]);
    let to = srv.addr;
    let socks: Vec<UdpSocket> = (0..64)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let got = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = socks
        .iter()
        .map(|s| {
            let (s, got, stop) = (s.try_clone().unwrap(), got.clone(), stop.clone());
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            thread::spawn(move || {
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if s.recv(&mut buf).is_ok() {
                        got.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    let mut sent = 0u64;
    for round in 0..100 {
        for s in socks.iter().skip(round % 4).step_by(4) {
            s.send_to(&[round as u8; 32], to).unwrap();
            sent += 1;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let elapsed = start.elapsed().as_secs_f64();
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for t in readers {
        t.join().unwrap();
    }
    let r = json(&srv.stop().stdout);
    let (rx, tx) = assert_reconciled(&r);
    let echoed = got.load(Ordering::Relaxed);
    assert_eq!(rx + r["kernel_drops"].as_u64().unwrap(), sent);
    assert_eq!(echoed, tx);
    // The limit, with room for scheduling: the burst plus 200/s over the
    // time the load really took (+0.5 s). Four independent limits would be
    // about four times this.
    let ceiling = 50 + (200.0 * (elapsed + 0.5)) as u64;
    assert!(
        tx >= 50 && tx <= ceiling,
        "echoed {tx} of {sent} in {elapsed:.2} s (ceiling {ceiling}): {r}"
    );
    assert_eq!(r["drops"]["rate_limited"].as_u64(), Some(rx - tx));
    let busy = r["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["rx_packets"].as_u64().unwrap() > 0)
        .count();
    assert_eq!(busy, 1, "one prefix is steered to one worker: {r}");
    assert_eq!(r["rate_limited_top"][0][0], "127.0.0.0/24", "{r}");
    eprintln!("rate limit 200/s burst 50, 4 workers: {tx} of {sent} echoed in {elapsed:.2} s");
}

/// Whatever arrives, no reply mode sends more datagrams or bytes than it got.
#[test]
fn amplification_is_at_most_one_in_every_mode() {
    for mode in [&[][..], &["--sockperf"][..]] {
        let mut args = vec!["--json", "--packet-size", "512"];
        args.extend_from_slice(mode);
        let srv = ServerProc::start(&args);
        let c = client_socket(srv.addr);
        c.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let (mut sent, mut sent_bytes, mut got, mut got_bytes) = (0u64, 0u64, 0u64, 0u64);
        let mut buf = [0u8; 2048];
        for i in 0..600 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 1000) as usize;
            let mut d: Vec<u8> = (0..len).map(|k| (seed >> (k % 56)) as u8).collect();
            if i % 3 == 0 && len >= 14 {
                // A well-formed sockperf request header (CLIENT | PONG_REQUEST).
                d[8..10].copy_from_slice(&3u16.to_be_bytes());
                d[10..14].copy_from_slice(&(len as u32).to_be_bytes());
            }
            c.send_to(&d, srv.addr).unwrap();
            sent += 1;
            sent_bytes += len as u64;
            while let Ok(n) = c.recv(&mut buf) {
                got += 1;
                got_bytes += n as u64;
            }
        }
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        while let Ok(n) = c.recv(&mut buf) {
            got += 1;
            got_bytes += n as u64;
        }
        let r = json(&srv.stop().stdout);
        let (rx, tx) = assert_reconciled(&r);
        assert_eq!(rx, sent, "{mode:?}");
        assert_eq!(tx, got, "{mode:?}");
        assert!(
            got <= sent && got_bytes <= sent_bytes,
            "{mode:?}: {got}/{got_bytes} for {sent}/{sent_bytes}"
        );
        assert!(r["tx_bytes"].as_u64() <= r["rx_bytes"].as_u64(), "{r}");
        assert!(got > 0, "{mode:?}: nothing was answered at all");
    }
}

/// An IPv4 + UDP datagram with any source (written with a raw socket,
/// `IPPROTO_RAW` implies `IP_HDRINCL`; UDP checksum 0 = none, allowed on IPv4).
fn forged(src: std::net::SocketAddrV4, dst: std::net::SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 1, 0, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.ip().octets());
    p.extend_from_slice(&dst.ip().octets());
    let mut sum: u32 = p
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// Sources no client has, written with a raw socket (Linux delivers them on
/// loopback): multicast, broadcast, 0/8, and the server's own address and
/// port (the one-datagram self-loop). All refused, nothing answered.
#[test]
fn forged_sources_are_refused() {
    if !prerequisite(is_root(), "REQUIRE_NETNS", "root (raw sockets)") {
        return;
    }
    let srv = ServerProc::start(&["--json"]);
    let dst = match srv.addr {
        std::net::SocketAddr::V4(a) => a,
        _ => unreachable!("the test server binds 127.0.0.1"),
    };
    let raw = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(libc::IPPROTO_RAW)),
    )
    .expect("raw socket");
    let to: socket2::SockAddr = std::net::SocketAddr::V4(dst).into();
    for src in ["224.0.0.5:40000", "255.255.255.255:40000", "0.0.0.1:40000"] {
        raw.send_to(&forged(src.parse().unwrap(), dst, b"forged"), &to)
            .unwrap();
    }
    // The self-loop: source = the server's own address and port.
    raw.send_to(&forged(dst, dst, b"loop"), &to).unwrap();
    thread::sleep(Duration::from_millis(300));
    let r = json(&srv.stop().stdout);
    assert_reconciled(&r);
    assert_eq!(r["rx_packets"], 4, "the kernel delivered all four: {r}");
    assert_eq!(r["drops"]["bad_source_addr"], 3, "{r}");
    assert_eq!(r["drops"]["bad_source_port"], 1, "{r}");
    assert_eq!(r["tx_packets"], 0, "{r}");
}
