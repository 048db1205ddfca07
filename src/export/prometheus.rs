//! The Prometheus text exposition format (version 0.0.4) of one published
//! view ([`Exported`]), written with the `prometheus-client` crate.
//!
//! Names follow the Prometheus conventions: the `udp_packet_pool_` prefix,
//! `_total` on counters, base units (seconds, bytes) in the name. The
//! process metrics use the standard names (`process_cpu_seconds_total`,
//! `process_start_time_seconds`) so dashboards that know them work.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::{Exported, LATENCY_BOUNDS_S};

/// The `Content-Type` of the text this module writes.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Prefix of the server's own metric names.
const PREFIX: &str = "udp_packet_pool";

/// Writes one view as Prometheus text.
pub fn render(view: Arc<Exported>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(View(view)));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

#[derive(Debug)]
struct View(Arc<Exported>);

/// One counter without labels.
fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, unit, c.metric_type())?)
}

/// One gauge without labels.
fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// A family of counters or gauges, one series per `(label value, value)`.
fn family<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    label: &str,
    series: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, ty)?;
    for (l, v) in series {
        let labels = [(label, l)];
        match ty {
            MetricType::Counter => ConstCounter::new(v).encode(m.encode_family(&labels)?)?,
            _ => ConstGauge::new(v).encode(m.encode_family(&labels)?)?,
        }
    }
    Ok(())
}

/// A map's entries as `(label value, value)`.
fn series<K: AsRef<str>>(m: &std::collections::BTreeMap<K, u64>) -> Vec<(&str, u64)> {
    m.iter().map(|(k, v)| (k.as_ref(), *v)).collect()
}

impl Collector for View {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let v = &self.0;
        let r = &v.report;
        let p = |s: &str| format!("{PREFIX}_{s}");
        let e = &mut e;
        counter(
            e,
            &p("received_datagrams"),
            "Datagrams received.",
            None,
            r.rx_packets,
        )?;
        counter(
            e,
            &p("received"),
            "Bytes received (whole datagrams).",
            Some(&Unit::Bytes),
            r.rx_bytes,
        )?;
        counter(
            e,
            &p("echoed_datagrams"),
            "Datagrams echoed (answered).",
            None,
            r.tx_packets,
        )?;
        counter(
            e,
            &p("echoed"),
            "Bytes echoed.",
            Some(&Unit::Bytes),
            r.tx_bytes,
        )?;
        let ctr = MetricType::Counter;
        family(
            e,
            &p("dropped_datagrams"),
            "Datagrams received and not echoed, by reason.",
            ctr,
            "reason",
            series(&r.drops),
        )?;
        family(
            e,
            &p("send_errors"),
            "Echoes given up on because the kernel refused them for good, by kind.",
            ctr,
            "kind",
            series(&r.send_errors),
        )?;
        family(
            e,
            &p("send_stalls"),
            "Send attempts the socket refused in part or whole (backpressure, not loss), by kind.",
            ctr,
            "kind",
            series(&r.send_stalls),
        )?;
        family(
            e,
            &p("receive_errors"),
            "Failed receive calls, by errno.",
            ctr,
            "errno",
            series(&r.recv_errors),
        )?;
        family(
            e,
            &p("icmp_errors"),
            "ICMP errors read from the sockets' error queues, by errno.",
            ctr,
            "errno",
            series(&r.icmp_errors),
        )?;
        counter(e, &p("kernel_drops"), "Datagrams the kernel dropped for the server's sockets before the server saw them (SO_MEMINFO).", None, r.kernel_drops)?;
        gauge(
            e,
            &p("send_backlog_datagrams"),
            "Echoes held in the send backlogs now.",
            r.backlog as f64,
        )?;
        let gg = MetricType::Gauge;
        let ids: Vec<String> = r.workers.iter().map(|w| w.id.to_string()).collect();
        let per = |f: &dyn Fn(&crate::pool::PoolStats) -> usize| {
            ids.iter()
                .zip(&r.workers)
                .map(|(id, w)| (id.as_str(), f(&w.pool) as u64))
                .collect::<Vec<_>>()
        };
        family(
            e,
            &p("pool_buffers"),
            "Buffers in each worker's pool (capacity).",
            gg,
            "worker",
            per(&|s| s.capacity),
        )?;
        family(e, &p("pool_buffers_in_use"), "Buffers taken from each worker's pool now (posted to the receive call, being processed or held in the send backlog).", gg, "worker", per(&|s| s.in_use))?;
        family(
            e,
            &p("pool_buffers_free"),
            "Free buffers in each worker's pool now.",
            gg,
            "worker",
            per(&|s| s.capacity.saturating_sub(s.in_use)),
        )?;
        // Client tracking (absent with --clients 0).
        if let Some(c) = &r.clients {
            gauge(
                e,
                &p("clients_active"),
                "Distinct clients (address and port) seen within --client-ttl, as the workers last published them.",
                c.active as f64,
            )?;
            family(
                e,
                &p("clients_evicted"),
                "Client table entries taken over: from clients idle past --client-ttl, or from live ones because a set was full.",
                ctr,
                "reason",
                vec![("idle", c.evicted_idle), ("full", c.evicted_full)],
            )?;
        }
        let l = &v.latency;
        let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_S
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(l.per_bucket.iter().copied())
            .collect();
        let name = p("latency_seconds");
        let mut h = e.encode_descriptor(
            &name,
            "Receive-to-echo-sent latency over the whole run (from the kernel's receive timestamp when it gives one).",
            None,
            MetricType::Histogram,
        )?;
        h.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            l.sum_s, l.count, &buckets, None,
        )?;
        gauge(
            e,
            &p("uptime_seconds"),
            "Seconds since the server started.",
            r.duration_s,
        )?;
        gauge(
            e,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, seconds.",
            v.start_unix_s,
        )?;
        let cpu = ConstCounter::new(v.cpu_s);
        cpu.encode(e.encode_descriptor(
            "process_cpu",
            "CPU time the process has used (user and system), seconds.",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::Published;
    use crate::metrics::{histogram, Snapshot};
    use crate::report::Report;

    #[test]
    fn renders_counters_labels_and_cumulative_buckets() {
        let mut snap = Snapshot::default();
        snap.total.rx_packets = 7;
        snap.total.tx_packets = 5;
        snap.total.drops[crate::process::DropReason::Truncated.index()] = 2;
        let mut h = histogram();
        h.record(20_000).unwrap();
        h.record(30_000_000_000).unwrap();
        let p = Published::new();
        p.publish(
            Report::build(&snap, &h, true, 2.0, None, false),
            &h,
            1_500_000_000,
        );
        let text = render(p.latest().unwrap()).unwrap();
        for want in [
            "# TYPE udp_packet_pool_received_datagrams_total counter\n",
            "udp_packet_pool_received_datagrams_total 7\n",
            "udp_packet_pool_echoed_datagrams_total 5\n",
            "udp_packet_pool_dropped_datagrams_total{reason=\"truncated\"} 2\n",
            "# TYPE udp_packet_pool_latency_seconds histogram\n",
            "udp_packet_pool_latency_seconds_bucket{le=\"1e-05\"} 0\n",
            "udp_packet_pool_latency_seconds_bucket{le=\"2.5e-05\"} 1\n",
            "udp_packet_pool_latency_seconds_bucket{le=\"10\"} 1\n",
            "udp_packet_pool_latency_seconds_bucket{le=\"+Inf\"} 2\n",
            "udp_packet_pool_latency_seconds_count 2\n",
            "process_cpu_seconds_total 1.5\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
