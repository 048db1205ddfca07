//! The capture stages a worker runs: [`CaptureRx`] (first: the datagram as
//! received) and [`CaptureEcho`] (last: the reply as it will be sent).
//! Both only copy the bytes into a recycled record and `try_send` it; they
//! never block, never allocate, and always let the datagram through.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::record::Record;
use super::CaptureCounters;
use crate::packet::PacketBuffer;
use crate::process::{Stage, Verdict};

/// A worker's end of the capture queues.
pub struct Tap {
    pub(super) records: Sender<Record>,
    pub(super) free_tx: Sender<Record>,
    pub(super) free_rx: Receiver<Record>,
    pub(super) counters: Arc<CaptureCounters>,
    /// The bound address (destination when the kernel did not say).
    pub(super) local: SocketAddr,
}

impl Tap {
    /// Hands one datagram to the writer, or counts it as dropped.
    fn offer(&self, ts_ns: u64, src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
        let Ok(mut r) = self.free_rx.try_recv() else {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if r.fill(ts_ns, src, dst, payload) {
            match self.records.try_send(r) {
                Ok(()) => return,
                Err(e) => r = e.into_inner(),
            }
        }
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        // Cannot be full: it has room for every record there is.
        let _ = self.free_tx.try_send(r);
    }

    /// This end of the datagram: where it was sent to (the kernel's
    /// `IP_PKTINFO`), or the bound address, with the bound port.
    fn here(&self, pkt: &PacketBuffer<'_>, reply: bool) -> SocketAddr {
        let ip = match pkt.meta.dest {
            Some(d) if reply => d.local,
            Some(d) => d.addr,
            None => self.local.ip(),
        };
        SocketAddr::new(ip, self.local.port())
    }
}

/// Records each datagram as received (put it first in the pipeline).
pub struct CaptureRx(pub Tap);

impl Stage for CaptureRx {
    fn process(&mut self, pkt: &mut PacketBuffer<'_>) -> Verdict {
        let here = self.0.here(pkt, false);
        self.0
            .offer(pkt.meta.rx_ns, pkt.meta.peer, here, pkt.payload());
        Verdict::Echo
    }
}

/// Records each reply as it will be sent (put it last in the pipeline),
/// stamped with the time it was made.
pub struct CaptureEcho(pub Tap);

impl Stage for CaptureEcho {
    fn process(&mut self, pkt: &mut PacketBuffer<'_>) -> Verdict {
        let here = self.0.here(pkt, true);
        let now = crate::io::now_realtime_ns().max(pkt.meta.rx_ns);
        self.0.offer(now, here, pkt.meta.peer, pkt.payload());
        Verdict::Echo
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Capture, CaptureConfig};
    use super::*;
    use crate::packet::PacketPool;
    use crate::process::Pipeline;

    #[test]
    fn no_free_record_is_a_counted_drop() {
        let (records, queued) = crossbeam_channel::bounded(1);
        let (free_tx, free_rx) = crossbeam_channel::bounded(1);
        free_tx.send(Record::with_capacity(8)).unwrap();
        let tap = Tap {
            records,
            free_tx,
            free_rx,
            counters: Arc::default(),
            local: "127.0.0.1:9".parse().unwrap(),
        };
        let peer = "127.0.0.1:40000".parse().unwrap();
        tap.offer(1, peer, tap.local, b"first");
        tap.offer(2, peer, tap.local, b"second");
        // Too long for the record: not captured, and the record comes back.
        let r = queued.try_recv().unwrap();
        assert_eq!((r.ts_ns, &r.data[..]), (1, &b"first"[..]));
        tap.free_tx.send(r).unwrap();
        tap.offer(3, peer, tap.local, b"too long!");
        assert_eq!(tap.counters.dropped.load(Ordering::Relaxed), 2);
        assert!(queued.try_recv().is_err());
        assert_eq!(tap.free_rx.len(), 1);
    }

    #[test]
    fn a_full_queue_counts_drops_and_everything_offered_is_accounted() {
        let path = std::env::temp_dir().join(format!("capture-tap-{}.pcap", std::process::id()));
        let cfg = CaptureConfig {
            path: path.clone(),
            echoes: true,
            queue: 2,
        };
        let mut cap = Capture::start(&cfg, 64, "127.0.0.1:9".parse().unwrap()).unwrap();
        let mut p = Pipeline::echo()
            .with(cap.rx_stage().unwrap())
            .with(cap.echo_stage().unwrap());
        cap.seal();
        let mut pool = PacketPool::new(1, 64);
        let s = pool.alloc().unwrap();
        let n = 500;
        {
            let mut b = pool.buffer(&s);
            b.data[..5].copy_from_slice(b"hello");
            b.meta.len = 5;
            b.meta.peer = "127.0.0.1:40000".parse().unwrap();
            for _ in 0..n {
                assert_eq!(p.process(&mut b), Verdict::Echo);
            }
        }
        pool.free(s);
        drop(p);
        let sum = cap.finish();
        // Two records for 1000 offers, written by a thread on a shared
        // machine: some are dropped, and every offer is accounted for.
        assert_eq!(sum.captured + sum.capture_dropped, 2 * n);
        assert!(sum.captured >= 1, "{sum:?}");
        assert!(sum.error.is_none(), "{sum:?}");
        std::fs::remove_file(&path).unwrap();
    }
}
