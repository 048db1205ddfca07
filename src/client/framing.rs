//! `--protocol framed`: each probe travels as a framed echo request
//! ([`crate::wire::framed`]) with the probe's number as the frame's
//! sequence, and the only correct answer is the echo reply the server must
//! build from it (same sequence and payload, reply type, new CRC), so the
//! reply is checked byte for byte like a plain echo. What came back instead
//! is described in the protocol's terms.

use crate::wire::framed::{self, ErrorCode, Packet, Type};

use super::payload::Payload;

/// The request sent for probe `seq` and the reply expected for it.
pub(super) fn request_and_reply(seq: u32, payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (
        framed::encode(Type::EchoRequest, seq, payload),
        framed::encode(Type::EchoReply, seq, payload),
    )
}

/// If `got` is the correct echo reply to an earlier probe than `current`,
/// that probe's number.
pub(super) fn stale_seq(payload: &Payload, got: &[u8], current: u32) -> Option<u32> {
    let p = Packet::new_checked(got).ok()?;
    let seq = p.seq();
    (p.frame_type() == Some(Type::EchoReply)
        && seq < current
        && p.payload() == payload.for_seq(seq).as_slice())
    .then_some(seq)
}

/// What `got` is, when it is not the expected reply, or `None` to fall
/// back to the byte offset.
pub(super) fn describe(got: &[u8], expected_seq: u32) -> Option<String> {
    let p = match Packet::new_checked(got) {
        Ok(p) => p,
        Err(e) => return Some(format!("not a valid frame ({e:?}, {} bytes)", got.len())),
    };
    let what = match p.frame_type()? {
        Type::EchoRequest => "an echo request came back, not a reply: the server echoes \
                              byte for byte and does not speak --protocol framed"
            .to_string(),
        Type::Error => {
            let code = [
                ErrorCode::UnknownType,
                ErrorCode::NotImplemented,
                ErrorCode::BadRequest,
                ErrorCode::NotAllowed,
            ]
            .into_iter()
            .find(|c| *c as u8 == p.status())
            .map_or("unknown error", |c| c.text());
            format!(
                "error reply from the server: {code} (status {})",
                p.status()
            )
        }
        Type::EchoReply if p.seq() != expected_seq => {
            format!(
                "echo reply for seq={} instead of seq={expected_seq}",
                p.seq()
            )
        }
        Type::EchoReply => return None,
        other => format!("unexpected {other:?} frame"),
    };
    Some(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_replies_and_descriptions() {
        let pl = Payload::Pattern(8);
        let (req, reply) = request_and_reply(3, &pl.for_seq(3));
        assert_eq!(stale_seq(&pl, &reply, 4), Some(3));
        assert_eq!(stale_seq(&pl, &reply, 3), None);
        assert_eq!(stale_seq(&pl, &req, 4), None);
        assert!(describe(&req, 3)
            .unwrap()
            .contains("does not speak --protocol framed"));
        assert!(describe(&reply, 4)
            .unwrap()
            .contains("seq=3 instead of seq=4"));
        assert_eq!(describe(&reply, 3), None);
        assert!(describe(&req[..5], 3).unwrap().contains("Truncated"));
        let mut stats = framed::encode(Type::StatsRequest, 1, b"0123456789abcdef");
        framed::answer(&mut stats);
        assert!(describe(&stats, 1).unwrap().contains("not implemented"));
    }
}
