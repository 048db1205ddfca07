//! Trains of datagrams, the pure part (the system calls are in `sys`):
//! where a run of one flow's due packets is cut into trains on the way out
//! (a train never spans two of the schedule's trains, see `schedule`), and
//! how a coalesced read (`UDP_GRO`) is cut back into its datagrams.

use std::ops::Range;

/// How many of `left` due packets of one flow, the first with sequence
/// number `seq`, go in the next send: up to the end of `seq`'s train of
/// `train` packets. Always at least 1 when `left` is.
pub fn chunk_len(seq: u64, left: usize, train: u32) -> usize {
    let g = u64::from(train.max(1));
    let to_end = (g - seq % g) as usize;
    left.min(to_end)
}

/// The datagrams in a read of `len` bytes whose `UDP_GRO` segment size is
/// `segment` (`None`: one datagram): consecutive ranges of `segment` bytes,
/// the last one possibly shorter, as the kernel's GSO cut them.
pub fn segments(len: usize, segment: Option<usize>) -> impl Iterator<Item = Range<usize>> {
    let step = match segment {
        Some(s) if s > 0 && s < len => s,
        _ => len.max(1),
    };
    (0..len.max(1))
        .step_by(step)
        .map(move |start| start..(start + step).min(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_stop_at_train_boundaries() {
        // Trains of 4: seqs 0..4, 4..8, ...
        assert_eq!(chunk_len(0, 10, 4), 4);
        assert_eq!(chunk_len(4, 10, 4), 4);
        assert_eq!(chunk_len(6, 10, 4), 2);
        assert_eq!(chunk_len(8, 1, 4), 1);
        // No trains: one at a time is what the caller batches with sendmmsg.
        assert_eq!(chunk_len(5, 10, 1), 1);
        assert_eq!(chunk_len(5, 10, 0), 1);
        // Walking a run covers it exactly.
        let (mut seq, mut left, mut cuts) = (3u64, 13usize, Vec::new());
        while left > 0 {
            let n = chunk_len(seq, left, 4);
            cuts.push(n);
            seq += n as u64;
            left -= n;
        }
        assert_eq!(cuts, [1, 4, 4, 4]);
    }

    fn all(len: usize, seg: Option<usize>) -> Vec<Range<usize>> {
        segments(len, seg).collect()
    }

    #[test]
    fn coalesced_reads_split_exactly() {
        assert_eq!(all(256, Some(64)), [0..64, 64..128, 128..192, 192..256]);
        // The last segment of a train may be shorter.
        assert_eq!(all(150, Some(64)), [0..64, 64..128, 128..150]);
        // A read without a segment size, or not longer than it, is one datagram.
        assert_eq!(all(64, None), vec![(0..64)]);
        assert_eq!(all(64, Some(64)), vec![(0..64)]);
        assert_eq!(all(40, Some(64)), vec![(0..40)]);
        // Nonsense sizes cannot loop or panic.
        assert_eq!(all(64, Some(0)), vec![(0..64)]);
        // An empty datagram is still one (it fails the probe check).
        assert_eq!(all(0, None), vec![(0..0)]);
        assert_eq!(all(0, Some(64)), vec![(0..0)]);
        // 64 segments of 1000 bytes: every byte once, in order.
        let r = all(64_000, Some(1000));
        assert_eq!(r.len(), 64);
        assert!(r.windows(2).all(|w| w[0].end == w[1].start));
    }
}
