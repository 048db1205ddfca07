//! `loadgen merge` of `--json` reports (usually the `--shard I/N` reports
//! of one test run from several hosts, with their `--hlog` files): one
//! report of the whole run.
//!
//! Every count (any whole-number field: sent, received, lost, duplicates,
//! unsent, send_errors, flows, ...) is the sum of the reports'; send and
//! echo rates are sums; `rate_requested` is the sum of the shares (the
//! global `--rate`); `loss_pct` is recomputed from the sums; durations and
//! the worst lateness are maxima; flags are or-ed. The latency
//! percentiles (`latency_us`, the corrected latency as in a single run's
//! report) come from the sum of the shards' histograms read from the hlog
//! files, never from averaged percentiles: without hlogs they are `null`
//! (and a note says why), as are the percentile blocks no hlog holds
//! (uncorrected latency, send lateness, STAMP one-way delays).
//!
//! The shards must make up one schedule: the same N, every I from 0 to
//! N-1 exactly once, the same global rate, mode, protocol, size and
//! warm-up; anything else is an error that names the files.

use std::collections::BTreeMap;
use std::path::Path;

use hdrhistogram::Histogram;
use serde_json::{Map, Value};

use crate::latency::Percentiles;

/// Most missing shards named in the error.
const MISSING_LISTED: usize = 10;

/// Fields every report must agree on.
const SAME: [&str; 8] = [
    "rate_global",
    "pacing",
    "corrected_applicable",
    "mode",
    "protocol",
    "size",
    "warmup_s",
    "gso",
];
/// Per-second rates: the whole run's is the sum.
const RATES: [&str; 2] = ["send_rate", "echo_rate"];
/// Worst of the reports.
const MAXIMA: [&str; 2] = ["duration_s", "behind_max_us"];
/// Percentile blocks: not exact unless from a summed histogram.
const PERCENTILE_BLOCKS: [&str; 4] = [
    "latency_us",
    "latency_uncorrected_us",
    "lateness_us",
    "stamp",
];

/// One report read from a file.
pub struct ShardReport {
    /// Where it came from (for messages).
    pub file: String,
    /// The report's JSON object.
    pub fields: Map<String, Value>,
}

impl ShardReport {
    /// Reads a `--json` report from `text`; `None` if it is no JSON object
    /// (then it may be an hlog).
    pub fn parse(path: &Path, text: &[u8]) -> Option<Result<ShardReport, String>> {
        let first = text.iter().find(|b| !b.is_ascii_whitespace())?;
        if *first != b'{' {
            return None;
        }
        let file = path.display().to_string();
        Some(match serde_json::from_slice::<Value>(text) {
            Ok(Value::Object(fields)) if fields.get("sent").is_some_and(Value::is_u64) => {
                Ok(ShardReport { file, fields })
            }
            Ok(_) => Err(format!(
                "{file}: a JSON object but not a loadgen --json report (no \"sent\" count)"
            )),
            Err(e) => Err(format!("{file}: not valid JSON: {e}")),
        })
    }

    /// `(I, N)` from its `"shard": "I/N"` (a report without one is the whole: 0/1).
    fn shard(&self) -> Result<(u32, u32), String> {
        match self.fields.get("shard") {
            None | Some(Value::Null) => Ok((0, 1)),
            Some(Value::String(s)) => crate::cli::parse_shard(s)
                .map(|s| (s.index, s.count))
                .map_err(|e| format!("{}: shard {e}", self.file)),
            Some(v) => Err(format!("{}: shard {v} is not \"I/N\"", self.file)),
        }
    }
}

/// Checks that the reports are the N shards of one run, each once.
pub fn check_shards(reports: &[ShardReport]) -> Result<u32, String> {
    let mut owner: BTreeMap<u32, &str> = BTreeMap::new();
    let Some(first) = reports.first() else {
        return Err("no reports to merge".to_string());
    };
    let (_, n) = first.shard()?;
    for r in reports {
        let (i, n_here) = r.shard()?;
        if n_here != n {
            return Err(format!(
                "{} is a shard of {n_here} but {} of {n}: merge the reports of one run \
                 (the same --shard N)",
                r.file, first.file
            ));
        }
        if let Some(other) = owner.insert(i, &r.file) {
            return Err(format!(
                "{} and {other} are both shard {i}/{n}: give each shard's report once",
                r.file
            ));
        }
    }
    // At most as many present as reports: this stops soon even for a huge N.
    let missing: Vec<String> = (0..n)
        .filter(|i| !owner.contains_key(i))
        .take(MISSING_LISTED)
        .map(|i| format!("{i}/{n}"))
        .collect();
    if !missing.is_empty() {
        let more = if n as usize - owner.len() > missing.len() {
            " and more"
        } else {
            ""
        };
        return Err(format!(
            "shard {}{more} missing: the sums would not be the whole run; give all {n} reports",
            missing.join(", ")
        ));
    }
    for key in SAME {
        let first = reports[0].fields.get(key);
        if let Some(r) = reports.iter().find(|r| r.fields.get(key) != first) {
            return Err(format!(
                "{} has {key} {} but {} has {}: merge the reports of one run (the same flags)",
                r.file,
                r.fields.get(key).unwrap_or(&Value::Null),
                reports[0].file,
                first.unwrap_or(&Value::Null)
            ));
        }
    }
    Ok(n)
}

/// Merges checked reports; `latency` is the sum of their hlogs, if given.
pub fn merge(reports: &[ShardReport], latency: Option<&Histogram<u64>>) -> Map<String, Value> {
    let mut out = Map::new();
    for key in reports.iter().flat_map(|r| r.fields.keys()) {
        if out.contains_key(key) {
            continue;
        }
        let values: Vec<&Value> = reports.iter().filter_map(|r| r.fields.get(key)).collect();
        out.insert(key.clone(), combine(key, &values));
    }
    let count = |k: &str| out.get(k).and_then(Value::as_u64).unwrap_or(0);
    let (sent, lost) = (count("sent"), count("lost"));
    let loss_pct = if sent == 0 {
        0.0
    } else {
        lost as f64 * 100.0 / sent as f64
    };
    out.insert("loss_pct".into(), loss_pct.into());
    if let Some(global) = out.get("rate_global").cloned() {
        out.insert("rate_requested".into(), global);
    }
    out.remove("shard");
    out.insert("shards".into(), reports.len().into());
    for key in PERCENTILE_BLOCKS {
        if let Some(v) = out.get_mut(key) {
            *v = nulls(v);
        }
    }
    let note = match latency {
        Some(h) => {
            out.insert(
                "latency_us".into(),
                serde_json::to_value(Percentiles::of(h)).unwrap_or(Value::Null),
            );
            "latency_us: percentiles of the sum of the shards' hlog histograms (corrected \
             latency, as in one run's report); the other percentile blocks cannot be merged \
             exactly and are null"
        }
        None => {
            "no hlog files given: merged percentiles cannot be exact (percentiles do not \
             average), so every latency is null; give each shard's --hlog file too"
        }
    };
    out.insert("merge_note".into(), note.into());
    out
}

/// The merged value of `key` from the reports' `values`.
fn combine(key: &str, values: &[&Value]) -> Value {
    let first = values[0];
    let sum_f = || values.iter().filter_map(|v| v.as_f64()).sum::<f64>();
    if RATES.contains(&key) || key == "rate_requested" {
        return if first.is_null() {
            Value::Null
        } else {
            sum_f().into()
        };
    }
    if MAXIMA.contains(&key) {
        return values
            .iter()
            .filter_map(|v| v.as_f64())
            .fold(0.0, f64::max)
            .into();
    }
    if SAME.contains(&key) {
        return first.clone();
    }
    match first {
        Value::Number(n) if n.is_u64() => values
            .iter()
            .filter_map(|v| v.as_u64())
            .fold(0, u64::saturating_add)
            .into(),
        Value::Bool(_) => values.iter().any(|v| v.as_bool() == Some(true)).into(),
        Value::Array(_) => Value::Array(
            values
                .iter()
                .filter_map(|v| v.as_array())
                .flatten()
                .cloned()
                .collect(),
        ),
        _ => values
            .iter()
            .find(|v| !v.is_null())
            .map_or(Value::Null, |v| (*v).clone()),
    }
}

/// A percentile block with every value `null` (its shape kept).
fn nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), nulls(v))).collect()),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(file: &str, v: Value) -> ShardReport {
        let text = v.to_string();
        ShardReport::parse(Path::new(file), text.as_bytes())
            .expect("a JSON object")
            .expect("a report")
    }

    fn shard(i: u32, sent: u64, lost: u64) -> ShardReport {
        report(
            &format!("s{i}.json"),
            json!({"shard": format!("{i}/3"), "rate_global": 3000, "rate_requested": 1000,
                   "sent": sent, "received": sent - lost, "lost": lost, "loss_pct": 50.0,
                   "send_rate": 1000.5, "duration_s": 2.0 + f64::from(i), "fell_behind": i == 1,
                   "thread_cpu_s": [0.1], "mode": "rate", "gso_fallback": null,
                   "latency_us": {"p50": 10.0, "max": 20.0}}),
        )
    }

    #[test]
    fn counts_and_rates_add_up_and_latency_needs_hlogs() {
        let all = [shard(0, 100, 1), shard(1, 99, 0), shard(2, 99, 2)];
        assert_eq!(check_shards(&all), Ok(3));
        let m = merge(&all, None);
        assert_eq!(
            (m["sent"].as_u64(), m["lost"].as_u64()),
            (Some(298), Some(3))
        );
        assert_eq!(m["received"], 295);
        assert_eq!(m["loss_pct"], 3.0 * 100.0 / 298.0);
        assert_eq!(
            (m["rate_requested"].as_u64(), m["send_rate"].as_f64()),
            (Some(3000), Some(3001.5))
        );
        assert_eq!(
            (m["duration_s"].as_f64(), m["fell_behind"].as_bool()),
            (Some(4.0), Some(true))
        );
        assert_eq!(m["thread_cpu_s"].as_array().map(Vec::len), Some(3));
        assert!(
            m["latency_us"]["p50"].is_null() && m["latency_us"]["max"].is_null(),
            "{m:?}"
        );
        assert!(m["merge_note"].as_str().unwrap().contains("no hlog"));
        assert!(!m.contains_key("shard"));
        let mut h = crate::latency::new_histogram();
        crate::latency::record(&mut h, 7_000);
        let p50 = h.value_at_quantile(0.5) as f64 / 1000.0;
        assert_eq!(merge(&all, Some(&h))["latency_us"]["p50"], p50);
    }

    #[test]
    fn shards_must_make_up_one_run() {
        let err = |r: &[ShardReport]| check_shards(r).unwrap_err();
        let e = err(&[shard(0, 1, 0), shard(2, 1, 0)]);
        assert!(e.contains("shard 1/3 missing"), "{e}");
        let e = err(&[
            shard(0, 1, 0),
            shard(1, 1, 0),
            shard(1, 1, 0),
            shard(2, 1, 0),
        ]);
        assert!(e.contains("both shard 1/3"), "{e}");
        let mut other_n = shard(1, 1, 0);
        other_n.fields.insert("shard".into(), "1/2".into());
        let e = err(&[shard(0, 1, 0), other_n]);
        assert!(e.contains("shard of 2 but s0.json of 3"), "{e}");
        let mut huge = shard(0, 1, 0);
        huge.fields.insert("shard".into(), "0/4000000000".into());
        let e = err(&[huge]);
        assert!(
            e.contains("1/4000000000, 2/4000000000") && e.contains("and more"),
            "{e}"
        );
        let mut other_rate = shard(2, 1, 0);
        other_rate.fields.insert("rate_global".into(), 10.into());
        let e = err(&[shard(0, 1, 0), shard(1, 1, 0), other_rate]);
        assert!(e.contains("s2.json has rate_global 10"), "{e}");
    }

    #[test]
    fn files_are_told_apart_by_content() {
        assert!(ShardReport::parse(Path::new("a.hlog"), b"#[StartTime: 1]\n").is_none());
        let e = ShardReport::parse(Path::new("x.json"), b" {\"a\": 1}")
            .unwrap()
            .err()
            .unwrap();
        assert!(
            e.contains("x.json") && e.contains("not a loadgen --json report"),
            "{e}"
        );
        let e = ShardReport::parse(Path::new("y.json"), b"{oops")
            .unwrap()
            .err()
            .unwrap();
        assert!(e.contains("y.json: not valid JSON"), "{e}");
    }
}
