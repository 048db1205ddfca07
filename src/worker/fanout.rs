//! Fan-out sends through the worker: when a stage asks for one (a framed
//! broadcast), each target gets its own pool buffer holding the datagram,
//! queued in the send backlog like an echo; no free buffer means that
//! target is counted as `pool_exhausted`, never waited for.

use super::Worker;
use crate::io;
use crate::packet::PacketMeta;

impl Worker {
    /// Queues the fan-out a stage asked for while processing the last
    /// datagram, if any, and clears the request.
    pub(super) fn fan_out(&mut self) {
        let Some(f) = self.pipeline.fan_out() else {
            return;
        };
        let c = &mut self.counters.broadcast;
        c.broadcasts += 1;
        let now = io::now_realtime_ns();
        for &peer in f.targets() {
            c.targets += 1;
            let Some(slot) = self.pool.alloc() else {
                c.pool_exhausted += 1;
                continue;
            };
            let b = self.pool.buffer(&slot);
            let len = f.datagram().len().min(b.data.len());
            b.data[..len].copy_from_slice(&f.datagram()[..len]);
            *b.meta = PacketMeta {
                len,
                peer,
                rx_ns: now,
                dest: f.from(),
                fan_out: true,
                ..PacketMeta::default()
            };
            self.backlog.push_fan_out(slot);
        }
        f.clear();
    }
}
