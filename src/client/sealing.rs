//! `--psk-file`: each probe leaves sealed (ChaCha20-Poly1305, see
//! [`crate::wire::sealed`]) under a random sender id of this run and a
//! fresh nonce, and only a reply-direction datagram whose tag verifies
//! under the key is opened; its plaintext is then checked like a plain
//! echo. A server with another key (or none) never answers, so the
//! client says "no valid reply: wrong key?" when probes time out.

use std::io;

use crate::crypto::Psk;
use crate::wire::sealed::{self, Direction, NonceSeq};

/// What the timeout line and the summary add with `--psk-file`.
pub const WRONG_KEY_HINT: &str =
    "no valid reply: wrong key? (the server drops datagrams its key does not open, as bad_seal)";

/// The key and this run's request nonces.
pub(super) struct Sealing {
    psk: Psk,
    nonces: NonceSeq,
}

impl Sealing {
    /// Sealing under `psk` with a random sender id and counter start.
    pub(super) fn new(psk: &Psk) -> io::Result<Sealing> {
        Ok(Sealing {
            psk: psk.clone(),
            nonces: NonceSeq::random(Direction::Request)?,
        })
    }

    /// The sealed request for `plaintext` (a fresh nonce each call).
    pub(super) fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        sealed::seal(self.psk.cipher(), &mut self.nonces, plaintext)
    }

    /// Opens a reply into `plain`; false if it is not an authentic reply.
    pub(super) fn open(&self, got: &[u8], plain: &mut Vec<u8>) -> bool {
        match sealed::open_reply(self.psk.cipher(), got) {
            Some(p) => {
                *plain = p;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_fresh_and_only_replies_open() {
        let psk = Psk::from_bytes(&[3; 32]);
        let mut s = Sealing::new(&psk).unwrap();
        let a = s.seal(b"hello");
        assert_ne!(a, s.seal(b"hello"), "fresh nonce");
        let mut plain = Vec::new();
        assert!(!s.open(&a, &mut plain), "a request is not a reply");
        let mut server = NonceSeq::new(Direction::Reply, 1, 0);
        let reply = sealed::seal(psk.cipher(), &mut server, b"hello");
        assert!(s.open(&reply, &mut plain));
        assert_eq!(plain, b"hello");
        let other = Psk::from_bytes(&[4; 32]);
        let forged = sealed::seal(other.cipher(), &mut server, b"hello");
        assert!(!s.open(&forged, &mut plain));
    }
}
