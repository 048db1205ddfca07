//! Fuzzes the load generator's probe parser: `new_checked` never panics,
//! accepts only long-enough buffers with the magic and a matching
//! checksum, and the accessors of an accepted probe read the documented
//! little-endian fields. A probe re-emitted from its fields parses back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use udp_packet_pool::probe::{self, Error, Packet, HEADER_LEN, MAGIC};

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fuzz_target!(|data: &[u8]| {
    match Packet::new_checked(data) {
        Err(Error::Truncated) => assert!(data.len() < HEADER_LEN),
        Err(Error::Foreign) => {
            assert!(data.len() >= HEADER_LEN);
            assert_ne!(data[0..4], MAGIC.to_le_bytes());
        }
        Err(Error::Corrupted) => {
            assert_eq!(data[0..4], MAGIC.to_le_bytes());
            assert_ne!(data[32..36], probe::checksum(data).to_le_bytes());
        }
        Ok(p) => {
            assert_eq!(data[0..4], MAGIC.to_le_bytes());
            assert_eq!(data[32..36], probe::checksum(data).to_le_bytes());
            assert_eq!(p.flow().to_le_bytes(), data[4..8]);
            assert_eq!(p.seq(), le64(data, 8));
            assert_eq!(p.intended_ns(), le64(data, 16));
            assert_eq!(p.sent_ns(), le64(data, 24));
        }
    }
    // Emit a probe with fields taken from the input, then parse it back.
    if data.len() >= HEADER_LEN {
        let mut buf = data.to_vec();
        let (flow, seq) = (
            u32::from_le_bytes(data[4..8].try_into().unwrap()),
            le64(data, 8),
        );
        let (intended, sent) = (le64(data, 16), le64(data, 24));
        Packet::emit(&mut buf[..], flow, seq, intended, sent);
        let p = Packet::new_checked(&buf[..]).expect("an emitted probe parses");
        assert_eq!(
            (p.flow(), p.seq(), p.intended_ns(), p.sent_ns()),
            (flow, seq, intended, sent)
        );
    }
});
