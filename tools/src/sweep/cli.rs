//! The command line: [`Args`], the value parsers for `--io` (models or
//! `all`) and `--gro` (`on`, `off`), and the checks clap cannot make
//! ([`check`]).

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use udp_packet_pool::worker::IoMode;

/// Compare the echo server's max clean throughput and CPU cost per echo
/// across thread counts, socket modes, I/O models and GRO on/off.
///
/// Every configuration gets a fresh server on 127.0.0.1 and a bounded
/// search (at most --probes loadgen runs) for the highest rate with loss
/// <= --max-loss percent, followed by one run at --common-rate to measure
/// server CPU ns per echoed datagram. From that figure the table also
/// projects what --project-cores cores would sustain (a projection, not a
/// measurement). Ctrl+C stops the sweep, kills its children and keeps the
/// results so far.
#[derive(Parser, Debug)]
#[command(
    after_help = "Examples:\n  tools/sweep --threads 1,2,4,8 --both\n  tools/sweep --threads 1,2 --reuseport --io all --gro on,off --step-duration 1 --out /tmp/sw\n  tools/sweep --threads 1,2 --reuseport --gro on,off --loadgen-args \"--gso 16\""
)]
pub struct Args {
    /// Server thread counts to compare, comma separated.
    #[arg(long, required = true, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Vec<u16>,
    /// Only SO_REUSEPORT (one socket per worker).
    #[arg(long, conflicts_with_all = ["shared", "both"])]
    pub reuseport: bool,
    /// Only one socket shared by all workers.
    #[arg(long, conflicts_with = "both")]
    pub shared: bool,
    /// Both socket modes (the default).
    #[arg(long)]
    pub both: bool,
    /// Server I/O models to compare, comma separated: blocking, epoll,
    /// spin, uring, or all (the four).
    #[arg(long, value_name = "MODELS", value_delimiter = ',', default_value = "blocking", value_parser = parse_io)]
    pub io: Vec<IoList>,
    /// GRO settings to compare, comma separated: on (the server's default;
    /// passes --gro) and/or off (passes --no-gro).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "on")]
    pub gro: Vec<Gro>,
    /// Highest loss, in percent, that still counts as clean.
    #[arg(long, default_value_t = 0.1, value_name = "PCT")]
    pub max_loss: f64,
    /// Datagram payload bytes.
    #[arg(long, default_value_t = 64)]
    pub size: u32,
    /// Concurrent flows (source ports) loadgen uses.
    #[arg(long, default_value_t = 16)]
    pub flows: u32,
    /// Extra loadgen flags for every run, whitespace separated (e.g.
    /// "--gso 16" to send trains, once loadgen has it). Not the flags the
    /// sweep sets itself: --target, --rate, --duration, --warmup, --flows,
    /// --size, --json.
    #[arg(
        long,
        value_name = "ARGS",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub loadgen_args: String,
    /// Seconds each loadgen probe measures.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub step_duration: f64,
    /// Seconds of loadgen warm-up before each measurement.
    #[arg(long, default_value_t = 0.5, value_name = "SECS")]
    pub warmup: f64,
    /// Rate, packets/s, at which CPU time per echo is compared.
    #[arg(long, default_value_t = 50_000)]
    pub common_rate: u64,
    /// Cores for the projection column: N x 1e9 / (server CPU ns per echo)
    /// echoes/s. A projection from the measured CPU cost, not a measurement.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub project_cores: u32,
    /// Lowest rate to search, packets/s.
    #[arg(long, default_value_t = 10_000)]
    pub min_rate: u64,
    /// Highest rate to search, packets/s.
    #[arg(long, default_value_t = 400_000)]
    pub max_rate: u64,
    /// Most loadgen probes per configuration for the search.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub probes: u32,
    /// Stop the search when the bracket is within this fraction (0.05 = 5%).
    #[arg(long, default_value_t = 0.05)]
    pub resolution: f64,
    /// Directory for sweep.csv, sweep.json and sweep.svg.
    #[arg(long, default_value = "sweep-out")]
    pub out: PathBuf,
}

/// One `--io` item: a single model, or all of them for `all`.
#[derive(Debug, Clone, PartialEq)]
pub struct IoList(pub Vec<IoMode>);

/// Parses one `--io` item.
fn parse_io(s: &str) -> Result<IoList, String> {
    if s.eq_ignore_ascii_case("all") {
        return Ok(IoList(IoMode::value_variants().to_vec()));
    }
    IoMode::from_str(s, true)
        .map(|m| IoList(vec![m]))
        .map_err(|_| {
            let names: Vec<String> = IoMode::value_variants()
                .iter()
                .map(|&m| io_name(m))
                .collect();
            format!("unknown I/O model (give {}, or all)", names.join(", "))
        })
}

/// The `--io` models in order, each once.
pub fn io_modes(args: &Args) -> Vec<IoMode> {
    unique(args.io.iter().flat_map(|l| l.0.iter().copied()))
}

/// The items of `v` in order, each once.
pub fn unique<T: PartialEq>(v: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// The name `--io` (and the server's `--io`) knows a model by.
pub fn io_name(io: IoMode) -> String {
    io.to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_else(|| format!("{io:?}").to_lowercase())
}

/// A GRO setting of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Gro {
    /// GRO/GSO trains (the server's default where the kernel allows).
    On,
    /// One datagram per buffer (`server --no-gro`).
    Off,
}

impl Gro {
    /// "on" or "off".
    pub fn name(self) -> &'static str {
        match self {
            Gro::On => "on",
            Gro::Off => "off",
        }
    }

    /// The server flag that asks for it.
    pub fn server_flag(self) -> &'static str {
        match self {
            Gro::On => "--gro",
            Gro::Off => "--no-gro",
        }
    }
}

/// `--loadgen-args` as words.
pub fn loadgen_words(args: &Args) -> Vec<String> {
    args.loadgen_args
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The checks clap cannot make.
pub fn check(args: &Args) -> Result<(), String> {
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
    crate::loadgen_proc::check_extra(&loadgen_words(args))
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
        assert_eq!(io_modes(&a), vec![IoMode::Blocking, IoMode::Spin]);
        assert_eq!(a.gro, vec![Gro::On]);
        assert_eq!(a.project_cores, 16);
        assert!(loadgen_words(&a).is_empty());
        assert_eq!(
            (a.min_rate, a.max_rate, a.common_rate),
            (10_000, 400_000, 50_000)
        );
        assert_eq!(a.out, PathBuf::from("sweep-out"));
        assert!(check(&a).is_ok());
        assert_eq!(io_name(IoMode::Epoll), "epoll");
        assert_eq!(io_modes(&parse(&[]).unwrap()), vec![IoMode::Blocking]);
    }

    #[test]
    fn io_takes_all_four_models_and_all() {
        let four = vec![IoMode::Blocking, IoMode::Epoll, IoMode::Spin, IoMode::Uring];
        let a = parse(&["--io", "blocking,epoll,spin,uring"]).unwrap();
        assert_eq!(io_modes(&a), four);
        assert_eq!(io_modes(&parse(&["--io", "all"]).unwrap()), four);
        // `all` next to a model keeps each once, in the order first named.
        let a = parse(&["--io", "uring,all"]).unwrap();
        assert_eq!(
            io_modes(&a),
            vec![IoMode::Uring, IoMode::Blocking, IoMode::Epoll, IoMode::Spin]
        );
        let e = parse(&["--io", "bogus"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains("bogus") && msg.contains("uring, or all"),
            "{msg}"
        );
    }

    #[test]
    fn gro_list_and_bad_value() {
        let a = parse(&["--gro", "on,off"]).unwrap();
        assert_eq!(a.gro, vec![Gro::On, Gro::Off]);
        assert_eq!(
            (Gro::Off.server_flag(), Gro::On.server_flag()),
            ("--no-gro", "--gro")
        );
        let e = parse(&["--gro", "on,maybe"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("maybe"), "{e}");
    }

    #[test]
    fn loadgen_args_are_words_and_checked() {
        let a = parse(&["--loadgen-args", "--gso 16  --threads 2"]).unwrap();
        assert_eq!(loadgen_words(&a), ["--gso", "16", "--threads", "2"]);
        assert!(check(&a).is_ok());
        let a = parse(&["--loadgen-args=--rate 5"]).unwrap();
        assert!(check(&a).unwrap_err().contains("--rate"));
    }

    #[test]
    fn socket_modes_are_exclusive() {
        assert!(parse(&["--reuseport", "--shared"]).is_err());
        assert!(parse(&["--both", "--shared"]).is_err());
        assert!(parse(&["--reuseport"]).unwrap().reuseport);
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        assert!(Args::try_parse_from(["sweep", "--threads", "0"]).is_err());
        assert!(parse(&["--project-cores", "0"]).is_err());
        let e = check(&parse(&["--min-rate", "500", "--max-rate", "100"]).unwrap()).unwrap_err();
        assert!(e.contains("--min-rate 500"), "{e}");
        let e = check(&parse(&["--step-duration", "0"]).unwrap()).unwrap_err();
        assert!(e.contains("--step-duration"), "{e}");
        assert!(check(&parse(&["--max-loss=-1"]).unwrap()).is_err());
    }
}
