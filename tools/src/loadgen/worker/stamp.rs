//! `--protocol stamp` on the receiving side of a thread: a STAMP test
//! packet has no room for the probe, so each flow remembers what it sent
//! (intended and actual send time by sequence number, in a ring) and a
//! reply is matched by its flow (the socket it came in on) and its
//! Session-Sender Sequence Number, and is accepted only if the T1 it
//! reflects is exactly the one sent. A reply older than the ring (more
//! than [`ring_len`] packets behind its flow's newest) cannot be matched
//! and counts as a bad reply.
//!
//! With a stateful reflector (its Sequence Number counts the session's
//! requests that reached it), `sender seq - reflector seq` at a reply is
//! how many of the flow's requests before it were lost on the way out.
//! The forward loss of the measured part is that gap at the last measured
//! reply minus the gap at the last warm-up reply (see README, "STAMP
//! session-sender").

use udp_packet_pool::wire::reply_check::stamp_reply;

use crate::codec::{Codec, Invalid, Probe, StampTimes};
use crate::schedule::Schedule;

/// Ring entries per flow, all flows together (bounded memory).
const RING_BUDGET: usize = 1 << 20;
/// Fewest and most ring entries of one flow.
const RING_MIN: usize = 1 << 10;
const RING_MAX: usize = 1 << 16;

/// Ring entries per flow with `flows` flows in the run.
pub fn ring_len(flows: u32) -> usize {
    (RING_BUDGET / flows.max(1) as usize)
        .clamp(RING_MIN, RING_MAX)
        .next_power_of_two()
}

#[derive(Debug, Clone, Copy, Default)]
struct SentEntry {
    /// Sequence number + 1 (0: empty).
    tag: u64,
    intended_ns: u64,
    sent_ns: u64,
}

/// A flow's sequence gap (sender - reflector) at its newest replies.
#[derive(Debug, Clone, Copy, Default)]
struct Gaps {
    /// Newest measured reply: (seq, gap).
    measured: Option<(u64, i64)>,
    /// Newest warm-up reply: (seq, gap).
    warmup: Option<(u64, i64)>,
}

/// What one thread's flows sent, for matching STAMP replies.
#[derive(Debug)]
pub struct StampSender {
    rings: Vec<Box<[SentEntry]>>,
    gaps: Vec<Gaps>,
    mask: u64,
    sched: Schedule,
}

/// The sequence number (u64) whose low 32 bits are `low`, at most
/// `newest`; `None` if there is none.
fn extend_seq(low: u32, newest: u64) -> Option<u64> {
    let back = u64::from((newest as u32).wrapping_sub(low));
    newest.checked_sub(back)
}

impl StampSender {
    /// Rings for `flows` flows (of `flows_total` in the run).
    pub fn new(flows: usize, flows_total: u32, sched: Schedule) -> StampSender {
        let len = ring_len(flows_total);
        StampSender {
            rings: (0..flows)
                .map(|_| vec![SentEntry::default(); len].into_boxed_slice())
                .collect(),
            gaps: vec![Gaps::default(); flows],
            mask: len as u64 - 1,
            sched,
        }
    }

    /// Flow `local` sent `seq`, intended at `intended_ns`, at `sent_ns`.
    pub fn sent(&mut self, local: usize, seq: u64, intended_ns: u64, sent_ns: u64) {
        self.rings[local][(seq & self.mask) as usize] = SentEntry {
            tag: seq + 1,
            intended_ns,
            sent_ns,
        };
    }

    /// Matches reply `d` that came in on flow `local` (id `flow`, next
    /// sequence number `next_seq`) at wall-clock `t4` (ns).
    pub fn parse(
        &mut self,
        codec: &Codec,
        local: usize,
        flow: u32,
        next_seq: u64,
        d: &[u8],
        t4: u64,
    ) -> Result<Probe, Invalid> {
        let r = stamp_reply(d).ok_or(Invalid::Foreign)?;
        let bad = Invalid::BadReply {
            echoed_request: r.echoed_request,
        };
        let seq = next_seq
            .checked_sub(1)
            .and_then(|newest| extend_seq(r.sender_seq, newest))
            .ok_or(bad)?;
        let e = self.rings[local][(seq & self.mask) as usize];
        if e.tag != seq + 1 || r.t1_ntp != codec.stamp_t1(e.sent_ns) {
            return Err(bad);
        }
        let gap = i64::from((seq as u32).wrapping_sub(r.seq) as i32);
        let g = &mut self.gaps[local];
        let slot = if self.sched.is_measured(e.intended_ns) {
            &mut g.measured
        } else {
            &mut g.warmup
        };
        if slot.map_or(true, |(s, _)| seq >= s) {
            *slot = Some((seq, gap));
        }
        Ok(Probe {
            flow,
            seq,
            intended_ns: e.intended_ns,
            sent_ns: e.sent_ns,
            stamp: Some(StampTimes {
                t1: r.t1_ns,
                t2: r.t2_ns,
                t3: r.t3_ns,
                t4,
                reflector_seq: r.seq,
            }),
        })
    }

    /// Measured requests a stateful reflector never saw, over all flows
    /// (up to each flow's last measured reply).
    pub fn forward_lost(&self) -> u64 {
        self.gaps
            .iter()
            .filter_map(|g| {
                let (_, end) = g.measured?;
                let start = g.warmup.map_or(0, |(_, gap)| gap);
                Some((end - start).max(0) as u64)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Protocol;
    use udp_packet_pool::wire::stamp::{reflect, Reflection};

    fn sched() -> Schedule {
        Schedule {
            start_ns: 0,
            rate: Some(1000),
            flows: 1,
            train: 1,
            warmup_ns: 2_000_000,
            duration_ns: 1_000_000_000,
            shard: crate::schedule::Shard::WHOLE,
        }
    }

    /// Sends `seq` (intended at `seq` ms) and reflects it with reflector
    /// sequence `rseq`.
    fn round(s: &mut StampSender, c: &Codec, seq: u64, rseq: u32) -> Vec<u8> {
        let intended = seq * 1_000_000;
        s.sent(0, seq, intended, intended + 5);
        let mut d = vec![0u8; 44];
        c.emit(&mut d, 0, seq, intended, intended + 5);
        let r = Reflection {
            seq: rseq,
            rx_ns: c.wall_ns(intended + 100),
            ttl: 64,
        };
        reflect(&mut d, r, || c.wall_ns(intended + 200)).unwrap();
        d
    }

    #[test]
    fn replies_match_by_sequence_and_t1() {
        let c = Codec::new(Protocol::Stamp, 44);
        let mut s = StampSender::new(1, 1, sched());
        let d = round(&mut s, &c, 0, 0);
        let p = s.parse(&c, 0, 7, 1, &d, c.wall_ns(300)).unwrap();
        assert_eq!((p.flow, p.seq, p.intended_ns, p.sent_ns), (7, 0, 0, 5));
        let t = p.stamp.unwrap();
        assert!(t.t2.abs_diff(t.t1) <= 96, "{t:?}");
        assert!(t.t3 >= t.t2);
        // A T1 that is not the one sent, an unsent sequence number, our
        // request sent back unchanged, a short datagram.
        let mut wrong = d.clone();
        wrong[35] ^= 1;
        let bad = Invalid::BadReply {
            echoed_request: false,
        };
        assert_eq!(s.parse(&c, 0, 7, 1, &wrong, 0), Err(bad));
        assert_eq!(s.parse(&c, 0, 7, 0, &d, 0), Err(bad));
        let mut req = vec![0u8; 44];
        c.emit(&mut req, 0, 0, 0, 5);
        let echoed = Invalid::BadReply {
            echoed_request: true,
        };
        assert_eq!(s.parse(&c, 0, 7, 1, &req, 0), Err(echoed));
        assert_eq!(s.parse(&c, 0, 7, 1, &d[..43], 0), Err(Invalid::Foreign));
    }

    #[test]
    fn forward_loss_is_the_growth_of_the_sequence_gap() {
        let c = Codec::new(Protocol::Stamp, 44);
        let mut s = StampSender::new(1, 1, sched());
        // Warm-up: seq 0, 1 (1 lost forward before it: gap 1 from seq 1).
        for (seq, rseq) in [(0, 0), (1, 0)] {
            let d = round(&mut s, &c, seq, rseq);
            s.parse(&c, 0, 0, seq + 1, &d, 0).unwrap();
        }
        // Measured: seq 2..10; the reflector misses 4 and 7.
        let mut rseq = 1;
        for seq in 2..10 {
            if seq == 4 || seq == 7 {
                s.sent(0, seq, seq * 1_000_000, 0);
                continue;
            }
            let d = round(&mut s, &c, seq, rseq);
            rseq += 1;
            s.parse(&c, 0, 0, seq + 1, &d, 0).unwrap();
        }
        assert_eq!(s.forward_lost(), 2);
    }

    #[test]
    fn sequence_numbers_extend_across_the_32_bit_wrap() {
        assert_eq!(extend_seq(5, 5), Some(5));
        assert_eq!(extend_seq(3, 5), Some(3));
        assert_eq!(extend_seq(6, 5), None);
        assert_eq!(extend_seq(u32::MAX, 1 << 32), Some(u64::from(u32::MAX)));
        assert_eq!(extend_seq(0, (1 << 32) + 2), Some(1 << 32));
        assert_eq!(ring_len(1), RING_MAX);
        assert_eq!(ring_len(4096), RING_MIN);
    }
}
