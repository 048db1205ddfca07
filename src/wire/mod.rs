//! Wire formats: views over datagram bytes with named field ranges, each
//! validated once when the view is made, and the reply stages built on
//! them.
//!
//! - [`probe`]: the header our client and loadgen put in every datagram
//!   (sequence, send time, flow), so replies can be matched and timed.
//! - [`sockperf`]: sockperf's message header and the `--protocol sockperf`
//!   reply stage.
//! - [`framed`]: the framed protocol (`[type | sequence | length | data]`
//!   with a CRC-32C) and the `--protocol framed` reply stage.
//! - [`stamp`]: STAMP (RFC 8762) test packets and the `--protocol stamp`
//!   Session-Reflector stage.
//! - [`sealed`]: ChaCha20-Poly1305 sealed datagrams (`--psk-file`).
//! - [`reply_check`]: the decoders `loadgen` applies to framed and STAMP
//!   replies (here so that fuzzing reaches them).

pub mod framed;
pub mod framed_stats;
pub mod probe;
pub mod reply_check;
pub mod sealed;
pub mod sockperf;
pub mod stamp;

use std::ops::Range;

/// The big-endian `u16` in bytes `r` of `b` (a field range of a view
/// whose length was checked when it was made).
pub(crate) fn u16_at(b: &[u8], r: Range<usize>) -> u16 {
    u16::from_be_bytes(b[r].try_into().expect("2 bytes"))
}

/// The big-endian `u32` in bytes `r` of `b`.
pub(crate) fn u32_at(b: &[u8], r: Range<usize>) -> u32 {
    u32::from_be_bytes(b[r].try_into().expect("4 bytes"))
}

/// The big-endian `u64` in bytes `r` of `b`.
pub(crate) fn u64_at(b: &[u8], r: Range<usize>) -> u64 {
    u64::from_be_bytes(b[r].try_into().expect("8 bytes"))
}

/// What the server answers (`--protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Byte-exact echo (RFC 862): every datagram back as it came.
    #[default]
    Echo,
    /// Like a sockperf server: reply only to sockperf requests that ask for
    /// one (see `sockperf::SockperfReply`).
    Sockperf,
    /// The framed protocol with CRC-32C (see `framed::FramedReply`).
    Framed,
    /// An RFC 8762 STAMP Session-Reflector, unauthenticated mode
    /// (TWAMP-Light compatible; `stamp::StampReflect`).
    Stamp,
}
