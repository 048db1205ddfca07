//! Client tracking (`--clients`, `--client-ttl`) over loopback: every
//! client's datagrams and bytes are counted exactly, merged over the
//! workers of one shared socket; the statistics line shows the active
//! clients, the report the ten busiest; idle clients are forgotten after
//! the TTL and a full table gives up its idlest client.

mod util;

use std::net::{SocketAddr, UdpSocket};
use std::thread::sleep;
use std::time::Duration;

use util::*;

/// `server ARGS` on 127.0.0.1, statistics every 0.1 s, JSON report.
fn tracking_server(args: &[&str]) -> ServerProc {
    ServerProc::start_with_stats(args)
}

/// `n` datagrams of `len` bytes from `sock`, each echoed.
fn talk(srv: &ServerProc, sock: &UdpSocket, n: usize, len: usize) {
    for k in 0..n {
        assert_eq!(echo(sock, srv.addr, &pattern(len, k as u8)).len(), len);
    }
}

/// The report's entry for `addr` in the top talkers.
fn talker(r: &serde_json::Value, addr: SocketAddr) -> Option<&serde_json::Value> {
    let top = r["clients"]["top"].as_array().expect("a top talkers list");
    top.iter().find(|t| t["addr"] == addr.to_string())
}

#[test]
fn every_client_is_counted_exactly_and_the_busiest_ten_are_listed() {
    let mut srv = tracking_server(&["--threads", "2"]);
    let socks: Vec<UdpSocket> = (0..12).map(|_| client_socket(srv.addr)).collect();
    // Client i: i + 1 datagrams of 10 + i bytes.
    for (i, s) in socks.iter().enumerate() {
        talk(&srv, s, i + 1, 10 + i);
    }
    let line = srv.wait_stderr(|l| l.ends_with("| clients 12"));
    assert!(line.is_some(), "no statistics line with 12 active clients");
    let r = json(&srv.stop().stdout);
    assert_reconciled(&r);
    let c = &r["clients"];
    assert_eq!(c["active"], 12, "{c}");
    assert_eq!(
        (c["evicted_full"].as_u64(), c["evicted_idle"].as_u64()),
        (Some(0), Some(0))
    );
    let top = c["top"].as_array().unwrap();
    assert_eq!(top.len(), 10, "the ten busiest: {c}");
    for (rank, i) in (2..12).rev().enumerate() {
        let addr = socks[i].local_addr().unwrap();
        assert_eq!(top[rank]["addr"], addr.to_string(), "rank {rank}: {c}");
        let n = i as u64 + 1;
        assert_eq!(top[rank]["packets"], n);
        assert_eq!(top[rank]["answered"], n);
        assert_eq!(top[rank]["bytes"], n * (10 + i as u64));
        let (first, last) = (
            &top[rank]["first_seen_s_ago"],
            &top[rank]["last_seen_s_ago"],
        );
        assert!(
            first.as_f64() >= last.as_f64() && last.as_f64() >= Some(0.0),
            "{c}"
        );
    }
    for quiet in &socks[..2] {
        assert!(talker(&r, quiet.local_addr().unwrap()).is_none());
    }
}

#[test]
fn idle_clients_are_forgotten_after_the_ttl() {
    let srv = tracking_server(&["--threads", "1", "--client-ttl", "1"]);
    let (idle, busy) = (client_socket(srv.addr), client_socket(srv.addr));
    talk(&srv, &idle, 3, 20);
    sleep(Duration::from_millis(1500)); // longer than --client-ttl 1
    talk(&srv, &busy, 2, 30);
    let r = json(&srv.stop().stdout);
    assert_reconciled(&r);
    assert_eq!(r["clients"]["active"], 1, "{}", r["clients"]);
    assert!(talker(&r, idle.local_addr().unwrap()).is_none());
    let b = talker(&r, busy.local_addr().unwrap()).expect("the busy client");
    assert_eq!(
        (b["packets"].as_u64(), b["bytes"].as_u64()),
        (Some(2), Some(60))
    );
}

#[test]
fn a_full_table_gives_up_its_idlest_client() {
    // --clients 8: one set of 8 entries; clients 9 and 10 take the entries
    // of clients 1 and 2, the idlest.
    let srv = tracking_server(&["--threads", "1", "--clients", "8"]);
    let socks: Vec<UdpSocket> = (0..10).map(|_| client_socket(srv.addr)).collect();
    for s in &socks {
        talk(&srv, s, 1, 16);
    }
    let r = json(&srv.stop().stdout);
    assert_reconciled(&r);
    let c = &r["clients"];
    assert_eq!(
        (c["active"].as_u64(), c["evicted_full"].as_u64()),
        (Some(8), Some(2)),
        "{c}"
    );
    for (i, s) in socks.iter().enumerate() {
        let listed = talker(&r, s.local_addr().unwrap()).is_some();
        assert_eq!(listed, i >= 2, "client {i}: {c}");
    }
}

#[test]
fn tracking_off_and_bad_flags() {
    let mut srv = tracking_server(&["--threads", "1", "--clients", "0"]);
    let s = client_socket(srv.addr);
    talk(&srv, &s, 2, 8);
    let line = srv
        .wait_stderr(|l| l.starts_with('['))
        .expect("a statistics line");
    assert!(!line.contains("clients"), "{line}");
    let r = json(&srv.stop().stdout);
    assert_reconciled(&r);
    assert!(r["clients"].is_null(), "{}", r["clients"]);

    for (args, says) in [
        (&["--client-ttl", "0"][..], "--client-ttl"),
        (&["--clients", "20000000"][..], "--clients <N>"),
        (
            &["--admin", "127.0.0.1"][..],
            "--admin needs --protocol framed",
        ),
        (
            &[
                "--protocol",
                "framed",
                "--admin",
                "127.0.0.1",
                "--io",
                "uring",
            ][..],
            "--admin does not work with --io uring",
        ),
        (
            &["--protocol", "framed", "--admin", "nonsense"][..],
            "'nonsense' is not a network",
        ),
    ] {
        let out = server_cmd(args).output().expect("run server");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn top_talkers_in_the_sighup_summary_and_the_text_report() {
    let mut srv = ServerProc::start(&["--threads", "1"]);
    let s = client_socket(srv.addr);
    talk(&srv, &s, 3, 25);
    let want = format!(
        "client      {} packets 3 bytes 75 answered 3",
        s.local_addr().unwrap()
    );
    srv.signal(libc::SIGHUP);
    let line = srv.wait_stderr(|l| l.contains(&want));
    assert!(line.is_some(), "SIGHUP summary without {want:?}");
    let out = srv.stop().stdout;
    assert!(
        out.contains("clients       1 active within --client-ttl 60 s"),
        "{out}"
    );
    assert!(out.contains(&want), "{out}");
}
