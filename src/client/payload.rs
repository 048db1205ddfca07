//! What a probe carries and how a received datagram is judged against it:
//! the [`Payload`] kinds, the per-probe pattern bytes, the first differing
//! offset, and the match / stale / mismatch [`Verdict`].

/// Number of leading bytes of a pattern payload that carry the sequence number.
pub const SEQ_MARKER_LEN: usize = 4;
/// Filler of a pattern payload after the sequence marker.
const PATTERN: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// What each probe carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// These exact bytes for every probe (see the [`client`](super) module
    /// docs for how echoes of identical probes are attributed).
    Message(Vec<u8>),
    /// A payload of exactly this many bytes built by [`pattern_payload`],
    /// unique to each probe.
    Pattern(usize),
}

impl Payload {
    /// Length in bytes of every probe.
    pub fn len(&self) -> usize {
        match self {
            Payload::Message(m) => m.len(),
            Payload::Pattern(n) => *n,
        }
    }

    /// Whether probes are empty datagrams.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes sent for probe `seq`.
    pub fn for_seq(&self, seq: u32) -> Vec<u8> {
        match self {
            Payload::Message(m) => m.clone(),
            Payload::Pattern(n) => pattern_payload(seq, *n),
        }
    }

    /// If `got` is an exact copy of the payload of an earlier probe than
    /// `current`, the sequence number of that probe.
    ///
    /// Only pattern payloads can be attributed; with payloads under
    /// [`SEQ_MARKER_LEN`] bytes the marker is truncated, and the most recent
    /// earlier probe with the same truncated marker is reported.
    pub fn stale_seq(&self, got: &[u8], current: u32) -> Option<u32> {
        let Payload::Pattern(size) = *self else {
            return None;
        };
        if size == 0 || got.len() != size {
            return None;
        }
        let n = size.min(SEQ_MARKER_LEN);
        let mut marker = [0u8; SEQ_MARKER_LEN];
        marker[..n].copy_from_slice(&got[..n]);
        let marker = u64::from(u32::from_le_bytes(marker));
        let modulus = 1u64 << (8 * n);
        let delta = (u64::from(current) + modulus - marker) % modulus;
        if delta == 0 || delta > u64::from(current) {
            return None;
        }
        // delta <= current <= u32::MAX, so the cast is lossless.
        let seq = current - delta as u32;
        (got == pattern_payload(seq, size).as_slice()).then_some(seq)
    }
}

/// The payload of `size` bytes for probe `seq`: the sequence number as a
/// little-endian `u32` in the first [`SEQ_MARKER_LEN`] bytes (truncated when
/// `size` is smaller), then alphanumeric filler rotated by `seq`.
pub fn pattern_payload(seq: u32, size: usize) -> Vec<u8> {
    let marker = seq.to_le_bytes();
    let len = PATTERN.len() as u64;
    (0..size)
        .map(|i| {
            if i < SEQ_MARKER_LEN {
                marker[i]
            } else {
                let k = (i - SEQ_MARKER_LEN) as u64 + u64::from(seq);
                PATTERN[(k % len) as usize]
            }
        })
        .collect()
}

/// The first offset at which `got` and `expected` differ, counting a length
/// difference as a difference at the end of the shorter one; `None` if they
/// are identical.
pub fn first_difference(got: &[u8], expected: &[u8]) -> Option<usize> {
    match got.iter().zip(expected).position(|(g, e)| g != e) {
        Some(i) => Some(i),
        None if got.len() != expected.len() => Some(got.len().min(expected.len())),
        None => None,
    }
}

/// How a datagram received while a probe is in flight relates to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Byte-for-byte the current probe.
    Match,
    /// An exact copy of earlier probe `seq`: ignore it and keep waiting.
    Stale {
        /// Sequence number of the earlier probe.
        seq: u32,
    },
    /// A corrupted echo: differs from the current probe first at `offset`.
    Mismatch {
        /// First differing byte offset (see [`first_difference`]).
        offset: usize,
    },
}

/// Classify `got`, received while probe `seq` (whose bytes are `expected`)
/// is in flight.
pub fn classify(payload: &Payload, seq: u32, expected: &[u8], got: &[u8]) -> Verdict {
    match first_difference(got, expected) {
        None => Verdict::Match,
        Some(offset) => match payload.stale_seq(got, seq) {
            Some(seq) => Verdict::Stale { seq },
            None => Verdict::Mismatch { offset },
        },
    }
}

/// Human-readable description of a mismatching echo.
pub(super) fn describe_mismatch(got: &[u8], expected: &[u8], offset: usize) -> String {
    let detail = match (got.get(offset), expected.get(offset)) {
        (Some(g), Some(e)) => format!("got 0x{g:02x}, expected 0x{e:02x}"),
        (None, _) => "echo is truncated".to_string(),
        (Some(_), None) => "echo is longer than the probe".to_string(),
    };
    format!(
        "{} bytes (sent {}), first difference at byte {offset}: {detail}",
        got.len(),
        expected.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::MAX_UDP_PAYLOAD_V4;

    #[test]
    fn pattern_has_exact_size_and_seq_marker() {
        for size in [0, 1, 3, 4, 5, 64, MAX_UDP_PAYLOAD_V4] {
            assert_eq!(pattern_payload(7, size).len(), size);
        }
        let p = pattern_payload(0x0102_0304, 10);
        assert_eq!(&p[..4], &[0x04, 0x03, 0x02, 0x01]);
        assert_eq!(p[4], PATTERN[0x0102_0304 % PATTERN.len()]);
        assert_eq!(p[5], PATTERN[(0x0102_0304 + 1) % PATTERN.len()]);
        // Filler is alphanumeric and rotated by seq.
        assert_eq!(&pattern_payload(0, 8)[4..], b"0123");
        assert_eq!(&pattern_payload(1, 8)[4..], b"1234");
        assert!(pattern_payload(5, 200)[4..]
            .iter()
            .all(u8::is_ascii_alphanumeric));
    }

    #[test]
    fn pattern_differs_between_probes() {
        for size in [1, 4, 16, 1000] {
            assert_ne!(pattern_payload(0, size), pattern_payload(1, size));
            assert_eq!(pattern_payload(9, size), pattern_payload(9, size));
        }
    }

    #[test]
    fn first_difference_offsets() {
        assert_eq!(first_difference(b"hello", b"hello"), None);
        assert_eq!(first_difference(b"help!", b"hello"), Some(3));
        assert_eq!(first_difference(b"hell", b"hello"), Some(4));
        assert_eq!(first_difference(b"hello!", b"hello"), Some(5));
        assert_eq!(first_difference(b"", b""), None);
        assert_eq!(first_difference(b"x", b""), Some(0));
    }

    #[test]
    fn classify_match_stale_and_mismatch() {
        let payload = Payload::Pattern(32);
        let current = payload.for_seq(5);
        assert_eq!(classify(&payload, 5, &current, &current), Verdict::Match);
        // Exact copy of an earlier probe: stale.
        let old = payload.for_seq(2);
        assert_eq!(
            classify(&payload, 5, &current, &old),
            Verdict::Stale { seq: 2 }
        );
        // Corrupted current echo: mismatch at the corrupted byte.
        let mut bad = current.clone();
        bad[17] ^= 0x20;
        assert_eq!(
            classify(&payload, 5, &current, &bad),
            Verdict::Mismatch { offset: 17 }
        );
        // Corrupted earlier echo is not an exact copy of anything: mismatch.
        let mut bad_old = old.clone();
        bad_old[20] ^= 1;
        assert!(matches!(
            classify(&payload, 5, &current, &bad_old),
            Verdict::Mismatch { .. }
        ));
        // A later (never sent) probe cannot be stale.
        let future = payload.for_seq(6);
        assert!(matches!(
            classify(&payload, 5, &current, &future),
            Verdict::Mismatch { offset: 0 }
        ));
        // Truncated echo: mismatch at the end.
        assert_eq!(
            classify(&payload, 5, &current, &current[..30]),
            Verdict::Mismatch { offset: 30 }
        );
    }

    #[test]
    fn message_payload_never_stale() {
        let payload = Payload::Message(b"hello".to_vec());
        assert_eq!(payload.for_seq(3), b"hello");
        assert_eq!(payload.stale_seq(b"hello", 3), None);
        assert_eq!(
            classify(&payload, 3, b"hello", b"hellO"),
            Verdict::Mismatch { offset: 4 }
        );
    }

    #[test]
    fn stale_detection_with_truncated_marker() {
        let payload = Payload::Pattern(1);
        // One-byte marker: seq 3 and seq 259 share it; the latest earlier
        // probe with that marker is reported.
        assert_eq!(payload.stale_seq(&[3], 300), Some(259));
        assert_eq!(payload.stale_seq(&[3], 4), Some(3));
        assert_eq!(payload.stale_seq(&[3], 3), None);
        assert_eq!(payload.stale_seq(&[4], 3), None);
        // Zero-byte probes carry no marker at all.
        assert_eq!(Payload::Pattern(0).stale_seq(&[], 5), None);
        // Full marker, large sequence numbers.
        let p = Payload::Pattern(12);
        let old = p.for_seq(u32::MAX - 10);
        assert_eq!(p.stale_seq(&old, u32::MAX), Some(u32::MAX - 10));
        assert_eq!(p.stale_seq(&old, u32::MAX - 10), None);
    }

    #[test]
    fn mismatch_description_names_offset() {
        let d = describe_mismatch(b"heLlo", b"hello", 2);
        assert!(d.contains("first difference at byte 2"), "{d}");
        assert!(d.contains("got 0x4c, expected 0x6c"), "{d}");
        let d = describe_mismatch(b"hel", b"hello", 3);
        assert!(d.contains("truncated"), "{d}");
    }
}
