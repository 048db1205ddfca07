//! loadgen against an in-test impairing responder: every loss, duplicate,
//! reordering and corruption the responder makes must be counted exactly.
//! Loopback only; counts are asserted, never timings.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use udp_packet_pool::probe;

mod util;

use util::{assert_loadgen_consistent as assert_consistent, count, loadgen_json};

/// What the impairing responder did, and what a receiver must therefore see.
#[derive(Debug, Default, Clone)]
struct Impairments {
    received: u64,
    dropped: u64,
    duplicated: u64,
    corrupted: u64,
    /// Unique intact datagrams it sent back after a higher sequence number
    /// of the same flow: what loadgen must count as reordered.
    reordered: u64,
}

/// A UDP echo responder that drops every 10th datagram, corrupts one byte of
/// every 13th, duplicates every 7th (in that order of precedence), and swaps
/// every other pair (datagrams 1-2, 5-6, 9-10, ...) to reorder them.
struct Impairer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<Impairments>>,
}

impl Impairer {
    fn start() -> Impairer {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || impair(sock, &flag));
        Impairer {
            addr,
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Impairments {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for Impairer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Per-flow view of what was sent back intact, to predict reordering.
#[derive(Default)]
struct Mirror {
    seen: HashMap<u32, (HashSet<u64>, u64)>,
}

impl Mirror {
    /// Returns true if this intact datagram is a unique late arrival.
    fn reordered(&mut self, d: &[u8]) -> bool {
        let p = probe::Packet::new_checked(d).expect("intact probe");
        let (seen, max) = self.seen.entry(p.flow()).or_default();
        if !seen.insert(p.seq()) {
            return false;
        }
        let late = p.seq() < *max;
        *max = (*max).max(p.seq());
        late
    }
}

fn impair(sock: UdpSocket, stop: &AtomicBool) -> Impairments {
    let mut st = Impairments::default();
    let mut mirror = Mirror::default();
    let mut held: Vec<(Vec<u8>, bool, SocketAddr)> = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut send = |out: &mut Vec<(Vec<u8>, bool, SocketAddr)>, st: &mut Impairments| {
        for (d, intact, peer) in out.drain(..) {
            if intact && mirror.reordered(&d) {
                st.reordered += 1;
            }
            sock.send_to(&d, peer).unwrap();
        }
    };
    loop {
        match sock.recv_from(&mut buf) {
            Ok((len, peer)) => {
                st.received += 1;
                let n = st.received;
                let d = buf[..len].to_vec();
                let mut out = Vec::new();
                if n % 10 == 0 {
                    st.dropped += 1;
                } else if n % 13 == 0 {
                    let mut c = d;
                    let last = c.len() - 1;
                    c[last] ^= 0x5a;
                    out.push((c, false, peer));
                    st.corrupted += 1;
                } else if n % 7 == 0 {
                    out.push((d.clone(), true, peer));
                    out.push((d, true, peer));
                    st.duplicated += 1;
                } else {
                    out.push((d, true, peer));
                }
                // Pairs (1,2), (3,4), ...; every other pair is swapped.
                let pair = n.div_ceil(2);
                if pair % 2 == 1 && n % 2 == 1 {
                    held = out;
                } else {
                    send(&mut out, &mut st);
                    send(&mut held, &mut st);
                }
            }
            Err(_) => {
                // Quiet: let a held first half of a pair go.
                send(&mut held, &mut st);
                if stop.load(Ordering::Relaxed) {
                    return st;
                }
            }
        }
    }
}

/// One flow: with two, round-robin puts one packet of each flow in every
/// pair, and swapping a pair would reorder nothing within a flow.
#[test]
fn impairments_are_counted_exactly() {
    let imp = Impairer::start();
    let target = imp.addr.to_string();
    let r = loadgen_json(&[
        "--target",
        &target,
        "--rate",
        "3000",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--flows",
        "1",
        "--drain-ms",
        "1000",
    ]);
    let st = imp.finish();
    assert_consistent(&r);
    let sent = count(&r, "sent");
    assert_eq!(
        st.received, sent,
        "the responder saw every datagram: {st:?} {r}"
    );
    assert!(st.dropped > 0 && st.duplicated > 0 && st.corrupted > 0 && st.reordered > 0);
    assert_eq!(count(&r, "duplicates"), st.duplicated, "{st:?} {r}");
    assert_eq!(count(&r, "corrupted"), st.corrupted, "{st:?} {r}");
    assert_eq!(count(&r, "reordered"), st.reordered, "{st:?} {r}");
    // A corrupted echo is no echo: those packets are lost too.
    assert_eq!(count(&r, "lost"), st.dropped + st.corrupted, "{st:?} {r}");
    assert_eq!(count(&r, "foreign"), 0, "{r}");
    assert!(count(&r, "lost") > 0 && count(&r, "reordered") > 0);
}
