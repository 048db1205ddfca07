//! Phase 2: the server on a two-host LAN. Two network namespaces joined by
//! a veth pair with MTU 1500 are the server host and the client host; the
//! real `server` binary (`--packet-size 9000`) runs on the server host.
//! Datagrams of 1 and 1472 bytes fit one frame; 1473, 4000 and 8000 bytes
//! are fragmented by IP. Every echo must come back whole and byte-exact,
//! and the hosts' IP reassembly counters (`ReasmOKs` in each namespace's
//! `/proc/net/snmp`) prove the fragmentation really happened, both ways.
//! Then `loadgen` on the client host sends 3000-byte (fragmented) probes at
//! 2000/s for a second: nothing may be lost, and the server must count
//! exactly what loadgen sent. Needs root and `ip`; CI sets
//! `REQUIRE_NETNS=1`. Traffic goes only to the namespaces' own addresses.

mod util;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use util::netns::{self, NetPair, CLIENT_IP, SERVER_IP};
use util::*;

/// The link MTU: an IPv4 UDP payload of 1472 bytes fits one frame.
const MTU: u32 = 1500;
/// Sizes sent: one byte, a full frame, one byte over, and two that need
/// three and six fragments.
const SIZES: [usize; 5] = [1, 1472, 1473, 4000, 8000];
/// How many of [`SIZES`] do not fit one frame.
const FRAGMENTED: u64 = 3;
/// The server's buffer size: every size above fits.
const PACKET_SIZE: &str = "9000";

/// Starts the server on the server host, bound to [`SERVER_IP`].
fn start_server(net: &NetPair) -> ServerProc {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &net.server_ns, server_bin()]);
    cmd.args(["--bind", SERVER_IP, "--port", "0", "--threads", "2"]);
    cmd.args(["--packet-size", PACKET_SIZE, "--stats-interval", "0"]);
    cmd.arg("--json");
    ServerProc::start_cmd(&mut cmd)
}

/// On the client host: sends each size and returns what came back for it
/// (`None` when nothing did within 2 s).
fn echo_sizes(server: SocketAddr) -> Vec<(usize, Option<Vec<u8>>)> {
    let sock = UdpSocket::bind((CLIENT_IP, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = vec![0u8; 70_000];
    SIZES
        .iter()
        .map(|&n| {
            let payload = pattern(n, n as u8);
            sock.send_to(&payload, server).unwrap();
            let got = sock.recv_from(&mut buf).ok().map(|(len, from)| {
                assert_eq!(from, server, "an answer from a stranger");
                buf[..len].to_vec()
            });
            (n, got)
        })
        .collect()
}

#[test]
fn fragmented_datagrams_and_loadgen_across_a_lan() {
    if !prerequisite(netns::available(), "REQUIRE_NETNS", "root with ip and tc") {
        return;
    }
    let net = NetPair::create();
    net.set_mtu(MTU);
    let srv = start_server(&net);
    let addr = srv.addr;
    let reasm = |ns: &str| NetPair::snmp_ip(ns, "ReasmOKs");
    let (srv_before, cli_before) = (reasm(&net.server_ns), reasm(&net.client_ns));

    let echoes = net.in_client(move || echo_sizes(addr));
    let (srv_reasm, cli_reasm) = (
        reasm(&net.server_ns) - srv_before,
        reasm(&net.client_ns) - cli_before,
    );
    eprintln!("reassembled: server host {srv_reasm}, client host {cli_reasm}");
    for (n, got) in &echoes {
        let got = got
            .as_ref()
            .unwrap_or_else(|| panic!("no echo of the {n}-byte datagram"));
        assert_eq!(got.len(), *n, "the {n}-byte echo is not whole");
        assert!(*got == pattern(*n, *n as u8), "the {n}-byte echo differs");
    }
    assert_eq!(
        srv_reasm, FRAGMENTED,
        "the server host should reassemble exactly the datagrams over one frame"
    );
    assert_eq!(
        cli_reasm, FRAGMENTED,
        "the client host should reassemble exactly the echoes over one frame"
    );

    // loadgen on the client host, 3000-byte probes (three fragments each).
    let target = addr.to_string();
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &net.client_ns,
        env!("CARGO_BIN_EXE_loadgen"),
    ]);
    cmd.args(["--target", &target, "--rate", "2000", "--duration", "1"]);
    cmd.args(["--warmup", "0", "--json", "--size", "3000"]);
    let out = run_loadgen(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadgen failed: {stderr}");
    let lg: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("loadgen JSON ({e}); stderr: {stderr}"));
    assert_loadgen_consistent(&lg);
    let f = srv.stop();
    assert!(f.status.success(), "{}", f.stderr);
    drop(net);
    let r = json(&f.stdout);
    eprintln!(
        "loadgen sent {} received {} lost {}; server rx {} tx {} drops {}",
        lg["sent"], lg["received"], lg["lost"], r["rx_packets"], r["tx_packets"], r["drops"]
    );
    assert_eq!(count(&lg, "lost"), 0, "{lg}");
    assert_eq!(count(&lg, "corrupted"), 0, "{lg}");
    assert_eq!(count(&lg, "received"), count(&lg, "sent"), "{lg}");
    let (rx, tx) = assert_reconciled(&r);
    let probes = SIZES.len() as u64;
    assert_eq!(rx, probes + count(&lg, "sent"), "server rx: {r}");
    assert_eq!(tx, rx, "every datagram echoed: {r}");
    assert_eq!(r["drops"]["truncated"], 0, "{r}");
}
