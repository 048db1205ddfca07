//! `--psk-file`: every datagram leaves sealed (ChaCha20-Poly1305, see
//! `udp_packet_pool::wire::sealed`) with the probe as its plaintext, and
//! every reply is opened before its probe is read. Each thread seals under
//! its own sender id (a random base per run plus the thread number) and
//! counter, so no two datagrams of a run share a nonce; the server keeps
//! one replay window per flow (address and port) and sender id. A reply
//! that does not open (forged, another key, not sealed, or a request
//! bounced back) counts as `unauthenticated`.

use crate::cli::{Protocol, RunArgs};
use crate::codec::{Codec, Invalid, Probe};
use crate::config::ConfigError;
use udp_packet_pool::crypto::Psk;
use udp_packet_pool::wire::sealed::{self, Direction, NonceSeq, HEADER_LEN, TAG_LEN};

/// The key and the run's random base for the threads' sender ids.
#[derive(Debug, Clone)]
pub struct Sealing {
    psk: Psk,
    base: NonceSeq,
}

/// Reads `--psk-file` (echo only).
pub fn load(a: &RunArgs) -> Result<Option<Sealing>, ConfigError> {
    let Some(path) = &a.psk_file else {
        return Ok(None);
    };
    if a.protocol != Protocol::Echo {
        return Err(ConfigError::Usage(
            "--psk-file works with --protocol echo only".to_string(),
        ));
    }
    let psk = Psk::from_file(path).map_err(|e| ConfigError::Usage(e.to_string()))?;
    let base =
        NonceSeq::random(Direction::Request).map_err(|e| ConfigError::Runtime(e.to_string()))?;
    Ok(Some(Sealing { psk, base }))
}

/// One thread's sealing and opening.
pub struct Sealer {
    psk: Psk,
    nonces: NonceSeq,
    /// A reply's bytes while it is opened (grows once, to the reply size).
    scratch: Vec<u8>,
}

impl Sealer {
    /// Thread `thread`'s sealer.
    pub fn new(s: &Sealing, thread: usize) -> Sealer {
        Sealer {
            psk: s.psk.clone(),
            nonces: s.base.for_worker(thread as u32),
            scratch: Vec::new(),
        }
    }

    /// Seals a datagram the codec laid out (plaintext between header and tag).
    pub fn seal(&mut self, datagram: &mut [u8]) {
        sealed::seal_in_place(self.psk.cipher(), &mut self.nonces, datagram);
    }

    /// Opens a reply and parses its plaintext.
    pub fn parse(&mut self, codec: &Codec, d: &[u8]) -> Result<Probe, Invalid> {
        self.scratch.clear();
        self.scratch.extend_from_slice(d);
        if !sealed::open_reply_in_place(self.psk.cipher(), &mut self.scratch) {
            return Err(Invalid::Unauthenticated);
        }
        codec.parse(&self.scratch[HEADER_LEN..self.scratch.len() - TAG_LEN])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_probes_round_trip_and_forgeries_are_unauthenticated() {
        let psk = Psk::from_bytes(&[5; 32]);
        let s = Sealing {
            psk: psk.clone(),
            base: NonceSeq::new(Direction::Request, 10, 0),
        };
        let codec = Codec::sealed(Protocol::Echo, 100);
        let mut sealer = Sealer::new(&s, 1);
        let mut d = vec![0u8; 100];
        codec.emit(&mut d, 4, 9, 100, 105);
        sealer.seal(&mut d);
        let p = sealed::Packet::new_checked(&d[..]).unwrap();
        assert_eq!((p.sender(), p.counter()), (11, 0), "base + thread");
        // A request bounced back does not open as a reply.
        assert_eq!(sealer.parse(&codec, &d), Err(Invalid::Unauthenticated));
        // What the server sends back: the same plaintext, re-sealed.
        let mut server = NonceSeq::new(Direction::Reply, 1, 0);
        assert!(sealed::open_in_place(psk.cipher(), &mut d));
        sealed::seal_in_place(psk.cipher(), &mut server, &mut d);
        let got = sealer.parse(&codec, &d).unwrap();
        assert_eq!((got.flow, got.seq, got.sent_ns), (4, 9, 105));
        d[50] ^= 1;
        assert_eq!(sealer.parse(&codec, &d), Err(Invalid::Unauthenticated));
    }
}
