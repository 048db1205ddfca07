//! Fuzzes the `--psk-file` stage and the sealed-datagram view on arbitrary
//! bytes: nothing panics; arbitrary bytes are dropped under one of the
//! sealed reasons (or, if they really are a sealed request under the key,
//! answered at the same length with a reply that opens to the same
//! plaintext); the same bytes sealed as a plaintext are answered exactly
//! once, and their replay and the reply itself are dropped.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use udp_packet_pool::crypto::{Psk, ReplayTable, SealedEcho};
use udp_packet_pool::process::{DropReason, Verdict};
use udp_packet_pool::wire::sealed::{self, Direction, NonceSeq, Packet};

fuzz_target!(|data: &[u8]| {
    let psk = Psk::from_bytes(&[7; 32]);
    let mut stage = SealedEcho::with_nonces(
        psk.clone(),
        Arc::new(ReplayTable::new(1)),
        NonceSeq::new(Direction::Reply, 1, 0),
    );
    let peer = "192.0.2.1:4000".parse().unwrap();
    if let Ok(p) = Packet::new_checked(data) {
        let _ = (p.header(), p.direction(), p.sender(), p.counter());
        let _ = (p.nonce(), p.ciphertext(), p.tag());
    }
    let mut buf = data.to_vec();
    match stage.answer(peer, &mut buf) {
        Verdict::Echo => {
            assert_eq!(buf.len(), data.len(), "amplification 1");
            assert!(sealed::open_reply(psk.cipher(), &buf).is_some());
        }
        Verdict::Drop(r) => assert!(
            matches!(
                r,
                DropReason::Malformed
                    | DropReason::BadSeal
                    | DropReason::SealedReply
                    | DropReason::Replayed
            ),
            "{r:?}"
        ),
    }
    let req = sealed::seal(psk.cipher(), &mut NonceSeq::new(Direction::Request, 5, 0), data);
    let mut reply = req.clone();
    assert_eq!(stage.answer(peer, &mut reply), Verdict::Echo);
    assert_eq!(reply.len(), req.len());
    assert_eq!(sealed::open_reply(psk.cipher(), &reply).as_deref(), Some(data));
    assert_eq!(
        stage.answer(peer, &mut req.clone()),
        Verdict::Drop(DropReason::Replayed)
    );
    assert_eq!(
        stage.answer(peer, &mut reply.clone()),
        Verdict::Drop(DropReason::SealedReply)
    );
});
