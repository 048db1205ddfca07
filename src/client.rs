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

use std::fmt;
use std::io::{self, ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest UDP payload over IPv4: 65535 - 20 (IP header) - 8 (UDP header).
pub const MAX_UDP_PAYLOAD_V4: usize = 65_507;
/// Largest UDP payload over IPv6 without jumbograms: 65535 - 8 (UDP header).
pub const MAX_UDP_PAYLOAD_V6: usize = 65_527;
/// Message sent when neither a message nor a size is given.
pub const DEFAULT_MESSAGE: &str = "hello";
/// Number of leading bytes of a pattern payload that carry the sequence number.
pub const SEQ_MARKER_LEN: usize = 4;
/// Filler of a pattern payload after the sequence marker.
const PATTERN: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Receive buffer: larger than any UDP payload, so no echo is ever truncated.
const RECV_BUF_LEN: usize = 65_536;

/// What each probe carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// These exact bytes for every probe (see the module docs for how echoes
    /// of identical probes are attributed).
    Message(Vec<u8>),
    /// A payload of exactly this many bytes built by [`pattern_payload`],
    /// unique to each probe.
    Pattern(usize),
}

impl Payload {
    /// Length in bytes of every probe.
    pub fn len(&self) -> usize {
        match self {
            Payload::Message(m) => m.len(),
            Payload::Pattern(n) => *n,
        }
    }

    /// Whether probes are empty datagrams.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes sent for probe `seq`.
    pub fn for_seq(&self, seq: u32) -> Vec<u8> {
        match self {
            Payload::Message(m) => m.clone(),
            Payload::Pattern(n) => pattern_payload(seq, *n),
        }
    }

    /// If `got` is an exact copy of the payload of an earlier probe than
    /// `current`, the sequence number of that probe.
    ///
    /// Only pattern payloads can be attributed; with payloads under
    /// [`SEQ_MARKER_LEN`] bytes the marker is truncated, and the most recent
    /// earlier probe with the same truncated marker is reported.
    pub fn stale_seq(&self, got: &[u8], current: u32) -> Option<u32> {
        let Payload::Pattern(size) = *self else {
            return None;
        };
        if size == 0 || got.len() != size {
            return None;
        }
        let n = size.min(SEQ_MARKER_LEN);
        let mut marker = [0u8; SEQ_MARKER_LEN];
        marker[..n].copy_from_slice(&got[..n]);
        let marker = u64::from(u32::from_le_bytes(marker));
        let modulus = 1u64 << (8 * n);
        let delta = (u64::from(current) + modulus - marker) % modulus;
        if delta == 0 || delta > u64::from(current) {
            return None;
        }
        // delta <= current <= u32::MAX, so the cast is lossless.
        let seq = current - delta as u32;
        (got == pattern_payload(seq, size).as_slice()).then_some(seq)
    }
}

/// The payload of `size` bytes for probe `seq`: the sequence number as a
/// little-endian `u32` in the first [`SEQ_MARKER_LEN`] bytes (truncated when
/// `size` is smaller), then alphanumeric filler rotated by `seq`.
pub fn pattern_payload(seq: u32, size: usize) -> Vec<u8> {
    let marker = seq.to_le_bytes();
    let len = PATTERN.len() as u64;
    (0..size)
        .map(|i| {
            if i < SEQ_MARKER_LEN {
                marker[i]
            } else {
                let k = (i - SEQ_MARKER_LEN) as u64 + u64::from(seq);
                PATTERN[(k % len) as usize]
            }
        })
        .collect()
}

/// The first offset at which `got` and `expected` differ, counting a length
/// difference as a difference at the end of the shorter one; `None` if they
/// are identical.
pub fn first_difference(got: &[u8], expected: &[u8]) -> Option<usize> {
    match got.iter().zip(expected).position(|(g, e)| g != e) {
        Some(i) => Some(i),
        None if got.len() != expected.len() => Some(got.len().min(expected.len())),
        None => None,
    }
}

/// How a datagram received while a probe is in flight relates to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Byte-for-byte the current probe.
    Match,
    /// An exact copy of earlier probe `seq`: ignore it and keep waiting.
    Stale {
        /// Sequence number of the earlier probe.
        seq: u32,
    },
    /// A corrupted echo: differs from the current probe first at `offset`.
    Mismatch {
        /// First differing byte offset (see [`first_difference`]).
        offset: usize,
    },
}

/// Classify `got`, received while probe `seq` (whose bytes are `expected`)
/// is in flight.
pub fn classify(payload: &Payload, seq: u32, expected: &[u8], got: &[u8]) -> Verdict {
    match first_difference(got, expected) {
        None => Verdict::Match,
        Some(offset) => match payload.stale_seq(got, seq) {
            Some(seq) => Verdict::Stale { seq },
            None => Verdict::Mismatch { offset },
        },
    }
}

/// Human-readable description of a mismatching echo.
fn describe_mismatch(got: &[u8], expected: &[u8], offset: usize) -> String {
    let detail = match (got.get(offset), expected.get(offset)) {
        (Some(g), Some(e)) => format!("got 0x{g:02x}, expected 0x{e:02x}"),
        (None, _) => "echo is truncated".to_string(),
        (Some(_), None) => "echo is longer than the probe".to_string(),
    };
    format!(
        "{} bytes (sent {}), first difference at byte {offset}: {detail}",
        got.len(),
        expected.len()
    )
}

/// Resolve `host` (DNS name, IPv4 literal, or IPv6 literal with or without
/// brackets) and `port` to the first address found. The error names the host.
pub fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addrs = (bare, port)
        .to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve host '{host}': {e}")))?;
    addrs.next().ok_or_else(|| {
        io::Error::new(
            ErrorKind::NotFound,
            format!("cannot resolve host '{host}': no addresses found"),
        )
    })
}

/// What to send, where, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Server address.
    pub target: SocketAddr,
    /// Probe contents.
    pub payload: Payload,
    /// Number of probes (at least 1).
    pub count: u32,
    /// Time from one send to the next (ignored for a single probe).
    pub interval: Duration,
    /// How long to wait for each echo (more than zero).
    pub timeout: Duration,
}

impl ClientConfig {
    /// One probe of [`DEFAULT_MESSAGE`] to `target`, 1 s timeout and interval.
    pub fn new(target: SocketAddr) -> Self {
        ClientConfig {
            target,
            payload: Payload::Message(DEFAULT_MESSAGE.as_bytes().to_vec()),
            count: 1,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        }
    }

    /// Largest payload for the target's address family.
    pub fn max_payload(&self) -> usize {
        match self.target {
            SocketAddr::V4(_) => MAX_UDP_PAYLOAD_V4,
            SocketAddr::V6(_) => MAX_UDP_PAYLOAD_V6,
        }
    }

    /// Check the configuration; errors are [`ErrorKind::InvalidInput`].
    pub fn validate(&self) -> io::Result<()> {
        let invalid = |msg: String| Err(io::Error::new(ErrorKind::InvalidInput, msg));
        if self.count == 0 {
            return invalid("count must be at least 1".to_string());
        }
        if self.timeout.is_zero() {
            return invalid("timeout must be more than zero".to_string());
        }
        if self.target.port() == 0 {
            return invalid(format!("invalid destination {}: port 0", self.target));
        }
        let max = self.max_payload();
        if self.payload.len() > max {
            let what = match self.payload {
                Payload::Pattern(_) => "--size",
                Payload::Message(_) => "message",
            };
            return invalid(format!(
                "{what} of {} bytes exceeds the maximum UDP payload of {max} bytes",
                self.payload.len()
            ));
        }
        Ok(())
    }
}

/// Round-trip time statistics over the probes that got a correct echo, in
/// microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RttStats {
    /// Fastest round trip.
    pub min_us: f64,
    /// Mean round trip.
    pub avg_us: f64,
    /// 99th percentile (HdrHistogram, 3 significant digits, clamped to
    /// `min_us..=max_us`).
    pub p99_us: f64,
    /// Slowest round trip.
    pub max_us: f64,
}

/// Outcome of a run. Every probe ends up in exactly one of `received`,
/// `lost` and `mismatched`, so these add up to `sent`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Server address.
    pub target: SocketAddr,
    /// Bytes per probe.
    pub payload_bytes: usize,
    /// Probes attempted.
    pub sent: u64,
    /// Probes answered by a byte-for-byte correct echo.
    pub received: u64,
    /// Probes without an echo: `timeouts + refused`.
    pub lost: u64,
    /// `lost` as a percentage of `sent`.
    pub loss_percent: f64,
    /// Probes whose echo did not arrive within the timeout.
    pub timeouts: u64,
    /// Probes answered by ICMP port unreachable (no server listening).
    pub refused: u64,
    /// Probes answered by a corrupted echo.
    pub mismatched: u64,
    /// Datagrams ignored because they answered no probe in flight: late or
    /// duplicate echoes of earlier probes, and anything received between
    /// probes.
    pub stale: u64,
    /// RTT statistics, `None` if no probe got a correct echo.
    pub rtt: Option<RttStats>,
    /// Whether the run was stopped early (Ctrl+C, SIGTERM): the counts
    /// cover the probes done by then.
    pub interrupted: bool,
}

impl Summary {
    /// True when every probe got a correct echo.
    pub fn is_success(&self) -> bool {
        self.sent > 0 && self.received == self.sent
    }

    /// Probes that failed (lost or mismatched).
    pub fn failed(&self) -> u64 {
        self.sent - self.received
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let early = if self.interrupted {
            " (interrupted)"
        } else {
            ""
        };
        writeln!(f, "--- {} udp echo statistics{early} ---", self.target)?;
        write!(
            f,
            "{} sent, {} received, {} lost ({:.1}%), {} mismatched, {} stale ignored",
            self.sent, self.received, self.lost, self.loss_percent, self.mismatched, self.stale
        )?;
        if self.lost > 0 {
            write!(f, " [{} timeouts, {} refused]", self.timeouts, self.refused)?;
        }
        writeln!(f)?;
        match &self.rtt {
            Some(r) => writeln!(
                f,
                "rtt min/avg/p99/max = {:.1}/{:.1}/{:.1}/{:.1} us",
                r.min_us, r.avg_us, r.p99_us, r.max_us
            ),
            None => writeln!(f, "rtt: no correct echoes"),
        }
    }
}

/// Accumulates RTTs: exact min, max and mean, p99 from an HdrHistogram.
struct RttRecorder {
    hist: Histogram<u64>,
    min_ns: u64,
    max_ns: u64,
    sum_ns: u128,
}

impl RttRecorder {
    fn new() -> Self {
        RttRecorder {
            // Three significant digits, auto-resizing: cannot fail.
            hist: Histogram::new(3).expect("valid histogram precision"),
            min_ns: u64::MAX,
            max_ns: 0,
            sum_ns: 0,
        }
    }

    fn record(&mut self, rtt: Duration) {
        let ns = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX);
        // Auto-resizing histogram: recording only fails beyond u64 range.
        let _ = self.hist.record(ns);
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
        self.sum_ns += u128::from(ns);
    }

    fn stats(&self) -> Option<RttStats> {
        let n = self.hist.len();
        if n == 0 {
            return None;
        }
        let p99 = self
            .hist
            .value_at_quantile(0.99)
            .clamp(self.min_ns, self.max_ns);
        Some(RttStats {
            min_us: self.min_ns as f64 / 1e3,
            avg_us: self.sum_ns as f64 / n as f64 / 1e3,
            p99_us: p99 as f64 / 1e3,
            max_us: self.max_ns as f64 / 1e3,
        })
    }
}

/// Fate of one probe.
enum Outcome {
    Echoed(Duration),
    Timeout,
    Refused,
    Mismatch(String),
    /// The stop flag was set while waiting for the echo.
    Interrupted,
}

/// Longest stretch the client sleeps or waits without looking at the stop
/// flag.
const STOP_POLL: Duration = Duration::from_millis(50);

/// A UDP socket of the target's family, bound to an ephemeral port and
/// connected to the target.
fn open_socket(target: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind UDP socket to {local}: {e}")))?;
    socket
        .connect(target)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {target}: {e}")))?;
    Ok(socket)
}

/// Sleep until `due` (no-op if it has passed) or until `stop` is set;
/// true if it was.
fn sleep_until(due: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        let now = Instant::now();
        if due <= now {
            return false;
        }
        thread::sleep((due - now).min(STOP_POLL));
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Everything `run` needs while probing.
struct Prober<'a> {
    config: &'a ClientConfig,
    socket: UdpSocket,
    buf: Vec<u8>,
    out: &'a mut dyn Write,
    stale: u64,
    stop: &'a AtomicBool,
}

impl Prober<'_> {
    /// Receive, without blocking, every datagram queued before probe `seq` is
    /// sent; all of them are stale.
    fn drain(&mut self, seq: u32) -> io::Result<()> {
        self.socket.set_nonblocking(true)?;
        let result = loop {
            match self.socket.recv(&mut self.buf) {
                Ok(n) => {
                    self.stale += 1;
                    let got = &self.buf[..n];
                    match self.config.payload.stale_seq(got, seq) {
                        Some(s) => writeln!(
                            self.out,
                            "ignored stale echo of seq={s} ({n} bytes) before seq={seq}"
                        )?,
                        None => writeln!(
                            self.out,
                            "ignored late or duplicate datagram ({n} bytes) before seq={seq}"
                        )?,
                    }
                }
                Err(e) if is_timeout(&e) => break Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // A late ICMP error for an earlier probe: already accounted.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    log::debug!("late ICMP port unreachable before seq={seq}");
                }
                Err(e) => break Err(e),
            }
        };
        self.socket.set_nonblocking(false)?;
        result
    }

    /// Send probe `seq` and wait for its echo.
    fn probe(&mut self, seq: u32, expected: &[u8]) -> io::Result<Outcome> {
        let target = self.config.target;
        let sent_at = Instant::now();
        match self.socket.send(expected) {
            Ok(n) if n == expected.len() => {}
            Ok(n) => {
                return Err(io::Error::other(format!(
                    "short send to {target}: {n} of {} bytes",
                    expected.len()
                )))
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Ok(Outcome::Refused),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot send to {target}: {e}"),
                ))
            }
        }
        let deadline = sent_at.checked_add(self.config.timeout);
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(Outcome::Interrupted);
            }
            let remaining = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(Outcome::Timeout);
                    }
                    left.min(STOP_POLL)
                }
                None => STOP_POLL,
            };
            self.socket.set_read_timeout(Some(remaining))?;
            let n = match self.socket.recv(&mut self.buf) {
                Ok(n) => n,
                Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Ok(Outcome::Refused),
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot receive from {target}: {e}"),
                    ))
                }
            };
            let rtt = sent_at.elapsed();
            let got = &self.buf[..n];
            match classify(&self.config.payload, seq, expected, got) {
                Verdict::Match => return Ok(Outcome::Echoed(rtt)),
                Verdict::Stale { seq: old } => {
                    self.stale += 1;
                    writeln!(
                        self.out,
                        "ignored stale echo of seq={old} ({n} bytes) while waiting for seq={seq}"
                    )?;
                }
                Verdict::Mismatch { offset } => {
                    return Ok(Outcome::Mismatch(describe_mismatch(got, expected, offset)))
                }
            }
        }
    }
}

/// Probe `config.target` as configured, writing one line per probe (and per
/// ignored stale datagram) to `out`, and return the totals.
///
/// Failed probes (timeout, mismatch, no server) are counted, not errors; an
/// `Err` means the configuration is invalid ([`ErrorKind::InvalidInput`]),
/// the socket could not be set up or used, or writing to `out` failed.
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
    let mut prober = Prober {
        config,
        socket: open_socket(target)?,
        buf: vec![0u8; RECV_BUF_LEN],
        out,
        stale: 0,
        stop,
    };
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
        prober.drain(seq)?;
        last_send = Some(Instant::now());
        sent += 1;
        match prober.probe(seq, &expected)? {
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
                    "seq={seq} timeout after {} ms",
                    config.timeout.as_millis()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_has_exact_size_and_seq_marker() {
        for size in [0, 1, 3, 4, 5, 64, MAX_UDP_PAYLOAD_V4] {
            assert_eq!(pattern_payload(7, size).len(), size);
        }
        let p = pattern_payload(0x0102_0304, 10);
        assert_eq!(&p[..4], &[0x04, 0x03, 0x02, 0x01]);
        assert_eq!(p[4], PATTERN[0x0102_0304 % PATTERN.len()]);
        assert_eq!(p[5], PATTERN[(0x0102_0304 + 1) % PATTERN.len()]);
        // Filler is alphanumeric and rotated by seq.
        assert_eq!(&pattern_payload(0, 8)[4..], b"0123");
        assert_eq!(&pattern_payload(1, 8)[4..], b"1234");
        assert!(pattern_payload(5, 200)[4..]
            .iter()
            .all(u8::is_ascii_alphanumeric));
    }

    #[test]
    fn pattern_differs_between_probes() {
        for size in [1, 4, 16, 1000] {
            assert_ne!(pattern_payload(0, size), pattern_payload(1, size));
            assert_eq!(pattern_payload(9, size), pattern_payload(9, size));
        }
    }

    #[test]
    fn first_difference_offsets() {
        assert_eq!(first_difference(b"hello", b"hello"), None);
        assert_eq!(first_difference(b"help!", b"hello"), Some(3));
        assert_eq!(first_difference(b"hell", b"hello"), Some(4));
        assert_eq!(first_difference(b"hello!", b"hello"), Some(5));
        assert_eq!(first_difference(b"", b""), None);
        assert_eq!(first_difference(b"x", b""), Some(0));
    }

    #[test]
    fn classify_match_stale_and_mismatch() {
        let payload = Payload::Pattern(32);
        let current = payload.for_seq(5);
        assert_eq!(classify(&payload, 5, &current, &current), Verdict::Match);
        // Exact copy of an earlier probe: stale.
        let old = payload.for_seq(2);
        assert_eq!(
            classify(&payload, 5, &current, &old),
            Verdict::Stale { seq: 2 }
        );
        // Corrupted current echo: mismatch at the corrupted byte.
        let mut bad = current.clone();
        bad[17] ^= 0x20;
        assert_eq!(
            classify(&payload, 5, &current, &bad),
            Verdict::Mismatch { offset: 17 }
        );
        // Corrupted earlier echo is not an exact copy of anything: mismatch.
        let mut bad_old = old.clone();
        bad_old[20] ^= 1;
        assert!(matches!(
            classify(&payload, 5, &current, &bad_old),
            Verdict::Mismatch { .. }
        ));
        // A later (never sent) probe cannot be stale.
        let future = payload.for_seq(6);
        assert!(matches!(
            classify(&payload, 5, &current, &future),
            Verdict::Mismatch { offset: 0 }
        ));
        // Truncated echo: mismatch at the end.
        assert_eq!(
            classify(&payload, 5, &current, &current[..30]),
            Verdict::Mismatch { offset: 30 }
        );
    }

    #[test]
    fn message_payload_never_stale() {
        let payload = Payload::Message(b"hello".to_vec());
        assert_eq!(payload.for_seq(3), b"hello");
        assert_eq!(payload.stale_seq(b"hello", 3), None);
        assert_eq!(
            classify(&payload, 3, b"hello", b"hellO"),
            Verdict::Mismatch { offset: 4 }
        );
    }

    #[test]
    fn stale_detection_with_truncated_marker() {
        let payload = Payload::Pattern(1);
        // One-byte marker: seq 3 and seq 259 share it; the latest earlier
        // probe with that marker is reported.
        assert_eq!(payload.stale_seq(&[3], 300), Some(259));
        assert_eq!(payload.stale_seq(&[3], 4), Some(3));
        assert_eq!(payload.stale_seq(&[3], 3), None);
        assert_eq!(payload.stale_seq(&[4], 3), None);
        // Zero-byte probes carry no marker at all.
        assert_eq!(Payload::Pattern(0).stale_seq(&[], 5), None);
        // Full marker, large sequence numbers.
        let p = Payload::Pattern(12);
        let old = p.for_seq(u32::MAX - 10);
        assert_eq!(p.stale_seq(&old, u32::MAX), Some(u32::MAX - 10));
        assert_eq!(p.stale_seq(&old, u32::MAX - 10), None);
    }

    #[test]
    fn mismatch_description_names_offset() {
        let d = describe_mismatch(b"heLlo", b"hello", 2);
        assert!(d.contains("first difference at byte 2"), "{d}");
        assert!(d.contains("got 0x4c, expected 0x6c"), "{d}");
        let d = describe_mismatch(b"hel", b"hello", 3);
        assert!(d.contains("truncated"), "{d}");
    }

    #[test]
    fn validate_rejects_bad_configs() {
        let target: SocketAddr = "127.0.0.1:7".parse().unwrap();
        let mut c = ClientConfig::new(target);
        assert!(c.validate().is_ok());
        c.count = 0;
        assert_eq!(c.validate().unwrap_err().kind(), ErrorKind::InvalidInput);
        c.count = 1;
        c.payload = Payload::Pattern(MAX_UDP_PAYLOAD_V4 + 1);
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("--size"), "{e}");
        assert!(e.to_string().contains("65507"), "{e}");
        c.target = "[::1]:7".parse().unwrap();
        assert!(c.validate().is_ok(), "IPv6 allows larger payloads");
        c.target = "127.0.0.1:0".parse().unwrap();
        c.payload = Payload::Pattern(8);
        assert!(c.validate().is_err());
    }

    #[test]
    fn rtt_stats() {
        let mut r = RttRecorder::new();
        assert_eq!(r.stats(), None);
        for us in 1..=100u64 {
            r.record(Duration::from_micros(us));
        }
        let s = r.stats().unwrap();
        assert_eq!(s.min_us, 1.0);
        assert_eq!(s.max_us, 100.0);
        assert!((s.avg_us - 50.5).abs() < 1e-9);
        assert!(s.p99_us >= 98.0 && s.p99_us <= 100.0, "{s:?}");
    }

    #[test]
    fn resolve_literals() {
        assert_eq!(
            resolve("127.0.0.1", 8888).unwrap(),
            "127.0.0.1:8888".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(resolve("::1", 7).unwrap(), "[::1]:7".parse().unwrap());
        assert_eq!(resolve("[::1]", 7).unwrap(), "[::1]:7".parse().unwrap());
    }
}
