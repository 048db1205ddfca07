//! Command line of `impair`, and its translation into the relay's settings.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::builder::RangedU64ValueParser;
use clap::Parser;

use crate::model::Params;

/// User-space UDP impairment relay (netem-like loss, delay, jitter,
/// reordering, duplication, corruption and rate limiting, without netem).
///
/// Clients send to --listen; each client gets its own socket towards
/// --upstream, so replies go back to the client they belong to. Both
/// directions are impaired independently with the same settings, each with
/// its own random stream derived from --seed: the same seed gives the same
/// decisions for the same packet sequence. Per packet: --loss drops it;
/// then the --rate token bucket drops it if the direction is over its rate;
/// otherwise it is held for --delay-ms +- --jitter-ms (uniform), may be
/// duplicated (an intact second copy right after it), may have one byte
/// flipped (--corrupt, length unchanged) and may be held back and sent after
/// the next packet of its direction (--reorder). Runs until --duration
/// passes or SIGINT/SIGTERM, then prints its counters (stderr; stdout JSON
/// with --json); packets still held are sent first.
#[derive(Parser, Debug)]
#[command(
    name = "impair",
    version,
    after_help = "Examples:\n  \
        impair --listen 127.0.0.1:9999 --upstream 127.0.0.1:8888 --loss 5 --delay-ms 20 --jitter-ms 5\n  \
        loadgen --target 127.0.0.1:9999 --rate 2000 --duration 5"
)]
pub struct Cli {
    /// Address clients send to (port 0: the OS picks one; the listening
    /// line on stderr shows it).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9999")]
    pub listen: String,
    /// The server datagrams are relayed to.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8888")]
    pub upstream: String,
    /// Percent of datagrams dropped, per direction.
    #[arg(long, value_name = "PCT", default_value_t = 0.0, value_parser = pct)]
    pub loss: f64,
    /// Fixed delay added to every datagram (ms).
    #[arg(long, value_name = "MS", default_value_t = 0.0, value_parser = non_negative)]
    pub delay_ms: f64,
    /// Delays vary uniformly within +- this (ms), never below zero; a
    /// jitter larger than the gap between datagrams reorders them too.
    #[arg(long, value_name = "MS", default_value_t = 0.0, value_parser = non_negative)]
    pub jitter_ms: f64,
    /// Percent of datagrams held back and sent after the next one.
    #[arg(long, value_name = "PCT", default_value_t = 0.0, value_parser = pct)]
    pub reorder: f64,
    /// Percent of datagrams sent twice.
    #[arg(long, value_name = "PCT", default_value_t = 0.0, value_parser = pct)]
    pub duplicate: f64,
    /// Percent of datagrams with one byte flipped.
    #[arg(long, value_name = "PCT", default_value_t = 0.0, value_parser = pct)]
    pub corrupt: f64,
    /// Datagrams per second per direction (token bucket); excess is dropped
    /// and counted. Unlimited when not given.
    #[arg(long, value_name = "PPS", value_parser = RangedU64ValueParser::<u64>::new().range(1..))]
    pub rate: Option<u64>,
    /// Token bucket depth (datagrams); default 1/20 s worth of --rate.
    #[arg(long, value_name = "N", requires = "rate",
          value_parser = RangedU64ValueParser::<u64>::new().range(1..))]
    pub burst: Option<u64>,
    /// Seed of the random decisions.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// Stop after this many seconds (otherwise at SIGINT/SIGTERM).
    #[arg(long, value_name = "SECS", value_parser = positive)]
    pub duration: Option<f64>,
    /// Most clients relayed at once; datagrams from further clients are
    /// dropped and counted (dropped_no_slot, clients_refused).
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=65536))]
    pub max_clients: usize,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Everything the relay needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
    pub params: Params,
    pub rate: Option<(u64, u64)>,
    pub seed: u64,
    pub duration: Option<Duration>,
    pub max_clients: usize,
    pub json: bool,
}

impl Cli {
    /// Resolves the addresses; errors are run-time failures.
    pub fn config(&self) -> Result<Config, String> {
        let ms = |v: f64| (v * 1e6).round() as u64;
        Ok(Config {
            listen: resolve(&self.listen)?,
            upstream: resolve(&self.upstream)?,
            params: Params {
                loss: self.loss,
                duplicate: self.duplicate,
                corrupt: self.corrupt,
                reorder: self.reorder,
                delay_ns: ms(self.delay_ms),
                jitter_ns: ms(self.jitter_ms),
            },
            rate: self
                .rate
                .map(|r| (r, self.burst.unwrap_or(r.div_ceil(20)).max(1))),
            seed: self.seed,
            duration: self.duration.map(Duration::from_secs_f64),
            max_clients: self.max_clients,
            json: self.json,
        })
    }
}

fn resolve(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s} resolves to no address"))
}

fn number(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("not a number: {s}"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("not a finite number: {s}"))
    }
}

fn pct(s: &str) -> Result<f64, String> {
    let v = number(s)?;
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not a percentage (0-100)"))
    }
}

fn non_negative(s: &str) -> Result<f64, String> {
    let v = number(s)?;
    if (0.0..=3_600_000.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is out of range (0 to 3600000)"))
    }
}

fn positive(s: &str) -> Result<f64, String> {
    let v = number(s)?;
    if v > 0.0 && v <= 1e9 {
        Ok(v)
    } else {
        Err(format!("{v} must be more than 0"))
    }
}
