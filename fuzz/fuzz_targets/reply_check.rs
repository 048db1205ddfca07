//! Fuzzes the decoders `loadgen --protocol framed|stamp` applies to the
//! datagrams it receives (`wire::reply_check`) on arbitrary bytes: they
//! never panic; a framed echo reply they accept is an intact frame whose
//! payload is the bytes after the header, an error reply carries the
//! frame's sequence and status; a STAMP reply is decoded exactly when the
//! datagram holds the 44 bytes, its timestamps converted without panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use udp_packet_pool::wire::framed::{self, Packet};
use udp_packet_pool::wire::reply_check::{framed_reply, stamp_reply, BadFrame, FramedReply};
use udp_packet_pool::wire::stamp::REFLECTOR_LEN;

fuzz_target!(|data: &[u8]| {
    let intact = Packet::new_checked(data);
    match framed_reply(data) {
        Ok(FramedReply::Echo { seq, payload }) => {
            let p = intact.expect("accepted an intact frame only");
            assert_eq!((seq, payload), (p.seq(), p.payload()));
            assert_eq!(payload.len(), data.len() - framed::HEADER_LEN);
        }
        Ok(FramedReply::Error { seq, status }) => {
            let p = intact.expect("accepted an intact frame only");
            assert_eq!((seq, status), (p.seq(), p.status()));
        }
        Err(BadFrame::Invalid(e)) => assert_eq!(intact.err(), Some(e)),
        Err(_) => assert!(intact.is_ok(), "other refusals are of intact frames"),
    }
    let s = stamp_reply(data);
    assert_eq!(s.is_some(), data.len() >= REFLECTOR_LEN);
});
