//! The framed broadcast (`server --protocol framed --admin CIDR`) over
//! loopback: a broadcast from an admin reaches exactly the active clients
//! that were answered, once each, as a broadcast message frame with its
//! payload, and the admin gets its ack; idle, refused and non-admin
//! senders get nothing; a broadcast from outside `--admin` gets one error
//! reply of its own length and no fan-out; `client --broadcast` sends one.

mod util;

use std::net::UdpSocket;
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

use udp_packet_pool::wire::framed::{self, ErrorCode, Packet, Type};
use util::*;

const QUIET: Duration = Duration::from_millis(300);

/// `server --protocol framed ARGS` on 127.0.0.1 (reached from any
/// 127.0.0.0/8 source), statistics every 0.1 s, JSON report.
fn framed_server(args: &[&str]) -> ServerProc {
    let mut all = vec!["--protocol", "framed", "--threads", "2"];
    all.extend_from_slice(args);
    ServerProc::start_with_stats(&all)
}

/// A socket on `ip` (a loopback address) with a short receive timeout.
fn sock_on(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

/// One framed echo request from `s`, answered (or, with `answered` false,
/// refused: no reply).
fn hello(srv: &ServerProc, s: &UdpSocket, answered: bool) {
    let req = framed::encode(Type::EchoRequest, 1, b"hello");
    if answered {
        assert_eq!(
            echo(s, srv.addr, &req),
            framed::encode(Type::EchoReply, 1, b"hello")
        );
    } else {
        expect_silence(s, srv.addr, &req, QUIET);
    }
}

/// Every datagram `s` receives until it is quiet for [`QUIET`].
fn drain(s: &UdpSocket) -> Vec<Vec<u8>> {
    s.set_read_timeout(Some(QUIET)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.recv(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    got
}

#[test]
fn an_admin_broadcast_reaches_exactly_the_active_answered_clients() {
    let mut srv = framed_server(&[
        "--admin",
        "127.0.0.2",
        "--client-ttl",
        "2",
        "--allow",
        "127.0.0.1",
        "--allow",
        "127.0.0.2",
    ]);
    let idle = sock_on("127.0.0.1");
    hello(&srv, &idle, true);
    sleep(Duration::from_millis(2500)); // longer than --client-ttl 2
    let live: Vec<UdpSocket> = (0..3).map(|_| sock_on("127.0.0.1")).collect();
    for s in &live {
        hello(&srv, s, true);
    }
    let refused = sock_on("127.0.0.3"); // outside --allow: not_allowed
    hello(&srv, &refused, false);
    let admin = sock_on("127.0.0.2");
    hello(&srv, &admin, true); // a client too, but never sent its own broadcast
                               // Every worker has published them: 3 live + refused + admin.
    assert!(srv.wait_stderr(|l| l.ends_with("| clients 5")).is_some());

    let req = framed::encode(Type::Broadcast, 77, b"to everyone");
    assert_eq!(
        echo(&admin, srv.addr, &req),
        framed::encode(Type::EchoReply, 77, b"to everyone")
    );
    for s in &live {
        let got = drain(s);
        assert_eq!(got.len(), 1, "one broadcast message each: {got:?}");
        let p = Packet::new_checked(&got[0][..]).expect("an intact frame");
        assert_eq!(p.frame_type(), Some(Type::BroadcastMessage));
        assert_eq!(p.payload(), b"to everyone");
    }
    for (who, s) in [("idle", &idle), ("refused", &refused), ("admin", &admin)] {
        assert_eq!(drain(s), Vec::<Vec<u8>>::new(), "{who} got something");
    }
    let r = json(&srv.stop().stdout);
    assert_reconciled(&r);
    let b = &r["broadcast"];
    assert_eq!(
        (
            b["broadcasts"].as_u64(),
            b["targets"].as_u64(),
            b["sent"].as_u64()
        ),
        (Some(1), Some(3), Some(3)),
        "{b}"
    );
    assert_eq!(r["broadcast_unaccounted"], 0);
    assert_eq!(r["drops"]["not_allowed"], 1);
}

#[test]
fn a_broadcast_from_outside_admin_gets_one_reply_of_its_length() {
    for admin in [&["--admin", "127.0.0.2"][..], &[][..]] {
        let srv = framed_server(admin);
        let client = sock_on("127.0.0.1");
        hello(&srv, &client, true);
        let other = sock_on("127.0.0.1");
        for len in [0usize, 1, 40] {
            let req = framed::encode(Type::Broadcast, 5, &pattern(len, 3));
            let reply = echo(&other, srv.addr, &req);
            assert_eq!(reply.len(), req.len(), "{admin:?}");
            let p = Packet::new_checked(&reply[..]).unwrap();
            assert_eq!(p.frame_type(), Some(Type::Error));
            assert_eq!(p.status(), ErrorCode::NotAllowed as u8);
        }
        assert!(
            drain(&client).is_empty() && drain(&other).is_empty(),
            "{admin:?}"
        );
        let r = json(&srv.stop().stdout);
        assert_reconciled(&r);
        assert_eq!(
            (
                r["broadcast"]["broadcasts"].as_u64(),
                r["broadcast"]["targets"].as_u64()
            ),
            (Some(0), Some(0))
        );
        assert_eq!(r["tx_bytes"], r["rx_bytes"], "amplification 1: {r}");
    }
}

#[test]
fn client_broadcast_is_acknowledged_or_refused() {
    let client = |srv: &ServerProc| {
        Command::new(env!("CARGO_BIN_EXE_client"))
            .args([
                "127.0.0.1",
                &srv.addr.port().to_string(),
                "--protocol",
                "framed",
            ])
            .args(["--broadcast", "maintenance at noon"])
            .output()
            .expect("run client")
    };
    let mut srv = framed_server(&["--admin", "127.0.0.1"]);
    let listener = sock_on("127.0.0.1");
    hello(&srv, &listener, true);
    assert!(srv.wait_stderr(|l| l.ends_with("| clients 1")).is_some());
    let out = client(&srv);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("acknowledged"),
        "{said}"
    );
    let got = drain(&listener);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        Packet::new_checked(&got[0][..]).unwrap().payload(),
        b"maintenance at noon"
    );
    drop(srv);

    let srv = framed_server(&[]);
    let out = client(&srv);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("broadcast refused") && err.contains("--admin"),
        "{err}"
    );
}
