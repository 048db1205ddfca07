//! Sweep results: one [`Row`] per configuration, printed as a table and
//! written as `sweep.csv` and `sweep.json`.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::search::{Outcome, Stop};

/// The result of one configuration (threads x socket mode x io x GRO).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Row {
    /// The configuration's key, e.g. `2/reuseport/epoll/gro-off`.
    pub key: String,
    /// Server worker threads.
    pub threads: u16,
    /// "reuseport" or "shared".
    pub mode: String,
    /// Server I/O model: blocking, epoll, spin or uring.
    pub io: String,
    /// GRO asked of the server: "on" or "off" (`--no-gro`).
    pub gro: String,
    /// GRO as the server's `listening on` line reports it ("on": `GRO/GSO
    /// trains`, "off": `GRO off`).
    pub server_gro: Option<String>,
    /// The server's `listening on` line.
    pub server_line: Option<String>,
    /// Highest clean rate, packets/s (the achieved send rate when the
    /// generator fell short of the asked one).
    pub max_clean_rate: Option<f64>,
    /// Rate asked of loadgen for that probe.
    pub asked_rate: Option<u64>,
    /// Rate loadgen achieved for that probe.
    pub send_rate_at_max: Option<f64>,
    /// Median corrected latency at the max clean rate, microseconds.
    pub p50_us: Option<f64>,
    /// 99th percentile corrected latency at the max clean rate, microseconds.
    pub p99_us: Option<f64>,
    /// Loss at the max clean rate, percent.
    pub loss_at_max_pct: Option<f64>,
    /// Lowest rate that was lossy (the bracket's top), packets/s.
    pub lowest_lossy_rate: Option<u64>,
    /// Loss at that rate, percent.
    pub lowest_lossy_loss_pct: Option<f64>,
    /// Probes where loadgen sent less than 95% of the asked rate.
    pub short_probes: usize,
    /// The search stopped because the generator could not go faster.
    pub generator_limited: bool,
    /// Why the search ended.
    pub stop: Option<Stop>,
    /// Final bracket width (`hi / lo - 1`), when both ends were measured.
    pub resolution: Option<f64>,
    /// Server CPU time per echoed packet at the common rate, nanoseconds.
    pub cpu_ns_per_pkt: Option<f64>,
    /// Projection, not a measurement: echoes/s `projected_cores` cores
    /// would sustain at `cpu_ns_per_pkt` each (`cpu::projected_rate`).
    pub projected_rate: Option<f64>,
    /// Cores of that projection (`--project-cores`).
    pub projected_cores: u32,
    /// The common rate, packets/s.
    pub cpu_rate: u64,
    /// Server CPU time during the common-rate run, clock ticks.
    pub cpu_ticks: Option<u64>,
    /// Packets echoed during the common-rate run.
    pub cpu_echoed: Option<u64>,
    /// Where `cpu_echoed` came from: "server" (SIGHUP summary) or "loadgen".
    pub cpu_echo_source: Option<String>,
    /// Loss during the common-rate run, percent.
    pub cpu_loss_pct: Option<f64>,
    /// Every probe of the search.
    pub probes: Vec<Outcome>,
    /// Anything the reader should know, `; `-separated.
    pub note: String,
    /// The error that ended this configuration early, if any.
    pub error: Option<String>,
    /// Wall time spent on this configuration, seconds.
    pub elapsed_s: f64,
}

impl Row {
    /// Appends to the note.
    pub fn add_note(&mut self, s: impl AsRef<str>) {
        if !self.note.is_empty() {
            self.note.push_str("; ");
        }
        self.note.push_str(s.as_ref());
    }

    /// "reuseport/blocking/GRO on": the series a row belongs to in the chart.
    pub fn series(&self) -> String {
        format!("{}/{}/GRO {}", self.mode, self.io, self.gro)
    }
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.decimals$}"))
}

/// The lines above the table: what each column means, with the
/// projection said to be one.
pub fn preamble(max_loss: f64, common_rate: u64, cores: u32, loadgen_args: &[String]) -> String {
    let mut s = format!(
        "max clean rate: highest packets/s with loss <= {max_loss}%; latency at that rate (corrected); \
         CPU ns/echo: server user+system time per echo at {common_rate}/s\n\
         {cores}-core column: projection, not measured: {cores} x 1e9 / CPU ns/echo (server CPU only; \
         ignores memory bandwidth, NIC queues, softirq placement and the sender)\n"
    );
    if !loadgen_args.is_empty() {
        let _ = writeln!(s, "loadgen extra flags: {}", loadgen_args.join(" "));
    }
    s
}

/// The projection column's header.
fn projection_header(cores: u32) -> String {
    format!("{cores} cores/s (projection, not measured)")
}

/// The results as an aligned text table; `cores` names the projection
/// column.
pub fn table(rows: &[Row], cores: u32) -> String {
    let projection = projection_header(cores);
    let header = [
        "threads",
        "mode",
        "io",
        "gro",
        "max clean/s",
        "p50 us",
        "p99 us",
        "loss@max %",
        "CPU ns/echo",
        &projection,
        "note",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.threads.to_string(),
                r.mode.clone(),
                r.io.clone(),
                r.gro.clone(),
                opt(r.max_clean_rate, 0),
                opt(r.p50_us, 1),
                opt(r.p99_us, 1),
                opt(r.loss_at_max_pct, 3),
                opt(r.cpu_ns_per_pkt, 0),
                opt(r.projected_rate, 0),
                r.note.clone(),
            ]
        })
        .collect();
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let last = header.len() - 1;
    let mut out = String::new();
    let mut line = |cols: Vec<String>| {
        let mut l = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i == last {
                l.push_str(c);
            } else if i < 4 {
                let _ = write!(l, "{c:<w$}  ", w = width[i]);
            } else {
                let _ = write!(l, "{c:>w$}  ", w = width[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.iter().map(|s| s.to_string()).collect());
    line(width.iter().map(|w| "-".repeat(*w)).collect());
    for row in cells {
        line(row);
    }
    out
}

/// Quotes a CSV field when it needs it.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Header of `sweep.csv`.
/// `projected_rate` is a projection, not a measurement (see [`preamble`]).
pub const CSV_HEADER: &str = "threads,mode,io,gro,max_clean_rate,asked_rate,send_rate_at_max,\
p50_us,p99_us,loss_at_max_pct,lowest_lossy_rate,cpu_ns_per_pkt,cpu_rate,projected_rate,\
projected_cores,server_gro,probes,stop,generator_limited,note";

/// The results as CSV (header plus one line per row).
pub fn csv(rows: &[Row]) -> String {
    let num = |v: Option<f64>, d: usize| v.map_or(String::new(), |x| format!("{x:.d$}"));
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for r in rows {
        let fields = [
            r.threads.to_string(),
            r.mode.clone(),
            r.io.clone(),
            r.gro.clone(),
            num(r.max_clean_rate, 0),
            r.asked_rate.map_or(String::new(), |x| x.to_string()),
            num(r.send_rate_at_max, 0),
            num(r.p50_us, 2),
            num(r.p99_us, 2),
            num(r.loss_at_max_pct, 4),
            r.lowest_lossy_rate.map_or(String::new(), |x| x.to_string()),
            num(r.cpu_ns_per_pkt, 1),
            r.cpu_rate.to_string(),
            num(r.projected_rate, 0),
            r.projected_cores.to_string(),
            r.server_gro.clone().unwrap_or_default(),
            r.probes.len().to_string(),
            r.stop.map_or("", |s| s.name()).to_string(),
            r.generator_limited.to_string(),
            r.note.clone(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

/// Writes `text` to `path`, naming the file in the error.
pub fn write_file(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(threads: u16, note: &str) -> Row {
        Row {
            threads,
            mode: "shared".into(),
            io: "blocking".into(),
            gro: "off".into(),
            max_clean_rate: Some(123_456.0),
            cpu_ns_per_pkt: Some(8_000.0),
            projected_rate: Some(2_000_000.0),
            projected_cores: 16,
            p50_us: Some(12.34),
            note: note.into(),
            ..Row::default()
        }
    }

    #[test]
    fn csv_quotes_notes_and_has_one_line_per_row() {
        let text = csv(&[row(1, "plain"), row(2, "a, \"b\"")]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], CSV_HEADER);
        assert!(lines[1].starts_with("1,shared,blocking,off,123456,"));
        let header: Vec<&str> = lines[0].split(',').collect();
        let fields: Vec<&str> = lines[1].split(',').collect();
        let col = |n: &str| fields[header.iter().position(|h| *h == n).unwrap()];
        assert_eq!(
            (col("projected_rate"), col("projected_cores")),
            ("2000000", "16")
        );
        assert!(lines[2].ends_with(",\"a, \"\"b\"\"\""));
        assert_eq!(lines[1].split(',').count(), CSV_HEADER.split(',').count());
    }

    #[test]
    fn table_aligns_and_shows_missing_values() {
        let t = table(&[row(1, ""), row(16, "x")], 16);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("threads  mode"));
        assert!(
            lines[0].contains("gro") && lines[0].contains("16 cores/s (projection, not measured)"),
            "{}",
            lines[0]
        );
        assert!(lines[2].contains("123456") && lines[2].contains("2000000"));
        assert!(lines[2].contains(" off "), "GRO column: {}", lines[2]);
        assert!(
            lines[2].contains(" - "),
            "missing p99 shows as '-': {}",
            lines[2]
        );
    }

    #[test]
    fn preamble_says_the_projection_is_one() {
        let p = preamble(0.1, 50_000, 16, &[]);
        assert!(p.contains("projection, not measured"), "{p}");
        assert!(p.contains("16 x 1e9 / CPU ns/echo"), "{p}");
        assert!(!p.contains("loadgen extra flags"));
        let p = preamble(0.1, 50_000, 8, &["--gso".into(), "16".into()]);
        assert!(p.contains("loadgen extra flags: --gso 16"), "{p}");
    }

    #[test]
    fn series_names_the_gro_setting() {
        assert_eq!(row(1, "").series(), "shared/blocking/GRO off");
    }

    #[test]
    fn notes_join() {
        let mut r = Row::default();
        r.add_note("a");
        r.add_note("b");
        assert_eq!(r.note, "a; b");
    }
}
