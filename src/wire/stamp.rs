//! STAMP (RFC 8762) test packets, unauthenticated mode (TWAMP-Light
//! compatible), and the `--protocol stamp` Session-Reflector stage.
//!
//! Session-Sender test packet (RFC 8762, section 4.2.1), 44 bytes, network
//! byte order:
//!
//! ```text
//!  0..4   Sequence Number
//!  4..12  Timestamp (T1, NTP 64-bit)
//! 12..14  Error Estimate
//! 14..44  MBZ
//! ```
//!
//! Session-Reflector test packet (section 4.3.1), 44 bytes:
//!
//! ```text
//!  0..4   Sequence Number          (the sender's, or the session counter)
//!  4..12  Timestamp                (T3: when the reply is built)
//! 12..14  Error Estimate           (of T2 and T3)
//! 14..16  MBZ
//! 16..24  Receive Timestamp        (T2: the kernel receive timestamp)
//! 24..28  Session-Sender Sequence Number
//! 28..36  Session-Sender Timestamp (T1)
//! 36..38  Session-Sender Error Estimate
//! 38..40  MBZ
//! 40      Session-Sender TTL       (IP TTL / IPv6 hop limit as received)
//! 41..44  MBZ
//! ```
//!
//! The reflector rewrites the sender's packet in place: bytes after 44
//! (padding, which RFC 8762 lets a sender add for symmetric sizes) go back
//! unchanged, so a reply is exactly as long as its request.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};

use crate::io::now_realtime_ns;
use crate::packet::PacketBuffer;
use crate::process::{DropReason, Stage, Verdict};

/// Length of an unauthenticated Session-Sender test packet.
pub const SENDER_LEN: usize = 44;
/// Length of an unauthenticated Session-Reflector test packet.
pub const REFLECTOR_LEN: usize = 44;
/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
pub const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// The Error Estimate the reflector sends (RFC 8762 section 4.2.1, format
/// of RFC 4656 section 4.1.2: S | Z | Scale (6 bits) | Multiplier (8
/// bits), error = Multiplier * 2^(Scale - 32) s): S = 0 (the reflector
/// cannot tell whether its clock is synchronized to UTC), Z = 0 (NTP
/// format), Scale = 22, Multiplier = 1: 2^-10 s, about 1 ms.
pub const ERROR_ESTIMATE: u16 = (22 << 8) | 1;

/// Sessions `--stamp-stateful` tracks at once (all workers share the
/// table, allocated at start). A new session evicts the least recently
/// seen of the few slots its hash may use; an evicted session that comes
/// back counts from 0 again.
pub const STATEFUL_SESSIONS: usize = 4096;

/// Field ranges of the Session-Sender packet.
pub mod sender {
    use std::ops::Range;
    /// Sequence Number (u32).
    pub const SEQ: Range<usize> = 0..4;
    /// Timestamp T1 (NTP 64-bit).
    pub const TIMESTAMP: Range<usize> = 4..12;
    /// Error Estimate (u16).
    pub const ERROR_ESTIMATE: Range<usize> = 12..14;
    /// Must be zero, to the end of the 44 bytes.
    pub const MBZ: Range<usize> = 14..44;
}

/// Field ranges of the Session-Reflector packet.
pub mod reflector {
    use std::ops::Range;
    /// Sequence Number (u32).
    pub const SEQ: Range<usize> = 0..4;
    /// Timestamp T3 (NTP 64-bit).
    pub const TIMESTAMP: Range<usize> = 4..12;
    /// Error Estimate (u16).
    pub const ERROR_ESTIMATE: Range<usize> = 12..14;
    /// Must be zero.
    pub const MBZ1: Range<usize> = 14..16;
    /// Receive Timestamp T2 (NTP 64-bit).
    pub const RECEIVE_TIMESTAMP: Range<usize> = 16..24;
    /// Session-Sender Sequence Number (u32).
    pub const SENDER_SEQ: Range<usize> = 24..28;
    /// Session-Sender Timestamp T1 (NTP 64-bit).
    pub const SENDER_TIMESTAMP: Range<usize> = 28..36;
    /// Session-Sender Error Estimate (u16).
    pub const SENDER_ERROR_ESTIMATE: Range<usize> = 36..38;
    /// Must be zero.
    pub const MBZ2: Range<usize> = 38..40;
    /// Session-Sender TTL (u8).
    pub const SENDER_TTL: usize = 40;
    /// Must be zero, to the end of the 44 bytes.
    pub const MBZ3: Range<usize> = 41..44;
}

/// NTP 64-bit timestamp (seconds since 1900 in the high 32 bits, binary
/// fraction in the low 32) of `ns` nanoseconds since the Unix epoch
/// (`CLOCK_REALTIME`). The seconds wrap in 2036 (NTP era 1), as on the wire.
pub fn ntp_from_unix_ns(ns: u64) -> u64 {
    let secs = (ns / 1_000_000_000 + NTP_UNIX_OFFSET) as u32;
    let frac = (((ns % 1_000_000_000) << 32) / 1_000_000_000) as u32;
    (u64::from(secs) << 32) | u64::from(frac)
}

/// Nanoseconds since the Unix epoch of an NTP 64-bit timestamp (era 0,
/// 1968..2036, for seconds from the offset on; era 1 below it).
pub fn unix_ns_from_ntp(ntp: u64) -> u64 {
    let secs = ntp >> 32;
    let secs = if secs >= NTP_UNIX_OFFSET {
        secs - NTP_UNIX_OFFSET
    } else {
        secs + (1 << 32) - NTP_UNIX_OFFSET
    };
    let frac = ntp & 0xffff_ffff;
    secs * 1_000_000_000 + ((frac * 1_000_000_000) >> 32)
}

/// Why bytes are not a STAMP test packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than the 44 bytes of an unauthenticated packet.
    Truncated,
}

use super::{u16_at, u32_at, u64_at};

/// A Session-Sender test packet over any byte buffer;
/// [`SenderPacket::new_checked`] validates once so accessors cannot panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SenderPacket<T> {
    /// Wraps a buffer of at least [`SENDER_LEN`] bytes.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        if buffer.as_ref().len() < SENDER_LEN {
            return Err(Error::Truncated);
        }
        Ok(SenderPacket { buffer })
    }
    /// Sequence Number.
    pub fn seq(&self) -> u32 {
        u32_at(self.buffer.as_ref(), sender::SEQ)
    }
    /// Timestamp T1 (NTP 64-bit).
    pub fn timestamp(&self) -> u64 {
        u64_at(self.buffer.as_ref(), sender::TIMESTAMP)
    }
    /// Error Estimate.
    pub fn error_estimate(&self) -> u16 {
        u16_at(self.buffer.as_ref(), sender::ERROR_ESTIMATE)
    }
    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> SenderPacket<T> {
    /// Writes a complete sender header (MBZ zeroed; bytes after 44 kept).
    pub fn fill(&mut self, seq: u32, timestamp: u64, error_estimate: u16) {
        let b = self.buffer.as_mut();
        b[sender::SEQ].copy_from_slice(&seq.to_be_bytes());
        b[sender::TIMESTAMP].copy_from_slice(&timestamp.to_be_bytes());
        b[sender::ERROR_ESTIMATE].copy_from_slice(&error_estimate.to_be_bytes());
        b[sender::MBZ].fill(0);
    }
}

/// A Session-Reflector test packet over any byte buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReflectorPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ReflectorPacket<T> {
    /// Wraps a buffer of at least [`REFLECTOR_LEN`] bytes.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        if buffer.as_ref().len() < REFLECTOR_LEN {
            return Err(Error::Truncated);
        }
        Ok(ReflectorPacket { buffer })
    }
    /// Sequence Number.
    pub fn seq(&self) -> u32 {
        u32_at(self.buffer.as_ref(), reflector::SEQ)
    }
    /// Timestamp T3 (NTP 64-bit).
    pub fn timestamp(&self) -> u64 {
        u64_at(self.buffer.as_ref(), reflector::TIMESTAMP)
    }
    /// Error Estimate.
    pub fn error_estimate(&self) -> u16 {
        u16_at(self.buffer.as_ref(), reflector::ERROR_ESTIMATE)
    }
    /// Receive Timestamp T2 (NTP 64-bit).
    pub fn receive_timestamp(&self) -> u64 {
        u64_at(self.buffer.as_ref(), reflector::RECEIVE_TIMESTAMP)
    }
    /// Session-Sender Sequence Number.
    pub fn sender_seq(&self) -> u32 {
        u32_at(self.buffer.as_ref(), reflector::SENDER_SEQ)
    }
    /// Session-Sender Timestamp T1.
    pub fn sender_timestamp(&self) -> u64 {
        u64_at(self.buffer.as_ref(), reflector::SENDER_TIMESTAMP)
    }
    /// Session-Sender Error Estimate.
    pub fn sender_error_estimate(&self) -> u16 {
        u16_at(self.buffer.as_ref(), reflector::SENDER_ERROR_ESTIMATE)
    }
    /// Session-Sender TTL.
    pub fn sender_ttl(&self) -> u8 {
        self.buffer.as_ref()[reflector::SENDER_TTL]
    }
    /// Whether every MBZ field is zero.
    pub fn mbz_clear(&self) -> bool {
        let b = self.buffer.as_ref();
        [reflector::MBZ1, reflector::MBZ2, reflector::MBZ3]
            .into_iter()
            .all(|r| b[r].iter().all(|&x| x == 0))
    }
}

/// Sender fields a reflection starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reflection {
    /// The reflector's Sequence Number.
    pub seq: u32,
    /// Receive Timestamp T2, ns since the Unix epoch.
    pub rx_ns: u64,
    /// Session-Sender TTL (0: the kernel did not say).
    pub ttl: u8,
}

/// Rewrites a Session-Sender packet (at least 44 bytes, checked) into the
/// Session-Reflector packet in place, T3 read from `now` last.
pub fn reflect(buf: &mut [u8], r: Reflection, now: impl FnOnce() -> u64) -> Result<(), Error> {
    let s = SenderPacket::new_checked(&*buf)?;
    let (s_seq, s_ts, s_err) = (s.seq(), s.timestamp(), s.error_estimate());
    // The sender's fields move first (24..38 overlaps nothing they came
    // from: 0..14), then the reflector's own.
    buf[reflector::SENDER_SEQ].copy_from_slice(&s_seq.to_be_bytes());
    buf[reflector::SENDER_TIMESTAMP].copy_from_slice(&s_ts.to_be_bytes());
    buf[reflector::SENDER_ERROR_ESTIMATE].copy_from_slice(&s_err.to_be_bytes());
    buf[reflector::MBZ2].fill(0);
    buf[reflector::SENDER_TTL] = r.ttl;
    buf[reflector::MBZ3].fill(0);
    buf[reflector::SEQ].copy_from_slice(&r.seq.to_be_bytes());
    buf[reflector::ERROR_ESTIMATE].copy_from_slice(&ERROR_ESTIMATE.to_be_bytes());
    buf[reflector::MBZ1].fill(0);
    buf[reflector::RECEIVE_TIMESTAMP].copy_from_slice(&ntp_from_unix_ns(r.rx_ns).to_be_bytes());
    let t3 = ntp_from_unix_ns(now());
    buf[reflector::TIMESTAMP].copy_from_slice(&t3.to_be_bytes());
    Ok(())
}

/// How many slots a session's hash may use (the eviction window).
const WAYS: usize = 8;

#[derive(Clone, Copy)]
struct Session {
    peer: SocketAddr,
    next: u32,
    last_seen: u64,
    used: bool,
}

/// Per-session reflector sequence counters (`--stamp-stateful`), keyed by
/// the sender's address and port: [`STATEFUL_SESSIONS`] slots allocated
/// at start, never grown.
pub struct Sessions {
    slots: Box<[Session]>,
    hasher: RandomState,
    tick: u64,
}

impl Sessions {
    /// A table of `capacity` slots (at least [`WAYS`]).
    pub fn new(capacity: usize) -> Sessions {
        let empty = Session {
            peer: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
            next: 0,
            last_seen: 0,
            used: false,
        };
        Sessions {
            slots: vec![empty; capacity.max(WAYS)].into_boxed_slice(),
            hasher: RandomState::new(),
            tick: 0,
        }
    }

    /// The next reflector sequence number of `peer`'s session: 0, 1, 2...
    pub fn next(&mut self, peer: SocketAddr) -> u32 {
        self.tick += 1;
        let n = self.slots.len();
        let start = (self.hasher.hash_one(peer) as usize) % n;
        let mut victim = start;
        for k in 0..WAYS {
            let i = (start + k) % n;
            let s = self.slots[i];
            if s.used && s.peer == peer {
                let s = &mut self.slots[i];
                s.last_seen = self.tick;
                let seq = s.next;
                s.next = s.next.wrapping_add(1);
                return seq;
            }
            let v = &self.slots[victim];
            if v.used && (!s.used || s.last_seen < v.last_seen) {
                victim = i;
            }
        }
        self.slots[victim] = Session {
            peer,
            next: 1,
            last_seen: self.tick,
            used: true,
        };
        0
    }
}

/// The `--protocol stamp` stage: answer each Session-Sender test packet
/// with the Session-Reflector packet (stateless: the sender's sequence
/// number; stateful: a per-session counter).
pub struct StampReflect {
    sessions: Option<Arc<Mutex<Sessions>>>,
}

impl StampReflect {
    /// Stateless mode: the reflector's Sequence Number is the sender's.
    pub fn stateless() -> StampReflect {
        StampReflect { sessions: None }
    }

    /// Stateful mode over a session table (share one between workers:
    /// with a shared socket any worker may receive a session's packets).
    pub fn stateful(sessions: Arc<Mutex<Sessions>>) -> StampReflect {
        StampReflect {
            sessions: Some(sessions),
        }
    }
}

impl Stage for StampReflect {
    fn process(&mut self, pkt: &mut PacketBuffer<'_>) -> Verdict {
        let (rx_ns, ttl, peer) = (pkt.meta.rx_ns, pkt.meta.ttl.unwrap_or(0), pkt.meta.peer);
        let buf = pkt.payload_mut();
        let Ok(s) = SenderPacket::new_checked(&*buf) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let seq = match &self.sessions {
            None => s.seq(),
            // A poisoned lock only means another worker panicked mid-update
            // of a counter: the table is still usable.
            Some(t) => t.lock().unwrap_or_else(|e| e.into_inner()).next(peer),
        };
        match reflect(buf, Reflection { seq, rx_ns, ttl }, now_realtime_ns) {
            Ok(()) => Verdict::Echo,
            Err(_) => Verdict::Drop(DropReason::Malformed),
        }
    }

    fn wants_ttl(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests;
