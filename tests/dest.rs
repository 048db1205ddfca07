//! Replies come from the address the request was sent to, and datagrams
//! sent to broadcast or multicast destinations are refused.
//!
//! On loopback (every 127.0.0.0/8 address is local): a client connected to
//! 127.0.0.2 only accepts datagrams from 127.0.0.2, so it sees the echo only
//! if the server, bound to 0.0.0.0 (or dual-stack ::), replies from there.
//! In two network namespaces joined by a veth: the same with two IPv6 and
//! three IPv4 addresses on the server's interface, and a subnet broadcast
//! and a multicast datagram that must not be answered.

mod util;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use util::netns::{self, NetPair, CLIENT_IP, SERVER_IP};
use util::*;

fn connected_echo(bind: &str, to: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind(bind).unwrap();
    s.connect(to).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s.send(payload).unwrap();
    let mut buf = [0u8; 256];
    s.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

#[test]
fn replies_leave_from_the_address_the_request_was_sent_to() {
    for bind in ["0.0.0.0", "::"] {
        let srv = ServerProc::start_exact(&[
            "--port",
            "0",
            "--bind",
            bind,
            "--stats-interval",
            "0",
            "--json",
        ]);
        let port = srv.addr.port();
        for dst in ["127.0.0.1", "127.0.0.2", "127.3.4.5"] {
            let to: SocketAddr = format!("{dst}:{port}").parse().unwrap();
            assert_eq!(
                connected_echo("127.0.0.1:0", to, dst.as_bytes()).as_deref(),
                Some(dst.as_bytes()),
                "bound {bind}: no echo from {to} to a connected client"
            );
        }
        let r = json(&srv.stop().stdout);
        let (rx, tx) = assert_reconciled(&r);
        assert_eq!((rx, tx), (3, 3));
    }
}

fn ip(ns: &str, args: &[&str]) {
    let out = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn several_addresses_on_a_veth_broadcast_and_multicast() {
    if !prerequisite(netns::available(), "REQUIRE_NETNS", "root with ip and tc") {
        return;
    }
    let net = NetPair::create();
    for a in ["2001:db8::1/64", "2001:db8::2/64"] {
        ip(
            &net.server_ns,
            &["-6", "addr", "add", a, "dev", &net.server_dev, "nodad"],
        );
    }
    ip(
        &net.client_ns,
        &[
            "-6",
            "addr",
            "add",
            "2001:db8::10/64",
            "dev",
            &net.client_dev,
            "nodad",
        ],
    );
    // A second IPv4 subnet on the same veth: the server has 198.18.1.1 and
    // 198.18.1.2 besides SERVER_IP, the client 198.18.1.10.
    for a in ["198.18.1.1/24", "198.18.1.2/24"] {
        ip(&net.server_ns, &["addr", "add", a, "dev", &net.server_dev]);
    }
    ip(
        &net.client_ns,
        &["addr", "add", "198.18.1.10/24", "dev", &net.client_dev],
    );
    ip(
        &net.client_ns,
        &["route", "add", "224.0.0.0/4", "dev", &net.client_dev],
    );
    // One server dual-stack (the second IPv6 address), one on 0.0.0.0
    // (IPv4 broadcast and multicast reach IPv4 sockets).
    let start = |bind: &str| {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &net.server_ns, server_bin()]);
        cmd.args([
            "--bind",
            bind,
            "--port",
            "0",
            "--stats-interval",
            "0",
            "--json",
        ]);
        ServerProc::start_cmd(&mut cmd)
    };
    let (srv6, srv4) = (start("::"), start("0.0.0.0"));
    let (p6, p4) = (srv6.addr.port(), srv4.addr.port());
    let (v6_echo, v4_echo, bcast, mcast) = net.in_client(move || {
        // Both addresses: without the reply-source rule the kernel picks
        // one source for both replies, so one of the two goes unseen.
        let v6_echo: Vec<Option<Vec<u8>>> = ["2001:db8::1", "2001:db8::2"]
            .iter()
            .map(|a| {
                let to: SocketAddr = format!("[{a}]:{p6}").parse().unwrap();
                connected_echo("[2001:db8::10]:0", to, a.as_bytes())
            })
            .collect();
        // Three IPv4 addresses on one interface: each reply must leave
        // from the one its request was sent to.
        let v4_echo: Vec<Option<Vec<u8>>> = [
            (SERVER_IP, CLIENT_IP),
            ("198.18.1.1", "198.18.1.10"),
            ("198.18.1.2", "198.18.1.10"),
        ]
        .iter()
        .map(|(to, from)| {
            let to: SocketAddr = format!("{to}:{p4}").parse().unwrap();
            connected_echo(&format!("{from}:0"), to, to.ip().to_string().as_bytes())
        })
        .collect();
        // Datagrams to the subnet's broadcast address and to all hosts.
        let s = UdpSocket::bind((CLIENT_IP, 0)).unwrap();
        s.set_broadcast(true).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s.send_to(b"broadcast", ("198.18.0.3", p4)).unwrap();
        let mut buf = [0u8; 64];
        let bcast = s
            .recv_from(&mut buf)
            .ok()
            .map(|(n, a)| (buf[..n].to_vec(), a));
        s.send_to(b"multicast", ("224.0.0.1", p4)).unwrap();
        let mcast = s
            .recv_from(&mut buf)
            .ok()
            .map(|(n, a)| (buf[..n].to_vec(), a));
        (v6_echo, v4_echo, bcast, mcast)
    });
    let r6 = json(&srv6.stop().stdout);
    let r4 = json(&srv4.stop().stdout);
    drop(net);
    assert_reconciled(&r6);
    assert_reconciled(&r4);
    assert_eq!(
        v6_echo,
        vec![Some(b"2001:db8::1".to_vec()), Some(b"2001:db8::2".to_vec())],
        "{r6}"
    );
    assert_eq!(
        v4_echo,
        vec![
            Some(SERVER_IP.as_bytes().to_vec()),
            Some(b"198.18.1.1".to_vec()),
            Some(b"198.18.1.2".to_vec())
        ],
        "{r4}"
    );
    assert_eq!(bcast, None, "a broadcast datagram was answered: {r4}");
    assert_eq!(mcast, None, "a multicast datagram was answered: {r4}");
    assert_eq!(r4["rx_packets"], 5, "the server received all five: {r4}");
    assert_eq!(r4["drops"]["bad_dest"], 2, "{r4}");
}
