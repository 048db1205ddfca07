//! The per-packet path: what happens to one received datagram between the
//! batched receive and the batched echo.
//!
//! A [`Pipeline`] runs a fixed truncation check, then each [`Stage`] in
//! order (filters, loggers, reply rewriters), and returns a [`Verdict`]:
//! echo the buffer as it now stands, or drop it under a named
//! [`DropReason`]. New filters (rate limits, allowlists) and reply modes are
//! new stages; the batching code in `worker` never changes for them.

pub use crate::clients::FanOut;
use crate::packet::PacketBuffer;

/// Why a received datagram was not echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Larger than `--packet-size` (`MSG_TRUNC`): never echoed truncated.
    Truncated,
    /// No free buffer in the worker's pool when it arrived.
    PoolExhausted,
    /// Not a sockperf request we answer (no CLIENT flag, WARMUP, or no PONG_REQUEST).
    SockperfNoReply,
    /// Too short or malformed for the active protocol.
    Malformed,
    /// `--protocol framed`: not an intact frame (short, length mismatch,
    /// bad CRC-32C, other version); never answered.
    BadFrame,
    /// `--protocol framed`: an intact reply frame (type with the high bit
    /// set); never answered, so no two services bounce frames for ever.
    FrameNoReply,
    /// Refused by a filter stage.
    Filtered,
    /// Held in the send backlog longer than `--send-deadline` (the socket
    /// kept refusing it), or still held at shutdown.
    SendDeadline,
    /// Loop protection: from port 0, a privileged port (< 1024) or 2049,
    /// or from the server's own port.
    BadSourcePort,
    /// Loop protection: from a multicast, broadcast or unspecified address.
    BadSourceAddr,
    /// From outside the `--allow` networks.
    NotAllowed,
    /// Over its source prefix's `--rate-limit`.
    RateLimited,
    /// Sent to a broadcast or multicast destination, not to one of this
    /// host's unicast addresses.
    BadDest,
    /// From a peer that keeps bouncing our reply back (a forwarding loop
    /// with another echo service), while it cools down.
    Loop,
    /// `--psk-file`: the tag does not verify (forged, corrupted, or sealed
    /// with another key).
    BadSeal,
    /// `--psk-file`: a sealed request its sender's window has already seen
    /// (or older than the window).
    Replayed,
    /// `--psk-file`: a sealed datagram marked as a reply (never answered).
    SealedReply,
}

impl DropReason {
    /// Every reason, in report order.
    pub const ALL: [DropReason; 17] = [
        DropReason::Truncated,
        DropReason::PoolExhausted,
        DropReason::SockperfNoReply,
        DropReason::Malformed,
        DropReason::BadFrame,
        DropReason::FrameNoReply,
        DropReason::Filtered,
        DropReason::SendDeadline,
        DropReason::BadSourcePort,
        DropReason::BadSourceAddr,
        DropReason::NotAllowed,
        DropReason::RateLimited,
        DropReason::BadDest,
        DropReason::Loop,
        DropReason::BadSeal,
        DropReason::Replayed,
        DropReason::SealedReply,
    ];

    /// Stable snake_case name used in the statistics line and JSON.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::PoolExhausted => "pool_exhausted",
            DropReason::SockperfNoReply => "sockperf_no_reply",
            DropReason::Malformed => "malformed",
            DropReason::BadFrame => "bad_frame",
            DropReason::FrameNoReply => "frame_no_reply",
            DropReason::Filtered => "filtered",
            DropReason::SendDeadline => "send_deadline",
            DropReason::BadSourcePort => "bad_source_port",
            DropReason::BadSourceAddr => "bad_source_addr",
            DropReason::NotAllowed => "not_allowed",
            DropReason::RateLimited => "rate_limited",
            DropReason::BadDest => "bad_dest",
            DropReason::Loop => "loop",
            DropReason::BadSeal => "bad_seal",
            DropReason::Replayed => "replayed",
            DropReason::SealedReply => "sealed_reply",
        }
    }

    /// Index into per-reason counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What to do with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the buffer's payload back to its sender.
    Echo,
    /// Do not answer; count it under this reason.
    Drop(DropReason),
}

/// One step of the per-packet path. Stages may read and rewrite the
/// payload in place and must not panic on any input.
pub trait Stage: Send {
    /// Decides about one datagram.
    fn process(&mut self, pkt: &mut PacketBuffer<'_>) -> Verdict;

    /// Whether the stage reads `PacketMeta::ttl` (the worker then asks the
    /// kernel for it: one more control message per datagram).
    fn wants_ttl(&self) -> bool {
        false
    }

    /// Whether the stage wants to hear the datagram's final verdict
    /// ([`Stage::done`]; e.g. client tracking records who was answered).
    fn wants_verdict(&self) -> bool {
        false
    }

    /// The final verdict on the datagram this stage last processed (called
    /// only when [`Stage::wants_verdict`], and only if the stage ran).
    fn done(&mut self, _verdict: Verdict) {}

    /// Extra datagrams the stage asks the worker to send after the one it
    /// just processed (a framed broadcast's fan-out), if any are pending.
    /// The worker sends them and clears the request.
    fn fan_out(&mut self) -> Option<&mut FanOut> {
        None
    }

    /// Called every 100 ms (the worker's flush) and once at exit
    /// (`wait`): the stage may publish what it keeps to other threads.
    fn publish(&mut self, _now_ns: u64, _wait: bool) {}
}

/// The stages a worker runs on every datagram.
#[derive(Default)]
pub struct Pipeline {
    stages: Vec<Box<dyn Stage>>,
    /// Indices of the stages that want the final verdict.
    watchers: Vec<usize>,
    /// Indices of the stages that may ask for a fan-out.
    fanners: Vec<usize>,
}

impl Pipeline {
    /// A plain RFC 862 echo: every datagram that fit goes back unchanged.
    pub fn echo() -> Pipeline {
        Pipeline::default()
    }

    /// Appends a stage.
    pub fn with(self, stage: impl Stage + 'static) -> Pipeline {
        self.push(Box::new(stage))
    }

    /// Appends every stage of `then`, in order.
    pub fn then(self, then: Pipeline) -> Pipeline {
        then.stages.into_iter().fold(self, Pipeline::push)
    }

    fn push(mut self, mut stage: Box<dyn Stage>) -> Pipeline {
        let i = self.stages.len();
        if stage.wants_verdict() {
            self.watchers.push(i);
        }
        if stage.fan_out().is_some() {
            self.fanners.push(i);
        }
        self.stages.push(stage);
        self
    }

    /// A fan-out some stage asked for while processing the last datagram.
    #[inline]
    pub fn fan_out(&mut self) -> Option<&mut FanOut> {
        for k in 0..self.fanners.len() {
            let i = self.fanners[k];
            if self.stages[i].fan_out().is_some_and(|f| f.is_pending()) {
                return self.stages[i].fan_out();
            }
        }
        None
    }

    /// Lets every stage publish what it keeps (see [`Stage::publish`]).
    pub fn publish(&mut self, now_ns: u64, wait: bool) {
        for stage in &mut self.stages {
            stage.publish(now_ns, wait);
        }
    }

    /// Whether any stage reads the received TTL / hop limit.
    pub fn wants_ttl(&self) -> bool {
        self.stages.iter().any(|s| s.wants_ttl())
    }

    /// Runs the truncation check and then every stage until one drops.
    #[inline]
    pub fn process(&mut self, pkt: &mut PacketBuffer<'_>) -> Verdict {
        if pkt.meta.truncated {
            return Verdict::Drop(DropReason::Truncated);
        }
        let (mut verdict, mut ran) = (Verdict::Echo, self.stages.len());
        for (i, stage) in self.stages.iter_mut().enumerate() {
            if let v @ Verdict::Drop(_) = stage.process(pkt) {
                (verdict, ran) = (v, i + 1);
                break;
            }
        }
        for &i in &self.watchers {
            if i < ran {
                self.stages[i].done(verdict);
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::PacketPool;

    struct DropOdd;
    impl Stage for DropOdd {
        fn process(&mut self, pkt: &mut PacketBuffer<'_>) -> Verdict {
            if pkt.payload().len() % 2 == 1 {
                Verdict::Drop(DropReason::Filtered)
            } else {
                Verdict::Echo
            }
        }
    }

    struct Upper;
    impl Stage for Upper {
        fn process(&mut self, pkt: &mut PacketBuffer<'_>) -> Verdict {
            pkt.payload_mut().make_ascii_uppercase();
            Verdict::Echo
        }
    }

    #[test]
    fn stages_run_in_order_and_first_drop_wins() {
        let mut pool = PacketPool::new(1, 16);
        let s = pool.alloc().unwrap();
        let mut p = Pipeline::echo().with(DropOdd).with(Upper);
        {
            let mut b = pool.buffer(&s);
            b.data[..4].copy_from_slice(b"abcd");
            b.meta.len = 4;
            assert_eq!(p.process(&mut b), Verdict::Echo);
            assert_eq!(b.payload(), b"ABCD");
            b.meta.len = 3;
            assert_eq!(p.process(&mut b), Verdict::Drop(DropReason::Filtered));
            b.meta.truncated = true;
            assert_eq!(p.process(&mut b), Verdict::Drop(DropReason::Truncated));
        }
        pool.free(s);
    }

    #[test]
    fn reason_names_are_unique_and_indexed() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
    }
}
