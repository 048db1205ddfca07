//! `soak`: a long run of the echo server under steady load that fails on
//! RSS growth or on loss nobody can account for (the seed's soak test).
//!
//! It starts our `server` (the binary next to this one) on an ephemeral
//! loopback port, optionally the `impair` relay in front of it (no
//! impairment unless `--impair-args` asks for some), and one `loadgen` run
//! of `--duration` seconds. Once a second, on each statistics line the
//! server prints, it samples the server's RSS and prints a progress line.
//! At the end it stops everything with SIGINT, reads the three JSON
//! reports and checks: RSS growth since the 2nd second, the server's
//! reconciliation, and the loss accounting described in `verdict.rs`.
//! Exit codes: 0 ok, 1 a check failed or the run could not be made, 2 usage.

#![deny(unsafe_code)]

mod procs;
mod sample;
mod verdict;

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;

use procs::{parse_json, spawn_collected, Daemon};
use sample::{parse_stats_line, rss_kib, SocketDrops};
use verdict::{failures, Counts, Rss, Summary};

/// Soak test: server under steady load; fails on RSS growth or unexplained loss.
#[derive(Debug, Parser)]
#[command(name = "soak", version)]
struct Args {
    /// Seconds of load.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    duration: u64,
    /// Datagrams per second over all flows.
    #[arg(long, value_name = "PPS", default_value_t = 50_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    rate: u64,
    /// loadgen flows (source ports).
    #[arg(long, value_name = "N", default_value_t = 16)]
    flows: u32,
    /// Datagram size, bytes (loadgen needs at least 36).
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    size: u32,
    /// Send through the `impair` relay (relaying only, unless --impair-args).
    #[arg(long)]
    via_impair: bool,
    /// Extra server flags, whitespace-separated (e.g. "--threads 2 --reuseport").
    #[arg(
        long,
        value_name = "ARGS",
        default_value = "",
        allow_hyphen_values = true
    )]
    server_args: String,
    /// Extra relay flags with --via-impair (e.g. "--loss 5 --seed 3").
    #[arg(
        long,
        value_name = "ARGS",
        default_value = "",
        allow_hyphen_values = true,
        requires = "via_impair"
    )]
    impair_args: String,
    /// Largest RSS growth allowed from the 2nd second to the end, KiB.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_rss_growth_kib: u64,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// How long a process may take to start or stop before it is killed.
const START_STOP: Duration = Duration::from_secs(10);

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(summary) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string(&summary).expect("summary serialises")
                );
            } else {
                print!("{}", summary.table());
            }
            if !summary.failures.is_empty() {
                for f in &summary.failures {
                    eprintln!("soak: FAILED: {f}");
                }
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(1);
        }
    }
}

/// `dir/name`, or an error saying how to build it.
fn sibling(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{name} binary not found at {} (soak runs the {name} next to itself): \
             build it with `cargo build --release --bins`, or use tools/soak",
            p.display()
        ))
    }
}

fn words(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split_whitespace().map(str::to_string)
}

fn run(args: &Args) -> Result<Summary, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate own executable: {e}"))?;
    let dir = exe.parent().ok_or("own executable has no directory")?;
    let (server_bin, loadgen_bin) = (sibling(dir, "server")?, sibling(dir, "loadgen")?);

    let mut server_argv: Vec<String> =
        words("--port 0 --bind 127.0.0.1 --stats-interval 1 --json").collect();
    server_argv.extend(words(&args.server_args));
    let mut server = Daemon::start(&server_bin, &server_argv, "server", START_STOP)?;
    let server_pid = server.guard.pid();

    let mut relay = if args.via_impair {
        let mut a: Vec<String> = words("--listen 127.0.0.1:0 --json --upstream").collect();
        a.push(server.addr.to_string());
        a.extend(words(&args.impair_args));
        Some(Daemon::start(
            &sibling(dir, "impair")?,
            &a,
            "impair",
            START_STOP,
        )?)
    } else {
        None
    };
    let target = relay.as_ref().map_or(server.addr, |r| r.addr);

    let lg_argv: Vec<String> = [
        "--target",
        &target.to_string(),
        "--rate",
        &args.rate.to_string(),
        "--duration",
        &args.duration.to_string(),
        "--warmup",
        "0",
        "--flows",
        &args.flows.to_string(),
        "--size",
        &args.size.to_string(),
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let start = Instant::now();
    let mut loadgen = spawn_collected(&loadgen_bin, &lg_argv, "loadgen")?;
    let lg_pid = loadgen.pid();
    let deadline = start + Duration::from_secs(args.duration * 2 + 30);

    let mut rss = Vec::new();
    let (mut lg_drops, mut relay_drops) = (SocketDrops::default(), SocketDrops::default());
    let lg_status = loop {
        lg_drops.sample(lg_pid);
        if let Some(r) = relay.as_mut() {
            relay_drops.sample(r.guard.pid());
            while let Ok(line) = r.lines.try_recv() {
                r.remember(line);
            }
        }
        while let Ok(line) = server.lines.try_recv() {
            if let Some(t) = parse_stats_line(&line) {
                let kib = rss_kib(server_pid).unwrap_or(0);
                rss.push(kib);
                eprintln!(
                    "soak: [{:>5.0}s] rss {kib} KiB | rx {}/s tx {}/s | drops {} send_err {} kernel_drops {}",
                    start.elapsed().as_secs_f64(), t.rx, t.tx, t.drops, t.send_err, t.kernel_drops
                );
            } else {
                server.remember(line);
            }
        }
        if let Some(st) = server.guard.try_wait()? {
            return Err(format!(
                "server exited during the run ({st}): {}",
                server.recent.join(" | ")
            ));
        }
        if let Some(st) = loadgen.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "loadgen did not finish within {} s (killed)",
                (deadline - start).as_secs()
            ));
        }
        thread::sleep(Duration::from_millis(100));
    };
    let (_, lg_out, lg_err) = loadgen.stop(START_STOP);
    let lg = parse_json(&lg_out).ok_or_else(|| {
        format!(
            "loadgen ({lg_status}) printed no JSON report: {}",
            lg_err.trim()
        )
    })?;

    let relay_report = match relay.as_mut() {
        Some(r) => {
            relay_drops.sample(r.guard.pid());
            let (st, out, err) = r.guard.stop(START_STOP);
            Some(parse_json(&out).ok_or_else(|| {
                format!("impair ({st:?}) printed no JSON summary: {}", err.trim())
            })?)
        }
        None => None,
    };

    let (st, out, _) = server.guard.stop(START_STOP);
    let srv = parse_json(&out).ok_or_else(|| {
        format!(
            "server ({st:?}) printed no JSON report: {}",
            server.recent.join(" | ")
        )
    })?;

    let mut counts = Counts::from_reports(&lg, &srv, relay_report.as_ref())?;
    counts.loadgen_socket_drops = lg_drops.total(None);
    if let Some(r) = &relay {
        let listen = relay_drops.total(Some(r.addr.port()));
        counts.relay_listen_socket_drops = listen;
        counts.relay_upstream_socket_drops = relay_drops.total(None) - listen;
    }
    let samples = rss.len();
    let rss = Rss::from_samples(&rss);
    let mut fails = failures(&counts, rss.growth_kib, args.max_rss_growth_kib);
    if !st.is_some_and(|s| s.success()) {
        fails.push(format!("server did not exit cleanly after SIGINT ({st:?})"));
    }
    let mut notes = vec![format!(
        "loadgen does not report its own sockets' receive drops (nor the relay its own): \
         soak samples them from /proc/net/udp every 100 ms ({} loadgen sockets seen); \
         that part of the loss ({}) is sampled, the rest is exact",
        lg_drops.sockets(),
        counts.sampled_explained()
    )];
    if counts.relay_duplicated > 0 {
        notes.push(format!(
            "the relay duplicated {} datagrams: a copy can replace a lost original, \
             so the loss is only checked against an upper bound",
            counts.relay_duplicated
        ));
    }
    if counts.late > 0 {
        notes.push(format!(
            "{} echoes arrived too late for loadgen's window (counted lost)",
            counts.late
        ));
    }
    let lost = counts.lost;
    Ok(Summary {
        duration_s: args.duration as f64,
        rate: args.rate,
        via_impair: args.via_impair,
        sent: counts.sent,
        echoed: counts.echoed,
        lost,
        loss_pct: if counts.sent > 0 {
            lost as f64 * 100.0 / counts.sent as f64
        } else {
            0.0
        },
        loss_explained_exact: counts.exact_explained(),
        loss_explained_sampled: counts.sampled_explained(),
        rss,
        max_rss_growth_kib: args.max_rss_growth_kib,
        samples,
        verdict: if fails.is_empty() { "ok" } else { "FAILED" },
        failures: fails,
        notes,
        counts,
    })
}
