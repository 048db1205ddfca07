//! `sweep`: compares the echo server's throughput and CPU per echo across
//! thread counts, socket modes (one shared socket vs SO_REUSEPORT), I/O
//! models and GRO on/off.
//!
//! For each configuration (`matrix.rs`) it starts `server`, searches for
//! the highest rate `loadgen` can push with loss within `--max-loss` (see
//! `search.rs`), then measures the server's CPU time per echo at
//! `--common-rate` (`cpu.rs`) and projects it to `--project-cores` cores.
//! The results go to a table on stdout and to `sweep.csv`, `sweep.json` and
//! `sweep.svg` in `--out` (rewritten after every configuration, so an
//! interrupted sweep keeps what it finished). `server` and `loadgen` are
//! taken from the directory this executable is in; `tools/sweep` builds
//! them all in release mode first. This file holds the top level: the
//! settings, the loop over configurations and the outputs.

#![deny(unsafe_code)]

mod chart;
mod cli;
mod cpu;
mod loadgen_proc;
mod matrix;
mod output;
#[allow(unsafe_code)] // the one module that talks to the OS (prctl, kill, sysconf)
mod procs;
mod runner;
mod search;
mod server_proc;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;
use signal_hook::consts::{SIGINT, SIGTERM};

use cli::{check, io_name, Args};
use loadgen_proc::Loadgen;
use matrix::Matrix;
use output::Row;
use procs::Error;
use runner::{run_config, SERVER_START, SERVER_STOP, SETTLE, SHORT_TOLERANCE, SUMMARY_WAIT};
use search::SearchParams;

/// Settings recorded in sweep.json.
#[derive(Debug, Serialize)]
pub struct Settings {
    threads: Vec<u16>,
    modes: Vec<&'static str>,
    io: Vec<String>,
    gro: Vec<&'static str>,
    max_loss_pct: f64,
    size: u32,
    flows: u32,
    loadgen_args: Vec<String>,
    step_duration_s: f64,
    warmup_s: f64,
    common_rate: u64,
    /// Cores of the projection column (a projection, not a measurement).
    project_cores: u32,
    search: SearchParams,
    clock_ticks_per_sec: u64,
    server: PathBuf,
    loadgen: PathBuf,
}

/// The whole of sweep.json.
#[derive(Serialize)]
struct Document<'a> {
    settings: &'a Settings,
    complete: bool,
    elapsed_s: f64,
    rows: &'a [Row],
}

/// `dir/name`, or an error saying how to build it.
fn sibling(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{name} binary not found at {} (the sweep runs the {name} next to itself): \
             build it with `cargo build --release --bins`, or use tools/sweep",
            p.display()
        ))
    }
}

fn write_outputs(
    out: &Path,
    settings: &Settings,
    rows: &[Row],
    complete: bool,
    elapsed: Duration,
) -> Result<(), String> {
    output::write_file(&out.join("sweep.csv"), &output::csv(rows))?;
    let doc = Document {
        settings,
        complete,
        elapsed_s: elapsed.as_secs_f64(),
        rows,
    };
    let json =
        serde_json::to_string_pretty(&doc).map_err(|e| format!("cannot encode JSON: {e}"))?;
    output::write_file(&out.join("sweep.json"), &(json + "\n"))?;
    chart::write_svg(
        &out.join("sweep.svg"),
        rows,
        settings.max_loss_pct,
        settings.common_rate,
    )
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sweep: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> Result<ExitCode, String> {
    let start = Instant::now();
    check(&args)?;
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // A second signal exits at once (children die with us: PDEATHSIG).
        signal_hook::flag::register_conditional_shutdown(sig, 130, interrupted.clone())
            .and_then(|_| signal_hook::flag::register(sig, interrupted.clone()))
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate own executable: {e}"))?;
    let dir = exe
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", exe.display()))?;
    let server = sibling(dir, "server")?;
    let loadgen = Loadgen {
        bin: sibling(dir, "loadgen")?,
        duration: args.step_duration,
        warmup: args.warmup,
        flows: args.flows,
        size: args.size,
        extra: cli::loadgen_words(&args),
    };
    loadgen.check().map_err(|e| {
        if loadgen.extra.is_empty() {
            format!("loadgen is not usable: {e} (is it finished? build it with `cargo build --release --bin loadgen`)")
        } else {
            format!("loadgen is not usable with --loadgen-args {:?}: {e}", args.loadgen_args)
        }
    })?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create output directory {}: {e}", args.out.display()))?;

    let matrix = Matrix::from_args(&args);
    let settings = Settings {
        threads: matrix.threads.clone(),
        modes: matrix
            .reuseport
            .iter()
            .map(|&r| if r { "reuseport" } else { "shared" })
            .collect(),
        io: matrix.io.iter().map(|&io| io_name(io)).collect(),
        gro: matrix.gro.iter().map(|g| g.name()).collect(),
        max_loss_pct: args.max_loss,
        size: args.size,
        flows: args.flows,
        loadgen_args: loadgen.extra.clone(),
        step_duration_s: args.step_duration,
        warmup_s: args.warmup,
        common_rate: args.common_rate,
        project_cores: args.project_cores,
        search: SearchParams {
            min_rate: args.min_rate,
            max_rate: args.max_rate,
            max_loss_pct: args.max_loss,
            resolution: args.resolution,
            budget: args.probes as usize,
            short_tolerance: SHORT_TOLERANCE,
        },
        clock_ticks_per_sec: procs::clock_ticks_per_sec(),
        server,
        loadgen: loadgen.bin.clone(),
    };
    let configs = matrix.configs();
    // Time bounds: the typical cost and the hard limit (every wait bounded).
    let run_s = args.warmup + args.step_duration;
    let runs = f64::from(args.probes + 1);
    let typical = configs.len() as f64 * (runs * (run_s + 0.3) + 1.0);
    let hard = configs.len() as f64
        * (runs * (loadgen.time_limit().as_secs_f64() + SETTLE.as_secs_f64())
            + (SERVER_START + SERVER_STOP + 2 * SUMMARY_WAIT).as_secs_f64());
    eprintln!(
        "sweep: {} configurations x at most {} probes + 1 CPU run of {run_s:.1} s; expect about {:.0} s (hard limit {:.0} s)",
        configs.len(),
        args.probes,
        typical,
        hard
    );

    let mut rows: Vec<Row> = Vec::new();
    let mut failures = 0;
    for (i, cfg) in configs.iter().enumerate() {
        eprintln!("[{}/{}] {}", i + 1, configs.len(), cfg.describe());
        let t0 = Instant::now();
        let mut row = Row {
            key: cfg.key(),
            threads: cfg.threads,
            mode: cfg.mode().into(),
            io: io_name(cfg.io),
            gro: cfg.gro.name().into(),
            cpu_rate: args.common_rate,
            projected_cores: args.project_cores,
            ..Row::default()
        };
        let result = run_config(cfg, &settings, &loadgen, &mut row, &interrupted);
        row.elapsed_s = t0.elapsed().as_secs_f64();
        match result {
            Ok(()) => {}
            Err(Error::Interrupted) => break,
            Err(Error::Failed(m)) => {
                eprintln!("  error: {m}");
                failures += 1;
                row.add_note(format!("error: {m}"));
                row.error = Some(m);
            }
        }
        rows.push(row);
        write_outputs(&args.out, &settings, &rows, false, start.elapsed())?;
    }
    let was_interrupted = interrupted.load(Ordering::Relaxed);
    let complete = !was_interrupted && rows.len() == configs.len();
    write_outputs(&args.out, &settings, &rows, complete, start.elapsed())?;

    print!(
        "{}",
        output::preamble(
            args.max_loss,
            args.common_rate,
            args.project_cores,
            &settings.loadgen_args
        )
    );
    print!("{}", output::table(&rows, args.project_cores));
    println!(
        "wrote {}, {}, {}",
        args.out.join("sweep.csv").display(),
        args.out.join("sweep.json").display(),
        args.out.join("sweep.svg").display()
    );
    let elapsed = start.elapsed().as_secs_f64();
    if was_interrupted {
        eprintln!(
            "sweep: interrupted after {} of {} configurations",
            rows.len(),
            configs.len()
        );
        println!("total runtime {elapsed:.1} s (interrupted)");
        return Ok(ExitCode::from(130));
    }
    println!("total runtime {elapsed:.1} s");
    if failures > 0 {
        eprintln!("sweep: {failures} configuration(s) failed (see the note column)");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_sibling_says_how_to_build() {
        let e = sibling(Path::new("/nonexistent-dir"), "loadgen").unwrap_err();
        assert!(e.contains("cargo build --release"), "{e}");
    }
}
