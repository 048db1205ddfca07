//! Verifying echo client for a UDP echo server (RFC 862: every datagram is
//! sent back byte for byte).
//!
//! The client sends `count` probes to one server, one at a time, `interval`
//! apart (measured send to send, like `ping`). After each send it waits up to
//! `timeout` for the echo, times the round trip with [`Instant`] (a monotonic
//! clock: `CLOCK_MONOTONIC` on Linux) and checks the echo **byte for byte**
//! against what was sent for that probe.
//!
//! # Payloads and how echoes are attributed
//!
//! * [`Payload::Pattern`] (`--size BYTES`): every probe is unique. Bytes
//!   `0..4` carry the probe's sequence number as a little-endian `u32` (cut to
//!   the payload size when it is under 4 bytes), and every following byte `i`
//!   is `PATTERN[(i - 4 + seq) % 62]` over the alphanumerics `0-9A-Za-z`, so
//!   the payload reads as text in a packet dump and depends on `seq`
//!   throughout. An echo that is an exact copy of an *earlier* probe is a
//!   stale echo (late answer to a probe that already timed out, or a
//!   duplicate); it is ignored, counted in [`Summary::stale`], and the client
//!   keeps waiting for the current echo. Anything else that differs from the
//!   current probe is a corrupted echo: a mismatch, reported with the first
//!   differing byte offset.
//! * [`Payload::Message`] (`MESSAGE`, default `"hello"`): the exact bytes the
//!   user gave are sent, unchanged, for every probe, so the server sees
//!   precisely that message. Identical probes cannot be told apart by content;
//!   as a mitigation, datagrams already queued on the socket before a probe is
//!   sent (late or duplicate echoes) are drained and counted as stale. An
//!   echo of an earlier probe that arrives *after* the next send is taken as
//!   that probe's echo, so use `--size` when probes may be lost or duplicated
//!   and rigorous attribution matters.
//!
//! # Stopping early
//!
//! [`run_until`] also watches a stop flag (the `client` binary sets it on
//! Ctrl+C or SIGTERM). It is checked between probes, while sleeping for the
//! interval and while waiting for an echo (at least every
//! 50 ms); the run then ends like a finished one, with the summary of the
//! probes done so far and [`Summary::interrupted`] set. A probe still
//! waiting for its echo when the flag is seen is left out of every count:
//! it never had its full timeout.
//!
//! Datagrams drained between probes are always counted as stale, never as a
//! mismatch: they are not an answer to any probe in flight.
//!
//! # Errors from the network
//!
//! The socket is `connect`ed to the target, so the kernel only delivers
//! datagrams from that address, and an ICMP port unreachable surfaces as
//! `ECONNREFUSED`; that probe is then reported as `no server at ADDR (ICMP
//! port unreachable)` and counted as lost, not treated as a fatal error.
//! Failure to bind, connect or send is a fatal [`io::Error`].

// --broadcast: one framed broadcast request and its answer.
mod broadcast;
// What to probe and where (and the payload limits).
mod config;
// --protocol framed: probes as framed echo requests.
mod framing;
// Probe bytes and the match / stale / mismatch verdict on an echo.
mod payload;
// The socket: one probe sent and waited for, ICMP and other errors.
mod prober;
// --psk-file: probes sealed with ChaCha20-Poly1305, replies opened.
mod sealing;
// --protocol framed --stats: the server's counters, fetched in fragments.
pub mod stats;
// The totals of a run and their text form.
mod summary;

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use broadcast::broadcast;
pub use config::{resolve, ClientConfig, DEFAULT_MESSAGE, MAX_UDP_PAYLOAD_V4, MAX_UDP_PAYLOAD_V6};
pub use payload::{classify, first_difference, pattern_payload, Payload, Verdict, SEQ_MARKER_LEN};
pub use sealing::WRONG_KEY_HINT;
pub use summary::{RttStats, Summary};

use prober::{sleep_until, Outcome, Prober};
use summary::RttRecorder;

/// Probe `config.target` as configured, writing one line per probe (and per
/// ignored stale datagram) to `out`, and return the totals.
///
/// Failed probes (timeout, mismatch, no server) are counted, not errors; an
/// `Err` means the configuration is invalid ([`ErrorKind::InvalidInput`]),
/// the socket could not be set up or used, or writing to `out` failed.
///
/// [`ErrorKind::InvalidInput`]: io::ErrorKind::InvalidInput
pub fn run(config: &ClientConfig, out: &mut dyn Write) -> io::Result<Summary> {
    run_until(config, out, &AtomicBool::new(false))
}

/// [`run`], stopping early once `stop` is set (see "Stopping early" above):
/// the summary then covers the probes done and says it was interrupted.
pub fn run_until(
    config: &ClientConfig,
    out: &mut dyn Write,
    stop: &AtomicBool,
) -> io::Result<Summary> {
    config.validate()?;
    let target = config.target;
    let mut prober = Prober::new(config, out, stop)?;
    let mut interrupted = false;
    let mut rtts = RttRecorder::new();
    let (mut sent, mut received, mut timeouts, mut refused, mut mismatched) = (0u64, 0, 0, 0, 0);
    let mut last_send: Option<Instant> = None;

    for seq in 0..config.count {
        if let Some(prev) = last_send {
            // An interval past the clock's range: wait (for a stop) a century.
            let century = Duration::from_secs(100 * 365 * 86_400);
            let due = prev
                .checked_add(config.interval)
                .or_else(|| prev.checked_add(century))
                .unwrap_or(prev);
            if sleep_until(due, stop) {
                interrupted = true;
                break;
            }
        }
        if stop.load(Ordering::Relaxed) {
            interrupted = true;
            break;
        }
        let expected = config.payload.for_seq(seq);
        let (request, expected) = if config.framed {
            framing::request_and_reply(seq, &expected)
        } else {
            (expected.clone(), expected)
        };
        prober.drain(seq)?;
        last_send = Some(Instant::now());
        sent += 1;
        match prober.probe(seq, &request, &expected)? {
            Outcome::Echoed(rtt) => {
                received += 1;
                rtts.record(rtt);
                writeln!(
                    prober.out,
                    "{} bytes from {target}: seq={seq} rtt={:.1} us",
                    expected.len(),
                    rtt.as_nanos() as f64 / 1e3
                )?;
            }
            Outcome::Timeout => {
                timeouts += 1;
                writeln!(
                    prober.out,
                    "seq={seq} timeout after {} ms{}",
                    config.timeout.as_millis(),
                    if config.psk.is_some() {
                        format!(" ({WRONG_KEY_HINT})")
                    } else {
                        String::new()
                    }
                )?;
            }
            Outcome::Refused => {
                refused += 1;
                writeln!(
                    prober.out,
                    "seq={seq} no server at {target} (ICMP port unreachable)"
                )?;
            }
            Outcome::Mismatch(what) => {
                mismatched += 1;
                writeln!(prober.out, "seq={seq} MISMATCH from {target}: {what}")?;
            }
            Outcome::Interrupted => {
                // Never had its full timeout: left out of every count.
                sent -= 1;
                interrupted = true;
                break;
            }
        }
    }

    let lost = timeouts + refused;
    Ok(Summary {
        target,
        payload_bytes: config.payload.len(),
        sent,
        received,
        lost,
        loss_percent: if sent == 0 {
            0.0
        } else {
            lost as f64 * 100.0 / sent as f64
        },
        timeouts,
        refused,
        mismatched,
        stale: prober.stale,
        rtt: rtts.stats(),
        interrupted,
    })
}
