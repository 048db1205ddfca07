//! Two test hosts joined by a veth pair, each in a network namespace this
//! test creates (and deletes on drop): the server host and the client host.
//! Addresses come from 198.18.0.0/15 (RFC 2544, benchmarking) and exist
//! only inside these namespaces; no traffic leaves them.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The server host's address.
pub const SERVER_IP: &str = "198.18.0.1";
/// The client host's address.
pub const CLIENT_IP: &str = "198.18.0.2";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// True when `ip` and `tc` can be run (and we are root).
pub fn available() -> bool {
    super::is_root()
        && ["ip", "tc"].iter().all(|t| {
            Command::new(t)
                .arg("-V")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
}

/// Runs a setup command (`ip ...`, `tc ...`); fails the test if it fails.
pub fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A server namespace and a client namespace joined by a veth pair.
pub struct NetPair {
    /// The server host's namespace name.
    pub server_ns: String,
    /// The client host's namespace name.
    pub client_ns: String,
    /// The server's end of the veth pair (inside `server_ns`).
    pub server_dev: String,
    /// The client's end of the veth pair (inside `client_ns`).
    pub client_dev: String,
}

impl NetPair {
    /// Creates both namespaces, the veth pair and the addresses.
    pub fn create() -> NetPair {
        let n = std::process::id() % 100_000 * 10 + NEXT.fetch_add(1, Ordering::Relaxed) % 10;
        let p = NetPair {
            server_ns: format!("upp-srv-{n}"),
            client_ns: format!("upp-cli-{n}"),
            server_dev: format!("vs{n}"),
            client_dev: format!("vc{n}"),
        };
        run(&["ip", "netns", "add", &p.server_ns]);
        run(&["ip", "netns", "add", &p.client_ns]);
        run(&[
            "ip",
            "link",
            "add",
            &p.server_dev,
            "netns",
            &p.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            &p.client_dev,
            "netns",
            &p.client_ns,
        ]);
        for (ns, dev, ip) in [
            (&p.server_ns, &p.server_dev, SERVER_IP),
            (&p.client_ns, &p.client_dev, CLIENT_IP),
        ] {
            let cidr = format!("{ip}/30");
            run(&["ip", "-n", ns, "addr", "add", &cidr, "dev", dev]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        p
    }

    /// Replaces the root qdisc on the server's side with `tbf ARGS...`:
    /// the server's replies leave no faster than its rate.
    pub fn throttle_server_egress(&self, tbf: &[&str]) {
        let mut args = vec![
            "tc",
            "-n",
            &self.server_ns,
            "qdisc",
            "replace",
            "dev",
            &self.server_dev,
            "root",
            "tbf",
        ];
        args.extend_from_slice(tbf);
        run(&args);
    }

    /// Sets the MTU of both ends of the veth pair (the link's frame size).
    pub fn set_mtu(&self, mtu: u32) {
        let mtu = mtu.to_string();
        for (ns, dev) in [
            (&self.server_ns, &self.server_dev),
            (&self.client_ns, &self.client_dev),
        ] {
            run(&["ip", "-n", ns, "link", "set", dev, "mtu", &mtu]);
        }
    }

    /// A counter of the `Ip:` lines of `/proc/net/snmp` inside namespace
    /// `ns` (e.g. `ReasmOKs`, datagrams reassembled from fragments).
    pub fn snmp_ip(ns: &str, name: &str) -> u64 {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "cat", "/proc/net/snmp"])
            .output()
            .expect("ip netns exec cat /proc/net/snmp");
        assert!(out.status.success(), "reading {ns}'s /proc/net/snmp failed");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines().filter(|l| l.starts_with("Ip:"));
        let (names, values) = (
            lines.next().expect("Ip header"),
            lines.next().expect("Ip values"),
        );
        let i = names
            .split_whitespace()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no Ip counter {name}"));
        let v = values.split_whitespace().nth(i).expect("Ip value");
        v.parse().expect("counter value")
    }

    /// Runs `f` on a thread that has entered the client namespace: sockets
    /// it creates live on the client host.
    pub fn in_client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = File::open(format!("/var/run/netns/{}", self.client_ns)).expect("netns file");
        std::thread::spawn(move || {
            // SAFETY: setns takes an open namespace descriptor and a flag; it
            // changes only this thread's network namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("client thread")
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth pair in it too.
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
