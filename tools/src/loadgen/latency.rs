//! Latency histograms (nanoseconds, 1 ns to 60 s, 3 significant digits) and
//! the percentile summary reported in microseconds.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency the histograms hold; longer ones are recorded as this.
pub const MAX_NS: u64 = 60_000_000_000;
/// Significant digits.
pub const SIGFIG: u8 = 3;

/// A new, empty latency histogram.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, SIGFIG).expect("valid histogram bounds")
}

/// Records `ns`, clamped to the histogram's range.
pub fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.min(MAX_NS));
}

/// The percentile block: microseconds, `None` when nothing was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// 99.9th percentile.
    pub p999: Option<f64>,
    /// 99.99th percentile.
    pub p9999: Option<f64>,
    /// Largest value.
    pub max: Option<f64>,
}

/// Labels and quantiles of the block, in order.
pub const ROWS: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
];

impl Percentiles {
    /// Reads the block from a nanosecond histogram.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        let at = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0);
        Percentiles {
            p50: at(ROWS[0].1),
            p90: at(ROWS[1].1),
            p99: at(ROWS[2].1),
            p999: at(ROWS[3].1),
            p9999: at(ROWS[4].1),
            max: (!h.is_empty()).then(|| h.max() as f64 / 1000.0),
        }
    }

    /// The values in [`ROWS`] order followed by the maximum.
    pub fn values(&self) -> [Option<f64>; 6] {
        [
            self.p50, self.p90, self.p99, self.p999, self.p9999, self.max,
        ]
    }
}

/// Formats one microsecond value for the text block.
pub fn fmt_us(v: Option<f64>) -> String {
    match v {
        Some(v) => format!("{v:.3}"),
        None => "-".to_string(),
    }
}

/// The text percentile block: one column per summary.
pub fn text_block(columns: &[(&str, Percentiles)]) -> String {
    use std::fmt::Write;
    let cols: Vec<(&str, [Option<f64>; 6])> = columns
        .iter()
        .map(|(name, p)| (*name, p.values()))
        .collect();
    let mut s = String::from("Latency (usec)");
    for (name, _) in &cols {
        let _ = write!(s, " {name:>13}");
    }
    s.push('\n');
    let labels = ROWS.iter().map(|r| r.0).chain(std::iter::once("max"));
    for (i, label) in labels.enumerate() {
        let _ = write!(s, "  {label:<12}");
        for (_, v) in &cols {
            let _ = write!(s, " {:>13}", fmt_us(v[i]));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_in_microseconds() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            record(&mut h, v * 1000);
        }
        let p = Percentiles::of(&h);
        // 3 significant digits: 500 us falls in the bucket whose top is 500223 ns.
        assert!((p.p50.unwrap() - 500.223).abs() < 1e-9, "{p:?}");
        assert!(p.max.unwrap() >= 1000.0 && p.max.unwrap() < 1001.0);
        assert!(p.p99.unwrap() >= 990.0);
    }

    #[test]
    fn empty_histogram_has_no_values() {
        let p = Percentiles::of(&new_histogram());
        assert_eq!(p.values(), [None; 6]);
        let json = serde_json::to_value(p).unwrap();
        for k in ["p50", "p90", "p99", "p999", "p9999", "max"] {
            assert!(json.get(k).unwrap().is_null(), "{k}");
        }
    }

    #[test]
    fn out_of_range_values_are_clamped() {
        let mut h = new_histogram();
        record(&mut h, u64::MAX);
        record(&mut h, 0);
        assert_eq!(h.len(), 2);
        assert!(h.max() >= MAX_NS);
    }

    #[test]
    fn text_block_has_every_row() {
        let mut h = new_histogram();
        record(&mut h, 20_000);
        let p = Percentiles::of(&h);
        let t = text_block(&[("corrected", p), ("uncorrected", p)]);
        for l in ["p50", "p90", "p99 ", "p99.9 ", "p99.99", "max"] {
            assert!(t.contains(l), "{l} missing in\n{t}");
        }
        // 20 us lands in a 16 ns-wide bucket whose top is 20.015 us.
        assert!(t.contains("20.015"), "{t}");
        assert_eq!(t.lines().count(), 7);
    }
}
