//! The relay's I/O: sockets, receiving threads and the one thread that
//! decides, holds and sends.
//!
//! Receiving: one thread reads the listening socket, and each client gets
//! its own socket connected to the upstream, read by its own thread (std
//! sockets with a read timeout, so they notice the stop flag; no unsafe
//! code, no poll wrapper). They hand datagrams over a bounded channel to the
//! relay thread, which owns all decision state: per direction a random
//! stream, a token bucket, a delay queue and a reorder stage. It sleeps in
//! `recv_timeout` until the next datagram arrives or the next held one is
//! due, whichever comes first.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};
use socket2::{Domain, Protocol, Socket, Type};

use crate::cli::Config;
use crate::model::{apply_flip, decide, Rng, TokenBucket};
use crate::queue::{DelayQueue, Released, Reorderer};
use crate::stats::{DirStats, Summary};

/// How often receiving threads and the relay thread look at the stop flag.
const TICK: Duration = Duration::from_millis(50);
/// Longest a packet waits for a successor to be reordered behind.
const MAX_REORDER_HOLD_NS: u64 = 100_000_000;
/// Datagrams queued between the receiving threads and the relay thread.
const CHANNEL_DEPTH: usize = 65_536;
/// Receive buffer asked for on every socket (bytes).
const RCVBUF: usize = 4 << 20;
/// Constant mixed into the seed for the server-to-client stream.
const DOWN_SEED_MIX: u64 = 0xD1B5_4A32_D192_ED03;

/// Client to server, server to client.
const UP: usize = 0;
const DOWN: usize = 1;

/// A datagram handed from a receiving thread to the relay thread.
enum Arrival {
    FromClient(SocketAddr, Vec<u8>),
    FromUpstream(usize, Vec<u8>),
}

/// A datagram on its way through one direction: the client slot it belongs
/// to, its bytes, and whether it is to be held back for reordering.
struct Pkt {
    client: usize,
    data: Vec<u8>,
    reorder: bool,
}

/// The decision state of one direction.
struct Direction {
    rng: Rng,
    bucket: Option<TokenBucket>,
    queue: DelayQueue<Pkt>,
    reorderer: Reorderer<(usize, Vec<u8>)>,
    stats: DirStats,
}

impl Direction {
    fn new(cfg: &Config, seed: u64) -> Direction {
        Direction {
            rng: Rng::new(seed),
            bucket: cfg.rate.map(|(r, b)| TokenBucket::new(r, b, 0)),
            queue: DelayQueue::default(),
            reorderer: Reorderer::new(MAX_REORDER_HOLD_NS),
            stats: DirStats::default(),
        }
    }

    /// Decides the fate of an arriving datagram and queues what survives.
    fn arrive(&mut self, cfg: &Config, client: usize, mut data: Vec<u8>, now: u64) {
        self.stats.received += 1;
        let d = decide(&cfg.params, &mut self.rng, data.len());
        if d.lost {
            self.stats.dropped_loss += 1;
            return;
        }
        if let Some(b) = &mut self.bucket {
            if !b.take(now) {
                self.stats.dropped_rate += 1;
                return;
            }
        }
        if d.hold_ns > 0 {
            self.stats.delayed += 1;
        }
        let at = now.saturating_add(d.hold_ns);
        let copy = d.duplicate.then(|| data.clone());
        if let Some(flip) = d.corrupt {
            apply_flip(&mut data, flip);
            self.stats.corrupted += 1;
        }
        self.queue.push(
            at,
            Pkt {
                client,
                data,
                reorder: d.reorder,
            },
        );
        if let Some(copy) = copy {
            self.stats.duplicated += 1;
            self.queue.push(
                at,
                Pkt {
                    client,
                    data: copy,
                    reorder: false,
                },
            );
        }
    }

    /// Moves what is due (everything with `u64::MAX`) through the reorder
    /// stage into `out`.
    fn release(&mut self, now: u64, out: &mut Vec<Released<(usize, Vec<u8>)>>) {
        while let Some(p) = self.queue.pop_due(now) {
            self.reorderer.push((p.client, p.data), p.reorder, now, out);
        }
        if now == u64::MAX {
            self.reorderer.flush(out);
        } else {
            self.reorderer.expire(now, out);
        }
    }

    fn next_wake(&self) -> Option<u64> {
        [self.queue.next_at(), self.reorderer.deadline()]
            .into_iter()
            .flatten()
            .min()
    }
}

/// A client with its own socket towards the upstream.
struct Client {
    addr: SocketAddr,
    sock: UdpSocket,
}

/// Runs the relay until `stop` is set or the configured duration passes.
pub fn run(cfg: &Config, stop: Arc<AtomicBool>) -> io::Result<Summary> {
    let listen = udp_socket(cfg.listen)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {}: {e}", cfg.listen)))?;
    let local = listen.local_addr()?;
    let p = &cfg.params;
    eprintln!(
        "impair: listening on {local} -> upstream {} (loss {}% delay {} ms jitter {} ms reorder {}% duplicate {}% corrupt {}% rate {} seed {})",
        cfg.upstream,
        p.loss,
        p.delay_ns as f64 / 1e6,
        p.jitter_ns as f64 / 1e6,
        p.reorder,
        p.duplicate,
        p.corrupt,
        cfg.rate.map_or("unlimited".to_string(), |(r, b)| format!("{r}/s burst {b}")),
        cfg.seed
    );
    let (tx, rx) = bounded(CHANNEL_DEPTH);
    let mut threads = vec![spawn_reader(listen.try_clone()?, None, tx.clone(), &stop)?];
    let start = Instant::now();
    let end = cfg.duration.map(|d| start + d);
    let mut dirs = [
        Direction::new(cfg, cfg.seed),
        Direction::new(cfg, cfg.seed ^ DOWN_SEED_MIX),
    ];
    let mut clients: Vec<Client> = Vec::new();
    let mut by_addr: HashMap<SocketAddr, usize> = HashMap::new();
    let mut refused: HashSet<SocketAddr> = HashSet::new();
    let mut out = Vec::new();
    let now_ns = |t: Instant| t.saturating_duration_since(start).as_nanos() as u64;
    loop {
        let now = now_ns(Instant::now());
        for (i, dir) in dirs.iter_mut().enumerate() {
            dir.release(now, &mut out);
            send_all(i, &mut out, &listen, &clients, &mut dir.stats);
        }
        if stop.load(Ordering::Relaxed) || end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
        let mut wake = now + TICK.as_nanos() as u64;
        for d in &dirs {
            wake = wake.min(d.next_wake().unwrap_or(u64::MAX));
        }
        if let Some(e) = end {
            wake = wake.min(now_ns(e));
        }
        let first = match rx.recv_timeout(Duration::from_nanos(wake.saturating_sub(now))) {
            Ok(a) => a,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // Take what else has arrived, a bounded batch, before releasing.
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(a) = next {
            let now = now_ns(Instant::now());
            match a {
                Arrival::FromClient(addr, data) => {
                    let slot = match by_addr.get(&addr) {
                        Some(&i) => Some(i),
                        None if clients.len() < cfg.max_clients => {
                            let sock = upstream_socket(cfg.upstream)?;
                            threads.push(spawn_reader(
                                sock.try_clone()?,
                                Some(clients.len()),
                                tx.clone(),
                                &stop,
                            )?);
                            clients.push(Client { addr, sock });
                            by_addr.insert(addr, clients.len() - 1);
                            Some(clients.len() - 1)
                        }
                        None => None,
                    };
                    match slot {
                        Some(i) => dirs[UP].arrive(cfg, i, data, now),
                        None => {
                            dirs[UP].stats.received += 1;
                            dirs[UP].stats.dropped_no_slot += 1;
                            refused.insert(addr);
                        }
                    }
                }
                Arrival::FromUpstream(i, data) => dirs[DOWN].arrive(cfg, i, data, now),
            }
            taken += 1;
            next = if taken < 256 {
                rx.try_recv().ok()
            } else {
                None
            };
        }
    }
    // Stopping: send everything still held, in release order.
    for (i, dir) in dirs.iter_mut().enumerate() {
        dir.release(u64::MAX, &mut out);
        send_all(i, &mut out, &listen, &clients, &mut dir.stats);
    }
    // Readers blocked on a full channel see it closed and stop too.
    stop.store(true, Ordering::Relaxed);
    drop(tx);
    drop(rx);
    for t in threads {
        let _ = t.join();
    }
    let [up, down] = dirs.map(|d| d.stats);
    Ok(Summary {
        listen: local.to_string(),
        upstream: cfg.upstream.to_string(),
        seed: cfg.seed,
        clients: clients.len() as u64,
        clients_refused: refused.len() as u64,
        client_to_server: up,
        server_to_client: down,
        reconciled: up.reconciles() && down.reconciles(),
        duration_s: start.elapsed().as_secs_f64(),
    })
}

/// Sends released datagrams of direction `dir` and counts them.
fn send_all(
    dir: usize,
    out: &mut Vec<Released<(usize, Vec<u8>)>>,
    listen: &UdpSocket,
    clients: &[Client],
    st: &mut DirStats,
) {
    for r in out.drain(..) {
        let (i, data) = r.item;
        let sent = if dir == UP {
            clients[i].sock.send(&data)
        } else {
            listen.send_to(&data, clients[i].addr)
        };
        match sent {
            Ok(_) => st.forwarded += 1,
            Err(_) => st.send_errors += 1,
        }
        if r.reordered {
            st.reordered += 1;
        }
    }
}

/// A UDP socket bound to `addr` with a receive buffer of [`RCVBUF`] (or
/// as much of it as `net.core.rmem_max` allows), so a relay thread held up
/// for a moment does not cost datagrams.
fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer still works.
    let _ = s.set_recv_buffer_size(RCVBUF);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// A socket connected to the upstream, so only its replies are read.
fn upstream_socket(upstream: SocketAddr) -> io::Result<UdpSocket> {
    let any = if upstream.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let s = udp_socket(any.parse().expect("wildcard address"))?;
    s.connect(upstream)?;
    Ok(s)
}

/// A thread reading `sock` until `stop`: from clients when `client` is
/// `None`, else the upstream's replies to that client.
fn spawn_reader(
    sock: UdpSocket,
    client: Option<usize>,
    tx: Sender<Arrival>,
    stop: &Arc<AtomicBool>,
) -> io::Result<thread::JoinHandle<()>> {
    sock.set_read_timeout(Some(TICK))?;
    let stop = stop.clone();
    thread::Builder::new()
        .name(format!("impair-rx-{}", client.map_or(-1, |c| c as i64)))
        .stack_size(128 * 1024)
        .spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                let arrival = match (client, sock.recv_from(&mut buf)) {
                    (None, Ok((n, from))) => Arrival::FromClient(from, buf[..n].to_vec()),
                    (Some(i), Ok((n, _))) => Arrival::FromUpstream(i, buf[..n].to_vec()),
                    // Timeouts, and ICMP errors (e.g. no upstream yet) reported
                    // on the connected socket: keep reading.
                    (_, Err(_)) => continue,
                };
                if tx.send(arrival).is_err() {
                    break;
                }
            }
        })
}
