//! `loadgen --mode pingpong`: back to back without `--rate` (like sockperf
//! ping-pong, no schedule, so no corrected latency), paced with it, and
//! corrected for coordinated omission when paced: an in-test responder that
//! stalls once for 200 ms must show up in the corrected latencies of the
//! packets that were held back, and not in their uncorrected ones.
//!
//! Loopback only, bounded runs. The thresholds are set by the 200 ms stall
//! (at least 100 ms vs under 50 ms), never by the machine's speed. The tests
//! run one at a time (a lock) so that they do not load each other.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use serde_json::Value;

mod util;

use util::{count, loadgen, loadgen_json, loadgen_json_err};

/// How long the responder stalls, once.
const STALL: Duration = Duration::from_millis(200);
/// Corrected latencies of the held-back packets reach this (half the stall).
const SHOWS_STALL_US: f64 = 100_000.0;
/// Round trips not held up by the stall stay under this (a quarter of it).
const CLEAR_OF_STALL_US: f64 = 50_000.0;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A UDP echo responder on an ephemeral loopback port that, before echoing
/// its `stall_at`-th datagram (1-based), sleeps for [`STALL`] once.
struct StallingEcho {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<u64>>,
}

impl StallingEcho {
    fn start(stall_at: u64) -> StallingEcho {
        StallingEcho::start_for(stall_at, STALL)
    }

    /// As [`StallingEcho::start`], stalling for `stall` instead.
    fn start_for(stall_at: u64, stall: Duration) -> StallingEcho {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut seen = 0;
            while !flag.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                seen += 1;
                if seen == stall_at {
                    thread::sleep(stall);
                }
                let _ = sock.send_to(&buf[..n], from);
            }
            seen
        });
        StallingEcho {
            addr,
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the responder; returns how many datagrams it received.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for StallingEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn us(r: &Value, block: &str, key: &str) -> f64 {
    r[block][key]
        .as_f64()
        .unwrap_or_else(|| panic!("{block}.{key} missing in {r}"))
}

/// Paced pingpong (wrk2 model): while the responder stalls, the one flow
/// cannot send, and the ~400 slots (2000/s) that pass are sent as soon as
/// the echo is back. Their corrected latency counts from the slot, so far
/// more than 1% of the 3000 measured packets are at least 100 ms: p99 shows
/// the stall. Their uncorrected latency is a plain round trip; only the one
/// stalled packet waited, under 1%, so the uncorrected p99 does not.
#[test]
fn paced_pingpong_corrects_for_coordinated_omission() {
    let _g = serial();
    // 0.2 s warm-up at 2000/s is 400 packets: the 1000th is measured.
    let echo = StallingEcho::start(1000);
    let r = loadgen_json(&[
        "--target",
        &echo.addr.to_string(),
        "--mode",
        "pingpong",
        "--rate",
        "2000",
        "--duration",
        "1.5",
        "--warmup",
        "0.2",
        "--timeout-ms",
        "2000",
    ]);
    let seen = echo.finish();
    assert!(
        seen >= 1000,
        "the responder never stalled ({seen} datagrams)"
    );
    assert_eq!(r["pacing"], "paced", "{r}");
    assert_eq!(r["corrected_applicable"], true, "{r}");
    assert_eq!(count(&r, "timeouts"), 0, "{r}");
    assert_eq!(count(&r, "received") + count(&r, "lost"), count(&r, "sent"));
    // Paced: never more than the schedule's 2000/s x 1.5 s.
    assert!(count(&r, "sent") <= 3000, "{r}");
    // The stalled packet itself: a 200 ms round trip, in both columns.
    assert!(
        us(&r, "latency_uncorrected_us", "max") >= SHOWS_STALL_US,
        "{r}"
    );
    let corrected = us(&r, "latency_us", "p99");
    let uncorrected = us(&r, "latency_uncorrected_us", "p99");
    assert!(
        corrected >= SHOWS_STALL_US,
        "corrected p99 {corrected} us hides the 200 ms stall: {r}"
    );
    assert!(
        uncorrected < CLEAR_OF_STALL_US,
        "uncorrected p99 {uncorrected} us: {r}"
    );
}

/// A stall holds paced pingpong back: the slots that go by while the one
/// flow waits for the stalled echo are counted (`skipped_slots`), so the
/// report shows the stall as a count, not only in the latencies. Without a
/// stall nothing is skipped at 1000/s (a 1 ms slot, a far shorter round
/// trip) in the part before it.
#[test]
fn paced_pingpong_counts_slots_skipped_during_a_stall() {
    let _g = serial();
    let echo = StallingEcho::start_for(300, Duration::from_millis(300));
    let r = loadgen_json(&[
        "--target",
        &echo.addr.to_string(),
        "--mode",
        "pingpong",
        "--rate",
        "1000",
        "--duration",
        "1.5",
        "--warmup",
        "0",
        "--timeout-ms",
        "2000",
    ]);
    let seen = echo.finish();
    assert!(
        seen >= 300,
        "the responder never stalled ({seen} datagrams)"
    );
    let skipped = count(&r, "skipped_slots");
    // 300 ms at 1 ms a slot: about 300; half is plenty to show it.
    assert!(skipped >= 150, "stall not counted: {r}");
    assert!(skipped <= count(&r, "sent") + count(&r, "unsent"), "{r}");
    assert!(count(&r, "sent") + count(&r, "unsent") <= 1500, "{r}");
}

/// Back to back the same stall is one slow round trip: there is no
/// schedule, so nothing is corrected and the report says so; the corrected
/// column repeats the uncorrected one instead of pretending.
#[test]
fn back_to_back_pingpong_has_no_schedule() {
    let _g = serial();
    let echo = StallingEcho::start(500);
    let (r, stderr) = loadgen_json_err(&[
        "--target",
        &echo.addr.to_string(),
        "--mode",
        "pingpong",
        "--duration",
        "1",
        // Back to back runs as fast as the round trips allow: with a
        // warm-up the 500th datagram could fall inside it.
        "--warmup",
        "0",
        "--flows",
        "2",
        "--interval-lines",
    ]);
    let seen = echo.finish();
    assert!(
        seen >= 500,
        "the responder never stalled ({seen} datagrams)"
    );
    assert!(r["rate_requested"].is_null(), "no rate, not 10000: {r}");
    assert_eq!(r["pacing"], "back_to_back", "{r}");
    assert_eq!(r["corrected_applicable"], false, "{r}");
    let note = r["latency_note"].as_str().unwrap();
    assert!(note.contains("not applicable"), "{note}");
    assert_eq!(r["latency_us"], r["latency_uncorrected_us"], "{r}");
    assert_eq!(r["behind_max_us"], 0.0, "nothing is ever late: {r}");
    assert!(stderr.contains("back to back to 127.0.0.1:"), "{stderr}");
    // One packet in flight per flow: every send waited for the previous echo.
    let (sent, received) = (count(&r, "sent"), count(&r, "received"));
    assert!(received > 0, "{r}");
    assert!(sent <= received + count(&r, "timeouts") + 2, "{r}");
    assert!(us(&r, "latency_us", "max") >= SHOWS_STALL_US, "{r}");
    assert!(us(&r, "latency_us", "p99") < CLEAR_OF_STALL_US, "{r}");
}

/// Against our server: paced pingpong stays on its schedule and says what
/// its columns mean, in JSON and in text.
#[test]
fn pingpong_against_our_server() {
    let _g = serial();
    let server = util::ServerProc::start(&["--threads", "2", "--reuseport"]);
    let target = server.addr.to_string();
    let args = [
        "--target",
        &target,
        "--mode",
        "pingpong",
        "--rate",
        "2000",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--flows",
        "2",
        "--timeout-ms",
        "200",
    ];
    let r = loadgen_json(&args);
    assert_eq!(r["mode"], "pingpong");
    assert_eq!(r["pacing"], "paced");
    assert_eq!(count(&r, "rate_requested"), 2000);
    assert!(count(&r, "sent") <= 2000, "{r}");
    assert!(count(&r, "received") > 0, "{r}");
    assert_eq!(count(&r, "corrupted"), 0, "{r}");
    assert_eq!(count(&r, "received") + count(&r, "lost"), count(&r, "sent"));

    let mut text_args = args.to_vec();
    text_args.truncate(4);
    text_args.extend(["--duration", "0.3", "--warmup", "0"]);
    let out = loadgen(&text_args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("Rate asked:         none (back_to_back"),
        "{text}"
    );
    assert!(text.contains("corrected is not applicable"), "{text}");
    server.stop();
}

/// `--help` says what the modes do and what the latency columns mean.
#[test]
fn help_explains_modes_and_columns() {
    let out = loadgen(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "back to back like sockperf ping-pong",
        "\"corrected\" is receive time - intended (scheduled) send",
        "\"uncorrected\" is receive time - actual",
        "corrected is not applicable and equals uncorrected",
    ] {
        assert!(help.contains(needle), "{needle:?} missing in\n{help}");
    }
}
