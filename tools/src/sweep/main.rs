//! `sweep`: compares the echo server's throughput across thread counts,
//! socket modes (one shared socket vs SO_REUSEPORT) and wait modes.
//!
//! For each configuration it starts `server`, searches for the highest rate
//! `loadgen` can push with loss within `--max-loss` (see `search.rs`), then
//! measures the server's CPU time per echoed packet at `--common-rate`. The
//! results go to a table on stdout and to `sweep.csv`, `sweep.json` and
//! `sweep.svg` in `--out` (rewritten after every configuration, so an
//! interrupted sweep keeps what it finished). `server` and `loadgen` are
//! taken from the directory this executable is in; `tools/sweep` builds
//! them all in release mode first.

#![deny(unsafe_code)]

mod chart;
mod output;
#[allow(unsafe_code)] // the one module that talks to the OS (prctl, kill, sysconf)
mod procs;
mod search;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde::Serialize;
use signal_hook::consts::{SIGINT, SIGTERM};
use udp_packet_pool::worker::IoMode;

use output::Row;
use procs::{Error, Loadgen, Server};
use search::{Outcome, SearchParams, Stop};

/// Compare the echo server's max clean throughput and CPU cost per packet
/// across thread counts, socket modes and wait modes.
///
/// Every configuration gets a fresh server on 127.0.0.1 and a bounded
/// search (at most --probes loadgen runs) for the highest rate with loss
/// <= --max-loss percent, followed by one run at --common-rate to measure
/// server CPU ns per echoed packet. Ctrl+C stops the sweep, kills its
/// children and keeps the results so far.
#[derive(Parser, Debug)]
#[command(
    after_help = "Examples:\n  tools/sweep --threads 1,2,4,8 --both\n  tools/sweep --threads 1,2 --reuseport --io blocking,epoll --step-duration 1 --out /tmp/sw"
)]
struct Args {
    /// Server thread counts to compare, comma separated.
    #[arg(long, required = true, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Vec<u16>,
    /// Only SO_REUSEPORT (one socket per worker).
    #[arg(long, conflicts_with_all = ["shared", "both"])]
    reuseport: bool,
    /// Only one socket shared by all workers.
    #[arg(long, conflicts_with = "both")]
    shared: bool,
    /// Both socket modes (the default).
    #[arg(long)]
    both: bool,
    /// Server wait modes to compare, comma separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "blocking")]
    io: Vec<IoMode>,
    /// Highest loss, in percent, that still counts as clean.
    #[arg(long, default_value_t = 0.1, value_name = "PCT")]
    max_loss: f64,
    /// Datagram payload bytes.
    #[arg(long, default_value_t = 64)]
    size: u32,
    /// Concurrent flows (source ports) loadgen uses.
    #[arg(long, default_value_t = 16)]
    flows: u32,
    /// Seconds each loadgen probe measures.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    step_duration: f64,
    /// Seconds of loadgen warm-up before each measurement.
    #[arg(long, default_value_t = 0.5, value_name = "SECS")]
    warmup: f64,
    /// Rate, packets/s, at which CPU time per packet is compared.
    #[arg(long, default_value_t = 50_000)]
    common_rate: u64,
    /// Lowest rate to search, packets/s.
    #[arg(long, default_value_t = 10_000)]
    min_rate: u64,
    /// Highest rate to search, packets/s.
    #[arg(long, default_value_t = 400_000)]
    max_rate: u64,
    /// Most loadgen probes per configuration for the search.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    probes: u32,
    /// Stop the search when the bracket is within this fraction (0.05 = 5%).
    #[arg(long, default_value_t = 0.05)]
    resolution: f64,
    /// Directory for sweep.csv, sweep.json and sweep.svg.
    #[arg(long, default_value = "sweep-out")]
    out: PathBuf,
}

/// A probe is generator-limited when loadgen sent less than this fraction
/// of the asked rate.
const SHORT_TOLERANCE: f64 = 0.95;
/// Pause after each loadgen run so queues drain before the next one.
const SETTLE: Duration = Duration::from_millis(200);
/// Longest wait for the server's `listening on` line.
const SERVER_START: Duration = Duration::from_secs(10);
/// Longest wait for the server to exit after SIGINT before it is killed.
const SERVER_STOP: Duration = Duration::from_secs(5);
/// Longest wait for the server's SIGHUP summary.
const SUMMARY_WAIT: Duration = Duration::from_secs(2);

/// Settings recorded in sweep.json.
#[derive(Debug, Serialize)]
struct Settings {
    threads: Vec<u16>,
    modes: Vec<&'static str>,
    io: Vec<String>,
    max_loss_pct: f64,
    size: u32,
    flows: u32,
    step_duration_s: f64,
    warmup_s: f64,
    common_rate: u64,
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

fn io_name(io: IoMode) -> String {
    io.to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_else(|| format!("{io:?}").to_lowercase())
}

fn check(args: &Args) -> Result<(), String> {
    let finite_pos = |v: f64| v.is_finite() && v > 0.0;
    if !(args.max_loss.is_finite() && (0.0..=100.0).contains(&args.max_loss)) {
        return Err(format!(
            "invalid --max-loss {}: give a percentage between 0 and 100",
            args.max_loss
        ));
    }
    if !finite_pos(args.step_duration) || args.step_duration > 3600.0 {
        return Err(format!(
            "invalid --step-duration {}: give seconds > 0 (at most 3600)",
            args.step_duration
        ));
    }
    if !(args.warmup.is_finite() && (0.0..=600.0).contains(&args.warmup)) {
        return Err(format!(
            "invalid --warmup {}: give seconds >= 0 (at most 600)",
            args.warmup
        ));
    }
    if args.min_rate == 0 || args.max_rate < args.min_rate {
        return Err(format!(
            "invalid rate range --min-rate {} --max-rate {}: need 0 < min-rate <= max-rate",
            args.min_rate, args.max_rate
        ));
    }
    if args.common_rate == 0 {
        return Err("invalid --common-rate 0: give packets/s > 0".into());
    }
    if !(finite_pos(args.resolution) && args.resolution < 10.0) {
        return Err(format!(
            "invalid --resolution {}: give a fraction > 0 (0.05 = 5%)",
            args.resolution
        ));
    }
    if args.flows == 0 || args.size == 0 {
        return Err("--flows and --size must be at least 1".into());
    }
    Ok(())
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

/// Sleeps `d`, returning early with `Interrupted` on Ctrl+C.
fn settle(d: Duration, interrupted: &AtomicBool) -> Result<(), Error> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if interrupted.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        std::thread::sleep(Duration::from_millis(10).min(end - Instant::now()));
    }
    Ok(())
}

fn fmt_us(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.1}"))
}

/// One configuration.
struct Config {
    threads: u16,
    reuseport: bool,
    io: IoMode,
}

impl Config {
    fn mode(&self) -> &'static str {
        if self.reuseport {
            "reuseport"
        } else {
            "shared"
        }
    }
}

/// Runs one configuration: server up, search, CPU measurement, server down.
fn run_config(
    cfg: &Config,
    settings: &Settings,
    loadgen: &Loadgen,
    row: &mut Row,
    interrupted: &AtomicBool,
) -> Result<(), Error> {
    let mut server_args: Vec<String> = [
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--stats-interval",
        "0",
        "--threads",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    server_args.push(cfg.threads.to_string());
    if cfg.reuseport {
        server_args.push("--reuseport".into());
    }
    server_args.extend(["--io".into(), io_name(cfg.io), "--json".into()]);
    let mut server = Server::start(&settings.server, &server_args, SERVER_START, interrupted)?;
    let addr = server.addr;

    // 1. The search.
    let p = settings.search;
    let mut n = 0;
    let result = search::search(&p, |rate| {
        n += 1;
        let r = loadgen.run(addr, rate, interrupted)?;
        let o = Outcome {
            rate,
            send_rate: r.send_rate,
            echo_rate: r.echo_rate,
            loss_pct: r.loss_pct,
            p50_us: r.latency_us.p50,
            p99_us: r.latency_us.p99,
        };
        eprintln!(
            "  probe {n}/{}: asked {rate}/s, sent {:.0}/s{}, loss {:.3}% ({}), p50 {} us, p99 {} us",
            p.budget,
            o.send_rate,
            if o.is_short(SHORT_TOLERANCE) {
                " (generator short)"
            } else {
                ""
            },
            o.loss_pct,
            if o.is_clean(p.max_loss_pct) {
                "clean"
            } else {
                "lossy"
            },
            fmt_us(o.p50_us),
            fmt_us(o.p99_us)
        );
        settle(SETTLE, interrupted)?;
        Ok(o)
    })?;
    if let Some(b) = &result.best {
        row.max_clean_rate = Some(b.effective_rate(SHORT_TOLERANCE));
        row.asked_rate = Some(b.rate);
        row.send_rate_at_max = Some(b.send_rate);
        row.p50_us = b.p50_us;
        row.p99_us = b.p99_us;
        row.loss_at_max_pct = Some(b.loss_pct);
    }
    if let Some(l) = &result.lowest_lossy {
        row.lowest_lossy_rate = Some(l.rate);
        row.lowest_lossy_loss_pct = Some(l.loss_pct);
    }
    row.stop = Some(result.stop);
    row.resolution = result.resolution;
    row.generator_limited = result.stop == Stop::GeneratorLimited;
    match result.stop {
        Stop::CappedAtMax => row.add_note("clean at --max-rate: raise it to find the limit"),
        Stop::GeneratorLimited => {
            if let Some(b) = &result.best {
                row.add_note(format!(
                    "generator-limited: loadgen sent {:.0} of {}/s",
                    b.send_rate, b.rate
                ));
            }
        }
        Stop::NoCleanRate => {
            let loss = result
                .lowest_lossy
                .as_ref()
                .map_or(f64::NAN, |o| o.loss_pct);
            row.add_note(format!("lossy even at --min-rate ({loss:.2}% loss)"));
        }
        Stop::Budget => row.add_note(format!(
            "probe budget ran out (bracket {})",
            result
                .resolution
                .map_or("open".into(), |r| format!("{:.0}%", r * 100.0))
        )),
        Stop::Resolved => {}
    }
    // A lossy probe where loadgen fell short only matters if what it did
    // send was not clearly above the clean rate found: then the loss may be
    // the generator's rather than the server's.
    row.short_probes = result
        .probes
        .iter()
        .filter(|o| o.is_short(SHORT_TOLERANCE))
        .count();
    if result.stop != Stop::GeneratorLimited {
        let clean = row.max_clean_rate.unwrap_or(0.0);
        let suspect = result
            .probes
            .iter()
            .find(|o| o.is_short(SHORT_TOLERANCE) && o.send_rate <= clean * (1.0 + p.resolution));
        if let Some(s) = suspect {
            row.add_note(format!(
                "loadgen fell short at {}/s (sent {:.0}/s): that loss may be the generator's",
                s.rate, s.send_rate
            ));
        }
    }
    row.probes = result.probes;

    // 2. CPU time per echoed packet at the common rate.
    let rate = settings.common_rate;
    let echoed_before = server.echoed_total(SUMMARY_WAIT);
    let cpu_before = server.cpu_ns()?;
    let r = loadgen.run(addr, rate, interrupted)?;
    let cpu_after = server.cpu_ns()?;
    // Workers publish their counters every 50 ms.
    settle(Duration::from_millis(150), interrupted)?;
    let echoed_after = server.echoed_total(SUMMARY_WAIT);
    let (echoed, source) = match (echoed_before, echoed_after) {
        (Some(a), Some(b)) if b > a => (b - a, "server"),
        _ => (r.received.max(0.0) as u64, "loadgen"),
    };
    let cpu_ns = cpu_after.saturating_sub(cpu_before);
    let ticks = cpu_ns * procs::clock_ticks_per_sec() / 1_000_000_000;
    row.cpu_ticks = Some(ticks);
    row.cpu_echoed = Some(echoed);
    row.cpu_echo_source = Some(source.into());
    row.cpu_loss_pct = Some(r.loss_pct);
    if echoed > 0 {
        row.cpu_ns_per_pkt = Some(cpu_ns as f64 / echoed as f64);
    }
    eprintln!(
        "  cpu @ {rate}/s: {:.3} s server CPU ({ticks} ticks) / {echoed} echoed ({source} count) = {} ns/packet, loss {:.3}%",
        cpu_ns as f64 / 1e9,
        row.cpu_ns_per_pkt.map_or("-".into(), |x| format!("{x:.0}")),
        r.loss_pct
    );
    if !r.loss_pct.is_finite() || r.loss_pct > settings.max_loss_pct {
        row.add_note(format!(
            "CPU run at {rate}/s was lossy ({:.2}%)",
            r.loss_pct
        ));
    }
    if r.send_rate < rate as f64 * SHORT_TOLERANCE {
        row.add_note(format!(
            "CPU run: loadgen sent {:.0} of {rate}/s",
            r.send_rate
        ));
    }
    if ticks < 10 {
        row.add_note(format!("coarse CPU figure ({ticks} clock ticks)"));
    }

    // 3. Stop the server.
    let stopped = server.stop(SERVER_STOP);
    match stopped.status {
        None => row.add_note(format!(
            "server ignored SIGINT for {} s and was killed",
            SERVER_STOP.as_secs()
        )),
        Some(st) if !st.success() => {
            row.add_note(format!("server exited with {st}: {}", stopped.stderr_tail))
        }
        Some(_) => {}
    }
    if let Some(rep) = &stopped.report {
        if rep.get("buffers_returned") == Some(&serde_json::Value::Bool(false)) {
            row.add_note("server did not return every pool buffer");
        }
    }
    Ok(())
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
    };
    loadgen.check().map_err(|e| {
        format!("loadgen is not usable: {e} (is it finished? build it with `cargo build --release --bin loadgen`)")
    })?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create output directory {}: {e}", args.out.display()))?;

    let modes: Vec<bool> = if args.reuseport {
        vec![true]
    } else if args.shared {
        vec![false]
    } else {
        vec![false, true]
    };
    let mut threads = Vec::new();
    for t in &args.threads {
        if !threads.contains(t) {
            threads.push(*t);
        }
    }
    let mut ios = Vec::new();
    for io in &args.io {
        if !ios.contains(io) {
            ios.push(*io);
        }
    }
    let settings = Settings {
        threads: threads.clone(),
        modes: modes
            .iter()
            .map(|&r| if r { "reuseport" } else { "shared" })
            .collect(),
        io: ios.iter().map(|&io| io_name(io)).collect(),
        max_loss_pct: args.max_loss,
        size: args.size,
        flows: args.flows,
        step_duration_s: args.step_duration,
        warmup_s: args.warmup,
        common_rate: args.common_rate,
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
    let mut configs = Vec::new();
    for &io in &ios {
        for &reuseport in &modes {
            for &t in &threads {
                configs.push(Config {
                    threads: t,
                    reuseport,
                    io,
                });
            }
        }
    }
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
        eprintln!(
            "[{}/{}] threads {}, {} socket{}, io {}",
            i + 1,
            configs.len(),
            cfg.threads,
            cfg.mode(),
            if cfg.reuseport { "s" } else { "" },
            io_name(cfg.io)
        );
        let t0 = Instant::now();
        let mut row = Row {
            threads: cfg.threads,
            mode: cfg.mode().into(),
            io: io_name(cfg.io),
            cpu_rate: args.common_rate,
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

    println!(
        "max clean rate: highest packets/s with loss <= {}%; latency at that rate (corrected); CPU at {}/s",
        args.max_loss, args.common_rate
    );
    print!("{}", output::table(&rows));
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

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        let mut v = vec!["sweep", "--threads", "1,2,4"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v)
    }

    #[test]
    fn defaults_and_lists() {
        let a = parse(&["--io", "blocking,spin"]).unwrap();
        assert_eq!(a.threads, vec![1, 2, 4]);
        assert_eq!(a.io, vec![IoMode::Blocking, IoMode::Spin]);
        assert_eq!(
            (a.min_rate, a.max_rate, a.common_rate),
            (10_000, 400_000, 50_000)
        );
        assert_eq!(a.out, PathBuf::from("sweep-out"));
        assert!(check(&a).is_ok());
        assert_eq!(io_name(IoMode::Epoll), "epoll");
    }

    #[test]
    fn socket_modes_are_exclusive() {
        assert!(parse(&["--reuseport", "--shared"]).is_err());
        assert!(parse(&["--both", "--shared"]).is_err());
        assert!(parse(&["--reuseport"]).unwrap().reuseport);
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        assert!(parse(&["--io", "bogus"]).is_err());
        assert!(Args::try_parse_from(["sweep", "--threads", "0"]).is_err());
        let e = check(&parse(&["--min-rate", "500", "--max-rate", "100"]).unwrap()).unwrap_err();
        assert!(e.contains("--min-rate 500"), "{e}");
        let e = check(&parse(&["--step-duration", "0"]).unwrap()).unwrap_err();
        assert!(e.contains("--step-duration"), "{e}");
        assert!(check(&parse(&["--max-loss=-1"]).unwrap()).is_err());
    }

    #[test]
    fn missing_sibling_says_how_to_build() {
        let e = sibling(Path::new("/nonexistent-dir"), "loadgen").unwrap_err();
        assert!(e.contains("cargo build --release"), "{e}");
    }
}
