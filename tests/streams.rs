//! Hostile output streams: a stderr nobody reads, a stderr whose reader went
//! away, and `2>/dev/full`. In every case the server keeps echoing, stops
//! cleanly on SIGINT with exit code 0, writes its final report on stdout,
//! and the report says how many of its own stderr lines were lost, `-v`
//! packet log lines included (they go through the same stderr queue). The
//! client, with `2>/dev/full`, still never panics.

mod util;

use std::fs::File;
use std::io::{BufReader, Read};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStderr, Command, Stdio};

use std::thread;
use std::time::{Duration, Instant};

use util::*;

/// `server --port 0 --bind 127.0.0.1 --json --stats-interval 0.1` plus `extra`,
/// with stdout piped and the given stderr (`RUST_LOG=info`, so `-v` logs
/// whatever the caller's environment says).
fn spawn(stderr: Stdio, extra: &[&str]) -> Reaped {
    let child = Command::new(server_bin())
        .env("RUST_LOG", "info")
        .args([
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--stats-interval",
            "0.1",
            "--json",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn server");
    Reaped(child)
}

/// Echo traffic for `how_long` (sending SIGHUP every round when `hup`, for
/// more stderr output); every datagram must come back. Returns the echoes.
fn echo_for(srv: &Reaped, addr: SocketAddr, how_long: Duration, hup: bool) -> u64 {
    let c = client_socket(addr);
    let mut buf = [0u8; 256];
    let mut echoed = 0u64;
    let end = Instant::now() + how_long;
    let mut round = 0u8;
    while Instant::now() < end {
        let p = pattern(100, round);
        for _ in 0..20 {
            c.send_to(&p, addr).unwrap();
        }
        for _ in 0..20 {
            // Bounded: the client socket times out after 2 s.
            let (n, _) = c.recv_from(&mut buf).unwrap_or_else(|e| {
                panic!("echo {} missing ({e}): stderr stalled echoing", echoed + 1)
            });
            assert_eq!(&buf[..n], &p[..]);
            echoed += 1;
        }
        if hup {
            srv.signal(libc::SIGHUP);
        }
        round = round.wrapping_add(1);
        thread::sleep(Duration::from_millis(20));
    }
    echoed
}

/// SIGINT, bounded wait; expects exit 0 and a JSON report on stdout, which
/// it returns.
fn stop_expect_report(mut srv: Reaped) -> serde_json::Value {
    srv.signal(libc::SIGINT);
    let status = wait_bounded(&mut srv.0, GUARD);
    let mut stdout = String::new();
    srv.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert_eq!(status.code(), Some(0), "exit {status:?}, stdout: {stdout}");
    let r = json(&stdout);
    assert_reconciled(&r);
    r
}

/// The server with `extra` flags and its stderr a pipe of the smallest size
/// (one page, so it fills after a few lines), read only up to `listening
/// on`: its address, and the pipe's read end, left unread.
fn spawn_unread(extra: &[&str]) -> (Reaped, SocketAddr, BufReader<ChildStderr>) {
    let mut srv = spawn(Stdio::piped(), extra);
    let (addr, unread) = listening_addr(srv.0.stderr.take().unwrap());
    // SAFETY: fcntl(2) on a pipe fd we own; plain integer arguments.
    unsafe { libc::fcntl(unread.get_ref().as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    (srv, addr, unread)
}

#[test]
fn stderr_nobody_reads_never_stalls_echoes_or_the_report() {
    let (srv, addr, unread) = spawn_unread(&["--threads", "2"]);
    let echoed = echo_for(&srv, addr, Duration::from_secs(4), true);
    assert!(echoed > 0);
    // Stop with stderr still unread: the shutdown must not wait on it.
    let r = stop_expect_report(srv);
    drop(unread);
    assert!(r["rx_packets"].as_u64().unwrap() >= echoed, "{r}");
    let dropped = r["stderr_lines_dropped"].as_u64().expect("count");
    assert!(dropped > 0, "nobody read stderr, yet nothing dropped: {r}");
    let why = r["stderr_problem"].as_str().expect("a reason");
    assert!(why.contains("blocked"), "{why}");
}

#[test]
fn stderr_reader_gone_is_noted_in_the_report() {
    let mut srv = spawn(Stdio::piped(), &["--threads", "2"]);
    let (addr, reader) = listening_addr(srv.0.stderr.take().unwrap());
    drop(reader); // the read end closes: every later write gets EPIPE
    let echoed = echo_for(&srv, addr, Duration::from_secs(1), true);
    assert!(echoed > 0);
    let r = stop_expect_report(srv);
    assert!(
        r["stderr_lines_dropped"].as_u64().expect("count") > 0,
        "{r}"
    );
    let why = r["stderr_problem"].as_str().expect("a reason");
    assert!(why.contains("stderr failed"), "{why}");
}

/// The server with `2>/dev/full` and `extra` flags, and its address, once
/// it echoes (its listening line cannot be read).
fn spawn_dev_full(extra: &[&str]) -> (Reaped, SocketAddr) {
    let full = File::options().write(true).open("/dev/full").unwrap();
    let mut srv = spawn(Stdio::from(full), extra);
    // Find the port from the socket the child owns (/proc/PID/fd inode ->
    // /proc/net/udp).
    let port = udp_port_of(&mut srv);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The socket exists before the workers run: retry until the first echo.
    let c = client_socket(addr);
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + GUARD;
    let mut buf = [0u8; 64];
    loop {
        c.send_to(b"ping", addr).unwrap();
        if let Ok((n, _)) = c.recv_from(&mut buf) {
            assert_eq!(&buf[..n], b"ping");
            return (srv, addr);
        }
        assert!(Instant::now() < deadline, "no echo from {addr}");
    }
}

#[test]
fn stderr_to_dev_full_still_serves_and_reports() {
    let (srv, addr) = spawn_dev_full(&["--threads", "2"]);
    let echoed = echo_for(&srv, addr, Duration::from_millis(500), false);
    assert!(echoed > 0);
    let r = stop_expect_report(srv);
    assert!(
        r["stderr_lines_dropped"].as_u64().expect("count") > 0,
        "{r}"
    );
    let why = r["stderr_problem"].as_str().expect("a reason");
    assert!(why.contains("stderr failed"), "{why}");
}

/// Two workers, `-v` logging every datagram (the rate limit never applies).
const VERBOSE: [&str; 5] = ["--threads", "2", "-v", "--log-rate", "1000000"];

/// Packet log lines lost, wherever: before the logging thread (its queue
/// full) or on the way to stderr (counted with the server's own lines).
fn log_lines_lost(r: &serde_json::Value) -> u64 {
    let before = r["log_lines_dropped"].as_u64().expect("log_lines_dropped");
    before
        + r["stderr_lines_dropped"]
            .as_u64()
            .expect("stderr_lines_dropped")
}

#[test]
fn verbose_lines_to_a_broken_stderr_are_each_counted() {
    for dev_full in [false, true] {
        let (srv, addr, reader) = if dev_full {
            let (srv, addr) = spawn_dev_full(&VERBOSE);
            (srv, addr, None)
        } else {
            let mut srv = spawn(Stdio::piped(), &VERBOSE);
            let (addr, reader) = listening_addr(srv.0.stderr.take().unwrap());
            (srv, addr, Some(reader))
        };
        drop(reader); // the read end closes: every later write gets EPIPE
        let echoed = echo_for(&srv, addr, Duration::from_secs(1), false);
        assert!(echoed > 0);
        let r = stop_expect_report(srv);
        // One line per datagram received (the rate limit never applies),
        // none of which reached stderr.
        let rx = r["rx_packets"].as_u64().unwrap();
        assert!(
            log_lines_lost(&r) >= rx,
            "dev_full {dev_full}: {rx} lines logged to a broken stderr, fewer counted as lost: {r}"
        );
        let why = r["stderr_problem"].as_str().expect("a reason");
        assert!(why.contains("stderr failed"), "{why}");
    }
}

#[test]
fn verbose_lines_to_a_stalled_stderr_never_block_and_are_counted() {
    let (srv, addr, unread) = spawn_unread(&VERBOSE);
    let echoed = echo_for(&srv, addr, Duration::from_secs(2), false);
    assert!(echoed > 0);
    // Stop with stderr still unread: the shutdown must not wait on it.
    let r = stop_expect_report(srv);
    drop(unread);
    // A log line is well over 64 bytes: at most 64 fit the pipe; every
    // other one is counted.
    let rx = r["rx_packets"].as_u64().unwrap();
    assert!(log_lines_lost(&r) + 64 >= rx, "{r}");
    let why = r["stderr_problem"].as_str().expect("a reason");
    assert!(why.contains("blocked"), "{why}");
}

/// The client with `2>/dev/full` (every stderr write fails).
fn client_dev_full(args: &[&str]) -> std::process::Output {
    let full = File::options().write(true).open("/dev/full").unwrap();
    Command::new(env!("CARGO_BIN_EXE_client"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stderr(full)
        .output()
        .expect("run client binary")
}

#[test]
fn client_with_a_broken_stderr_never_panics() {
    // A lost probe: its messages are lost; exit 1 still, not a panic's 101.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    let out = client_dev_full(&["127.0.0.1", &port, "--timeout", "50"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("1 lost"), "{stdout}");
    // With --json the probe lines (stderr) are lost, the summary is not.
    let srv = ServerProc::start(&["--threads", "1"]);
    let port = srv.addr.port().to_string();
    let out = client_dev_full(&["127.0.0.1", &port, "--json", "-c", "2", "-i", "5"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        (v["sent"].as_u64(), v["received"].as_u64()),
        (Some(2), Some(2))
    );
    let out = client_dev_full(&["nonexistent.invalid", "8888"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

/// The local port of the UDP socket the process owns (bounded wait; fails
/// if the process exits first).
fn udp_port_of(srv: &mut Reaped) -> u16 {
    let pid = srv.0.id();
    let deadline = Instant::now() + GUARD;
    loop {
        let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .filter_map(|l| {
                        let l = l.to_string_lossy().into_owned();
                        Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
        for line in table.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && inodes.iter().any(|i| i == f[9]) {
                let port = f[1].rsplit(':').next().unwrap();
                return u16::from_str_radix(port, 16).unwrap();
            }
        }
        if let Ok(Some(st)) = srv.0.try_wait() {
            panic!("server exited ({st:?}) before it bound a socket");
        }
        assert!(
            Instant::now() < deadline,
            "no UDP socket of pid {pid} appeared"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The server process, killed and reaped on drop unless it already exited.
struct Reaped(Child);

impl Reaped {
    fn signal(&self, sig: i32) {
        let pid = self.0.id() as i32;
        // SAFETY: kill(2) takes plain integers and touches no memory of ours;
        // the child is not reaped yet, so the pid is still ours.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig})");
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn socket_buffer_requests_above_the_cap_are_capped_with_a_warning() {
    const CAP: u64 = 256 << 20;
    // The warnings come before the listening line, which start() waits for.
    let f = ServerProc::start(&["--rcvbuf", "4294967296", "--sndbuf", "4294967296"]).stop();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    assert!(
        f.stderr
            .contains("--sndbuf 4294967296 is above the cap of 268435456"),
        "{}",
        f.stderr
    );
    assert!(
        f.stderr
            .contains("--rcvbuf 4294967296 is above the cap of 268435456"),
        "{}",
        f.stderr
    );
    let line = f
        .stderr
        .lines()
        .find(|l| l.contains("listening on"))
        .unwrap();
    let rcvbuf: u64 = line
        .split("rcvbuf ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rcvbuf in {line}"));
    // The kernel doubles the request; only root may force it past rmem_max.
    assert!(rcvbuf <= 2 * CAP, "{line}");
    if is_root() {
        assert_eq!(rcvbuf, 2 * CAP, "{line}");
    }
}
