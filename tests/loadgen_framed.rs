//! `loadgen --protocol framed` against `server --protocol framed` (exact
//! counts, with and without `--gso` trains), against a plain echo server
//! (every reply is our own request back: all counted bad, with a warning
//! that says what to do) and against an in-test responder that answers
//! with error replies or with frames whose sequence number is not the
//! probe's. Loopback, short runs without warm-up (so the server's counts
//! equal ours); counts only, never timings. One test at a time.

mod util;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use udp_packet_pool::wire::framed::{self, Type};
use util::lgproto::*;
use util::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn framed_run(to: SocketAddr, extra: &[&str]) -> (serde_json::Value, String) {
    short_run("framed", to, extra)
}

#[test]
fn framed_server_answers_every_request() {
    let _g = serial();
    for extra in [&["--flows", "2"][..], &["--flows", "2", "--gso", "8"][..]] {
        let srv = ServerProc::start(&["--protocol", "framed", "--json"]);
        let (r, _) = framed_run(srv.addr, extra);
        let sent = count(&r, "sent");
        assert_eq!(sent, SHORT_RUN_PACKETS, "{r}");
        assert_eq!(count(&r, "received"), sent, "{r}");
        for k in ["bad_replies", "error_replies", "corrupted", "foreign"] {
            assert_eq!(count(&r, k), 0, "{k}: {r}");
        }
        if extra.contains(&"--gso") && r["gso_fallback"].is_null() {
            assert_eq!(count(&r, "train_datagrams"), sent, "{r}");
        }
        let rep = json(&srv.stop().stdout);
        assert_eq!(assert_reconciled(&rep), (sent, sent), "{rep}");
    }
}

#[test]
fn plain_echo_server_replies_are_all_bad() {
    let _g = serial();
    let srv = ServerProc::start(&["--json"]);
    let (r, stderr) = framed_run(srv.addr, &[]);
    assert_requests_echoed_back(&r, &stderr, "server --protocol framed");
    drop(srv);
}

/// A UDP responder on loopback that answers each datagram with
/// `answer(datagram)`, until dropped.
struct Responder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Responder {
    fn start(answer: fn(&mut Vec<u8>)) -> Responder {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let mut d = buf[..n].to_vec();
                answer(&mut d);
                let _ = sock.send_to(&d, from);
            }
        });
        Responder {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Turns a request into an intact reply of type `ty`, sequence `seq_add`
/// past the request's.
fn reply_as(d: &mut [u8], ty: Type, seq_add: u32) {
    let mut p = framed::Packet::new_unchecked(d);
    p.set_type(ty as u8);
    let seq = p.seq().wrapping_add(seq_add);
    p.set_seq(seq);
    p.fill_crc();
}

#[test]
fn error_replies_and_wrong_sequences_are_counted_apart() {
    let _g = serial();
    let errors = Responder::start(|d| reply_as(d, Type::Error, 0));
    let (r, stderr) = framed_run(errors.addr, &[]);
    let sent = count(&r, "sent");
    assert_eq!(count(&r, "error_replies"), sent, "{r}");
    assert_eq!((count(&r, "received"), count(&r, "bad_replies")), (0, 0));
    assert!(stderr.contains("error replies"), "{stderr}");
    drop(errors);

    // Intact echo replies whose sequence number is not the probe's.
    let shifted = Responder::start(|d| reply_as(d, Type::EchoReply, 1));
    let (r, stderr) = framed_run(shifted.addr, &[]);
    let sent = count(&r, "sent");
    assert_eq!(count(&r, "bad_replies"), sent, "{r}");
    assert_eq!(
        (count(&r, "received"), count(&r, "echoed_requests")),
        (0, 0)
    );
    assert!(stderr.contains("bad replies"), "{stderr}");
}
