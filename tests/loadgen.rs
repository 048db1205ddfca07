//! Integration tests of the `loadgen` binary against the real `server`, an
//! in-test impairing responder and (when installed) sockperf's own server.
//! Loopback only, short runs at modest rates; timings and latency values are
//! never asserted, only counts and formats. The tests run one at a time (a
//! lock) so that concurrent load does not distort each other's counts.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

mod util;

use util::{assert_loadgen_consistent as assert_consistent, count, loadgen, loadgen_json};

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

    // Port 0 is no server's port: a usage error naming it.
    let out = loadgen(&[
        "--target",
        "127.0.0.1:0",
        "--duration",
        "0.2",
        "--warmup",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("127.0.0.1:0") && stderr_of(&out).contains("port 0"),
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
