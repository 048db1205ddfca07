//! Child processes of the soak test: the `server`, the optional `impair`
//! relay and the `loadgen` run.
//!
//! Every child is held by a [`ChildGuard`] that kills and reaps it on drop,
//! so an error or an early return never leaves one behind (the pattern of
//! `tools/src/sweep/procs.rs`). Signals other than SIGKILL are sent with the
//! `kill` command, so this module needs no `unsafe`. Stderr of the server
//! and the relay is read line by line on a helper thread and handed over a
//! channel; stdout is read to the end on another one (it holds the JSON
//! report printed at exit).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often bounded waits look at a child.
const POLL: Duration = Duration::from_millis(10);

/// A child process that is killed and reaped when dropped.
pub struct ChildGuard {
    child: Child,
    name: String,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin closed and stdout/stderr piped.
    pub fn spawn(cmd: &mut Command, name: &str) -> Result<ChildGuard, String> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        Ok(ChildGuard {
            child,
            name: name.to_string(),
            stdout: None,
            stderr: None,
        })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads stdout (and stderr unless `lines` is given) to the end on helper
    /// threads; with `lines`, stderr goes line by line to that channel.
    fn collect(&mut self, lines: Option<mpsc::Sender<String>>) {
        let out = self.child.stdout.take().expect("piped");
        self.stdout = Some(slurp(out));
        let err = self.child.stderr.take().expect("piped");
        match lines {
            Some(tx) => {
                thread::spawn(move || {
                    for line in BufReader::new(err).lines() {
                        let Ok(line) = line else { break };
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                });
            }
            None => self.stderr = Some(slurp(err)),
        }
    }

    /// Whether the child has exited (then its status).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, String> {
        self.child
            .try_wait()
            .map_err(|e| format!("cannot wait for {}: {e}", self.name))
    }

    /// Waits until the child exits or `deadline` passes (then kills it and
    /// returns `None`).
    pub fn wait_until(&mut self, deadline: Instant) -> Result<Option<ExitStatus>, String> {
        loop {
            if let Some(st) = self.try_wait()? {
                return Ok(Some(st));
            }
            if Instant::now() >= deadline {
                self.kill();
                return Ok(None);
            }
            thread::sleep(POLL);
        }
    }

    /// Sends SIGINT (with the `kill` command) if the child is still running.
    pub fn interrupt(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-INT", &self.pid().to_string()])
                .status();
        }
    }

    /// Kills and reaps the child (no-op once it has exited).
    pub fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// SIGINT, wait at most `timeout` (kill after), and return the exit
    /// status (None when killed), all of stdout and (when collected) stderr.
    pub fn stop(&mut self, timeout: Duration) -> (Option<ExitStatus>, String, String) {
        self.interrupt();
        let status = self.wait_until(Instant::now() + timeout).ok().flatten();
        let out = self.stdout.take().and_then(|h| h.join().ok());
        let err = self.stderr.take().and_then(|h| h.join().ok());
        (status, out.unwrap_or_default(), err.unwrap_or_default())
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

/// A long-running child (server or relay) whose stderr lines we follow.
pub struct Daemon {
    /// The process.
    pub guard: ChildGuard,
    /// Its stderr, line by line.
    pub lines: Receiver<String>,
    /// Where it listens (from its `listening on ADDR` line).
    pub addr: SocketAddr,
    /// Its last stderr lines, for error messages.
    pub recent: Vec<String>,
}

impl Daemon {
    /// Starts `bin ARGS...` and waits (at most `timeout`) for a stderr line
    /// containing `listening on ADDR`.
    pub fn start(
        bin: &Path,
        args: &[String],
        name: &str,
        timeout: Duration,
    ) -> Result<Daemon, String> {
        let mut guard = ChildGuard::spawn(Command::new(bin).args(args), name)?;
        let (tx, lines) = mpsc::channel();
        guard.collect(Some(tx));
        let mut d = Daemon {
            guard,
            lines,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            recent: Vec::new(),
        };
        let deadline = Instant::now() + timeout;
        loop {
            match d.lines.recv_timeout(POLL) {
                Ok(line) => {
                    let addr = parse_listening(&line);
                    d.remember(line);
                    if let Some(addr) = addr {
                        d.addr = addr;
                        return Ok(d);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let st = d.guard.wait_until(Instant::now() + timeout)?;
                    return Err(format!(
                        "{name} exited ({}) before listening ({}): {}",
                        st.map_or("hung".into(), |s| s.to_string()),
                        args.join(" "),
                        d.recent.join(" | ")
                    ));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{name} printed no 'listening on' line within {:.0} s: {}",
                    timeout.as_secs_f64(),
                    d.recent.join(" | ")
                ));
            }
        }
    }

    /// Keeps the last few stderr lines.
    pub fn remember(&mut self, line: String) {
        if self.recent.len() == 8 {
            self.recent.remove(0);
        }
        self.recent.push(line);
    }
}

/// Runs a child to completion in the background (loadgen): spawn now, poll
/// with [`ChildGuard::try_wait`], read the outputs with [`ChildGuard::stop`].
pub fn spawn_collected(bin: &Path, args: &[String], name: &str) -> Result<ChildGuard, String> {
    let mut g = ChildGuard::spawn(Command::new(bin).args(args), name)?;
    g.collect(None);
    Ok(g)
}

/// `...: listening on 127.0.0.1:PORT (...)` → the address.
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Parses a JSON report: all of `text`, or failing that its outermost `{...}`.
pub fn parse_json(text: &str) -> Option<serde_json::Value> {
    serde_json::from_str(text.trim()).ok().or_else(|| {
        let (a, b) = (text.find('{')?, text.rfind('}')?);
        serde_json::from_str(text.get(a..=b)?).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines() {
        let s = "server: listening on 127.0.0.1:40123 (2 workers, one shared socket)";
        assert_eq!(parse_listening(s), Some("127.0.0.1:40123".parse().unwrap()));
        let i = "impair: listening on 127.0.0.1:5555 -> upstream 127.0.0.1:1 (x)";
        assert_eq!(parse_listening(i), Some("127.0.0.1:5555".parse().unwrap()));
        assert_eq!(parse_listening("server: shutting down"), None);
    }

    #[test]
    fn json_with_leading_text() {
        assert_eq!(parse_json("x\n{\"a\":1}\n").unwrap()["a"], 1);
        assert!(parse_json("nothing").is_none());
    }

    #[test]
    fn guard_kills_on_drop() {
        let g = ChildGuard::spawn(Command::new("sleep").arg("30"), "sleep").unwrap();
        let pid = g.pid();
        drop(g);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
