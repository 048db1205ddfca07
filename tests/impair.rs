//! `impair` (tools/src/impair) between loadgen and the real server, on
//! loopback: the loss loadgen measures matches the round-trip setting
//! within a stated statistical tolerance, and the relay's own counts agree
//! with the server's and loadgen's exactly wherever the meaning is the same.
//! Counts are asserted, never timings; every process is killed on drop.

use std::net::UdpSocket;
use std::process::Command;

mod util;

use util::{assert_loadgen_consistent, count, json, loadgen_json, ServerProc};

/// What one run left behind.
struct Run {
    /// loadgen's report.
    lg: serde_json::Value,
    /// The relay's summary.
    relay: serde_json::Value,
    /// The server's final report.
    server: serde_json::Value,
}

impl Run {
    fn up(&self, key: &str) -> u64 {
        count(&self.relay["client_to_server"], key)
    }
    fn down(&self, key: &str) -> u64 {
        count(&self.relay["server_to_client"], key)
    }
}

/// Starts `impair --listen 127.0.0.1:0 --upstream UPSTREAM --json ARGS`.
/// `ServerProc` fits any process that prints `listening on ADDR` on stderr
/// and a report on stdout at SIGINT (and kills it on drop).
fn start_relay(upstream: &str, args: &[&str]) -> ServerProc {
    ServerProc::start_cmd(
        Command::new(env!("CARGO_BIN_EXE_impair"))
            .args(["--listen", "127.0.0.1:0", "--upstream", upstream, "--json"])
            .args(args),
    )
}

/// Stops a process started by `start_relay` or `ServerProc::start` and
/// parses its JSON report.
fn stop(p: ServerProc, what: &str) -> serde_json::Value {
    let f = p.stop();
    assert!(
        f.status.success(),
        "{what} failed: {:?}\n{}",
        f.status,
        f.stderr
    );
    json(&f.stdout)
}

/// server (one worker: its echoes keep the order they arrived in) <- relay
/// with `args` <- loadgen at 2000/s for `duration` s; then stops the relay and the
/// server and checks what must hold whatever the settings.
fn run(relay_args: &[&str], duration: &str) -> Run {
    let server = ServerProc::start(&["--threads", "1", "--json"]);
    let relay = start_relay(&server.addr.to_string(), relay_args);
    let target = relay.addr.to_string();
    let args = [
        "--target",
        &target,
        "--rate",
        "2000",
        "--duration",
        duration,
        "--warmup",
        "0",
        // Generous: held datagrams (reorder, delay) must be back before
        // loadgen stops listening, even on a busy machine.
        "--drain-ms",
        "2000",
    ];
    let lg = loadgen_json(&args);
    let relay = stop(relay, "impair");
    let server = stop(server, "server");
    let r = Run { lg, relay, server };
    assert_loadgen_consistent(&r.lg);
    let (rx, tx) = util::assert_reconciled(&r.server);
    assert_eq!(r.relay["reconciled"], true, "{}", r.relay);
    // Loopback at 2000/s: every datagram loadgen sent reached the relay, the
    // server got exactly what the relay forwarded, and the relay got every
    // echo.
    assert_eq!(r.up("received"), count(&r.lg, "sent"), "{}", r.relay);
    assert_eq!(rx, r.up("forwarded"), "server rx vs relay: {}", r.relay);
    assert_eq!(tx, r.down("received"), "server tx vs relay: {}", r.relay);
    r
}

#[test]
fn loss_matches_the_round_trip_setting() {
    let r = run(&["--loss", "20", "--seed", "1"], "2");
    let sent = count(&r.lg, "sent") as f64;
    let lost = count(&r.lg, "lost") as f64;
    // Each direction drops 20% independently, so a round trip survives with
    // probability 0.8^2: expected loss p = 0.36. The number lost is binomial
    // (n = sent, p); tolerance 5 standard errors, sqrt(p(1-p)/n) = 0.0076 at
    // n = 4000, i.e. +-0.038 (a false failure less than once in a million
    // seeds; with --seed 1 the decisions are fixed anyway).
    let p = 1.0 - 0.8f64 * 0.8;
    let se = (p * (1.0 - p) / sent).sqrt();
    let measured = lost / sent;
    eprintln!(
        "measured round-trip loss {measured:.4} vs {p:.2} (tolerance {:.4}); relay {}",
        5.0 * se,
        r.relay
    );
    assert!(
        (measured - p).abs() < 5.0 * se,
        "loss {measured} not within 5 se ({se}) of {p}: {} {}",
        r.lg,
        r.relay
    );
    // Loss only: what loadgen lost is exactly what the relay dropped.
    assert!(r.up("dropped_loss") > 0 && r.down("dropped_loss") > 0);
    assert_eq!(count(&r.lg, "received"), r.down("forwarded"), "{}", r.relay);
    assert_eq!(count(&r.lg, "duplicates"), 0);
    assert_eq!(count(&r.lg, "corrupted"), 0);
}

#[test]
fn duplicates_and_reordering_are_counted() {
    let r = run(
        &["--duplicate", "10", "--reorder", "10", "--seed", "2"],
        "2",
    );
    eprintln!(
        "loadgen duplicates {} reordered {}; relay {}",
        count(&r.lg, "duplicates"),
        count(&r.lg, "reordered"),
        r.relay
    );
    // Nothing is lost or changed, so every datagram the relay delivers
    // beyond the first copy of each probe is a duplicate: a request
    // duplicated on the way in is echoed twice (one duplicate echo), a
    // reply duplicated on the way out is one more. So the relay's
    // duplicated (both directions) is exactly the surplus it delivered:
    assert_eq!(count(&r.lg, "lost"), 0, "{}", r.lg);
    let dups = r.up("duplicated") + r.down("duplicated");
    assert_eq!(r.down("forwarded"), count(&r.lg, "sent") + dups);
    // But loadgen stops listening as soon as every probe is answered, so
    // copies trailing the last first answer go uncounted: at most the last
    // probe's other copies (3: duplicated both ways) plus one copy held
    // back for reordering. Exact otherwise (and usually exact outright).
    let counted = count(&r.lg, "duplicates");
    assert!(counted > 0, "{}", r.lg);
    assert!(
        counted <= dups && dups - counted <= 4,
        "loadgen {counted} vs relay {dups}: {} {}",
        r.lg,
        r.relay
    );
    // Reordering is not exact: a request held back on the way in and its
    // reply held back on the way out can come back in order, and a packet
    // held behind its own duplicate reaches loadgen as the duplicate. But
    // every late arrival loadgen sees took a swap the relay counted.
    let reordered = count(&r.lg, "reordered");
    assert!(reordered > 0, "{}", r.lg);
    assert!(
        reordered <= r.up("reordered") + r.down("reordered"),
        "{} {}",
        r.lg,
        r.relay
    );
    assert!(r.up("duplicated") > 0 && r.down("duplicated") > 0);
    assert_eq!(count(&r.lg, "corrupted"), 0);
}

#[test]
fn corruption_is_counted() {
    let r = run(&["--corrupt", "10", "--seed", "3"], "2");
    let sent = count(&r.lg, "sent");
    // A flipped byte shows as `corrupted` (bad checksum) or, when it hits
    // the magic number, `foreign`.
    let bad = count(&r.lg, "corrupted") + count(&r.lg, "foreign");
    let flipped = r.up("corrupted") + r.down("corrupted");
    eprintln!(
        "loadgen corrupted+foreign {bad}, relay flipped {flipped}; {}",
        r.relay
    );
    assert!(count(&r.lg, "corrupted") > 0, "{}", r.lg);
    // Exact: nothing dropped or duplicated, so every reply is either intact
    // or bad, and a bad reply is a lost probe.
    assert_eq!(r.down("forwarded"), sent);
    assert_eq!(count(&r.lg, "received") + bad, sent, "{}", r.lg);
    assert_eq!(count(&r.lg, "lost"), bad, "{}", r.lg);
    // Not exact: a request corrupted on the way in whose echo is corrupted
    // again reaches loadgen as one bad datagram but counts twice in the
    // relay. That happens to a binomial number of probes (n = sent,
    // p = 0.1^2); allow its mean plus 5 standard errors.
    assert!(bad <= flipped, "{bad} > {flipped}");
    let (n, p) = (sent as f64, 0.01);
    let slack = n * p + 5.0 * (n * p * (1.0 - p)).sqrt();
    assert!(((flipped - bad) as f64) <= slack, "{bad} vs {flipped}");
    assert_eq!(count(&r.lg, "duplicates"), 0);
}

#[test]
fn rate_delay_and_client_table_limit() {
    let r = run(
        &[
            "--rate",
            "500",
            "--delay-ms",
            "2",
            "--jitter-ms",
            "1",
            "--max-clients",
            "1",
        ],
        "1",
    );
    // 2000/s through a 500/s bucket: most is dropped, each drop counted.
    assert!(r.up("dropped_rate") > 0, "{}", r.relay);
    assert!(r.up("delayed") > 0 && r.down("delayed") > 0, "{}", r.relay);
    assert_eq!(
        count(&r.lg, "received"),
        r.down("forwarded"),
        "{} {}",
        r.lg,
        r.relay
    );
    assert_eq!(r.relay["clients"], 1);

    // A second client finds the table (one slot) full.
    let server = ServerProc::start(&["--threads", "1"]);
    let relay = start_relay(&server.addr.to_string(), &["--max-clients", "1"]);
    let (a, b) = (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    a.set_read_timeout(Some(util::GUARD)).unwrap();
    assert_eq!(util::echo(&a, relay.addr, b"first"), b"first");
    for _ in 0..3 {
        b.send_to(b"refused", relay.addr).unwrap();
    }
    // The relay handles datagrams in order: once a's second echo is back,
    // b's three have been seen.
    assert_eq!(util::echo(&a, relay.addr, b"again"), b"again");
    let s = stop(relay, "impair");
    assert_eq!(s["clients"], 1, "{s}");
    assert_eq!(s["clients_refused"], 1, "{s}");
    assert_eq!(count(&s["client_to_server"], "dropped_no_slot"), 3, "{s}");
    assert_eq!(count(&s["client_to_server"], "forwarded"), 2, "{s}");
    assert_eq!(s["reconciled"], true, "{s}");
}
