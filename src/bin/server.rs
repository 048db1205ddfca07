//! `server`: the multi-threaded UDP echo server (thin wrapper over the library).
#![deny(unsafe_code)]

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
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
use udp_packet_pool::socket::{BufferSizes, MAX_BUFFER};
use udp_packet_pool::sockperf::SockperfReply;
use udp_packet_pool::stderr;
use udp_packet_pool::udp_mem::UdpMem;
use udp_packet_pool::wire::framed::FramedReply;
use udp_packet_pool::wire::framed_stats::FramedStatsReply;
use udp_packet_pool::wire::stamp::{self, StampReflect};
use udp_packet_pool::wire::Protocol;
use udp_packet_pool::worker::IoMode;

/// Multi-threaded UDP echo server with per-worker freelist packet pools.
///
/// Every datagram is echoed byte for byte (RFC 862) or counted under a named
/// drop reason. Latency is receive-to-echo-sent, measured from the kernel's
/// receive timestamp (SO_TIMESTAMPNS, so time queued in the socket counts)
/// when the kernel provides it, else from when the receive call returned;
/// the report says which ("kernel" or "user" clock).
///
/// Statistics lines go to stderr every --stats-interval seconds; the final
/// report goes to stdout on Ctrl+C / SIGTERM (a second Ctrl+C exits at
/// once). SIGHUP prints the since-start summary to stderr and keeps running.
///
/// Under systemd (Type=notify, NOTIFY_SOCKET set) it sends READY=1 with the
/// "listening on" line as STATUS= once every worker serves, and STOPPING=1
/// on SIGTERM/SIGINT (contrib/systemd/udp-echo.service).
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Examples:\n  server 8888\n  server --threads 4 --reuseport\n  server --port 0 --json > report.json\n  server --capture run.pcap --capture-echoes"
)]
struct Args {
    /// UDP port to listen on (same as --port; 0 lets the OS choose).
    #[arg(value_name = "PORT", conflicts_with = "port")]
    port_pos: Option<u16>,
    /// UDP port to listen on [default: 8888].
    #[arg(short, long)]
    port: Option<u16>,
    /// Address to bind: 0.0.0.0 for all IPv4, :: for IPv4 and IPv6 (dual stack).
    #[arg(short, long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Worker threads [default: number of cores].
    #[arg(short, long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// Give each worker its own SO_REUSEPORT socket (kernel spreads flows by 4-tuple hash); without it all workers share one socket.
    #[arg(long)]
    reuseport: bool,
    /// Pre-allocated packet buffers per worker.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pool_size: u32,
    /// Bytes per buffer: larger datagrams are dropped (counted as truncated), never echoed cut.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..=65536))]
    packet_size: u32,
    /// Datagrams per receive/send system call (recvmmsg/sendmmsg).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    batch: u16,
    /// Pin worker i to core i (wrapping when there are more workers than cores).
    #[arg(long)]
    pin: bool,
    /// Seconds between statistics lines on stderr, from 0.05 to 86400 (one day); 0 turns them off.
    #[arg(
        long,
        default_value_t = 1.0,
        value_name = "SECS",
        allow_negative_numbers = true,
        value_parser = parse_stats_interval
    )]
    stats_interval: f64,
    /// Print the final report as JSON on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Log each packet (sender, length, hex/ASCII preview), at most --log-rate lines/s per worker.
    #[arg(short, long)]
    verbose: bool,
    /// Packet log lines per second per worker with -v.
    #[arg(long, default_value_t = 20)]
    log_rate: u32,
    /// How workers wait: blocking (batched, default), epoll, spin (busy poll, one core per worker), or uring (io_uring multishot recvmsg into the pool's buffers; falls back to epoll, saying why, where io_uring is unavailable).
    #[arg(long, value_enum, default_value_t = IoMode::Blocking)]
    io: IoMode,
    /// Receive GRO trains (UDP_GRO: the kernel hands over several datagrams of one flow in one buffer) and echo each train with one UDP_SEGMENT (GSO) send. On by default where the kernel allows; each datagram of a train still counts, and is filtered, on its own. Buffers become 64 KiB to hold a train (pages are used only as far as written).
    #[arg(long, overrides_with = "no_gro")]
    gro: bool,
    /// Turn GRO off: one datagram per buffer of --packet-size bytes.
    #[arg(long, overrides_with = "gro")]
    no_gro: bool,
    /// What to answer. echo: every datagram back byte-exact (RFC 862). sockperf: like a sockperf server (sockperf's ping-pong, under-load and throughput clients can then measure this server): reply only to messages with CLIENT and PONG_REQUEST and without WARMUP, with CLIENT cleared; others are dropped as sockperf_no_reply (or malformed if shorter than 14 bytes). framed: the framed protocol with CRC-32C (README, src/wire/framed.rs): echo requests get echo replies; bad frames are dropped as bad_frame, reply frames as frame_no_reply; stats requests get one fragment of the counters as JSON, as long as the request (client --stats); other requests get an error reply no longer than them. stamp: an RFC 8762 STAMP Session-Reflector, unauthenticated mode (TWAMP-Light compatible): each test packet of at least 44 bytes is answered at its own length with the reflector packet (T2 = kernel receive time, T3 = when the reply is built, sender's TTL); shorter ones are dropped as malformed.
    #[arg(long, value_enum, default_value_t = Protocol::Echo)]
    protocol: Protocol,
    /// Same as --protocol sockperf.
    #[arg(long, conflicts_with = "protocol")]
    sockperf: bool,
    /// With --protocol stamp: stateful reflector, whose Sequence Number counts 0, 1, 2... per session (sender address and port; up to 4096 sessions in a table allocated at start, shared by all workers; a new session evicts the least recently seen of the 8 slots it may use). Default: stateless, the sender's Sequence Number copied.
    #[arg(long)]
    stamp_stateful: bool,
    /// SO_RCVBUF request in bytes (capped at 256 MiB); the kernel doubles it. With CAP_NET_ADMIN (root) it is forced past net.core.rmem_max (SO_RCVBUFFORCE), otherwise capped by it. A warning at start says when the buffers of all sockets (one per worker with --reuseport) add up to net.ipv4.udp_mem's limit for all UDP sockets of the host.
    #[arg(long, value_name = "BYTES", default_value_t = udp_packet_pool::socket::DEFAULT_RECV_BUFFER)]
    rcvbuf: usize,
    /// SO_SNDBUF request in bytes (capped at 256 MiB); the kernel doubles it (forced past net.core.wmem_max with CAP_NET_ADMIN). UDP does not count send buffers against net.ipv4.udp_mem. Default: the kernel's.
    #[arg(long, value_name = "BYTES")]
    sndbuf: Option<usize>,
    /// Echo datagrams from privileged source ports (below 1024) and 2049 too. Off by default: those are services (echo 7, chargen 19, DNS 53, NTP 123, NFS 2049...), and answering them lets a forged datagram start an endless loop between two services. Datagrams from the server's own port, port 0, and multicast, broadcast or unspecified sources are refused always.
    #[arg(long)]
    allow_privileged_ports: bool,
    /// Turn off the loop breaker, which stops answering a peer that keeps sending back the payload it was just answered with (another echo service on an unprivileged port, looping with this one): 64 times in a row within 1 ms of the answer makes it suspect, it is not answered for 10 ms (dropped as loop), and if it kept sending meanwhile it is a client and left alone for 10 s. See README, Security.
    #[arg(long)]
    no_loop_breaker: bool,
    /// Echo only to senders in this network (CIDR, e.g. 192.0.2.0/24 or 2001:db8::/32); repeat for several. Others are dropped as not_allowed. Default: everyone.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    allow: Vec<ipnet::IpNet>,
    /// Per source prefix (see --rate-prefix-v4/-v6), answer at most PPS datagrams per second after a burst of --rate-burst; the rest are dropped as rate_limited. Memory is fixed (--rate-table-size). With --reuseport, sockets are steered by source prefix so each prefix has one limit whatever the workers. Default: no limit.
    #[arg(long, value_name = "PPS", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    rate_limit: Option<u64>,
    /// Datagrams a prefix may send at once before --rate-limit applies [default: the --rate-limit value, one second's worth].
    #[arg(long, value_name = "N", requires = "rate_limit", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    rate_burst: Option<u64>,
    /// IPv4 prefix length that counts as one source for --rate-limit (BIND's default).
    #[arg(long, value_name = "BITS", default_value_t = 24, value_parser = clap::value_parser!(u8).range(0..=32))]
    rate_prefix_v4: u8,
    /// IPv6 prefix length that counts as one source for --rate-limit (BIND's default).
    #[arg(long, value_name = "BITS", default_value_t = 56, value_parser = clap::value_parser!(u8).range(0..=128))]
    rate_prefix_v6: u8,
    /// Buckets in the --rate-limit table (8 bytes each, allocated at start, rounded up to a power of two); a prefix colliding with another takes its bucket over.
    #[arg(long, value_name = "N", default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    rate_table_size: u64,
    /// Longest an echo may wait in a worker's send backlog while the socket refuses it (send buffer or device queue full); older ones are dropped oldest first and counted as send_deadline.
    #[arg(long, value_name = "MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    send_deadline: u64,
    /// Encrypted echo (with --protocol echo only): answer only datagrams sealed with ChaCha20-Poly1305 under this pre-shared key (README, "Encrypted echo"), with the same plaintext sealed under the server's own nonce, at the same length. Malformed, forged (tag fails, wrong key), replayed and reply-direction datagrams are dropped as malformed, bad_seal, replayed and sealed_reply. FILE: 64 hex digits and an optional newline, mode 600 (e.g. head -c32 /dev/urandom | xxd -p -c64 > key; chmod 600 key).
    #[arg(long, value_name = "FILE")]
    psk_file: Option<std::path::PathBuf>,
    /// Write every datagram received (except truncated ones) to this pcap file, created or truncated at start; tshark and Wireshark open it. Workers never wait for the disk: what the writer cannot keep up with is counted as capture_dropped.
    #[arg(long, value_name = "FILE.pcap")]
    capture: Option<std::path::PathBuf>,
    /// With --capture: also write each echo (reply), as it is sent, from the server's address to the peer.
    #[arg(long, requires = "capture")]
    capture_echoes: bool,
    /// With --capture: datagrams that may wait for the writer (each takes --packet-size bytes, allocated at start); more are not captured (capture_dropped).
    #[arg(long, value_name = "N", requires = "capture", default_value_t = udp_packet_pool::capture::DEFAULT_QUEUE as u32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    capture_queue: u32,
    /// Clients (address and port) each worker tracks: packets, bytes, first and last seen, answered or not, in a table allocated at start (sets of 8; a new client takes the idlest entry of its set). The statistics line shows the active clients, the report the top 10 talkers. 0 turns tracking off.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(0..=16_777_216))]
    clients: u32,
    /// A client not seen for this many seconds is no longer active: not counted, not listed, not sent broadcasts.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    client_ttl: u64,
    /// With --protocol framed: relay broadcast frames (type 0x03) from senders in this network (CIDR or one address; repeat for several) to every active client whose last datagram was answered, as broadcast message frames (type 0x83); the sender gets an echo reply of its frame as the ack. Broadcasts from anyone else get an error reply of their own length. Not with --io uring. Default: nobody.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    admin: Vec<ipnet::IpNet>,
    /// Serve the counters in the Prometheus text format at http://ADDR/metrics (e.g. 127.0.0.1:9100; port 0 lets the OS choose, the "metrics endpoint" line after "listening on" says which). Plain HTTP, no authentication: anyone who can reach ADDR reads the counters, so bind to loopback or a management network. Figures are at most 200 ms old.
    #[arg(long, value_name = "ADDR", value_parser = export::parse_listen)]
    metrics_listen: Option<SocketAddr>,
}

/// The guards line of the listening message.
fn guards_summary(g: &GuardConfig) -> String {
    let mut s = String::from(if g.allow_privileged_ports {
        "loop guard: bad sources (privileged ports allowed)"
    } else {
        "loop guard: bad sources and ports < 1024, 2049"
    });
    if !g.allow.is_empty() {
        let nets: Vec<String> = g.allow.iter().map(|n| n.to_string()).collect();
        s.push_str(&format!(", allow {}", nets.join(" ")));
    }
    if let Some(r) = g.rate {
        s.push_str(&format!(
            ", rate limit {}/s burst {} per /{} and /{}",
            r.pps, r.burst, r.prefix_v4, r.prefix_v6
        ));
    }
    s.push_str(if g.no_loop_breaker {
        ", loop breaker off"
    } else {
        ", loop breaker"
    });
    s
}

/// The clients part of the listening message.
fn clients_summary(c: &ClientsConfig) -> String {
    let mut s = match c.size {
        0 => "; client tracking off".to_string(),
        n => format!("; clients {n} per worker, ttl {} s", c.ttl.as_secs()),
    };
    if c.framed_broadcast {
        let nets: Vec<String> = c.admin.iter().map(|n| n.to_string()).collect();
        s.push_str(&match nets.is_empty() {
            true => ", broadcasts refused (no --admin)".to_string(),
            false => format!(", broadcasts from admin {}", nets.join(" ")),
        });
    }
    s
}

/// Shortest `--stats-interval` (more often floods stderr).
const STATS_INTERVAL_MIN: f64 = 0.05;
/// Longest `--stats-interval`: one day (any longer is as good as off).
const STATS_INTERVAL_MAX: f64 = 86_400.0;

/// Parses `--stats-interval`: 0 (off) or seconds within the range, so the
/// value always converts to a `Duration` and the ticks never overflow.
fn parse_stats_interval(s: &str) -> Result<f64, String> {
    let range = format!(
        "give 0 (off) or seconds from {STATS_INTERVAL_MIN} to {STATS_INTERVAL_MAX} (one day)"
    );
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds: {range}"))?;
    if v == 0.0 || (STATS_INTERVAL_MIN..=STATS_INTERVAL_MAX).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s} is out of range: {range}"))
    }
}

/// A socket buffer request capped at [`MAX_BUFFER`], with a warning on
/// stderr naming the cap when it had to be.
fn capped_buffer(flag: &str, n: usize) -> usize {
    if n <= MAX_BUFFER {
        return n;
    }
    stderr::line(format_args!(
        "server: warning: {flag} {n} is above the cap of {MAX_BUFFER} bytes (256 MiB) per socket; using {MAX_BUFFER}"
    ));
    MAX_BUFFER
}

/// Parses `--allow`: a network in CIDR form, or a single address.
fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| {
            format!("'{s}' is not a network: give an address with a prefix length, e.g. 192.0.2.0/24 or 2001:db8::/32 (or one address)")
        })
}

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
