//! One probe on the wire: the connected UDP socket, sending a probe and
//! waiting for its echo (classified, with stale echoes skipped), draining
//! what arrived between probes, the stop-flag-aware waits, and turning
//! socket errors into outcomes (ICMP port unreachable is `Refused`, a
//! timeout is `Timeout`) or fatal [`io::Error`]s.

use std::io::{self, ErrorKind, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::config::ClientConfig;
use super::framing;
use super::payload::{classify, describe_mismatch, Verdict};
use super::sealing::{Sealing, WRONG_KEY_HINT};

/// Receive buffer: larger than any UDP payload, so no echo is ever truncated.
const RECV_BUF_LEN: usize = 65_536;

/// Fate of one probe.
pub(super) enum Outcome {
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
pub(super) fn sleep_until(due: Instant, stop: &AtomicBool) -> bool {
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
pub(super) struct Prober<'a> {
    config: &'a ClientConfig,
    socket: UdpSocket,
    buf: Vec<u8>,
    /// With `--psk-file`: the sealing, and the last reply opened.
    sealing: Option<Sealing>,
    plain: Vec<u8>,
    /// Where the per-probe lines go.
    pub(super) out: &'a mut dyn Write,
    /// Datagrams ignored so far (see [`Summary::stale`](super::Summary::stale)).
    pub(super) stale: u64,
    stop: &'a AtomicBool,
}

impl<'a> Prober<'a> {
    /// A prober for `config.target` on a fresh socket ([`open_socket`]).
    pub(super) fn new(
        config: &'a ClientConfig,
        out: &'a mut dyn Write,
        stop: &'a AtomicBool,
    ) -> io::Result<Self> {
        Ok(Prober {
            config,
            socket: open_socket(config.target)?,
            buf: vec![0u8; RECV_BUF_LEN],
            sealing: config.psk.as_ref().map(Sealing::new).transpose()?,
            plain: Vec::new(),
            out,
            stale: 0,
            stop,
        })
    }

    /// Receive, without blocking, every datagram queued before probe `seq` is
    /// sent; all of them are stale.
    pub(super) fn drain(&mut self, seq: u32) -> io::Result<()> {
        self.socket.set_nonblocking(true)?;
        let result = loop {
            match self.socket.recv(&mut self.buf) {
                Ok(n) => {
                    self.stale += 1;
                    let got = match &self.sealing {
                        None => &self.buf[..n],
                        Some(s) if s.open(&self.buf[..n], &mut self.plain) => &self.plain,
                        Some(_) => {
                            writeln!(
                                self.out,
                                "ignored datagram that failed authentication ({n} bytes) before seq={seq}"
                            )?;
                            continue;
                        }
                    };
                    match self.stale_seq(got, seq) {
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

    /// The earlier probe `got` is a correct echo of, if any.
    fn stale_seq(&self, got: &[u8], current: u32) -> Option<u32> {
        if self.config.framed {
            framing::stale_seq(&self.config.payload, got, current)
        } else {
            self.config.payload.stale_seq(got, current)
        }
    }

    /// Send probe `seq` (the bytes `request`) and wait for its echo, which
    /// must be `expected`.
    pub(super) fn probe(
        &mut self,
        seq: u32,
        request: &[u8],
        expected: &[u8],
    ) -> io::Result<Outcome> {
        let target = self.config.target;
        let sealed = self.sealing.as_mut().map(|s| s.seal(request));
        let request = sealed.as_deref().unwrap_or(request);
        let sent_at = Instant::now();
        match self.socket.send(request) {
            Ok(n) if n == request.len() => {}
            Ok(n) => {
                return Err(io::Error::other(format!(
                    "short send to {target}: {n} of {} bytes",
                    request.len()
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
            let got = match &self.sealing {
                None => &self.buf[..n],
                Some(s) if s.open(&self.buf[..n], &mut self.plain) => &self.plain,
                Some(_) => {
                    return Ok(Outcome::Mismatch(format!(
                        "{n} bytes that failed authentication: {WRONG_KEY_HINT}"
                    )))
                }
            };
            let verdict = match classify(&self.config.payload, seq, expected, got) {
                Verdict::Mismatch { offset } => match self.stale_seq(got, seq) {
                    Some(old) => Verdict::Stale { seq: old },
                    None => Verdict::Mismatch { offset },
                },
                v => v,
            };
            match verdict {
                Verdict::Match => return Ok(Outcome::Echoed(rtt)),
                Verdict::Stale { seq: old } => {
                    self.stale += 1;
                    writeln!(
                        self.out,
                        "ignored stale echo of seq={old} ({n} bytes) while waiting for seq={seq}"
                    )?;
                }
                Verdict::Mismatch { offset } => {
                    let framed = self.config.framed.then(|| framing::describe(got, seq));
                    return Ok(Outcome::Mismatch(match framed.flatten() {
                        Some(what) => format!("{} bytes: {what}", got.len()),
                        None => describe_mismatch(got, expected, offset),
                    }));
                }
            }
        }
    }
}
