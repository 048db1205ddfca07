//! The `server` under test: started on an ephemeral loopback port, its
//! `listening on` line kept (it says what the server really runs with, e.g.
//! `GRO off` or `GRO/GSO trains`), its echo count read from the summary it
//! prints on SIGHUP, and stopped with SIGINT within a bounded wait.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::procs::{fail, slurp, tail, ChildGuard, Error, POLL};

/// The server under test.
pub struct Server {
    guard: ChildGuard,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its whole `listening on` line.
    pub listening: String,
    lines: Receiver<String>,
    recent: VecDeque<String>,
    stdout: Option<JoinHandle<String>>,
}

/// How the server ended.
#[derive(Debug)]
pub struct Stopped {
    /// Exit status; None when it had to be killed.
    pub status: Option<ExitStatus>,
    /// Its final JSON report, when it printed one.
    pub report: Option<serde_json::Value>,
    /// Last stderr lines.
    pub stderr_tail: String,
}

impl Server {
    /// Starts `bin ARGS...` and waits (at most `timeout`) for its
    /// `listening on ADDR` line on stderr.
    pub fn start(
        bin: &Path,
        args: &[String],
        timeout: Duration,
        interrupted: &AtomicBool,
    ) -> Result<Server, Error> {
        let mut guard = ChildGuard::spawn(Command::new(bin).args(args), "server")?;
        let child = guard.child();
        let stdout = slurp(child.stdout.take().expect("piped"));
        let err = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = Server {
            guard,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            listening: String::new(),
            lines,
            recent: VecDeque::new(),
            stdout: Some(stdout),
        };
        let deadline = Instant::now() + timeout;
        loop {
            if interrupted.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            match s.lines.recv_timeout(POLL) {
                Ok(line) => {
                    if let Some(addr) = parse_listening(&line) {
                        s.addr = addr;
                        s.listening = line.clone();
                        s.remember(line);
                        return Ok(s);
                    }
                    s.remember(line);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // stderr closed: the server has exited (or is about to).
                    let status = s.guard.wait_until(Instant::now() + timeout, interrupted)?;
                    return Err(fail(format!(
                        "server {} before listening ({}): {}",
                        status.map_or("hung".into(), |st| format!("exited with {st}")),
                        args.join(" "),
                        s.stderr_tail()
                    )));
                }
            }
            if Instant::now() >= deadline {
                return Err(fail(format!(
                    "server printed no 'listening on' line within {:.0} s: {}",
                    timeout.as_secs_f64(),
                    s.stderr_tail()
                )));
            }
        }
    }

    fn remember(&mut self, line: String) {
        if self.recent.len() == 20 {
            self.recent.pop_front();
        }
        self.recent.push_back(line);
    }

    /// Moves already printed stderr lines into the recent buffer.
    fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.remember(line);
        }
    }

    fn stderr_tail(&mut self) -> String {
        self.drain();
        let all: Vec<String> = self.recent.iter().cloned().collect();
        tail(&all.join("\n"), 4)
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.guard.id()
    }

    /// The server's user+system CPU time so far, nanoseconds.
    pub fn cpu_ns(&self) -> Result<u64, Error> {
        crate::cpu::process_cpu_ns(self.pid())
    }

    /// Datagrams the server has echoed since start, from the summary it
    /// prints to stderr on SIGHUP (None if none arrives within `timeout`).
    pub fn echoed_total(&mut self, timeout: Duration) -> Option<u64> {
        self.drain();
        self.guard.signal(libc::SIGHUP);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.lines.recv_timeout(POLL) {
                Ok(line) => {
                    let n = parse_echoed(&line);
                    self.remember(line);
                    if n.is_some() {
                        return n;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
        None
    }

    /// Stops the server with SIGINT and waits at most `timeout` for it,
    /// killing it if it overruns.
    pub fn stop(mut self, timeout: Duration) -> Stopped {
        self.guard.signal(libc::SIGINT);
        let never = AtomicBool::new(false);
        let status = self
            .guard
            .wait_until(Instant::now() + timeout, &never)
            .ok()
            .flatten();
        let stdout = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        Stopped {
            status,
            report: serde_json::from_str(&stdout).ok(),
            stderr_tail: self.stderr_tail(),
        }
    }
}

/// `server: listening on 127.0.0.1:PORT (...)` → the address.
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Whether a `listening on` line says GRO is on (`GRO/GSO trains`) or off
/// (`GRO off`); None when it says neither.
pub fn parse_gro(line: &str) -> Option<bool> {
    if line.contains("GRO/GSO trains") {
        Some(true)
    } else if line.contains("GRO off") {
        Some(false)
    } else {
        None
    }
}

/// `echoed        N datagrams, ...` → N.
fn parse_echoed(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("echoed")?;
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line_is_parsed() {
        let l = "server: listening on 127.0.0.1:40123 (2 workers, one shared socket, pool 1000 x 2048 bytes)";
        assert_eq!(parse_listening(l), Some("127.0.0.1:40123".parse().unwrap()));
        assert_eq!(
            parse_listening("server: listening on [::1]:9 (x)"),
            Some("[::1]:9".parse().unwrap())
        );
        assert_eq!(parse_listening("server: shutting down"), None);
    }

    #[test]
    fn echoed_line_is_parsed() {
        assert_eq!(
            parse_echoed("echoed        12345 datagrams, 790080 bytes"),
            Some(12345)
        );
        assert_eq!(parse_echoed("received      5 datagrams"), None);
    }

    #[test]
    fn gro_state_is_read_from_the_listening_line() {
        let on = "server: listening on 127.0.0.1:1 (1 workers, one shared socket, pool 1000 x 65535 bytes, batch 32, io Blocking, GRO/GSO trains, datagrams up to 2048 bytes, rcvbuf 1 bytes)";
        let off = "server: listening on 127.0.0.1:1 (1 workers, one shared socket, pool 1000 x 2048 bytes, batch 32, io Epoll, GRO off, rcvbuf 1 bytes)";
        assert_eq!(parse_gro(on), Some(true));
        assert_eq!(parse_gro(off), Some(false));
        assert_eq!(parse_gro("server: listening on 127.0.0.1:1 (x)"), None);
    }
}
