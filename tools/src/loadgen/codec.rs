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

use udp_packet_pool::probe;
use udp_packet_pool::sockperf;
use udp_packet_pool::wire::sealed;

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
}

/// Builds and parses datagrams of one size and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    protocol: Protocol,
    size: usize,
    /// Room for the seal's header and tag around the plaintext.
    sealed: bool,
}

impl Codec {
    /// Smallest datagram `protocol` can use.
    pub fn min_size(protocol: Protocol) -> usize {
        match protocol {
            Protocol::Echo => probe::HEADER_LEN,
            Protocol::Sockperf => sockperf::HEADER_LEN + probe::HEADER_LEN,
        }
    }

    /// A codec for datagrams of `size` bytes (at least [`Codec::min_size`]).
    pub fn new(protocol: Protocol, size: usize) -> Codec {
        assert!(size >= Codec::min_size(protocol), "datagram too small");
        Codec {
            protocol,
            size,
            sealed: false,
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

    /// Datagram size.
    pub fn size(&self) -> usize {
        self.size
    }

    fn probe_offset(&self) -> usize {
        match self.protocol {
            Protocol::Echo => 0,
            Protocol::Sockperf => sockperf::HEADER_LEN,
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
        let (head, body) = buf.split_at_mut(self.probe_offset());
        if self.protocol == Protocol::Sockperf {
            let mut h = sockperf::Packet::new_unchecked(head);
            h.set_seq(seq);
            h.set_flags(sockperf::FLAG_CLIENT | sockperf::FLAG_PONG_REQUEST);
            h.set_declared_len(self.size as u32);
        }
        probe::Packet::emit(body, flow, seq, intended_ns, sent_ns);
    }

    /// Classifies a received datagram (sealed: its opened plaintext).
    pub fn parse(&self, d: &[u8]) -> Result<Probe, Invalid> {
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
                sent_ns: 105
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
    fn minimum_sizes() {
        assert_eq!(Codec::min_size(Protocol::Echo), 36);
        assert_eq!(Codec::min_size(Protocol::Sockperf), 50);
        let c = Codec::new(Protocol::Sockperf, 50);
        let mut d = vec![0u8; 50];
        c.emit(&mut d, 0, 0, 0, 0);
        sockperf_reply(&mut d);
        assert!(c.parse(&d).is_ok());
    }
}
