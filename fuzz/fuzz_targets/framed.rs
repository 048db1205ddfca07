//! Fuzzes the framed protocol's reply stage on arbitrary bytes: it never
//! panics and never changes a datagram's length; what it answers is an
//! intact echo reply (same sequence and payload as an intact echo request)
//! or an intact error reply; what it drops is left as it came, and only an
//! intact reply frame is dropped as frame_no_reply. Stats requests are
//! served from a published document, so the stats reply path is covered:
//! an intact stats reply, to an intact stats request, of its length.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use udp_packet_pool::export::Published;
use udp_packet_pool::process::{DropReason, Verdict};
use udp_packet_pool::wire::framed::{self, Packet, Type};

static STATS: OnceLock<Published> = OnceLock::new();

fuzz_target!(|input: &[u8]| {
    let stats = STATS.get_or_init(Published::new);
    // An odd first byte repairs the length field and the CRC of the rest,
    // so intact frames of every type (stats requests included) are reached,
    // not only the ones the CRC turns away.
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let mut owned = rest.to_vec();
    if mode & 1 == 1 && owned.len() >= framed::HEADER_LEN {
        if let Ok(len) = u16::try_from(owned.len() - framed::HEADER_LEN) {
            let mut p = Packet::new_unchecked(&mut owned[..]);
            p.set_len(len);
            p.fill_crc();
        }
    }
    let data = &owned[..];
    let mut buf = data.to_vec();
    let request = Packet::new_checked(data).ok();
    match framed::answer_with(&mut buf, Some(stats)) {
        Verdict::Echo => {
            assert_eq!(buf.len(), data.len(), "amplification 1");
            let reply = Packet::new_checked(&buf[..]).expect("an intact reply");
            match reply.frame_type() {
                Some(Type::EchoReply) => {
                    let req = request.expect("answered an intact request");
                    assert_eq!(req.frame_type(), Some(Type::EchoRequest));
                    assert_eq!((reply.seq(), reply.payload()), (req.seq(), req.payload()));
                }
                Some(Type::StatsReply) => {
                    let req = request.expect("answered an intact request");
                    assert_eq!(req.frame_type(), Some(Type::StatsRequest));
                    let f = udp_packet_pool::wire::framed_stats::parse_reply(&buf)
                        .expect("a readable stats reply");
                    assert_eq!(f.seq, req.seq());
                    assert!(f.index < f.count);
                }
                Some(Type::Error) => assert_eq!(reply.seq(), Packet::new_unchecked(data).seq()),
                other => panic!("answered with {other:?}"),
            }
        }
        Verdict::Drop(r) => {
            assert_eq!(buf, data, "a dropped datagram is not rewritten");
            match r {
                DropReason::BadFrame => {}
                DropReason::FrameNoReply => assert!(data[1] & framed::REPLY_BIT != 0),
                other => panic!("unexpected drop reason {other:?}"),
            }
        }
    }
});
