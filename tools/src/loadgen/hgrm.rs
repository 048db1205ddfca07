//! HdrHistogram's percentile text format (`.hgrm`), as Java's
//! `outputPercentileDistribution(out, ticks, valueScale)` prints it: a
//! header, one row per percentile step, and the `#[Mean`, `#[Max` and
//! `#[Buckets` lines that plotting tools such as hdr-plot read. The
//! hdrhistogram crate has no writer for it.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use hdrhistogram::Histogram;

/// Percentile steps per half distance to 100% (HdrHistogram's default).
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Java's `subBucketCount` for `sigfig` significant digits.
fn sub_bucket_count(sigfig: u8) -> u64 {
    let largest = 2 * 10u64.pow(u32::from(sigfig));
    let magnitude = (largest as f64).log2().ceil() as u32;
    1 << magnitude.max(1)
}

/// Formats `v` with `decimals` places right-aligned in `width`, rounding
/// like Java's `Formatter` (`%width.decimalsf`): it rounds the shortest
/// decimal representation half up, where Rust rounds the exact binary value
/// half to even. (0.9997802734375 prints as 0.999780273438 in Java.)
fn java_f(v: f64, decimals: usize, width: usize) -> String {
    if !v.is_finite() {
        return format!(
            "{:>width$}",
            if v.is_nan() {
                "NaN".to_string()
            } else if v > 0.0 {
                "Infinity".to_string()
            } else {
                "-Infinity".to_string()
            }
        );
    }
    let shortest = format!("{}", v.abs());
    let (int_part, frac) = shortest.split_once('.').unwrap_or((&shortest, ""));
    let mut digits: Vec<u8> = int_part
        .bytes()
        .chain(frac.bytes())
        .map(|b| b - b'0')
        .collect();
    let mut int_len = int_part.len();
    let keep = int_len + decimals;
    let round_up = digits.get(keep).is_some_and(|&d| d >= 5);
    digits.resize(keep, 0);
    if round_up {
        let mut i = keep;
        loop {
            if i == 0 {
                digits.insert(0, 1);
                int_len += 1;
                break;
            }
            i -= 1;
            if digits[i] == 9 {
                digits[i] = 0;
            } else {
                digits[i] += 1;
                break;
            }
        }
    }
    let text: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
    let (i, f) = text.split_at(int_len);
    let negative = v < 0.0;
    let body = match (negative, decimals) {
        (true, 0) => format!("-{i}"),
        (true, _) => format!("-{i}.{f}"),
        (false, 0) => i.to_string(),
        (false, _) => format!("{i}.{f}"),
    };
    format!("{body:>width$}")
}

/// Java's `percentileReportingTicks` at `level` percent: the number of
/// equal steps 0..100 is cut into, doubling at each half distance to 100%.
fn ticks(per_half: u32, level: f64) -> f64 {
    let halvings = ((100.0 / (100.0 - level)).ln() / 2f64.ln()) as i64;
    f64::from(per_half) * 2f64.powi(halvings.clamp(0, 1000) as i32 + 1)
}

/// Writes the percentile distribution of `h`, dividing values by
/// `value_scale` (1000.0 turns nanoseconds into microseconds).
pub fn write<W: Write>(
    out: &mut W,
    h: &Histogram<u64>,
    ticks_per_half_distance: u32,
    value_scale: f64,
) -> io::Result<()> {
    let d = usize::from(h.sigfig());
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    // Java's PercentileIterator, step for step: levels are percentages
    // (exact binary fractions for 5 ticks), each bucket is added once, a
    // bucket may yield several rows, the last bucket yields one and then
    // the final 100% row. (The crate's own quantile iterator accumulates
    // fractions of 1 and drifts off Java's rows by one float ulp.)
    let total = h.len();
    let mut level = 0.0f64;
    let mut cumulative = 0u64;
    let mut last_value = 0u64;
    'buckets: for v in h.iter_recorded() {
        cumulative += v.count_at_value();
        last_value = v.value_iterated_to();
        let value = last_value as f64 / value_scale;
        while level < 100.0 && 100.0 * cumulative as f64 / total as f64 >= level {
            let p = level / 100.0;
            writeln!(
                out,
                "{} {} {cumulative:10} {}",
                java_f(value, d, 12),
                java_f(p, 12, 2),
                java_f(1.0 / (1.0 - p), 2, 14)
            )?;
            level += 100.0 / ticks(ticks_per_half_distance, level);
            if cumulative == total {
                break 'buckets;
            }
        }
    }
    if total > 0 {
        let value = last_value as f64 / value_scale;
        writeln!(
            out,
            "{} {} {total:10}",
            java_f(value, d, 12),
            java_f(1.0, 12, 2)
        )?;
    }
    let max = if h.is_empty() { 0 } else { h.max() };
    writeln!(
        out,
        "#[Mean    = {}, StdDeviation   = {}]",
        java_f(h.mean() / value_scale, d, 12),
        java_f(h.stdev() / value_scale, d, 12)
    )?;
    writeln!(
        out,
        "#[Max     = {}, Total count    = {:12}]",
        java_f(max as f64 / value_scale, d, 12),
        h.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_bucket_count(h.sigfig())
    )
}

/// Writes `h` (nanoseconds) to `path`, in microseconds; errors name the file.
pub fn write_file(path: &Path, h: &Histogram<u64>) -> io::Result<()> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("--hgrm {}: {e}", path.display()));
    let mut f = BufWriter::new(File::create(path).map_err(named)?);
    write(&mut f, h, TICKS_PER_HALF_DISTANCE, 1000.0).map_err(named)?;
    f.flush().map_err(named)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::{new_histogram, record};

    fn render(h: &Histogram<u64>) -> String {
        let mut out = Vec::new();
        write(&mut out, h, TICKS_PER_HALF_DISTANCE, 1000.0).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn matches_java_output_for_a_small_histogram() {
        let mut h = new_histogram();
        for v in [1000, 1000, 2000, 3000] {
            record(&mut h, v);
        }
        // Printed by HdrHistogram Java 2.1.11 for new Histogram(1, 60e9, 3),
        // the same four values, outputPercentileDistribution(out, 5, 1000.0).
        // 3000 ns sits in a 2 ns-wide bucket, so it prints as its top, 3.001.
        let expected = "       Value     Percentile TotalCount 1/(1-Percentile)

       1.000 0.000000000000          2           1.00
       1.000 0.100000000000          2           1.11
       1.000 0.200000000000          2           1.25
       1.000 0.300000000000          2           1.43
       1.000 0.400000000000          2           1.67
       1.000 0.500000000000          2           2.00
       2.000 0.550000000000          3           2.22
       2.000 0.600000000000          3           2.50
       2.000 0.650000000000          3           2.86
       2.000 0.700000000000          3           3.33
       2.000 0.750000000000          3           4.00
       3.001 0.775000000000          4           4.44
       3.001 1.000000000000          4
#[Mean    =        1.750, StdDeviation   =        0.830]
#[Max     =        3.001, Total count    =            4]
#[Buckets =           26, SubBuckets     =         2048]
";
        assert_eq!(render(&h), expected);
    }

    /// Also checked against HdrHistogram Java 2.1.11.
    #[test]
    fn header_and_summary_lines_are_exact() {
        let mut h = new_histogram();
        record(&mut h, 25_000);
        let text = render(&h);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        assert_eq!(
            lines[2],
            "      25.007 0.000000000000          1           1.00"
        );
        assert_eq!(lines[3], "      25.007 1.000000000000          1");
        assert_eq!(
            lines[4],
            "#[Mean    =       25.000, StdDeviation   =        0.000]"
        );
        assert_eq!(
            lines[5],
            "#[Max     =       25.007, Total count    =            1]"
        );
    }

    /// Also checked against HdrHistogram Java 2.1.11.
    #[test]
    fn empty_histogram_still_has_the_summary() {
        let expected = "       Value     Percentile TotalCount 1/(1-Percentile)

#[Mean    =        0.000, StdDeviation   =        0.000]
#[Max     =        0.000, Total count    =            0]
#[Buckets =           26, SubBuckets     =         2048]
";
        assert_eq!(render(&new_histogram()), expected);
    }

    /// Expected strings printed by Java 17's `String.format(Locale.US, ...)`.
    #[test]
    fn rounds_like_java_formatter() {
        assert_eq!(java_f(0.9997802734375, 12, 2), "0.999780273438");
        assert_eq!(java_f(0.125, 2, 0), "0.13");
        assert_eq!(java_f(2.5, 2, 14), "          2.50");
        assert_eq!(java_f(9.9996, 3, 0), "10.000");
        assert_eq!(java_f(999.9995, 3, 0), "1000.000");
        assert_eq!(java_f(0.0, 3, 12), "       0.000");
        assert_eq!(java_f(1.0, 12, 2), "1.000000000000");
        assert_eq!(java_f(25.007, 3, 12), "      25.007");
        assert_eq!(java_f(-0.0004, 3, 0), "-0.000");
        assert_eq!(java_f(-1.5, 0, 0), "-2");
        assert_eq!(java_f(f64::INFINITY, 2, 9), " Infinity");
    }

    #[test]
    fn sub_buckets_follow_java() {
        assert_eq!(sub_bucket_count(1), 32);
        assert_eq!(sub_bucket_count(2), 256);
        assert_eq!(sub_bucket_count(3), 2048);
    }
}
