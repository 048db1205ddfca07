//! The validated settings of one run: checks that depend on more than one
//! flag (datagram size vs protocol, threads vs flows) and resolving
//! `--target`. Usage mistakes and run-time failures are told apart so that
//! `main` can exit 2 or 1.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::cli::{Mode, Protocol, RunArgs, DEFAULT_RATE, MAX_TRAIN};
use crate::codec::Codec;
use crate::schedule::Shard;
use udp_packet_pool::wire::sealed::OVERHEAD;

const NS_PER_SEC: f64 = 1e9;

/// `--size` when none is given (and the protocol does not say otherwise).
const DEFAULT_SIZE: usize = 64;

/// Largest UDP payload of one send (IPv4; IPv6 allows a little more): a
/// train's datagrams together must fit, or the kernel says EMSGSIZE.
const MAX_SEND_BYTES: usize = 65_507;

/// Why a run cannot start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The flags do not make sense together (exit 2).
    Usage(String),
    /// The flags are fine but the world is not, e.g. the name does not resolve (exit 1).
    Runtime(String),
}

/// Everything a run needs, checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--target` as given.
    pub target_arg: String,
    /// Where the packets go.
    pub target: SocketAddr,
    /// Packets per second over all flows; `None` only in pingpong mode
    /// without `--rate` (back to back: no schedule).
    pub rate: Option<u64>,
    /// Measurement length.
    pub duration_ns: u64,
    /// Warm-up length.
    pub warmup_ns: u64,
    /// Datagram size.
    pub size: usize,
    /// Number of this generator's flows (sockets): `--flows`, or with
    /// `--shard` its share of them.
    pub flows: u32,
    /// `--shard` (the whole schedule without it).
    pub shard: Shard,
    /// `--start-at`: when packet 0 is due, on the wall clock.
    pub start_at: Option<SystemTime>,
    /// Number of threads.
    pub threads: u32,
    /// Pacing model.
    pub mode: Mode,
    /// Wire format.
    pub protocol: Protocol,
    /// `--stamp-stateful`: split STAMP loss into forward and backward.
    pub stamp_stateful: bool,
    /// Pingpong time-out.
    pub timeout_ns: u64,
    /// JSON report.
    pub json: bool,
    /// Percentile text output.
    pub hgrm: Option<PathBuf>,
    /// Interval log output.
    pub hlog: Option<PathBuf>,
    /// Busy-wait pacing.
    pub spin: bool,
    /// Plain progress lines.
    pub interval_lines: bool,
    /// Drain period.
    pub drain_ns: u64,
    /// Datagrams per sendmmsg.
    pub batch: usize,
    /// Packets per train (`--gso`, cut to 64 KiB); 1: no trains.
    pub train: u32,
    /// `--gso` as given.
    pub gso_asked: Option<u32>,
    /// `--gro`.
    pub gro: bool,
    /// `--psk-file`: seal requests, open replies.
    pub psk: Option<crate::seal::Sealing>,
}

/// How many datagrams of `size` bytes one train may hold: `asked`, cut to
/// [`MAX_TRAIN`] and to what fits in one send.
pub fn train_len(asked: u32, size: usize) -> u32 {
    let fit = (MAX_SEND_BYTES / size.max(1)).min(MAX_TRAIN as usize) as u32;
    asked.min(fit).max(1)
}

impl Config {
    /// Checks the parsed flags and resolves the target.
    pub fn from_args(a: &RunArgs) -> Result<Config, ConfigError> {
        let psk = crate::seal::load(a)?;
        let min = Codec::min_size(a.protocol);
        // STAMP's base packet unless asked otherwise (RFC 8762: 44 bytes);
        // sealed, room for the seal around the probe.
        let size = a.size.unwrap_or(match (a.protocol, &psk) {
            (_, Some(_)) => DEFAULT_SIZE.max(min + OVERHEAD),
            (Protocol::Stamp, None) => min,
            _ => DEFAULT_SIZE,
        });
        if psk.is_some() && size < min + OVERHEAD {
            return Err(ConfigError::Usage(format!(
                "--size {size} is too small for --psk-file: a datagram must hold the {OVERHEAD}-byte \
                 seal and the {min}-byte probe header ({} bytes)",
                min + OVERHEAD
            )));
        }
        if size < min {
            return Err(ConfigError::Usage(match a.protocol {
                Protocol::Echo => format!(
                    "--size {} is too small: a datagram must hold the {min}-byte probe header",
                    size
                ),
                Protocol::Sockperf => format!(
                    "--size {} is too small for --protocol sockperf: a datagram must hold the \
                     14-byte sockperf header and the 36-byte probe header ({min} bytes)",
                    size
                ),
                Protocol::Framed => format!(
                    "--size {} is too small for --protocol framed: a datagram must hold the \
                     16-byte frame header and the 36-byte probe header ({min} bytes)",
                    size
                ),
                Protocol::Stamp => format!(
                    "--size {} is too small for --protocol stamp: a STAMP test packet is at \
                     least {min} bytes (RFC 8762, unauthenticated mode)",
                    size
                ),
            }));
        }
        if a.stamp_stateful && a.protocol != Protocol::Stamp {
            return Err(ConfigError::Usage(
                "--stamp-stateful describes a STAMP reflector: add --protocol stamp".to_string(),
            ));
        }
        let shard = a.shard.unwrap_or(Shard::WHOLE);
        let flows = check_shard(a, shard)?;
        if a.threads > flows {
            let (what, need) = if shard.is_shared() {
                (
                    format!(
                        "the {flows} flows of --shard {}/{}",
                        shard.index, shard.count
                    ),
                    "more --flows or fewer --threads".to_string(),
                )
            } else {
                (
                    format!("--flows {flows}"),
                    format!("add --flows {}", a.threads),
                )
            };
            return Err(ConfigError::Usage(format!(
                "--threads {} is more than {what}: every thread needs at least one flow ({need})",
                a.threads
            )));
        }
        if a.mode == Mode::Pingpong && a.gso.is_some() {
            return Err(ConfigError::Usage(
                "--gso applies to --mode rate: pingpong has one packet in flight per flow"
                    .to_string(),
            ));
        }
        let target = resolve(&a.target)?;
        if target.port() == 0 {
            return Err(ConfigError::Usage(format!(
                "--target '{}': port 0 is not a port a server can listen on (give HOST:PORT, \
                 PORT 1-65535)",
                a.target
            )));
        }
        Ok(Config {
            target_arg: a.target.clone(),
            target,
            rate: match (a.mode, a.rate) {
                (Mode::Rate, None) => Some(DEFAULT_RATE),
                (_, r) => r,
            },
            duration_ns: (a.duration * NS_PER_SEC).round().max(1.0) as u64,
            warmup_ns: (a.warmup * NS_PER_SEC).round() as u64,
            size,
            flows,
            shard,
            start_at: a
                .start_at
                .map(|t| start_time(t, SystemTime::now()))
                .transpose()?,
            threads: a.threads,
            mode: a.mode,
            protocol: a.protocol,
            stamp_stateful: a.stamp_stateful,
            timeout_ns: a.timeout_ms * 1_000_000,
            json: a.json,
            hgrm: a.hgrm.clone(),
            hlog: a.hlog.clone(),
            spin: a.spin,
            interval_lines: a.interval_lines,
            drain_ns: a.drain_ms * 1_000_000,
            batch: a.batch as usize,
            train: a.gso.map_or(1, |n| train_len(n, size)),
            gso_asked: a.gso,
            gro: a.gro,
            psk,
        })
    }
}

/// Checks `--shard` against the other flags; returns this generator's
/// number of flows.
fn check_shard(a: &RunArgs, shard: Shard) -> Result<u32, ConfigError> {
    let (i, n) = (shard.index, shard.count);
    if shard.is_shared() {
        let refuse = |m: String| Err(ConfigError::Usage(m));
        if a.mode != Mode::Rate {
            return refuse(format!(
                "--shard {i}/{n} splits the open-loop schedule: use --mode rate \
                 (pingpong keeps its own per-flow schedule)"
            ));
        }
        if a.gso.is_some() {
            return refuse(format!(
                "--shard {i}/{n} sends every {n}th packet of the schedule, so no consecutive \
                 packets make a train: leave out --gso"
            ));
        }
        if a.flows < n {
            return refuse(format!(
                "--flows {} is fewer than the {n} shards of --shard {i}/{n}: every shard needs \
                 a flow of its own (give --flows {n} or more)",
                a.flows
            ));
        }
    }
    Ok(shard.flows(a.flows))
}

/// Soonest `--start-at` (the threads must be running by then).
const MIN_START_AHEAD: Duration = Duration::from_millis(20);
/// Latest `--start-at`: farther ahead is more likely a typo than a plan.
const MAX_START_AHEAD: Duration = Duration::from_secs(86_400);

/// `--start-at UNIX_TIME` as a wall-clock time, checked against `now`.
pub fn start_time(unix: f64, now: SystemTime) -> Result<SystemTime, ConfigError> {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(unix.min(1e12));
    let ahead = at.duration_since(now).unwrap_or(Duration::ZERO);
    let now_s = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    if ahead < MIN_START_AHEAD || ahead > MAX_START_AHEAD {
        return Err(ConfigError::Usage(format!(
            "--start-at {unix} is {} (it is now {now_s:.3}): give a time 20 ms to a day \
             ahead, e.g. --start-at $(($(date +%s) + 10))",
            if ahead < MIN_START_AHEAD {
                "past or less than 20 ms away"
            } else {
                "more than a day away"
            }
        )));
    }
    Ok(at)
}

/// Resolves `HOST:PORT` to its first address.
pub fn resolve(text: &str) -> Result<SocketAddr, ConfigError> {
    let mut addrs = text.to_socket_addrs().map_err(|e| {
        ConfigError::Runtime(format!(
            "cannot resolve --target '{text}': {e} (give HOST:PORT, e.g. 127.0.0.1:8888 or [::1]:8888)"
        ))
    })?;
    addrs.next().ok_or_else(|| {
        ConfigError::Runtime(format!("cannot resolve --target '{text}': no addresses"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn args(extra: &[&str]) -> RunArgs {
        let mut v = vec!["loadgen"];
        v.extend_from_slice(extra);
        Cli::try_parse_from(v).unwrap().run
    }

    #[test]
    fn defaults_resolve() {
        let c = Config::from_args(&args(&[])).unwrap();
        assert_eq!(c.target, "127.0.0.1:8888".parse().unwrap());
        assert_eq!(
            (c.duration_ns, c.warmup_ns),
            (10_000_000_000, 1_000_000_000)
        );
        assert_eq!((c.drain_ns, c.batch), (500_000_000, 32));
        assert_eq!(c.rate, Some(DEFAULT_RATE));
    }

    #[test]
    fn pingpong_is_back_to_back_unless_a_rate_is_given() {
        let c = Config::from_args(&args(&["--mode", "pingpong"])).unwrap();
        assert_eq!(c.rate, None);
        let c = Config::from_args(&args(&["--mode", "pingpong", "--rate", "2000"])).unwrap();
        assert_eq!(c.rate, Some(2000));
    }

    #[test]
    fn ipv6_literal_resolves() {
        let c = Config::from_args(&args(&["--target", "[::1]:9"])).unwrap();
        assert_eq!(c.target, "[::1]:9".parse().unwrap());
    }

    #[test]
    fn size_must_hold_the_headers() {
        let e = Config::from_args(&args(&["--size", "35"])).unwrap_err();
        assert!(
            matches!(e, ConfigError::Usage(ref m) if m.contains("--size 35")),
            "{e:?}"
        );
        assert!(Config::from_args(&args(&["--size", "36"])).is_ok());
        let e = Config::from_args(&args(&["--size", "49", "--protocol", "sockperf"])).unwrap_err();
        assert!(
            matches!(e, ConfigError::Usage(ref m) if m.contains("--size 49")),
            "{e:?}"
        );
        assert!(Config::from_args(&args(&["--size", "50", "--protocol", "sockperf"])).is_ok());
    }

    #[test]
    fn stamp_defaults_to_the_44_byte_base_packet() {
        let size = |a: &[&str]| Config::from_args(&args(a)).map(|c| c.size);
        assert_eq!(size(&["--protocol", "stamp"]), Ok(44));
        assert_eq!(size(&["--protocol", "stamp", "--size", "100"]), Ok(100));
        assert_eq!(size(&["--protocol", "framed"]), Ok(64));
        assert!(size(&["--protocol", "stamp", "--size", "43"]).is_err());
    }

    #[test]
    fn port_zero_is_a_usage_error() {
        let e = Config::from_args(&args(&["--target", "127.0.0.1:0"])).unwrap_err();
        assert!(
            matches!(e, ConfigError::Usage(ref m) if m.contains("127.0.0.1:0") && m.contains("port 0")),
            "{e:?}"
        );
    }

    #[test]
    fn trains_fit_in_one_send() {
        assert_eq!(train_len(16, 64), 16);
        assert_eq!(train_len(64, 64), 64);
        assert_eq!(train_len(64, 1100), 59);
        assert_eq!(train_len(8, 40_000), 1);
        let c = Config::from_args(&args(&["--gso", "64", "--size", "2000"])).unwrap();
        assert_eq!((c.train, c.gso_asked), (32, Some(64)));
        assert_eq!(Config::from_args(&args(&[])).unwrap().train, 1);
        let e = Config::from_args(&args(&["--mode", "pingpong", "--gso", "4"])).unwrap_err();
        assert!(matches!(e, ConfigError::Usage(ref m) if m.contains("--gso")));
    }

    #[test]
    fn threads_need_flows() {
        let e = Config::from_args(&args(&["--threads", "2"])).unwrap_err();
        assert!(matches!(e, ConfigError::Usage(ref m) if m.contains("--threads 2")));
    }

    #[test]
    fn unresolvable_target_names_the_value() {
        for bad in ["nonsense", "no.such.host.invalid:9", "127.0.0.1:99999"] {
            let e = resolve(bad).unwrap_err();
            assert!(
                matches!(e, ConfigError::Runtime(ref m) if m.contains(bad)),
                "{e:?}"
            );
        }
    }

    #[test]
    fn shards_split_the_flows_and_refuse_what_does_not_split() {
        let c = Config::from_args(&args(&["--shard", "1/3", "--flows", "7"])).unwrap();
        assert_eq!(c.flows, 2);
        assert_eq!(c.shard, Shard { index: 1, count: 3 });
        let c = Config::from_args(&args(&["--shard", "0/3", "--flows", "7"])).unwrap();
        assert_eq!(c.flows, 3);
        for (bad, says) in [
            (
                &["--shard", "1/3", "--flows", "2"][..],
                "--flows 2 is fewer than the 3 shards",
            ),
            (
                &["--shard", "1/3", "--flows", "3", "--mode", "pingpong"],
                "--mode rate",
            ),
            (
                &["--shard", "1/3", "--flows", "3", "--gso", "4"],
                "leave out --gso",
            ),
            (
                &["--shard", "1/3", "--flows", "4", "--threads", "2"],
                "--threads 2 is more than the 1 flows",
            ),
        ] {
            let e = Config::from_args(&args(bad)).unwrap_err();
            assert!(
                matches!(e, ConfigError::Usage(ref m) if m.contains(says)),
                "{bad:?}: {e:?}"
            );
        }
    }

    #[test]
    fn start_at_must_be_ahead_but_not_far() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let at = start_time(1_700_000_010.5, now).unwrap();
        assert_eq!(
            at.duration_since(now).unwrap(),
            Duration::from_millis(10_500)
        );
        for (bad, says) in [
            (1_699_999_999.0, "past or less than 20 ms away"),
            (1_700_000_000.01, "past or less than 20 ms away"),
            (1_800_000_000.0, "more than a day away"),
        ] {
            let e = start_time(bad, now).unwrap_err();
            assert!(
                matches!(e, ConfigError::Usage(ref m) if m.contains(says) && m.contains("1700000000.000")),
                "{e:?}"
            );
        }
    }
}
