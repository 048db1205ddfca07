//! `loadgen --replay FILE.pcap [--speed X|max]`: sends the client-to-server
//! datagrams of a capture (see `replay`) to `--target`, each flow from its
//! own socket, at the recorded pace (datagram i leaves at start + (t_i -
//! t_0) / X), or back to back with `--speed max`, and counts the replies.
//!
//! A replayed payload has no loadgen probe, so replies are matched by
//! content: a reply on a flow's socket whose bytes equal a payload that
//! flow sent and that is not yet answered answers the oldest such send
//! (exact for distinct payloads; for repeated payloads, first in first
//! out). The round trip of each match is recorded. Replies that match no
//! send (a server that rewrites them, e.g. sockperf) count as `unmatched`;
//! `lost` is sent minus matched, counted after `--drain-ms`.
//! Single-threaded: one loop sends what is due, then reads every socket
//! until empty, then sleeps in `ppoll` until the next send or a reply.

use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cli::RunArgs;
use crate::replay::{self, Capture};
use crate::sys;

/// Most sockets a replay opens; more source endpoints share them (modulo).
pub const MAX_FLOWS: usize = 1024;

/// `--speed`: a multiple of the recorded pace, or as fast as possible.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// Recorded gaps divided by this factor.
    Times(f64),
    /// No gaps: back to back.
    Max,
}

/// Parses `--speed`: `max`, or a factor above 0 (1 = as recorded).
pub fn parse_speed(s: &str) -> Result<Speed, String> {
    if s.eq_ignore_ascii_case("max") {
        return Ok(Speed::Max);
    }
    match s.parse::<f64>() {
        Ok(x) if (0.001..=1e9).contains(&x) => Ok(Speed::Times(x)),
        _ => Err(format!(
            "'{s}' is not a speed: give a factor from 0.001 to 1e9 (1 = the recorded pace, 2 = twice as fast) or max (back to back)"
        )),
    }
}

/// What a replay did.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub file: String,
    pub target: String,
    pub speed: String,
    pub packets_in_file: u64,
    pub skipped_other_direction: u64,
    pub skipped_not_udp: u64,
    pub flows: usize,
    pub sent: u64,
    pub received: u64,
    pub matched: u64,
    pub unmatched: u64,
    pub lost: u64,
    pub refused: u64,
    pub duration_s: f64,
    /// When the last datagram was due, seconds after the first: the
    /// recorded span divided by --speed (0 with max).
    pub schedule_s: f64,
    /// Round trip of the matched replies, microseconds: p50, p99, max.
    pub rtt_us: Option<[f64; 3]>,
}

/// One flow: its socket and its unanswered sends by payload.
struct Flow {
    sock: UdpSocket,
    pending: HashMap<Vec<u8>, VecDeque<Instant>>,
}

/// Runs a replay from the command line's options.
pub fn run(args: &RunArgs) -> io::Result<()> {
    let path = args.replay.as_deref().expect("replay mode");
    let cap = replay::read(path).map_err(io::Error::other)?;
    let target = args
        .target
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .filter(|a| a.port() != 0)
        .ok_or_else(|| {
            io::Error::other(format!(
                "cannot resolve --target {} to an address with a port",
                args.target
            ))
        })?;
    let speed = args.speed.unwrap_or(Speed::Times(1.0));
    let mut r = replay(&cap, target, speed, Duration::from_millis(args.drain_ms))?;
    r.file = path.display().to_string();
    r.target = args.target.clone();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&r).map_err(io::Error::other)?
        );
    } else {
        print_text(&r);
    }
    if r.matched + r.unmatched == 0 && r.refused > 0 {
        return Err(io::Error::other(format!(
            "no server at {}: nothing answered and the target refused",
            args.target
        )));
    }
    Ok(())
}

fn print_text(r: &ReplayReport) {
    println!("replay {} -> {} (speed {})", r.file, r.target, r.speed);
    println!(
        "file     {} packets: {} replayed in {} flows, {} in the other direction, {} not UDP",
        r.packets_in_file, r.sent, r.flows, r.skipped_other_direction, r.skipped_not_udp
    );
    println!(
        "sent {}  received {}  matched {}  unmatched {}  lost {}  refused {}  in {:.3} s",
        r.sent, r.received, r.matched, r.unmatched, r.lost, r.refused, r.duration_s
    );
    match r.rtt_us {
        Some([p50, p99, max]) => println!("rtt us   p50 {p50:.1}  p99 {p99:.1}  max {max:.1}"),
        None => println!("rtt us   - (no matched replies)"),
    }
}

/// Sends every datagram of `cap` to `target` and counts the replies.
pub fn replay(
    cap: &Capture,
    target: SocketAddr,
    speed: Speed,
    drain: Duration,
) -> io::Result<ReplayReport> {
    let any: SocketAddr = if target.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .expect("literal");
    let mut flows = (0..cap.flows.clamp(1, MAX_FLOWS))
        .map(|_| {
            let sock = UdpSocket::bind(any)?;
            sock.connect(target)?;
            sock.set_nonblocking(true)?;
            Ok(Flow {
                sock,
                pending: HashMap::new(),
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    let mut rtt = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
    let (mut sent, mut received, mut matched, mut refused) = (0u64, 0u64, 0u64, 0u64);
    let mut buf = vec![0u8; 65536];
    let t0 = cap.datagrams.first().map_or(0, |d| d.ts_ns);
    let start = Instant::now();
    let due = |ts: u64| match speed {
        Speed::Max => start,
        Speed::Times(x) => {
            // At most about 100 years ahead, whatever the file's timestamps.
            start + Duration::from_nanos((ts.saturating_sub(t0) as f64 / x).min(3.2e18) as u64)
        }
    };
    let mut next = 0;
    let mut drain_end = None;
    loop {
        let now = Instant::now();
        // Send what is due (a full socket buffer: try again after a wait).
        while let Some(d) = cap.datagrams.get(next).filter(|d| due(d.ts_ns) <= now) {
            let f = &mut flows[d.flow % MAX_FLOWS];
            match f.sock.send(&d.payload) {
                Ok(_) => {
                    f.pending
                        .entry(d.payload.clone())
                        .or_default()
                        .push_back(Instant::now());
                    sent += 1;
                    next += 1;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => refused += 1,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot send to {target}: {e}"),
                    ))
                }
            }
        }
        // Read every reply there is.
        for f in &mut flows {
            loop {
                match f.sock.recv(&mut buf) {
                    Ok(n) => {
                        received += 1;
                        let at = Instant::now();
                        let hit = f.pending.get_mut(&buf[..n]).and_then(|q| q.pop_front());
                        if let Some(t) = hit {
                            matched += 1;
                            rtt.saturating_record((at - t).as_nanos().max(1) as u64);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => refused += 1,
                    Err(_) => break,
                }
            }
        }
        let now = Instant::now();
        let wait = match cap.datagrams.get(next) {
            Some(d) => due(d.ts_ns)
                .saturating_duration_since(now)
                .max(Duration::from_micros(50)),
            None => {
                let end = *drain_end.get_or_insert(now + drain);
                if matched >= sent || now >= end {
                    break;
                }
                end - now
            }
        };
        let mut fds: Vec<libc::pollfd> = flows
            .iter()
            .map(|f| libc::pollfd {
                fd: f.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        sys::poll(&mut fds, wait.as_nanos().min(u64::MAX as u128) as u64)?;
    }
    let q = |p: f64| rtt.value_at_quantile(p) as f64 / 1000.0;
    Ok(ReplayReport {
        file: String::new(),
        target: target.to_string(),
        speed: match speed {
            Speed::Max => "max".into(),
            Speed::Times(x) => format!("{x}"),
        },
        packets_in_file: cap.packets,
        skipped_other_direction: cap.other_direction,
        skipped_not_udp: cap.not_udp,
        flows: flows.len(),
        sent,
        received,
        matched,
        unmatched: received - matched,
        lost: sent - matched,
        refused,
        duration_s: start.elapsed().as_secs_f64(),
        schedule_s: cap
            .datagrams
            .iter()
            .map(|d| due(d.ts_ns) - start)
            .max()
            .unwrap_or_default()
            .as_secs_f64(),
        rtt_us: (!rtt.is_empty()).then(|| [q(0.5), q(0.99), rtt.max() as f64 / 1000.0]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::Datagram;

    #[test]
    fn speeds_parse_and_bad_ones_say_what_to_give() {
        assert_eq!(parse_speed("max"), Ok(Speed::Max));
        assert_eq!(parse_speed("2.5"), Ok(Speed::Times(2.5)));
        for bad in ["0", "0.0001", "-1", "fast", "inf", "NaN"] {
            assert!(parse_speed(bad).unwrap_err().contains("max"), "{bad}");
        }
    }

    #[test]
    fn an_echo_peer_answers_every_datagram_and_replies_are_matched_by_content() {
        let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = echo.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            echo.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 64];
            for i in 0..6 {
                let (n, from) = echo.recv_from(&mut buf).unwrap();
                // The last one comes back altered: unmatched.
                if i == 5 {
                    buf[0] ^= 0xff;
                }
                echo.send_to(&buf[..n], from).unwrap();
            }
        });
        let datagrams = (0..6)
            .map(|i| Datagram {
                ts_ns: i * 1000,
                flow: (i % 2) as usize,
                payload: vec![i as u8; 8],
            })
            .collect();
        let cap = Capture {
            datagrams,
            flows: 2,
            packets: 6,
            ..Capture::default()
        };
        let r = replay(&cap, target, Speed::Max, Duration::from_secs(2)).unwrap();
        peer.join().unwrap();
        assert_eq!(
            (r.sent, r.received, r.matched, r.unmatched, r.lost),
            (6, 6, 5, 1, 1)
        );
        assert_eq!(r.flows, 2);
        assert!(r.rtt_us.is_some());
        assert_eq!(r.schedule_s, 0.0);
    }
}
