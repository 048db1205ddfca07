//! `--hlog`: a V2 compressed HdrHistogram interval log of the corrected
//! latency (nanoseconds, one interval a second), written with the
//! hdrhistogram crate's `IntervalLogWriterBuilder` and `V2DeflateSerializer`
//! in the layout HdrHistogram's Java tools read: comments, StartTime and
//! BaseTime (the end of the warm-up), the column legend, then one line per
//! interval with its start relative to BaseTime.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

/// An open interval log.
pub struct HlogWriter {
    path: PathBuf,
    out: BufWriter<File>,
    serializer: V2DeflateSerializer,
}

impl HlogWriter {
    /// Creates `path` and writes the header; `base` is the wall-clock time
    /// interval timestamps count from.
    pub fn create(path: &Path, base: SystemTime) -> io::Result<HlogWriter> {
        let file = File::create(path).map_err(|e| named(path, e))?;
        let mut w = HlogWriter {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            serializer: V2DeflateSerializer::new(),
        };
        IntervalLogWriterBuilder::new()
            .add_comment(&format!(
                "[Logged with loadgen {} (udp-packet-pool)]",
                env!("CARGO_PKG_VERSION")
            ))
            .add_comment("[Histogram log format version 1.3]")
            .add_comment("[Corrected latency (receive - intended send), nanoseconds]")
            .with_start_time(base)
            .with_base_time(base)
            .begin_log_with(&mut w.out, &mut w.serializer)
            .map_err(|e| named(path, e))?;
        writeln!(
            w.out,
            "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
        )
        .map_err(|e| named(path, e))?;
        Ok(w)
    }

    /// Appends one interval: `start` after BaseTime, lasting `len`.
    pub fn write(&mut self, h: &Histogram<u64>, start: Duration, len: Duration) -> io::Result<()> {
        // An empty builder writes no header lines: it only wraps the writer.
        let mut log = IntervalLogWriterBuilder::new()
            .begin_log_with(&mut self.out, &mut self.serializer)
            .map_err(|e| named(&self.path, e))?;
        log.write_histogram(h, start, len, None)
            .map_err(|e| io::Error::other(format!("--hlog {}: {e}", self.path.display())))
    }

    /// Flushes the file.
    pub fn finish(mut self) -> io::Result<()> {
        self.out.flush().map_err(|e| named(&self.path, e))
    }
}

fn named(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("--hlog {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::{new_histogram, record};
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    #[test]
    fn writes_a_log_the_crate_reads_back() {
        let path =
            std::env::temp_dir().join(format!("loadgen-hlog-unit-{}.hlog", std::process::id()));
        let mut w = HlogWriter::create(
            &path,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
        .unwrap();
        for k in 0..3u64 {
            let mut h = new_histogram();
            for v in 0..=k {
                record(&mut h, 1000 * (v + 1));
            }
            w.write(&h, Duration::from_secs(k), Duration::from_secs(1))
                .unwrap();
        }
        w.finish().unwrap();
        let text = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let s = String::from_utf8(text.clone()).unwrap();
        assert!(
            s.contains("#[StartTime: 1700000000.000 (seconds since epoch)]"),
            "{s}"
        );
        assert!(
            s.contains("#[BaseTime: 1700000000.000 (seconds since epoch)]"),
            "{s}"
        );
        assert!(s.contains("\"StartTimestamp\",\"Interval_Length\""), "{s}");
        let mut starts = Vec::new();
        for e in IntervalLogIterator::new(&text) {
            if let LogEntry::Interval(i) = e.unwrap() {
                starts.push(i.start_timestamp().as_secs());
                assert_eq!(i.duration(), Duration::from_secs(1));
            }
        }
        assert_eq!(starts, vec![0, 1, 2]);
    }

    #[test]
    fn unwritable_path_names_the_file() {
        let e = HlogWriter::create(Path::new("/nonexistent-dir/x.hlog"), SystemTime::now())
            .err()
            .unwrap();
        assert!(e.to_string().contains("/nonexistent-dir/x.hlog"), "{e}");
    }
}
