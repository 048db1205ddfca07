//! Fuzzes the `--protocol stamp` Session-Reflector stage (stateless, and
//! stateful over a small session table) on arbitrary bytes from arbitrary
//! peers. It may not panic; it answers only a datagram of at least the
//! 44-byte base packet, at exactly the request's length (amplification 1),
//! with the sender's fields copied to their reflected offsets and the
//! received TTL; anything
//! shorter is dropped as `malformed`, untouched.
//!
//! Input layout: byte 0 bit 0 = stateful; byte 1 = the peer's last address
//! byte and port (a few sessions); byte 2 = the received TTL; the rest is
//! the datagram.
#![no_main]

use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use udp_packet_pool::packet::PacketPool;
use udp_packet_pool::process::{DropReason, Pipeline, Verdict};
use udp_packet_pool::wire::stamp::{Sessions, StampReflect, SENDER_LEN};

fuzz_target!(|input: &[u8]| {
    if input.len() < 3 {
        return;
    }
    let stage = if input[0] & 1 != 0 {
        StampReflect::stateful(Arc::new(Mutex::new(Sessions::new(8))))
    } else {
        StampReflect::stateless()
    };
    let mut pipeline = Pipeline::echo().with(stage);
    let data = &input[3..];
    let mut pool = PacketPool::new(2, data.len().max(1));
    let slot = pool.alloc().expect("a buffer");
    {
        let mut b = pool.buffer(&slot);
        b.data[..data.len()].copy_from_slice(data);
        b.meta.len = data.len();
        b.meta.peer = format!("127.0.0.{}:{}", input[1] % 4, 40000 + u16::from(input[1]))
            .parse()
            .unwrap();
        b.meta.ttl = Some(input[2]);
        let v = pipeline.process(&mut b);
        let out = b.payload();
        if data.len() < SENDER_LEN {
            assert_eq!(v, Verdict::Drop(DropReason::Malformed));
            assert_eq!(out, data, "a dropped datagram is not rewritten");
        } else {
            assert_eq!(v, Verdict::Echo);
            assert_eq!(out.len(), data.len(), "answered at the request's length");
            // The sender's Sequence Number, Timestamp and Error Estimate,
            // reflected at 24..38; the TTL it arrived with at 40.
            assert_eq!(out[24..38], data[..14]);
            assert_eq!(out[40], input[2], "Session-Sender TTL");
        }
    }
    pool.free(slot);
});
