//! `loadgen merge FILE...`: reads interval logs (`--hlog` output or any
//! HdrHistogram V2 log) with the crate's `IntervalLogIterator`, decodes every
//! interval with its `Deserializer`, adds them all into one histogram and
//! prints its percentile block (or JSON).

use std::io::{self, Write};
use std::path::Path;

use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cli::MergeArgs;
use crate::hgrm;
use crate::latency::{new_histogram, text_block, Percentiles};
use base64::Engine;

/// The merge result as JSON.
#[derive(Debug, Serialize)]
pub struct MergeReport {
    /// Input files.
    pub files: Vec<String>,
    /// Intervals read.
    pub intervals: u64,
    /// Values in the merged histogram.
    pub total_count: u64,
    /// Percentiles of the merged histogram, microseconds.
    pub latency_us: Percentiles,
    /// Mean, microseconds (`null` when empty).
    pub mean_us: Option<f64>,
}

fn invalid(path: &Path, what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

/// Adds every interval of the log at `path` into `into`; returns how many.
pub fn merge_file(path: &Path, into: &mut Histogram<u64>) -> io::Result<u64> {
    let text = std::fs::read(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display())))?;
    let mut deserializer = Deserializer::new();
    let mut n = 0;
    for entry in IntervalLogIterator::new(&text) {
        let entry = entry.map_err(|e| invalid(path, format!("not an interval log ({e:?})")))?;
        let LogEntry::Interval(iv) = entry else {
            continue;
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(iv.encoded_histogram())
            .map_err(|e| invalid(path, format!("interval {}: {e}", n + 1)))?;
        let h: Histogram<u64> = deserializer
            .deserialize(&mut &bytes[..])
            .map_err(|e| invalid(path, format!("interval {}: {e:?}", n + 1)))?;
        into.add(&h)
            .map_err(|e| invalid(path, format!("interval {}: {e:?}", n + 1)))?;
        n += 1;
    }
    Ok(n)
}

/// Runs `loadgen merge`.
pub fn run(args: &MergeArgs) -> io::Result<()> {
    let mut h = new_histogram();
    // Logs from other tools may hold values beyond our 60 s bound.
    h.auto(true);
    let mut intervals = 0;
    for f in &args.files {
        intervals += merge_file(f, &mut h)?;
    }
    if let Some(path) = &args.hgrm {
        hgrm::write_file(path, &h)?;
    }
    let report = MergeReport {
        files: args.files.iter().map(|p| p.display().to_string()).collect(),
        intervals,
        total_count: h.len(),
        latency_us: Percentiles::of(&h),
        mean_us: (!h.is_empty()).then(|| h.mean() / 1000.0),
    };
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report).map_err(io::Error::other)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "Merged {} intervals from {} file{}",
            report.intervals,
            report.files.len(),
            if report.files.len() == 1 { "" } else { "s" }
        )?;
        writeln!(out, "Total count: {}", report.total_count)?;
        writeln!(out)?;
        write!(out, "{}", text_block(&[("corrected", report.latency_us)]))?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlog::HlogWriter;
    use crate::latency::record;
    use std::path::PathBuf;
    use std::time::{Duration, SystemTime};

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("loadgen-merge-unit-{}-{name}", std::process::id()))
    }

    #[test]
    fn merges_every_interval_of_every_file() {
        let a = temp("a.hlog");
        let b = temp("b.hlog");
        for (path, n) in [(&a, 3u64), (&b, 5u64)] {
            let mut w = HlogWriter::create(path, SystemTime::now()).unwrap();
            for k in 0..n {
                let mut h = new_histogram();
                record(&mut h, 1_000 + k);
                record(&mut h, 2_000 + k);
                w.write(&h, Duration::from_secs(k), Duration::from_secs(1))
                    .unwrap();
            }
            w.finish().unwrap();
        }
        let mut h = new_histogram();
        assert_eq!(merge_file(&a, &mut h).unwrap(), 3);
        assert_eq!(merge_file(&b, &mut h).unwrap(), 5);
        assert_eq!(h.len(), 16);
        std::fs::remove_file(&a).unwrap();
        std::fs::remove_file(&b).unwrap();
    }

    #[test]
    fn errors_name_the_file() {
        let p = temp("garbage.hlog");
        std::fs::write(&p, "0.000,1.000,5.0,!!!notbase64\n").unwrap();
        let e = merge_file(&p, &mut new_histogram()).unwrap_err();
        std::fs::remove_file(&p).unwrap();
        assert!(e.to_string().contains("garbage.hlog"), "{e}");
        let e = merge_file(Path::new("/nonexistent/x.hlog"), &mut new_histogram()).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.hlog"), "{e}");
    }
}
