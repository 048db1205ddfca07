//! The `server` binary's command line: its flags (`Args`, clap), their
//! parsers, and the summaries the listening line prints.

use std::net::{IpAddr, SocketAddr};

use clap::Parser;
use udp_packet_pool::clients::ClientsConfig;
use udp_packet_pool::export;
use udp_packet_pool::server::GuardConfig;
use udp_packet_pool::socket::MAX_BUFFER;
use udp_packet_pool::stderr;
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
pub(crate) struct Args {
    /// UDP port to listen on (same as --port; 0 lets the OS choose).
    #[arg(value_name = "PORT", conflicts_with = "port")]
    pub(crate) port_pos: Option<u16>,
    /// UDP port to listen on [default: 8888].
    #[arg(short, long)]
    pub(crate) port: Option<u16>,
    /// Address to bind: 0.0.0.0 for all IPv4, :: for IPv4 and IPv6 (dual stack).
    #[arg(short, long, default_value = "0.0.0.0")]
    pub(crate) bind: IpAddr,
    /// Worker threads [default: number of cores].
    #[arg(short, long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) threads: Option<u16>,
    /// Give each worker its own SO_REUSEPORT socket (kernel spreads flows by 4-tuple hash); without it all workers share one socket.
    #[arg(long)]
    pub(crate) reuseport: bool,
    /// Pre-allocated packet buffers per worker.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub(crate) pool_size: u32,
    /// Bytes per buffer: larger datagrams are dropped (counted as truncated), never echoed cut.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub(crate) packet_size: u32,
    /// Datagrams per receive/send system call (recvmmsg/sendmmsg).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) batch: u16,
    /// Pin worker i to core i (wrapping when there are more workers than cores).
    #[arg(long)]
    pub(crate) pin: bool,
    /// Seconds between statistics lines on stderr, from 0.05 to 86400 (one day); 0 turns them off.
    #[arg(
        long,
        default_value_t = 1.0,
        value_name = "SECS",
        allow_negative_numbers = true,
        value_parser = parse_stats_interval
    )]
    pub(crate) stats_interval: f64,
    /// Print the final report as JSON on stdout instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Log each packet (sender, length, hex/ASCII preview), at most --log-rate lines/s per worker.
    #[arg(short, long)]
    pub(crate) verbose: bool,
    /// Packet log lines per second per worker with -v.
    #[arg(long, default_value_t = 20)]
    pub(crate) log_rate: u32,
    /// How workers wait: blocking (batched, default), epoll, spin (busy poll, one core per worker), or uring (io_uring multishot recvmsg into the pool's buffers; falls back to epoll, saying why, where io_uring is unavailable).
    #[arg(long, value_enum, default_value_t = IoMode::Blocking)]
    pub(crate) io: IoMode,
    /// Receive GRO trains (UDP_GRO: the kernel hands over several datagrams of one flow in one buffer) and echo each train with one UDP_SEGMENT (GSO) send. On by default where the kernel allows; each datagram of a train still counts, and is filtered, on its own. Buffers become 64 KiB to hold a train (pages are used only as far as written).
    #[arg(long, overrides_with = "no_gro")]
    pub(crate) gro: bool,
    /// Turn GRO off: one datagram per buffer of --packet-size bytes.
    #[arg(long, overrides_with = "gro")]
    pub(crate) no_gro: bool,
    /// What to answer. echo: every datagram back byte-exact (RFC 862). sockperf: like a sockperf server (sockperf's ping-pong, under-load and throughput clients can then measure this server): reply only to messages with CLIENT and PONG_REQUEST and without WARMUP, with CLIENT cleared; others are dropped as sockperf_no_reply (or malformed if shorter than 14 bytes). framed: the framed protocol with CRC-32C (README, src/wire/framed.rs): echo requests get echo replies; bad frames are dropped as bad_frame, reply frames as frame_no_reply; stats requests get one fragment of the counters as JSON, as long as the request (client --stats); other requests get an error reply no longer than them. stamp: an RFC 8762 STAMP Session-Reflector, unauthenticated mode (TWAMP-Light compatible): each test packet of at least 44 bytes is answered at its own length with the reflector packet (T2 = kernel receive time, T3 = when the reply is built, sender's TTL); shorter ones are dropped as malformed.
    #[arg(long, value_enum, default_value_t = Protocol::Echo)]
    pub(crate) protocol: Protocol,
    /// Same as --protocol sockperf.
    #[arg(long, conflicts_with = "protocol")]
    pub(crate) sockperf: bool,
    /// With --protocol stamp: stateful reflector, whose Sequence Number counts 0, 1, 2... per session (sender address and port; up to 4096 sessions in a table allocated at start, shared by all workers; a new session evicts the least recently seen of the 8 slots it may use). Default: stateless, the sender's Sequence Number copied.
    #[arg(long)]
    pub(crate) stamp_stateful: bool,
    /// SO_RCVBUF request in bytes (capped at 256 MiB); the kernel doubles it. With CAP_NET_ADMIN (root) it is forced past net.core.rmem_max (SO_RCVBUFFORCE), otherwise capped by it. A warning at start says when the buffers of all sockets (one per worker with --reuseport) add up to net.ipv4.udp_mem's limit for all UDP sockets of the host.
    #[arg(long, value_name = "BYTES", default_value_t = udp_packet_pool::socket::DEFAULT_RECV_BUFFER)]
    pub(crate) rcvbuf: usize,
    /// SO_SNDBUF request in bytes (capped at 256 MiB); the kernel doubles it (forced past net.core.wmem_max with CAP_NET_ADMIN). UDP does not count send buffers against net.ipv4.udp_mem. Default: the kernel's.
    #[arg(long, value_name = "BYTES")]
    pub(crate) sndbuf: Option<usize>,
    /// Echo datagrams from privileged source ports (below 1024) and 2049 too. Off by default: those are services (echo 7, chargen 19, DNS 53, NTP 123, NFS 2049...), and answering them lets a forged datagram start an endless loop between two services. Datagrams from the server's own port, port 0, and multicast, broadcast or unspecified sources are refused always.
    #[arg(long)]
    pub(crate) allow_privileged_ports: bool,
    /// Turn off the loop breaker, which stops answering a peer that keeps sending back the payload it was just answered with (another echo service on an unprivileged port, looping with this one): 64 times in a row within 1 ms of the answer makes it suspect, it is not answered for 10 ms (dropped as loop), and if it kept sending meanwhile it is a client and left alone for 10 s. See README, Security.
    #[arg(long)]
    pub(crate) no_loop_breaker: bool,
    /// Echo only to senders in this network (CIDR, e.g. 192.0.2.0/24 or 2001:db8::/32); repeat for several. Others are dropped as not_allowed. Default: everyone.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub(crate) allow: Vec<ipnet::IpNet>,
    /// Per source prefix (see --rate-prefix-v4/-v6), answer at most PPS datagrams per second after a burst of --rate-burst; the rest are dropped as rate_limited. Memory is fixed (--rate-table-size). With --reuseport, sockets are steered by source prefix so each prefix has one limit whatever the workers. Default: no limit.
    #[arg(long, value_name = "PPS", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) rate_limit: Option<u64>,
    /// Datagrams a prefix may send at once before --rate-limit applies [default: the --rate-limit value, one second's worth].
    #[arg(long, value_name = "N", requires = "rate_limit", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub(crate) rate_burst: Option<u64>,
    /// IPv4 prefix length that counts as one source for --rate-limit (BIND's default).
    #[arg(long, value_name = "BITS", default_value_t = 24, value_parser = clap::value_parser!(u8).range(0..=32))]
    pub(crate) rate_prefix_v4: u8,
    /// IPv6 prefix length that counts as one source for --rate-limit (BIND's default).
    #[arg(long, value_name = "BITS", default_value_t = 56, value_parser = clap::value_parser!(u8).range(0..=128))]
    pub(crate) rate_prefix_v6: u8,
    /// Buckets in the --rate-limit table (8 bytes each, allocated at start, rounded up to a power of two); a prefix colliding with another takes its bucket over.
    #[arg(long, value_name = "N", default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    pub(crate) rate_table_size: u64,
    /// Longest an echo may wait in a worker's send backlog while the socket refuses it (send buffer or device queue full); older ones are dropped oldest first and counted as send_deadline.
    #[arg(long, value_name = "MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub(crate) send_deadline: u64,
    /// Encrypted echo (with --protocol echo only): answer only datagrams sealed with ChaCha20-Poly1305 under this pre-shared key (README, "Encrypted echo"), with the same plaintext sealed under the server's own nonce, at the same length. Malformed, forged (tag fails, wrong key), replayed and reply-direction datagrams are dropped as malformed, bad_seal, replayed and sealed_reply. FILE: 64 hex digits and an optional newline, mode 600 (e.g. head -c32 /dev/urandom | xxd -p -c64 > key; chmod 600 key).
    #[arg(long, value_name = "FILE")]
    pub(crate) psk_file: Option<std::path::PathBuf>,
    /// Write every datagram received (except truncated ones) to this pcap file, created or truncated at start; tshark and Wireshark open it. Workers never wait for the disk: what the writer cannot keep up with is counted as capture_dropped.
    #[arg(long, value_name = "FILE.pcap")]
    pub(crate) capture: Option<std::path::PathBuf>,
    /// With --capture: also write each echo (reply), as it is sent, from the server's address to the peer.
    #[arg(long, requires = "capture")]
    pub(crate) capture_echoes: bool,
    /// With --capture: datagrams that may wait for the writer (each takes --packet-size bytes, allocated at start); more are not captured (capture_dropped).
    #[arg(long, value_name = "N", requires = "capture", default_value_t = udp_packet_pool::capture::DEFAULT_QUEUE as u32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) capture_queue: u32,
    /// Clients (address and port) each worker tracks: packets, bytes, first and last seen, answered or not, in a table allocated at start (sets of 8; a new client takes the idlest entry of its set). The statistics line shows the active clients, the report the top 10 talkers. 0 turns tracking off.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(0..=16_777_216))]
    pub(crate) clients: u32,
    /// A client not seen for this many seconds is no longer active: not counted, not listed, not sent broadcasts.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) client_ttl: u64,
    /// With --protocol framed: relay broadcast frames (type 0x03) from senders in this network (CIDR or one address; repeat for several) to every active client whose last datagram was answered, as broadcast message frames (type 0x83); the sender gets an echo reply of its frame as the ack. Broadcasts from anyone else get an error reply of their own length. Not with --io uring. Default: nobody.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub(crate) admin: Vec<ipnet::IpNet>,
    /// Serve the counters in the Prometheus text format at http://ADDR/metrics (e.g. 127.0.0.1:9100; port 0 lets the OS choose, the "metrics endpoint" line after "listening on" says which). Plain HTTP, no authentication: anyone who can reach ADDR reads the counters, so bind to loopback or a management network. Figures are at most 200 ms old.
    #[arg(long, value_name = "ADDR", value_parser = export::parse_listen)]
    pub(crate) metrics_listen: Option<SocketAddr>,
}

/// The guards line of the listening message.
pub(crate) fn guards_summary(g: &GuardConfig) -> String {
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
pub(crate) fn clients_summary(c: &ClientsConfig) -> String {
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
pub(crate) const STATS_INTERVAL_MIN: f64 = 0.05;
/// Longest `--stats-interval`: one day (any longer is as good as off).
pub(crate) const STATS_INTERVAL_MAX: f64 = 86_400.0;

/// Parses `--stats-interval`: 0 (off) or seconds within the range, so the
/// value always converts to a `Duration` and the ticks never overflow.
pub(crate) fn parse_stats_interval(s: &str) -> Result<f64, String> {
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
pub(crate) fn capped_buffer(flag: &str, n: usize) -> usize {
    if n <= MAX_BUFFER {
        return n;
    }
    stderr::line(format_args!(
        "server: warning: {flag} {n} is above the cap of {MAX_BUFFER} bytes (256 MiB) per socket; using {MAX_BUFFER}"
    ));
    MAX_BUFFER
}

/// Parses `--allow`: a network in CIDR form, or a single address.
pub(crate) fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| {
            format!("'{s}' is not a network: give an address with a prefix length, e.g. 192.0.2.0/24 or 2001:db8::/32 (or one address)")
        })
}
