//! The `--psk-file` server stage: open each sealed request, refuse
//! replays, and answer with the same plaintext sealed under the worker's
//! own reply nonces, at the request's exact length (amplification 1).
//!
//! Checks, in order, each a distinct drop reason, none ever answered:
//!
//! 1. shorter than header and tag, other magic or version, non-zero
//!    reserved byte: `malformed`;
//! 2. the direction bit says reply: `sealed_reply` (a server's own answer
//!    bounced back, or two servers facing each other: no loop);
//! 3. the tag does not verify under the key (forged, corrupted, or sealed
//!    with another key): `bad_seal`;
//! 4. its sender's window has seen the counter, or it is below the window:
//!    `replayed` (checked only after the tag, so forgeries cannot move a
//!    window).

use std::sync::Arc;

use super::{Psk, ReplayTable};
use crate::packet::PacketBuffer;
use crate::process::{DropReason, Stage, Verdict};
use crate::wire::sealed::{self, Direction, NonceSeq, Packet};

/// One worker's sealed echo: the key, the worker's reply nonces, and the
/// replay table all workers share.
pub struct SealedEcho {
    psk: Psk,
    replies: NonceSeq,
    table: Arc<ReplayTable>,
}

impl SealedEcho {
    /// A stage with a random reply sender id and counter start.
    pub fn new(psk: Psk, table: Arc<ReplayTable>) -> std::io::Result<SealedEcho> {
        Ok(SealedEcho::with_nonces(
            psk,
            table,
            NonceSeq::random(Direction::Reply)?,
        ))
    }

    /// A stage that numbers its replies from `replies` (tests).
    pub fn with_nonces(psk: Psk, table: Arc<ReplayTable>, replies: NonceSeq) -> SealedEcho {
        SealedEcho {
            psk,
            replies,
            table,
        }
    }

    /// Decides about one datagram from `peer` and, when it is answered,
    /// turns `buf` into the sealed reply.
    pub fn answer(&mut self, peer: std::net::SocketAddr, buf: &mut [u8]) -> Verdict {
        let (direction, sender, counter) = match Packet::new_checked(&*buf) {
            Ok(p) => (p.direction(), p.sender(), p.counter()),
            Err(_) => return Verdict::Drop(DropReason::Malformed),
        };
        if direction == Direction::Reply {
            return Verdict::Drop(DropReason::SealedReply);
        }
        if !sealed::open_in_place(self.psk.cipher(), buf) {
            return Verdict::Drop(DropReason::BadSeal);
        }
        if !self.table.accept(peer, sender, counter) {
            return Verdict::Drop(DropReason::Replayed);
        }
        sealed::seal_in_place(self.psk.cipher(), &mut self.replies, buf);
        Verdict::Echo
    }
}

/// What the server binary builds once from `--psk-file`: the key, the
/// shared replay table, and a random base for the workers' reply nonces
/// (worker `i` uses sender id base + `i`, so workers never share a nonce).
pub struct SealedEchoFactory {
    psk: Psk,
    table: Arc<ReplayTable>,
    base: NonceSeq,
}

impl SealedEchoFactory {
    /// Reads the key file and allocates the replay table
    /// ([`super::DEFAULT_SENDERS`] senders).
    pub fn from_file(path: &std::path::Path) -> Result<SealedEchoFactory, String> {
        let psk = Psk::from_file(path).map_err(|e| e.to_string())?;
        let base = NonceSeq::random(Direction::Reply).map_err(|e| e.to_string())?;
        Ok(SealedEchoFactory {
            psk,
            table: Arc::new(ReplayTable::new(super::DEFAULT_SENDERS)),
            base,
        })
    }

    /// Worker `worker`'s stage.
    pub fn stage(&self, worker: usize) -> SealedEcho {
        let nonces = self.base.for_worker(worker as u32);
        SealedEcho::with_nonces(self.psk.clone(), self.table.clone(), nonces)
    }
}

impl Stage for SealedEcho {
    fn process(&mut self, pkt: &mut PacketBuffer<'_>) -> Verdict {
        let peer = pkt.meta.peer;
        self.answer(peer, pkt.payload_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::sealed::{open_reply, seal, OVERHEAD};

    fn stage() -> SealedEcho {
        SealedEcho::with_nonces(
            Psk::from_bytes(&[9; 32]),
            Arc::new(ReplayTable::new(64)),
            NonceSeq::new(Direction::Reply, 5, 0),
        )
    }

    #[test]
    fn answers_once_with_a_sealed_reply_of_the_same_length() {
        let mut s = stage();
        let peer = "192.0.2.7:4000".parse().unwrap();
        let psk = Psk::from_bytes(&[9; 32]);
        let mut client = NonceSeq::new(Direction::Request, 77, 1000);
        let req = seal(psk.cipher(), &mut client, b"ping");
        let mut buf = req.clone();
        assert_eq!(s.answer(peer, &mut buf), Verdict::Echo);
        assert_eq!(buf.len(), 4 + OVERHEAD);
        assert_eq!(open_reply(psk.cipher(), &buf).unwrap(), b"ping");
        assert!(!buf.windows(4).any(|w| w == b"ping"), "never in clear");
        // The same request again is a replay; so is the reply sent back.
        assert_eq!(
            s.answer(peer, &mut req.clone()),
            Verdict::Drop(DropReason::Replayed)
        );
        assert_eq!(
            s.answer(peer, &mut buf.clone()),
            Verdict::Drop(DropReason::SealedReply)
        );
        let other = Psk::from_bytes(&[1; 32]);
        let mut forged = seal(other.cipher(), &mut client, b"ping");
        assert_eq!(
            s.answer(peer, &mut forged),
            Verdict::Drop(DropReason::BadSeal)
        );
        assert_eq!(
            s.answer(peer, &mut b"ping".to_vec()),
            Verdict::Drop(DropReason::Malformed)
        );
        // A forgery did not move the window: the counter it used is free.
        let mut next = NonceSeq::new(Direction::Request, 77, 1001);
        let mut ok = seal(psk.cipher(), &mut next, b"pong");
        assert_eq!(s.answer(peer, &mut ok), Verdict::Echo);
    }
}
