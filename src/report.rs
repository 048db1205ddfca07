//! The server's final report: what the metrics thread hands back at
//! shutdown, printed as text or JSON on stdout.

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::clients::{ClientsSummary, FanOutCounters};
use crate::counters::{SEND_ERROR_NAMES, SEND_STALL_NAMES};
use crate::metrics::Snapshot;
use crate::pool::PoolStats;
use crate::process::DropReason;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencyUs {
    /// Samples behind the figures.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
}

impl LatencyUs {
    /// Percentiles of a histogram of nanoseconds.
    pub fn from_ns(h: &Histogram<u64>) -> LatencyUs {
        if h.is_empty() {
            return LatencyUs::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        LatencyUs {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: us(h.value_at_quantile(0.5)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    }
}

/// One worker's share.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerReport {
    /// Worker index.
    pub id: usize,
    /// Datagrams it received.
    pub rx_packets: u64,
    /// Datagrams it echoed.
    pub tx_packets: u64,
    /// Its pool at exit.
    pub pool: PoolStats,
    /// Most echoes its send backlog held at once.
    pub backlog_high_water: usize,
    /// Every buffer was back in the pool when it exited.
    pub buffers_returned: bool,
}

/// Final statistics of a server run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Wall time the server ran.
    pub duration_s: f64,
    /// Datagrams received.
    pub rx_packets: u64,
    /// Datagrams echoed.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes echoed.
    pub tx_bytes: u64,
    /// Datagrams not echoed, by reason.
    pub drops: BTreeMap<&'static str, u64>,
    /// Echoes given up on (the kernel refused them for good), by kind.
    pub send_errors: BTreeMap<&'static str, u64>,
    /// Send attempts the socket refused in part or whole, by kind; the
    /// datagrams stayed in the send backlog (backpressure, not loss).
    pub send_stalls: BTreeMap<&'static str, u64>,
    /// Echoes held in send backlogs when the report was made (0 at shutdown).
    pub backlog: usize,
    /// Failed receive calls, by errno name.
    pub recv_errors: BTreeMap<String, u64>,
    /// ICMP errors read from the sockets' error queues, by errno name (one
    /// per ICMP message, e.g. `ECONNREFUSED` for port unreachable).
    pub icmp_errors: BTreeMap<String, u64>,
    /// Datagrams the kernel dropped for the server's sockets before the
    /// server saw them: the sockets' own counters (`SO_MEMINFO`, the
    /// `drops` column of `/proc/net/udp`), read when the report is made.
    pub kernel_drops: u64,
    /// The same counter as last attached to a received datagram
    /// (`SO_RXQ_OVFL`): misses drops after the last datagram queued.
    pub kernel_drops_rxq_ovfl: u64,
    /// Datagrams that reached the server's sockets: received + kernel drops.
    pub reached_socket: u64,
    /// Waits that returned readable (epoll mode, or while a backlog was held).
    pub wakeups: u64,
    /// Of those, the ones whose receive found nothing: wasted wake-ups.
    pub spurious_wakeups: u64,
    /// GRO: buffers that held a train of datagrams, and the datagrams in
    /// them (each also counted in `rx_packets`).
    pub gro_trains: u64,
    /// See `gro_trains`.
    pub gro_datagrams: u64,
    /// Times worker threads went to sleep (voluntary context switches):
    /// every wake-up ends in one, including those the kernel made for a
    /// datagram another worker took.
    pub worker_sleeps: u64,
    /// Latency samples lost on the way to the metrics thread.
    pub samples_dropped: u64,
    /// received - echoed - dropped - send errors - held in backlogs (zero
    /// when reconciled).
    pub unaccounted: i64,
    /// Where latency timestamps came from: "kernel" (`SO_TIMESTAMPNS`) or "user".
    pub latency_clock: &'static str,
    /// Receive-to-echo latency.
    pub latency_us: LatencyUs,
    /// Memory held by all packet pools (slabs, metadata, free lists), bytes.
    pub pool_bytes: usize,
    /// Peak resident set size of the process (`VmHWM`), bytes, if known.
    pub peak_rss_bytes: Option<u64>,
    /// Process CPU time per received datagram, nanoseconds.
    pub cpu_ns_per_packet: Option<f64>,
    /// Per-worker figures.
    pub workers: Vec<WorkerReport>,
    /// Every worker returned every buffer.
    pub buffers_returned: bool,
    /// True for the report at shutdown; false for a mid-run summary
    /// (SIGHUP), where buffers posted to the receive call are in use.
    pub final_report: bool,
    /// The most rate-limited source prefixes (`"10.0.0.0/24"`, count), most
    /// first; counts are upper bounds (space-saving, 8 entries per worker).
    pub rate_limited_top: Vec<(String, u64)>,
    /// Bytes of the rate limiter's table, allocated once at start.
    pub rate_table_bytes: usize,
    /// Workers that failed (panicked or lost their socket), with the error;
    /// empty on a clean run.
    pub worker_failures: Vec<String>,
    /// `-v` packet log lines lost before the logger: dropped because the log
    /// queue was full, or still queued when a stalled log thread was given
    /// up at shutdown. Lines lost after it, on the way to stderr, are in
    /// `stderr_lines_dropped`. Known at shutdown only (0 in a SIGHUP summary).
    pub log_lines_dropped: u64,
    /// Lines written through the stderr queue (statistics lines, summaries,
    /// notices, and `log` records: warnings, errors, `-v` packet lines)
    /// lost because stderr was blocked (queue full, or still queued at
    /// shutdown) or failed (e.g. closed). Known at shutdown only.
    pub stderr_lines_dropped: u64,
    /// Why stderr lines were lost (`stderr failed: Broken pipe (os error
    /// 32)`, `stderr blocked: ...`); `None` when none were.
    pub stderr_problem: Option<String>,
    /// `--capture`: records written and datagrams not captured (known at
    /// shutdown only; `None` without `--capture`).
    pub capture: Option<crate::capture::CaptureSummary>,
    /// Clients seen within `--client-ttl`, with the top talkers (`null`
    /// with `--clients 0`).
    pub clients: Option<ClientsSummary>,
    /// Broadcast fan-out sends: extra datagrams, not received ones, so
    /// they have their own books (`broadcast_unaccounted`).
    pub broadcast: FanOutCounters,
    /// targets - sent - not sent (by reason) - held: zero when reconciled.
    pub broadcast_unaccounted: i64,
}

/// The process's peak resident set size (`VmHWM` in `/proc/self/status`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Name of an errno for reports (`ECONNREFUSED`), or `errno_N`.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ENOMEM => "ENOMEM",
        libc::ENOBUFS => "ENOBUFS",
        libc::EBADF => "EBADF",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EINVAL => "EINVAL",
        libc::EFAULT => "EFAULT",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EPERM => "EPERM",
        _ => return format!("errno_{errno}"),
    };
    name.to_string()
}

impl Report {
    /// Assembles the report from a snapshot of the workers and the kernel.
    pub fn build(
        snap: &Snapshot,
        latency: &Histogram<u64>,
        kernel_clock: bool,
        duration_s: f64,
        cpu_ns: Option<u64>,
        final_report: bool,
    ) -> Report {
        let (total, per_worker) = (&snap.total, &snap.per);
        let drops = DropReason::ALL
            .iter()
            .map(|r| (r.name(), total.drops[r.index()]))
            .collect();
        let send_errors = SEND_ERROR_NAMES
            .iter()
            .zip(total.send_errors)
            .map(|(n, v)| (*n, v))
            .collect();
        let send_stalls = SEND_STALL_NAMES
            .iter()
            .zip(total.send_stalls)
            .map(|(n, v)| (*n, v))
            .collect();
        let mut recv_errors: BTreeMap<String, u64> = total
            .recv_errors
            .iter()
            .map(|(e, n)| (errno_name(e), n))
            .collect();
        if total.recv_errors.overflow > 0 {
            recv_errors.insert("other".into(), total.recv_errors.overflow);
        }
        let mut icmp_errors: BTreeMap<String, u64> = total
            .icmp_errors
            .iter()
            .map(|(e, n)| (errno_name(e), n))
            .collect();
        if total.icmp_errors.overflow > 0 {
            icmp_errors.insert("other".into(), total.icmp_errors.overflow);
        }
        let workers: Vec<WorkerReport> = per_worker
            .iter()
            .enumerate()
            .map(|(id, c)| WorkerReport {
                id,
                rx_packets: c.rx_packets,
                tx_packets: c.tx_packets,
                pool: c.pool,
                backlog_high_water: c.backlog_high_water,
                buffers_returned: c.pool.in_use == 0,
            })
            .collect();
        Report {
            duration_s,
            rx_packets: total.rx_packets,
            tx_packets: total.tx_packets,
            rx_bytes: total.rx_bytes,
            tx_bytes: total.tx_bytes,
            drops,
            send_errors,
            send_stalls,
            backlog: total.backlog,
            recv_errors,
            icmp_errors,
            kernel_drops: snap.kernel_drops,
            kernel_drops_rxq_ovfl: snap.rxq_ovfl,
            reached_socket: total.rx_packets + snap.kernel_drops,
            wakeups: total.wakeups,
            spurious_wakeups: total.spurious_wakeups,
            gro_trains: total.gro_trains,
            gro_datagrams: total.gro_datagrams,
            worker_sleeps: total.sleeps,
            rate_limited_top: snap.rate_limited_top.clone(),
            rate_table_bytes: snap.rate_table_bytes,
            samples_dropped: total.samples_dropped,
            unaccounted: total.unaccounted(),
            latency_clock: if kernel_clock { "kernel" } else { "user" },
            latency_us: LatencyUs::from_ns(latency),
            pool_bytes: total.pool.bytes,
            peak_rss_bytes: peak_rss_bytes(),
            cpu_ns_per_packet: cpu_ns
                .filter(|_| total.rx_packets > 0)
                .map(|ns| ns as f64 / total.rx_packets as f64),
            buffers_returned: workers.iter().all(|w| w.buffers_returned),
            workers,
            final_report,
            worker_failures: Vec::new(),
            log_lines_dropped: 0,
            stderr_lines_dropped: 0,
            capture: None,
            stderr_problem: None,
            clients: snap.clients.clone(),
            broadcast: total.broadcast,
            broadcast_unaccounted: total.broadcast.unaccounted(),
        }
    }

    /// Dropped datagrams, all reasons.
    pub fn dropped(&self) -> u64 {
        self.drops.values().sum()
    }

    /// Failed echoes, all kinds.
    pub fn send_failed(&self) -> u64 {
        self.send_errors.values().sum()
    }

    /// Send stalls, all kinds.
    pub fn stalled(&self) -> u64 {
        self.send_stalls.values().sum()
    }
}

impl Report {
    /// The clients and broadcast lines of the text report.
    fn fmt_clients(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = &self.clients {
            let mut lines = c.lines().into_iter();
            writeln!(f, "clients       {}", lines.next().unwrap_or_default())?;
            for l in lines {
                writeln!(f, "  client      {l}")?;
            }
        }
        let b = &self.broadcast;
        if b.broadcasts > 0 {
            writeln!(
                f,
                "broadcast     {} relayed to {} clients: sent {}, not sent pool_exhausted={} send_deadline={} send_errors={}, held {}; reconciled {} ({})",
                b.broadcasts,
                b.targets,
                b.sent,
                b.pool_exhausted,
                b.send_deadline,
                b.send_errors,
                b.held,
                if self.broadcast_unaccounted == 0 { "yes" } else { "NO" },
                self.broadcast_unaccounted
            )?;
        }
        Ok(())
    }
}

fn nonzero(m: &BTreeMap<impl fmt::Display + Ord, u64>) -> String {
    let parts: Vec<String> = m
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(" ")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.latency_us;
        if self.final_report {
            writeln!(f, "--- udp-packet-pool server summary ---")?;
        } else {
            writeln!(
                f,
                "--- udp-packet-pool server summary so far (still running) ---"
            )?;
        }
        writeln!(f, "duration      {:.2} s", self.duration_s)?;
        writeln!(
            f,
            "received      {} datagrams, {} bytes ({:.0}/s)",
            self.rx_packets,
            self.rx_bytes,
            self.rx_packets as f64 / self.duration_s.max(1e-9)
        )?;
        writeln!(
            f,
            "echoed        {} datagrams, {} bytes",
            self.tx_packets, self.tx_bytes
        )?;
        writeln!(
            f,
            "dropped       {} ({})",
            self.dropped(),
            nonzero(&self.drops)
        )?;
        writeln!(
            f,
            "send errors   {} ({})",
            self.send_failed(),
            nonzero(&self.send_errors)
        )?;
        writeln!(
            f,
            "send stalls   {} ({}); held now {}",
            self.stalled(),
            nonzero(&self.send_stalls),
            self.backlog
        )?;
        writeln!(f, "recv errors   {}", nonzero(&self.recv_errors))?;
        writeln!(f, "icmp errors   {}", nonzero(&self.icmp_errors))?;
        if !self.rate_limited_top.is_empty() {
            let top: Vec<String> = self
                .rate_limited_top
                .iter()
                .map(|(p, n)| format!("{p}={n}"))
                .collect();
            writeln!(f, "rate limited  most: {}", top.join(" "))?;
        }
        writeln!(
            f,
            "kernel drops  {} (socket counters, SO_MEMINFO; SO_RXQ_OVFL last said {})",
            self.kernel_drops, self.kernel_drops_rxq_ovfl
        )?;
        writeln!(
            f,
            "reached       {} datagrams reached the sockets = {} received + {} kernel drops",
            self.reached_socket, self.rx_packets, self.kernel_drops
        )?;
        writeln!(
            f,
            "reconciled    {} (received - echoed - dropped - send errors - held = {})",
            if self.unaccounted == 0 { "yes" } else { "NO" },
            self.unaccounted
        )?;
        self.fmt_clients(f)?;
        writeln!(
            f,
            "wake-ups      {} ({} spurious: woken, nothing to receive); worker sleeps {} ({:.2} per datagram)",
            self.wakeups,
            self.spurious_wakeups,
            self.worker_sleeps,
            self.worker_sleeps as f64 / self.rx_packets.max(1) as f64
        )?;
        writeln!(
            f,
            "gro           {} trains carried {} of the datagrams received",
            self.gro_trains, self.gro_datagrams
        )?;
        if l.count == 0 {
            writeln!(
                f,
                "latency us    - (no echoes; {} clock, {} samples lost)",
                self.latency_clock, self.samples_dropped
            )?;
        } else {
            writeln!(
                f,
                "latency us    p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  ({} samples, {} clock, {} lost)",
                l.p50, l.p99, l.p999, l.max, l.count, self.latency_clock, self.samples_dropped
            )?;
        }
        if self.final_report {
            writeln!(
                f,
                "packet log    {} lines dropped (-v queue full; any lost on stderr are on the stderr line)",
                self.log_lines_dropped
            )?;
            if let Some(c) = &self.capture {
                writeln!(f, "{c}")?;
            }
            if let Some(p) = &self.stderr_problem {
                writeln!(
                    f,
                    "stderr        {} lines dropped ({p})",
                    self.stderr_lines_dropped
                )?;
            }
        }
        let mib = |b: f64| b / (1024.0 * 1024.0);
        write!(
            f,
            "memory        pools {:.1} MiB",
            mib(self.pool_bytes as f64)
        )?;
        if self.rate_table_bytes > 0 {
            write!(
                f,
                ", rate table {:.1} MiB",
                mib(self.rate_table_bytes as f64)
            )?;
        }
        match self.peak_rss_bytes {
            Some(r) => writeln!(f, ", peak RSS {:.1} MiB", mib(r as f64))?,
            None => writeln!(f)?,
        }
        if let Some(c) = self.cpu_ns_per_packet {
            writeln!(f, "cpu           {c:.0} ns per received datagram")?;
        }
        for w in &self.workers {
            writeln!(
                f,
                "worker {:<3}    rx {} tx {} pool {}/{} high-water {} exhausted {} backlog high-water {} allocs {} {}",
                w.id,
                w.rx_packets,
                w.tx_packets,
                w.pool.in_use,
                w.pool.capacity,
                w.pool.high_water,
                w.pool.exhaustion_events,
                w.backlog_high_water,
                w.pool.total_allocations,
                match (self.final_report, w.buffers_returned) {
                    (false, _) => "(in use: posted to the receive call)",
                    (true, true) => "returned all",
                    (true, false) => "returned NO",
                }
            )?;
        }
        for e in &self.worker_failures {
            writeln!(f, "FAILED        {e}")?;
        }
        Ok(())
    }
}
