//! Integration tests of the `loadgen` binary against the real `server`, an
//! in-test impairing responder and (when installed) sockperf's own server.
//! Loopback only, short runs at modest rates; timings and latency values are
//! never asserted, only counts and formats. The tests run one at a time (a
//! lock) so that concurrent load does not distort each other's counts.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use udp_packet_pool::probe;

mod util;

use util::{count, loadgen, loadgen_json};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits for `child` up to [`util::LOADGEN_GUARD`], killing it if it hangs.
fn wait_bounded(child: &mut Child) -> ExitStatus {
    util::wait_bounded(child, util::LOADGEN_GUARD)
}

/// A unique temporary file, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        TempFile(
            std::env::temp_dir().join(format!("loadgen-test-{}-{n}-{name}", std::process::id())),
        )
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A child process stopped with SIGINT (then waited for) at the end.
struct Proc {
    child: Child,
}

impl Proc {
    fn interrupt_and_wait(&mut self) -> ExitStatus {
        if let Ok(None) = self.child.try_wait() {
            let pid = self.child.id() as libc::pid_t;
            // SAFETY: kill(2) with a pid we spawned and still own (not yet
            // reaped) and a valid signal number; it touches no memory.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        wait_bounded(&mut self.child)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads `reader` line by line in a thread; lines go to the channel.
fn lines_of(reader: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line matching `pred`; returns it, or None on timeout or EOF.
fn wait_line(rx: &mpsc::Receiver<String>, pred: impl Fn(&str) -> bool) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) if pred(&l) => return Some(l),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// Starts our `server` (2 SO_REUSEPORT workers) on an ephemeral loopback port.
fn start_server(extra: &[&str]) -> (util::ServerProc, SocketAddr) {
    let mut args = vec!["--threads", "2", "--reuseport"];
    args.extend_from_slice(extra);
    let server = util::ServerProc::start(&args);
    let addr = server.addr;
    (server, addr)
}

const REQUIRED_KEYS: [&str; 14] = [
    "target",
    "rate_requested",
    "send_rate",
    "echo_rate",
    "sent",
    "received",
    "lost",
    "loss_pct",
    "duplicates",
    "reordered",
    "corrupted",
    "latency_us",
    "latency_uncorrected_us",
    "duration_s",
];

fn assert_consistent(r: &Value) {
    for k in REQUIRED_KEYS {
        assert!(r.get(k).is_some(), "key {k} missing in {r}");
    }
    for obj in ["latency_us", "latency_uncorrected_us"] {
        for k in ["p50", "p90", "p99", "p999", "p9999", "max"] {
            assert!(r[obj].get(k).is_some(), "{obj}.{k} missing in {r}");
        }
    }
    let sent = count(r, "sent");
    assert!(sent > 0, "nothing sent: {r}");
    assert_eq!(count(r, "received") + count(r, "lost"), sent, "{r}");
}

/// No warm-up, so that the server's whole-run counts and loadgen's measured
/// ones cover the same packets: 5000/s for 1 s is exactly 5000 packets.
#[test]
fn json_report_against_our_server() {
    let _g = serial();
    let (server, addr) = start_server(&["--json"]);
    let target = addr.to_string();
    let r = loadgen_json(&[
        "--target",
        &target,
        "--rate",
        "5000",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--flows",
        "4",
        "--threads",
        "2",
    ]);
    assert_consistent(&r);
    assert_eq!(count(&r, "sent"), 5000, "{r}");
    assert_eq!(count(&r, "lost"), 0, "{r}");
    assert_eq!(count(&r, "corrupted"), 0, "{r}");
    assert_eq!(count(&r, "foreign"), 0, "{r}");
    assert_eq!(count(&r, "duplicates"), 0, "{r}");
    assert_eq!(r["target"], target.as_str());
    assert_eq!(count(&r, "rate_requested"), 5000);
    assert_eq!(r["pacing"], "open_loop");
    assert_eq!(r["corrected_applicable"], true);
    assert!(r["latency_us"]["p50"].is_number(), "{r}");
    let s = util::json(&server.stop().stdout);
    let (rx, tx) = util::assert_reconciled(&s);
    assert_eq!(rx, count(&r, "received"), "server received vs loadgen: {s}");
    assert_eq!(tx, count(&r, "received"), "server echoed vs loadgen: {s}");
}

#[test]
fn text_summary_and_progress_lines() {
    let _g = serial();
    let (server, addr) = start_server(&[]);
    let target = addr.to_string();
    let out = loadgen(&[
        "--target",
        &target,
        "--rate",
        "2000",
        "--duration",
        "1.2",
        "--warmup",
        "0.1",
    ]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "Packets sent:",
        "Packets lost:",
        "Duplicates:",
        "Reordered:",
        "Corrupted:",
        "Foreign:",
        "Rate asked:",
        "Send rate:",
        "Echo rate:",
        "p99.99",
        "max",
    ] {
        assert!(stdout.contains(needle), "{needle:?} missing in\n{stdout}");
    }
    // stderr is a pipe here: plain progress lines, one per second at least.
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("sent") && l.contains("/s")),
        "no progress line in\n{stderr}"
    );
    server.stop();
}

/// What the impairing responder did, and what a receiver must therefore see.
#[derive(Debug, Default, Clone)]
struct Impairments {
    received: u64,
    dropped: u64,
    duplicated: u64,
    corrupted: u64,
    /// Unique intact datagrams it sent back after a higher sequence number
    /// of the same flow: what loadgen must count as reordered.
    reordered: u64,
}

/// A UDP echo responder that drops every 10th datagram, corrupts one byte of
/// every 13th, duplicates every 7th (in that order of precedence), and swaps
/// every other pair (datagrams 1-2, 5-6, 9-10, ...) to reorder them.
struct Impairer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<Impairments>>,
}

impl Impairer {
    fn start() -> Impairer {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || impair(sock, &flag));
        Impairer {
            addr,
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Impairments {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for Impairer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Per-flow view of what was sent back intact, to predict reordering.
#[derive(Default)]
struct Mirror {
    seen: HashMap<u32, (HashSet<u64>, u64)>,
}

impl Mirror {
    /// Returns true if this intact datagram is a unique late arrival.
    fn reordered(&mut self, d: &[u8]) -> bool {
        let p = probe::Packet::new_checked(d).expect("intact probe");
        let (seen, max) = self.seen.entry(p.flow()).or_default();
        if !seen.insert(p.seq()) {
            return false;
        }
        let late = p.seq() < *max;
        *max = (*max).max(p.seq());
        late
    }
}

fn impair(sock: UdpSocket, stop: &AtomicBool) -> Impairments {
    let mut st = Impairments::default();
    let mut mirror = Mirror::default();
    let mut held: Vec<(Vec<u8>, bool, SocketAddr)> = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut send = |out: &mut Vec<(Vec<u8>, bool, SocketAddr)>, st: &mut Impairments| {
        for (d, intact, peer) in out.drain(..) {
            if intact && mirror.reordered(&d) {
                st.reordered += 1;
            }
            sock.send_to(&d, peer).unwrap();
        }
    };
    loop {
        match sock.recv_from(&mut buf) {
            Ok((len, peer)) => {
                st.received += 1;
                let n = st.received;
                let d = buf[..len].to_vec();
                let mut out = Vec::new();
                if n % 10 == 0 {
                    st.dropped += 1;
                } else if n % 13 == 0 {
                    let mut c = d;
                    let last = c.len() - 1;
                    c[last] ^= 0x5a;
                    out.push((c, false, peer));
                    st.corrupted += 1;
                } else if n % 7 == 0 {
                    out.push((d.clone(), true, peer));
                    out.push((d, true, peer));
                    st.duplicated += 1;
                } else {
                    out.push((d, true, peer));
                }
                // Pairs (1,2), (3,4), ...; every other pair is swapped.
                let pair = n.div_ceil(2);
                if pair % 2 == 1 && n % 2 == 1 {
                    held = out;
                } else {
                    send(&mut out, &mut st);
                    send(&mut held, &mut st);
                }
            }
            Err(_) => {
                // Quiet: let a held first half of a pair go.
                send(&mut held, &mut st);
                if stop.load(Ordering::Relaxed) {
                    return st;
                }
            }
        }
    }
}

/// One flow: with two, round-robin puts one packet of each flow in every
/// pair, and swapping a pair would reorder nothing within a flow.
#[test]
fn impairments_are_counted_exactly() {
    let _g = serial();
    let imp = Impairer::start();
    let target = imp.addr.to_string();
    let r = loadgen_json(&[
        "--target",
        &target,
        "--rate",
        "3000",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--flows",
        "1",
        "--drain-ms",
        "1000",
    ]);
    let st = imp.finish();
    assert_consistent(&r);
    let sent = count(&r, "sent");
    assert_eq!(
        st.received, sent,
        "the responder saw every datagram: {st:?} {r}"
    );
    assert!(st.dropped > 0 && st.duplicated > 0 && st.corrupted > 0 && st.reordered > 0);
    assert_eq!(count(&r, "duplicates"), st.duplicated, "{st:?} {r}");
    assert_eq!(count(&r, "corrupted"), st.corrupted, "{st:?} {r}");
    assert_eq!(count(&r, "reordered"), st.reordered, "{st:?} {r}");
    // A corrupted echo is no echo: those packets are lost too.
    assert_eq!(count(&r, "lost"), st.dropped + st.corrupted, "{st:?} {r}");
    assert_eq!(count(&r, "foreign"), 0, "{r}");
    assert!(count(&r, "lost") > 0 && count(&r, "reordered") > 0);
}

#[test]
fn hgrm_and_hlog_files_and_merge() {
    let _g = serial();
    let (server, addr) = start_server(&[]);
    let target = addr.to_string();
    let hgrm = TempFile::new("run.hgrm");
    let a = TempFile::new("a.hlog");
    let b = TempFile::new("b.hlog");
    let common = [
        "--target",
        &target,
        "--rate",
        "4000",
        "--duration",
        "1.5",
        "--warmup",
        "0.2",
        "--flows",
        "2",
    ];
    let mut args_a = common.to_vec();
    args_a.extend(["--hgrm", hgrm.path(), "--hlog", a.path()]);
    let ra = loadgen_json(&args_a);
    let mut args_b = common.to_vec();
    args_b.extend(["--hlog", b.path()]);
    let rb = loadgen_json(&args_b);
    server.stop();

    let text = std::fs::read_to_string(&hgrm.0).expect("hgrm written");
    assert!(
        text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"),
        "{text}"
    );
    assert!(text.contains("#[Mean    ="), "{text}");
    assert!(text.contains("#[Max     ="), "{text}");
    assert!(text.contains("#[Buckets ="), "{text}");
    let total_line = format!("Total count    = {:>12}]", count(&ra, "received"));
    assert!(text.contains(&total_line), "{total_line:?} not in\n{text}");

    for f in [&a, &b] {
        let log = std::fs::read_to_string(&f.0).expect("hlog written");
        assert!(log.contains("#[StartTime: "), "{log}");
        assert!(log.contains("\"StartTimestamp\""), "{log}");
    }
    let merged = loadgen_json(&["merge", a.path(), b.path()]);
    assert_eq!(
        count(&merged, "total_count"),
        count(&ra, "received") + count(&rb, "received"),
        "{merged} vs {ra} {rb}"
    );
    assert!(count(&merged, "intervals") >= 2, "{merged}");
    let out = loadgen(&["merge", a.path()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("Total count: {}", count(&ra, "received"))),
        "{text}"
    );
    // A file that is not there: a run-time failure naming it.
    let missing = TempFile::new("missing.hlog");
    let out = loadgen(&["merge", missing.path()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(missing.path()));
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn sockperf_protocol() {
    let _g = serial();
    let args = |target: &str| -> Vec<String> {
        [
            "--target",
            target,
            "--protocol",
            "sockperf",
            "--rate",
            "2000",
            "--duration",
            "1",
            "--warmup",
            "0.3",
            "--flows",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |target: &str| {
        let a = args(target);
        loadgen_json(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // Our server in sockperf reply mode.
    let (server, addr) = start_server(&["--sockperf"]);
    let r = run(&addr.to_string());
    assert_consistent(&r);
    assert!(count(&r, "received") > 0, "{r}");
    assert_eq!(count(&r, "corrupted"), 0, "{r}");
    assert_eq!(count(&r, "foreign"), 0, "{r}");
    assert_eq!(r["protocol"], "sockperf");
    server.stop();

    // A byte-exact echo server sends our requests back with CLIENT set:
    // never a reply, and loadgen says why.
    let (server, addr) = start_server(&[]);
    let a = args(&addr.to_string());
    let out = loadgen(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CLIENT flag"), "{stderr}");
    server.stop();

    // sockperf's own server.
    // Skips with a note, or fails under REQUIRE_SOCKPERF.
    if !util::sockperf_available() {
        return;
    }
    let port = free_udp_port();
    let mut child = Command::new("sockperf")
        .args(["server", "-i", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sockperf");
    let lines = lines_of(child.stdout.take().unwrap());
    let mut sockperf = Proc { child };
    // sockperf 3.7 announces its wait loop once ready ("... to block on
    // socket(s)"); other versions may word it differently, so a missing line
    // only matters if the server is gone (the warm-up covers a slow start).
    let _ = wait_line(&lines, |l| l.contains("block on socket"));
    if let Ok(Some(status)) = sockperf.child.try_wait() {
        panic!("sockperf server exited at start: {status}");
    }
    thread::spawn(move || for _ in lines {});
    let r = run(&format!("127.0.0.1:{port}"));
    assert_consistent(&r);
    assert!(count(&r, "received") > 0, "{r}");
    assert_eq!(count(&r, "corrupted"), 0, "{r}");
    assert_eq!(count(&r, "foreign"), 0, "{r}");
    sockperf.interrupt_and_wait();
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn usage_and_runtime_errors() {
    let _g = serial();
    let out = loadgen(&["--size", "20"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("--size 20"), "{}", stderr_of(&out));

    let out = loadgen(&["--protocol", "sockperf", "--size", "40"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("--size 40"), "{}", stderr_of(&out));

    let out = loadgen(&["--size", "70000"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("--size"), "{}", stderr_of(&out));

    let out = loadgen(&["--rate", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("--rate"), "{}", stderr_of(&out));

    for bad in ["no.such.host.invalid:9", "localhost"] {
        let out = loadgen(&["--target", bad, "--duration", "0.1"]);
        assert_eq!(out.status.code(), Some(1), "{bad}: {}", stderr_of(&out));
        assert!(stderr_of(&out).contains(bad), "{}", stderr_of(&out));
    }

    // Port 0 resolves but cannot be sent to: a run-time failure.
    let out = loadgen(&[
        "--target",
        "127.0.0.1:0",
        "--duration",
        "0.2",
        "--warmup",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("cannot send"),
        "{}",
        stderr_of(&out)
    );
}

/// The launcher is checked without running it: from a debug test run it
/// would start a release build.
#[test]
fn launcher_script_is_executable_bash() {
    use std::os::unix::fs::PermissionsExt;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/loadgen");
    let mode = std::fs::metadata(&script)
        .expect("tools/loadgen")
        .permissions()
        .mode();
    assert!(mode & 0o111 != 0, "tools/loadgen is not executable");
    let out = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("cargo build --release --quiet"));
    assert!(text.contains("exec "));
}
