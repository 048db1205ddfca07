//! End-to-end test of the `sweep` tool: a small real sweep (threads 1,2 x
//! both socket modes, short steps, low rates) against the real `server` and
//! `loadgen`, checking the CSV, JSON and SVG it writes. A `loadgen` that
//! cannot even print its `--help` fails the test (it used to skip it).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Longest the sweep may run before the test kills it and fails.
const LIMIT: Duration = Duration::from_secs(120);

/// Runs `loadgen --help` (bounded); Err with the reason when it fails.
fn loadgen_usable() -> Result<(), String> {
    let bin = env!("CARGO_BIN_EXE_loadgen");
    let mut child = Command::new(bin)
        .arg("--help")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {bin}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            if st.success() {
                return Ok(());
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return Err(format!("{bin} --help: {st}: {}", err.trim()));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{bin} --help did not finish within 10 s"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn small_sweep_writes_csv_json_and_svg() {
    if let Err(why) = loadgen_usable() {
        panic!("the sweep needs a working loadgen: {why}");
    }
    let dir = TempDir(std::env::temp_dir().join(format!("sweep-test-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sweep"))
        .args([
            "--threads",
            "1,2",
            "--both",
            "--step-duration",
            "0.5",
            "--max-rate",
            "40000",
            "--min-rate",
            "5000",
            // Keep the whole run well under a minute: 5 probes (enough for
            // 25% resolution over 5k..40k) and a modest CPU-measurement rate.
            "--probes",
            "5",
            "--resolution",
            "0.25",
            "--common-rate",
            "20000",
            "--out",
        ])
        .arg(&dir.0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sweep");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for sweep") {
            break st;
        }
        if start.elapsed() > LIMIT {
            // SIGINT first so the sweep cleans up its server and loadgen.
            // SAFETY: kill(2) on our own, not yet reaped, child; no memory is touched.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            thread::sleep(Duration::from_secs(3));
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sweep ran longer than {} s; stderr:\n{}",
                LIMIT.as_secs(),
                err.join().unwrap()
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    eprintln!("sweep took {:.1} s", start.elapsed().as_secs_f64());
    assert!(
        status.success(),
        "sweep failed ({status});\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("total runtime"), "{stdout}");

    // CSV: header + 4 rows, each with a positive max clean rate.
    let csv = std::fs::read_to_string(dir.0.join("sweep.csv")).expect("sweep.csv");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("CSV header").split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} column in {header:?}"))
    };
    let (threads, mode, rate) = (col("threads"), col("mode"), col("max_clean_rate"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 4, "expected 4 rows:\n{csv}\nstderr:\n{stderr}");
    let mut seen = Vec::new();
    for r in &rows {
        let v: f64 = r[rate]
            .parse()
            .unwrap_or_else(|_| panic!("no max clean rate in {r:?}:\n{stderr}"));
        assert!(v > 0.0, "rate {v} in {r:?}");
        seen.push((r[threads].to_string(), r[mode].to_string()));
    }
    seen.sort();
    let want: Vec<(String, String)> = [
        ("1", "reuseport"),
        ("1", "shared"),
        ("2", "reuseport"),
        ("2", "shared"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(seen, want);

    // JSON: parses, complete, four rows with their probes.
    let json = std::fs::read_to_string(dir.0.join("sweep.json")).expect("sweep.json");
    let doc: serde_json::Value = serde_json::from_str(&json).expect("sweep.json parses");
    assert_eq!(doc["complete"], serde_json::Value::Bool(true));
    let jrows = doc["rows"].as_array().expect("rows array");
    assert_eq!(jrows.len(), 4);
    for r in jrows {
        let probes = r["probes"].as_array().expect("probes array");
        assert!(!probes.is_empty() && probes.len() <= 5, "{r}");
    }

    // SVG.
    let svg = std::fs::read_to_string(dir.0.join("sweep.svg")).expect("sweep.svg");
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
}
