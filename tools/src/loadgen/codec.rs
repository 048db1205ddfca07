//! Datagram layout for each `--protocol`: builds outgoing datagrams and
//! classifies replies.
//!
//! * `echo`: the datagram is a probe (`udp_packet_pool::probe`, magic,
//!   flow, seq, intended and actual send time, checksum, filler).
//! * `--psk-file` (echo only): the probe is the plaintext of a sealed
//!   datagram (`udp_packet_pool::wire::sealed`); [`Codec::sealed`] leaves
//!   room for the header and the tag, which `crate::seal` fills, and
//!   [`Codec::parse`] is given the opened plaintext.
//! * `sockperf`: a 14-byte sockperf header (flags CLIENT|PONG_REQUEST, seq,
//!   declared length = datagram length), then the probe. A reply counts
//!   only with CLIENT cleared, as sockperf's own client requires.
//! * `framed`: a framed echo request (type 0x01, sequence = the probe's,
//!   CRC-32C) carrying the probe as payload. A reply counts only as an
//!   intact echo reply (0x81) as long as the request, with our sequence
//!   number and an intact probe; an error reply (0xFF) and anything else
//!   framed-like are counted apart (`udp_packet_pool::wire::reply_check`).
//! * `stamp`: an RFC 8762 Session-Sender packet (sequence = the flow's
//!   sequence number, T1 = the send time on the wall clock, MBZ/SSID zero,
//!   zero padding to `--size`). There is no room for the probe: the worker
//!   matches a reply to what it sent by flow and sequence (`worker::stamp`).

use udp_packet_pool::io::{now_monotonic_ns, now_realtime_ns};
use udp_packet_pool::probe;
use udp_packet_pool::sockperf;
use udp_packet_pool::wire::reply_check::{framed_reply, BadFrame, FramedReply};
use udp_packet_pool::wire::sealed;
use udp_packet_pool::wire::{framed, stamp};

use crate::cli::Protocol;

/// A valid reply's probe fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Flow id.
    pub flow: u32,
    /// Sequence number within the flow.
    pub seq: u64,
    /// Intended send time (ns).
    pub intended_ns: u64,
    /// Actual send time (ns).
    pub sent_ns: u64,
    /// With `--protocol stamp`: the reflector's timestamps.
    pub stamp: Option<StampTimes>,
}

/// The four STAMP timestamps of one reply (ns since the Unix epoch) and
/// the reflector's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StampTimes {
    /// T1: sent (our wall clock).
    pub t1: u64,
    /// T2: received by the reflector (its clock).
    pub t2: u64,
    /// T3: sent back by the reflector (its clock).
    pub t3: u64,
    /// T4: received back (the kernel's stamp, our wall clock).
    pub t4: u64,
    /// The reflector's Sequence Number.
    pub reflector_seq: u32,
}

/// Why a datagram is not a valid reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Not ours: too short, wrong magic.
    Foreign,
    /// A sockperf message that still has CLIENT set (an echo of our own
    /// request, not a server's reply); counted as foreign.
    NotAReply,
    /// Ours, but the checksum does not match.
    Corrupted,
    /// `--psk-file`: not a sealed reply that opens under the key.
    Unauthenticated,
    /// `framed`/`stamp`: not a valid reply to one of our requests (bad
    /// frame, wrong type, length or sequence, a STAMP reply that matches
    /// nothing we sent); `echoed_request` when it is our own request sent
    /// back unchanged (the target is not a framed server / reflector).
    BadReply {
        /// Our request, unchanged.
        echoed_request: bool,
    },
    /// `framed`: an error reply (type 0xFF).
    ErrorReply,
}

/// Builds and parses datagrams of one size and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    protocol: Protocol,
    size: usize,
    /// Room for the seal's header and tag around the plaintext.
    sealed: bool,
    /// Wall clock minus monotonic clock at the start (ns): T1 of a STAMP
    /// packet is its monotonic send time plus this.
    wall_offset_ns: u64,
}

impl Codec {
    /// Smallest datagram `protocol` can use.
    pub fn min_size(protocol: Protocol) -> usize {
        match protocol {
            Protocol::Echo => probe::HEADER_LEN,
            Protocol::Sockperf => sockperf::HEADER_LEN + probe::HEADER_LEN,
            Protocol::Framed => framed::HEADER_LEN + probe::HEADER_LEN,
            Protocol::Stamp => stamp::SENDER_LEN,
        }
    }

    /// A codec for datagrams of `size` bytes (at least [`Codec::min_size`]).
    pub fn new(protocol: Protocol, size: usize) -> Codec {
        assert!(size >= Codec::min_size(protocol), "datagram too small");
        let wall_offset_ns = now_realtime_ns().saturating_sub(now_monotonic_ns());
        Codec {
            protocol,
            size,
            sealed: false,
            wall_offset_ns,
        }
    }

    /// A codec for sealed datagrams of `size` bytes: the plaintext is
    /// `size - OVERHEAD` bytes (at least [`Codec::min_size`]).
    pub fn sealed(protocol: Protocol, size: usize) -> Codec {
        Codec {
            size,
            sealed: true,
            ..Codec::new(protocol, size - sealed::OVERHEAD)
        }
    }

    /// The wall-clock time (ns since the Unix epoch) of monotonic `mono_ns`.
    pub fn wall_ns(&self, mono_ns: u64) -> u64 {
        mono_ns + self.wall_offset_ns
    }

    /// T1 of a STAMP packet sent at monotonic `sent_ns` (NTP format).
    pub fn stamp_t1(&self, sent_ns: u64) -> u64 {
        stamp::ntp_from_unix_ns(self.wall_ns(sent_ns))
    }

    /// Datagram size.
    pub fn size(&self) -> usize {
        self.size
    }

    fn probe_offset(&self) -> usize {
        match self.protocol {
            Protocol::Echo | Protocol::Stamp => 0,
            Protocol::Sockperf => sockperf::HEADER_LEN,
            Protocol::Framed => framed::HEADER_LEN,
        }
    }

    /// Writes one complete datagram into `buf` (exactly [`Codec::size`]
    /// bytes; sealed: its plaintext, between the seal's header and tag).
    pub fn emit(&self, buf: &mut [u8], flow: u32, seq: u64, intended_ns: u64, sent_ns: u64) {
        debug_assert_eq!(buf.len(), self.size);
        let buf = if self.sealed {
            &mut buf[sealed::HEADER_LEN..self.size - sealed::TAG_LEN]
        } else {
            buf
        };
        if self.protocol == Protocol::Stamp {
            buf.fill(0);
            let mut p = stamp::SenderPacket::new_checked(buf).expect("size >= 44 (min_size)");
            p.fill(seq as u32, self.stamp_t1(sent_ns), stamp::ERROR_ESTIMATE);
            return;
        }
        let (head, body) = buf.split_at_mut(self.probe_offset());
        if self.protocol == Protocol::Sockperf {
            let mut h = sockperf::Packet::new_unchecked(head);
            h.set_seq(seq);
            h.set_flags(sockperf::FLAG_CLIENT | sockperf::FLAG_PONG_REQUEST);
            h.set_declared_len(self.size as u32);
        }
        probe::Packet::emit(body, flow, seq, intended_ns, sent_ns);
        if self.protocol == Protocol::Framed {
            let mut f = framed::Packet::new_unchecked(buf);
            f.set_version(framed::VERSION);
            f.set_type(framed::Type::EchoRequest as u8);
            f.set_flags(0);
            f.set_status(0);
            f.set_seq(seq as u32);
            f.set_len((self.size - framed::HEADER_LEN) as u16);
            f.set_reserved(0);
            f.fill_crc();
        }
    }

    /// Classifies a framed reply: an intact echo reply of our length
    /// whose sequence number is its probe's.
    fn parse_framed(&self, d: &[u8]) -> Result<Probe, Invalid> {
        let bad = Invalid::BadReply {
            echoed_request: false,
        };
        match framed_reply(d) {
            Ok(FramedReply::Echo { seq, payload }) if d.len() == self.size => {
                let p = probe::Packet::new_checked(payload).map_err(|_| bad)?;
                if p.seq() as u32 != seq {
                    return Err(bad);
                }
                Ok(Probe {
                    flow: p.flow(),
                    seq: p.seq(),
                    intended_ns: p.intended_ns(),
                    sent_ns: p.sent_ns(),
                    stamp: None,
                })
            }
            Ok(FramedReply::Echo { .. }) => Err(bad),
            Ok(FramedReply::Error { .. }) => Err(Invalid::ErrorReply),
            Err(BadFrame::Request) => Err(Invalid::BadReply {
                echoed_request: true,
            }),
            Err(_) => Err(bad),
        }
    }

    /// Classifies a received datagram (sealed: its opened plaintext).
    pub fn parse(&self, d: &[u8]) -> Result<Probe, Invalid> {
        match self.protocol {
            Protocol::Framed => return self.parse_framed(d),
            // Matched by flow and sequence in `worker::stamp`, never here.
            Protocol::Stamp => return Err(Invalid::Foreign),
            Protocol::Echo | Protocol::Sockperf => {}
        }
        if self.protocol == Protocol::Sockperf {
            let h = sockperf::Packet::new_checked(d).map_err(|_| Invalid::Foreign)?;
            if h.flags() & sockperf::FLAG_CLIENT != 0 {
                // Still a request: only a real probe makes it "ours".
                return match probe::Packet::new_checked(h.payload()) {
                    Ok(_) => Err(Invalid::NotAReply),
                    Err(_) => Err(Invalid::Foreign),
                };
            }
        }
        match probe::Packet::new_checked(&d[self.probe_offset()..]) {
            Ok(p) => Ok(Probe {
                flow: p.flow(),
                seq: p.seq(),
                intended_ns: p.intended_ns(),
                sent_ns: p.sent_ns(),
                stamp: None,
            }),
            Err(probe::Error::Corrupted) => Err(Invalid::Corrupted),
            Err(probe::Error::Truncated | probe::Error::Foreign) => Err(Invalid::Foreign),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a sockperf server does to a request.
    fn sockperf_reply(d: &mut [u8]) {
        let mut h = sockperf::Packet::new_checked(d).unwrap();
        let f = h.flags();
        h.set_flags(f & !sockperf::FLAG_CLIENT);
    }

    #[test]
    fn echo_roundtrip() {
        let c = Codec::new(Protocol::Echo, 64);
        let mut d = vec![0u8; 64];
        c.emit(&mut d, 3, 9, 100, 105);
        let p = c.parse(&d).unwrap();
        assert_eq!(
            p,
            Probe {
                flow: 3,
                seq: 9,
                intended_ns: 100,
                sent_ns: 105,
                stamp: None,
            }
        );
    }

    #[test]
    fn echo_rejects_corrupt_and_foreign() {
        let c = Codec::new(Protocol::Echo, 40);
        let mut d = vec![0u8; 40];
        c.emit(&mut d, 0, 1, 2, 3);
        let mut bad = d.clone();
        bad[39] ^= 0x40;
        assert_eq!(c.parse(&bad), Err(Invalid::Corrupted));
        bad = d.clone();
        bad[0] = b'X';
        assert_eq!(c.parse(&bad), Err(Invalid::Foreign));
        assert_eq!(c.parse(&d[..20]), Err(Invalid::Foreign));
        assert_eq!(c.parse(&[]), Err(Invalid::Foreign));
        // A longer reply than we sent cannot carry our checksum.
        let mut long = d.clone();
        long.push(0);
        assert_eq!(c.parse(&long), Err(Invalid::Corrupted));
    }

    #[test]
    fn sockperf_layout_and_reply_rules() {
        let c = Codec::new(Protocol::Sockperf, 64);
        let mut d = vec![0u8; 64];
        c.emit(&mut d, 2, 77, 10, 11);
        let h = sockperf::Packet::new_checked(&d[..]).unwrap();
        assert_eq!(h.seq(), 77);
        assert_eq!(
            h.flags(),
            sockperf::FLAG_CLIENT | sockperf::FLAG_PONG_REQUEST
        );
        assert_eq!(h.declared_len(), 64);
        // A byte-exact echo still has CLIENT set: not a reply.
        assert_eq!(c.parse(&d), Err(Invalid::NotAReply));
        sockperf_reply(&mut d);
        let p = c.parse(&d).unwrap();
        assert_eq!((p.flow, p.seq, p.intended_ns, p.sent_ns), (2, 77, 10, 11));
        assert_eq!(c.parse(&d[..13]), Err(Invalid::Foreign));
        assert_eq!(c.parse(&d[..30]), Err(Invalid::Foreign));
        d[63] ^= 1;
        assert_eq!(c.parse(&d), Err(Invalid::Corrupted));
    }

    #[test]
    fn framed_request_and_reply_rules() {
        let c = Codec::new(Protocol::Framed, 64);
        let mut d = vec![0u8; 64];
        c.emit(&mut d, 1, 300, 10, 11);
        let f = framed::Packet::new_checked(&d[..]).unwrap();
        assert_eq!((f.type_byte(), f.seq(), f.len()), (0x01, 300, 48));
        // Our request back unchanged; then the server's answer.
        let echoed = Invalid::BadReply {
            echoed_request: true,
        };
        assert_eq!(c.parse(&d), Err(echoed));
        framed::answer(&mut d);
        let p = c.parse(&d).unwrap();
        assert_eq!((p.flow, p.seq, p.intended_ns, p.sent_ns), (1, 300, 10, 11));
        let bad = Invalid::BadReply {
            echoed_request: false,
        };
        // Bad CRC, short, a sequence number that is not the probe's.
        let mut crc = d.clone();
        crc[63] ^= 1;
        assert_eq!(c.parse(&crc), Err(bad));
        assert_eq!(c.parse(&d[..15]), Err(bad));
        let mut p = framed::Packet::new_unchecked(&mut d[..]);
        p.set_seq(301);
        p.fill_crc();
        assert_eq!(c.parse(&d), Err(bad));
        let err = framed::encode(framed::Type::Error, 300, &[0; 48]);
        assert_eq!(c.parse(&err), Err(Invalid::ErrorReply));
    }

    #[test]
    fn stamp_request_layout() {
        let c = Codec::new(Protocol::Stamp, 60);
        let mut d = vec![0xaau8; 60];
        c.emit(&mut d, 0, (1 << 32) + 5, 10, 1_000);
        let s = stamp::SenderPacket::new_checked(&d[..]).unwrap();
        assert_eq!(s.seq(), 5);
        assert_eq!(s.timestamp(), c.stamp_t1(1_000));
        assert_eq!(s.error_estimate(), stamp::ERROR_ESTIMATE);
        assert!(d[14..].iter().all(|&b| b == 0), "MBZ and padding zero");
    }

    #[test]
    fn minimum_sizes() {
        assert_eq!(Codec::min_size(Protocol::Echo), 36);
        assert_eq!(Codec::min_size(Protocol::Sockperf), 50);
        assert_eq!(Codec::min_size(Protocol::Framed), 52);
        assert_eq!(Codec::min_size(Protocol::Stamp), 44);
        let c = Codec::new(Protocol::Sockperf, 50);
        let mut d = vec![0u8; 50];
        c.emit(&mut d, 0, 0, 0, 0);
        sockperf_reply(&mut d);
        assert!(c.parse(&d).is_ok());
    }
}
