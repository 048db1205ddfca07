//! Child processes and the few system calls the sweep needs: the one
//! module of the sweep that may use `unsafe` (prctl, kill, sysconf). The
//! `server` under test and the `loadgen` runs are built on it in
//! `server_proc.rs` and `loadgen_proc.rs`.
//!
//! Every child is held by a [`ChildGuard`] that kills and reaps it on drop,
//! so an error or an early return never leaves one behind. Children are also
//! started with `PR_SET_PDEATHSIG = SIGKILL`, so they die even if the sweep
//! itself is killed outright (they are always spawned from the main thread:
//! the death signal follows the spawning thread). All waits are bounded and
//! give up early when the sweep is interrupted.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

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

pub fn fail(msg: impl Into<String>) -> Error {
    Error::Failed(msg.into())
}

/// How often bounded waits look at the child and the interrupt flag.
pub const POLL: Duration = Duration::from_millis(10);

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

    /// The child itself (to take its pipes).
    pub fn child(&mut self) -> &mut Child {
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
pub fn slurp(r: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut r = r;
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Last lines of some output, for error messages.
pub fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = v.len().saturating_sub(lines);
    if v.is_empty() {
        "(no output)".to_string()
    } else {
        v[start..].join(" | ")
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn clock_ticks_are_positive() {
        assert!(clock_ticks_per_sec() > 0);
    }

    #[test]
    fn tail_keeps_the_last_non_empty_lines() {
        assert_eq!(tail("a\n\nb\nc\n", 2), "b | c");
        assert_eq!(tail("  \n", 2), "(no output)");
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
