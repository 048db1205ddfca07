//! Decoders of the replies a sender (`loadgen --protocol framed|stamp`)
//! receives: pure functions over untrusted bytes that never panic (fuzzed
//! by `fuzz/fuzz_targets/reply_check.rs`). They say what a datagram is;
//! matching it to what was sent (sequence numbers, send times) is the
//! sender's job.
//!
//! - [`framed_reply`]: a framed echo reply (type 0x81) must be a whole,
//!   intact frame (length, CRC-32C, version: [`framed::Packet::new_checked`])
//!   with flags, status and reserved zero; an error reply (0xFF) is told
//!   apart, and so is a request type sent back unchanged (a plain echo
//!   server, not a framed one).
//! - [`stamp_reply`]: an RFC 8762 Session-Reflector packet of at least 44
//!   bytes, its timestamps converted to nanoseconds since the Unix epoch.

use super::framed::{self, Type};
use super::stamp::{unix_ns_from_ntp, ReflectorPacket};

/// A framed reply to an echo request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramedReply<'a> {
    /// An echo reply: its sequence number and payload.
    Echo {
        /// Sequence number.
        seq: u32,
        /// Payload (what the request carried).
        payload: &'a [u8],
    },
    /// An error reply: the server could not serve the request.
    Error {
        /// Sequence number of the request.
        seq: u32,
        /// The error code (`framed::ErrorCode`).
        status: u8,
    },
}

/// Why a datagram is not a usable framed reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadFrame {
    /// Not an intact frame (short, length mismatch, bad CRC, other version,
    /// unknown type).
    Invalid(framed::Error),
    /// An intact request frame (type without the reply bit): our own
    /// request sent back unchanged by a server that does not speak framed.
    Request,
    /// An intact reply of another type (stats, broadcast).
    OtherReply,
    /// An echo reply with non-zero flags, status or reserved field.
    BadFields,
}

/// Classifies a datagram received in answer to framed echo requests.
pub fn framed_reply(d: &[u8]) -> Result<FramedReply<'_>, BadFrame> {
    let p = framed::Packet::new_checked(d).map_err(BadFrame::Invalid)?;
    match p.frame_type() {
        Some(Type::EchoReply) => {
            if p.flags() != 0 || p.status() != 0 || p.reserved() != 0 {
                return Err(BadFrame::BadFields);
            }
            Ok(FramedReply::Echo {
                seq: p.seq(),
                payload: &d[framed::HEADER_LEN..],
            })
        }
        Some(Type::Error) => Ok(FramedReply::Error {
            seq: p.seq(),
            status: p.status(),
        }),
        Some(t) if !t.is_reply() => Err(BadFrame::Request),
        _ => Err(BadFrame::OtherReply),
    }
}

/// What a Session-Reflector packet says, times in ns since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StampReply {
    /// The reflector's Sequence Number (the sender's when stateless, its
    /// own count of the session's packets when stateful).
    pub seq: u32,
    /// Session-Sender Sequence Number (ours, reflected).
    pub sender_seq: u32,
    /// T1: the sender's timestamp, reflected.
    pub t1_ns: u64,
    /// T2: when the reflector received the request.
    pub t2_ns: u64,
    /// T3: when the reflector sent the reply.
    pub t3_ns: u64,
    /// T1 exactly as on the wire (NTP 64-bit), to compare with what was sent.
    pub t1_ntp: u64,
    /// Whether T2 and the reflected sender fields are all zero: the bytes
    /// of a Session-Sender packet sent back unchanged (a plain echo
    /// server, not a reflector).
    pub echoed_request: bool,
}

/// Decodes a Session-Reflector test packet (unauthenticated, at least 44
/// bytes; padding after them is not looked at). `None` if too short.
pub fn stamp_reply(d: &[u8]) -> Option<StampReply> {
    let p = ReflectorPacket::new_checked(d).ok()?;
    let (t2, t1) = (p.receive_timestamp(), p.sender_timestamp());
    Some(StampReply {
        seq: p.seq(),
        sender_seq: p.sender_seq(),
        t1_ns: unix_ns_from_ntp(t1),
        t2_ns: unix_ns_from_ntp(t2),
        t3_ns: unix_ns_from_ntp(p.timestamp()),
        t1_ntp: t1,
        echoed_request: t2 == 0 && t1 == 0 && p.sender_seq() == 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::framed::{answer, encode};
    use crate::wire::stamp::{ntp_from_unix_ns, reflect, Reflection, SenderPacket};

    #[test]
    fn framed_echo_error_and_request_are_told_apart() {
        let req = encode(Type::EchoRequest, 7, b"probe bytes");
        assert_eq!(framed_reply(&req), Err(BadFrame::Request));
        let mut rep = req.clone();
        answer(&mut rep);
        assert_eq!(
            framed_reply(&rep),
            Ok(FramedReply::Echo {
                seq: 7,
                payload: b"probe bytes"
            })
        );
        let mut bad = req.clone();
        bad[0] = 9; // other version: CRC first
        assert_eq!(
            framed_reply(&bad),
            Err(BadFrame::Invalid(framed::Error::BadCrc))
        );
        let mut stats = encode(Type::StatsRequest, 3, b"xx");
        answer(&mut stats);
        assert_eq!(
            framed_reply(&stats),
            Ok(FramedReply::Error { seq: 3, status: 2 })
        );
        let other = encode(Type::StatsReply, 1, b"{}");
        assert_eq!(framed_reply(&other), Err(BadFrame::OtherReply));
        let mut flagged = rep.clone();
        let mut p = framed::Packet::new_unchecked(&mut flagged[..]);
        p.set_flags(1);
        p.fill_crc();
        assert_eq!(framed_reply(&flagged), Err(BadFrame::BadFields));
        assert!(matches!(
            framed_reply(&rep[..10]),
            Err(BadFrame::Invalid(_))
        ));
    }

    #[test]
    fn stamp_reply_reads_the_reflected_fields() {
        let t1 = 1_700_000_000_123_456_789u64;
        let mut d = vec![0u8; 44];
        SenderPacket::new_checked(&mut d[..])
            .unwrap()
            .fill(42, ntp_from_unix_ns(t1), 1);
        let echoed = stamp_reply(&d).unwrap();
        assert!(echoed.echoed_request);
        let r = Reflection {
            seq: 5,
            rx_ns: t1 + 1_000,
            ttl: 64,
        };
        reflect(&mut d, r, || t1 + 3_000).unwrap();
        let s = stamp_reply(&d).unwrap();
        assert!(!s.echoed_request);
        assert_eq!((s.seq, s.sender_seq), (5, 42));
        assert_eq!(s.t1_ntp, ntp_from_unix_ns(t1));
        // NTP fractions are 1/2^32 s: within a nanosecond.
        assert!(s.t1_ns.abs_diff(t1) <= 1);
        assert!(s.t2_ns.abs_diff(t1 + 1_000) <= 1);
        assert!(s.t3_ns.abs_diff(t1 + 3_000) <= 1);
        assert_eq!(stamp_reply(&d[..43]), None);
    }
}
