//! Unit tests of [`super`] (`src/wire/framed.rs`), kept beside it so the
//! wire format and its stage stay readable in one screenful each.

use super::*;

/// RFC 3720 appendix B.4 test vectors.
#[test]
fn crc32c_matches_rfc3720_vectors() {
    let inc: Vec<u8> = (0..32).collect();
    let dec: Vec<u8> = (0..32).rev().collect();
    assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8A91_36AA);
    assert_eq!(crc32c::crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
    assert_eq!(crc32c::crc32c(&inc), 0x46DD_794E);
    assert_eq!(crc32c::crc32c(&dec), 0x113F_DB5C);
}

#[test]
fn frame_crc_zeroes_its_own_field() {
    let mut f = encode(Type::EchoRequest, 7, b"abc");
    let crc = Packet::new_unchecked(&f[..]).crc();
    Packet::new_unchecked(&mut f[..]).set_crc(0xDEAD_BEEF);
    assert_eq!(frame_crc(&f), crc);
    let mut zeroed = f.clone();
    zeroed[12..16].fill(0);
    assert_eq!(crc32c::crc32c(&zeroed), crc);
}

#[test]
fn encode_roundtrips_and_layout_is_as_drawn() {
    let f = encode(Type::EchoRequest, 0x0102_0304, b"hello");
    assert_eq!(f.len(), HEADER_LEN + 5);
    assert_eq!(&f[..12], &[1, 0x01, 0, 0, 1, 2, 3, 4, 0, 5, 0, 0]);
    let p = Packet::new_checked(&f[..]).unwrap();
    assert_eq!(p.version(), VERSION);
    assert_eq!(p.frame_type(), Some(Type::EchoRequest));
    assert_eq!(
        (p.seq(), p.len(), p.flags(), p.status()),
        (0x0102_0304, 5, 0, 0)
    );
    assert_eq!(p.payload(), b"hello");
    assert_eq!(p.crc(), u32::from_be_bytes(f[12..16].try_into().unwrap()));
    assert!(Packet::new_checked(&encode(Type::Error, 0, b"")[..]).is_ok());
}

#[test]
fn setters_roundtrip() {
    let mut buf = [0u8; HEADER_LEN + 2];
    let mut p = Packet::new_unchecked(&mut buf[..]);
    p.set_version(1);
    p.set_type(0x02);
    p.set_flags(0x40);
    p.set_status(3);
    p.set_seq(u32::MAX);
    p.set_len(2);
    p.set_reserved(0xABCD);
    p.payload_mut().copy_from_slice(b"xy");
    p.fill_crc();
    let p = Packet::new_checked(&buf[..]).unwrap();
    assert_eq!(
        (
            p.type_byte(),
            p.flags(),
            p.status(),
            p.seq(),
            p.len(),
            p.reserved()
        ),
        (2, 0x40, 3, u32::MAX, 2, 0xABCD)
    );
}

#[test]
fn every_single_bit_flip_is_rejected() {
    for payload in [&b""[..], b"x", b"a longer payload of some bytes"] {
        let f = encode(Type::EchoRequest, 42, payload);
        for bit in 0..f.len() * 8 {
            let mut g = f.clone();
            g[bit / 8] ^= 1 << (bit % 8);
            assert!(Packet::new_checked(&g[..]).is_err(), "bit {bit} of {f:?}");
            assert!(
                matches!(answer(&mut g.clone()), Verdict::Drop(_)),
                "bit {bit}"
            );
        }
    }
}

#[test]
fn bad_frames_are_named() {
    let f = encode(Type::EchoRequest, 1, b"abcd");
    for n in 0..HEADER_LEN {
        assert_eq!(Packet::new_checked(&f[..n]), Err(Error::Truncated));
    }
    assert_eq!(
        Packet::new_checked(&f[..f.len() - 1]),
        Err(Error::LengthMismatch)
    );
    let mut longer = f.clone();
    longer.push(0);
    assert_eq!(Packet::new_checked(&longer[..]), Err(Error::LengthMismatch));
    let mut g = f.clone();
    g[HEADER_LEN] ^= 0x20;
    assert_eq!(Packet::new_checked(&g[..]), Err(Error::BadCrc));
    let mut g = f.clone();
    g[0] = 2;
    Packet::new_unchecked(&mut g[..]).fill_crc();
    assert_eq!(Packet::new_checked(&g[..]), Err(Error::BadVersion));
    let mut g = f.clone();
    g[1] = 0x42;
    Packet::new_unchecked(&mut g[..]).fill_crc();
    assert_eq!(Packet::new_checked(&g[..]), Err(Error::UnknownType));
}

#[test]
fn echo_request_becomes_echo_reply_in_place() {
    let mut f = encode(Type::EchoRequest, 9, b"payload");
    assert_eq!(answer(&mut f), Verdict::Echo);
    assert_eq!(f, encode(Type::EchoReply, 9, b"payload"));
}

fn error_of(f: &mut [u8]) -> (u8, Vec<u8>) {
    let n = f.len();
    assert_eq!(answer(f), Verdict::Echo);
    let p = Packet::new_checked(&*f).expect("a valid error reply");
    assert_eq!(p.frame_type(), Some(Type::Error));
    assert_eq!(f.len(), n);
    (p.status(), p.payload().to_vec())
}

#[test]
fn unserved_requests_get_an_error_reply_no_longer_than_them() {
    let mut f = encode(Type::StatsRequest, 3, &[0xEE; 20]);
    let (code, text) = error_of(&mut f);
    assert_eq!(code, ErrorCode::NotImplemented as u8);
    assert_eq!(&text[..15], b"not implemented");
    assert!(text[15..].iter().all(|&b| b == 0), "zero-padded");
    assert_eq!(Packet::new_unchecked(&f[..]).seq(), 3);

    let mut f = encode(Type::Broadcast, 4, b"hi");
    assert_eq!(
        error_of(&mut f),
        (ErrorCode::NotAllowed as u8, b"no".to_vec())
    );

    let mut f = encode(Type::EchoRequest, 5, b"");
    f[1] = 0x42;
    Packet::new_unchecked(&mut f[..]).fill_crc();
    assert_eq!(error_of(&mut f), (ErrorCode::UnknownType as u8, vec![]));

    for at in [field::FLAGS, field::STATUS, field::RESERVED.start] {
        let mut f = encode(Type::EchoRequest, 6, b"abcdefghijklmnop");
        f[at] = 1;
        Packet::new_unchecked(&mut f[..]).fill_crc();
        let (code, text) = error_of(&mut f);
        assert_eq!(code, ErrorCode::BadRequest as u8);
        assert_eq!(&text[..11], b"bad request");
    }
}

#[test]
fn replies_and_bad_frames_are_never_answered() {
    for ty in [
        Type::EchoReply,
        Type::StatsReply,
        Type::BroadcastMessage,
        Type::Error,
    ] {
        let mut f = encode(ty, 1, b"x");
        let before = f.clone();
        assert_eq!(answer(&mut f), Verdict::Drop(DropReason::FrameNoReply));
        assert_eq!(f, before, "left alone");
    }
    // An unknown reply type, even with a non-zero status.
    let mut f = encode(Type::Error, 1, b"x");
    f[1] = 0xC0;
    f[3] = 9;
    Packet::new_unchecked(&mut f[..]).fill_crc();
    assert_eq!(answer(&mut f), Verdict::Drop(DropReason::FrameNoReply));
    let mut f = encode(Type::EchoRequest, 1, b"x");
    f[12] ^= 1;
    assert_eq!(answer(&mut f), Verdict::Drop(DropReason::BadFrame));
    assert_eq!(answer(&mut [0u8; 3]), Verdict::Drop(DropReason::BadFrame));
    // An echo reply never becomes anything else: no loop with a second
    // framed server or an RFC 862 echo service.
    let mut f = encode(Type::EchoRequest, 1, b"x");
    assert_eq!(answer(&mut f), Verdict::Echo);
    assert_eq!(answer(&mut f), Verdict::Drop(DropReason::FrameNoReply));
}
