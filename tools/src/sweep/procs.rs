//! Child processes: the `server` under test and `loadgen` runs.
//!
//! Every child is held by a [`ChildGuard`] that kills and reaps it on drop,
//! so an error or an early return never leaves one behind. Children are also
//! started with `PR_SET_PDEATHSIG = SIGKILL`, so they die even if the sweep
//! itself is killed outright (they are always spawned from the main thread:
//! the death signal follows the spawning thread). All waits are bounded and
//! give up early when the sweep is interrupted.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How a step failed.
#[derive(Debug)]
pub enum Error {
    /// The sweep got SIGINT/SIGTERM.
    Interrupted,
    /// Anything else, with a message for the user.
    Failed(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Interrupted => write!(f, "interrupted"),
            Error::Failed(m) => write!(f, "{m}"),
        }
    }
}

fn fail(msg: impl Into<String>) -> Error {
    Error::Failed(msg.into())
}

/// How often bounded waits look at the child and the interrupt flag.
const POLL: Duration = Duration::from_millis(10);

/// A child process that is killed and reaped when dropped.
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
}

impl ChildGuard {
    /// Spawns `cmd` (stdin closed, stdout and stderr piped) so that it dies
    /// with the sweep.
    pub fn spawn(cmd: &mut Command, name: &str) -> Result<ChildGuard, Error> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            fail(format!(
                "cannot start {name} ({:?}): {e}",
                cmd.get_program()
            ))
        })?;
        Ok(ChildGuard {
            child: Some(child),
            name: name.to_string(),
        })
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("child present until dropped")
    }

    /// Process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Waits until the child exits or `deadline` passes (then kills it and
    /// returns `Ok(None)`), giving up at once when `interrupted` is set.
    pub fn wait_until(
        &mut self,
        deadline: Instant,
        interrupted: &AtomicBool,
    ) -> Result<Option<ExitStatus>, Error> {
        loop {
            match self.child().try_wait() {
                Ok(Some(status)) => return Ok(Some(status)),
                Ok(None) => {}
                Err(e) => return Err(fail(format!("cannot wait for {}: {e}", self.name))),
            }
            if interrupted.load(Ordering::Relaxed) {
                self.kill();
                return Err(Error::Interrupted);
            }
            if Instant::now() >= deadline {
                self.kill();
                return Ok(None);
            }
            thread::sleep(POLL);
        }
    }

    /// Kills and reaps the child (no-op once it has exited).
    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }

    /// Sends `sig` to the child if it is still running.
    pub fn signal(&mut self, sig: libc::c_int) {
        let pid = self.id() as libc::pid_t;
        if pid > 0 && matches!(self.child().try_wait(), Ok(None)) {
            // SAFETY: plain syscall on our own, not yet reaped, child.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a pipe to the end on a helper thread.
fn slurp(r: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut r = r;
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Last lines of some output, for error messages.
fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = v.len().saturating_sub(lines);
    if v.is_empty() {
        "(no output)".to_string()
    } else {
        v[start..].join(" | ")
    }
}

/// The server under test.
pub struct Server {
    guard: ChildGuard,
    /// Where it listens.
    pub addr: SocketAddr,
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
        let path = format!("/proc/{}/stat", self.pid());
        let text =
            std::fs::read_to_string(&path).map_err(|e| fail(format!("cannot read {path}: {e}")))?;
        let ticks = parse_stat_cpu_ticks(&text)
            .ok_or_else(|| fail(format!("cannot parse utime/stime from {path}")))?;
        Ok(ticks_to_ns(ticks))
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

/// `echoed        N datagrams, ...` → N.
fn parse_echoed(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("echoed")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// utime + stime (fields 14 and 15 of `/proc/PID/stat`), in clock ticks.
/// Fields are counted after the parenthesised command name, which may
/// itself contain spaces and parentheses.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // `after` starts with field 3 (state).
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn ticks_to_ns(ticks: u64) -> u64 {
    ticks.saturating_mul(1_000_000_000) / clock_ticks_per_sec()
}

/// Latency percentiles of a loadgen report, microseconds.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

/// The part of loadgen's JSON report the sweep uses.
#[derive(Debug, Clone, Deserialize)]
pub struct LoadgenReport {
    /// Achieved send rate, packets/s.
    pub send_rate: f64,
    /// Rate echoes came back at, packets/s.
    pub echo_rate: f64,
    /// Echoes received in the measured window.
    pub received: f64,
    /// Lost, percent of sent.
    pub loss_pct: f64,
    /// Corrected (intended-send-time based) latency.
    #[serde(default)]
    pub latency_us: Latency,
}

/// Parses loadgen's report: all of stdout, or failing that the outermost
/// `{...}` in it (in case a line of text precedes the JSON).
fn parse_report(stdout: &str) -> Result<LoadgenReport, serde_json::Error> {
    serde_json::from_str(stdout.trim()).or_else(|e| match (stdout.find('{'), stdout.rfind('}')) {
        (Some(a), Some(b)) if a < b => serde_json::from_str(&stdout[a..=b]),
        _ => Err(e),
    })
}

/// How to run loadgen.
#[derive(Debug, Clone)]
pub struct Loadgen {
    /// The binary.
    pub bin: PathBuf,
    /// Seconds to measure.
    pub duration: f64,
    /// Seconds of warm-up before measuring.
    pub warmup: f64,
    /// Concurrent flows (source ports).
    pub flows: u32,
    /// Payload bytes.
    pub size: u32,
}

impl Loadgen {
    /// Checks that the binary runs at all (`--help`, at most 10 s).
    pub fn check(&self) -> Result<(), Error> {
        let mut guard = ChildGuard::spawn(Command::new(&self.bin).arg("--help"), "loadgen")?;
        let out = slurp(guard.child().stdout.take().expect("piped"));
        let err = slurp(guard.child().stderr.take().expect("piped"));
        let never = AtomicBool::new(false);
        let status = guard.wait_until(Instant::now() + Duration::from_secs(10), &never)?;
        drop(guard);
        let text = err.join().unwrap_or_default() + &out.join().unwrap_or_default();
        match status {
            Some(st) if st.success() => Ok(()),
            Some(st) => Err(fail(format!(
                "{} --help failed ({st}): {}",
                self.bin.display(),
                tail(&text, 3)
            ))),
            None => Err(fail(format!(
                "{} --help did not finish within 10 s",
                self.bin.display()
            ))),
        }
    }

    /// Longest one run may take before it is killed.
    pub fn time_limit(&self) -> Duration {
        Duration::from_secs_f64(self.warmup + self.duration * 2.0 + 10.0)
    }

    /// One run at `rate` packets/s against `target`.
    pub fn run(
        &self,
        target: SocketAddr,
        rate: u64,
        interrupted: &AtomicBool,
    ) -> Result<LoadgenReport, Error> {
        let args = [
            "--target".to_string(),
            target.to_string(),
            "--rate".into(),
            rate.to_string(),
            "--duration".into(),
            self.duration.to_string(),
            "--warmup".into(),
            self.warmup.to_string(),
            "--flows".into(),
            self.flows.to_string(),
            "--size".into(),
            self.size.to_string(),
            "--json".into(),
        ];
        let mut guard = ChildGuard::spawn(Command::new(&self.bin).args(&args), "loadgen")?;
        let out = slurp(guard.child().stdout.take().expect("piped"));
        let err = slurp(guard.child().stderr.take().expect("piped"));
        let limit = self.time_limit();
        let status = guard.wait_until(Instant::now() + limit, interrupted)?;
        drop(guard);
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        let Some(status) = status else {
            return Err(fail(format!(
                "loadgen did not finish within {:.0} s at {rate}/s (killed): {}",
                limit.as_secs_f64(),
                tail(&stderr, 3)
            )));
        };
        // A report on stdout counts even with a non-zero exit (loadgen may
        // use its exit status to flag loss).
        match parse_report(&stdout) {
            Ok(r) => Ok(r),
            Err(e) if status.success() => Err(fail(format!(
                "cannot parse loadgen's JSON report at {rate}/s: {e}; stdout: {}",
                tail(&stdout, 3)
            ))),
            Err(_) => Err(fail(format!(
                "loadgen failed at {rate}/s ({status}): {}",
                tail(&stderr, 3)
            ))),
        }
    }
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
    fn stat_fields_survive_odd_command_names() {
        let stat = "4242 (my (odd) server) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    37 12 0 0 20 0 3 0 12345 1000000 200 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(49));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn own_stat_is_readable() {
        let text = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat_cpu_ticks(&text).is_some());
        assert!(clock_ticks_per_sec() > 0);
    }

    #[test]
    fn loadgen_report_parses_with_extra_keys() {
        let j = r#"{"target":"127.0.0.1:1","rate_requested":1000,"send_rate":999.5,
            "echo_rate":999.0,"sent":1000,"received":999,"lost":1,"loss_pct":0.1,
            "duplicates":0,"reordered":0,"corrupted":0,
            "latency_us":{"p50":12.5,"p90":20,"p99":40,"p999":80,"p9999":90,"max":100},
            "latency_uncorrected_us":{"p50":1,"p90":2,"p99":3,"p999":4,"p9999":5,"max":6},
            "duration_s":1.0}"#;
        let r = parse_report(j).unwrap();
        assert_eq!(r.latency_us.p50, Some(12.5));
        assert_eq!(r.received, 999.0);
        let r = parse_report(&format!("loadgen: done\n{j}\n")).unwrap();
        assert_eq!(r.loss_pct, 0.1);
        assert!(parse_report("loadgen: failed").is_err());
    }

    #[test]
    fn guard_kills_on_drop() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let g = ChildGuard::spawn(&mut cmd, "sleep").unwrap();
        let pid = g.id();
        drop(g);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn wait_is_bounded() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut g = ChildGuard::spawn(&mut cmd, "sleep").unwrap();
        let t = Instant::now();
        let st = g
            .wait_until(
                Instant::now() + Duration::from_millis(100),
                &AtomicBool::new(false),
            )
            .unwrap();
        assert!(st.is_none());
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
