//! `loadgen` runs: one bounded run at a given rate, its JSON report parsed.
//! Flags from `--loadgen-args` go to every run after the ones the sweep
//! sets itself (target, rate, duration, warm-up, flows, size, JSON), which
//! they may not repeat.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::procs::{fail, slurp, tail, ChildGuard, Error};

/// The loadgen flags the sweep sets on every run.
pub const OWN_FLAGS: [&str; 7] = [
    "--target",
    "--rate",
    "--duration",
    "--warmup",
    "--flows",
    "--size",
    "--json",
];

/// Refuses extra loadgen flags that would repeat one the sweep sets.
pub fn check_extra(extra: &[String]) -> Result<(), String> {
    for w in extra {
        let flag = w.split('=').next().unwrap_or(w);
        if OWN_FLAGS.contains(&flag) {
            let own = match flag {
                "--target" => "(the sweep's own server)".to_string(),
                "--json" => "(always on)".to_string(),
                f => format!("(use the sweep's {})", sweep_flag(f)),
            };
            return Err(format!(
                "--loadgen-args may not contain {w}: the sweep sets {flag} itself {own}"
            ));
        }
    }
    Ok(())
}

/// The sweep option behind a loadgen flag it sets.
fn sweep_flag(loadgen_flag: &str) -> &'static str {
    match loadgen_flag {
        "--rate" => "--min-rate/--max-rate/--common-rate",
        "--duration" => "--step-duration",
        "--warmup" => "--warmup",
        "--flows" => "--flows",
        _ => "--size",
    }
}

/// Latency percentiles of a loadgen report, microseconds.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

/// The part of loadgen's JSON report the sweep uses.
#[derive(Debug, Clone, Deserialize)]
pub struct LoadgenReport {
    /// Achieved send rate, packets/s.
    pub send_rate: f64,
    /// Rate echoes came back at, packets/s.
    pub echo_rate: f64,
    /// Echoes received in the measured window.
    pub received: f64,
    /// Lost, percent of sent.
    pub loss_pct: f64,
    /// Corrected (intended-send-time based) latency.
    #[serde(default)]
    pub latency_us: Latency,
}

/// Parses loadgen's report: all of stdout, or failing that the outermost
/// `{...}` in it (in case a line of text precedes the JSON).
fn parse_report(stdout: &str) -> Result<LoadgenReport, serde_json::Error> {
    serde_json::from_str(stdout.trim()).or_else(|e| match (stdout.find('{'), stdout.rfind('}')) {
        (Some(a), Some(b)) if a < b => serde_json::from_str(&stdout[a..=b]),
        _ => Err(e),
    })
}

/// How to run loadgen.
#[derive(Debug, Clone)]
pub struct Loadgen {
    /// The binary.
    pub bin: PathBuf,
    /// Seconds to measure.
    pub duration: f64,
    /// Seconds of warm-up before measuring.
    pub warmup: f64,
    /// Concurrent flows (source ports).
    pub flows: u32,
    /// Payload bytes.
    pub size: u32,
    /// Extra flags for every run (`--loadgen-args`).
    pub extra: Vec<String>,
}

impl Loadgen {
    /// Checks that the binary runs at all and takes the extra flags
    /// (`loadgen EXTRA... --help`: clap refuses an unknown flag, or one
    /// missing its value, before it gets to `--help`; at most 10 s).
    pub fn check(&self) -> Result<(), Error> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.extra).arg("--help");
        let mut guard = ChildGuard::spawn(&mut cmd, "loadgen")?;
        let out = slurp(guard.child().stdout.take().expect("piped"));
        let err = slurp(guard.child().stderr.take().expect("piped"));
        let never = AtomicBool::new(false);
        let status = guard.wait_until(Instant::now() + Duration::from_secs(10), &never)?;
        drop(guard);
        let text = err.join().unwrap_or_default() + &out.join().unwrap_or_default();
        match status {
            Some(st) if st.success() => Ok(()),
            Some(st) => Err(fail(format!(
                "{} {}--help failed ({st}): {}",
                self.bin.display(),
                self.extra
                    .iter()
                    .map(|w| format!("{w} "))
                    .collect::<String>(),
                tail(&text, 3)
            ))),
            None => Err(fail(format!(
                "{} --help did not finish within 10 s",
                self.bin.display()
            ))),
        }
    }

    /// Longest one run may take before it is killed.
    pub fn time_limit(&self) -> Duration {
        Duration::from_secs_f64(self.warmup + self.duration * 2.0 + 10.0)
    }

    /// One run at `rate` packets/s against `target`.
    pub fn run(
        &self,
        target: SocketAddr,
        rate: u64,
        interrupted: &AtomicBool,
    ) -> Result<LoadgenReport, Error> {
        let mut args = vec![
            "--target".to_string(),
            target.to_string(),
            "--rate".into(),
            rate.to_string(),
            "--duration".into(),
            self.duration.to_string(),
            "--warmup".into(),
            self.warmup.to_string(),
            "--flows".into(),
            self.flows.to_string(),
            "--size".into(),
            self.size.to_string(),
            "--json".into(),
        ];
        args.extend(self.extra.iter().cloned());
        let mut guard = ChildGuard::spawn(Command::new(&self.bin).args(&args), "loadgen")?;
        let out = slurp(guard.child().stdout.take().expect("piped"));
        let err = slurp(guard.child().stderr.take().expect("piped"));
        let limit = self.time_limit();
        let status = guard.wait_until(Instant::now() + limit, interrupted)?;
        drop(guard);
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        let Some(status) = status else {
            return Err(fail(format!(
                "loadgen did not finish within {:.0} s at {rate}/s (killed): {}",
                limit.as_secs_f64(),
                tail(&stderr, 3)
            )));
        };
        // A report on stdout counts even with a non-zero exit (loadgen may
        // use its exit status to flag loss).
        match parse_report(&stdout) {
            Ok(r) => Ok(r),
            Err(e) if status.success() => Err(fail(format!(
                "cannot parse loadgen's JSON report at {rate}/s: {e}; stdout: {}",
                tail(&stdout, 3)
            ))),
            Err(_) => Err(fail(format!(
                "loadgen failed at {rate}/s ({status}): {}",
                tail(&stderr, 3)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadgen_report_parses_with_extra_keys() {
        let j = r#"{"target":"127.0.0.1:1","rate_requested":1000,"send_rate":999.5,
            "echo_rate":999.0,"sent":1000,"received":999,"lost":1,"loss_pct":0.1,
            "duplicates":0,"reordered":0,"corrupted":0,
            "latency_us":{"p50":12.5,"p90":20,"p99":40,"p999":80,"p9999":90,"max":100},
            "latency_uncorrected_us":{"p50":1,"p90":2,"p99":3,"p999":4,"p9999":5,"max":6},
            "duration_s":1.0}"#;
        let r = parse_report(j).unwrap();
        assert_eq!(r.latency_us.p50, Some(12.5));
        assert_eq!(r.received, 999.0);
        let r = parse_report(&format!("loadgen: done\n{j}\n")).unwrap();
        assert_eq!(r.loss_pct, 0.1);
        assert!(parse_report("loadgen: failed").is_err());
    }

    #[test]
    fn extra_flags_may_not_repeat_the_sweeps_own() {
        let v = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert!(check_extra(&v("--gso 16 --threads 2")).is_ok());
        assert!(check_extra(&[]).is_ok());
        let e = check_extra(&v("--gso 16 --rate 5")).unwrap_err();
        assert!(e.contains("contain --rate:"), "{e}");
        assert!(e.contains("--common-rate"), "{e}");
        let e = check_extra(&v("--duration=3")).unwrap_err();
        assert!(
            e.contains("--duration=3") && e.contains("--step-duration"),
            "{e}"
        );
        assert!(check_extra(&v("--json")).is_err());
        assert!(check_extra(&v("--target 127.0.0.1:1")).is_err());
    }
}
