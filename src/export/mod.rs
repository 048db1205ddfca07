//! The server's counters while it runs, for readers outside the metrics
//! thread: the Prometheus endpoint (`--metrics-listen`, [`http`] and
//! [`prometheus`]) and the framed protocol's stats reply
//! (`crate::wire::framed_stats`).
//!
//! Every [`PUBLISH_EVERY`] the metrics thread builds one [`Exported`] view
//! from **one** snapshot of the workers' counters (so the figures reconcile
//! within a view), the latency histogram turned into Prometheus buckets,
//! and the stats document (JSON) serialized once, and swaps it into
//! [`Published`]. Readers clone an `Arc` under a read lock held for that
//! clone only: a scrape or a stats request never waits for the metrics
//! thread to build anything, and the workers never wait for a scrape.

pub mod http;
pub mod prometheus;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use parking_lot::RwLock;
use serde::Serialize;

use crate::report::{LatencyUs, Report};
use crate::server::ServerConfig;
use crate::wire::Protocol;

/// How often the metrics thread publishes a new view.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(200);

/// Views kept for stats requests that name an earlier generation, so a
/// client fetching several fragments over a slow path still gets one
/// consistent document (8 x 200 ms: a path of up to 1.6 s per fragment).
const KEPT: usize = 8;

/// Latency bucket upper bounds in seconds (1 µs to 10 s; +Inf is added by
/// the encoder).
pub const LATENCY_BOUNDS_S: [f64; 22] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
    5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The whole-run latency histogram as Prometheus buckets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyBuckets {
    /// Samples in each bucket of [`LATENCY_BOUNDS_S`] (not cumulative),
    /// then one more for those above the last bound (+Inf).
    pub per_bucket: Vec<u64>,
    /// Sum of the samples in seconds (at the histogram's resolution).
    pub sum_s: f64,
    /// Number of samples.
    pub count: u64,
}

impl LatencyBuckets {
    /// Buckets of a histogram of nanoseconds. Each recorded value goes to
    /// the first bucket whose bound holds it (values are the HDR
    /// histogram's, exact to 3 significant digits).
    pub fn from_ns(h: &Histogram<u64>) -> LatencyBuckets {
        let mut per_bucket = vec![0u64; LATENCY_BOUNDS_S.len() + 1];
        let mut sum_s = 0.0;
        for v in h.iter_recorded() {
            let ns = h.median_equivalent(v.value_iterated_to());
            let s = ns as f64 / 1e9;
            let i = LATENCY_BOUNDS_S
                .iter()
                .position(|&b| s <= b)
                .unwrap_or(LATENCY_BOUNDS_S.len());
            per_bucket[i] += v.count_at_value();
            sum_s += s * v.count_at_value() as f64;
        }
        LatencyBuckets {
            count: per_bucket.iter().sum(),
            per_bucket,
            sum_s,
        }
    }
}

/// The stats document (framed stats reply): the `--json` report's
/// counters, under the same names.
#[derive(Debug, Serialize)]
struct StatsDoc<'a> {
    generation: u32,
    duration_s: f64,
    rx_packets: u64,
    tx_packets: u64,
    rx_bytes: u64,
    tx_bytes: u64,
    drops: &'a std::collections::BTreeMap<&'static str, u64>,
    send_errors: &'a std::collections::BTreeMap<&'static str, u64>,
    backlog: usize,
    recv_errors: &'a std::collections::BTreeMap<String, u64>,
    kernel_drops: u64,
    reached_socket: u64,
    unaccounted: i64,
    latency_us: LatencyUs,
}

/// One published view of the running server.
#[derive(Debug)]
pub struct Exported {
    /// Counts publications from 1; names the stats document.
    pub generation: u32,
    /// The report (as SIGHUP would print it) built from one snapshot.
    pub report: Report,
    /// The whole-run latency histogram as buckets.
    pub latency: LatencyBuckets,
    /// When the server started, seconds since the Unix epoch.
    pub start_unix_s: f64,
    /// CPU time the process has used, seconds.
    pub cpu_s: f64,
    /// The stats document, JSON, serialized once.
    pub json: Vec<u8>,
}

/// The shared slot the metrics thread publishes into.
#[derive(Debug)]
pub struct Published {
    start_unix_s: f64,
    /// The latest views, newest last (at most [`KEPT`]).
    views: RwLock<VecDeque<Arc<Exported>>>,
}

impl Default for Published {
    fn default() -> Self {
        Published::new()
    }
}

impl Published {
    /// A slot holding the view of a server that counted nothing yet (so
    /// a reader never finds it empty); the start time is now.
    pub fn new() -> Published {
        let start_unix_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let p = Published {
            start_unix_s,
            views: RwLock::new(VecDeque::with_capacity(KEPT)),
        };
        let empty = crate::metrics::histogram();
        let snap = crate::metrics::Snapshot::default();
        p.publish(
            Report::build(&snap, &empty, true, 0.0, None, false),
            &empty,
            0,
        );
        p
    }

    /// Publishes a new view (metrics thread).
    pub fn publish(&self, report: Report, hist: &Histogram<u64>, cpu_ns: u64) {
        let generation = self
            .latest()
            .map_or(1, |v| v.generation.wrapping_add(1).max(1));
        let doc = StatsDoc {
            generation,
            duration_s: report.duration_s,
            rx_packets: report.rx_packets,
            tx_packets: report.tx_packets,
            rx_bytes: report.rx_bytes,
            tx_bytes: report.tx_bytes,
            drops: &report.drops,
            send_errors: &report.send_errors,
            backlog: report.backlog,
            recv_errors: &report.recv_errors,
            kernel_drops: report.kernel_drops,
            reached_socket: report.reached_socket,
            unaccounted: report.unaccounted,
            latency_us: report.latency_us,
        };
        // Serializing plain maps and numbers cannot fail.
        let json = serde_json::to_vec(&doc).unwrap_or_default();
        let view = Arc::new(Exported {
            generation,
            latency: LatencyBuckets::from_ns(hist),
            start_unix_s: self.start_unix_s,
            cpu_s: cpu_ns as f64 / 1e9,
            json,
            report,
        });
        let mut views = self.views.write();
        if views.len() == KEPT {
            views.pop_front();
        }
        views.push_back(view);
    }

    /// The latest view, if one was published.
    pub fn latest(&self) -> Option<Arc<Exported>> {
        self.views.read().back().cloned()
    }

    /// The view of `generation` if still kept, else the latest.
    pub fn view(&self, generation: u32) -> Option<Arc<Exported>> {
        let views = self.views.read();
        views
            .iter()
            .find(|v| v.generation == generation)
            .or(views.back())
            .cloned()
    }
}

/// What the `server` binary exports: publishes when the framed protocol
/// (stats requests) or `--metrics-listen` reads the counters, and starts
/// the endpoint, whose error names the address.
pub fn setup(
    cfg: ServerConfig,
    protocol: Protocol,
    listen: Option<std::net::SocketAddr>,
) -> std::io::Result<(
    ServerConfig,
    Option<Arc<Published>>,
    Option<http::MetricsServer>,
)> {
    let published =
        (protocol == Protocol::Framed || listen.is_some()).then(|| Arc::new(Published::new()));
    let endpoint = match (listen, &published) {
        (Some(addr), Some(p)) => Some(http::MetricsServer::start(addr, p.clone())?),
        _ => None,
    };
    let cfg = ServerConfig {
        publish: published.clone(),
        ..cfg
    };
    Ok((cfg, published, endpoint))
}

/// Parses `--metrics-listen`: an IP address and a TCP port.
pub fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse().map_err(|_| {
        format!("'{s}' is not an address and port: give IP:PORT, e.g. 127.0.0.1:9100 or [::1]:9100 (port 0: the OS chooses)")
    })
}

/// The line, right after `listening on`, that names the endpoint's bound
/// address (already accepting then).
pub fn endpoint_line(m: &http::MetricsServer) -> String {
    format!(
        "server: metrics endpoint http://{}/metrics (Prometheus text, no authentication: readable by anyone who can reach it)",
        m.local_addr()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{histogram, Snapshot};

    fn report() -> Report {
        Report::build(&Snapshot::default(), &histogram(), true, 1.0, None, false)
    }

    #[test]
    fn listen_addresses_parse_or_say_how() {
        assert_eq!(parse_listen("[::1]:0").unwrap().port(), 0);
        let e = parse_listen("localhost").unwrap_err();
        assert!(
            e.contains("'localhost'") && e.contains("127.0.0.1:9100"),
            "{e}"
        );
    }

    #[test]
    fn buckets_hold_every_sample_once() {
        let mut h = histogram();
        for ns in [500, 1_000, 20_000, 3_000_000, 20_000_000_000] {
            h.record(ns).unwrap();
        }
        let b = LatencyBuckets::from_ns(&h);
        assert_eq!(b.count, 5);
        assert_eq!(b.per_bucket[0], 2, "0.5 µs and 1 µs are <= 1e-6 s");
        assert_eq!(
            b.per_bucket[LATENCY_BOUNDS_S.len()],
            1,
            "20 s is above 10 s"
        );
        assert_eq!(b.per_bucket[4], 1, "20 µs is in (10 µs, 25 µs]");
        assert!((b.sum_s - 20.003_021_5).abs() < 0.03, "{}", b.sum_s);
    }

    #[test]
    fn views_keep_generations_and_fall_back_to_the_latest() {
        let p = Published::new();
        assert_eq!(p.latest().unwrap().generation, 1, "never empty");
        for _ in 0..KEPT + 2 {
            p.publish(report(), &histogram(), 0);
        }
        let last = p.latest().unwrap().generation;
        assert_eq!(last, KEPT as u32 + 3);
        assert_eq!(p.view(last - 3).unwrap().generation, last - 3);
        assert_eq!(p.view(1).unwrap().generation, last, "evicted: the latest");
        let doc: serde_json::Value = serde_json::from_slice(&p.latest().unwrap().json).unwrap();
        assert_eq!(doc["generation"], last);
        assert_eq!(doc["rx_packets"], 0);
    }
}
