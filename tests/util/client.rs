//! The client tests' peers and helpers: in-test UDP responders on loopback
//! that echo correctly, corrupt a byte, never answer, answer twice, or
//! replay a stale echo, each stopped and joined on drop.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How an in-test responder answers each datagram.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// RFC 862: send it back unchanged.
    Echo,
    /// Send it back with the byte at this offset (or the last one) inverted.
    Corrupt(usize),
    /// Read it and never answer.
    Silent,
    /// Send it back twice.
    Duplicate,
    /// Swallow the first datagram; for every later one, first resend the
    /// first datagram (a stale echo), then echo it.
    ReplayFirst,
}

/// A responder thread on a loopback UDP socket; stopped and joined on drop,
/// and it stops by itself after a bounded time anyway.
pub struct Responder {
    /// Where the responder listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Responder {
    /// A responder on 127.0.0.1 (an ephemeral port).
    pub fn start(mode: Mode) -> Self {
        Self::start_on("127.0.0.1:0", mode).expect("bind 127.0.0.1:0")
    }

    /// A responder bound to `bind`; fails if that address cannot be bound.
    pub fn start_on(bind: &str, mode: Mode) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(bind)?;
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || serve(&socket, mode, &flag));
        Ok(Responder {
            addr,
            stop,
            handle: Some(handle),
        })
    }

    /// The port, as a command-line argument.
    pub fn port(&self) -> String {
        self.addr.port().to_string()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let joined = handle.join();
            if !thread::panicking() {
                joined.expect("responder thread panicked");
            }
        }
    }
}

fn serve(socket: &UdpSocket, mode: Mode, stop: &AtomicBool) {
    let give_up = Instant::now() + Duration::from_secs(30);
    let mut buf = vec![0u8; 65_536];
    let mut first: Option<Vec<u8>> = None;
    while !stop.load(Ordering::Relaxed) && Instant::now() < give_up {
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue, // read timeout: check the stop flag
        };
        let data = &buf[..n];
        let send = |d: &[u8]| {
            socket.send_to(d, peer).expect("responder send");
        };
        match mode {
            Mode::Echo => send(data),
            Mode::Corrupt(at) => {
                let mut bad = data.to_vec();
                if let Some(last) = bad.len().checked_sub(1) {
                    bad[at.min(last)] ^= 0xff;
                }
                send(&bad);
            }
            Mode::Silent => {}
            Mode::Duplicate => {
                send(data);
                send(data);
            }
            Mode::ReplayFirst => match &first {
                None => first = Some(data.to_vec()),
                Some(old) => {
                    send(old);
                    send(data);
                }
            },
        }
    }
}

/// Lossy UTF-8 text of a process's output.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
