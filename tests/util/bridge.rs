//! A small LAN of network namespaces this test creates (and deletes on
//! drop, also when setting up fails half way): a server host whose
//! namespace holds a Linux bridge, and `hosts` load hosts, each joined to
//! the bridge by a veth pair. Addresses come from 198.18.0.0/15 (RFC 2544,
//! benchmarking), exist only inside these namespaces, and no traffic
//! leaves them. Names carry the test's pid, so parallel runs do not meet.

use std::sync::atomic::{AtomicU32, Ordering};

use super::netns::run;

/// The server host's address (on its bridge).
pub const SERVER_IP: &str = "198.18.0.1";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The server's namespace with the bridge, and the load hosts' namespaces.
pub struct BridgedLan {
    /// The server host's namespace (holds the bridge).
    pub server_ns: String,
    /// The load hosts' namespaces, in order.
    pub host_ns: Vec<String>,
}

impl BridgedLan {
    /// Creates the namespaces, the bridge, one veth pair per load host
    /// (one end on the bridge) and the addresses: the server 198.18.0.1,
    /// load host i 198.18.0.(10 + i), all in 198.18.0.0/24.
    pub fn create(hosts: usize) -> BridgedLan {
        let n = std::process::id() % 100_000 * 10 + NEXT.fetch_add(1, Ordering::Relaxed) % 10;
        let lan = BridgedLan {
            server_ns: format!("upp-bsrv-{n}"),
            host_ns: (0..hosts).map(|i| format!("upp-bh{i}-{n}")).collect(),
        };
        // `lan` exists from here on: a failing step below drops it, and
        // the drop deletes whatever namespaces were made.
        let (srv, bridge) = (&lan.server_ns, format!("ub{n}"));
        run(&["ip", "netns", "add", srv]);
        run(&["ip", "-n", srv, "link", "add", &bridge, "type", "bridge"]);
        let srv_cidr = format!("{SERVER_IP}/24");
        run(&["ip", "-n", srv, "addr", "add", &srv_cidr, "dev", &bridge]);
        for dev in [bridge.as_str(), "lo"] {
            run(&["ip", "-n", srv, "link", "set", dev, "up"]);
        }
        for (i, ns) in lan.host_ns.iter().enumerate() {
            let (port, eth) = (format!("ub{n}p{i}"), format!("ub{n}h{i}"));
            run(&["ip", "netns", "add", ns]);
            run(&[
                "ip", "-n", srv, "link", "add", &port, "type", "veth", "peer", "name", &eth,
                "netns", ns,
            ]);
            run(&["ip", "-n", srv, "link", "set", &port, "master", &bridge]);
            run(&["ip", "-n", srv, "link", "set", &port, "up"]);
            let cidr = format!("198.18.0.{}/24", 10 + i);
            run(&["ip", "-n", ns, "addr", "add", &cidr, "dev", &eth]);
            run(&["ip", "-n", ns, "link", "set", &eth, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        lan
    }
}

impl Drop for BridgedLan {
    fn drop(&mut self) {
        // Deleting a namespace deletes its devices: the bridge with the
        // server's, each veth pair with its host's.
        for ns in std::iter::once(&self.server_ns).chain(&self.host_ns) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .output();
        }
    }
}
