//! Encrypted echo (`--psk-file`) over loopback: `client` and `loadgen`
//! round trips with exact counts; forged, malformed, wrong-key, replayed
//! and reply-direction datagrams are dropped under their reasons and never
//! answered; a plaintext is never echoed; bad key files and combinations
//! are refused with an error naming the file and the fix.

mod util;

use std::process::{Command, Output};
use std::time::Duration;

use udp_packet_pool::crypto::Psk;
use udp_packet_pool::wire::sealed::{self, Direction, NonceSeq, Packet, HEADER_LEN, OVERHEAD};
use util::psk::KeyFile;
use util::*;

const QUIET: Duration = Duration::from_millis(300);

/// Runs `client ARGS` to completion (bounded; the loadgen runner serves any
/// command).
fn client(args: &[&str]) -> Output {
    run_loadgen_within(Command::new(env!("CARGO_BIN_EXE_client")).args(args), GUARD)
}

fn drops(r: &serde_json::Value, reason: &str) -> u64 {
    r["drops"][reason].as_u64().unwrap()
}

fn seal(psk: &Psk, nonces: &mut NonceSeq, plain: &[u8]) -> Vec<u8> {
    sealed::seal(psk.cipher(), nonces, plain)
}

/// `client --psk-file KEY OPTS... 127.0.0.1 PORT` against `srv`.
fn sealed_client(key: &KeyFile, srv: &ServerProc, opts: &[&str]) -> Output {
    let port = srv.addr.port().to_string();
    let mut args = vec!["--psk-file", key.arg()];
    args.extend_from_slice(opts);
    args.extend_from_slice(&["127.0.0.1", &port]);
    client(&args)
}

/// `loadgen --psk-file KEY --target SRV --warmup 0 OPTS... --json`.
fn sealed_loadgen(key: &KeyFile, srv: &ServerProc, opts: &[&str]) -> serde_json::Value {
    let target = srv.addr.to_string();
    let mut args = vec![
        "--psk-file",
        key.arg(),
        "--target",
        &target,
        "--warmup",
        "0",
    ];
    args.extend_from_slice(opts);
    loadgen_json(&args)
}

#[test]
fn client_and_loadgen_round_trips_are_exact() {
    let key = KeyFile::new();
    let srv = ServerProc::start(&["--threads", "2", "--json", "--psk-file", key.arg()]);
    let out = sealed_client(&key, &srv, &["-c", "5", "-i", "1", "-s", "100"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("5 sent, 5 received, 0 lost"), "{text}");
    let opts = ["--size", "100", "--rate", "2000", "--duration", "0.5"];
    let r = sealed_loadgen(&key, &srv, &[&opts[..], &["--flows", "2"]].concat());
    let sent = count(&r, "sent");
    assert_eq!(sent, 1000, "{r}");
    assert_eq!(count(&r, "received"), sent, "{r}");
    assert_eq!(count(&r, "unauthenticated"), 0, "{r}");
    let s = json(&srv.stop().stdout);
    let (rx, tx) = assert_reconciled(&s);
    assert_eq!((rx, tx), (5 + sent, 5 + sent), "{s}");
    for reason in ["bad_seal", "replayed", "sealed_reply", "malformed"] {
        assert_eq!(drops(&s, reason), 0, "{reason}: {s}");
    }
    assert_eq!(s["tx_bytes"], s["rx_bytes"], "amplification 1: {s}");
}

#[test]
fn bad_datagrams_are_dropped_under_their_reasons_and_never_answered() {
    let key = KeyFile::new();
    let srv = ServerProc::start(&["--threads", "1", "--json", "--psk-file", key.arg()]);
    let sock = client_socket(srv.addr);
    let mut nonces = NonceSeq::new(Direction::Request, 1234, 0);
    let plain = b"the plaintext, never on the wire in clear";
    let good = seal(&key.psk, &mut nonces, plain);
    let reply = echo(&sock, srv.addr, &good);
    assert_eq!(reply.len(), good.len(), "amplification 1");
    let p = Packet::new_checked(&reply[..]).expect("a sealed reply");
    assert_eq!(p.direction(), Direction::Reply);
    assert!(
        !reply.windows(plain.len()).any(|w| w == plain),
        "plaintext in clear"
    );
    assert_eq!(sealed::open_reply(key.psk.cipher(), &reply).unwrap(), plain);

    let fresh = |nonces: &mut NonceSeq| seal(&key.psk, nonces, plain);
    let flip = |mut d: Vec<u8>, i: usize| {
        d[i] ^= 0x01;
        d
    };
    let n = good.len();
    let wrong = KeyFile::new();
    let mut server_like = NonceSeq::new(Direction::Reply, 99, 0);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("tag bit", flip(fresh(&mut nonces), n - 1), "bad_seal"),
        (
            "ciphertext bit",
            flip(fresh(&mut nonces), HEADER_LEN + 3),
            "bad_seal",
        ),
        ("nonce bit", flip(fresh(&mut nonces), 11), "bad_seal"),
        (
            "wrong key",
            seal(&wrong.psk, &mut nonces, plain),
            "bad_seal",
        ),
        ("magic bit", flip(fresh(&mut nonces), 0), "malformed"),
        (
            "short",
            fresh(&mut nonces)[..OVERHEAD - 1].to_vec(),
            "malformed",
        ),
        ("plaintext", plain.to_vec(), "malformed"),
        ("replay", good.clone(), "replayed"),
        ("own reply back", reply.clone(), "sealed_reply"),
        (
            "reply direction",
            seal(&key.psk, &mut server_like, plain),
            "sealed_reply",
        ),
    ];
    for (what, d, _) in &cases {
        sock.send_to(d, srv.addr).unwrap();
        sock.set_read_timeout(Some(QUIET)).unwrap();
        let mut buf = [0u8; 2048];
        let got = sock.recv_from(&mut buf);
        assert!(
            got.is_err(),
            "{what}: answered with {} bytes",
            got.unwrap().0
        );
    }
    // Still answering: the forgeries did not disturb the sender's window.
    let after = echo(&sock, srv.addr, &fresh(&mut nonces));
    assert_eq!(sealed::open_reply(key.psk.cipher(), &after).unwrap(), plain);
    let r = json(&srv.stop().stdout);
    let (rx, tx) = assert_reconciled(&r);
    assert_eq!((rx, tx), (2 + cases.len() as u64, 2), "{r}");
    for reason in ["bad_seal", "malformed", "replayed", "sealed_reply"] {
        let want = cases.iter().filter(|c| c.2 == reason).count() as u64;
        assert_eq!(drops(&r, reason), want, "{reason}: {r}");
    }
}

#[test]
fn a_wrong_key_fails_clearly_in_client_and_counts_in_loadgen() {
    let key = KeyFile::new();
    let other = KeyFile::new();
    let srv = ServerProc::start(&["--threads", "1", "--json", "--psk-file", key.arg()]);
    let out = sealed_client(&other, &srv, &["--timeout", "200"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no valid reply: wrong key?"), "{err}");
    let r = json(&srv.stop().stdout);
    assert_eq!(drops(&r, "bad_seal"), 1, "{r}");

    // Against a plain echo server every reply is the sealed request itself:
    // not a reply, so each one counts as unauthenticated.
    let plain = ServerProc::start(&["--threads", "1", "--json"]);
    let opts = ["--size", "80", "--rate", "1000", "--duration", "0.2"];
    let r = sealed_loadgen(&key, &plain, &opts);
    assert_eq!(count(&r, "sent"), 200, "{r}");
    assert_eq!(count(&r, "received"), 0, "{r}");
    assert_eq!(count(&r, "unauthenticated"), 200, "{r}");
    drop(plain.stop());
}

#[test]
fn bad_key_files_and_combinations_are_refused() {
    let open = KeyFile::with_text(&format!("{}\n", "ab".repeat(32)), 0o644);
    let short = KeyFile::with_text("abcd\n", 0o600);
    let good = KeyFile::new();
    let server = |args: &[&str]| run_loadgen_within(&mut server_cmd(args), GUARD);
    let missing = "/nonexistent/psk.key";
    // (what ran, what the error must name, the fix it must give)
    let refusals = [
        (server(&["--psk-file", open.arg()]), open.arg(), "chmod 600"),
        (
            server(&["--psk-file", short.arg()]),
            short.arg(),
            "64 hex digits",
        ),
        (server(&["--psk-file", missing]), missing, "cannot read"),
        (
            server(&["--psk-file", good.arg(), "--protocol", "framed"]),
            "--psk-file",
            "--protocol echo only",
        ),
        (
            client(&["--psk-file", open.arg(), "127.0.0.1", "9"]),
            open.arg(),
            "chmod 600",
        ),
        (
            loadgen(&["--psk-file", short.arg(), "--size", "100"]),
            short.arg(),
            "xxd -p -c64",
        ),
        (
            client(&["--psk-file", good.arg(), "--protocol", "framed", "::1", "9"]),
            "--psk-file",
            "--protocol echo only",
        ),
        (
            loadgen(&[
                "--psk-file",
                good.arg(),
                "--protocol",
                "sockperf",
                "--size",
                "100",
            ]),
            "--psk-file",
            "--protocol echo only",
        ),
        (
            loadgen(&["--psk-file", good.arg(), "--size", "64"]),
            "--size 64 is too small for --psk-file",
            "(68 bytes)",
        ),
    ];
    for (i, (out, names, fix)) in refusals.iter().enumerate() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "case {i}: {err}");
        assert!(err.contains(names) && err.contains(fix), "case {i}: {err}");
    }
}
