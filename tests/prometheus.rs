//! `server --metrics-listen`: the Prometheus endpoint over real HTTP on
//! loopback. The text is parsed twice: by `prometheus-parse` for the values
//! and by a strict check of our own (every sample's family declared by a
//! `# TYPE` line before it, every value a number, histogram buckets
//! cumulative and ending in `+Inf` equal to `_count`).

mod util;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use prometheus_parse::{Scrape, Value};
use util::*;

const P: &str = "udp_packet_pool_";
/// Longest a scrape may take in these tests (a hang guard: above the
/// endpoint's own bound for a stalled client, 2 x 2 s).
const SCRAPE_GUARD: Duration = Duration::from_secs(15);

/// Starts a server with the endpoint on an ephemeral port; returns it and
/// the endpoint's address, read from its line.
fn start(args: &[&str]) -> (ServerProc, SocketAddr) {
    let mut all = vec!["--json", "--metrics-listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut srv = ServerProc::start(&all);
    let addr = srv.metrics_addr();
    (srv, addr)
}

/// One HTTP exchange: the status line and the body.
fn http(addr: SocketAddr, request: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(SCRAPE_GUARD)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got)
        .expect("a whole answer, then close");
    let (head, body) = got.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.lines().next().unwrap().to_string();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .unwrap();
    assert_eq!(len, body.len(), "Content-Length is the body's");
    (status, body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> (String, String) {
    http(addr, &format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"))
}

/// The strict check; returns each family's declared type.
fn strict(text: &str) -> HashMap<String, String> {
    let mut types = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect("# TYPE name type");
            assert!(
                ["counter", "gauge", "histogram"].contains(&ty),
                "type {ty} of {name}"
            );
            assert!(
                types.insert(name.to_string(), ty.to_string()).is_none(),
                "{name} declared twice"
            );
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(
            !line.is_empty() && !line.starts_with('#'),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value of {line:?}"));
        assert!(v >= 0.0, "{line}");
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "{name} has no # TYPE before it");
        if types[family] == "counter" {
            assert!(name.ends_with("_total"), "counter {name} without _total");
        }
    }
    types
}

/// A scrape, parsed; a 503 (nothing published yet, right after start) is
/// tried again.
fn scrape(addr: SocketAddr) -> Scrape {
    let deadline = Instant::now() + SCRAPE_GUARD;
    let (status, body) = loop {
        let (status, body) = get(addr, "/metrics");
        if !status.contains(" 503 ") || Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    strict(&body);
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// The value of `name` with the given labels (all of them).
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let hit = s
        .samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no {name} {labels:?}"));
    match hit.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        ref other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn a_scrape_counts_every_datagram_and_its_latency() {
    const N: u64 = 40;
    let (srv, metrics) = start(&["--threads", "2", "--pool-size", "500"]);
    let sock = client_socket(srv.addr);
    for i in 0..N {
        assert_eq!(echo(&sock, srv.addr, &pattern(100, i as u8)).len(), 100);
    }
    // The figures are published every 200 ms: scrape until they show all.
    let deadline = Instant::now() + SCRAPE_GUARD;
    let s = loop {
        let s = scrape(metrics);
        let count = value(&s, &format!("{P}latency_seconds_count"), &[]);
        // The one client, once the workers published their tables (100 ms;
        // the view before the first publication has no client figures).
        let clients = s
            .samples
            .iter()
            .find(|x| x.metric == format!("{P}clients_active"));
        if value(&s, &format!("{P}echoed_datagrams_total"), &[]) == N as f64
            && count == N as f64
            && clients.is_some_and(|c| matches!(c.value, Value::Gauge(v) if v == 1.0))
        {
            break s;
        }
        assert!(Instant::now() < deadline, "never saw {N} echoes");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        value(&s, &format!("{P}received_datagrams_total"), &[]),
        N as f64
    );
    assert_eq!(
        value(&s, &format!("{P}received_bytes_total"), &[]),
        (100 * N) as f64
    );
    assert_eq!(
        value(&s, &format!("{P}echoed_bytes_total"), &[]),
        (100 * N) as f64
    );
    let drops: Vec<_> = s
        .samples
        .iter()
        .filter(|x| x.metric == format!("{P}dropped_datagrams_total"))
        .collect();
    assert!(drops.len() > 5, "every reason is a series");
    assert!(drops
        .iter()
        .all(|d| matches!(d.value, Value::Counter(v) if v == 0.0)));
    assert_eq!(
        value(
            &s,
            &format!("{P}dropped_datagrams_total"),
            &[("reason", "truncated")]
        ),
        0.0
    );
    assert_eq!(value(&s, &format!("{P}kernel_drops_total"), &[]), 0.0);
    for why in ["idle", "full"] {
        let evicted = value(&s, &format!("{P}clients_evicted_total"), &[("reason", why)]);
        assert_eq!(evicted, 0.0, "{why}");
    }
    let hist = s
        .samples
        .iter()
        .find(|x| x.metric == format!("{P}latency_seconds"))
        .expect("the histogram");
    let Value::Histogram(ref b) = hist.value else {
        panic!("{:?}", hist.value)
    };
    assert!(
        b.windows(2)
            .all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count),
        "cumulative: {b:?}"
    );
    let last = b.last().unwrap();
    assert!(
        last.less_than.is_infinite() && last.count == N as f64,
        "{b:?}"
    );
    assert!(value(&s, &format!("{P}latency_seconds_sum"), &[]) > 0.0);
    for w in ["0", "1"] {
        let cap = value(&s, &format!("{P}pool_buffers"), &[("worker", w)]);
        let used = value(&s, &format!("{P}pool_buffers_in_use"), &[("worker", w)]);
        let free = value(&s, &format!("{P}pool_buffers_free"), &[("worker", w)]);
        assert_eq!((cap, used + free), (500.0, 500.0), "worker {w}");
    }
    assert!(value(&s, "process_cpu_seconds_total", &[]) > 0.0);
    assert!(value(&s, "process_start_time_seconds", &[]) > 1.6e9);
    assert!(value(&s, &format!("{P}uptime_seconds"), &[]) > 0.0);
    let r = json(&srv.stop().stdout);
    assert_eq!(assert_reconciled(&r), (N, N));
}

#[test]
fn other_paths_and_methods_are_refused() {
    let (_srv, metrics) = start(&["--threads", "1"]);
    scrape(metrics);
    assert_eq!(get(metrics, "/").0, "HTTP/1.1 404 Not Found");
    assert_eq!(get(metrics, "/metricsx").0, "HTTP/1.1 404 Not Found");
    assert_eq!(
        http(metrics, "POST /metrics HTTP/1.1\r\n\r\n").0,
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert_eq!(http(metrics, "hello\r\n\r\n").0, "HTTP/1.1 400 Bad Request");
    assert_eq!(get(metrics, "/metrics?x=1").0, "HTTP/1.1 200 OK");
}

#[test]
fn a_stalled_client_does_not_stop_the_next_scrape() {
    let (_srv, metrics) = start(&["--threads", "1"]);
    // Connects, sends half a request line and never more.
    let mut stalled = TcpStream::connect(metrics).unwrap();
    stalled.write_all(b"GET /met").unwrap();
    // Served once the stalled one times out (the guard is well above that).
    let s = scrape(metrics);
    assert!(value(&s, &format!("{P}received_datagrams_total"), &[]) >= 0.0);
    let mut rest = Vec::new();
    stalled.set_read_timeout(Some(SCRAPE_GUARD)).unwrap();
    let _ = stalled.read_to_end(&mut rest);
    assert!(
        !rest.starts_with(b"HTTP/1.1 200"),
        "the half request got no metrics"
    );
}

#[test]
fn a_malformed_address_says_how_to_write_one() {
    let out = server_cmd(&["--metrics-listen", "localhost"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("'localhost'") && err.contains("IP:PORT"),
        "{err}"
    );
}

#[test]
fn an_address_in_use_is_named() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut child = server_cmd(&["--metrics-listen", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut child, Duration::from_secs(20));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("--metrics-listen {addr}")) && err.contains("in use"),
        "{err}"
    );
    assert!(!err.contains("listening on"), "{err}");
}
