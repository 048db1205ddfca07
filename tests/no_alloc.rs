//! Proves the hot path does not touch the heap: a counting global allocator
//! counts allocations made on the worker's thread while it echoes thousands
//! of datagrams in steady state (after a warm-up round).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use udp_packet_pool::counters::SharedCounters;
use udp_packet_pool::packet::PacketPool;
use udp_packet_pool::process::Pipeline;
use udp_packet_pool::samples;
use udp_packet_pool::worker::{IoMode, Worker};

struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static WORKER_ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static IS_WORKER: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if ARMED.load(Ordering::Relaxed) && IS_WORKER.with(|w| w.get()) {
        WORKER_ALLOCS.fetch_add(1, Ordering::Relaxed);
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

fn echo_round(client: &UdpSocket, to: std::net::SocketAddr, n: usize) {
    let mut buf = [0u8; 256];
    for chunk in 0..n / 50 {
        for i in 0..50 {
            client.send_to(&[(chunk + i) as u8; 200], to).unwrap();
        }
        for _ in 0..50 {
            client.recv_from(&mut buf).expect("echo");
        }
    }
}

#[test]
fn steady_state_worker_loop_allocates_nothing() {
    // The counter itself works: an allocation on a marked thread is seen.
    IS_WORKER.with(|f| f.set(true));
    ARMED.store(true, Ordering::Relaxed);
    let probe = std::hint::black_box(Box::new([0u8; 64]));
    ARMED.store(false, Ordering::Relaxed);
    IS_WORKER.with(|f| f.set(false));
    drop(probe);
    assert!(
        WORKER_ALLOCS.load(Ordering::Relaxed) >= 1,
        "counting allocator is not counting"
    );
    for io in [IoMode::Blocking, IoMode::Epoll] {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = sock.local_addr().unwrap();
        let (mut sinks, source) = samples::channels(1);
        let stop = Arc::new(AtomicBool::new(false));
        let w = Worker::new(
            0,
            sock,
            io,
            PacketPool::new(256, 2048),
            32,
            Pipeline::echo(),
            sinks.remove(0),
            Arc::new(SharedCounters::default()),
            stop.clone(),
        )
        .unwrap();
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
            IS_WORKER.with(|f| f.set(true));
            w.run()
        });
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        echo_round(&client, to, 1000); // warm-up: first-use allocations happen here
        WORKER_ALLOCS.store(0, Ordering::Relaxed);
        ARMED.store(true, Ordering::Relaxed);
        echo_round(&client, to, 5000);
        ARMED.store(false, Ordering::Relaxed);
        let allocs = WORKER_ALLOCS.load(Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        let c = t.join().unwrap().unwrap();
        let samples = drain.join().unwrap();
        assert_eq!(c.tx_packets, 6000, "{io:?}");
        assert!(samples > 0, "latency samples reached the metrics side");
        assert_eq!(
            allocs, 0,
            "{io:?}: worker allocated {allocs} times while echoing 5000 datagrams"
        );
    }
}
