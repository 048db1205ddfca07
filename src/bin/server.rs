//! `server`: the multi-threaded UDP echo server (thin wrapper over the library).
#![deny(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::flag;
use signal_hook::iterator::Signals;
use udp_packet_pool::clients::ClientsConfig;
use udp_packet_pool::crypto::SealedEchoFactory;
use udp_packet_pool::export;
use udp_packet_pool::guard::rate::RateConfig;
use udp_packet_pool::process::Pipeline;
use udp_packet_pool::server::{self, GuardConfig, ServerConfig};
use udp_packet_pool::service;
use udp_packet_pool::socket::BufferSizes;
use udp_packet_pool::sockperf::SockperfReply;
use udp_packet_pool::stderr;
use udp_packet_pool::udp_mem::UdpMem;
use udp_packet_pool::wire::framed::FramedReply;
use udp_packet_pool::wire::framed_stats::FramedStatsReply;
use udp_packet_pool::wire::stamp::{self, StampReflect};
use udp_packet_pool::wire::Protocol;
use udp_packet_pool::worker::IoMode;

#[path = "server/cli.rs"]
mod cli;
use cli::*;

fn main() -> ExitCode {
    // No path ends in a panic's exit code 101: a panic on this thread is
    // caught and reported as a run-time failure (1).
    let code = std::panic::catch_unwind(run).unwrap_or_else(|_| {
        stderr::line("server: internal error (panicked; see above)");
        1
    });
    // Bounded: a stderr nobody reads cannot hold the exit up.
    stderr::flush(stderr::STALL_LIMIT);
    ExitCode::from(code)
}

/// The server; returns the exit code. Everything it says on stderr goes
/// through [`stderr`]: never blocks, never panics.
fn run() -> u8 {
    let args = Args::parse();
    let level = if args.verbose { "info" } else { "warn" };
    // Through the stderr queue too: a warning or a -v line never blocks.
    stderr::init_logger(level);
    let port = args.port_pos.or(args.port).unwrap_or(8888);
    let cfg = ServerConfig {
        bind: SocketAddr::new(args.bind, port),
        threads: args.threads.map(usize::from).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }),
        reuseport: args.reuseport,
        pool_size: args.pool_size as usize,
        packet_size: args.packet_size as usize,
        batch: args.batch as usize,
        pin: args.pin,
        stats_interval: (args.stats_interval > 0.0)
            .then(|| Duration::from_secs_f64(args.stats_interval)),
        verbose: args.verbose,
        log_rate: args.log_rate,
        io: args.io,
        buffers: BufferSizes {
            recv: Some(capped_buffer("--rcvbuf", args.rcvbuf)),
            send: args.sndbuf.map(|n| capped_buffer("--sndbuf", n)),
        },
        send_deadline: Duration::from_millis(args.send_deadline),
        gro: !args.no_gro,
        capture: args
            .capture
            .clone()
            .map(|path| udp_packet_pool::capture::CaptureConfig {
                path,
                echoes: args.capture_echoes,
                queue: args.capture_queue as usize,
            }),
        clients: ClientsConfig {
            size: args.clients as usize,
            ttl: Duration::from_secs(args.client_ttl),
            admin: args.admin.clone(),
            framed_broadcast: false, // set below, with the protocol
        },
        publish: None,
        guard: GuardConfig {
            allow_privileged_ports: args.allow_privileged_ports,
            no_loop_breaker: args.no_loop_breaker,
            allow: args.allow.clone(),
            rate: args.rate_limit.map(|pps| RateConfig {
                pps,
                burst: args.rate_burst.unwrap_or(pps),
                prefix_v4: args.rate_prefix_v4,
                prefix_v6: args.rate_prefix_v6,
                table_size: args.rate_table_size as usize,
            }),
        },
    };
    let protocol = if args.sockperf {
        Protocol::Sockperf
    } else {
        args.protocol
    };
    if args.stamp_stateful && protocol != Protocol::Stamp {
        stderr::line("server: --stamp-stateful needs --protocol stamp");
        return 2;
    }
    if !args.admin.is_empty() && protocol != Protocol::Framed {
        stderr::line(
            "server: --admin needs --protocol framed (broadcasts are framed requests, type 0x03)",
        );
        return 2;
    }
    if !args.admin.is_empty() && args.io == IoMode::Uring {
        stderr::line(
            "server: --admin does not work with --io uring: broadcast copies need free pool buffers, and io_uring lends every free buffer to the kernel; use --io epoll (or blocking, spin)",
        );
        return 2;
    }
    let mut cfg = cfg;
    cfg.clients.framed_broadcast = protocol == Protocol::Framed;
    let sessions = args.stamp_stateful.then(|| {
        std::sync::Arc::new(std::sync::Mutex::new(stamp::Sessions::new(
            stamp::STATEFUL_SESSIONS,
        )))
    });
    let sealed = match args.psk_file.as_deref().map(SealedEchoFactory::from_file) {
        Some(Err(e)) => {
            stderr::line(format_args!("server: {e}"));
            return 2;
        }
        _ if args.psk_file.is_some() && protocol != Protocol::Echo => {
            stderr::line("server: --psk-file works with --protocol echo only (sealed datagrams carry no sockperf, framed or STAMP header)");
            return 2;
        }
        f => f.and_then(Result::ok),
    };
    let psk = sealed.is_some();
    let (cfg, published, endpoint) = match export::setup(cfg, protocol, args.metrics_listen) {
        Ok(x) => x,
        Err(e) => {
            stderr::line(format_args!("server: cannot start: {e}"));
            return 1;
        }
    };
    let pipeline = move |worker| match protocol {
        Protocol::Echo => match &sealed {
            Some(f) => Pipeline::echo().with(f.stage(worker)),
            None => Pipeline::echo(),
        },
        Protocol::Sockperf => Pipeline::echo().with(SockperfReply),
        Protocol::Framed => match &published {
            Some(p) => Pipeline::echo().with(FramedStatsReply::new(p.clone())),
            None => Pipeline::echo().with(FramedReply),
        },
        Protocol::Stamp => Pipeline::echo().with(match &sessions {
            Some(t) => StampReflect::stateful(t.clone()),
            None => StampReflect::stateless(),
        }),
    };
    let handle = match server::start_with(&cfg, pipeline) {
        Ok(h) => h,
        Err(e) => {
            stderr::line(format_args!("server: cannot start: {e}"));
            return 1;
        }
    };
    if let Some(why) = handle.io_fallback() {
        stderr::line(format_args!(
            "server: io_uring unavailable ({why}); falling back to --io epoll"
        ));
    }
    let cfg = ServerConfig {
        io: handle.io_mode(),
        ..cfg
    };
    // Startup ends with the "listening on" line: every worker runs
    // (start_with waits for them) and every signal handler is installed
    // before it, so a failure here is never preceded by it.
    // Signals: the first SIGINT/SIGTERM sets the stop flag; a second one
    // exits at once, decided inside the signal handler itself
    // (register_conditional_shutdown is registered first, so it only fires
    // once the flag is already set). SIGHUP asks for a summary.
    let stop = handle.stop_flag();
    let registered = (|| -> std::io::Result<()> {
        for sig in [SIGINT, SIGTERM] {
            flag::register_conditional_shutdown(sig, 130, stop.clone())?;
            flag::register(sig, stop.clone())?;
        }
        flag::register(SIGHUP, handle.dump_flag())?;
        Ok(())
    })();
    if let Err(e) = registered {
        stderr::line(format_args!(
            "server: cannot start: cannot install signal handlers: {e}"
        ));
        handle.stop();
        let _ = handle.join();
        return 1;
    }
    // Say so when a stop signal arrives: a thread blocked on signal-hook's
    // pipe (no polling, so it never wakes while the server runs).
    let mut notices = match Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            stderr::line(format_args!(
                "server: cannot start: cannot install signal handlers: {e}"
            ));
            handle.stop();
            let _ = handle.join();
            return 1;
        }
    };
    let notices_handle = notices.handle();
    let notice = std::thread::Builder::new()
        .name("notice".into())
        .spawn(move || {
            if notices.forever().next().is_some() {
                stderr::line("server: shutting down (signal again to exit at once)");
                service::stopping();
            }
        });
    let notice = match notice {
        Ok(t) => t,
        Err(e) => {
            stderr::line(format_args!(
                "server: cannot start: cannot start a thread: {e}"
            ));
            handle.stop();
            let _ = handle.join();
            return 1;
        }
    };
    if let Err(why) = handle.gro() {
        stderr::line(format_args!(
            "server: warning: {why}: running without GRO (one datagram per buffer)"
        ));
    }
    // Receive buffers are limits, not allocations: say at start when they
    // add up to what the host lets all UDP sockets hold together.
    if let Some(w) = UdpMem::read().and_then(|m| {
        m.warning(
            udp_packet_pool::io::page_size(),
            cfg.threads,
            cfg.reuseport,
            handle.recv_buffer() as u64,
        )
    }) {
        stderr::line(format_args!("server: warning: {w}"));
    }
    let listening = format!(
        "server: listening on {} ({} workers, {} socket{}, pool {} x {} bytes, batch {}, io {:?}, {}, rcvbuf {} bytes, memory {:.1} MiB, {} replies; {})",
        handle.local_addr(),
        cfg.threads,
        if cfg.reuseport {
            "SO_REUSEPORT"
        } else {
            "one shared"
        },
        if cfg.reuseport { "s" } else { "" },
        cfg.pool_size,
        if handle.gro() == Ok(true) {
            cfg.buffer_size()
        } else {
            cfg.packet_size
        },
        cfg.batch,
        cfg.io,
        match handle.gro() {
            Ok(true) => format!("GRO/GSO trains, datagrams up to {} bytes", cfg.packet_size),
            _ => "GRO off".to_string(),
        },
        handle.recv_buffer(),
        server::memory_needed(&cfg).unwrap_or(0) as f64 / (1024.0 * 1024.0),
        match protocol {
            Protocol::Echo if psk => "sealed echo (ChaCha20-Poly1305)",
            Protocol::Echo => "byte-exact echo",
            Protocol::Sockperf => "sockperf",
            Protocol::Framed => "framed",
            Protocol::Stamp if args.stamp_stateful => "STAMP stateful reflector",
            Protocol::Stamp => "STAMP stateless reflector",
        },
        guards_summary(&cfg.guard) + &clients_summary(&cfg.clients)
    );
    stderr::line(&listening);
    if let Some(m) = &endpoint {
        stderr::line(export::endpoint_line(m));
    }
    // Every worker serves and every handler is installed: tell systemd
    // (Type=notify), if it asked.
    service::ready(listening.trim_start_matches("server: "));
    let result = handle.join();
    notices_handle.close();
    let _ = notice.join();
    match result {
        Ok(mut report) => {
            // What the server's own stderr lines lost (a stalled or closed
            // stderr): given a bounded chance to drain first.
            stderr::flush(stderr::STALL_LIMIT);
            let lost = stderr::summary();
            report.stderr_lines_dropped = lost.dropped;
            report.stderr_problem = lost.problem;
            let mut out = std::io::stdout().lock();
            let written = if args.json {
                serde_json::to_writer_pretty(&mut out, &report)
                    .map_err(std::io::Error::other)
                    .and_then(|_| writeln!(out))
            } else {
                write!(out, "{report}")
            };
            if let Err(e) = written.and_then(|_| out.flush()) {
                stderr::line(format_args!("server: cannot write the report: {e}"));
                return 1;
            }
            if !report.worker_failures.is_empty() {
                for e in &report.worker_failures {
                    stderr::line(format_args!("server: {e}"));
                }
                stderr::line("server: stopped because a worker failed (the report above has everything counted until then)");
                return 1;
            }
            if !report.buffers_returned {
                stderr::line("server: some pool buffers were not returned");
                return 1;
            }
            0
        }
        Err(e) => {
            stderr::line(format_args!("server: {e}"));
            1
        }
    }
}
