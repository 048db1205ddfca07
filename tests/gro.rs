//! GRO trains in, GSO trains out: a sender of `UDP_SEGMENT` trains (one
//! `sendmsg` carrying many datagrams) on loopback reaches a GRO socket as
//! one coalesced buffer. Every datagram of a train must still be counted,
//! filtered, truncated and sampled on its own, and the echoes of the ones
//! kept go back as one train that the kernel cuts into the original
//! datagrams for a client without GRO. Without GRO (`--no-gro`, or a
//! kernel that refuses `UDP_GRO`, made so for one server process by a
//! seccomp filter) the same trains arrive one datagram at a time, with the
//! same counts.

mod util;

use util::seccomp::deny_sockopt;
use util::*;

use std::net::UdpSocket;
use std::time::Duration;

use udp_packet_pool::io::send_train;
use udp_packet_pool::packet::PacketBuffer;
use udp_packet_pool::process::{Pipeline, Stage, Verdict};
use udp_packet_pool::server::{self, ServerConfig};
use udp_packet_pool::worker::IoMode;

/// Drops datagrams whose first byte is odd (as `filtered`).
struct DropOdd;

impl Stage for DropOdd {
    fn process(&mut self, pkt: &mut PacketBuffer<'_>) -> Verdict {
        match pkt.payload().first() {
            Some(b) if b % 2 == 1 => Verdict::Drop(udp_packet_pool::process::DropReason::Filtered),
            _ => Verdict::Echo,
        }
    }
}

const TRAINS: u64 = 20;
const SEG: usize = 100;
/// Eight full segments and a short last one, segment i filled with byte i.
fn train() -> Vec<u8> {
    let mut t = Vec::new();
    for i in 0..9u8 {
        let len = if i == 8 { 37 } else { SEG };
        t.extend(vec![i; len]);
    }
    t
}

fn config(io: IoMode, gro: bool, packet_size: usize) -> ServerConfig {
    ServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        threads: 1,
        stats_interval: None,
        io,
        gro,
        packet_size,
        ..ServerConfig::default()
    }
}

/// Sends `TRAINS` trains and collects every echo (one datagram each).
fn run(cfg: &ServerConfig) -> (Vec<Vec<u8>>, udp_packet_pool::report::Report) {
    let h = server::start_with(cfg, |_| Pipeline::echo().with(DropOdd)).unwrap();
    let to = h.local_addr();
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    for _ in 0..TRAINS {
        assert_eq!(send_train(&c, to, &train(), SEG as u16).unwrap(), 837);
        // One train at a time: its echoes before the next is sent.
        while let Ok(n) = c.recv(&mut buf) {
            got.push(buf[..n].to_vec());
            if buf[0] == 8 || n == 0 {
                break;
            }
        }
    }
    while let Ok(n) = c.recv(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    h.stop();
    (got, h.join().unwrap())
}

#[test]
fn every_datagram_of_a_train_is_counted_and_filtered_on_its_own() {
    for io in [IoMode::Blocking, IoMode::Epoll, IoMode::Spin, IoMode::Uring] {
        for gro in [true, false] {
            let (got, r) = run(&config(io, gro, 2048));
            let what = format!("{io:?} gro {gro}: {r}");
            // Segments 0, 2, 4, 6 (100 bytes) and 8 (37 bytes) come back,
            // each as its own datagram, in order.
            let want: Vec<Vec<u8>> = (0..TRAINS)
                .flat_map(|_| [0u8, 2, 4, 6, 8].map(|i| vec![i; if i == 8 { 37 } else { SEG }]))
                .collect();
            assert_eq!(got, want, "{what}");
            assert_eq!(r.rx_packets, 9 * TRAINS, "{what}");
            assert_eq!(r.rx_bytes, 837 * TRAINS, "{what}");
            assert_eq!(r.tx_packets, 5 * TRAINS, "{what}");
            assert_eq!(r.tx_bytes, 437 * TRAINS, "{what}");
            assert_eq!(r.drops["filtered"], 4 * TRAINS, "{what}");
            assert_eq!(r.latency_us.count, 5 * TRAINS, "{what}");
            assert_eq!(r.unaccounted, 0, "{what}");
            if gro {
                assert_eq!(r.gro_trains, TRAINS, "each train arrived whole: {what}");
                assert_eq!(r.gro_datagrams, 9 * TRAINS, "{what}");
            } else {
                assert_eq!((r.gro_trains, r.gro_datagrams), (0, 0), "{what}");
            }
        }
    }
}

#[test]
fn a_train_of_datagrams_too_big_to_echo_is_never_echoed_cut() {
    // --packet-size 64: the 100-byte segments are truncated, each counted;
    // the short last one (37 bytes, byte 8: kept by the filter) is echoed.
    for gro in [true, false] {
        let (got, r) = run(&config(IoMode::Blocking, gro, 64));
        let what = format!("gro {gro}: {r}");
        assert_eq!(got, vec![vec![8u8; 37]; TRAINS as usize], "{what}");
        assert_eq!(r.rx_packets, 9 * TRAINS, "{what}");
        assert_eq!(r.drops["truncated"], 8 * TRAINS, "{what}");
        assert_eq!(r.tx_packets, TRAINS, "{what}");
        assert_eq!(r.unaccounted, 0, "{what}");
    }
}

/// A kernel that refuses `UDP_GRO` (as before Linux 5.0; `ENOPROTOOPT`
/// from `setsockopt`, made so for this one process): the server says so
/// once, runs without GRO, and counts every datagram of the trains sent
/// to it, which the kernel now delivers one at a time.
#[test]
fn without_udp_gro_the_server_says_so_and_counts_every_datagram() {
    let mut cmd = server_cmd(&["--threads", "1", "--json"]);
    deny_sockopt(
        &mut cmd,
        libc::SOL_UDP,
        libc::UDP_GRO,
        libc::ENOPROTOOPT as u32,
    );
    let srv = ServerProc::start_cmd(&mut cmd);
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut got = 0;
    let mut buf = [0u8; 2048];
    for _ in 0..TRAINS {
        send_train(&c, srv.addr, &train(), SEG as u16).unwrap();
        for _ in 0..9 {
            if c.recv(&mut buf).is_ok() {
                got += 1;
            }
        }
    }
    let f = srv.stop();
    assert!(f.status.success(), "{}", f.stderr);
    let r = json(&f.stdout);
    let why: Vec<_> = f.stderr.lines().filter(|l| l.contains("UDP_GRO")).collect();
    assert_eq!(why.len(), 1, "one line says why: {}", f.stderr);
    assert!(
        why[0].contains("Protocol not available") && why[0].contains("running without GRO"),
        "{}",
        why[0]
    );
    assert!(f.stderr.contains("GRO off"), "listening line: {}", f.stderr);
    assert_eq!(got, 9 * TRAINS, "{r}");
    assert_eq!(r["rx_packets"], 9 * TRAINS, "{r}");
    assert_eq!(r["tx_packets"], 9 * TRAINS, "{r}");
    assert_eq!(
        (r["gro_trains"].as_u64(), r["unaccounted"].as_i64()),
        (Some(0), Some(0)),
        "{r}"
    );
}

/// `MemAvailable` from `/proc/meminfo`, bytes.
fn mem_available() -> u64 {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = m
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap();
    kb * 1024
}

/// A pool whose 64 KiB GRO buffers would not fit in the memory available
/// but whose plain buffers do: the server runs without GRO and says why,
/// instead of refusing to start (a small machine's default configuration).
#[test]
fn where_gro_buffers_do_not_fit_the_server_runs_without_gro() {
    let pool = mem_available() / 65536 * 6 / 5;
    assert!(
        pool * 2400 < mem_available() / 2,
        "plain buffers must fit with room to spare"
    );
    let pool = pool.to_string();
    let srv = ServerProc::start(&["--threads", "1", "--pool-size", &pool, "--json"]);
    let c = client_socket(srv.addr);
    assert_eq!(echo(&c, srv.addr, b"still echoes"), b"still echoes");
    let f = srv.stop();
    assert!(f.status.success(), "{}", f.stderr);
    let why: Vec<_> = f.stderr.lines().filter(|l| l.contains("64 KiB")).collect();
    assert_eq!(why.len(), 1, "one line says why: {}", f.stderr);
    assert!(why[0].contains("running without GRO"), "{}", why[0]);
    assert!(f.stderr.contains("GRO off"), "{}", f.stderr);
    assert_reconciled(&json(&f.stdout));
}
