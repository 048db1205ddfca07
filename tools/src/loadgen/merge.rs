//! `loadgen merge FILE...`: reads interval logs (`--hlog` output or any
//! HdrHistogram V2 log) with the crate's `IntervalLogIterator`, decodes every
//! interval with its `Deserializer`, adds them all into one histogram and
//! prints its percentile block (or JSON). Files are told apart by content: a
//! JSON object is a `--json` report, anything else an interval log. Given
//! reports, the result is one merged report (see `merge_reports`) whose
//! latency is that of the summed interval logs.

use std::io::{self, Write};
use std::path::Path;

use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cli::MergeArgs;
use crate::hgrm;
use crate::latency::{new_histogram, text_block, Percentiles};
use crate::merge_reports::{self, check_shards, ShardReport};
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
#[cfg(test)]
pub fn merge_file(path: &Path, into: &mut Histogram<u64>) -> io::Result<u64> {
    merge_log(path, &read(path)?, into)
}

fn read(path: &Path) -> io::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display())))
}

/// Adds every interval of the log `text` (read from `path`) into `into`.
fn merge_log(path: &Path, text: &[u8], into: &mut Histogram<u64>) -> io::Result<u64> {
    let mut deserializer = Deserializer::new();
    let mut n = 0;
    for entry in IntervalLogIterator::new(text) {
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
    let mut reports = Vec::new();
    for f in &args.files {
        let text = read(f)?;
        match ShardReport::parse(f, &text) {
            Some(r) => reports.push(r.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?),
            None => intervals += merge_log(f, &text, &mut h)?,
        }
    }
    if let Some(path) = &args.hgrm {
        hgrm::write_file(path, &h)?;
    }
    let hlogs = args.files.len() - reports.len();
    if !reports.is_empty() {
        return print_merged(args, &reports, (hlogs > 0).then_some(&h));
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

/// Checks and merges `reports`, with the summed hlogs `latency`, and prints
/// the merged report.
fn print_merged(
    args: &MergeArgs,
    reports: &[ShardReport],
    latency: Option<&Histogram<u64>>,
) -> io::Result<()> {
    let bad = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
    check_shards(reports).map_err(bad)?;
    let received: u64 = reports
        .iter()
        .filter_map(|r| r.fields.get("received").and_then(|v| v.as_u64()))
        .fold(0, u64::saturating_add);
    if let Some(h) = latency.filter(|h| h.len() != received) {
        return Err(bad(format!(
            "the hlog files hold {} latency samples but the reports count {received} replies: \
             give exactly the --hlog file of each report",
            h.len()
        )));
    }
    let merged = merge_reports::merge(reports, latency);
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &merged).map_err(io::Error::other)?;
        writeln!(out)?;
    } else {
        let files: Vec<&str> = reports.iter().map(|r| r.file.as_str()).collect();
        writeln!(out, "Merged {} reports: {}", reports.len(), files.join(" "))?;
        for key in [
            "sent",
            "received",
            "lost",
            "loss_pct",
            "unsent",
            "send_rate",
            "echo_rate",
        ] {
            let v = merged.get(key).unwrap_or(&serde_json::Value::Null);
            writeln!(out, "  {:<19} {v}", format!("{key}:"))?;
        }
        writeln!(out)?;
        let p = latency
            .map(Percentiles::of)
            .unwrap_or(Percentiles::of(&new_histogram()));
        write!(out, "{}", text_block(&[("corrected", p)]))?;
        if let Some(note) = merged.get("merge_note").and_then(|v| v.as_str()) {
            writeln!(out, "  note: {note}")?;
        }
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
