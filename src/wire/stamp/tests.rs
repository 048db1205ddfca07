//! Unit tests of [`super`] (`src/wire/stamp.rs`), kept beside it so the
//! wire format and its stage stay readable in one screenful each.

use super::*;
use crate::packet::PacketPool;

#[test]
fn ntp_conversion() {
    assert_eq!(ntp_from_unix_ns(0), 0x83AA_7E80_0000_0000);
    assert_eq!(ntp_from_unix_ns(500_000_000), 0x83AA_7E80_8000_0000);
    assert_eq!(ntp_from_unix_ns(1_250_000_000), 0x83AA_7E81_4000_0000);
    // 2036-02-07 06:28:16 UTC: NTP era 1 starts, seconds wrap to 0.
    assert_eq!(ntp_from_unix_ns(2_085_978_496 * 1_000_000_000), 0);
    for ns in [0, 1, 999_999_999, 1_700_000_000_123_456_789] {
        let back = unix_ns_from_ntp(ntp_from_unix_ns(ns));
        assert!(ns - back <= 1, "{ns} -> {back}");
    }
    assert_eq!(
        unix_ns_from_ntp(1 << 32),
        ((1u64 << 32) + 1 - NTP_UNIX_OFFSET) * 1_000_000_000
    );
}

#[test]
fn error_estimate_encoding() {
    assert_eq!(ERROR_ESTIMATE & 0x8000, 0, "S = 0: unsynchronized");
    assert_eq!(ERROR_ESTIMATE & 0x4000, 0, "Z = 0: NTP format");
    assert_eq!((ERROR_ESTIMATE >> 8) & 0x3f, 22);
    assert_eq!(ERROR_ESTIMATE & 0xff, 1);
}

#[test]
fn field_ranges_tile_the_packets() {
    let s = [
        sender::SEQ,
        sender::TIMESTAMP,
        sender::ERROR_ESTIMATE,
        sender::MBZ,
    ];
    let r = [
        reflector::SEQ,
        reflector::TIMESTAMP,
        reflector::ERROR_ESTIMATE,
        reflector::MBZ1,
        reflector::RECEIVE_TIMESTAMP,
        reflector::SENDER_SEQ,
        reflector::SENDER_TIMESTAMP,
        reflector::SENDER_ERROR_ESTIMATE,
        reflector::MBZ2,
        reflector::SENDER_TTL..reflector::SENDER_TTL + 1,
        reflector::MBZ3,
    ];
    for (fields, len) in [(&s[..], SENDER_LEN), (&r[..], REFLECTOR_LEN)] {
        let mut at = 0;
        for f in fields {
            assert_eq!(f.start, at);
            at = f.end;
        }
        assert_eq!(at, len);
    }
    // RFC 8762 section 4.3.1 offsets, pinned.
    assert_eq!(reflector::RECEIVE_TIMESTAMP.start, 16);
    assert_eq!(reflector::SENDER_SEQ.start, 24);
    assert_eq!(reflector::SENDER_TIMESTAMP.start, 28);
    assert_eq!(reflector::SENDER_ERROR_ESTIMATE.start, 36);
    assert_eq!(reflector::SENDER_TTL, 40);
}

#[test]
fn reflects_in_place_keeping_padding() {
    let mut b = [0xeeu8; 60];
    SenderPacket::new_checked(&mut b[..])
        .unwrap()
        .fill(0x0102_0304, 0x1122_3344_5566_7788, 0x8001);
    let r = Reflection {
        seq: 7,
        rx_ns: 1_000_000_000,
        ttl: 64,
    };
    reflect(&mut b, r, || 2_000_000_000).unwrap();
    let p = ReflectorPacket::new_checked(&b[..]).unwrap();
    assert_eq!(p.seq(), 7);
    assert_eq!(p.timestamp(), ntp_from_unix_ns(2_000_000_000));
    assert_eq!(p.receive_timestamp(), ntp_from_unix_ns(1_000_000_000));
    assert_eq!(p.error_estimate(), ERROR_ESTIMATE);
    assert_eq!(p.sender_seq(), 0x0102_0304);
    assert_eq!(p.sender_timestamp(), 0x1122_3344_5566_7788);
    assert_eq!(p.sender_error_estimate(), 0x8001);
    assert_eq!(p.sender_ttl(), 64);
    assert!(p.mbz_clear());
    assert_eq!(&b[44..], &[0xee; 16], "padding unchanged");
    assert_eq!(&b[24..28], &[1, 2, 3, 4], "sender seq at 24");
    assert_eq!(b[40], 64, "TTL at 40");
}

#[test]
fn short_input_is_rejected_not_panicked() {
    for n in 0..SENDER_LEN {
        let mut b = vec![0u8; n];
        let r = Reflection {
            seq: 0,
            rx_ns: 0,
            ttl: 0,
        };
        assert_eq!(reflect(&mut b, r, || 0), Err(Error::Truncated));
        assert_eq!(SenderPacket::new_checked(&b[..]), Err(Error::Truncated));
    }
}

#[test]
fn stage_stateless_and_stateful() {
    let mut pool = PacketPool::new(1, 128);
    let s = pool.alloc().unwrap();
    let peer_a: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    let peer_b: SocketAddr = "192.0.2.1:5001".parse().unwrap();
    let mut stateless = StampReflect::stateless();
    let mut stateful = StampReflect::stateful(Arc::new(Mutex::new(Sessions::new(64))));
    let mut run = |st: &mut StampReflect, peer, seq: u32, len| {
        let mut b = pool.buffer(&s);
        b.meta.len = len;
        b.meta.truncated = false;
        b.meta.peer = peer;
        b.meta.ttl = Some(63);
        b.meta.rx_ns = 1_000;
        SenderPacket::new_checked(&mut b.data[..44])
            .unwrap()
            .fill(seq, 5, 0);
        let v = st.process(&mut b);
        (v, b.payload().get(..4).map(|x| x.to_vec()))
    };
    assert_eq!(
        run(&mut stateless, peer_a, 42, 44),
        (Verdict::Echo, Some(42u32.to_be_bytes().to_vec()))
    );
    assert_eq!(
        run(&mut stateless, peer_a, 42, 43).0,
        Verdict::Drop(DropReason::Malformed)
    );
    for (peer, want) in [(peer_a, 0u32), (peer_a, 1), (peer_b, 0), (peer_a, 2)] {
        assert_eq!(
            run(&mut stateful, peer, 42, 44),
            (Verdict::Echo, Some(want.to_be_bytes().to_vec()))
        );
    }
    pool.free(s);
}

#[test]
fn session_table_is_bounded_and_evicts_the_stalest() {
    let mut t = Sessions::new(8);
    let peer = |p: u16| SocketAddr::from(([192, 0, 2, 1], p));
    for p in 1..=8 {
        assert_eq!(t.next(peer(p)), 0);
    }
    for p in 2..=8 {
        assert_eq!(t.next(peer(p)), 1);
    }
    assert_eq!(t.next(peer(9)), 0, "a new session takes the stalest slot");
    assert_eq!(t.next(peer(2)), 2, "recent sessions keep counting");
    assert_eq!(t.next(peer(1)), 0, "the evicted session starts again");
    assert_eq!(t.slots.len(), 8);
}
