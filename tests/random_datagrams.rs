//! Random datagrams through every server mode, at library level: the plain
//! echo and the `--sockperf` pipeline, each in the blocking, epoll, spin and
//! uring I/O modes. A seeded generator (reproducible; the seed is printed) sends
//! a few hundred datagrams of random length (0..1400, edge lengths often;
//! many exceed the 512-byte buffers and must be dropped as truncated) and
//! random bytes; for the sockperf pipeline most of them carry a
//! valid-looking sockperf header with random flags.
//!
//! After shutdown no worker may have failed, the books balance, every
//! datagram sent was received, the server never amplifies (no more
//! datagrams or bytes out than in), and the client gets back exactly the
//! echoes a correct server owes: each datagram that fit, unchanged (plain)
//! or with the CLIENT flag cleared (sockperf, requests only).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use udp_packet_pool::process::Pipeline;
use udp_packet_pool::server::{self, ServerConfig};
use udp_packet_pool::sockperf::{
    self, SockperfReply, FLAG_CLIENT, FLAG_PONG_REQUEST, FLAG_WARMUP, HEADER_LEN,
};
use udp_packet_pool::worker::IoMode;

/// Buffer size of the servers under test.
const PACKET_SIZE: usize = 512;
/// Datagrams sent to each server.
const DATAGRAMS: usize = 300;
/// Longest wait for the echoes (a hang guard, not a timing assertion).
const GUARD: Duration = Duration::from_secs(10);

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// One random datagram; with `sockperf`, most of them (when long enough)
/// get a sockperf header with random flags and a plausible length field.
fn datagram(rng: &mut Rng, sockperf: bool) -> Vec<u8> {
    // Half fit the buffer; edge lengths (empty, around the sockperf header
    // and the buffer size) come up often.
    const EDGES: [usize; 8] = [0, 1, 13, 14, 15, 511, 512, 513];
    let len = match rng.below(8) {
        0 => EDGES[rng.below(8) as usize],
        1..=3 => rng.below(PACKET_SIZE as u64 + 1) as usize,
        _ => rng.below(1400) as usize,
    };
    let mut d = rng.bytes(len);
    if sockperf && len >= HEADER_LEN && rng.below(4) != 0 {
        let mut flags = rng.below(8) as u16; // CLIENT, PONG_REQUEST, WARMUP
        if rng.below(2) == 0 {
            flags = FLAG_CLIENT | FLAG_PONG_REQUEST; // make requests common
        }
        let declared = if rng.below(2) == 0 {
            len as u32
        } else {
            rng.next() as u32
        };
        let mut p = sockperf::Packet::new_checked(&mut d[..]).unwrap();
        p.set_seq(rng.next());
        p.set_flags(flags);
        p.set_declared_len(declared);
    }
    d
}

/// The echo a correct server owes for `d`, if any.
fn owed(d: &[u8], sockperf: bool) -> Option<Vec<u8>> {
    if d.len() > PACKET_SIZE {
        return None;
    }
    if !sockperf {
        return Some(d.to_vec());
    }
    let p = sockperf::Packet::new_checked(d).ok()?;
    let f = p.flags();
    if f & FLAG_CLIENT == 0 || f & FLAG_PONG_REQUEST == 0 || f & FLAG_WARMUP != 0 {
        return None;
    }
    let mut e = d.to_vec();
    sockperf::Packet::new_unchecked(&mut e[..]).set_flags(f & !FLAG_CLIENT);
    Some(e)
}

/// Everything the client got back.
#[derive(Default)]
struct Received {
    echoes: Vec<Vec<u8>>,
    bytes: u64,
}

/// Reads echoes until `stop`, from the server's address only.
fn reader(sock: UdpSocket, server: SocketAddr, stop: Arc<AtomicBool>) -> Arc<Mutex<Received>> {
    let got = Arc::new(Mutex::new(Received::default()));
    let g = got.clone();
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 70_000];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                assert_eq!(from, server, "a datagram from a stranger");
                let mut r = g.lock().unwrap();
                r.echoes.push(buf[..n].to_vec());
                r.bytes += n as u64;
            }
        }
    });
    got
}

fn run(io: IoMode, sockperf: bool, seed: u64) {
    let what = format!("io {io:?}, sockperf {sockperf}, seed {seed:#x}");
    eprintln!("random datagrams: {what}");
    let cfg = ServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        stats_interval: None,
        threads: 2,
        packet_size: PACKET_SIZE,
        io,
        ..ServerConfig::default()
    };
    let handle = server::start_with(&cfg, |_| {
        if sockperf {
            Pipeline::echo().with(SockperfReply)
        } else {
            Pipeline::echo()
        }
    })
    .unwrap();
    let server = handle.local_addr();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let _ = socket2::SockRef::from(&client).set_recv_buffer_size(4 << 20);
    let stop = Arc::new(AtomicBool::new(false));
    let got = reader(client.try_clone().unwrap(), server, stop.clone());

    let mut rng = Rng(seed);
    let mut expected: HashMap<Vec<u8>, i64> = HashMap::new();
    let (mut sent_bytes, mut owed_count) = (0u64, 0usize);
    for i in 0..DATAGRAMS {
        let d = datagram(&mut rng, sockperf);
        client.send_to(&d, server).unwrap();
        sent_bytes += d.len() as u64;
        if let Some(e) = owed(&d, sockperf) {
            *expected.entry(e).or_default() += 1;
            owed_count += 1;
        }
        if i % 20 == 19 {
            // Pacing: nothing may be dropped by a full socket buffer.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // Wait (bounded) for the owed echoes, then a little more for extras.
    let deadline = Instant::now() + GUARD;
    while got.lock().unwrap().echoes.len() < owed_count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    let report = handle.shutdown().unwrap();
    stop.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(50));
    let got = std::mem::take(&mut *got.lock().unwrap());

    eprintln!(
        "  sent {DATAGRAMS} ({sent_bytes} B), owed {owed_count}, got {} ({} B); \
         server rx {} ({} B) tx {} ({} B) drops {:?} kernel_drops {}",
        got.echoes.len(),
        got.bytes,
        report.rx_packets,
        report.rx_bytes,
        report.tx_packets,
        report.tx_bytes,
        report.drops,
        report.kernel_drops
    );
    assert!(
        report.worker_failures.is_empty(),
        "{what}: {:?}",
        report.worker_failures
    );
    assert_eq!(report.unaccounted, 0, "{what}");
    assert!(report.buffers_returned, "{what}");
    assert_eq!(report.kernel_drops, 0, "{what}: paced, nothing may drop");
    assert_eq!(report.rx_packets, DATAGRAMS as u64, "{what}");
    assert_eq!(
        report.rx_packets,
        report.tx_packets + report.dropped() + report.send_failed(),
        "{what}: the books balance"
    );
    // No amplification, as the server counts it and as the client sees it.
    assert!(report.tx_packets <= report.rx_packets, "{what}");
    assert!(report.tx_bytes <= report.rx_bytes, "{what}");
    assert!(got.echoes.len() <= DATAGRAMS, "{what}");
    assert!(got.bytes <= sent_bytes, "{what}");
    assert_eq!(report.tx_packets, got.echoes.len() as u64, "{what}");
    assert_eq!(report.tx_bytes, got.bytes, "{what}");
    // Exactly the owed echoes, each once (order across workers is free).
    for e in &got.echoes {
        let n = expected.entry(e.clone()).or_default();
        *n -= 1;
        assert!(
            *n >= 0,
            "{what}: an echo nobody owed ({} bytes, first {:02x?})",
            e.len(),
            &e[..e.len().min(16)]
        );
    }
    let missing: i64 = expected.values().sum();
    assert_eq!(missing, 0, "{what}: owed echoes that never came");
}

/// A different seed per mode, reproducible.
fn seed(io: IoMode, sockperf: bool) -> u64 {
    0x5eed_0000 + (io as u64) * 2 + u64::from(sockperf) + 1
}

#[test]
fn plain_echo_blocking() {
    run(IoMode::Blocking, false, seed(IoMode::Blocking, false));
}

#[test]
fn plain_echo_epoll() {
    run(IoMode::Epoll, false, seed(IoMode::Epoll, false));
}

#[test]
fn plain_echo_spin() {
    run(IoMode::Spin, false, seed(IoMode::Spin, false));
}

#[test]
fn plain_echo_uring() {
    run(IoMode::Uring, false, seed(IoMode::Uring, false));
}

#[test]
fn sockperf_uring() {
    run(IoMode::Uring, true, seed(IoMode::Uring, true));
}

#[test]
fn sockperf_blocking() {
    run(IoMode::Blocking, true, seed(IoMode::Blocking, true));
}

#[test]
fn sockperf_epoll() {
    run(IoMode::Epoll, true, seed(IoMode::Epoll, true));
}

#[test]
fn sockperf_spin() {
    run(IoMode::Spin, true, seed(IoMode::Spin, true));
}
