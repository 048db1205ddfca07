//! Command line: `loadgen [RUN OPTIONS]` runs a load test, `loadgen merge
//! FILE...` merges interval logs. Run options and the subcommand conflict,
//! so a plain `loadgen --rate 5000` never needs a subcommand name.

use std::path::PathBuf;

use clap::builder::RangedU64ValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::schedule::Shard;

/// `--rate` in rate mode when none is given.
pub const DEFAULT_RATE: u64 = 10_000;

/// Largest UDP payload over IPv4.
pub const MAX_SIZE: usize = 65_507;

/// Open-loop, rate-paced UDP load generator (wrk2 model) for echo servers.
///
/// --mode rate (default, --rate 10000 unless given): packet i of the run
/// (split round-robin over the flows) is due at start + i/rate, whatever
/// happened to earlier packets.
///
/// --mode pingpong: one packet in flight per flow. Without --rate it runs
/// back to back like sockperf ping-pong: the next packet goes as soon as the
/// echo arrives. With --rate each flow keeps a schedule (its share of the
/// rate); a packet whose slot passed while the flow waited for an echo goes
/// as soon as the echo arrives, and sending stops at the end of --duration.
///
/// Latency columns: "corrected" is receive time - intended (scheduled) send
/// time, so time the sender was held back by a late echo or a late thread
/// counts (no coordinated omission); "uncorrected" is receive time - actual
/// send time (the plain round trip). Back to back there is no schedule:
/// corrected is not applicable and equals uncorrected (the report says so).
/// Packets sent during the warm-up are left out of every result. Loss is
/// counted after a drain period; a loss is a measurement, so the exit code
/// stays 0, but no server at all (nothing answered, ICMP port unreachable)
/// exits 1. A sender still behind at the end of --duration stops and counts
/// what it never sent as "unsent". Every send's lateness against its own
/// intended time is reported (lateness_us, behind_max_us); a rate run that
/// sent anything more than 1 ms late fell behind its schedule (fell_behind,
/// a warning on stderr), even if it kept the rate.
#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  \
        loadgen --rate 200000 --duration 5 --flows 16\n  \
        loadgen --rate 200000 --flows 16 --threads 2 --gso 16   (trains)\n  \
        loadgen --mode pingpong --target [::1]:8888   (back to back)\n  \
        loadgen --mode pingpong --rate 2000 --flows 2   (paced)\n  \
        loadgen --protocol sockperf --target 127.0.0.1:11111 --json\n  \
        loadgen --protocol framed --target 127.0.0.1:8888   (server --protocol framed)\n  \
        loadgen --protocol stamp --stamp-stateful --target 127.0.0.1:862\n  \
        loadgen --replay run.pcap --speed max --target 127.0.0.1:8888\n  \
        loadgen --hlog run1.hlog ... ; loadgen merge run1.hlog run2.hlog\n  \
        loadgen --shard 0/3 --rate 30000 --flows 6 --json --hlog s0.hlog > s0.json   (and 1/3, 2/3)\n  \
        loadgen merge --json s0.json s1.json s2.json s0.hlog s1.hlog s2.hlog"
)]
pub struct Cli {
    /// What to do instead of a load test.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Load-test options (the default action).
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Merge the intervals of one or more --hlog files into one histogram
    /// and print its percentiles; given the --json reports of the shards of
    /// one run (--shard I/N) too, print one merged report: counts and rates
    /// summed, latency percentiles from the summed hlogs (null without them).
    Merge(MergeArgs),
}

/// Options of `loadgen merge`.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Interval log files written by --hlog (or any HdrHistogram V2 log),
    /// and/or --json reports (a file holding a JSON object), in any order.
    /// Reports must be all N shards of one run (--shard 0/N .. N-1/N), each
    /// once; their latency is exact only with all their hlog files.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also write the merged histogram in HdrHistogram's percentile text format.
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
}

/// How packets are paced.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Open loop: a fixed schedule, independent of the replies.
    Rate,
    /// One outstanding packet per flow: back to back without --rate (like
    /// sockperf ping-pong), on a schedule of --rate packets/s with it.
    Pingpong,
}

/// What the datagrams look like.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The probe only; expects a byte-exact echo (RFC 862).
    Echo,
    /// A 14-byte sockperf header (CLIENT|PONG_REQUEST) before the probe;
    /// expects sockperf-style replies (CLIENT cleared).
    Sockperf,
    /// A framed echo request (type 0x01, CRC-32C) carrying the probe;
    /// expects echo replies (0x81) from `server --protocol framed`.
    Framed,
    /// An RFC 8762 STAMP Session-Sender (unauthenticated, 44 bytes or
    /// --size); expects a Session-Reflector (`server --protocol stamp`).
    Stamp,
}

/// Options of a load test.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Server address: HOST:PORT, a DNS name or an IP literal ([::1]:8888 for IPv6).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8888")]
    pub target: String,
    /// Packets per second, in total over all flows [rate mode default: 10000;
    /// pingpong default: none, back to back].
    #[arg(long, value_name = "PPS",
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub rate: Option<u64>,
    /// Seconds of measurement (after the warm-up).
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = positive_secs)]
    pub duration: f64,
    /// Seconds sent first and left out of all results.
    #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = non_negative_secs)]
    pub warmup: f64,
    /// Datagram size in bytes: at least 36 (the probe header); 50 with --protocol sockperf,
    /// 52 with framed, 44 with stamp, 68 with --psk-file [default: 64; 44 with --protocol stamp;
    /// 68 with --psk-file].
    #[arg(long, value_name = "BYTES",
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_SIZE as u64))]
    pub size: Option<usize>,
    /// UDP sockets, each with its own source port (SO_REUSEPORT servers spread them over workers).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub flows: u32,
    /// Sending threads; the flows are split over them and each thread also receives for its flows.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: u32,
    /// rate: open-loop schedule; pingpong: one outstanding packet per flow
    /// (back to back unless --rate is given).
    #[arg(long, value_enum, default_value_t = Mode::Rate)]
    pub mode: Mode,
    /// echo: byte-exact echo servers; sockperf: sockperf servers (or `server --sockperf`);
    /// framed: `server --protocol framed`; stamp: STAMP reflectors (one-way delays too).
    #[arg(long, value_enum, default_value_t = Protocol::Echo)]
    pub protocol: Protocol,
    /// With --protocol stamp: the reflector is stateful (numbers each session's replies
    /// 0, 1, 2..., e.g. `server --protocol stamp --stamp-stateful`), so the loss is split
    /// into forward and backward.
    #[arg(long)]
    pub stamp_stateful: bool,
    /// Pingpong: after this long without an echo the packet counts as lost and the next is sent.
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub timeout_ms: u64,
    /// Print the final report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write the corrected latency (back to back: the round trip) in HdrHistogram's percentile text format (microseconds).
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
    /// Write a V2 compressed interval log of the corrected latency (back to back: the round trip; nanoseconds, one interval a second).
    #[arg(long, value_name = "FILE")]
    pub hlog: Option<PathBuf>,
    /// Busy-wait between sends instead of sleeping (costs a whole core).
    #[arg(long)]
    pub spin: bool,
    /// Print progress as plain lines (the default when stderr is not a terminal).
    #[arg(long)]
    pub interval_lines: bool,
    /// After the last send, keep receiving this long before counting unanswered packets as lost.
    #[arg(long, value_name = "MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub drain_ms: u64,
    /// Most datagrams per sendmmsg call.
    #[arg(long, value_name = "N", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub batch: u32,
    /// Send trains: N consecutive packets of the schedule go to one flow and
    /// leave in one sendmsg with UDP_SEGMENT (GSO) when the last of them is
    /// due (so the first waits (N-1)/rate; corrected latency and lateness
    /// count it). Each datagram keeps its own probe. Rate mode only; 1: no
    /// trains; cut to what fits in 64 KiB; falls back to sendmmsg (with a
    /// note) if the kernel refuses.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=MAX_TRAIN as i64))]
    pub gso: Option<u32>,
    /// Receive with UDP_GRO: coalesced trains of replies are split by the
    /// kernel's segment size and each segment counts as one reply (helps
    /// against servers that send trains; off by default).
    #[arg(long)]
    pub gro: bool,
    /// Encrypted echo (`server --psk-file`): seal every datagram with
    /// ChaCha20-Poly1305 under this pre-shared key (the probe inside the
    /// plaintext; --size is the sealed size, at least 68, default 68) and open the
    /// replies; replies that fail authentication count as unauthenticated.
    /// FILE: 64 hex digits and an optional newline, mode 600. Echo only.
    #[arg(long, value_name = "FILE")]
    pub psk_file: Option<PathBuf>,
    /// Send share I of N of the schedule (0 <= I < N), so that N
    /// generators, on N hosts, with the same flags and --shard 0/N ..
    /// N-1/N together send the schedule one generator would: global packet
    /// k is due at start + k/rate and shard I sends the k with k mod N = I
    /// (rate/N each, interleaved). Flow f belongs to shard f mod N, so the
    /// shards together use --flows flows (at least N). Each shard starts its
    /// schedule when it starts (or at --start-at); `loadgen merge` adds up
    /// the reports and hlogs. Rate mode only, without --gso.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,
    /// Start the schedule (packet 0, the warm-up's start) at this wall-clock
    /// time, seconds since the Unix epoch (e.g. `$(($(date +%s) + 10))`),
    /// instead of at once: shards on hosts with synchronized clocks then
    /// send one interleaved schedule. At least 20 ms and at most a day ahead.
    #[arg(long, value_name = "UNIX_TIME", value_parser = positive_secs_since_epoch)]
    pub start_at: Option<f64>,
    /// Replay the UDP datagrams of a pcap capture (e.g. from `server
    /// --capture`) to --target instead of generating probes: the datagrams
    /// sent to the first datagram's destination, each source endpoint from
    /// its own socket, at the recorded pace; replies are matched to sends by
    /// content. Only --target, --speed, --drain-ms and --json apply.
    #[arg(long, value_name = "FILE.pcap",
          conflicts_with_all = ["rate", "mode", "protocol", "gso", "gro", "size", "flows", "threads", "duration", "warmup", "hgrm", "hlog", "psk_file", "stamp_stateful", "shard", "start_at"])]
    pub replay: Option<PathBuf>,
    /// With --replay: X times the recorded pace (2 = twice as fast, 0.5 =
    /// half; 0.001 to 1e9), or max to send back to back [default: 1].
    #[arg(long, value_name = "X|max", requires = "replay",
          value_parser = crate::replay_run::parse_speed)]
    pub speed: Option<crate::replay_run::Speed>,
}

/// Most datagrams per train (`--gso`).
pub const MAX_TRAIN: u32 = 64;

/// Parses `--shard I/N`.
pub fn parse_shard(s: &str) -> Result<Shard, String> {
    let form = "give I/N: this generator's share I of N generators, 0 <= I < N, e.g. 0/3";
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("'{s}' is not I/N ({form})"))?;
    let num = |v: &str, what: &str| {
        v.trim()
            .parse::<u32>()
            .map_err(|_| format!("'{s}': {what} '{v}' is not a whole number ({form})"))
    };
    let (index, count) = (num(i, "I")?, num(n, "N")?);
    if count == 0 {
        return Err(format!("'{s}': N must be at least 1 ({form})"));
    }
    if index >= count {
        return Err(format!(
            "'{s}': I must be below N (shards are numbered 0 to {}; {form})",
            count - 1
        ));
    }
    Ok(Shard { index, count })
}

fn parse_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !v.is_finite() || v > 1e6 {
        return Err(format!("'{s}' is not a usable number of seconds"));
    }
    Ok(v)
}

fn positive_secs(s: &str) -> Result<f64, String> {
    let v = parse_secs(s)?;
    if v <= 0.0 {
        return Err(format!("'{s}' must be more than 0 seconds"));
    }
    Ok(v)
}

fn positive_secs_since_epoch(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "'{s}' is not a time in seconds since the Unix epoch (e.g. $(($(date +%s) + 10)))"
        )),
    }
}

fn non_negative_secs(s: &str) -> Result<f64, String> {
    let v = parse_secs(s)?;
    if v < 0.0 {
        return Err(format!("'{s}' must be 0 seconds or more"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_options_need_no_subcommand() {
        let c = Cli::try_parse_from(["loadgen", "--rate", "200000", "--flows", "16"]).unwrap();
        assert!(c.command.is_none());
        assert_eq!((c.run.rate, c.run.flows), (Some(200_000), 16));
        assert_eq!(c.run.target, "127.0.0.1:8888");
        assert_eq!((c.run.duration, c.run.warmup), (10.0, 1.0));
    }

    #[test]
    fn merge_is_a_subcommand() {
        let c = Cli::try_parse_from(["loadgen", "merge", "a.hlog", "b.hlog", "--json"]).unwrap();
        match c.command {
            Some(Command::Merge(m)) => {
                assert_eq!(m.files.len(), 2);
                assert!(m.json);
            }
            None => panic!("merge not parsed"),
        }
        assert!(Cli::try_parse_from(["loadgen", "merge"]).is_err());
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for bad in [
            &["loadgen", "--rate", "0"][..],
            &["loadgen", "--duration", "0"],
            &["loadgen", "--warmup", "-1"],
            &["loadgen", "--size", "70000"],
            &["loadgen", "--mode", "fast"],
        ] {
            let e = Cli::try_parse_from(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn shard_is_i_of_n() {
        assert_eq!(parse_shard("2/3"), Ok(Shard { index: 2, count: 3 }));
        assert_eq!(parse_shard("0/1"), Ok(Shard::WHOLE));
        for (bad, says) in [
            ("3/3", "I must be below N"),
            ("0/0", "N must be at least 1"),
            ("1", "is not I/N"),
            ("a/3", "I 'a' is not a whole number"),
            ("-1/3", "I '-1'"),
        ] {
            let e = parse_shard(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = Cli::try_parse_from(["loadgen", "--shard", "3/3"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("I must be below N"), "{e}");
    }
}
