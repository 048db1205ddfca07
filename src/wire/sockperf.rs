//! sockperf's message header and the server's `--sockperf` reply mode.
//!
//! Every sockperf message starts with 14 bytes in network byte order:
//! sequence number (u64), flags (u16: CLIENT = 1, PONG_REQUEST = 2,
//! WARMUP = 4) and total message length (u32). A sockperf server ignores
//! messages without CLIENT and warm-up messages, answers only PONG_REQUEST,
//! and clears CLIENT before echoing; sockperf's client ignores replies that
//! still have CLIENT set.

use super::{u16_at, u32_at, u64_at};
use crate::packet::PacketBuffer;
use crate::process::{DropReason, Stage, Verdict};

/// Header length in bytes.
pub const HEADER_LEN: usize = 14;
/// Sent by a client.
pub const FLAG_CLIENT: u16 = 1;
/// The client wants a reply.
pub const FLAG_PONG_REQUEST: u16 = 2;
/// Warm-up message: never answered.
pub const FLAG_WARMUP: u16 = 4;

mod field {
    use std::ops::Range;
    pub const SEQ: Range<usize> = 0..8;
    pub const FLAGS: Range<usize> = 8..10;
    pub const LEN: Range<usize> = 10..14;
}

/// A sockperf message over any byte buffer; [`Packet::new_checked`]
/// validates once so the accessors cannot panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

/// Why bytes are not a sockperf message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than the 14-byte header.
    Truncated,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer that holds at least a full header.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Packet { buffer })
    }

    /// Sequence number.
    pub fn seq(&self) -> u64 {
        u64_at(self.buffer.as_ref(), field::SEQ)
    }

    /// Flag bits.
    pub fn flags(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::FLAGS)
    }

    /// Total message length the sender declared.
    pub fn declared_len(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::LEN)
    }

    /// Bytes after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the sequence number.
    pub fn set_seq(&mut self, v: u64) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the flag bits.
    pub fn set_flags(&mut self, v: u16) {
        self.buffer.as_mut()[field::FLAGS].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the declared length.
    pub fn set_declared_len(&mut self, v: u32) {
        self.buffer.as_mut()[field::LEN].copy_from_slice(&v.to_be_bytes());
    }
}

/// What a sockperf server does with a message.
pub fn reply_verdict(msg: &[u8]) -> Verdict {
    let Ok(p) = Packet::new_checked(msg) else {
        return Verdict::Drop(DropReason::Malformed);
    };
    let f = p.flags();
    if f & FLAG_CLIENT == 0 || f & FLAG_WARMUP != 0 || f & FLAG_PONG_REQUEST == 0 {
        return Verdict::Drop(DropReason::SockperfNoReply);
    }
    Verdict::Echo
}

/// The `--sockperf` reply mode: answer like a sockperf server.
#[derive(Debug, Default, Clone, Copy)]
pub struct SockperfReply;

impl Stage for SockperfReply {
    fn process(&mut self, pkt: &mut PacketBuffer<'_>) -> Verdict {
        let v = reply_verdict(pkt.payload());
        if v == Verdict::Echo {
            let mut p = Packet::new_unchecked(pkt.payload_mut());
            let f = p.flags();
            p.set_flags(f & !FLAG_CLIENT);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::PacketPool;

    /// A message captured from `sockperf ping-pong -m 20` (sockperf 3.7).
    const CAPTURED: [u8; 14] = [0, 0, 0, 0, 0, 0, 0, 1, 0, 3, 0, 0, 0, 0x14];

    #[test]
    fn parses_a_real_sockperf_header() {
        let p = Packet::new_checked(&CAPTURED[..]).unwrap();
        assert_eq!(p.seq(), 1);
        assert_eq!(p.flags(), FLAG_CLIENT | FLAG_PONG_REQUEST);
        assert_eq!(p.declared_len(), 20);
        assert!(p.payload().is_empty());
    }

    #[test]
    fn short_input_is_rejected_not_panicked() {
        for n in 0..HEADER_LEN {
            assert_eq!(Packet::new_checked(&CAPTURED[..n]), Err(Error::Truncated));
            assert_eq!(
                reply_verdict(&CAPTURED[..n]),
                Verdict::Drop(DropReason::Malformed)
            );
        }
    }

    #[test]
    fn replies_only_like_a_sockperf_server() {
        let cases = [
            (FLAG_CLIENT | FLAG_PONG_REQUEST, true),
            (FLAG_PONG_REQUEST, false),
            (FLAG_CLIENT, false),
            (FLAG_CLIENT | FLAG_PONG_REQUEST | FLAG_WARMUP, false),
        ];
        let mut pool = PacketPool::new(1, 64);
        let s = pool.alloc().unwrap();
        for (flags, answered) in cases {
            let mut b = pool.buffer(&s);
            b.data[..14].copy_from_slice(&CAPTURED);
            b.meta.len = 20;
            b.meta.truncated = false;
            Packet::new_unchecked(&mut b.data[..14]).set_flags(flags);
            let v = SockperfReply.process(&mut b);
            assert_eq!(v == Verdict::Echo, answered, "flags {flags:#x}");
            if answered {
                let p = Packet::new_checked(b.payload()).unwrap();
                assert_eq!(p.flags(), FLAG_PONG_REQUEST, "CLIENT cleared");
                assert_eq!(p.seq(), 1);
            }
        }
        pool.free(s);
    }

    #[test]
    fn setters_roundtrip() {
        let mut buf = [0u8; 20];
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        p.set_seq(0x0102_0304_0506_0708);
        p.set_flags(FLAG_CLIENT);
        p.set_declared_len(20);
        assert_eq!(
            (p.seq(), p.flags(), p.declared_len()),
            (0x0102_0304_0506_0708, 1, 20)
        );
    }
}
