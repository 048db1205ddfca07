//! Integration tests for the `client` binary against in-test responders
//! on loopback (`util::client`) and, for Ctrl+C and SIGTERM, the real
//! server: output lines, the JSON summary, exit codes (0 all answered, 1
//! failed probes or run-time error, 2 usage error) and the summary printed
//! on a stop signal. The tests assert behaviour only, never timings.

use std::net::UdpSocket;
use std::process::{Command, Output};
use std::thread;

use util::client::{text, Mode, Responder};

mod util;

fn run_client(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_client"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run client binary")
}

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
