//! Worker-level tests through the library: pool exhaustion and receive /
//! send errors, which the binary cannot be made to show on demand.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use udp_packet_pool::counters::SharedCounters;
use udp_packet_pool::io as sys;
use udp_packet_pool::packet::PacketPool;
use udp_packet_pool::process::{DropReason, Pipeline};
use udp_packet_pool::samples;
use udp_packet_pool::worker::{IoMode, Worker};

fn worker(pool_size: usize, batch: usize, io: IoMode) -> (Worker, UdpSocket, Arc<SharedCounters>) {
    let (w, s, c, _) = worker_with_stop(pool_size, batch, io);
    (w, s, c)
}

fn worker_with_stop(
    pool_size: usize,
    batch: usize,
    io: IoMode,
) -> (Worker, UdpSocket, Arc<SharedCounters>, Arc<AtomicBool>) {
    let stop = Arc::new(AtomicBool::new(false));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr_holder = sock.try_clone().unwrap();
    let (mut sinks, source) = samples::channels(1);
    // Keep the metrics end alive for the test's duration.
    std::mem::forget(source);
    let shared = Arc::new(SharedCounters::default());
    let w = Worker::new(
        0,
        sock,
        io,
        PacketPool::new(pool_size, 2048),
        batch,
        Pipeline::echo(),
        sinks.remove(0),
        shared.clone(),
        stop.clone(),
    )
    .unwrap();
    (w, addr_holder, shared, stop)
}

#[test]
fn exhausted_pool_drops_and_counts_then_recovers() {
    let (mut w, server, shared) = worker(4, 4, IoMode::Blocking);
    let to = server.local_addr().unwrap();
    // Hold every buffer, as a stage that queued packets would.
    let held: Vec<_> = (0..4).map(|_| w.pool_mut().alloc().unwrap()).collect();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    for i in 0..3u8 {
        client.send_to(&[i; 10], to).unwrap();
    }
    for _ in 0..3 {
        w.poll_once().unwrap();
    }
    let c = *w.counters();
    assert_eq!(c.rx_packets, 3);
    assert_eq!(c.drops[DropReason::PoolExhausted.index()], 3);
    assert_eq!(c.tx_packets, 0);
    assert_eq!(c.unaccounted(), 0);
    assert!(w.pool_mut().stats().exhaustion_events >= 3);
    let mut buf = [0u8; 64];
    assert!(
        client.recv_from(&mut buf).is_err(),
        "nothing may be echoed while exhausted"
    );
    // Give the buffers back: service resumes.
    for s in held {
        w.pool_mut().free(s);
    }
    client.send_to(b"back", to).unwrap();
    w.poll_once().unwrap();
    let (n, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"back");
    assert_eq!(w.counters().unaccounted(), 0);
    assert_eq!(
        shared.snapshot().rx_packets,
        4,
        "counters published to the metrics side"
    );
}

#[test]
fn icmp_errors_are_counted_never_fatal() {
    // With IP_RECVERR, an echo to a closed port comes back as ECONNREFUSED on
    // the next receive or send call: a real receive/send error on demand.
    let (mut w, server, _) = worker(64, 8, IoMode::Blocking);
    sys::enable_ip_recverr(server.as_raw_fd()).unwrap();
    let to = server.local_addr().unwrap();
    let gone = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..3 {
        gone.send_to(b"bye", to).unwrap();
    }
    drop(gone);
    let live = UdpSocket::bind("127.0.0.1:0").unwrap();
    live.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 64];
    let mut answered = false;
    while Instant::now() < deadline && !answered {
        w.poll_once().expect("ICMP errors must not end the worker");
        live.send_to(b"alive", to).unwrap();
        w.poll_once().expect("ICMP errors must not end the worker");
        answered = matches!(live.recv_from(&mut buf), Ok((5, _)));
    }
    let c = *w.counters();
    let unreachable = c.send_errors[0];
    let refused = c
        .recv_errors
        .iter()
        .find(|e| e.0 == libc::ECONNREFUSED)
        .map_or(0, |e| e.1);
    // The ICMP error shows on a receive or send call (the socket's pending
    // error) or, if the error queue was read first (which clears it), in
    // the error-queue count: never lost.
    let queued = c
        .icmp_errors
        .iter()
        .find(|e| e.0 == libc::ECONNREFUSED)
        .map_or(0, |e| e.1);
    assert!(
        refused + unreachable + queued >= 1,
        "no ICMP error was counted: {c:?}"
    );
    assert!(answered, "the worker stopped echoing after an ICMP error");
    assert_eq!(c.unaccounted(), 0, "{c:?}");
}

#[test]
fn stop_flag_ends_a_running_worker_and_every_buffer_comes_back() {
    for io in [IoMode::Blocking, IoMode::Epoll, IoMode::Spin, IoMode::Uring] {
        let (w, server, shared, stop) = worker_with_stop(16, 8, io);
        let to = server.local_addr().unwrap();
        let t = std::thread::spawn(move || w.run());
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 8];
        client.send_to(b"ping", to).unwrap();
        assert_eq!(client.recv_from(&mut buf).unwrap().0, 4);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let c = t.join().unwrap().unwrap();
        assert_eq!((c.rx_packets, c.tx_packets), (1, 1), "{io:?}");
        assert_eq!(c.pool.in_use, 0, "{io:?}: buffers still out at exit");
        assert_eq!(shared.snapshot(), c, "{io:?}: final counters published");
    }
}

#[test]
fn pool_smaller_than_batch_means_smaller_batches_not_exhaustion() {
    let (mut w, server, _) = worker(2, 32, IoMode::Blocking);
    let to = server.local_addr().unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    for i in 0..10u8 {
        client.send_to(&[i; 8], to).unwrap();
    }
    let mut buf = [0u8; 16];
    let mut got = 0;
    for _ in 0..50 {
        if got == 10 {
            break;
        }
        w.poll_once().unwrap();
        while let Ok((8, _)) = {
            client.set_nonblocking(true).unwrap();
            let r = client.recv_from(&mut buf);
            client.set_nonblocking(false).unwrap();
            r
        } {
            got += 1;
        }
    }
    let c = *w.counters();
    assert_eq!((c.rx_packets, c.tx_packets), (10, 10));
    assert_eq!(w.pool_mut().stats().exhaustion_events, 0);
    assert_eq!(w.pool_mut().stats().high_water, 2);
}

#[test]
fn interrupted_receive_is_retried_not_counted() {
    use std::os::unix::thread::JoinHandleExt;
    // A handler for SIGUSR1 so the signal interrupts instead of killing. A
    // receive with SO_RCVTIMEO set fails with EINTR even under SA_RESTART.
    let hits = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(libc::SIGUSR1, hits.clone()).unwrap();
    let (w, server, _, stop) = worker_with_stop(16, 8, IoMode::Blocking);
    let to = server.local_addr().unwrap();
    let t = std::thread::spawn(move || w.run());
    let pthread = t.as_pthread_t();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 8];
    for i in 0..20u8 {
        std::thread::sleep(Duration::from_millis(5));
        // SAFETY: the worker thread is alive (joined only below) and
        // SIGUSR1 has a handler installed above.
        assert_eq!(unsafe { libc::pthread_kill(pthread, libc::SIGUSR1) }, 0);
        client.send_to(&[i; 3], to).unwrap();
        assert_eq!(
            client.recv_from(&mut buf).unwrap().0,
            3,
            "echo after signal {i}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let c = t.join().unwrap().expect("EINTR must not end the worker");
    assert!(
        hits.load(std::sync::atomic::Ordering::Relaxed),
        "the signal was delivered"
    );
    assert_eq!(
        c.recv_errors.total(),
        0,
        "EINTR is retried, not counted: {c:?}"
    );
    assert_eq!((c.rx_packets, c.tx_packets), (20, 20));
}
