//! Fuzzes the per-packet path the workers run: the plain echo pipeline and
//! the `--sockperf` pipeline, on arbitrary bytes in a buffer of arbitrary
//! size (so the datagram may not fit) with an arbitrary truncated flag.
//! Neither may panic; a truncated datagram is always dropped as such; an
//! echo is never longer than what arrived, and the plain echo is
//! byte-exact.
//!
//! Input layout: byte 0 bit 0 = truncated, bit 1 = sockperf pipeline;
//! bytes 1..3 = buffer size (u16, little-endian, at least 1); the rest is
//! the datagram.
#![no_main]

use libfuzzer_sys::fuzz_target;
use udp_packet_pool::packet::PacketPool;
use udp_packet_pool::process::{DropReason, Pipeline, Verdict};
use udp_packet_pool::sockperf::{self, SockperfReply};

fuzz_target!(|input: &[u8]| {
    if input.len() < 3 {
        return;
    }
    let truncated = input[0] & 1 != 0;
    let use_sockperf = input[0] & 2 != 0;
    let size = usize::from(u16::from_le_bytes([input[1], input[2]])).max(1);
    let data = &input[3..];
    let mut pipeline = if use_sockperf {
        Pipeline::echo().with(SockperfReply)
    } else {
        Pipeline::echo()
    };
    let mut pool = PacketPool::new(2, size);
    let slot = pool.alloc().expect("a buffer");
    {
        let mut b = pool.buffer(&slot);
        let n = data.len().min(size);
        b.data[..n].copy_from_slice(&data[..n]);
        b.meta.len = data.len();
        b.meta.truncated = truncated;
        let v = pipeline.process(&mut b);
        let out = b.payload();
        if truncated {
            assert_eq!(v, Verdict::Drop(DropReason::Truncated));
            assert!(out.is_empty(), "a truncated datagram shows no bytes");
        } else {
            assert!(out.len() <= data.len(), "the echo is never longer");
            let seen = &data[..n];
            match (use_sockperf, v) {
                (false, v) => {
                    assert_eq!(v, Verdict::Echo);
                    assert_eq!(out, seen, "plain echo is byte-exact");
                }
                (true, Verdict::Echo) => {
                    assert_eq!(sockperf::reply_verdict(seen), Verdict::Echo);
                    assert_eq!(out.len(), seen.len());
                    assert_eq!(out[..9], seen[..9]);
                    assert_eq!(out[10..], seen[10..]);
                }
                (true, Verdict::Drop(r)) => {
                    assert!(
                        matches!(r, DropReason::Malformed | DropReason::SockperfNoReply),
                        "unexpected drop reason {r:?}"
                    );
                    assert_eq!(out, seen, "a dropped datagram is not rewritten");
                }
            }
        }
    }
    pool.free(slot);
});
