//! Helpers shared by the integration tests: start the real `server` binary on
//! an ephemeral loopback port, talk to it, stop it with a signal, and always
//! clean up the process; run `loadgen` to completion; decide whether the
//! sockperf tests run (`REQUIRE_SOCKPERF`).
#![allow(dead_code)]

pub mod bridge;
pub mod client;
pub mod help;
pub mod k8s;
pub mod lgproto;
pub mod netns;
pub mod psk;
pub mod seccomp;
pub mod stamp_suite;

// Not every test binary uses it.
#[allow(unused_imports)]
pub use stamp_suite::stamp_suite;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Longest any single helper waits (a guard against hangs, not a timing assertion).
pub const GUARD: Duration = Duration::from_secs(10);

/// Longest a `loadgen` run may take (a hang guard, not a timing assertion).
pub const LOADGEN_GUARD: Duration = Duration::from_secs(60);

/// A running `server` process, killed on drop if still alive.
pub struct ServerProc {
    child: Option<Child>,
    /// Address to send to (loopback, real port).
    pub addr: SocketAddr,
    stderr_lines: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
    stdout: Option<thread::JoinHandle<String>>,
}

/// What a stopped server left behind.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

pub fn server_bin() -> &'static str {
    env!("CARGO_BIN_EXE_server")
}

/// The command `server --port 0 --bind 127.0.0.1 --stats-interval 0 ARGS...`.
pub fn server_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(server_bin());
    cmd.args([
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--stats-interval",
        "0",
    ])
    .args(args);
    cmd
}

impl ServerProc {
    /// Starts `server --port 0 --stats-interval 0 ARGS...` on 127.0.0.1.
    pub fn start(args: &[&str]) -> ServerProc {
        Self::start_cmd(&mut server_cmd(args))
    }

    /// Starts `server --port 0 --bind 127.0.0.1 --stats-interval 0.1 --json
    /// ARGS...`: statistics lines every 0.1 s to wait for.
    pub fn start_with_stats(args: &[&str]) -> ServerProc {
        let mut cmd = Command::new(server_bin());
        cmd.args(["--port", "0", "--bind", "127.0.0.1"])
            .args(["--stats-interval", "0.1", "--json"])
            .args(args);
        Self::start_cmd(&mut cmd)
    }

    /// Starts `server ARGS...` with no defaults added.
    pub fn start_exact(args: &[&str]) -> ServerProc {
        Self::start_cmd(Command::new(server_bin()).args(args))
    }

    /// Starts the given command (which must run the server) without waiting
    /// for anything; `addr` stays 127.0.0.1:0.
    pub fn spawn_cmd(cmd: &mut Command) -> ServerProc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let mut out = child.stdout.take().unwrap();
        let stdout = thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ServerProc {
            child: Some(child),
            addr: "127.0.0.1:0".parse().unwrap(),
            stderr_lines: rx,
            stderr_seen: Vec::new(),
            stdout: Some(stdout),
        }
    }

    /// Starts the given command (which must run the server) and waits for
    /// its `listening on` line.
    pub fn start_cmd(cmd: &mut Command) -> ServerProc {
        let mut p = Self::spawn_cmd(cmd);
        let line = p
            .wait_stderr(|l| l.contains("listening on"))
            .unwrap_or_else(|| {
                panic!(
                    "server never said 'listening on'; stderr: {:?}",
                    p.stderr_seen
                )
            });
        let addr_text = line
            .split("listening on ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        let mut addr: SocketAddr = addr_text.parse().expect("listening address");
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                "127.0.0.1".parse().unwrap()
            } else {
                "::1".parse().unwrap()
            });
        }
        p.addr = addr;
        p
    }

    /// The `--metrics-listen` endpoint's address, from the server's
    /// `metrics endpoint http://ADDR/metrics` line (bounded wait).
    pub fn metrics_addr(&mut self) -> SocketAddr {
        let line = self
            .wait_stderr(|l| l.contains("metrics endpoint"))
            .expect("a 'metrics endpoint' line");
        line.split("http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    /// Waits (bounded) for a stderr line matching `pred`.
    pub fn wait_stderr(&mut self, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + GUARD;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(l) => {
                    self.stderr_seen.push(l.clone());
                    if pred(&l) {
                        return Some(l);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Sends a signal to the server.
    pub fn signal(&self, sig: i32) {
        // The libc crate is a dependency of the package, so tests may use it.
        send_signal(self.pid(), sig);
    }

    /// Sends `sig` and waits (bounded) for the process to exit.
    pub fn stop_with(self, sig: i32) -> Finished {
        self.signal(sig);
        self.wait_exit()
    }

    /// SIGINT (Ctrl+C) and wait.
    pub fn stop(self) -> Finished {
        self.stop_with(libc::SIGINT)
    }

    /// Waits (bounded) for the process to exit by itself.
    pub fn wait_exit(mut self) -> Finished {
        let mut child = self.child.take().unwrap();
        let status = wait_bounded(&mut child, GUARD);
        let stdout = self.stdout.take().unwrap().join().unwrap();
        while let Ok(l) = self.stderr_lines.recv_timeout(Duration::from_millis(200)) {
            self.stderr_seen.push(l);
        }
        Finished {
            status,
            stdout,
            stderr: self.stderr_seen.join("\n"),
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits for `child` up to `limit`; kills it and fails the test if it hangs
/// (a guard against hangs, not a timing assertion).
pub fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("wait for child") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn send_signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// A client socket on loopback with a receive timeout.
pub fn client_socket(server: SocketAddr) -> UdpSocket {
    let bind = if server.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    let s = UdpSocket::bind(bind).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

/// Sends `payload` and returns the echo (panics on timeout).
pub fn echo(sock: &UdpSocket, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    sock.send_to(payload, to).unwrap();
    let mut buf = vec![0u8; 70_000];
    let (n, from) = sock.recv_from(&mut buf).expect("echo within 2 s");
    assert_eq!(from, to, "echo came from an unexpected address");
    buf.truncate(n);
    buf
}

/// Sends `payload` and expects no answer within `wait`.
pub fn expect_silence(sock: &UdpSocket, to: SocketAddr, payload: &[u8], wait: Duration) {
    sock.send_to(payload, to).unwrap();
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut buf = vec![0u8; 70_000];
    let r = sock.recv_from(&mut buf);
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert!(r.is_err(), "expected no echo, got {} bytes", r.unwrap().0);
}

/// A payload of `n` bytes that differs per (seed, n).
pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Parses the `--json` report.
pub fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("report is not JSON ({e}): {stdout}"))
}

/// Checks the books balance in a JSON report and returns (rx, tx).
pub fn assert_reconciled(r: &serde_json::Value) -> (u64, u64) {
    let rx = r["rx_packets"].as_u64().unwrap();
    let tx = r["tx_packets"].as_u64().unwrap();
    let sum = |k: &str| {
        r[k].as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(
        rx,
        tx + sum("drops") + sum("send_errors"),
        "counters do not reconcile: {r}"
    );
    assert_eq!(r["unaccounted"].as_i64(), Some(0));
    assert_eq!(
        r["buffers_returned"].as_bool(),
        Some(true),
        "buffers not returned: {r}"
    );
    (rx, tx)
}

/// One socket's line of `/proc/net/udp` (or `udp6`): its receive queue in
/// bytes and its `drops` column, found by local port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcUdp {
    pub rx_queue: u64,
    pub drops: u64,
}

/// Reads the `/proc/net/udp` line of the socket bound to `port` (the
/// reading process's network namespace). `None` if no socket has that port.
pub fn proc_net_udp(port: u16) -> Option<ProcUdp> {
    let want = format!(":{port:04X}");
    for file in ["/proc/net/udp", "/proc/net/udp6"] {
        let text = std::fs::read_to_string(file).ok()?;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 13 || !f[1].ends_with(&want) {
                continue;
            }
            let rx_queue = u64::from_str_radix(f[4].split(':').nth(1)?, 16).ok()?;
            let drops = f[f.len() - 1].parse().ok()?;
            return Some(ProcUdp { rx_queue, drops });
        }
    }
    None
}

/// A counter of the `Udp:` lines of `/proc/net/snmp` (system-wide), e.g.
/// `RcvbufErrors`.
pub fn snmp_udp(name: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/net/snmp").expect("/proc/net/snmp");
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines
        .next()
        .expect("Udp header")
        .split_whitespace()
        .collect();
    let values: Vec<&str> = lines
        .next()
        .expect("Udp values")
        .split_whitespace()
        .collect();
    let i = names
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| panic!("no Udp counter {name}"));
    values[i].parse().expect("counter value")
}

/// True when the tests run as root (namespaces, qdiscs, forced buffers).
pub fn is_root() -> bool {
    effective_uid() == 0
}

/// The effective user id, from `/proc/self/status`.
fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX)
}

/// A test that needs something this machine may lack: with the environment
/// variable `require` set (CI sets it) a missing prerequisite fails the
/// test; otherwise the test says on stderr why it is skipped. Returns true
/// when the test may run.
pub fn prerequisite(ok: bool, require: &str, what: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var_os(require).is_some() {
        panic!("{what} is required ({require} is set) but not available");
    }
    eprintln!("note: skipping: {what} is not available (set {require}=1 to make this a failure)");
    false
}

/// Whether the `sockperf` binary can be run. Without it, tests that need it
/// print a note and skip, unless `REQUIRE_SOCKPERF` is set (as in CI): then
/// this fails the test.
pub fn sockperf_available() -> bool {
    let found = Command::new("sockperf").arg("--version").output().is_ok();
    prerequisite(
        found,
        "REQUIRE_SOCKPERF",
        "sockperf (apt-get install sockperf)",
    )
}

/// Runs `loadgen ARGS` to completion (bounded by [`LOADGEN_GUARD`]) and
/// returns its output.
pub fn loadgen(args: &[&str]) -> Output {
    run_loadgen(Command::new(env!("CARGO_BIN_EXE_loadgen")).args(args))
}

/// Runs a command that runs `loadgen` (e.g. under `ip netns exec`) to
/// completion, bounded by [`LOADGEN_GUARD`].
pub fn run_loadgen(cmd: &mut Command) -> Output {
    run_loadgen_within(cmd, LOADGEN_GUARD)
}

/// Like [`run_loadgen`], killing it (and failing) after `limit`.
pub fn run_loadgen_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let e = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = wait_bounded(&mut child, limit);
    Output {
        status,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    }
}

/// Runs `loadgen ARGS --json`, expects success and returns the report and stderr.
pub fn loadgen_json_err(args: &[&str]) -> (serde_json::Value, String) {
    let mut a = args.to_vec();
    a.push("--json");
    let out = loadgen(&a);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "loadgen {a:?} failed: {:?}\n{stderr}",
        out.status
    );
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON ({e}): {}\nstderr: {stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (v, stderr)
}

/// Runs `loadgen ARGS --json`, expects success and returns the report.
pub fn loadgen_json(args: &[&str]) -> serde_json::Value {
    loadgen_json_err(args).0
}

/// A count in a JSON report (panics if missing).
pub fn count(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing or not a count in {v}"))
}

/// Keys every loadgen `--json` report has.
pub const LOADGEN_REQUIRED_KEYS: [&str; 14] = [
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

/// Checks a loadgen JSON report has every key and sent = received + lost.
pub fn assert_loadgen_consistent(r: &serde_json::Value) {
    for k in LOADGEN_REQUIRED_KEYS {
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

/// Reads a server's stderr up to its `listening on` line (bounded) and
/// hands the pipe back unread, so the test decides what happens to it next.
pub fn listening_addr(
    err: std::process::ChildStderr,
) -> (SocketAddr, BufReader<std::process::ChildStderr>) {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut r = BufReader::new(err);
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return; // closed: the receiver sees the sender dropped
            }
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
                let _ = tx.send((addr, r));
                return;
            }
        }
    });
    rx.recv_timeout(GUARD)
        .expect("server never said 'listening on'")
}
