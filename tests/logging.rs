//! `-v` logging never stalls echoing: the server runs with its stderr a pipe
//! that nobody reads (it fills after a few hundred lines), and every datagram
//! must still be echoed, the shutdown must still finish, and the final report
//! must count the packet log lines it had to drop (before the logging thread,
//! `log_lines_dropped`, or on the way to stderr, `stderr_lines_dropped`).

mod util;

use std::process::{Child, Command, Stdio};

use util::*;

/// Datagrams sent: their log lines are far more than a pipe (64 KiB) and the
/// log queue hold.
const DATAGRAMS: usize = 6000;
/// Sent before waiting for their echoes (well within the socket buffers).
const WINDOW: usize = 50;

#[test]
fn unread_stderr_never_stalls_echoes_and_drops_are_reported() {
    let child = Command::new(server_bin())
        .args([
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--stats-interval",
            "0",
            "--threads",
            "2",
            "-v",
            "--log-rate",
            "1000000",
            "--json",
        ])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let mut srv = Reaped(child); // killed if anything below panics
    let (addr, stderr_unread) = listening_addr(srv.0.stderr.take().unwrap());
    let c = client_socket(addr);
    let mut buf = [0u8; 256];
    let mut echoed = 0;
    for round in 0..DATAGRAMS / WINDOW {
        // One payload per round: two workers may echo a round out of order.
        let p = pattern(100, round as u8);
        for _ in 0..WINDOW {
            c.send_to(&p, addr).unwrap();
        }
        for _ in 0..WINDOW {
            // Bounded: the client socket times out after 2 s.
            let (n, _) = c.recv_from(&mut buf).unwrap_or_else(|e| {
                panic!(
                    "echo {} of {DATAGRAMS} missing ({e}): logging stalled the worker",
                    echoed + 1
                )
            });
            assert_eq!(&buf[..n], &p[..]);
            echoed += 1;
        }
    }
    assert_eq!(echoed, DATAGRAMS);
    // Stop with stderr still unread: the shutdown must not wait on it.
    srv.sigint();
    let status = wait_bounded(&mut srv.0, GUARD);
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut srv.0.stdout.take().unwrap(), &mut stdout).unwrap();
    drop(stderr_unread);
    assert!(status.success(), "exit {status:?}, stdout: {stdout}");
    let r = json(&stdout);
    let (rx, tx) = assert_reconciled(&r);
    assert_eq!((rx, tx), (DATAGRAMS as u64, DATAGRAMS as u64));
    let dropped = r["log_lines_dropped"].as_u64().expect("log_lines_dropped")
        + r["stderr_lines_dropped"]
            .as_u64()
            .expect("stderr_lines_dropped");
    // A log line is well over 64 bytes, so at most 1024 fit the pipe; every
    // other one is counted. The shutdown notice may be lost too.
    assert!(
        dropped + 1024 >= DATAGRAMS as u64,
        "nobody read stderr, yet too few lines were dropped: {r}"
    );
    assert!(dropped <= DATAGRAMS as u64 + 1, "{r}");
}

/// The server process, killed and reaped on drop unless it already exited.
struct Reaped(Child);

impl Reaped {
    fn sigint(&self) {
        let pid = self.0.id() as i32;
        // SAFETY: kill(2) takes plain integers and touches no memory of ours;
        // the child is not reaped yet, so the pid is still ours.
        let rc = unsafe { libc::kill(pid, libc::SIGINT) };
        assert_eq!(rc, 0, "kill({pid}, SIGINT)");
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
