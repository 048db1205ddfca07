//! `impair`: a user-space UDP impairment relay, the seed's "phase 4, packet
//! loss" tool for kernels without netem. Clients send to `--listen`; each
//! client gets its own socket towards `--upstream` (a bounded table,
//! `--max-clients`), so replies map back to their client. Both directions
//! are impaired independently with the same settings: loss, delay and
//! jitter, reordering, duplication, one-byte corruption and a token-bucket
//! rate limit, all seeded and reproducible.
//!
//! Layout: `model` decides what happens to a packet (pure, unit-tested),
//! `queue` holds packets back (delay heap, reorder slot; pure), `relay` does
//! the I/O, `stats` counts and prints the summary, `cli` parses flags.
//!
//! Exit codes: 0 after a clean stop (duration reached, SIGINT or SIGTERM),
//! 1 on run-time failures (cannot resolve or bind), 2 on usage errors.
#![deny(unsafe_code)]

mod cli;
mod model;
mod queue;
mod relay;
mod stats;

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;

use crate::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("impair: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    let cfg = cli.config()?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        flag::register(sig, stop.clone()).map_err(|e| format!("cannot handle signals: {e}"))?;
    }
    let summary = relay::run(&cfg, stop).map_err(|e| e.to_string())?;
    eprint!("{}", summary.text());
    if cfg.json {
        let j = serde_json::to_string(&summary).map_err(|e| e.to_string())?;
        println!("{j}");
    }
    Ok(())
}
