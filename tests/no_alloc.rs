//! Proves the hot path does not touch the heap: a counting global allocator
//! counts allocations made on the worker's thread while it echoes thousands
//! of datagrams in steady state (after a warm-up round), in every I/O mode,
//! with GRO trains, with the `-v` packet log, in `--sockperf` reply mode
//! and in `--psk-file` sealed echo.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use udp_packet_pool::counters::SharedCounters;
use udp_packet_pool::io::send_train;
use udp_packet_pool::logging::{self, LogThread, PacketLog};
use udp_packet_pool::packet::PacketPool;
use udp_packet_pool::process::Pipeline;
use udp_packet_pool::samples;
use udp_packet_pool::server;
use udp_packet_pool::sockperf::{self, SockperfReply};
use udp_packet_pool::worker::{IoMode, Worker};

struct Counting;

/// One counter slot per test, so the tests can run in parallel.
const SLOTS: usize = 14;
const NOT_COUNTED: usize = usize::MAX;
static ARMED: [AtomicBool; SLOTS] = [const { AtomicBool::new(false) }; SLOTS];
static WORKER_ALLOCS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

thread_local! {
    /// The slot this thread's allocations count in (worker threads only).
    static SLOT: Cell<usize> = const { Cell::new(NOT_COUNTED) };
    /// This test's client sends GSO trains (the worker runs with GRO).
    static TRAINS: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    let slot = SLOT.with(|s| s.get());
    if slot < SLOTS && ARMED[slot].load(Ordering::Relaxed) {
        WORKER_ALLOCS[slot].fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to the system allocator unchanged; counting
// touches only atomics and a const-initialised thread-local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Sends `n` datagrams made by `payload(i)` in rounds of 50 and waits for
/// every answer.
fn echo_round(
    client: &UdpSocket,
    to: std::net::SocketAddr,
    n: usize,
    payload: &dyn Fn(usize) -> Vec<u8>,
) {
    let mut buf = [0u8; 256];
    for _ in 0..n / 50 {
        // Made anew each round (sealed requests must not repeat).
        let datagrams: Vec<Vec<u8>> = (0..50).map(payload).collect();
        // With GRO: the same datagrams as 5 GSO trains of 10.
        let trains: Vec<Vec<u8>> = datagrams.chunks(10).map(|c| c.concat()).collect();
        if TRAINS.with(|t| t.get()) {
            for t in &trains {
                send_train(client, to, t, datagrams[0].len() as u16).unwrap();
            }
        } else {
            for d in &datagrams {
                client.send_to(d, to).unwrap();
            }
        }
        for _ in 0..50 {
            client.recv_from(&mut buf).expect("echo");
        }
    }
}

/// Plain echo payloads.
fn plain(i: usize) -> Vec<u8> {
    vec![i as u8; 200]
}

/// sockperf ping-pong requests (CLIENT | PONG_REQUEST), which get replies.
fn sockperf_request(i: usize) -> Vec<u8> {
    let mut m = vec![0u8; 200];
    m[..8].copy_from_slice(&(i as u64).to_be_bytes());
    m[8..10].copy_from_slice(&(sockperf::FLAG_CLIENT | sockperf::FLAG_PONG_REQUEST).to_be_bytes());
    m[10..14].copy_from_slice(&200u32.to_be_bytes());
    m
}

/// Runs one worker in `io` mode with `pipeline`, warms it up, then counts
/// its allocations (in counter `slot`) while it answers 5000 datagrams.
fn assert_worker_allocates_nothing(
    slot: usize,
    what: &str,
    io: IoMode,
    pipeline: Pipeline,
    payload: &dyn Fn(usize) -> Vec<u8>,
) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = sock.local_addr().unwrap();
    let (mut sinks, source) = samples::channels(1);
    let stop = Arc::new(AtomicBool::new(false));
    let gro = TRAINS.with(|t| t.get());
    let mut w = Worker::new(
        0,
        sock,
        io,
        PacketPool::new(256, if gro { server::GRO_BUFFER } else { 2048 }),
        32,
        pipeline,
        sinks.remove(0),
        Arc::new(SharedCounters::default()),
        stop.clone(),
    )
    .unwrap();
    if gro {
        w.enable_gro(2048).unwrap();
    }
    // A stand-in metrics thread that recycles sample buffers, as the real one does.
    let drain = std::thread::spawn(move || {
        let mut n = 0u64;
        while let Ok(b) = source.rx.recv() {
            n += b.samples.len() as u64;
            source.give_back(b.worker, b.samples);
        }
        n
    });
    let t = std::thread::spawn(move || {
        SLOT.with(|s| s.set(slot));
        w.run()
    });
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    echo_round(&client, to, 1000, payload); // warm-up: first-use allocations happen here
    WORKER_ALLOCS[slot].store(0, Ordering::Relaxed);
    ARMED[slot].store(true, Ordering::Relaxed);
    echo_round(&client, to, 5000, payload);
    ARMED[slot].store(false, Ordering::Relaxed);
    let allocs = WORKER_ALLOCS[slot].load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let c = t.join().unwrap().unwrap();
    let samples = drain.join().unwrap();
    assert_eq!(c.tx_packets, 6000, "{what}");
    if gro {
        assert_eq!(
            c.gro_datagrams, 6000,
            "{what}: every datagram came in a train"
        );
    }
    assert!(
        samples > 0,
        "{what}: latency samples reached the metrics side"
    );
    assert_eq!(
        allocs, 0,
        "{what}: worker allocated {allocs} times while answering 5000 datagrams"
    );
}

#[test]
fn the_counting_allocator_counts() {
    SLOT.with(|s| s.set(0));
    ARMED[0].store(true, Ordering::Relaxed);
    let probe = std::hint::black_box(Box::new([0u8; 64]));
    ARMED[0].store(false, Ordering::Relaxed);
    SLOT.with(|s| s.set(NOT_COUNTED));
    drop(probe);
    assert!(
        WORKER_ALLOCS[0].load(Ordering::Relaxed) >= 1,
        "counting allocator is not counting"
    );
}

#[test]
fn steady_state_worker_loop_allocates_nothing() {
    assert_worker_allocates_nothing(1, "blocking", IoMode::Blocking, Pipeline::echo(), &plain);
    assert_worker_allocates_nothing(2, "epoll", IoMode::Epoll, Pipeline::echo(), &plain);
}

#[test]
fn spin_mode_allocates_nothing() {
    assert_worker_allocates_nothing(3, "spin", IoMode::Spin, Pipeline::echo(), &plain);
}

#[test]
fn uring_mode_allocates_nothing() {
    assert_worker_allocates_nothing(7, "uring", IoMode::Uring, Pipeline::echo(), &plain);
}

#[test]
fn sockperf_reply_mode_allocates_nothing() {
    // As the server binary builds it for --sockperf.
    let p = Pipeline::echo().with(SockperfReply);
    assert_worker_allocates_nothing(4, "sockperf", IoMode::Blocking, p, &sockperf_request);
}

#[test]
fn sealed_echo_allocates_nothing() {
    use std::sync::Mutex;
    use udp_packet_pool::crypto::{Psk, ReplayTable, SealedEcho};
    use udp_packet_pool::wire::sealed::{self, Direction, NonceSeq};
    // As the server binary builds it for --psk-file: opened, checked
    // against the shared replay table, re-sealed in the pool buffer.
    let psk = Psk::from_bytes(&[0x42; 32]);
    let stage = SealedEcho::new(psk.clone(), Arc::new(ReplayTable::new(64))).unwrap();
    let nonces = Mutex::new(NonceSeq::new(Direction::Request, 3, 0));
    let request = |i| sealed::seal(psk.cipher(), &mut nonces.lock().unwrap(), &plain(i));
    let p = Pipeline::echo().with(stage);
    assert_worker_allocates_nothing(8, "psk", IoMode::Blocking, p, &request);
}

/// A logger that formats every record into a `String`, as a real one
/// (env_logger) does: on whichever thread calls `log!`.
struct FormattingLogger;

impl log::Log for FormattingLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        std::hint::black_box(record.args().to_string());
    }
    fn flush(&self) {}
}

static LOGGER: FormattingLogger = FormattingLogger;

#[test]
fn verbose_packet_log_allocates_nothing() {
    // With a logger that formats, so a line written from the worker's own
    // thread would be counted here.
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
    // As the server builds it for -v: every datagram offered to the log
    // queue (the limit is far above the rate), some dropped when it is full.
    let log = LogThread::spawn(logging::QUEUE_LINES).unwrap();
    let p = Pipeline::echo().with(PacketLog::new(0, 1_000_000, log.queue()));
    assert_worker_allocates_nothing(5, "-v", IoMode::Blocking, p, &plain);
    let s = log.finish(logging::STALL_LIMIT);
    assert!(s.joined, "the log thread ended once the worker was gone");
    assert_eq!(
        s.written + s.lost(),
        6000,
        "every datagram was offered: {s:?}"
    );
}

#[test]
fn guard_stages_allocate_nothing() {
    use std::sync::Arc;
    use udp_packet_pool::guard::allow::AllowList;
    use udp_packet_pool::guard::rate::{RateConfig, RateLimit, RateTable, TopLimited};
    use udp_packet_pool::guard::source::SourceGuard;
    // As server::start_with builds them: loop guard, allowlist, rate limit
    // (high enough that the steady state passes; limited datagrams take the
    // same path apart from the top-prefix count).
    let table = Arc::new(RateTable::new(RateConfig {
        pps: 1_000_000,
        burst: 1_000_000,
        table_size: 1024,
        ..RateConfig::default()
    }));
    let p = Pipeline::echo()
        .with(SourceGuard::new(7, false))
        .with(AllowList::new(vec!["127.0.0.0/8".parse().unwrap()]))
        .with(RateLimit::new(table, Arc::new(TopLimited::new(1)), 0));
    assert_worker_allocates_nothing(6, "guards", IoMode::Blocking, p, &plain);
}

#[test]
fn gro_trains_allocate_nothing() {
    TRAINS.with(|t| t.set(true));
    assert_worker_allocates_nothing(
        9,
        "gro blocking",
        IoMode::Blocking,
        Pipeline::echo(),
        &plain,
    );
    assert_worker_allocates_nothing(10, "gro epoll", IoMode::Epoll, Pipeline::echo(), &plain);
    assert_worker_allocates_nothing(11, "gro uring", IoMode::Uring, Pipeline::echo(), &plain);
    TRAINS.with(|t| t.set(false));
}

#[test]
fn capture_stages_allocate_nothing() {
    use udp_packet_pool::capture::{self, Capture, CaptureConfig};
    // As the server builds them for --capture --capture-echoes: records are
    // allocated at start and recycled between the worker and the writer.
    let path = std::env::temp_dir().join(format!("no-alloc-{}.pcap", std::process::id()));
    let cfg = CaptureConfig {
        path: path.clone(),
        echoes: true,
        queue: 64,
    };
    let mut cap = Capture::start(&cfg, 2048, "127.0.0.1:9".parse().unwrap()).unwrap();
    let p = capture::last_stage(capture::first_stage(Some(&cap)), Some(&cap));
    cap.seal();
    assert_worker_allocates_nothing(13, "capture", IoMode::Blocking, p, &plain);
    let s = cap.finish();
    assert_eq!(s.captured + s.capture_dropped, 2 * 6000, "{s:?}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn client_tracking_allocates_nothing() {
    use std::sync::atomic::AtomicU32;
    use udp_packet_pool::clients::{Broadcast, ClientDirectory, ClientTrack};
    // As server::start_with builds them with --protocol framed: tracking
    // (publishing every 100 ms) and the broadcast stage.
    let dir = ClientDirectory::new(1, 4096, 60_000_000_000);
    let admin = vec!["127.0.0.0/8".parse().unwrap()];
    let b = Broadcast::new(admin, Some(dir.clone()), Arc::new(AtomicU32::new(0)), 2048);
    let p = Pipeline::echo().with(ClientTrack::new(dir, 0)).with(b);
    assert_worker_allocates_nothing(12, "client tracking", IoMode::Blocking, p, &plain);
}
