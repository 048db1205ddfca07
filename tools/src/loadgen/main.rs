//! `loadgen`: an open-loop, rate-paced UDP load generator for echo servers
//! (this project's `server`, or a sockperf server with `--protocol sockperf`).
//!
//! # Load model (wrk2)
//! Packet `i` of the run is due at `start + i / rate` and goes to flow
//! `i % flows`; the schedule never waits for replies. Latency is recorded
//! twice: *corrected* from the intended send time (so a stalled server or a
//! stalled sender cannot hide its delay: coordinated omission) and
//! *uncorrected* from the actual send time. A sender that falls behind sends
//! what is due as fast as it can; the report then shows the achieved send
//! rate next to the asked one and how far behind it got (`behind_max_us`).
//! `--mode pingpong` keeps one packet in flight per flow instead: back to
//! back without `--rate` (no schedule, so corrected latency does not apply
//! and the report says so), on a per-flow schedule with it (corrected from
//! the scheduled slot; see `worker::pingpong`).
//!
//! # Threads, pacing, receiving
//! Flows are dealt round-robin to `--threads` threads. Each thread sends
//! *and* receives for its flows in one loop (see `worker`): send what is due
//! with `sendmmsg` (up to `--batch` datagrams per call), then sleep in
//! `ppoll` on its sockets until the next packet is due or a reply arrives,
//! then drain the replies with non-blocking `recvmmsg`, a bounded number of
//! calls per turn. One thread per sender rather than a sender/receiver
//! pair: no cross-thread state, no extra thread competing with the server
//! for the (often two) cores, while the wake-up on arrival keeps receive
//! timestamps prompt and the bounded, non-blocking receive cannot starve
//! pacing. It sleeps, never spins, unless `--spin` is given; the thread's
//! timer slack is cut (1 us up to 15k wake-ups/s per thread, 25 us above)
//! so that sleeps end on time.
//!
//! # Trains (`--gso N`, `--gro`)
//! With round-robin flows only a packet or two per flow is due at a time,
//! so each `sendmmsg` carries about one datagram and the server receives
//! them one by one. `--gso N` deals the schedule to the flows in trains of
//! N consecutive packets instead (`schedule`); a train leaves in one
//! `sendmsg` with `UDP_SEGMENT` when its *last* member is due (nothing goes
//! early; the early members' wait counts in their corrected latency and
//! lateness), every datagram with its own probe. If the kernel refuses
//! (`sys::is_refusal`), a one-line note says so and the trains go by
//! `sendmmsg`. `--gro` lets replies arrive coalesced (`UDP_GRO`); each read
//! is cut by its segment size (`train`) and every segment counts as one
//! reply.
//!
//! # Accounting
//! Every datagram carries `udp_packet_pool::probe` (magic, flow, seq,
//! intended and actual send time, checksum). Replies are checked with
//! `probe::Packet::new_checked`: corrupted (bad checksum) and foreign (bad
//! magic, too short, unknown flow or sequence) are counted apart;
//! duplicates and reordering per flow with a 64K sliding bitmap. Loss =
//! sent - unique received, counted after `--drain-ms` of listening past the
//! last send. Warm-up packets are sent but left out of every result.
//!
//! A sender still behind at the end of `--duration` stops (wrk2); what it
//! never sent is `unsent`. The lateness of every send against its own
//! intended time is recorded (`lateness_us`, `behind_max_us`); a rate run
//! with a send over 1 ms late fell behind its schedule (`fell_behind`, a
//! warning on stderr), even if it kept the rate. Flow sockets are connected, so ICMP port
//! unreachable is seen (`refused`).
//!
//! Exit codes: 2 usage errors (port 0 included), 1 run-time failures
//! (cannot resolve, bind, send, write an output file; no server: nothing
//! answered and the target refused), 0 otherwise, loss included.
#![deny(unsafe_code)]

mod cli;
mod codec;
mod collector;
mod config;
mod counters;
mod flow;
mod hgrm;
mod hlog;
mod latency;
mod merge;
mod merge_reports;
mod progress;
mod replay;
mod replay_run;
mod report;
mod run;
mod schedule;
mod seal;
mod seq_window;
mod stamp_stats;
// The only unsafe code; sys.rs repeats the allow at its top so that the
// file says so itself (hence the duplicate-attribute allow).
#[allow(unsafe_code, clippy::duplicated_attributes)]
mod sys;
mod tally;
mod tick;
mod train;
mod worker;

use std::io;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command};
use crate::config::{Config, ConfigError};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Merge(m)) => merge::run(m),
        None if cli.run.replay.is_some() => replay_run::run(&cli.run),
        None => match Config::from_args(&cli.run) {
            Ok(cfg) => run::run(cfg),
            Err(ConfigError::Usage(msg)) => {
                Cli::command().error(ErrorKind::ValueValidation, msg).exit()
            }
            Err(ConfigError::Runtime(msg)) => Err(io::Error::other(msg)),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(1)
        }
    }
}
