//! The metrics thread: owns the HDR histograms, prints a statistics line per
//! interval on stderr, and builds the final [`Report`].
//!
//! It reads sample batches from the workers' channel and, on each tick, the
//! counters every worker last published. It stops when every worker has
//! dropped its end of the channel, so its final report includes everything
//! the workers counted.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use hdrhistogram::Histogram;

use crate::clients::{ClientDirectory, ClientsSummary};
use crate::counters::{Counters, SharedCounters};
use crate::guard::rate::{RateTable, TopLimited};
use crate::io::process_cpu_ns;
use crate::process::DropReason;
use crate::report::{LatencyUs, Report};
use crate::samples::SampleSource;

/// Largest latency the histograms hold: 60 s in nanoseconds.
const MAX_NS: u64 = 60_000_000_000;

/// What the metrics thread watches.
pub struct MetricsConfig {
    /// Time between statistics lines; `None` prints none.
    pub interval: Option<Duration>,
    /// Each worker's published counters.
    pub workers: Vec<Arc<SharedCounters>>,
    /// One handle per distinct socket (one when the workers share a
    /// socket), read for the kernel's exact drop counter (`SO_MEMINFO`).
    pub sockets: Vec<UdpSocket>,
    /// The rate limiter's table and most-limited prefixes, if limiting.
    pub rate: Option<(Arc<RateTable>, Arc<TopLimited>)>,
    /// All workers share one socket (so they share one `SO_RXQ_OVFL` counter).
    pub shared_socket: bool,
    /// Latency comes from kernel timestamps.
    pub kernel_clock: bool,
    /// Set (e.g. on SIGHUP) to print the since-start summary on stderr now.
    pub dump_now: Arc<AtomicBool>,
    /// `--capture`'s counters, for the statistics line.
    pub capture: Option<Arc<crate::capture::CaptureCounters>>,
    /// The workers' client tables (`None`: tracking is off).
    pub clients: Option<Arc<ClientDirectory>>,
    /// Where to publish a view every `export::PUBLISH_EVERY` (for
    /// `--metrics-listen` and the framed stats reply), if anyone reads it.
    pub publish: Option<Arc<crate::export::Published>>,
}

/// A new latency histogram in nanoseconds.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("valid histogram bounds")
}

/// Everything the workers and the kernel say at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// All workers' counters added up.
    pub total: Counters,
    /// Each worker's counters.
    pub per: Vec<Counters>,
    /// The kernel's drop counters (`SO_MEMINFO`), summed over sockets: exact.
    pub kernel_drops: u64,
    /// The last `SO_RXQ_OVFL` values the workers saw, summed over sockets:
    /// only as current as the last datagram queued.
    pub rxq_ovfl: u64,
    /// The most rate-limited source prefixes, most first.
    pub rate_limited_top: Vec<(String, u64)>,
    /// Bytes of the rate limiter's table (0 without `--rate-limit`).
    pub rate_table_bytes: usize,
    /// Clients seen within `--client-ttl` (`None`: tracking is off).
    pub clients: Option<ClientsSummary>,
}

/// Reads the kernel's drop counter of every socket and adds them up.
fn socket_drops(sockets: &[UdpSocket]) -> u64 {
    sockets
        .iter()
        .filter_map(|s| crate::io::socket_drops(s.as_raw_fd()).ok())
        .map(u64::from)
        .sum()
}

fn snapshot(cfg: &MetricsConfig) -> Snapshot {
    let per: Vec<Counters> = cfg.workers.iter().map(|w| w.snapshot()).collect();
    let mut total = Counters::default();
    for c in &per {
        total.merge(c);
    }
    let kd = per.iter().filter_map(|c| c.kernel_drops.map(u64::from));
    let rxq_ovfl = if cfg.shared_socket {
        kd.max().unwrap_or(0)
    } else {
        kd.sum()
    };
    Snapshot {
        total,
        per,
        kernel_drops: socket_drops(&cfg.sockets),
        rxq_ovfl,
        rate_limited_top: cfg.rate.as_ref().map(|r| r.1.top()).unwrap_or_default(),
        rate_table_bytes: cfg.rate.as_ref().map_or(0, |r| r.0.bytes()),
        clients: cfg
            .clients
            .as_ref()
            .map(|d| d.summary(crate::io::now_realtime_ns())),
    }
}

/// Runs until every worker has hung up, then returns the final report.
pub fn run(cfg: MetricsConfig, source: SampleSource) -> Report {
    let start = Instant::now();
    let cpu_start = process_cpu_ns();
    let mut total_hist = histogram();
    let mut interval_hist = histogram();
    let tick = cfg.interval.unwrap_or(Duration::from_millis(200));
    let mut next_tick = start + tick;
    let mut prev = (Snapshot::default(), start);
    let mut next_publish = start;
    let report = |hist: &Histogram<u64>, cpu: Option<u64>, final_report: bool| {
        let snap = snapshot(&cfg);
        let secs = start.elapsed().as_secs_f64();
        Report::build(&snap, hist, cfg.kernel_clock, secs, cpu, final_report)
    };
    loop {
        let due = match cfg.publish {
            Some(_) => next_tick.min(next_publish),
            None => next_tick,
        };
        let wait = due.saturating_duration_since(Instant::now());
        match source.rx.recv_timeout(wait) {
            Ok(batch) => {
                for &ns in &batch.samples {
                    total_hist.saturating_record(ns.max(1));
                    interval_hist.saturating_record(ns.max(1));
                }
                source.give_back(batch.worker, batch.samples);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if let Some(p) = cfg
            .publish
            .as_ref()
            .filter(|_| Instant::now() >= next_publish)
        {
            next_publish = Instant::now() + crate::export::PUBLISH_EVERY;
            p.publish(
                report(&total_hist, None, false),
                &total_hist,
                process_cpu_ns(),
            );
        }
        // Checked after every batch too, so a busy channel cannot starve the ticks.
        if Instant::now() < next_tick {
            continue;
        }
        next_tick += tick;
        if cfg.dump_now.swap(false, Ordering::Relaxed) {
            // Through the stderr writer: never blocks here, never panics.
            crate::stderr::write(report(&total_hist, None, false).to_string());
        }
        if cfg.interval.is_some() {
            let snap = snapshot(&cfg);
            let now = Instant::now();
            let mut line = stats_line(&snap, &prev, now, start, &interval_hist);
            if let Some(c) = &cfg.capture {
                line.push_str(&c.stats_field());
            }
            crate::stderr::line(line);
            prev = (snap, now);
        }
        interval_hist.reset();
    }
    let cpu = process_cpu_ns().saturating_sub(cpu_start);
    report(&total_hist, Some(cpu), true)
}

/// One periodic statistics line (see the README for how to read it).
fn stats_line(
    snap: &Snapshot,
    prev: &(Snapshot, Instant),
    now: Instant,
    start: Instant,
    h: &Histogram<u64>,
) -> String {
    let (t, per) = (&snap.total, &snap.per);
    let p = &prev.0.total;
    let dt = now.duration_since(prev.1).as_secs_f64().max(1e-9);
    let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / dt;
    let mut drops = String::new();
    for r in DropReason::ALL {
        let d = t.drops[r.index()] - p.drops[r.index()];
        if d > 0 {
            drops.push_str(&format!(" {}={}", r.name(), d));
        }
    }
    if drops.is_empty() {
        drops.push_str(" 0");
    }
    let pools: Vec<String> = per
        .iter()
        .map(|c| format!("{}/{}", c.pool.in_use, c.pool.high_water))
        .collect();
    let l = LatencyUs::from_ns(h);
    let lat = if l.count == 0 {
        "lat us - (no echoes)".to_string()
    } else {
        format!(
            "lat us p50 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}",
            l.p50, l.p99, l.p999, l.max
        )
    };
    let clients = match &snap.clients {
        Some(c) => format!(" | clients {}", c.active),
        None => String::new(),
    };
    format!(
        "[{:>7.1}s] rx {:.0}/s {:.2} MB/s | tx {:.0}/s {:.2} MB/s | drops{} | send_err {} recv_err {} | kernel_drops {} | backlog {} hw {} stalls {} | wake {} spurious {} | pool in-use/hw {} exh {} | {}{}",
        now.duration_since(start).as_secs_f64(),
        rate(t.rx_packets, p.rx_packets),
        rate(t.rx_bytes, p.rx_bytes) / 1e6,
        rate(t.tx_packets, p.tx_packets),
        rate(t.tx_bytes, p.tx_bytes) / 1e6,
        drops,
        t.send_failed() - p.send_failed(),
        t.recv_errors.total() - p.recv_errors.total(),
        snap.kernel_drops.saturating_sub(prev.0.kernel_drops),
        t.backlog,
        t.backlog_high_water,
        t.stalled() - p.stalled(),
        t.wakeups - p.wakeups,
        t.spurious_wakeups - p.spurious_wakeups,
        pools.join(","),
        t.pool.exhaustion_events,
        lat,
        clients,
    )
}
