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
//! `log` records go the same way: [`init_logger`] installs `env_logger`
//! (its format, `RUST_LOG` filtering) with a pipe that collects each
//! formatted record and queues it here, so a worker's warning or the `-v`
//! packet log can neither block on stderr nor be lost uncounted. Records
//! below `warn` (the packet log) are [`write_bulk`]: they may not take the
//! last [`RESERVED`] places in the queue, so a flood of them never crowds
//! out the server's own lines.
//!
//! This is process-wide: stderr is one per process.

use std::cell::Cell;
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender, TrySendError};

/// Writes (lines or multi-line summaries) the queue holds.
pub const QUEUE_LINES: usize = 64;

/// Places in the queue that [`write_bulk`] leaves to [`write`].
pub const RESERVED: usize = 16;

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
    send(text, false)
}

/// Like [`write`], for text that may be shed first (the `-v` packet log):
/// dropped and counted once fewer than [`RESERVED`] places are left.
pub fn write_bulk(text: String) -> bool {
    send(text, true)
}

/// Whether a write may join a queue holding `queued` writes.
fn admit(queued: usize, bulk: bool) -> bool {
    !bulk || queued + RESERVED < QUEUE_LINES
}

fn send(text: String, bulk: bool) -> bool {
    let w = writer();
    let Some(tx) = &w.tx else {
        let _ = io::stderr().write_all(text.as_bytes());
        return true;
    };
    if !admit(tx.len(), bulk) {
        w.dropped.fetch_add(1, Ordering::Relaxed);
        return false;
    }
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

thread_local! {
    /// Set by [`Routed`] for the record being formatted on this thread:
    /// whether it is below `warn` (sent with [`write_bulk`]).
    static BULK: Cell<bool> = const { Cell::new(false) };
}

/// `env_logger`'s filter and format, with the record's level noted for
/// [`LogPipe`].
struct Routed(env_logger::Logger);

impl log::Log for Routed {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        log::Log::enabled(&self.0, m)
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.0.matches(r) {
            let _ = BULK.try_with(|b| b.set(r.level() > log::Level::Warn));
            log::Log::log(&self.0, r);
        }
    }

    fn flush(&self) {}
}

/// `env_logger`'s target: it writes a whole formatted record, then
/// flushes; the flush queues the record (never blocks, never fails).
#[derive(Default)]
struct LogPipe(Vec<u8>);

impl LogPipe {
    /// The record collected so far, if any (the pipe is then empty).
    fn take(&mut self) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        let text = String::from_utf8_lossy(&self.0).into_owned();
        self.0.clear();
        Some(text)
    }
}

impl Write for LogPipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(text) = self.take() {
            if BULK.try_with(Cell::get).unwrap_or(false) {
                write_bulk(text);
            } else {
                write(text);
            }
        }
        Ok(())
    }
}

/// Installs `env_logger` (level `default_filter` unless `RUST_LOG` says
/// otherwise; millisecond timestamps) writing through this module's queue.
/// Colours as `env_logger` would choose them for stderr: on a terminal,
/// unless `NO_COLOR` or `RUST_LOG_STYLE` say otherwise. Returns false if a
/// logger was already installed (then nothing changes).
pub fn init_logger(default_filter: &str) -> bool {
    let mut b =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter));
    b.format_timestamp_millis()
        .target(env_logger::Target::Pipe(Box::new(LogPipe::default())));
    // A pipe target is never coloured on its own: decide for stderr.
    if std::env::var_os("RUST_LOG_STYLE").is_none() {
        let colour = io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        b.write_style(if colour {
            env_logger::WriteStyle::Always
        } else {
            env_logger::WriteStyle::Never
        });
    }
    let logger = b.build();
    let level = logger.filter();
    if log::set_boxed_logger(Box::new(Routed(logger))).is_err() {
        return false;
    }
    log::set_max_level(level);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_writes_leave_the_reserve_to_the_others() {
        assert!(admit(0, true));
        assert!(admit(QUEUE_LINES - RESERVED - 1, true));
        assert!(!admit(QUEUE_LINES - RESERVED, true));
        assert!(admit(QUEUE_LINES - 1, false));
    }

    #[test]
    fn pipe_hands_over_one_whole_record_per_flush() {
        let mut p = LogPipe::default();
        assert_eq!(p.take(), None);
        p.write_all(b"[ts WARN  x] first ").unwrap();
        p.write_all(b"half\n").unwrap();
        assert_eq!(p.take().as_deref(), Some("[ts WARN  x] first half\n"));
        assert_eq!(p.take(), None, "taken once");
        p.write_all(&[b'o', 0xff, b'k']).unwrap();
        assert_eq!(
            p.take().as_deref(),
            Some("o\u{fffd}k"),
            "lossy, never a panic"
        );
    }
}
