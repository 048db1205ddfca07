//! The io_uring worker (`--io uring`): truncation, pool exhaustion under a
//! burst (reconciled with the kernel's drops), shutdown returning every
//! buffer the kernel held, the server binary end to end, and the fallback
//! to epoll where io_uring is unavailable (made so for one server process
//! by a seccomp filter, see `deny_syscall`).

mod util;

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use udp_packet_pool::counters::{Counters, SharedCounters};
use udp_packet_pool::io as sys;
use udp_packet_pool::process::{DropReason, Pipeline};
use udp_packet_pool::samples;
use udp_packet_pool::worker::{IoMode, Worker};

use util::seccomp::deny_syscall;
use util::*;

/// A uring worker on a fresh loopback socket (receive buffer `rcvbuf`
/// bytes if given), and a handle to that socket.
fn uring_worker(
    pool: usize,
    batch: usize,
    rcvbuf: Option<usize>,
) -> (Worker, UdpSocket, Arc<AtomicBool>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    if let Some(n) = rcvbuf {
        sys::force_buffer_size(sock.as_raw_fd(), true, n).unwrap();
    }
    let holder = sock.try_clone().unwrap();
    let (mut sinks, source) = samples::channels(1);
    std::mem::forget(source);
    let stop = Arc::new(AtomicBool::new(false));
    let w = Worker::new(
        0,
        sock,
        IoMode::Uring,
        Worker::pool_for(IoMode::Uring, pool, 2048),
        batch,
        Pipeline::echo(),
        sinks.remove(0),
        Arc::new(SharedCounters::default()),
        stop.clone(),
    )
    .unwrap();
    (w, holder, stop)
}

/// Reads echoes until none comes for 200 ms.
fn drain(c: &UdpSocket) -> Vec<Vec<u8>> {
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = vec![0u8; 70_000];
    let mut got = Vec::new();
    while let Ok((n, _)) = c.recv_from(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    got
}

/// Polls until a round received nothing for a while.
fn poll_until_quiet(w: &mut Worker) {
    let mut last = u64::MAX;
    let mut quiet = 0;
    while quiet < 3 {
        w.poll_once().unwrap();
        let rx = w.counters().rx_packets;
        quiet = if rx == last { quiet + 1 } else { 0 };
        last = rx;
    }
}

#[test]
fn a_datagram_larger_than_the_buffer_is_dropped_as_truncated_never_echoed_cut() {
    let (mut w, server, _) = uring_worker(16, 8, None);
    let to = server.local_addr().unwrap();
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    // The payload room is exactly --packet-size: 2048 fits, 2049 does not.
    for n in [2049usize, 2048, 3000, 5] {
        c.send_to(&pattern(n, n as u8), to).unwrap();
    }
    poll_until_quiet(&mut w);
    let k = *w.counters();
    assert_eq!(k.rx_packets, 4, "{k:?}");
    assert_eq!(k.drops[DropReason::Truncated.index()], 2, "{k:?}");
    assert_eq!(k.rx_bytes, 2049 + 2048 + 3000 + 5, "full lengths counted");
    assert_eq!(k.unaccounted(), 0);
    let got = drain(&c);
    assert_eq!(
        got,
        vec![pattern(2048, 0), pattern(5, 5)],
        "only the whole ones, byte-exact"
    );
}

#[test]
fn a_burst_beyond_the_pool_counts_exhaustion_and_reconciles_with_kernel_drops() {
    // 8 buffers and a small receive buffer: the burst ends the multishot
    // receive with ENOBUFS (exhaustion), the rest waits in the socket
    // queue, and what the queue cannot hold is the kernel's drop.
    let (mut w, server, _) = uring_worker(8, 8, Some(64 * 1024));
    let fd = server.as_raw_fd();
    let to = server.local_addr().unwrap();
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    let _ = socket2::SockRef::from(&c).set_recv_buffer_size(8 << 20);
    const SENT: u64 = 2000;
    for i in 0..SENT {
        c.send_to(&pattern(200, i as u8), to).unwrap();
    }
    poll_until_quiet(&mut w);
    let k: Counters = *w.counters();
    let kernel = u64::from(sys::socket_drops(fd).unwrap());
    let stats = w.pool_mut().stats();
    eprintln!(
        "burst: rx {} tx {} kernel drops {kernel} exhaustion {} pool {stats:?}",
        k.rx_packets, k.tx_packets, stats.exhaustion_events
    );
    assert_eq!(
        k.rx_packets + kernel,
        SENT,
        "received + kernel drops == sent"
    );
    assert!(kernel > 0, "the small receive buffer overflowed");
    assert!(
        stats.exhaustion_events >= 1,
        "the ring ran dry at least once"
    );
    assert_eq!(
        k.drops[DropReason::PoolExhausted.index()],
        0,
        "nothing discarded by us"
    );
    assert_eq!((k.unaccounted(), k.tx_packets), (0, k.rx_packets));
    assert_eq!(drain(&c).len() as u64, k.tx_packets);
    assert_eq!(stats.in_use, 8, "every buffer posted back to the kernel");
}

#[test]
fn stopping_returns_every_buffer_the_kernel_held_and_accounts_for_a_burst_in_flight() {
    let (w, server, stop) = uring_worker(64, 16, None);
    let to = server.local_addr().unwrap();
    let t = std::thread::spawn(move || w.run());
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    let _ = socket2::SockRef::from(&c).set_recv_buffer_size(8 << 20);
    assert_eq!(echo(&c, to, b"ping"), b"ping");
    let started = Instant::now();
    // A burst still arriving while the stop flag is set.
    for i in 0..500u32 {
        c.send_to(&i.to_le_bytes(), to).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let k = t.join().unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "stop seen within the idle wake"
    );
    let kernel = u64::from(sys::socket_drops(server.as_raw_fd()).unwrap());
    let queued = {
        server.set_nonblocking(true).unwrap();
        let mut n = 0u64;
        let mut b = [0u8; 16];
        while server.recv(&mut b).is_ok() {
            n += 1;
        }
        n
    };
    assert_eq!(k.pool.in_use, 0, "buffers still out: {:?}", k.pool);
    assert_eq!(k.unaccounted(), 0, "{k:?}");
    assert_eq!(
        k.rx_packets + kernel + queued,
        501,
        "each datagram received, dropped by the kernel, or left queued"
    );
}

#[test]
fn server_binary_echoes_with_io_uring_and_returns_every_buffer() {
    let srv = ServerProc::start(&[
        "--threads",
        "2",
        "--io",
        "uring",
        "--json",
        "--packet-size",
        "512",
    ]);
    let c = client_socket(srv.addr);
    for n in [0usize, 1, 100, 512] {
        let p = pattern(n, 3);
        assert_eq!(echo(&c, srv.addr, &p), p, "size {n}");
    }
    expect_silence(&c, srv.addr, &pattern(513, 1), Duration::from_millis(200));
    let f = srv.stop();
    assert!(f.status.success(), "{}", f.stderr);
    let r = json(&f.stdout);
    let (rx, tx) = assert_reconciled(&r);
    assert!(
        !f.stderr.contains("unavailable"),
        "io_uring is available on this machine: {}",
        f.stderr
    );
    assert_eq!((rx, tx), (5, 4), "{r}");
    assert_eq!(r["drops"]["truncated"], 1);
    assert_eq!(r["latency_us"]["count"].as_u64(), Some(4));
    assert_eq!(r["latency_clock"], "kernel");
}

fn falls_back(nr: libc::c_long, errno: i32, says: &str) {
    let mut cmd = server_cmd(&["--threads", "1", "--io", "uring", "--json"]);
    deny_syscall(&mut cmd, nr, errno as u32);
    let srv = ServerProc::start_cmd(&mut cmd);
    let c = client_socket(srv.addr);
    assert_eq!(echo(&c, srv.addr, b"still echoes"), b"still echoes");
    let f = srv.stop();
    assert!(f.status.success(), "{}", f.stderr);
    assert_reconciled(&json(&f.stdout));
    let why: Vec<_> = f
        .stderr
        .lines()
        .filter(|l| l.contains("io_uring unavailable"))
        .collect();
    assert_eq!(why.len(), 1, "one line says why: {}", f.stderr);
    assert!(
        why[0].contains(says) && why[0].contains("falling back to --io epoll"),
        "{}",
        why[0]
    );
    assert!(
        f.stderr.contains("io Epoll"),
        "the listening line names the model run: {}",
        f.stderr
    );
}

#[test]
fn without_io_uring_the_server_says_why_and_falls_back_to_epoll() {
    // As with kernel.io_uring_disabled=2 (EPERM) or a kernel without it (ENOSYS).
    falls_back(
        libc::SYS_io_uring_setup,
        libc::EPERM,
        "io_uring_setup failed: Operation not permitted",
    );
    falls_back(
        libc::SYS_io_uring_setup,
        libc::ENOSYS,
        "kernel without io_uring",
    );
    // As on a kernel without provided-buffer rings (before 5.19).
    falls_back(
        libc::SYS_io_uring_register,
        libc::EINVAL,
        "buffer rings unsupported",
    );
}
