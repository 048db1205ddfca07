//! Integration tests for the echo client: the real `client` binary and the
//! `udp_packet_pool::client` library API against in-test responders on
//! loopback (a correct echo, one that corrupts a byte, one that never
//! answers, one that answers twice, and one that replays a stale echo).
//! The tests assert behaviour only, never timings.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use udp_packet_pool::client::{self, ClientConfig, Payload, Summary};

mod util;

/// How an in-test responder answers each datagram.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// RFC 862: send it back unchanged.
    Echo,
    /// Send it back with the byte at this offset (or the last one) inverted.
    Corrupt(usize),
    /// Read it and never answer.
    Silent,
    /// Send it back twice.
    Duplicate,
    /// Swallow the first datagram; for every later one, first resend the
    /// first datagram (a stale echo), then echo it.
    ReplayFirst,
}

/// A responder thread on a loopback UDP socket; stopped and joined on drop,
/// and it stops by itself after a bounded time anyway.
struct Responder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Responder {
    fn start(mode: Mode) -> Self {
        Self::start_on("127.0.0.1:0", mode).expect("bind 127.0.0.1:0")
    }

    fn start_on(bind: &str, mode: Mode) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(bind)?;
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || serve(&socket, mode, &flag));
        Ok(Responder {
            addr,
            stop,
            handle: Some(handle),
        })
    }

    fn port(&self) -> String {
        self.addr.port().to_string()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let joined = handle.join();
            if !thread::panicking() {
                joined.expect("responder thread panicked");
            }
        }
    }
}

fn serve(socket: &UdpSocket, mode: Mode, stop: &AtomicBool) {
    let give_up = Instant::now() + Duration::from_secs(30);
    let mut buf = vec![0u8; 65_536];
    let mut first: Option<Vec<u8>> = None;
    while !stop.load(Ordering::Relaxed) && Instant::now() < give_up {
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue, // read timeout: check the stop flag
        };
        let data = &buf[..n];
        let send = |d: &[u8]| {
            socket.send_to(d, peer).expect("responder send");
        };
        match mode {
            Mode::Echo => send(data),
            Mode::Corrupt(at) => {
                let mut bad = data.to_vec();
                if let Some(last) = bad.len().checked_sub(1) {
                    bad[at.min(last)] ^= 0xff;
                }
                send(&bad);
            }
            Mode::Silent => {}
            Mode::Duplicate => {
                send(data);
                send(data);
            }
            Mode::ReplayFirst => match &first {
                None => first = Some(data.to_vec()),
                Some(old) => {
                    send(old);
                    send(data);
                }
            },
        }
    }
}

fn run_client(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_client"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run client binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn config(addr: SocketAddr, payload: Payload, count: u32) -> ClientConfig {
    ClientConfig {
        target: addr,
        payload,
        count,
        interval: Duration::from_millis(5),
        timeout: Duration::from_secs(2),
    }
}

fn run_lib(config: &ClientConfig) -> (Summary, String) {
    let mut out = Vec::new();
    let summary = client::run(config, &mut out).expect("client::run");
    (summary, text(&out))
}

fn assert_accounted(s: &Summary) {
    assert_eq!(s.received + s.lost + s.mismatched, s.sent, "{s:?}");
    assert_eq!(s.lost, s.timeouts + s.refused, "{s:?}");
}

// ---------------------------------------------------------------- binary --

#[test]
fn bin_success_exits_zero_and_reports_rtt() {
    let r = Responder::start(Mode::Echo);
    let out = run_client(&["127.0.0.1", &r.port(), "test"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let line = format!("4 bytes from {}: seq=0 rtt=", r.addr);
    assert!(stdout.contains(&line), "{stdout}");
    assert!(stdout.contains(" us"), "{stdout}");
    assert!(stdout.contains("1 sent, 1 received, 0 lost"), "{stdout}");
}

#[test]
fn bin_default_message_and_several_sized_probes() {
    let r = Responder::start(Mode::Echo);
    let out = run_client(&["127.0.0.1", &r.port()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("5 bytes from"),
        "default 'hello'"
    );

    let out = run_client(&[
        "127.0.0.1",
        &r.port(),
        "--count",
        "3",
        "--interval",
        "5",
        "--size",
        "100",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    for seq in 0..3 {
        assert!(
            stdout.contains(&format!("100 bytes from {}: seq={seq} rtt=", r.addr)),
            "{stdout}"
        );
    }
    assert!(stdout.contains("3 sent, 3 received, 0 lost"), "{stdout}");
    assert!(stdout.contains("rtt min/avg/p99/max"), "{stdout}");
}

#[test]
fn bin_timeout_fails() {
    let r = Responder::start(Mode::Silent);
    let out = run_client(&["127.0.0.1", &r.port(), "--timeout", "100"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("seq=0 timeout after 100 ms"), "{stdout}");
    assert!(text(&out.stderr).contains("1 of 1 probes failed"));
}

#[test]
fn bin_mismatch_fails_with_offset() {
    let r = Responder::start(Mode::Corrupt(3));
    let out = run_client(&["127.0.0.1", &r.port(), "hello"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("MISMATCH"), "{stdout}");
    assert!(stdout.contains("first difference at byte 3"), "{stdout}");
    assert!(stdout.contains("1 mismatched"), "{stdout}");
}

#[test]
fn bin_no_server_is_a_failed_probe() {
    // A port that was just free: nothing listens, loopback answers ICMP.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let out = run_client(&["127.0.0.1", &port, "--timeout", "1000"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "no server at 127.0.0.1:{port} (ICMP port unreachable)"
        )),
        "{stdout}"
    );
}

#[test]
fn bin_json_summary_on_stdout() {
    let r = Responder::start(Mode::Echo);
    let out = run_client(&[
        "127.0.0.1",
        &r.port(),
        "--json",
        "--count",
        "2",
        "--interval",
        "5",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON");
    assert_eq!(v["sent"], 2);
    assert_eq!(v["received"], 2);
    assert_eq!(v["mismatched"], 0);
    assert_eq!(v["target"], r.addr.to_string());
    assert!(v["rtt"]["p99_us"].is_number(), "{v}");
    // Probe lines moved to stderr.
    assert!(text(&out.stderr).contains("seq=1 rtt="));
}

#[test]
fn bin_size_over_limit_is_usage_error() {
    let out = run_client(&["127.0.0.1", "9", "--size", "65508"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--size"), "{stderr}");
    assert!(stderr.contains("65507"), "{stderr}");
}

#[test]
fn bin_other_usage_errors_exit_two() {
    for args in [
        &["127.0.0.1", "0"][..],
        &["127.0.0.1", "9", "--count", "0"],
        &["127.0.0.1", "9", "--timeout", "0"],
        &["127.0.0.1", "9", "msg", "--size", "4"],
        &["127.0.0.1"],
    ] {
        let out = run_client(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn bin_unresolvable_host_exits_one() {
    let out = run_client(&["nonexistent.invalid", "8888"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nonexistent.invalid"), "{stderr}");
    assert!(out.stdout.is_empty());
}

// --------------------------------------------------------------- library --

#[test]
fn lib_pattern_probes_all_echoed() {
    let r = Responder::start(Mode::Echo);
    let (s, out) = run_lib(&config(r.addr, Payload::Pattern(64), 4));
    assert!(s.is_success(), "{s:?}\n{out}");
    assert_eq!(
        (s.sent, s.received, s.lost, s.mismatched, s.stale),
        (4, 4, 0, 0, 0)
    );
    assert_eq!(s.payload_bytes, 64);
    assert_eq!(s.target, r.addr);
    let rtt = s.rtt.expect("rtt stats");
    assert!(
        rtt.min_us <= rtt.avg_us && rtt.avg_us <= rtt.max_us,
        "{rtt:?}"
    );
    assert!(
        rtt.min_us <= rtt.p99_us && rtt.p99_us <= rtt.max_us,
        "{rtt:?}"
    );
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(out.contains("seq=3 rtt="), "{out}");
    assert_accounted(&s);
}

#[test]
fn lib_duplicates_are_ignored_and_counted() {
    let r = Responder::start(Mode::Duplicate);
    let (s, out) = run_lib(&config(r.addr, Payload::Pattern(32), 3));
    assert!(s.is_success(), "{s:?}\n{out}");
    assert_eq!(s.received, 3);
    assert_eq!(s.mismatched, 0);
    // The duplicates of seq 0 and 1 arrive before the echoes of seq 1 and
    // 2 (one responder thread, in-order loopback); the last one is unseen.
    assert_eq!(s.stale, 2, "{out}");
    assert!(out.contains("stale echo of seq=0"), "{out}");
    assert!(out.contains("stale echo of seq=1"), "{out}");
    assert_accounted(&s);
}

#[test]
fn lib_stale_echo_after_timeout_is_not_a_mismatch() {
    let r = Responder::start(Mode::ReplayFirst);
    let mut c = config(r.addr, Payload::Pattern(16), 3);
    c.timeout = Duration::from_millis(100);
    let (s, out) = run_lib(&c);
    // seq 0 is never answered in time; its late copy arrives before each of
    // the next echoes and is recognised as stale.
    assert_eq!(
        (s.sent, s.received, s.timeouts, s.mismatched),
        (3, 2, 1, 0),
        "{out}"
    );
    assert_eq!(s.stale, 2, "{out}");
    assert!(out.contains("seq=0 timeout after 100 ms"), "{out}");
    assert!(out.contains("stale echo of seq=0"), "{out}");
    assert!(!s.is_success());
    assert_accounted(&s);
}

#[test]
fn lib_corrupted_pattern_is_a_mismatch() {
    let r = Responder::start(Mode::Corrupt(10));
    let (s, out) = run_lib(&config(r.addr, Payload::Pattern(64), 2));
    assert_eq!(
        (s.sent, s.received, s.mismatched, s.stale),
        (2, 0, 2, 0),
        "{out}"
    );
    assert!(out.contains("seq=1 MISMATCH"), "{out}");
    assert!(out.contains("first difference at byte 10"), "{out}");
    assert!(!s.is_success());
    assert_eq!(s.rtt, None);
    assert_accounted(&s);
}

#[test]
fn lib_corrupted_message_is_a_mismatch() {
    let r = Responder::start(Mode::Corrupt(0));
    let c = config(r.addr, Payload::Message(b"ping".to_vec()), 1);
    let (s, out) = run_lib(&c);
    assert_eq!(s.mismatched, 1, "{out}");
    assert!(out.contains("first difference at byte 0"), "{out}");
    assert!(!s.is_success());
}

#[test]
fn lib_silent_server_times_out() {
    let r = Responder::start(Mode::Silent);
    let mut c = config(r.addr, Payload::Message(b"anyone?".to_vec()), 2);
    c.timeout = Duration::from_millis(50);
    let (s, out) = run_lib(&c);
    assert_eq!(
        (s.sent, s.received, s.lost, s.timeouts),
        (2, 0, 2, 2),
        "{out}"
    );
    assert_eq!(s.loss_percent, 100.0);
    assert!(!s.is_success());
    assert_accounted(&s);
}

#[test]
fn lib_ipv6_loopback_when_available() {
    let Ok(r) = Responder::start_on("[::1]:0", Mode::Echo) else {
        eprintln!("skipped: no IPv6 loopback");
        return;
    };
    let target = client::resolve("::1", r.addr.port()).unwrap();
    assert!(target.is_ipv6());
    let (s, out) = run_lib(&config(
        target,
        Payload::Pattern(client::MAX_UDP_PAYLOAD_V4),
        1,
    ));
    assert!(s.is_success(), "{out}");
}

#[test]
fn lib_invalid_config_is_an_error() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut out = Vec::new();
    let c = config(addr, Payload::Pattern(client::MAX_UDP_PAYLOAD_V4 + 1), 1);
    let e = client::run(&c, &mut out).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("65507"), "{e}");
    let c = config(addr, Payload::Pattern(8), 0);
    assert!(client::run(&c, &mut out).is_err());
    assert!(out.is_empty());
}

#[test]
fn lib_resolve_errors_name_the_host() {
    let e = client::resolve("nonexistent.invalid", 7).unwrap_err();
    assert!(e.to_string().contains("nonexistent.invalid"), "{e}");
    assert_eq!(
        client::resolve("127.0.0.1", 7).unwrap(),
        "127.0.0.1:7".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        client::resolve("[::1]", 7).unwrap(),
        "[::1]:7".parse::<SocketAddr>().unwrap()
    );
}

/// Starts `client --count 1000 --interval 100` against our server, waits
/// for its first reply line, sends `sig`; returns its status and stdout.
fn interrupt_client(sig: i32) -> (std::process::ExitStatus, String) {
    use std::io::{BufRead, BufReader};
    let server = util::ServerProc::start(&[]);
    let port = server.addr.port().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_client"))
        .args(["127.0.0.1", &port, "--count", "1000", "--interval", "100"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn client");
    let (tx, rx) = std::sync::mpsc::channel();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let reader = thread::spawn(move || {
        let mut all = String::new();
        while let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line.contains("bytes from"));
            all += &line;
            all += "\n";
        }
        all
    });
    if !rx.iter().any(|reply| reply) {
        panic!("client ended without a reply line");
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
    let status = util::wait_bounded(&mut child, util::GUARD);
    (status, reader.join().unwrap())
}

/// Ctrl+C and SIGTERM stop `--count 1000` like ping: the statistics of the
/// probes done so far, marked interrupted, and exit 0 since every one was
/// answered.
#[test]
fn bin_ctrl_c_or_sigterm_print_the_summary_so_far() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let (status, stdout) = interrupt_client(sig);
        assert_eq!(status.code(), Some(0), "signal {sig}: {stdout}");
        assert!(stdout.contains("statistics (interrupted) ---"), "{stdout}");
        let stats = stdout
            .lines()
            .find(|l| l.contains(" sent, "))
            .unwrap_or_else(|| panic!("no statistics line: {stdout}"));
        let sent: u64 = stats.split(' ').next().unwrap().parse().unwrap();
        assert!((1..1000).contains(&sent), "{stats}");
        assert!(
            stats.contains(&format!("{sent} received, 0 lost")),
            "{stats}"
        );
        assert!(stdout.contains("rtt min/avg/p99/max"), "{stdout}");
    }
}

/// A stop before the first probe: nothing counted, and the summary (JSON
/// too) says it was interrupted.
#[test]
fn lib_stop_flag_ends_the_run_with_a_summary() {
    let r = Responder::start(Mode::Echo);
    let stop = AtomicBool::new(true);
    let cfg = config(r.addr, Payload::Pattern(8), 5);
    let s = client::run_until(&cfg, &mut Vec::new(), &stop).unwrap();
    assert_eq!(
        (s.sent, s.lost, s.loss_percent, s.interrupted),
        (0, 0, 0.0, true)
    );
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["interrupted"], true, "{v}");
}
