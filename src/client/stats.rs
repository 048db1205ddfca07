//! `client --protocol framed --stats`: fetches the server's counters (a
//! JSON document) with framed stats requests, one fragment at a time (see
//! [`crate::wire::framed_stats`] for the layout).
//!
//! Fragment 0 first: its reply says the document's generation and how many
//! fragments it has; then the others, naming that generation. A reply of
//! another generation (the server no longer keeps the one being fetched)
//! starts the fetch again, at most [`MAX_RESTARTS`] times. Each request is
//! padded to [`MAX_PAYLOAD`] bytes, since the server never answers with more
//! bytes than it received. Each request waits up to `timeout` for its reply;
//! one that times out is sent again once, then the fetch fails naming it.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::wire::framed_stats::{self, MAX_PAYLOAD};

/// Fetches started over before giving up.
pub const MAX_RESTARTS: u32 = 5;

/// The server's stats document (JSON bytes), fetched from `target`.
pub fn fetch(target: SocketAddr, timeout: Duration) -> io::Result<Vec<u8>> {
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().expect("valid address")
    } else {
        "[::]:0".parse().expect("valid address")
    };
    let sock = UdpSocket::bind(bind)?;
    sock.connect(target)?;
    let mut seq = 0u32;
    for _ in 0..=MAX_RESTARTS {
        let mut doc = Vec::new();
        let (mut index, mut generation, mut count) = (0u16, 0u32, 1u16);
        while index < count {
            seq = seq.wrapping_add(1);
            let f = ask(&sock, seq, index, generation, timeout)?;
            if index > 0 && f.generation != generation {
                break;
            }
            (generation, count) = (f.generation, f.count);
            doc.extend_from_slice(&f.data);
            index += 1;
        }
        if index == count && index > 0 {
            return Ok(doc);
        }
    }
    Err(io::Error::other(format!(
        "the stats document changed during every one of {} fetches (a path slower than the server keeps documents?)",
        MAX_RESTARTS + 1
    )))
}

/// A fragment, owned.
struct Got {
    generation: u32,
    count: u16,
    data: Vec<u8>,
}

/// Sends the request for fragment `index` (twice at most) and waits for
/// its reply; other datagrams (late replies to earlier requests) are skipped.
fn ask(
    sock: &UdpSocket,
    seq: u32,
    index: u16,
    generation: u32,
    timeout: Duration,
) -> io::Result<Got> {
    let req = framed_stats::request(seq, index, generation, MAX_PAYLOAD);
    let mut buf = vec![0u8; 65536];
    for _ in 0..2 {
        sock.send(&req)?;
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        {
            sock.set_read_timeout(Some(left))?;
            let n = match sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Err(io::Error::new(
                        e.kind(),
                        "no server (ICMP port unreachable)",
                    ))
                }
                Err(e) => return Err(e),
            };
            match framed_stats::parse_reply(&buf[..n]) {
                Ok(f) if f.seq == seq && f.index == index && f.count > index => {
                    return Ok(Got {
                        generation: f.generation,
                        count: f.count,
                        data: f.data.to_vec(),
                    })
                }
                Ok(_) => continue,
                Err(e) => return Err(io::Error::other(e)),
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "no stats reply for fragment {index} within {} ms (sent twice): is the server running with --protocol framed?",
            timeout.as_millis()
        ),
    ))
}
