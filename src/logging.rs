//! The `-v` packet log, kept off the workers' critical path.
//!
//! A worker never formats or writes a log line. Its [`PacketLog`] stage
//! copies a fixed-size [`LogRecord`] (worker, sender, length, the first
//! bytes, receive time) into a bounded queue with `try_send`: no allocation,
//! never a wait. One [`LogThread`] formats the records and writes them with
//! `log::info!` (so `RUST_LOG` still filters them). When the queue is full,
//! because the thread cannot keep up, the line is dropped and counted in
//! [`LogQueue::dropped`]; the final report shows the total as
//! `log_lines_dropped`. The `server` binary's logger hands each line to the
//! non-blocking stderr queue ([`crate::stderr`]), so this thread does not
//! wait for stderr either; lines lost there count as `stderr_lines_dropped`.
//! The per-worker `--log-rate` limit still applies first: lines it skips
//! are counted and said in the next line logged.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};

use crate::packet::PacketBuffer;
use crate::process::{Stage, Verdict};

/// Bytes shown in a preview.
pub const PREVIEW: usize = 16;

/// Lines the queue between the workers and the log thread holds.
pub const QUEUE_LINES: usize = 4096;

/// At shutdown, how long the log thread may go without writing a line
/// before the server stops waiting for it (stderr is then taken as blocked).
pub const STALL_LIMIT: Duration = Duration::from_millis(500);

/// One packet log line, as the worker hands it over: plain `Copy` data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRecord {
    /// Worker index.
    pub worker: u32,
    /// Who sent the datagram.
    pub peer: SocketAddr,
    /// Datagram length in bytes.
    pub len: u32,
    /// Its first bytes (`head_len` of them are valid).
    pub head: [u8; PREVIEW],
    /// Valid bytes in `head`.
    pub head_len: u8,
    /// Receive time, nanoseconds since the Unix epoch.
    pub rx_ns: u64,
    /// Lines the rate limit skipped on this worker since the last line.
    pub skipped: u64,
}

impl LogRecord {
    /// A record of `payload` (a datagram of `len` bytes) from `peer`.
    pub fn new(
        worker: usize,
        peer: SocketAddr,
        len: usize,
        payload: &[u8],
        rx_ns: u64,
        skipped: u64,
    ) -> LogRecord {
        let shown = payload.len().min(PREVIEW);
        let mut head = [0u8; PREVIEW];
        head[..shown].copy_from_slice(&payload[..shown]);
        LogRecord {
            worker: u32::try_from(worker).unwrap_or(u32::MAX),
            peer,
            len: u32::try_from(len).unwrap_or(u32::MAX),
            head,
            head_len: shown as u8,
            rx_ns,
            skipped,
        }
    }

    /// The bytes shown in the preview.
    pub fn head(&self) -> &[u8] {
        &self.head[..usize::from(self.head_len).min(PREVIEW)]
    }
}

/// `68 65 6c 6c 6f  |hello|` for `shown`, with `...` when the datagram
/// (of `len` bytes) is longer than what is shown.
struct Preview<'a> {
    shown: &'a [u8],
    len: usize,
}

impl fmt::Display for Preview<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.shown {
            write!(f, "{b:02x} ")?;
        }
        f.write_str(" |")?;
        for &b in self.shown {
            let c = if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            };
            write!(f, "{c}")?;
        }
        f.write_str("|")?;
        if self.len > self.shown.len() {
            f.write_str("...")?;
        }
        Ok(())
    }
}

/// `68 65 6c 6c 6f  |hello|` for the first bytes of `data`.
pub fn preview(data: &[u8]) -> String {
    Preview {
        shown: &data[..data.len().min(PREVIEW)],
        len: data.len(),
    }
    .to_string()
}

impl fmt::Display for LogRecord {
    /// `worker 0 from 127.0.0.1:5000 len 5 rx 1700000000.000000001: 68 65 6c 6c 6f  |hello|`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "worker {} from {} len {} rx {}.{:09}: {}",
            self.worker,
            self.peer,
            self.len,
            self.rx_ns / 1_000_000_000,
            self.rx_ns % 1_000_000_000,
            Preview {
                shown: self.head(),
                len: self.len as usize,
            }
        )?;
        if self.skipped > 0 {
            write!(f, " ({} packets not logged: rate limit)", self.skipped)?;
        }
        Ok(())
    }
}

/// The workers' end of the log queue (cheap to clone, one per worker).
#[derive(Debug, Clone)]
pub struct LogQueue {
    tx: Sender<LogRecord>,
    dropped: Arc<AtomicU64>,
}

impl LogQueue {
    /// A queue of `capacity` lines and its receiving end.
    pub fn bounded(capacity: usize) -> (LogQueue, Receiver<LogRecord>) {
        let (tx, rx) = bounded(capacity);
        let q = LogQueue {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (q, rx)
    }

    /// Queues `rec` if there is room; otherwise drops and counts it.
    /// Never blocks, never allocates. Returns whether it was queued.
    #[inline]
    pub fn offer(&self, rec: LogRecord) -> bool {
        if self.tx.try_send(rec).is_ok() {
            return true;
        }
        self.dropped.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Lines dropped so far because the queue was full (all clones).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Rate-limited packet logger (a [`Stage`] that always passes).
#[derive(Debug)]
pub struct PacketLog {
    worker: usize,
    per_sec: u32,
    window_start_ns: u64,
    used: u32,
    suppressed: u64,
    queue: LogQueue,
}

impl PacketLog {
    /// Logs at most `per_sec` packets a second for worker `worker`, into `queue`.
    pub fn new(worker: usize, per_sec: u32, queue: LogQueue) -> PacketLog {
        PacketLog {
            worker,
            per_sec,
            window_start_ns: 0,
            used: 0,
            suppressed: 0,
            queue,
        }
    }

    /// Lines the rate limit skipped since the last line logged.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

impl Stage for PacketLog {
    #[inline]
    fn process(&mut self, pkt: &mut PacketBuffer<'_>) -> Verdict {
        let now = pkt.meta.rx_ns;
        if now.saturating_sub(self.window_start_ns) >= 1_000_000_000 {
            self.window_start_ns = now;
            self.used = 0;
        }
        if self.used >= self.per_sec {
            self.suppressed += 1;
            return Verdict::Echo;
        }
        self.used += 1;
        let rec = LogRecord::new(
            self.worker,
            pkt.meta.peer,
            pkt.meta.len,
            pkt.payload(),
            now,
            self.suppressed,
        );
        if self.queue.offer(rec) {
            self.suppressed = 0;
        }
        Verdict::Echo
    }
}

/// What the log thread did, as known at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSummary {
    /// Lines handed to the logger.
    pub written: u64,
    /// Lines dropped because the queue was full.
    pub dropped_full: u64,
    /// Lines still queued when the server stopped waiting for a stalled
    /// log thread (never written).
    pub abandoned: u64,
    /// The thread ended and was joined (false: it was stuck writing and was
    /// left behind; the process exit ends it).
    pub joined: bool,
}

impl LogSummary {
    /// Lines that never reached the logger: dropped plus abandoned.
    pub fn lost(&self) -> u64 {
        self.dropped_full + self.abandoned
    }
}

/// The logging thread: formats and writes queued [`LogRecord`]s.
pub struct LogThread {
    queue: Option<LogQueue>,
    rx: Receiver<LogRecord>,
    written: Arc<AtomicU64>,
    quit: Arc<AtomicBool>,
    ended: Receiver<()>,
    handle: JoinHandle<()>,
}

impl LogThread {
    /// Starts the thread with a queue of `capacity` lines.
    pub fn spawn(capacity: usize) -> io::Result<LogThread> {
        let (queue, rx) = LogQueue::bounded(capacity);
        let written = Arc::new(AtomicU64::new(0));
        let quit = Arc::new(AtomicBool::new(false));
        // Dropped when the thread ends (return or panic): `finish` waits on it.
        let (ended_tx, ended) = bounded::<()>(0);
        let (rx2, w, q) = (rx.clone(), written.clone(), quit.clone());
        let handle = thread::Builder::new()
            .name("packet-log".into())
            .spawn(move || {
                let _ended = ended_tx;
                for rec in rx2.iter() {
                    if q.load(Ordering::Relaxed) {
                        break;
                    }
                    log::info!("{rec}");
                    w.fetch_add(1, Ordering::Relaxed);
                }
            })?;
        Ok(LogThread {
            queue: Some(queue),
            rx,
            written,
            quit,
            ended,
            handle,
        })
    }

    /// The queue to give each worker's [`PacketLog`].
    pub fn queue(&self) -> LogQueue {
        self.queue.clone().expect("queue present until finish")
    }

    /// Ends the thread once the workers are gone (their queue ends dropped):
    /// it writes what is still queued and exits, and is joined. If it makes
    /// no progress for `stall` (a logger that blocks, e.g. one writing
    /// straight to a stderr nobody reads; the server's never does), it
    /// is told to stop, what it still holds is counted as abandoned, and it
    /// is left behind instead of joined, so shutdown never hangs on stderr.
    pub fn finish(mut self, stall: Duration) -> LogSummary {
        // Our sender goes too, so the thread sees the queue end once drained.
        let dropped = self.queue.take().map(|q| q.dropped);
        let dropped_full = || dropped.as_ref().map_or(0, |d| d.load(Ordering::Relaxed));
        let mut last = self.written.load(Ordering::Relaxed);
        loop {
            match self.ended.recv_timeout(stall) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                    let joined = self.handle.join().is_ok();
                    return LogSummary {
                        written: self.written.load(Ordering::Relaxed),
                        dropped_full: dropped_full(),
                        abandoned: self.rx.len() as u64,
                        joined,
                    };
                }
                Err(RecvTimeoutError::Timeout) => {
                    let now = self.written.load(Ordering::Relaxed);
                    if now == last {
                        self.quit.store(true, Ordering::Relaxed);
                        return LogSummary {
                            written: now,
                            dropped_full: dropped_full(),
                            abandoned: self.rx.len() as u64,
                            joined: false,
                        };
                    }
                    last = now;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::PacketPool;

    fn addr() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    #[test]
    fn preview_shows_hex_and_ascii() {
        assert_eq!(preview(b"hi\n"), "68 69 0a  |hi.|");
        assert!(preview(&[0u8; 40]).ends_with("|..."));
    }

    #[test]
    fn record_formats_sender_length_preview_and_skips() {
        let r = LogRecord::new(3, addr(), 5, b"hello", 1_700_000_000_000_000_001, 0);
        assert_eq!(
            r.to_string(),
            "worker 3 from 127.0.0.1:5000 len 5 rx 1700000000.000000001: \
             68 65 6c 6c 6f  |hello|"
        );
        let long: Vec<u8> = (b'a'..=b'z').collect();
        let r = LogRecord::new(0, addr(), long.len(), &long, 2_500_000_000, 7);
        assert_eq!(r.head(), b"abcdefghijklmnop");
        let s = r.to_string();
        assert!(s.contains("len 26 rx 2.500000000: 61 62"), "{s}");
        assert!(
            s.ends_with("|abcdefghijklmnop|... (7 packets not logged: rate limit)"),
            "{s}"
        );
        let empty = LogRecord::new(1, addr(), 0, b"", 0, 0).to_string();
        assert!(empty.ends_with("len 0 rx 0.000000000:  ||"), "{empty}");
    }

    fn run(log: &mut PacketLog, n: usize, rx_ns: u64) {
        let mut pool = PacketPool::new(1, 32);
        let s = pool.alloc().unwrap();
        {
            let mut b = pool.buffer(&s);
            b.data[..2].copy_from_slice(b"ok");
            b.meta.len = 2;
            b.meta.peer = addr();
            b.meta.rx_ns = rx_ns;
            for _ in 0..n {
                assert_eq!(log.process(&mut b), Verdict::Echo);
            }
        }
        pool.free(s);
    }

    #[test]
    fn rate_limit_counts_what_it_skips() {
        let (q, rx) = LogQueue::bounded(100);
        let mut log = PacketLog::new(0, 3, q.clone());
        run(&mut log, 10, 5_000_000_000);
        assert_eq!(log.suppressed(), 7);
        assert_eq!(rx.len(), 3);
        run(&mut log, 1, 6_000_000_000); // next second: logs again, says what it skipped
        assert_eq!(log.suppressed(), 0);
        let last = rx.try_iter().last().unwrap();
        assert_eq!((last.skipped, last.head()), (7, &b"ok"[..]));
        assert_eq!(q.dropped(), 0);
    }

    #[test]
    fn full_queue_drops_and_counts_without_blocking() {
        let (q, rx) = LogQueue::bounded(4);
        let mut a = PacketLog::new(0, 1000, q.clone());
        let mut b = PacketLog::new(1, 1000, q.clone());
        run(&mut a, 10, 1);
        run(&mut b, 5, 1);
        assert_eq!(rx.len(), 4, "the queue holds what fits");
        assert_eq!(q.dropped(), 11, "the rest is counted, across workers");
        let first: Vec<LogRecord> = rx.try_iter().collect();
        assert!(first.iter().all(|r| r.worker == 0 && r.len == 2));
        run(&mut b, 1, 1); // room again: queued
        assert_eq!(rx.len(), 1);
        assert_eq!(q.dropped(), 11);
    }

    #[test]
    fn thread_writes_everything_then_joins_when_senders_drop() {
        let t = LogThread::spawn(64).unwrap();
        let mut log = PacketLog::new(0, 1000, t.queue());
        run(&mut log, 20, 1);
        drop(log);
        let s = t.finish(Duration::from_secs(5));
        assert_eq!(
            s,
            LogSummary {
                written: 20,
                dropped_full: 0,
                abandoned: 0,
                joined: true
            }
        );
        assert_eq!(s.lost(), 0);
    }
}
