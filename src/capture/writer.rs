//! The capture writer thread: takes [`Record`]s off the queue, writes each
//! as one pcap packet (nanosecond timestamps, linktype RAW, through
//! `pcap-file`), and hands the record back to the workers for reuse.
//!
//! It flushes whenever the queue runs dry (and at least every 100 ms under
//! load), and at the end: when every worker's sender is gone (the server's
//! shutdown joins it after the workers), so the file is complete after
//! Ctrl+C or SIGTERM. A write error ends writing: the error is kept for
//! the report and every later record counts as dropped.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use byteorder::BigEndian;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use pcap_file::pcap::{PcapHeader, PcapPacket};
use pcap_file::{DataLink, Endianness, TsResolution};

use super::record::{Record, MAX_HEADERS};
use super::CaptureCounters;

/// Longest the file goes unflushed while records keep coming.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// An open capture file with its pcap header written.
pub struct PcapOut {
    out: BufWriter<File>,
    header: PcapHeader,
    scratch: Vec<u8>,
}

impl PcapOut {
    /// Creates `path` (truncating it) and writes the pcap header, with a
    /// snap length that holds a whole `packet_size` datagram and its headers.
    pub fn create(path: &Path, packet_size: usize) -> io::Result<PcapOut> {
        let named = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot create the capture file {}: {e} (give --capture a writable path)",
                    path.display()
                ),
            )
        };
        let file = File::create(path).map_err(named)?;
        let header = PcapHeader {
            snaplen: (packet_size + MAX_HEADERS) as u32,
            datalink: DataLink::RAW,
            ts_resolution: TsResolution::NanoSecond,
            endianness: Endianness::Big,
            ..PcapHeader::default()
        };
        let mut out = BufWriter::new(file);
        header
            .write_to(&mut out)
            .map_err(|e| named(io::Error::other(e.to_string())))?;
        // A capture that gets no datagram is still a valid (empty) file.
        out.flush().map_err(named)?;
        Ok(PcapOut {
            out,
            header,
            scratch: Vec::with_capacity(packet_size + MAX_HEADERS),
        })
    }

    /// Encodes one record; `false` (nothing written) for one that cannot
    /// be a UDP packet (longer than UDP allows).
    pub fn encode(&mut self, r: &Record) -> bool {
        self.scratch.clear();
        r.encode(&mut self.scratch).is_ok()
    }

    /// Writes the record last encoded as one packet.
    pub fn write(&mut self, r: &Record) -> io::Result<()> {
        let ts = Duration::from_nanos(r.ts_ns);
        let pkt = PcapPacket::new(ts, self.scratch.len() as u32, &self.scratch);
        pkt.write_to::<_, BigEndian>(
            &mut self.out,
            self.header.ts_resolution,
            self.header.snaplen,
        )
        .map(|_| ())
        .map_err(|e| io::Error::other(e.to_string()))
    }

    /// Pushes everything written so far to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The writer thread's loop; returns when every sender is gone.
pub fn run(
    mut out: PcapOut,
    records: Receiver<Record>,
    free: Sender<Record>,
    counters: Arc<CaptureCounters>,
) {
    let mut failed = false;
    let mut dirty = false;
    let mut last_flush = Instant::now();
    let fail = |e: io::Error, failed: &mut bool| {
        *failed = true;
        counters.set_error(e.to_string());
    };
    loop {
        let r = match records.recv_timeout(FLUSH_EVERY) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => {
                if dirty && !failed {
                    if let Err(e) = out.flush() {
                        fail(e, &mut failed);
                    }
                }
                dirty = false;
                last_flush = Instant::now();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if failed || !out.encode(&r) {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            match out.write(&r) {
                Ok(()) => {
                    counters.captured.fetch_add(1, Ordering::Relaxed);
                    dirty = true;
                }
                Err(e) => {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                    fail(e, &mut failed);
                }
            }
        }
        // Never fails: the free queue holds every record there is.
        let _ = free.try_send(r);
        if dirty && !failed && (records.is_empty() || last_flush.elapsed() >= FLUSH_EVERY) {
            if let Err(e) = out.flush() {
                fail(e, &mut failed);
            }
            dirty = false;
            last_flush = Instant::now();
        }
    }
    if !failed {
        if let Err(e) = out.flush() {
            fail(e, &mut failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcap::PcapReader;

    #[test]
    fn written_packets_read_back_with_their_timestamps() {
        let dir = std::env::temp_dir().join(format!("capture-writer-{}", std::process::id()));
        let mut out = PcapOut::create(&dir, 64).unwrap();
        let mut r = Record::with_capacity(64);
        let src = "192.0.2.1:4000".parse().unwrap();
        let dst = "192.0.2.2:8888".parse().unwrap();
        assert!(r.fill(1_700_000_000_123_456_789, src, dst, b"abc"));
        assert!(out.encode(&r));
        out.write(&r).unwrap();
        out.flush().unwrap();
        let mut rd = PcapReader::new(File::open(&dir).unwrap()).unwrap();
        assert_eq!(rd.header().datalink, DataLink::RAW);
        let p = rd.next_packet().unwrap().unwrap();
        assert_eq!(p.timestamp, Duration::from_nanos(r.ts_ns));
        assert_eq!(p.data.len(), 20 + 8 + 3);
        assert!(rd.next_packet().is_none());
        // Longer than an IPv4 UDP datagram can be: not encoded, no panic.
        let mut big = Record::with_capacity(70_000);
        assert!(big.fill(1, src, dst, &[0; 65_508]));
        assert!(!out.encode(&big));
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn an_uncreatable_path_is_named() {
        let bad = Path::new("/nonexistent-dir/x.pcap");
        let e = PcapOut::create(bad, 64).err().expect("fails");
        let msg = e.to_string();
        assert!(msg.contains("/nonexistent-dir/x.pcap"), "{msg}");
        assert!(msg.contains("No such file"), "{msg}");
    }
}
