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

pub mod framed;
pub mod probe;
pub mod sockperf;
pub mod stamp;

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
