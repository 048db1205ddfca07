//! `--capture FILE.pcap`: received datagrams (and with `--capture-echoes`
//! the echoes too) written to a pcap file that tshark and Wireshark open.
//!
//! What is captured: every datagram that reaches the pipeline, i.e. every
//! one received except those too large for the buffer (`truncated`: their
//! bytes are gone) and those that found the pool empty (`pool_exhausted`:
//! never read into a buffer). The [`tap::CaptureRx`] stage runs first,
//! before the guards, so datagrams the guards or the protocol stages then
//! drop are in the file too (that is what one wants to see when debugging
//! them). With `--capture-echoes`, [`tap::CaptureEcho`] runs last, after
//! the reply stages and the `-v` logger, and records the reply as it will
//! be sent, from the local address it leaves from to the peer.
//!
//! Workers never wait on the disk: a stage copies the datagram into a
//! pre-allocated [`record::Record`] taken from a free queue and hands it to
//! the writer thread ([`writer`]) with `try_send`; the writer hands it back
//! after writing. `--capture-queue N` records exist in all; when none is
//! free the datagram is not captured and counts in `capture_dropped`, so
//! `captured + capture_dropped` is every datagram offered to the capture.

pub mod record;
pub mod tap;
pub mod writer;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;
use serde::Serialize;

use self::record::Record;
use self::tap::{CaptureEcho, CaptureRx, Tap};
use self::writer::PcapOut;
use crate::process::Pipeline;

/// Records in flight by default (shared by every worker): 4096 x
/// `--packet-size` bytes, allocated at start.
pub const DEFAULT_QUEUE: usize = 4096;

/// What to capture and where (the `server` binary's `--capture*` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    /// The pcap file, created (or truncated) at start.
    pub path: PathBuf,
    /// Record the echoes as well (`--capture-echoes`).
    pub echoes: bool,
    /// Records in flight (`--capture-queue`); at least 1.
    pub queue: usize,
}

/// Counts shared by the workers, the writer thread and the metrics thread.
#[derive(Debug, Default)]
pub struct CaptureCounters {
    /// Records written to the file.
    pub captured: AtomicU64,
    /// Datagrams not captured: no free record (writer behind), or the
    /// file failed.
    pub dropped: AtomicU64,
    error: Mutex<Option<String>>,
}

impl CaptureCounters {
    /// Keeps the first write error.
    fn set_error(&self, e: String) {
        self.error.lock().get_or_insert(e);
    }

    /// The statistics line's capture field: ` | capture W dropped D`.
    pub fn stats_field(&self) -> String {
        format!(
            " | capture {} dropped {}",
            self.captured.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed)
        )
    }
}

/// The capture's part of the final report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CaptureSummary {
    /// The pcap file.
    pub file: String,
    /// Echoes were captured too.
    pub echoes: bool,
    /// Records written to the file.
    pub captured: u64,
    /// Datagrams not captured (queue full, or the file failed).
    pub capture_dropped: u64,
    /// The write error that ended the capture, if one did.
    pub error: Option<String>,
}

impl std::fmt::Display for CaptureSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "capture       {} records written to {}{}, {} not captured (capture queue full)",
            self.captured,
            self.file,
            if self.echoes { " (with echoes)" } else { "" },
            self.capture_dropped
        )?;
        match &self.error {
            Some(e) => write!(f, "; writing stopped: {e}"),
            None => Ok(()),
        }
    }
}

/// A pipeline that starts with the receive capture stage, if capturing.
pub fn first_stage(c: Option<&Capture>) -> Pipeline {
    match c.and_then(Capture::rx_stage) {
        Some(s) => Pipeline::echo().with(s),
        None => Pipeline::echo(),
    }
}

/// `p` with the echo capture stage last, with `--capture-echoes`.
pub fn last_stage(p: Pipeline, c: Option<&Capture>) -> Pipeline {
    match c.and_then(Capture::echo_stage) {
        Some(s) => p.with(s),
        None => p,
    }
}

/// A running capture: the writer thread and what the workers' taps need.
pub struct Capture {
    cfg: CaptureConfig,
    local: SocketAddr,
    records: Option<Sender<Record>>,
    free_tx: Sender<Record>,
    free_rx: Receiver<Record>,
    counters: Arc<CaptureCounters>,
    writer: JoinHandle<()>,
}

impl Capture {
    /// Creates the file (an error names the path and the OS error),
    /// allocates the records and starts the writer. `local` is the bound
    /// address, used where the kernel did not say a datagram's destination.
    pub fn start(
        cfg: &CaptureConfig,
        packet_size: usize,
        local: SocketAddr,
    ) -> io::Result<Capture> {
        let out = PcapOut::create(&cfg.path, packet_size)?;
        let n = cfg.queue.max(1);
        let (records, records_rx) = bounded(n);
        let (free_tx, free_rx) = bounded(n);
        for _ in 0..n {
            let _ = free_tx.try_send(Record::with_capacity(packet_size));
        }
        let counters = Arc::new(CaptureCounters::default());
        let (c, back) = (counters.clone(), free_tx.clone());
        let writer = thread::Builder::new()
            .name("capture".into())
            .spawn(move || writer::run(out, records_rx, back, c))?;
        Ok(Capture {
            cfg: cfg.clone(),
            local,
            records: Some(records),
            free_tx,
            free_rx,
            counters,
            writer,
        })
    }

    /// The counters (for the statistics line).
    pub fn counters(&self) -> Arc<CaptureCounters> {
        self.counters.clone()
    }

    fn tap(&self) -> Option<Tap> {
        Some(Tap {
            records: self.records.clone()?,
            free_tx: self.free_tx.clone(),
            free_rx: self.free_rx.clone(),
            counters: self.counters.clone(),
            local: self.local,
        })
    }

    /// The stage that records received datagrams (first in a pipeline).
    pub fn rx_stage(&self) -> Option<CaptureRx> {
        self.tap().map(CaptureRx)
    }

    /// The stage that records echoes (last in a pipeline), with
    /// `--capture-echoes` only.
    pub fn echo_stage(&self) -> Option<CaptureEcho> {
        self.cfg
            .echoes
            .then(|| self.tap())
            .flatten()
            .map(CaptureEcho)
    }

    /// Gives up the capture's own sender once every worker has its stages,
    /// so the writer ends when the last worker's stages are dropped.
    pub fn seal(&mut self) {
        self.records = None;
    }

    /// Waits for the writer (call after the workers are joined) and says
    /// what was captured.
    pub fn finish(mut self) -> CaptureSummary {
        self.seal();
        if self.writer.join().is_err() {
            self.counters
                .set_error("the capture writer thread panicked".into());
        }
        let c = &self.counters;
        CaptureSummary {
            file: self.cfg.path.display().to_string(),
            echoes: self.cfg.echoes,
            captured: c.captured.load(Ordering::Relaxed),
            capture_dropped: c.dropped.load(Ordering::Relaxed),
            error: c.error.lock().clone(),
        }
    }
}
