//! The framed protocol's stats request (`0x02`) and stats reply (`0x82`):
//! the server's counters as a JSON document (the `--json` report's
//! counters, under the same names; see `crate::export`), cut into
//! fragments that each fit in one reply **no longer than its request**
//! (amplification 1) and under the MTU.
//!
//! ```text
//! stats request payload (at least 13 bytes; the client pads it to 1200)
//!  0..2   fragment index (u16, BE)
//!  2..4   reserved = 0
//!  4..8   generation wanted (u32, BE; 0 = the latest)
//!  8..    padding, ignored: makes the request as long as the reply
//!
//! stats reply payload (exactly as long as the request's)
//!  0..2   fragment index (u16, BE)
//!  2..4   fragment count (u16, BE)
//!  4..8   generation of the document (u32, BE)
//!  8..10  n = JSON bytes in this fragment (u16, BE)
//! 10..12  reserved = 0
//! 12..12+n  the fragment's JSON bytes; then zeros
//! ```
//!
//! Fragment `k` is bytes `k*c .. (k+1)*c` of the document, where `c` is
//! the request's payload length (at most [`MAX_PAYLOAD`]) less the 12-byte
//! fragment header: a client asks every fragment with requests of one
//! length. The server keeps the last few documents (published every
//! 200 ms); a request naming one of them gets it, any other generation the
//! latest, so a client that sees the generation change starts again.
//! A request shorter than 13 bytes of payload, with a non-zero reserved
//! field, or asking a fragment past the last gets an error reply
//! (`bad request`) of its own length; a server that publishes no
//! document answers `not implemented`.

use std::sync::Arc;

use super::framed::{self, ErrorCode, Packet, Type, HEADER_LEN};
use super::{u16_at, u32_at};
use crate::export::Published;
use crate::packet::PacketBuffer;
use crate::process::{Stage, Verdict};

/// Bytes of the fragment header at the start of a stats reply's payload.
pub const FRAGMENT_HEADER: usize = 12;
/// Shortest stats request payload served (room for one JSON byte).
pub const MIN_PAYLOAD: usize = FRAGMENT_HEADER + 1;
/// Payload bytes a stats request should have (1216-byte datagrams: under
/// the 1232 bytes IPv6's minimum MTU leaves for UDP); longer requests get
/// replies of their length, but no more JSON per fragment.
pub const MAX_PAYLOAD: usize = 1200;

/// JSON bytes per fragment for a request of `payload_len` payload bytes.
fn chunk(payload_len: usize) -> usize {
    payload_len.min(MAX_PAYLOAD) - FRAGMENT_HEADER
}

/// Turns the intact stats request in `buf` (flags, status, reserved
/// already checked) into its reply, in place, at the same length.
pub(crate) fn reply(buf: &mut [u8], published: &Published) -> Verdict {
    let req = &buf[HEADER_LEN..];
    if req.len() < MIN_PAYLOAD || u16_at(req, 2..4) != 0 {
        return framed::error_reply(buf, ErrorCode::BadRequest);
    }
    let (index, wanted) = (usize::from(u16_at(req, 0..2)), u32_at(req, 4..8));
    let Some(view) = published.view(wanted) else {
        return framed::error_reply(buf, ErrorCode::NotImplemented);
    };
    let c = chunk(req.len());
    let doc = &view.json;
    let count = doc.len().div_ceil(c).max(1);
    let Ok(count16) = u16::try_from(count) else {
        return framed::error_reply(buf, ErrorCode::BadRequest);
    };
    if index >= count {
        return framed::error_reply(buf, ErrorCode::BadRequest);
    }
    let data = &doc[(index * c).min(doc.len())..((index + 1) * c).min(doc.len())];
    let mut p = Packet::new_unchecked(&mut *buf);
    p.set_type(Type::StatsReply as u8);
    let out = p.payload_mut();
    out[2..4].copy_from_slice(&count16.to_be_bytes());
    out[4..8].copy_from_slice(&view.generation.to_be_bytes());
    // data.len() <= c < MAX_PAYLOAD: fits a u16.
    out[8..10].copy_from_slice(&(data.len() as u16).to_be_bytes());
    out[10..12].fill(0);
    out[FRAGMENT_HEADER..FRAGMENT_HEADER + data.len()].copy_from_slice(data);
    out[FRAGMENT_HEADER + data.len()..].fill(0);
    p.fill_crc();
    Verdict::Echo
}

/// The `--protocol framed` reply stage with stats requests served from
/// `published` (everything else as [`framed::FramedReply`]).
#[derive(Debug, Clone)]
pub struct FramedStatsReply {
    published: Arc<Published>,
}

impl FramedStatsReply {
    /// Serves stats requests from `published`.
    pub fn new(published: Arc<Published>) -> FramedStatsReply {
        FramedStatsReply { published }
    }
}

impl Stage for FramedStatsReply {
    fn process(&mut self, pkt: &mut PacketBuffer<'_>) -> Verdict {
        framed::answer_with(pkt.payload_mut(), Some(&self.published))
    }
}

/// A stats request for fragment `index` of document `generation` (0: the
/// latest), with `payload_len` payload bytes (at least [`MIN_PAYLOAD`]).
pub fn request(seq: u32, index: u16, generation: u32, payload_len: usize) -> Vec<u8> {
    let mut payload = vec![0u8; payload_len.max(MIN_PAYLOAD)];
    payload[0..2].copy_from_slice(&index.to_be_bytes());
    payload[4..8].copy_from_slice(&generation.to_be_bytes());
    framed::encode(Type::StatsRequest, seq, &payload)
}

/// One fragment of a stats reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment<'a> {
    /// The request's sequence number.
    pub seq: u32,
    /// Which fragment.
    pub index: u16,
    /// How many the document has.
    pub count: u16,
    /// The document's generation.
    pub generation: u32,
    /// Its JSON bytes.
    pub data: &'a [u8],
}

/// Reads a stats reply; anything else is described in the error.
pub fn parse_reply(buf: &[u8]) -> Result<Fragment<'_>, String> {
    let p = Packet::new_checked(buf)
        .map_err(|e| format!("not a valid frame ({e:?}, {} bytes)", buf.len()))?;
    if p.frame_type() == Some(Type::Error) {
        let text = p.payload().split(|&b| b == 0).next().unwrap_or_default();
        return Err(format!(
            "error reply from the server: {} (status {})",
            String::from_utf8_lossy(text),
            p.status()
        ));
    }
    if p.frame_type() != Some(Type::StatsReply) {
        return Err(format!("a {:?} frame, not a stats reply", p.frame_type()));
    }
    let pl = &buf[HEADER_LEN..];
    if pl.len() < FRAGMENT_HEADER {
        return Err(format!(
            "stats reply too short ({} payload bytes)",
            pl.len()
        ));
    }
    let n = usize::from(u16_at(pl, 8..10));
    let data = pl
        .get(FRAGMENT_HEADER..FRAGMENT_HEADER + n)
        .ok_or_else(|| {
            format!(
                "stats reply says {n} bytes but holds {}",
                pl.len() - FRAGMENT_HEADER
            )
        })?;
    Ok(Fragment {
        seq: p.seq(),
        index: u16_at(pl, 0..2),
        count: u16_at(pl, 2..4),
        generation: u32_at(pl, 4..8),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{histogram, Snapshot};
    use crate::report::Report;

    fn published(rx: u64) -> Published {
        let p = Published::new();
        let mut snap = Snapshot::default();
        snap.total.rx_packets = rx;
        p.publish(
            Report::build(&snap, &histogram(), true, 1.0, None, false),
            &histogram(),
            0,
        );
        p
    }

    /// Fetches every fragment with requests of `len` payload bytes.
    fn fetch(p: &Published, len: usize) -> Vec<u8> {
        let mut doc = Vec::new();
        let mut index = 0;
        loop {
            let mut buf = request(index.into(), index, 0, len);
            let before = buf.len();
            assert_eq!(framed::answer_with(&mut buf, Some(p)), Verdict::Echo);
            assert_eq!(buf.len(), before, "as long as the request");
            let f = parse_reply(&buf).unwrap();
            assert_eq!((f.seq, f.index), (u32::from(index), index));
            assert!(f.data.len() <= chunk(len));
            doc.extend_from_slice(f.data);
            index += 1;
            if index == f.count {
                return doc;
            }
        }
    }

    #[test]
    fn fragments_reassemble_at_any_request_length() {
        let p = published(42);
        let whole = p.latest().unwrap().json.clone();
        for len in [MIN_PAYLOAD, 50, 333, MAX_PAYLOAD, 1400] {
            assert_eq!(fetch(&p, len), whole, "len {len}");
        }
        let v: serde_json::Value = serde_json::from_slice(&whole).unwrap();
        assert_eq!(v["rx_packets"], 42);
    }

    #[test]
    fn bad_stats_requests_get_error_replies_of_their_length() {
        let p = published(1);
        let short = framed::encode(Type::StatsRequest, 9, &[0; MIN_PAYLOAD - 1]);
        let past = request(9, 60_000, 0, MIN_PAYLOAD);
        let mut reserved = request(9, 0, 0, 100);
        reserved[HEADER_LEN + 2] = 1;
        Packet::new_unchecked(&mut reserved[..]).fill_crc();
        for req in [short, past, reserved] {
            let mut buf = req.clone();
            assert_eq!(framed::answer_with(&mut buf, Some(&p)), Verdict::Echo);
            assert_eq!(buf.len(), req.len());
            let e = parse_reply(&buf).unwrap_err();
            assert!(e.contains("bad request"), "{e}");
        }
        let mut off = request(1, 0, 0, 100);
        framed::answer(&mut off);
        assert!(parse_reply(&off).unwrap_err().contains("not implemented"));
    }
}
