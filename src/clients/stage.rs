//! The client tracking stage: counts every datagram that reaches it in the
//! worker's [`ClientTable`], learns from the final verdict whether it was
//! answered, and publishes the table to the [`ClientDirectory`] at the
//! worker's 100 ms flush (and once, waiting, at exit).

use std::sync::Arc;

use super::{ClientDirectory, ClientTable};
use crate::packet::PacketBuffer;
use crate::process::{Stage, Verdict};

/// One worker's tracking stage.
pub struct ClientTrack {
    table: ClientTable,
    directory: Arc<ClientDirectory>,
    worker: usize,
    /// The entry of the datagram being processed, until its verdict.
    current: Option<usize>,
}

impl ClientTrack {
    /// Worker `worker`'s stage, publishing to `directory`.
    pub fn new(directory: Arc<ClientDirectory>, worker: usize) -> ClientTrack {
        ClientTrack {
            table: ClientTable::new(directory.table_size(), directory.ttl_ns()),
            directory,
            worker,
            current: None,
        }
    }
}

impl Stage for ClientTrack {
    #[inline]
    fn process(&mut self, pkt: &mut PacketBuffer<'_>) -> Verdict {
        let (peer, len, at) = (pkt.meta.peer, pkt.meta.len, pkt.meta.rx_ns);
        self.current = Some(self.table.record(peer, len, at));
        Verdict::Echo
    }

    fn wants_verdict(&self) -> bool {
        true
    }

    fn done(&mut self, verdict: Verdict) {
        if let Some(i) = self.current.take() {
            self.table.answered(i, verdict == Verdict::Echo);
        }
    }

    fn publish(&mut self, now_ns: u64, wait: bool) {
        self.directory
            .publish(self.worker, &self.table, now_ns, wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::PacketPool;
    use crate::process::{DropReason, Pipeline};

    struct DropOdd;
    impl Stage for DropOdd {
        fn process(&mut self, pkt: &mut PacketBuffer<'_>) -> Verdict {
            match pkt.meta.peer.port() % 2 {
                1 => Verdict::Drop(DropReason::Filtered),
                _ => Verdict::Echo,
            }
        }
    }

    #[test]
    fn the_final_verdict_says_who_was_answered() {
        let dir = ClientDirectory::new(1, 16, 60_000_000_000);
        let mut p = Pipeline::echo()
            .with(ClientTrack::new(dir.clone(), 0))
            .with(DropOdd);
        let mut pool = PacketPool::new(1, 64);
        let s = pool.alloc().unwrap();
        for port in [4000u16, 4001, 4000] {
            let b = pool.buffer(&s);
            b.meta.len = 10;
            b.meta.rx_ns = 1_000;
            b.meta.peer = ([127, 0, 0, 1], port).into();
            p.process(&mut pool.buffer(&s));
        }
        pool.free(s);
        p.publish(1_000, true);
        let sum = dir.summary(1_000);
        assert_eq!(sum.active, 2);
        let a = &sum.top[0];
        assert_eq!(
            (a.addr.as_str(), a.packets, a.bytes, a.answered),
            ("127.0.0.1:4000", 2, 20, 2)
        );
        let b = &sum.top[1];
        assert_eq!(
            (b.addr.as_str(), b.packets, b.answered),
            ("127.0.0.1:4001", 1, 0)
        );
    }
}
