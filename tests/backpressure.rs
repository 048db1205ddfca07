//! Send backpressure for real: the server's replies leave through a `tbf`
//! qdisc slower than the offered load, between two network namespaces.
//! The unsent echoes must be held in the pool (backlog grows, the pool is
//! exhausted and says so), every counter must reconcile exactly against
//! what the client sent and received, and service must recover once the
//! load stops. Needs root, `ip` and `tc`; CI sets `REQUIRE_NETNS=1`.

mod util;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use util::netns::{self, NetPair, CLIENT_IP, SERVER_IP};
use util::*;

/// What the client host saw.
struct ClientRun {
    sent: u64,
    received: u64,
    probe_echoed: bool,
}

/// Sends `total` datagrams of 1000 bytes at about 4000/s, counts every
/// echo, then checks that a fresh probe is answered.
fn client_load(server: SocketAddr, total: u64) -> ClientRun {
    let sock = UdpSocket::bind((CLIENT_IP, 0)).unwrap();
    let s2 = socket2::SockRef::from(&sock);
    let _ = s2.set_recv_buffer_size(8 << 20);
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let reader = sock.try_clone().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let probe_seen = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (r2, p2, s3) = (received.clone(), probe_seen.clone(), stop.clone());
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !s3.load(Ordering::Relaxed) {
            if let Ok(n) = reader.recv(&mut buf) {
                r2.fetch_add(1, Ordering::Relaxed);
                if &buf[..n] == b"probe after the load" {
                    p2.store(true, Ordering::Relaxed);
                }
            }
        }
    });
    let payload = [0x5au8; 1000];
    let mut sent = 0;
    while sent < total {
        for _ in 0..40 {
            sock.send_to(&payload, server).unwrap();
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // The load is over: wait for the backlog to drain (echoes stop coming).
    let deadline = Instant::now() + GUARD;
    let mut last = u64::MAX;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let now = received.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    // Service recovered: a new datagram is echoed.
    sock.send_to(b"probe after the load", server).unwrap();
    sent += 1;
    let deadline = Instant::now() + GUARD;
    while !probe_seen.load(Ordering::Relaxed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    ClientRun {
        sent,
        received: received.load(Ordering::Relaxed),
        probe_echoed: probe_seen.load(Ordering::Relaxed),
    }
}

fn throttled_run(io: &str, sndbuf: Option<&str>) -> (ClientRun, serde_json::Value) {
    let net = NetPair::create();
    // 4 Mbit/s is about 480 echoes of 1000 bytes a second: an eighth of the load.
    net.throttle_server_egress(&["rate", "4mbit", "burst", "8kb", "latency", "400ms"]);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &net.server_ns, server_bin()]);
    cmd.args(["--bind", SERVER_IP, "--port", "0", "--threads", "1"]);
    cmd.args([
        "--pool-size",
        "256",
        "--batch",
        "32",
        "--send-deadline",
        "300",
    ]);
    cmd.args(["--stats-interval", "0", "--json", "--io", io]);
    if let Some(b) = sndbuf {
        cmd.args(["--sndbuf", b]);
    }
    let srv = ServerProc::start_cmd(&mut cmd);
    let addr = srv.addr;
    let run = net.in_client(move || client_load(addr, 6000));
    let f = srv.stop();
    assert!(f.status.success(), "{}", f.stderr);
    drop(net);
    (run, json(&f.stdout))
}

fn check(run: &ClientRun, r: &serde_json::Value) {
    eprintln!(
        "client sent {} received {}; server rx {} tx {} kernel_drops {} drops {} stalls {} worker {}",
        run.sent, run.received, r["rx_packets"], r["tx_packets"], r["kernel_drops"], r["drops"],
        r["send_stalls"], r["workers"][0]
    );
    let (rx, tx) = assert_reconciled(r);
    let kernel_drops = r["kernel_drops"].as_u64().unwrap();
    assert_eq!(
        rx + kernel_drops,
        run.sent,
        "every datagram sent reached the socket: {r}"
    );
    assert_eq!(
        tx, run.received,
        "echoed = what the client got, exactly: {r}"
    );
    assert!(run.probe_echoed, "service did not recover after the load");
    let w = &r["workers"][0];
    let backlog_hw = w["backlog_high_water"].as_u64().unwrap();
    assert!(backlog_hw >= 100, "the backlog should grow: {r}");
    assert!(w["pool"]["exhaustion_events"].as_u64().unwrap() > 0, "{r}");
    assert!(r["drops"]["pool_exhausted"].as_u64().unwrap() > 0, "{r}");
    // A full backlog (about 220 echoes) takes ~460 ms to leave at 480/s:
    // longer than the 300 ms deadline, so the oldest are dropped.
    assert!(r["drops"]["send_deadline"].as_u64().unwrap() > 0, "{r}");
    let stalls: u64 = r["send_stalls"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(stalls > 0, "{r}");
    assert_eq!(r["backlog"], 0);
}

#[test]
fn throttled_replies_are_held_in_the_pool_and_counters_reconcile() {
    if !prerequisite(netns::available(), "REQUIRE_NETNS", "root with ip and tc") {
        return;
    }
    // Default send buffer: it fills before the qdisc does, so sends get
    // EAGAIN, and the epoll worker waits for EPOLLOUT.
    let (run, r) = throttled_run("epoll", None);
    check(&run, &r);
    assert!(r["send_stalls"]["would_block"].as_u64().unwrap() > 0, "{r}");
    // A send buffer far larger than the qdisc's queue: the qdisc refuses
    // first, which only IP_RECVERR makes visible (ENOBUFS); without it the
    // kernel would report those echoes as sent.
    let (run, r) = throttled_run("blocking", Some("8388608"));
    check(&run, &r);
    assert!(r["send_stalls"]["no_bufs"].as_u64().unwrap() > 0, "{r}");
}
