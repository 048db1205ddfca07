//! The framed protocol (`--protocol framed`): the seed design's
//! `[type | sequence | length | data]` header with a version, flags, a
//! status byte and a CRC-32C (RFC 3720, Castagnoli) over the whole frame.
//!
//! ```text
//!  0               1               2               3
//! +---------------+---------------+---------------+---------------+
//! |  version = 1  |     type      |  flags = 0    |    status     |  0
//! +---------------+---------------+---------------+---------------+
//! |                     sequence (u32, BE)                        |  4
//! +---------------+---------------+---------------+---------------+
//! |     length (u16, BE) = payload bytes  |     reserved = 0      |  8
//! +---------------+---------------+---------------+---------------+
//! |                      CRC-32C (u32, BE)                        | 12
//! +---------------+---------------+---------------+---------------+
//! |                    payload (length bytes) ...                    16
//! ```
//!
//! The CRC covers the 16 header bytes with the CRC field taken as zero,
//! then the payload. A datagram is a frame only if it holds the whole
//! header, its length field equals the bytes after the header exactly, its
//! CRC verifies, its version is 1 and its type is known
//! ([`Packet::new_checked`]).
//!
//! Types with the high bit set (`0x80`) are replies and are never answered,
//! in this version or any later one: two servers (or a server and a plain
//! echo service) cannot bounce frames at each other for ever.
//!
//! The server ([`FramedReply`]) answers in place, never with more bytes than
//! arrived (amplification at most 1):
//!
//! - echo request: an echo reply, same sequence and payload, new CRC;
//! - a frame that fails validation (short, length mismatch, bad CRC, other
//!   version): dropped as `bad_frame`, never answered (its bytes cannot be
//!   trusted, not even its sequence number);
//! - a valid reply (high bit set, known or not): dropped as
//!   `frame_no_reply`;
//! - stats request, served with [`answer_with`] (the `server` binary does):
//!   a stats reply ([`Type::StatsReply`]) exactly as long as the request,
//!   carrying one fragment of the counters' JSON; the payload layouts are
//!   in [`super::framed_stats`];
//! - a valid request the server cannot serve (unknown request type,
//!   non-zero flags, status or reserved field, a bad stats request, a stats
//!   request without [`answer_with`], a broadcast that reaches this stage,
//!   i.e. one not from `--admin`: see `crate::clients::broadcast`): an error reply
//!   ([`Type::Error`]) exactly as long as the request, same sequence, the
//!   [`ErrorCode`] in `status` and its text as payload (cut to the
//!   request's payload length, zero-padded).

use super::{u16_at, u32_at};
use crate::packet::PacketBuffer;
use crate::process::{DropReason, Stage, Verdict};

/// Header length in bytes.
pub const HEADER_LEN: usize = 16;
/// The only version this server speaks.
pub const VERSION: u8 = 1;
/// Type bit that marks a reply: never answered.
pub const REPLY_BIT: u8 = 0x80;

mod field {
    use std::ops::Range;
    pub const VERSION: usize = 0;
    pub const TYPE: usize = 1;
    pub const FLAGS: usize = 2;
    pub const STATUS: usize = 3;
    pub const SEQ: Range<usize> = 4..8;
    pub const LEN: Range<usize> = 8..10;
    pub const RESERVED: Range<usize> = 10..12;
    pub const CRC: Range<usize> = 12..16;
}

/// Frame types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Type {
    /// Asks for an [`Type::EchoReply`] with the same sequence and payload.
    EchoRequest = 0x01,
    /// Asks for one fragment of the server's counters (JSON; see
    /// `framed_stats`).
    StatsRequest = 0x02,
    /// Asks the server to relay the payload to its clients (not
    /// implemented yet: error reply).
    Broadcast = 0x03,
    /// The answer to an echo request.
    EchoReply = 0x81,
    /// One fragment of the server's counters as JSON.
    StatsReply = 0x82,
    /// A broadcast relayed to a client (`--admin`, `crate::clients`).
    BroadcastMessage = 0x83,
    /// A request the server could not serve; `status` says why.
    Error = 0xFF,
}

impl Type {
    /// The type for a type byte, if it is known.
    pub fn from_u8(v: u8) -> Option<Type> {
        Some(match v {
            0x01 => Type::EchoRequest,
            0x02 => Type::StatsRequest,
            0x03 => Type::Broadcast,
            0x81 => Type::EchoReply,
            0x82 => Type::StatsReply,
            0x83 => Type::BroadcastMessage,
            0xFF => Type::Error,
            _ => return None,
        })
    }

    /// Whether frames of this type are replies (never answered).
    pub fn is_reply(self) -> bool {
        self as u8 & REPLY_BIT != 0
    }
}

/// The `status` byte of an error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorCode {
    /// A request type this server does not know.
    UnknownType = 1,
    /// A known request the server does not serve yet.
    NotImplemented = 2,
    /// Non-zero flags, status or reserved field in a request.
    BadRequest = 3,
    /// A request this sender may not make (a broadcast from outside
    /// `--admin`).
    NotAllowed = 4,
}

impl ErrorCode {
    /// The text an error reply carries (as much as fits).
    pub fn text(self) -> &'static str {
        match self {
            ErrorCode::UnknownType => "unknown type",
            ErrorCode::NotImplemented => "not implemented",
            ErrorCode::BadRequest => "bad request",
            ErrorCode::NotAllowed => "not allowed",
        }
    }
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than the 16-byte header.
    Truncated,
    /// The length field is not the number of bytes after the header.
    LengthMismatch,
    /// The CRC-32C does not verify.
    BadCrc,
    /// A version other than [`VERSION`].
    BadVersion,
    /// A type byte [`Type::from_u8`] does not know.
    UnknownType,
}

/// CRC-32C of a frame: header with the CRC field as zero, then payload.
/// `buf` must hold at least [`HEADER_LEN`] bytes.
pub fn frame_crc(buf: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&buf[..field::CRC.start]);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc32c::crc32c_append(crc, &buf[HEADER_LEN..])
}

/// A frame over any byte buffer; [`Packet::new_checked`] validates once so
/// the accessors cannot panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it (accessors panic on one shorter
    /// than the header).
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer that is a whole, intact frame of a known type. The
    /// checks run in this order: length, CRC, version, type; so a frame
    /// reported as [`Error::BadVersion`] or [`Error::UnknownType`] did
    /// arrive intact.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let p = Packet::new_unchecked(buffer);
        if usize::from(p.len()) != p.buffer.as_ref().len() - HEADER_LEN {
            return Err(Error::LengthMismatch);
        }
        if p.crc() != frame_crc(p.buffer.as_ref()) {
            return Err(Error::BadCrc);
        }
        if p.version() != VERSION {
            return Err(Error::BadVersion);
        }
        if Type::from_u8(p.type_byte()).is_none() {
            return Err(Error::UnknownType);
        }
        Ok(p)
    }

    fn u8_at(&self, i: usize) -> u8 {
        self.buffer.as_ref()[i]
    }

    /// Protocol version.
    pub fn version(&self) -> u8 {
        self.u8_at(field::VERSION)
    }

    /// The raw type byte.
    pub fn type_byte(&self) -> u8 {
        self.u8_at(field::TYPE)
    }

    /// The type, if known (always, after [`Packet::new_checked`]).
    pub fn frame_type(&self) -> Option<Type> {
        Type::from_u8(self.type_byte())
    }

    /// Flag bits (none defined: zero).
    pub fn flags(&self) -> u8 {
        self.u8_at(field::FLAGS)
    }

    /// Status: an [`ErrorCode`] in an error reply, zero otherwise.
    pub fn status(&self) -> u8 {
        self.u8_at(field::STATUS)
    }

    /// Sequence number, chosen by the requester and copied into the reply.
    pub fn seq(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::SEQ)
    }

    /// Payload length the header declares.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::LEN)
    }

    /// The reserved field (zero).
    pub fn reserved(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::RESERVED)
    }

    /// The CRC-32C field.
    pub fn crc(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::CRC)
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
    /// Sets the version.
    pub fn set_version(&mut self, v: u8) {
        self.buffer.as_mut()[field::VERSION] = v;
    }

    /// Sets the type byte.
    pub fn set_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v;
    }

    /// Sets the flags.
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v;
    }

    /// Sets the status.
    pub fn set_status(&mut self, v: u8) {
        self.buffer.as_mut()[field::STATUS] = v;
    }

    /// Sets the sequence number.
    pub fn set_seq(&mut self, v: u32) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the declared payload length.
    pub fn set_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::LEN].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the reserved field.
    pub fn set_reserved(&mut self, v: u16) {
        self.buffer.as_mut()[field::RESERVED].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the CRC field as it stands.
    pub fn set_crc(&mut self, v: u32) {
        self.buffer.as_mut()[field::CRC].copy_from_slice(&v.to_be_bytes());
    }

    /// Computes the CRC over the frame as it now stands and stores it.
    pub fn fill_crc(&mut self) {
        let crc = frame_crc(self.buffer.as_ref());
        self.set_crc(crc);
    }

    /// Bytes after the header, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// A whole frame of type `ty` (flags, status and reserved zero) around
/// `payload`, which must be at most 65535 bytes.
pub fn encode(ty: Type, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).expect("payload of at most 65535 bytes");
    let mut buf = vec![0u8; HEADER_LEN + payload.len()];
    buf[HEADER_LEN..].copy_from_slice(payload);
    let mut p = Packet::new_unchecked(&mut buf[..]);
    p.set_version(VERSION);
    p.set_type(ty as u8);
    p.set_seq(seq);
    p.set_len(len);
    p.fill_crc();
    buf
}

/// Turns the frame in `buf` (at least [`HEADER_LEN`] bytes, length field
/// already right) into an error reply of the same length, in place.
pub(crate) fn error_reply(buf: &mut [u8], code: ErrorCode) -> Verdict {
    let mut p = Packet::new_unchecked(buf);
    p.set_type(Type::Error as u8);
    p.set_flags(0);
    p.set_status(code as u8);
    p.set_reserved(0);
    let out = p.payload_mut();
    let text = code.text().as_bytes();
    let n = text.len().min(out.len());
    out[..n].copy_from_slice(&text[..n]);
    out[n..].fill(0);
    p.fill_crc();
    Verdict::Echo
}

/// What the server does with the datagram in `buf`: rewrites it in place
/// into its reply (same length) and says [`Verdict::Echo`], or leaves it
/// alone and says why it is dropped. See the module docs for the rules.
pub fn answer(buf: &mut [u8]) -> Verdict {
    answer_with(buf, None)
}

/// Like [`answer`], serving stats requests from `stats` (layout in
/// [`super::framed_stats`]); without it they get `not implemented`.
pub fn answer_with(buf: &mut [u8], stats: Option<&crate::export::Published>) -> Verdict {
    let ty = match Packet::new_checked(&*buf) {
        Ok(p) => {
            if p.flags() != 0 || p.status() != 0 || p.reserved() != 0 {
                if p.type_byte() & REPLY_BIT != 0 {
                    return Verdict::Drop(DropReason::FrameNoReply);
                }
                return error_reply(buf, ErrorCode::BadRequest);
            }
            p.frame_type().expect("checked")
        }
        Err(Error::Truncated | Error::LengthMismatch | Error::BadCrc | Error::BadVersion) => {
            return Verdict::Drop(DropReason::BadFrame)
        }
        Err(Error::UnknownType) if buf[field::TYPE] & REPLY_BIT != 0 => {
            return Verdict::Drop(DropReason::FrameNoReply)
        }
        Err(Error::UnknownType) => return error_reply(buf, ErrorCode::UnknownType),
    };
    match ty {
        Type::EchoRequest => {
            let mut p = Packet::new_unchecked(buf);
            p.set_type(Type::EchoReply as u8);
            p.fill_crc();
            Verdict::Echo
        }
        Type::StatsRequest => match stats {
            Some(s) => super::framed_stats::reply(buf, s),
            None => error_reply(buf, ErrorCode::NotImplemented),
        },
        // Broadcasts from `--admin` were turned into echo requests by the
        // broadcast stage before this one; anyone else's arrive here.
        Type::Broadcast => error_reply(buf, ErrorCode::NotAllowed),
        Type::EchoReply | Type::StatsReply | Type::BroadcastMessage | Type::Error => {
            Verdict::Drop(DropReason::FrameNoReply)
        }
    }
}

/// The `--protocol framed` reply stage (see [`answer`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct FramedReply;

impl Stage for FramedReply {
    fn process(&mut self, pkt: &mut PacketBuffer<'_>) -> Verdict {
        answer(pkt.payload_mut())
    }
}

#[cfg(test)]
mod tests;
