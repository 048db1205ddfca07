//! The server's own stderr lines (the `listening on` line, statistics lines,
//! SIGHUP summaries, notices and errors), written so that a stalled or
//! broken stderr never blocks the caller and never panics.
//!
//! Callers hand finished text to [`write`] (or [`line`]): it goes into a
//! bounded queue with `try_send` and returns at once. One `stderr-writer`
//! thread writes the queue out with `write_all` and ignores nothing: a
//! write error (`EPIPE` when the reader went away, `ENOSPC` for
//! `2>/dev/full`, ...) marks stderr dead, and that line and every later one
//! are dropped and counted. When the queue is full (a reader that stopped
//! reading) the line is dropped and counted too. [`flush`] waits, bounded,
//! for what is queued, and [`summary`] says what was lost, for the final
//! report on stdout (`stderr_lines_dropped`).
//!
//! This is process-wide: stderr is one per process.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender, TrySendError};

/// Writes (lines or multi-line summaries) the queue holds.
pub const QUEUE_LINES: usize = 64;

/// How long [`flush`] waits without progress before it takes stderr as
/// blocked.
pub const STALL_LIMIT: Duration = Duration::from_millis(500);

/// What was lost on the way to stderr.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StderrSummary {
    /// Writes dropped: queue full, stderr failed, or still queued (blocked).
    pub dropped: u64,
    /// Why: the write error, or that stderr is blocked (nobody reads it);
    /// `None` when nothing was lost.
    pub problem: Option<String>,
}

struct Writer {
    tx: Option<Sender<String>>,
    accepted: AtomicU64,
    done: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    error: Arc<Mutex<Option<String>>>,
}

static WRITER: OnceLock<Writer> = OnceLock::new();

fn writer() -> &'static Writer {
    WRITER.get_or_init(|| {
        let (tx, rx) = bounded::<String>(QUEUE_LINES);
        let done = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let error = Arc::new(Mutex::new(None));
        let (d, dr, er) = (done.clone(), dropped.clone(), error.clone());
        let spawned = thread::Builder::new()
            .name("stderr-writer".into())
            .spawn(move || {
                let mut dead = false;
                for text in rx.iter() {
                    if !dead {
                        if let Err(e) = io::stderr().lock().write_all(text.as_bytes()) {
                            dead = true;
                            if let Ok(mut g) = er.lock() {
                                *g = Some(e.to_string());
                            }
                        }
                    }
                    if dead {
                        dr.fetch_add(1, Ordering::Relaxed);
                    }
                    d.fetch_add(1, Ordering::Relaxed);
                }
            });
        Writer {
            // Without the thread, writes go straight to stderr (errors ignored).
            tx: spawned.ok().map(|_| tx),
            accepted: AtomicU64::new(0),
            done,
            dropped,
            error,
        }
    })
}

/// Queues `text` for stderr as is; never blocks, never panics. Returns
/// whether it was queued (false: dropped and counted).
pub fn write(text: String) -> bool {
    let w = writer();
    let Some(tx) = &w.tx else {
        let _ = io::stderr().write_all(text.as_bytes());
        return true;
    };
    match tx.try_send(text) {
        Ok(()) => {
            w.accepted.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            w.dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// Queues `text` and a newline for stderr (see [`write`]).
pub fn line(text: impl fmt::Display) -> bool {
    write(format!("{text}\n"))
}

/// Waits until everything queued so far is written (or failed), or until
/// the writer made no progress for `stall`.
pub fn flush(stall: Duration) {
    let w = writer();
    let target = w.accepted.load(Ordering::Relaxed);
    let mut last = w.done.load(Ordering::Relaxed);
    let mut since = Instant::now();
    loop {
        let now = w.done.load(Ordering::Relaxed);
        if now >= target {
            return;
        }
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= stall {
            return;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// What was lost so far; lines still queued count as lost (call [`flush`]
/// first to give them their chance).
pub fn summary() -> StderrSummary {
    let w = writer();
    let pending = w
        .accepted
        .load(Ordering::Relaxed)
        .saturating_sub(w.done.load(Ordering::Relaxed));
    let dropped = w.dropped.load(Ordering::Relaxed) + pending;
    let error = w.error.lock().ok().and_then(|g| g.clone());
    let problem = match error {
        Some(e) => Some(format!("stderr failed: {e}")),
        None if dropped > 0 => Some("stderr blocked: nobody reads it fast enough".into()),
        None => None,
    };
    StderrSummary { dropped, problem }
}
