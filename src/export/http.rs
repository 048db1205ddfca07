//! The `--metrics-listen` endpoint: a plain HTTP/1.x listener on its own
//! thread (std `TcpListener`, no async runtime, no HTTP framework).
//!
//! One connection at a time: read the request head (at most
//! [`MAX_HEAD`] bytes), answer, close. `GET /metrics` (any query string)
//! gets the Prometheus text of the latest published view, `GET` of any
//! other path 404, any other method 405, a head that is not HTTP 400.
//! Every read and write has a [`IO_TIMEOUT`] and the whole exchange a
//! deadline of twice that, so a client that connects and sends nothing, or
//! never reads, holds the endpoint up for at most that long; the next
//! scrape is served after it. Nothing here can stall a worker: a scrape
//! only clones the published view.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{prometheus, Published};

/// Longest a read or a write may wait.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest request head read; longer ones get 400.
pub const MAX_HEAD: usize = 8192;

/// A running endpoint.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Detached at drop.
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and starts serving `published`. The error names the
    /// address and what to do.
    pub fn start(addr: SocketAddr, published: Arc<Published>) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen on --metrics-listen {addr}: {e} (give a free TCP port, or port 0 to let the OS choose one)"),
            )
        })?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    // A failed exchange is the client's loss only: the next
                    // connection is served. A failed accept (e.g. EMFILE)
                    // is retried a little later, not in a busy loop.
                    match conn {
                        Ok(s) => {
                            let _ = serve(s, &published);
                        }
                        Err(_) => thread::sleep(Duration::from_millis(50)),
                    }
                }
            })?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address actually bound (the port the OS chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    /// Stops the thread: sets the flag and wakes `accept` with a connection
    /// of its own (bounded, errors ignored). Does not wait for an exchange
    /// in progress: the thread ends after it.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT);
        drop(self.thread.take());
    }
}

/// Reads the request head, up to the blank line, within the deadline.
fn read_head(s: &mut TcpStream, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() > MAX_HEAD || Instant::now() >= deadline {
            break;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

/// Status, content type and body for a request head.
pub fn respond(head: &[u8], published: &Published) -> (&'static str, &'static str, String) {
    let text = "text/plain; charset=utf-8";
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    if !version.is_some_and(|v| v.starts_with("HTTP/1.")) {
        return ("400 Bad Request", text, "not an HTTP/1.x request\n".into());
    }
    if method != Some("GET") {
        return ("405 Method Not Allowed", text, "only GET /metrics\n".into());
    }
    let path = target
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default();
    if path != "/metrics" {
        return (
            "404 Not Found",
            text,
            "not found: the metrics are at /metrics\n".into(),
        );
    }
    match published.latest().map(prometheus::render) {
        Some(Ok(body)) => ("200 OK", prometheus::CONTENT_TYPE, body),
        Some(Err(_)) => (
            "500 Internal Server Error",
            text,
            "cannot encode the metrics\n".into(),
        ),
        None => (
            "503 Service Unavailable",
            text,
            "no figures published yet: try again in a moment\n".into(),
        ),
    }
}

/// One exchange: read the head, write the answer, close.
fn serve(mut s: TcpStream, published: &Published) -> io::Result<()> {
    let deadline = Instant::now() + IO_TIMEOUT * 2;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let head = read_head(&mut s, deadline)?;
    let (status, ctype, body) = respond(&head, published);
    let msg = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // Written in pieces so the deadline bounds a client that reads slowly.
    for chunk in msg.as_bytes().chunks(16 * 1024) {
        if Instant::now() >= deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        s.write_all(chunk)?;
    }
    s.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{histogram, Snapshot};
    use crate::report::Report;

    #[test]
    fn routes() {
        let p = Published::new();
        p.publish(
            Report::build(&Snapshot::default(), &histogram(), true, 1.0, None, false),
            &histogram(),
            0,
        );
        assert_eq!(
            respond(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", &p).0,
            "200 OK"
        );
        assert_eq!(respond(b"GET / HTTP/1.1\r\n\r\n", &p).0, "404 Not Found");
        assert_eq!(
            respond(b"POST /metrics HTTP/1.1\r\n\r\n", &p).0,
            "405 Method Not Allowed"
        );
        assert_eq!(respond(b"\xff\x00garbage", &p).0, "400 Bad Request");
        assert_eq!(respond(b"", &p).0, "400 Bad Request");
    }
}
