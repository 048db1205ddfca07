//! Fuzzes the sockperf header view and the `--sockperf` reply stage: any
//! bytes either fail `new_checked` (exactly when shorter than the header)
//! or give a view whose accessors never panic; the reply stage never
//! panics, answers only client ping-pong requests, and changes nothing but
//! the CLIENT bit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use udp_packet_pool::packet::PacketPool;
use udp_packet_pool::process::{DropReason, Stage, Verdict};
use udp_packet_pool::sockperf::{
    self, Packet, SockperfReply, FLAG_CLIENT, FLAG_PONG_REQUEST, FLAG_WARMUP, HEADER_LEN,
};

fuzz_target!(|data: &[u8]| {
    // The read-only view.
    match Packet::new_checked(data) {
        Err(sockperf::Error::Truncated) => assert!(data.len() < HEADER_LEN),
        Ok(p) => {
            assert!(data.len() >= HEADER_LEN);
            assert_eq!(p.seq().to_be_bytes(), data[0..8]);
            assert_eq!(p.flags().to_be_bytes(), data[8..10]);
            assert_eq!(p.declared_len().to_be_bytes(), data[10..14]);
            assert_eq!(p.payload(), &data[HEADER_LEN..]);
            assert_eq!(p.into_inner(), data);
        }
    }
    // The setters on a writable copy round-trip.
    let mut copy = data.to_vec();
    if let Ok(mut p) = Packet::new_checked(&mut copy[..]) {
        let (s, f, l) = (p.seq(), p.flags(), p.declared_len());
        p.set_seq(s);
        p.set_flags(f);
        p.set_declared_len(l);
        assert_eq!(copy, data);
    }

    // The reply stage on a pool buffer holding the input.
    let size = data.len().max(1);
    let mut pool = PacketPool::new(1, size);
    let slot = pool.alloc().expect("one buffer");
    let verdict = {
        let mut b = pool.buffer(&slot);
        b.data[..data.len()].copy_from_slice(data);
        b.meta.len = data.len();
        b.meta.truncated = false;
        let v = SockperfReply.process(&mut b);
        assert_eq!(v, sockperf::reply_verdict(data));
        let out = b.payload();
        assert_eq!(out.len(), data.len(), "the reply keeps the length");
        match v {
            Verdict::Echo => {
                let f = u16::from_be_bytes([data[8], data[9]]);
                assert!(f & FLAG_CLIENT != 0 && f & FLAG_PONG_REQUEST != 0);
                assert!(f & FLAG_WARMUP == 0);
                let mut want = data.to_vec();
                want[9] &= !(FLAG_CLIENT as u8);
                assert_eq!(out, &want[..], "only the CLIENT bit changes");
            }
            Verdict::Drop(DropReason::Malformed) => assert!(data.len() < HEADER_LEN),
            Verdict::Drop(DropReason::SockperfNoReply) => assert_eq!(out, data),
            Verdict::Drop(r) => panic!("unexpected drop reason {r:?}"),
        }
        v
    };
    let _ = verdict;
    pool.free(slot);
});
