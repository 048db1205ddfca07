//! GRO trains through the worker: each datagram of a coalesced train is
//! counted, checked and filtered on its own, and the echoed ones go back
//! as one train.

use super::Worker;
use crate::packet::PacketBuffer;
use crate::pool::Slot;
use crate::process::{DropReason, Verdict};

impl Worker {
    /// A GRO train: each segment is counted and goes through the pipeline
    /// on its own, as if it had arrived alone; the echoed ones are moved
    /// together (in order, so all but the last keep the segment size) and
    /// go back as one train, or one datagram if only one is left.
    pub(super) fn dispatch_train(&mut self, slot: Slot) {
        let pkt = self.pool.buffer(&slot);
        let (data, first) = (pkt.data, *pkt.meta);
        if first.truncated {
            // Longer than the buffer (never with GRO_BUFFER-sized buffers):
            // its segments cannot be told apart, none is echoed cut.
            let n = first.datagrams();
            self.counters.rx_packets += n;
            self.counters.rx_bytes += first.len as u64;
            self.counters.drop_n(DropReason::Truncated, n);
            self.pool.free(slot);
            return;
        }
        self.counters.gro_trains += 1;
        self.counters.gro_datagrams += first.datagrams();
        let seg = first.segment as usize;
        let total = first.len.min(data.len());
        let (mut kept, mut echoed, mut off) = (0, 0u64, 0);
        while off < total {
            let l = seg.min(total - off);
            let mut meta = first;
            meta.len = l;
            meta.segment = 0;
            meta.truncated = l > self.max_datagram;
            self.counters.rx_packets += 1;
            self.counters.rx_bytes += l as u64;
            let mut one = PacketBuffer {
                data: &mut data[off..off + l],
                meta: &mut meta,
            };
            match self.pipeline.process(&mut one) {
                // A stage may not change a segment's length: the train's
                // shape (and amplification 1) depends on it.
                Verdict::Echo if meta.len == l => {
                    data.copy_within(off..off + l, kept);
                    kept += l;
                    echoed += 1;
                }
                Verdict::Echo => self.counters.drop(DropReason::Malformed),
                Verdict::Drop(r) => self.counters.drop(r),
            }
            off += l;
        }
        // A broadcast's fan-out (one per train: the stage refuses a second
        // broadcast while one is pending).
        self.fan_out();
        if echoed == 0 {
            self.pool.free(slot);
            return;
        }
        let meta = self.pool.meta_mut(&slot);
        meta.len = kept;
        meta.segment = if echoed > 1 { first.segment } else { 0 };
        self.backlog.push(slot);
    }
}
