//! End-to-end tests of the `sweep` tool: small real sweeps (short steps, low
//! rates, ephemeral loopback ports) against the real `server` and
//! `loadgen`, checking the CSV, JSON and SVG they write: threads 1,2 x both
//! socket modes, and GRO on/off x two I/O models, where the server's own
//! `listening on` line must say GRO is off for the off rows. A bad `--gro`
//! value is a usage error. A `loadgen` that cannot even print its `--help`
//! fails the test (it used to skip it). Nothing here asserts a timing.

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

/// What a finished sweep printed.
struct Finished {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `sweep ARGS... --out DIR`, killing it (SIGINT first, so it cleans
/// up its server and loadgen) and failing if it runs longer than `LIMIT`.
fn run_sweep(args: &[&str], out_dir: &std::path::Path) -> Finished {
    if let Err(why) = loadgen_usable() {
        panic!("the sweep needs a working loadgen: {why}");
    }
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sweep"))
        .args(args)
        .arg("--out")
        .arg(out_dir)
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
    eprintln!("sweep took {:.1} s", start.elapsed().as_secs_f64());
    Finished {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A fresh temporary directory for one test's outputs.
fn temp_dir(name: &str) -> TempDir {
    let dir = TempDir(std::env::temp_dir().join(format!("{name}-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    dir
}

/// One CSV line's fields (RFC 4180 quoting, as the sweep writes it).
fn csv_fields(line: &str) -> Vec<String> {
    let (mut fields, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

/// The rows of a sweep.csv as header name -> value maps.
fn csv_rows(csv: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut lines = csv.lines();
    let header = csv_fields(lines.next().expect("CSV header"));
    lines
        .map(|l| {
            let f = csv_fields(l);
            assert_eq!(f.len(), header.len(), "CSV line {l:?}");
            header.iter().zip(f).map(|(h, v)| (h.clone(), v)).collect()
        })
        .collect()
}

#[test]
fn small_sweep_writes_csv_json_and_svg() {
    let dir = temp_dir("sweep-test");
    let Finished {
        status,
        stdout,
        stderr,
    } = run_sweep(
        &[
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
        ],
        &dir.0,
    );
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

#[test]
fn gro_on_and_off_across_two_io_models() {
    let dir = temp_dir("sweep-gro-test");
    let run = run_sweep(
        &[
            "--threads",
            "1",
            "--reuseport",
            "--io",
            "blocking,epoll",
            "--gro",
            "on,off",
            // Short and bounded: 2 probes of 0.3 s per configuration.
            "--step-duration",
            "0.3",
            "--warmup",
            "0.2",
            "--min-rate",
            "5000",
            "--max-rate",
            "20000",
            "--probes",
            "2",
            "--resolution",
            "0.5",
            "--common-rate",
            "10000",
            "--project-cores",
            "16",
        ],
        &dir.0,
    );
    assert!(
        run.status.success(),
        "sweep failed ({});\nstdout:\n{}\nstderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    // The table labels GRO and the projection.
    assert!(
        run.stdout.contains("16 cores/s (projection, not measured)"),
        "{}",
        run.stdout
    );

    // CSV: one row per io x GRO, each labelled.
    let csv = std::fs::read_to_string(dir.0.join("sweep.csv")).expect("sweep.csv");
    let rows = csv_rows(&csv);
    let mut seen: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r["io"].clone(), r["gro"].clone()))
        .collect();
    seen.sort();
    let want: Vec<(String, String)> = [
        ("blocking", "off"),
        ("blocking", "on"),
        ("epoll", "off"),
        ("epoll", "on"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(seen, want, "{csv}\nstderr:\n{}", run.stderr);
    for r in &rows {
        // What the server itself reported matches what was asked.
        assert_eq!(r["server_gro"], r["gro"], "{r:?}");
        assert_eq!(r["projected_cores"], "16", "{r:?}");
    }

    // JSON: the key names GRO, and the server's own listening line shows
    // it really ran with --no-gro for the off rows.
    let json = std::fs::read_to_string(dir.0.join("sweep.json")).expect("sweep.json");
    let doc: serde_json::Value = serde_json::from_str(&json).expect("sweep.json parses");
    assert_eq!(doc["complete"], serde_json::Value::Bool(true));
    assert_eq!(doc["settings"]["gro"], serde_json::json!(["on", "off"]));
    let jrows = doc["rows"].as_array().expect("rows array");
    assert_eq!(jrows.len(), 4);
    for r in jrows {
        let gro = r["gro"].as_str().expect("gro");
        let key = r["key"].as_str().expect("key");
        assert!(key.ends_with(&format!("/gro-{gro}")), "{key}");
        let line = r["server_line"].as_str().expect("server_line");
        assert!(line.contains("listening on"), "{line}");
        let (says, not) = if gro == "off" {
            ("GRO off", "GRO/GSO trains")
        } else {
            ("GRO/GSO trains", "GRO off")
        };
        assert!(line.contains(says) && !line.contains(not), "{key}: {line}");
        // The projection, where there is a CPU figure, is 16e9 / ns.
        if let (Some(ns), Some(p)) = (r["cpu_ns_per_pkt"].as_f64(), r["projected_rate"].as_f64()) {
            assert!((p - 16e9 / ns).abs() < 1e-6 * p, "{r}");
        }
    }

    // SVG: the chart's legend names the GRO setting.
    let svg = std::fs::read_to_string(dir.0.join("sweep.svg")).expect("sweep.svg");
    for series in ["reuseport/blocking/GRO off", "reuseport/epoll/GRO on"] {
        assert!(svg.contains(series), "no {series:?} in the chart legend");
    }
}

#[test]
fn bad_gro_value_is_a_usage_error() {
    let never = temp_dir("sweep-never-written");
    let out = Command::new(env!("CARGO_BIN_EXE_sweep"))
        .args(["--threads", "1", "--gro", "on,maybe", "--out"])
        .arg(&never.0)
        .stdin(Stdio::null())
        .output()
        .expect("run sweep");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("'maybe'") && stderr.contains("--gro"),
        "{stderr}"
    );
    assert!(!never.0.exists(), "a usage error starts nothing");
}
