//! Wiring: binds the sockets, builds one [`Worker`] per thread (each with its
//! own pool), starts the metrics thread, and stops and joins them all.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use ipnet::IpNet;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::backlog::DEFAULT_SEND_DEADLINE;
use crate::capture::{self, Capture, CaptureConfig};
use crate::clients::{Broadcast, ClientDirectory, ClientTrack, ClientsConfig};
use crate::counters::{Counters, SharedCounters};
use crate::guard::allow::AllowList;
use crate::guard::dest::DestGuard;
use crate::guard::loop_breaker::{LoopBreaker, LoopProbes};
use crate::guard::rate::{RateConfig, RateLimit, RateTable, TopLimited};
use crate::guard::source::SourceGuard;
use crate::logging::{self, LogThread, PacketLog};
use crate::metrics::{self, MetricsConfig};
use crate::packet::DEFAULT_PACKET_SIZE;
use crate::process::Pipeline;
use crate::report::Report;
use crate::samples;
use crate::socket::{self, BufferSizes};
use crate::worker::{IoMode, Worker};

mod memory;
use memory::check_memory;
pub use memory::memory_needed;

/// Server settings (the `server` binary's flags).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address and port to bind (port 0: the OS picks one).
    pub bind: SocketAddr,
    /// Worker threads.
    pub threads: usize,
    /// One SO_REUSEPORT socket per worker instead of one shared socket.
    pub reuseport: bool,
    /// Buffers in each worker's pool.
    pub pool_size: usize,
    /// Bytes per buffer: the largest datagram echoed.
    pub packet_size: usize,
    /// Datagrams per receive call.
    pub batch: usize,
    /// Pin worker i to core i (wrapping).
    pub pin: bool,
    /// Statistics line interval; `None` for none.
    pub stats_interval: Option<Duration>,
    /// Log every packet (rate-limited).
    pub verbose: bool,
    /// Packet log lines per second per worker with `verbose`.
    pub log_rate: u32,
    /// How workers wait for datagrams.
    pub io: IoMode,
    /// Kernel socket buffer requests.
    pub buffers: BufferSizes,
    /// Longest an echo may wait in a worker's send backlog.
    pub send_deadline: Duration,
    /// Protection stages run before any reply stage.
    pub guard: GuardConfig,
    /// Receive GRO trains and echo them as GSO trains (`--gro`, where the
    /// kernel allows).
    pub gro: bool,
    /// Write received datagrams (and echoes) to a pcap file (`--capture`).
    pub capture: Option<CaptureConfig>,
    /// Client tracking and the framed broadcast (`--clients`, `--admin`).
    pub clients: ClientsConfig,
    /// Publish the counters for `--metrics-listen` and the framed stats
    /// reply (`crate::export`); `None`: nobody reads them.
    pub publish: Option<Arc<crate::export::Published>>,
}

/// Bytes per pool buffer with GRO: a whole coalesced train (at most 64 KiB).
pub const GRO_BUFFER: usize = 65536;

impl ServerConfig {
    /// Bytes per pool buffer: `packet_size`, or room for a GRO train.
    pub fn buffer_size(&self) -> usize {
        if self.gro {
            self.packet_size.max(GRO_BUFFER)
        } else {
            self.packet_size
        }
    }
}

/// What the [`guard`](crate::guard) stages refuse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardConfig {
    /// Lift the privileged-port rule of the loop guard (`--allow-privileged-ports`).
    pub allow_privileged_ports: bool,
    /// Turn the loop breaker off (`--no-loop-breaker`).
    pub no_loop_breaker: bool,
    /// Echo only to these networks (`--allow`); empty: everyone.
    pub allow: Vec<IpNet>,
    /// Per-prefix rate limit (`--rate-limit`); `None`: no limit.
    pub rate: Option<RateConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "0.0.0.0:8888".parse().expect("valid address"),
            threads: thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            reuseport: false,
            pool_size: 1000,
            packet_size: DEFAULT_PACKET_SIZE,
            batch: 32,
            pin: false,
            stats_interval: Some(Duration::from_secs(1)),
            verbose: false,
            log_rate: 20,
            io: IoMode::Blocking,
            buffers: BufferSizes {
                recv: Some(socket::DEFAULT_RECV_BUFFER),
                send: None,
            },
            send_deadline: DEFAULT_SEND_DEADLINE,
            guard: GuardConfig::default(),
            gro: true,
            capture: None,
            clients: ClientsConfig::default(),
            publish: None,
        }
    }
}

/// A running server.
pub struct ServerHandle {
    local_addr: SocketAddr,
    recv_buffer: usize,
    stop: Arc<AtomicBool>,
    dump: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Result<Counters, String>>>,
    metrics: JoinHandle<Report>,
    /// The `-v` logging thread (only with `verbose`).
    log: Option<LogThread>,
    /// GRO in use, or why the kernel refused it.
    gro: Result<bool, String>,
    /// The I/O model the workers run, and why it differs from the one
    /// asked for (io_uring unavailable), if it does.
    io: IoMode,
    io_fallback: Option<String>,
    /// The `--capture` writer, joined after the workers.
    capture: Option<Capture>,
}

/// Binds and starts everything; returns once every worker thread runs.
pub fn start(cfg: &ServerConfig) -> io::Result<ServerHandle> {
    start_with(cfg, |_| Pipeline::echo())
}

/// Like [`start`], with the per-packet pipeline of each worker built by
/// `pipeline(worker_index)`. The guard stages (`cfg.guard`) run before it
/// and the `-v` logger after it.
pub fn start_with(
    cfg: &ServerConfig,
    mut pipeline: impl FnMut(usize) -> Pipeline,
) -> io::Result<ServerHandle> {
    let (io, io_fallback) = resolve_io(cfg.io);
    let cfg = &ServerConfig { io, ..cfg.clone() };
    if cfg.io == IoMode::Uring && cfg.pool_size > crate::io::uring::MAX_POOL {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--io uring takes at most {} buffers per worker (--pool-size {}): the kernel's buffer ring limit",
                crate::io::uring::MAX_POOL,
                cfg.pool_size
            ),
        ));
    }
    if cfg.threads == 0 || cfg.pool_size == 0 || cfg.batch == 0 || cfg.packet_size == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "threads, pool size, batch and packet size must all be at least 1",
        ));
    }
    // Refuses what cannot fit; GRO off (said in the listening warning)
    // where only its larger buffers do not.
    let no_room_for_gro = check_memory(cfg)?;
    let plain;
    let cfg = match &no_room_for_gro {
        None => cfg,
        Some(_) => {
            plain = ServerConfig {
                gro: false,
                ..cfg.clone()
            };
            &plain
        }
    };
    let sockets = socket::bind_workers(cfg.bind, cfg.threads, cfg.reuseport, cfg.buffers)?;
    let local_addr = sockets[0].local_addr()?;
    // The metrics thread reads each distinct socket's drop counter through
    // its own handle, which also keeps the socket open for the final read.
    let distinct = if cfg.reuseport { sockets.len() } else { 1 };
    let drop_counters = sockets[..distinct]
        .iter()
        .map(|s| s.try_clone())
        .collect::<io::Result<Vec<_>>>()?;
    // One rate table for all workers; with --reuseport, one prefix is also
    // steered to one socket, so its bucket is never contended.
    let rate = cfg.guard.rate.map(|r| {
        (
            Arc::new(RateTable::new(r)),
            Arc::new(TopLimited::new(cfg.threads)),
        )
    });
    if let (Some(r), true) = (cfg.guard.rate, cfg.reuseport && cfg.threads > 1) {
        crate::io::reuseport::steer_by_prefix(
            sockets[0].as_raw_fd(),
            cfg.threads as u32,
            r.prefix_v4,
            r.prefix_v6,
        )
        .map_err(|e| io::Error::new(e.kind(), format!("cannot steer --reuseport sockets by source prefix (needed with --rate-limit): {e}")))?;
    }
    let recv_buffer = socket2::SockRef::from(&sockets[0]).recv_buffer_size()?;
    // GRO where asked and the kernel has it; otherwise buffers of
    // `packet_size` and one datagram per buffer.
    let gro = match cfg.gro {
        false => Ok(false),
        true => crate::io::enable_udp_gro(sockets[0].as_raw_fd())
            .map(|_| true)
            .map_err(|e| format!("UDP_GRO refused by the kernel ({e})")),
    };
    let gro = match no_room_for_gro {
        Some(why) => Err(why),
        None => gro,
    };
    let gro_on = gro == Ok(true);
    let stop = Arc::new(AtomicBool::new(false));
    let dump = Arc::new(AtomicBool::new(false));
    let (sinks, source) = samples::channels(cfg.threads);
    let cores = if cfg.pin {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut shared = Vec::with_capacity(cfg.threads);
    let mut workers = Vec::with_capacity(cfg.threads);
    let mut kernel_clock = true;
    let log = if cfg.verbose {
        Some(LogThread::spawn(logging::QUEUE_LINES)?)
    } else {
        None
    };
    let probes = LoopProbes::new(crate::io::now_realtime_ns());
    let mut capture = cfg
        .capture
        .as_ref()
        .map(|c| Capture::start(c, cfg.packet_size, local_addr))
        .transpose()?;
    let tracked = &cfg.clients;
    let directory = (tracked.size > 0)
        .then(|| ClientDirectory::new(cfg.threads, tracked.size, tracked.ttl.as_nanos() as u64));
    let broadcast_seq = Arc::new(std::sync::atomic::AtomicU32::new(0));
    for (id, (sock, sink)) in sockets.into_iter().zip(sinks).enumerate() {
        let counters = Arc::new(SharedCounters::default());
        shared.push(counters.clone());
        let mut p = capture::first_stage(capture.as_ref())
            .with(SourceGuard::new(
                local_addr.port(),
                cfg.guard.allow_privileged_ports,
            ))
            .with(DestGuard);
        // Every sender past the loop and destination guards is a client,
        // refused or not (the final verdict says whether it was answered).
        if let Some(d) = &directory {
            p = p.with(ClientTrack::new(d.clone(), id));
        }
        if !cfg.guard.allow.is_empty() {
            p = p.with(AllowList::new(cfg.guard.allow.clone()));
        }
        if let Some((table, top)) = &rate {
            p = p.with(RateLimit::new(table.clone(), top.clone(), id));
        }
        // Last of the guards: it must only see datagrams that are answered.
        if !cfg.guard.no_loop_breaker {
            p = p.with(LoopBreaker::new(probes.clone()));
        }
        if tracked.framed_broadcast {
            let (admin, seq) = (tracked.admin.clone(), broadcast_seq.clone());
            let b = Broadcast::new(admin, directory.clone(), seq, cfg.packet_size);
            p = p.with(b);
        }
        p = p.then(pipeline(id));
        if let Some(log) = &log {
            p = p.with(PacketLog::new(id, cfg.log_rate, log.queue()));
        }
        p = capture::last_stage(p, capture.as_ref());
        let buffer = if gro_on {
            cfg.buffer_size()
        } else {
            cfg.packet_size
        };
        let pool = Worker::pool_for(cfg.io, cfg.pool_size, buffer);
        let mut w = Worker::new(
            id,
            sock,
            cfg.io,
            pool,
            cfg.batch,
            p,
            sink,
            counters,
            stop.clone(),
        )?;
        w.set_send_deadline(cfg.send_deadline);
        if gro_on {
            w.enable_gro(cfg.packet_size)?;
        }
        kernel_clock &= w.kernel_clock();
        workers.push(w);
    }
    if let Some(c) = &mut capture {
        c.seal();
    }
    // Each worker says it runs; start_with returns only once all have, so
    // "listening on" (printed after it) means every worker is serving.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let handles = workers
        .into_iter()
        .map(|w| {
            let core = (!cores.is_empty()).then(|| cores[w.id() % cores.len()]);
            let stop = stop.clone();
            let ready = ready_tx.clone();
            thread::Builder::new()
                .name(format!("worker-{}", w.id()))
                .spawn(move || {
                    if let Some(c) = core {
                        if !core_affinity::set_for_current(c) {
                            log::warn!("worker {}: could not pin to core {}", w.id(), c.id);
                        }
                    }
                    let id = w.id();
                    let _ = ready.send(());
                    drop(ready);
                    // A panic must not leave the other workers running: it
                    // is caught here, named, and stops the server like a
                    // fatal socket error does.
                    let r = match panic::catch_unwind(AssertUnwindSafe(|| w.run())) {
                        Ok(Ok(c)) => Ok(c),
                        Ok(Err(e)) => Err(format!("worker {id}: {e}")),
                        Err(payload) => Err(format!(
                            "worker {id} panicked: {}",
                            panic_message(payload.as_ref())
                        )),
                    };
                    if let Err(e) = &r {
                        // Stop first: the others stop whatever the logger does.
                        stop.store(true, Ordering::Relaxed);
                        log::error!("{e}; stopping every worker");
                    }
                    r
                })
        })
        .collect::<io::Result<Vec<_>>>()?;
    drop(ready_tx);
    for _ in 0..handles.len() {
        // Err: every worker thread ended without saying so (cannot happen
        // short of a panic before its loop, which join() then reports).
        if ready_rx.recv().is_err() {
            break;
        }
    }
    let mcfg = MetricsConfig {
        interval: cfg.stats_interval,
        workers: shared,
        sockets: drop_counters,
        rate: rate.clone(),
        shared_socket: !cfg.reuseport,
        kernel_clock,
        dump_now: dump.clone(),
        capture: capture.as_ref().map(Capture::counters),
        clients: directory,
        publish: cfg.publish.clone(),
    };
    let metrics = thread::Builder::new()
        .name("metrics".into())
        .spawn(move || metrics::run(mcfg, source))?;
    Ok(ServerHandle {
        local_addr,
        recv_buffer,
        stop,
        dump,
        workers: handles,
        metrics,
        log,
        gro,
        io,
        io_fallback,
        capture,
    })
}

/// `--io uring` where io_uring cannot run falls back to `--io epoll` (the
/// other readiness-driven, non-blocking model), with the reason.
fn resolve_io(io: IoMode) -> (IoMode, Option<String>) {
    match io {
        IoMode::Uring => match crate::io::uring::probe() {
            Ok(()) => (IoMode::Uring, None),
            Err(why) => (IoMode::Epoll, Some(why)),
        },
        other => (other, None),
    }
}

impl ServerHandle {
    /// The address the server really bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// True when workers receive GRO trains; `Err` says why the kernel
    /// refused `UDP_GRO` (the server then runs without it).
    pub fn gro(&self) -> Result<bool, &str> {
        self.gro.as_ref().copied().map_err(|e| e.as_str())
    }

    /// The kernel's receive buffer size per socket (`SO_RCVBUF` as read back).
    pub fn recv_buffer(&self) -> usize {
        self.recv_buffer
    }

    /// The I/O model the workers run (`epoll` after a fallback from `uring`).
    pub fn io_mode(&self) -> IoMode {
        self.io
    }

    /// Why `--io uring` fell back to `epoll`, if it did.
    pub fn io_fallback(&self) -> Option<&str> {
        self.io_fallback.as_deref()
    }

    /// Asks every worker to finish (each notices within 100 ms).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// The flag [`ServerHandle::stop`] sets, for signal handlers.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Setting this flag prints the since-start summary on stderr (SIGHUP).
    pub fn dump_flag(&self) -> Arc<AtomicBool> {
        self.dump.clone()
    }

    /// True once a stop was asked for (or a worker failed).
    pub fn is_stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Waits for every thread and returns the final report. Workers that
    /// failed are named in [`Report::worker_failures`] (the report still
    /// holds everything counted); `Err` only if the metrics thread died.
    pub fn join(self) -> io::Result<Report> {
        let mut failures = Vec::new();
        for h in self.workers {
            match h.join() {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => failures.push(e),
                Err(_) => failures.push("a worker thread died".into()),
            }
        }
        let mut report = self
            .metrics
            .join()
            .map_err(|_| io::Error::other("the metrics thread panicked"))?;
        report.worker_failures = failures;
        // The workers' capture stages are gone: the writer drains and ends.
        report.capture = self.capture.map(Capture::finish);
        // Last: the workers (and their log queue ends) are gone. A log thread
        // stuck on a stderr nobody reads is left behind, not waited for.
        if let Some(log) = self.log {
            let s = log.finish(logging::STALL_LIMIT);
            report.log_lines_dropped = s.lost();
        }
        Ok(report)
    }

    /// Stops and joins.
    pub fn shutdown(self) -> io::Result<Report> {
        self.stop();
        self.join()
    }
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}
