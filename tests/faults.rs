//! Fault paths: partial and refused sends held in the backlog (fault
//! injection, since loopback never refuses a send), a stage that panics and
//! a socket that becomes unusable (both must stop every worker and still
//! yield the report), and wake-ups with a shared socket in epoll mode.

mod util;

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use udp_packet_pool::counters::SharedCounters;
use udp_packet_pool::io::SendFault;
use udp_packet_pool::packet::{PacketBuffer, PacketPool};
use udp_packet_pool::process::{Pipeline, Stage, Verdict};
use udp_packet_pool::samples;
use udp_packet_pool::server::{self, ServerConfig};
use udp_packet_pool::worker::{IoMode, Worker};

use util::*;

fn config(threads: usize, io: IoMode) -> ServerConfig {
    ServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        threads,
        stats_interval: None,
        io,
        ..ServerConfig::default()
    }
}

#[test]
fn partial_and_refused_sends_are_held_in_order_and_reconcile() {
    for io in [IoMode::Blocking, IoMode::Epoll, IoMode::Spin] {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = sock.local_addr().unwrap();
        let (mut sinks, source) = samples::channels(1);
        let shared = Arc::new(SharedCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut w = Worker::new(
            0,
            sock,
            io,
            PacketPool::new(64, 2048),
            16,
            Pipeline::echo(),
            sinks.remove(0),
            shared,
            stop,
        )
        .unwrap();
        // At most 3 datagrams per sendmmsg, and every 4th call refused with EAGAIN.
        w.set_send_fault(Some(SendFault {
            max_per_call: 3,
            fail_every: 4,
            errno: libc::EAGAIN,
        }));
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_nonblocking(true).unwrap();
        let total = 200u32;
        for i in 0..total {
            client.send_to(&i.to_le_bytes(), to).unwrap();
        }
        let mut got = Vec::new();
        let deadline = Instant::now() + GUARD;
        let mut buf = [0u8; 16];
        while got.len() < total as usize && Instant::now() < deadline {
            w.poll_once().unwrap();
            while let Ok(n) = client.recv(&mut buf) {
                got.push(u32::from_le_bytes(buf[..n].try_into().unwrap()));
            }
        }
        let c = *w.counters();
        assert_eq!(
            got,
            (0..total).collect::<Vec<_>>(),
            "{io:?}: every echo, in order"
        );
        assert_eq!((c.rx_packets, c.tx_packets), (200, 200), "{io:?} {c:?}");
        assert!(c.send_stalls[0] > 0, "EAGAIN stalls counted: {c:?}");
        assert!(c.send_stalls[2] > 0, "partial sends counted: {c:?}");
        assert_eq!(c.send_failed(), 0, "backpressure is never a send error");
        assert_eq!(c.unaccounted(), 0);
        drop(source);
    }
}

/// A stage that panics on the payload `panic`.
struct PanicOn;

impl Stage for PanicOn {
    fn process(&mut self, pkt: &mut PacketBuffer<'_>) -> Verdict {
        if pkt.payload() == b"panic" {
            panic!("stage asked to panic");
        }
        Verdict::Echo
    }
}

#[test]
fn a_panicking_stage_stops_every_worker_and_the_report_names_it() {
    let h = server::start_with(&config(3, IoMode::Blocking), |_| {
        Pipeline::echo().with(PanicOn)
    })
    .unwrap();
    let c = client_socket(h.local_addr());
    assert_eq!(echo(&c, h.local_addr(), b"fine"), b"fine");
    c.send_to(b"panic", h.local_addr()).unwrap();
    let deadline = Instant::now() + GUARD;
    while !h.is_stopping() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(h.is_stopping(), "a panic must stop the server");
    let r = h.join().expect("the report survives a worker panic");
    assert_eq!(r.worker_failures.len(), 1, "{:?}", r.worker_failures);
    let f = &r.worker_failures[0];
    assert!(
        f.starts_with("worker ") && f.contains("panicked: stage asked to panic"),
        "{f}"
    );
    // Everything counted before the panic is there: the echo, and the
    // datagram being processed when it panicked (received, never decided).
    assert_eq!(r.rx_packets, 2, "{r}");
    assert_eq!(r.tx_packets, 1);
    assert_eq!(r.unaccounted, 1);
}

/// The inode of the socket behind `fd` (`socket:[N]`).
fn socket_inode(fd: i32) -> Option<String> {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let s = link.to_string_lossy().into_owned();
    s.strip_prefix("socket:[")?
        .strip_suffix(']')
        .map(str::to_owned)
}

#[test]
fn a_socket_that_becomes_unusable_stops_the_server_with_the_report() {
    let h = server::start(&config(2, IoMode::Blocking)).unwrap();
    let addr = h.local_addr();
    let c = client_socket(addr);
    assert_eq!(echo(&c, addr, b"before"), b"before");
    // The workers share one socket through their own descriptors. Find one
    // of them (same inode as the one /proc/net/udp names for the port, but
    // not the metrics thread's: the highest-numbered is the metrics handle)
    // and put /dev/null in its place: the next receive gets ENOTSOCK.
    let udp = std::fs::read_to_string("/proc/net/udp").unwrap();
    let want = format!(":{:04X}", addr.port());
    let inode = udp
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() >= 13 && f[1].ends_with(&want))
        .map(|f| f[9].to_string())
        .expect("server socket listed");
    let mut fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| socket_inode(fd).as_deref() == Some(inode.as_str()))
        .collect();
    fds.sort_unstable();
    assert!(
        fds.len() >= 3,
        "2 worker handles + 1 metrics handle: {fds:?}"
    );
    let devnull = std::fs::File::open("/dev/null").unwrap();
    // fds[0] is one of the workers' (the metrics handle is opened last).
    let target = fds[0];
    // Put /dev/null in its place (dup2 via the standard library is not
    // available; libc is a dependency of the package).
    let r = dup2(devnull.as_raw_fd(), target);
    assert_eq!(r, target);
    let deadline = Instant::now() + GUARD;
    while !h.is_stopping() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(h.is_stopping(), "an unusable socket must stop the server");
    let r = h.join().expect("report");
    assert_eq!(r.worker_failures.len(), 1, "{:?}", r.worker_failures);
    let f = &r.worker_failures[0];
    assert!(f.contains("socket unusable"), "{f}");
    // Which worker's descriptor was lowest depends on what other tests in
    // this binary opened meanwhile: any one worker, named.
    assert!(
        f.starts_with("worker 0") || f.starts_with("worker 1"),
        "{f}"
    );
    assert_eq!((r.rx_packets, r.tx_packets, r.unaccounted), (1, 1, 0));
}

fn dup2(from: i32, to: i32) -> i32 {
    extern "C" {
        fn dup2(oldfd: i32, newfd: i32) -> i32;
    }
    // SAFETY: both are open descriptors of this process; dup2 only swaps
    // which file `to` refers to.
    unsafe { dup2(from, to) }
}

#[test]
fn shared_socket_epoll_wakes_one_worker_per_datagram() {
    // Four workers wait on one socket. Without EPOLLEXCLUSIVE each datagram
    // wakes all four: one receives it, and the kernel puts the other three
    // back to sleep (its re-check hides most from epoll_wait, so they show
    // as sleeps, not as spurious returns). With it, about one wakes.
    let h = server::start(&config(4, IoMode::Epoll)).unwrap();
    let addr = h.local_addr();
    let c = client_socket(addr);
    let n = 400;
    for i in 0..n {
        let p = pattern(32, i as u8);
        assert_eq!(echo(&c, addr, &p), p);
    }
    let r = h.shutdown().unwrap();
    assert_eq!(r.rx_packets, n);
    eprintln!(
        "{n} echoes: {} wake-ups, {} spurious, {} worker sleeps",
        r.wakeups, r.spurious_wakeups, r.worker_sleeps
    );
    assert!(r.wakeups >= n, "{r}");
    assert!(
        r.spurious_wakeups < n / 2,
        "{} spurious wake-ups for {n} datagrams",
        r.spurious_wakeups
    );
    // One sleep per datagram for the worker that echoed it (plus idle
    // timeouts); all four workers sleeping again would be about 4 per datagram.
    assert!(
        r.worker_sleeps < 2 * n,
        "{} worker sleeps for {n} datagrams",
        r.worker_sleeps
    );
}
