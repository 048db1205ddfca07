//! The decision model, free of I/O: given the impairment settings, a seeded
//! random number generator and a packet, what happens to the packet (lost,
//! duplicated, corrupted, held back for reordering, and for how long it is
//! delayed), plus the token bucket that enforces `--rate`.
//!
//! Every packet consumes exactly seven random numbers,
//! whatever is decided, so the decisions for packet *n* of a direction depend
//! only on the seed and *n*: the same `--seed` gives the same decisions for
//! the same packet sequence, even when the (time-dependent) token bucket
//! drops different packets from one run to the next.

/// SplitMix64 (Steele, Lea, Flood 2014): one `u64` of state, any seed
/// (including 0) is valid, and it passes BigCrush. Written out here rather
/// than taken from a crate so that a given `--seed` keeps giving the same
/// decisions whatever crate versions are in the lock file.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `pct` percent.
    fn chance(&mut self, pct: f64) -> bool {
        self.unit() * 100.0 < pct
    }
}

/// The impairment settings of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Params {
    /// Percent of packets dropped.
    pub loss: f64,
    /// Percent of packets sent twice.
    pub duplicate: f64,
    /// Percent of packets with one byte flipped.
    pub corrupt: f64,
    /// Percent of packets held back and sent after the next one.
    pub reorder: f64,
    /// Fixed hold time of every packet (ns).
    pub delay_ns: u64,
    /// Hold times vary uniformly by up to this much either way (ns).
    pub jitter_ns: u64,
}

/// One byte flip: `packet[pos] ^= mask`, `mask` never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flip {
    pub pos: usize,
    pub mask: u8,
}

/// What happens to one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub lost: bool,
    pub duplicate: bool,
    /// A byte flip for the first copy (never for an empty packet).
    pub corrupt: Option<Flip>,
    pub reorder: bool,
    /// How long the packet is held before it is sent (ns).
    pub hold_ns: u64,
}

/// Decides the fate of a packet of `len` bytes.
pub fn decide(p: &Params, rng: &mut Rng, len: usize) -> Decision {
    // Always the same draws, in the same order (see the module doc).
    let lost = rng.chance(p.loss);
    let duplicate = rng.chance(p.duplicate);
    let corrupt = rng.chance(p.corrupt);
    let pos = rng.next_u64();
    let mask = (rng.next_u64() % 255) as u8 + 1;
    let reorder = rng.chance(p.reorder);
    let jitter = rng.unit();
    let corrupt = (corrupt && len > 0).then(|| Flip {
        pos: (pos % len as u64) as usize,
        mask,
    });
    // delay + uniform(-jitter, +jitter), never below zero.
    let offset = (jitter * 2.0 - 1.0) * p.jitter_ns as f64;
    let hold_ns = (p.delay_ns as f64 + offset).max(0.0).round() as u64;
    Decision {
        lost,
        duplicate,
        corrupt,
        reorder,
        hold_ns,
    }
}

/// Applies a flip: one byte changes, the length never does.
pub fn apply_flip(packet: &mut [u8], flip: Flip) {
    packet[flip.pos] ^= flip.mask;
}

/// A token bucket of `rate` tokens a second holding at most `burst`; it
/// starts full. Time is given in ns by the caller (monotonic).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last_ns: u64,
}

impl TokenBucket {
    pub fn new(rate: u64, burst: u64, now_ns: u64) -> TokenBucket {
        let burst = burst.max(1) as f64;
        TokenBucket {
            rate: rate as f64,
            burst,
            tokens: burst,
            last_ns: now_ns,
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now_ns: u64) -> bool {
        let dt = now_ns.saturating_sub(self.last_ns) as f64 / 1e9;
        self.last_ns = self.last_ns.max(now_ns);
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random numbers every packet consumes, whatever is decided.
    const DRAWS_PER_PACKET: usize = 7;

    fn params() -> Params {
        Params {
            loss: 20.0,
            duplicate: 10.0,
            corrupt: 10.0,
            reorder: 10.0,
            delay_ns: 5_000_000,
            jitter_ns: 2_000_000,
        }
    }

    #[test]
    fn same_seed_same_decisions() {
        let p = params();
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let da: Vec<_> = (0..1000).map(|i| decide(&p, &mut a, 64 + i % 7)).collect();
        let db: Vec<_> = (0..1000).map(|i| decide(&p, &mut b, 64 + i % 7)).collect();
        assert_eq!(da, db);
        let mut c = Rng::new(8);
        let dc: Vec<_> = (0..1000).map(|i| decide(&p, &mut c, 64 + i % 7)).collect();
        assert_ne!(da, dc, "another seed decides differently");
    }

    #[test]
    fn draws_do_not_depend_on_the_outcome() {
        // Settings change the decisions, never how many numbers are used:
        // after one packet both generators are in the same state.
        let (mut a, mut b) = (Rng::new(3), Rng::new(3));
        decide(&params(), &mut a, 64);
        decide(&Params::default(), &mut b, 0);
        assert_eq!(a.next_u64(), b.next_u64());
        let mut c = Rng::new(3);
        for _ in 0..DRAWS_PER_PACKET {
            c.next_u64();
        }
        let mut e = Rng::new(3);
        decide(&params(), &mut e, 64);
        assert_eq!(e.next_u64(), c.next_u64());
    }

    #[test]
    fn empirical_loss_rate_matches_the_setting() {
        let p = Params {
            loss: 20.0,
            ..Params::default()
        };
        let n = 100_000u32;
        let mut rng = Rng::new(42);
        let lost = (0..n).filter(|_| decide(&p, &mut rng, 64).lost).count() as f64;
        // Binomial: mean n*p, standard error sqrt(n*p*(1-p)) ~ 126 here;
        // allow 4 standard errors (a false failure about once in 16,000
        // seeds; with this fixed seed the result never changes).
        let (nf, prob) = (n as f64, 0.2);
        let se = (nf * prob * (1.0 - prob)).sqrt();
        assert!(
            (lost - nf * prob).abs() < 4.0 * se,
            "lost {lost} of {n}, expected {} +- {}",
            nf * prob,
            4.0 * se
        );
    }

    #[test]
    fn zero_and_hundred_percent_are_exact() {
        let all = Params {
            loss: 100.0,
            duplicate: 100.0,
            corrupt: 100.0,
            reorder: 100.0,
            ..Params::default()
        };
        let mut rng = Rng::new(1);
        for _ in 0..10_000 {
            let d = decide(&all, &mut rng, 10);
            assert!(d.lost && d.duplicate && d.corrupt.is_some() && d.reorder);
            let d = decide(&Params::default(), &mut rng, 10);
            assert!(!d.lost && !d.duplicate && d.corrupt.is_none() && !d.reorder);
            assert_eq!(d.hold_ns, 0);
        }
    }

    #[test]
    fn corruption_keeps_length_and_changes_exactly_one_byte() {
        let p = Params {
            corrupt: 100.0,
            ..Params::default()
        };
        let mut rng = Rng::new(5);
        for len in 1..200usize {
            let orig: Vec<u8> = (0..len).map(|i| (i * 37) as u8).collect();
            let d = decide(&p, &mut rng, len);
            let flip = d.corrupt.expect("corrupt at 100%");
            let mut pkt = orig.clone();
            apply_flip(&mut pkt, flip);
            assert_eq!(pkt.len(), orig.len());
            let changed = orig.iter().zip(&pkt).filter(|(a, b)| a != b).count();
            assert_eq!(changed, 1, "len {len}: {flip:?}");
        }
        assert_eq!(decide(&p, &mut rng, 0).corrupt, None, "nothing to flip");
    }

    #[test]
    fn hold_times_stay_within_delay_plus_minus_jitter() {
        let p = params();
        let mut rng = Rng::new(9);
        let (lo, hi) = (3_000_000, 7_000_000);
        let holds: Vec<u64> = (0..10_000)
            .map(|_| decide(&p, &mut rng, 64).hold_ns)
            .collect();
        assert!(holds.iter().all(|h| (lo..=hi).contains(h)));
        let mean = holds.iter().sum::<u64>() as f64 / holds.len() as f64;
        assert!((mean - 5e6).abs() < 1e5, "mean hold {mean}");
        // Jitter larger than the delay is clamped at zero, never wraps.
        let wide = Params {
            delay_ns: 1_000,
            jitter_ns: 1_000_000,
            ..Params::default()
        };
        assert!((0..1000).all(|_| decide(&wide, &mut rng, 1).hold_ns <= 1_001_000));
    }

    #[test]
    fn token_bucket_limits_the_rate() {
        let mut tb = TokenBucket::new(1000, 10, 0);
        // A full bucket lets a burst of 10 through at once.
        assert_eq!((0..20).filter(|_| tb.take(0)).count(), 10);
        // Then one packet per ms: over one second of arrivals every 100 us,
        // about 1000 pass.
        let passed = (1..=10_000u64).filter(|i| tb.take(i * 100_000)).count();
        assert!((999..=1001).contains(&passed), "{passed}");
    }
}
