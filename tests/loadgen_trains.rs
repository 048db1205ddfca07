//! `loadgen` trains: `--gso` sends (`UDP_SEGMENT`), `--gro` receives
//! (`UDP_GRO`), the fallback when the kernel refuses a train, and the report
//! of how far behind its schedule the sender fell.
//!
//! * Against our server with `--gso 16`, every datagram is accounted for
//!   on both sides and every one left in a train.
//! * A GSO responder in the test sends the replies back as trains; with
//!   `--gro` loadgen gets them coalesced and must cut them exactly.
//! * A real kernel refusal: in a namespace whose loopback MTU is 1500, a
//!   train of 1600-byte datagrams is refused (EMSGSIZE, while single
//!   datagrams are fragmented and go), so loadgen falls back, says so once
//!   and still loses nothing.
//! * Behind schedule: trains at a low rate keep the rate but not the
//!   schedule (a train's first member waits for its last one), and a rate
//!   far above one thread's: both must be reported as fallen behind; far
//!   behind with trains, `sent + unsent` is still exactly the schedule.
//!
//! Loopback (and a namespace this test creates) only, ephemeral ports,
//! bounded runs; no timing is asserted, only counts and what the schedule
//! itself implies. The tests run one at a time (a lock).

use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use serde_json::Value;
use socket2::{MsgHdr, SockAddr, Socket};

mod util;

use util::{assert_loadgen_consistent, count, run_loadgen_within, ServerProc};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hang guard for one loadgen run (not a timing assertion).
const LIMIT: Duration = Duration::from_secs(30);

/// Runs `PREFIX... loadgen ARGS --json`; returns the report and stderr.
fn run(prefix: &[&str], args: &[&str]) -> (Value, String) {
    let bin = env!("CARGO_BIN_EXE_loadgen");
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(args).arg("--json");
    let out = run_loadgen_within(&mut cmd, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "loadgen {args:?}: {:?}\n{stderr}",
        out.status
    );
    (util::json(&String::from_utf8_lossy(&out.stdout)), stderr)
}

fn loadgen(args: &[&str]) -> (Value, String) {
    run(&[], args)
}

/// `--target T --rate R --duration D --warmup 0` and `extra`: no warm-up,
/// so that whole-run counts (the server's, a responder's) cover the same
/// datagrams as the report.
fn paced<'a>(target: &'a str, rate: &'a str, secs: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "--target",
        target,
        "--rate",
        rate,
        "--duration",
        secs,
        "--warmup",
        "0",
    ];
    a.extend_from_slice(extra);
    a
}

/// Nothing lost, duplicated, corrupted or foreign: every echo matched its
/// own (flow, sequence number) exactly once.
fn assert_all_matched(r: &Value) {
    assert_loadgen_consistent(r);
    for k in [
        "lost",
        "duplicates",
        "corrupted",
        "foreign",
        "late",
        "send_errors",
        "sent_early",
    ] {
        assert_eq!(count(r, k), 0, "{k}: {r}");
    }
    assert_eq!(count(r, "received"), count(r, "sent"), "{r}");
}

#[test]
fn gso_trains_against_our_server_account_for_every_datagram() {
    let _g = serial();
    let server = ServerProc::start(&["--threads", "2", "--reuseport", "--json"]);
    let target = server.addr.to_string();
    // No warm-up: the server's whole-run counts cover the same datagrams.
    // 20000 packets in trains of 16 over 4 flows: exactly 1250 trains.
    let (r, stderr) = loadgen(&paced(
        &target,
        "20000",
        "1",
        &["--flows", "4", "--threads", "2", "--gso", "16"],
    ));
    assert!(!stderr.contains("refused"), "{stderr}");
    assert_all_matched(&r);
    assert_eq!(count(&r, "sent"), 20_000, "{r}");
    assert_eq!(count(&r, "gso"), 16, "{r}");
    assert!(r["gso_fallback"].is_null(), "{r}");
    assert_eq!(
        count(&r, "train_datagrams"),
        20_000,
        "every datagram in a train: {r}"
    );
    assert_eq!(count(&r, "train_sends"), 1_250, "{r}");
    assert_eq!(r["thread_cpu_s"].as_array().map(Vec::len), Some(2), "{r}");
    assert!(r["lateness_us"]["p99"].is_number(), "{r}");
    let s = util::json(&server.stop().stdout);
    let (rx, tx) = util::assert_reconciled(&s);
    assert_eq!(
        rx,
        count(&r, "sent"),
        "server received vs loadgen sent: {s}"
    );
    assert_eq!(
        tx,
        count(&r, "received"),
        "server echoed vs loadgen received: {s}"
    );
}

/// What the GSO responder did.
#[derive(Debug, Default, Clone, Copy)]
struct Echoed {
    datagrams: u64,
    trains: u64,
    in_trains: u64,
}

/// An echo server that sends each run of consecutive datagrams from one
/// peer back as one `UDP_SEGMENT` train (a lone datagram goes alone).
struct GsoResponder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<Echoed>>,
}

impl GsoResponder {
    fn start() -> GsoResponder {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = Some(thread::spawn(move || respond(sock, &s)));
        GsoResponder { addr, stop, thread }
    }

    fn finish(mut self) -> Echoed {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for GsoResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A `UDP_SEGMENT` control message (x86_64/aarch64 layout: an 8-byte
/// length, level, type, then the u16 segment size, padded to 24 bytes).
fn segment_cmsg(size: u16) -> Vec<u8> {
    let mut c = Vec::with_capacity(24);
    c.extend_from_slice(&18usize.to_ne_bytes());
    c.extend_from_slice(&libc::SOL_UDP.to_ne_bytes());
    c.extend_from_slice(&libc::UDP_SEGMENT.to_ne_bytes());
    c.extend_from_slice(&size.to_ne_bytes());
    c.resize(24, 0);
    c
}

fn respond(sock: UdpSocket, stop: &AtomicBool) -> Echoed {
    let mut e = Echoed::default();
    let mut buf = vec![0u8; 2048];
    let mut run: Vec<u8> = Vec::new();
    let mut run_from: Option<(SocketAddr, usize)> = None;
    let out = Socket::from(sock.try_clone().unwrap());
    let flush = |run: &mut Vec<u8>, from: Option<(SocketAddr, usize)>, e: &mut Echoed| {
        let Some((peer, size)) = from else { return };
        let n = run.len() / size;
        if n >= 2 {
            let to = SockAddr::from(peer);
            let cmsg = segment_cmsg(size as u16);
            let bufs = [IoSlice::new(run)];
            let msg = MsgHdr::new()
                .with_addr(&to)
                .with_buffers(&bufs)
                .with_control(&cmsg);
            out.sendmsg(&msg, 0).expect("GSO send");
            e.trains += 1;
            e.in_trains += n as u64;
        } else if n == 1 {
            out.send_to(run, &SockAddr::from(peer)).unwrap();
        }
        run.clear();
    };
    while !stop.load(Ordering::Relaxed) {
        sock.set_nonblocking(false).unwrap();
        let Ok((n, peer)) = sock.recv_from(&mut buf) else {
            continue;
        };
        // Take what else is queued: consecutive datagrams of the same peer
        // and size form a train (at most 32, well inside 64 KiB).
        sock.set_nonblocking(true).unwrap();
        let mut next = Some((n, peer));
        while let Some((n, peer)) = next {
            e.datagrams += 1;
            if run_from != Some((peer, n)) || run.len() / n >= 32 {
                flush(&mut run, run_from, &mut e);
                run_from = Some((peer, n));
            }
            run.extend_from_slice(&buf[..n]);
            next = sock.recv_from(&mut buf).ok();
        }
        flush(&mut run, run_from.take(), &mut e);
    }
    e
}

#[test]
fn gro_splits_coalesced_trains_exactly() {
    let _g = serial();
    for gro in [true, false] {
        let responder = GsoResponder::start();
        let target = responder.addr.to_string();
        let mut args = paced(&target, "8000", "1", &["--flows", "2", "--gso", "8"]);
        if gro {
            args.push("--gro");
        }
        let (r, stderr) = loadgen(&args);
        let e = responder.finish();
        assert_all_matched(&r);
        assert!(e.trains > 0, "the responder sent no trains: {e:?}");
        assert_eq!(e.datagrams, count(&r, "sent"), "{e:?} {r}");
        assert_eq!(r["gro"], gro, "{r}\n{stderr}");
        if gro {
            // Each train arrives as one read and is cut into its datagrams.
            assert_eq!(count(&r, "gro_reads"), e.trains, "{e:?} {r}");
            assert_eq!(count(&r, "gro_datagrams"), e.in_trains, "{e:?} {r}");
        } else {
            // The kernel cuts them up itself.
            assert_eq!(count(&r, "gro_reads"), 0, "{r}");
        }
    }
}

/// A network namespace with only a loopback device, of MTU 1500; deleted on drop.
struct SmallMtuNs(String);

impl SmallMtuNs {
    fn create() -> SmallMtuNs {
        let name = format!("upp-gso-{}", std::process::id());
        let ns = SmallMtuNs(name.clone());
        for args in [
            vec!["netns", "add", &name],
            vec!["-n", &name, "link", "set", "lo", "mtu", "1500"],
            vec!["-n", &name, "link", "set", "lo", "up"],
        ] {
            let st = Command::new("ip").args(&args).status().expect("run ip");
            assert!(st.success(), "ip {args:?} failed");
        }
        ns
    }
}

impl Drop for SmallMtuNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn refused_trains_fall_back_to_single_datagrams() {
    let _g = serial();
    if !util::prerequisite(util::netns::available(), "REQUIRE_NETNS", "root with ip") {
        return;
    }
    let ns = SmallMtuNs::create();
    let exec = ["ip", "netns", "exec", ns.0.as_str()];
    let server = ServerProc::start_cmd(Command::new("ip").args(&exec[1..]).args([
        util::server_bin(),
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--stats-interval",
        "0",
        "--threads",
        "2",
        "--reuseport",
    ]));
    let target = server.addr.to_string();
    // 1600 bytes: more than one segment of a 1500-byte MTU may carry, so
    // the kernel refuses the train (EMSGSIZE); alone, each is fragmented.
    let (r, stderr) = run(
        &exec,
        &paced(
            &target,
            "2000",
            "1",
            &[
                "--flows",
                "2",
                "--threads",
                "2",
                "--gso",
                "4",
                "--size",
                "1600",
            ],
        ),
    );
    drop(server);
    let notes: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("refused UDP GSO"))
        .collect();
    assert_eq!(notes.len(), 1, "one note, once: {stderr}");
    assert!(
        notes[0].contains("os error 90"),
        "EMSGSIZE named: {}",
        notes[0]
    );
    let why = r["gso_fallback"]
        .as_str()
        .unwrap_or_else(|| panic!("no gso_fallback: {r}"));
    assert!(why.contains("UDP GSO"), "{why}");
    assert_all_matched(&r);
    assert_eq!(count(&r, "sent"), 2_000, "{r}");
    assert_eq!(count(&r, "train_datagrams"), 0, "{r}");
}

#[test]
fn trains_at_a_low_rate_keep_the_rate_but_not_the_schedule() {
    let _g = serial();
    let server = ServerProc::start(&[]);
    let target = server.addr.to_string();
    // 1000/s in trains of 16: the first of each train is due 15 ms before
    // the train leaves, by construction of the schedule.
    let (r, stderr) = loadgen(&paced(&target, "1000", "1", &["--gso", "16"]));
    assert_all_matched(&r);
    assert_eq!((count(&r, "sent"), count(&r, "unsent")), (1000, 0), "{r}");
    assert_eq!(r["fell_behind"], true, "{r}");
    let max = r["behind_max_us"].as_f64().unwrap();
    assert!(max >= 15_000.0, "a train's first member waits 15 ms: {r}");
    assert!(r["lateness_us"]["p99"].as_f64().unwrap() > 1_000.0, "{r}");
    assert!(
        stderr.contains("waits 15.000 ms"),
        "no note at start: {stderr}"
    );
    assert!(
        stderr.contains("fell behind") && stderr.contains("kept the rate"),
        "no warning at the end: {stderr}"
    );
    // Corrected latency is charged from each datagram's own time.
    assert!(r["latency_us"]["max"].as_f64().unwrap() >= 15_000.0, "{r}");
    drop(server);
}

#[test]
fn a_rate_beyond_one_thread_is_reported_behind_schedule() {
    let _g = serial();
    let server = ServerProc::start(&["--threads", "2", "--reuseport"]);
    let target = server.addr.to_string();
    let (r, stderr) = loadgen(&paced(&target, "5000000", "0.5", &["--drain-ms", "200"]));
    drop(server);
    assert_loadgen_consistent(&r);
    assert_eq!(r["fell_behind"], true, "{r}");
    assert!(r["behind_max_us"].as_f64().unwrap() > 1_000.0, "{r}");
    assert!(r["lateness_us"]["max"].as_f64().unwrap() > 1_000.0, "{r}");
    assert!(
        stderr.contains("fell behind") && stderr.contains("ms late"),
        "{stderr}"
    );
}

/// Far behind with trains, the sender still stops at the end of
/// `--duration` and the schedule splits exactly into what went and what
/// did not (the left-overs are counted train by train, flow by flow).
#[test]
fn trains_far_behind_still_account_for_the_schedule() {
    let _g = serial();
    let server = ServerProc::start(&["--threads", "2", "--reuseport"]);
    let target = server.addr.to_string();
    let (r, stderr) = loadgen(&paced(
        &target,
        "20000000",
        "0.3",
        &[
            "--gso",
            "64",
            "--flows",
            "3",
            "--threads",
            "2",
            "--drain-ms",
            "200",
        ],
    ));
    drop(server);
    assert_loadgen_consistent(&r);
    let (sent, unsent) = (count(&r, "sent"), count(&r, "unsent"));
    assert!(unsent > 0, "20M pkt/s kept up? {r}");
    assert_eq!(
        sent + unsent + count(&r, "send_errors"),
        6_000_000,
        "sent + unsent is the schedule: {r}"
    );
    assert_eq!(count(&r, "train_datagrams"), sent, "{r}");
    assert_eq!(r["fell_behind"], true, "{r}");
    assert!(stderr.contains("unsent"), "{stderr}");
}
