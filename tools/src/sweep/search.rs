//! The bounded search for the highest clean rate, as a pure function over a
//! `probe(rate) -> Outcome` closure so it can be tested without a network.
//!
//! Design: geometric (log-scale) bisection of `[min_rate, max_rate]`. The
//! first probe is the range's geometric middle; the second is the range end
//! on the side the answer lies (clean: try `max_rate`, which ends the search
//! if it is clean too; lossy: confirm `min_rate`, which ends it if lossy);
//! then each probe halves the bracket's log-ratio until `hi / lo <= 1 +
//! resolution`. Bisecting half the range (ratio `sqrt(R)`) to resolution `r`
//! takes `ceil(log2(ln sqrt(R) / ln(1 + r)))` probes, so the default
//! 10k..400k at 5% needs at most 1 + 1 + 6 = 8. Every reported rate was
//! measured. The budget is a hard limit: the search stops early and says so
//! if the bracket has not narrowed enough when it runs out.
//!
//! A probe whose achieved send rate fell short of the asked rate means the
//! load generator, not the server, is the limit. A clean short probe ends
//! the search (asking for more cannot deliver more); a lossy one just
//! narrows the bracket like any lossy probe.

use serde::Serialize;

/// What one probe measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// Rate asked of the load generator, packets/s.
    pub rate: u64,
    /// Rate it actually sent at, packets/s.
    pub send_rate: f64,
    /// Rate echoes came back at, packets/s.
    pub echo_rate: f64,
    /// Lost packets, percent of sent.
    pub loss_pct: f64,
    /// Median corrected latency, microseconds.
    pub p50_us: Option<f64>,
    /// 99th percentile corrected latency, microseconds.
    pub p99_us: Option<f64>,
}

impl Outcome {
    /// Loss within the allowed percentage, and something was sent: a
    /// probe that sent nothing proves nothing about the server.
    pub fn is_clean(&self, max_loss_pct: f64) -> bool {
        self.send_rate > 0.0 && self.loss_pct.is_finite() && self.loss_pct <= max_loss_pct
    }

    /// The generator sent less than `tolerance` times the asked rate.
    pub fn is_short(&self, tolerance: f64) -> bool {
        self.send_rate < self.rate as f64 * tolerance
    }

    /// The rate the server demonstrably handled: the asked rate, or the
    /// achieved one when the generator fell short.
    pub fn effective_rate(&self, tolerance: f64) -> f64 {
        if self.is_short(tolerance) {
            self.send_rate
        } else {
            self.rate as f64
        }
    }
}

/// Search limits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SearchParams {
    /// Lowest rate to consider, packets/s.
    pub min_rate: u64,
    /// Highest rate to consider, packets/s.
    pub max_rate: u64,
    /// Highest loss, percent, that still counts as clean.
    pub max_loss_pct: f64,
    /// Stop when `hi / lo <= 1 + resolution`.
    pub resolution: f64,
    /// Most probes to run (at least 1).
    pub budget: usize,
    /// A probe is "short" when `send_rate < rate * short_tolerance`.
    pub short_tolerance: f64,
}

/// Why the search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// The bracket narrowed to the resolution.
    Resolved,
    /// The probe budget ran out first.
    Budget,
    /// `max_rate` itself was clean.
    CappedAtMax,
    /// A clean probe where the generator could not send as fast as asked.
    GeneratorLimited,
    /// Even `min_rate` was lossy.
    NoCleanRate,
}

impl Stop {
    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Stop::Resolved => "resolved",
            Stop::Budget => "budget",
            Stop::CappedAtMax => "capped_at_max",
            Stop::GeneratorLimited => "generator_limited",
            Stop::NoCleanRate => "no_clean_rate",
        }
    }
}

/// What the search found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchResult {
    /// The highest clean probe (None when nothing was clean).
    pub best: Option<Outcome>,
    /// The lowest lossy probe above it, if one was run.
    pub lowest_lossy: Option<Outcome>,
    /// Every probe, in the order run.
    pub probes: Vec<Outcome>,
    /// Why the search ended.
    pub stop: Stop,
    /// `hi / lo - 1` of the final bracket when both ends were probed.
    pub resolution: Option<f64>,
}

/// The rate halfway between `lo` and `hi` on a log scale, strictly inside
/// the bracket (requires `hi - lo >= 2`).
fn geometric_mid(lo: u64, hi: u64) -> u64 {
    let mid = ((lo.max(1) as f64) * (hi as f64)).sqrt().round() as u64;
    mid.clamp(lo + 1, hi - 1)
}

/// Finds the highest rate in `[min_rate, max_rate]` with loss within
/// `max_loss_pct`, calling `probe` at most `budget` times. Probe errors are
/// passed through unchanged.
pub fn search<E>(
    p: &SearchParams,
    mut probe: impl FnMut(u64) -> Result<Outcome, E>,
) -> Result<SearchResult, E> {
    let (min, max) = (p.min_rate.min(p.max_rate), p.max_rate.max(p.min_rate));
    // Bracket: `lo` is clean (once `lo_probe` is set), `hi` lossy (once
    // `hi_probe` is set); before that they are the unmeasured range ends.
    let (mut lo, mut hi) = (min, max);
    let mut lo_probe: Option<Outcome> = None;
    let mut hi_probe: Option<Outcome> = None;
    let mut probes = Vec::new();
    let narrow =
        |lo: u64, hi: u64| hi - lo <= 1 || hi as f64 <= lo.max(1) as f64 * (1.0 + p.resolution);
    let stop = loop {
        let rate = match (&lo_probe, &hi_probe) {
            // First probe: the middle of the range (log scale).
            (None, None) if narrow(lo, hi) => lo,
            (None, None) => geometric_mid(lo, hi),
            // Then the range end on the side the answer lies.
            (Some(_), None) => hi,
            (None, Some(_)) => lo,
            // Then bisect.
            (Some(_), Some(_)) if narrow(lo, hi) => break Stop::Resolved,
            (Some(_), Some(_)) => geometric_mid(lo, hi),
        };
        if probes.len() >= p.budget.max(1) {
            break Stop::Budget;
        }
        let o = probe(rate)?;
        probes.push(o.clone());
        if o.is_clean(p.max_loss_pct) {
            let short = o.is_short(p.short_tolerance);
            lo = rate;
            lo_probe = Some(o);
            if short {
                // Asking for more cannot deliver more.
                break Stop::GeneratorLimited;
            }
            if rate == max {
                break Stop::CappedAtMax;
            }
        } else {
            hi = rate;
            hi_probe = Some(o);
            if rate == min {
                break Stop::NoCleanRate;
            }
        }
    };
    let resolution = match (&lo_probe, &hi_probe) {
        (Some(l), Some(h)) if h.rate > l.rate => Some(h.rate as f64 / l.rate.max(1) as f64 - 1.0),
        _ => None,
    };
    Ok(SearchResult {
        best: lo_probe,
        lowest_lossy: hi_probe,
        probes,
        stop,
        resolution,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(min_rate: u64, max_rate: u64, resolution: f64, budget: usize) -> SearchParams {
        SearchParams {
            min_rate,
            max_rate,
            max_loss_pct: 0.1,
            resolution,
            budget,
            short_tolerance: 0.95,
        }
    }

    /// A server that echoes everything up to `capacity` packets/s and drops
    /// the excess, driven by a generator that can send at most `gen_max`.
    fn model(capacity: f64, gen_max: f64) -> impl FnMut(u64) -> Result<Outcome, ()> {
        move |rate| {
            let sent = (rate as f64).min(gen_max);
            let echoed = sent.min(capacity);
            Ok(Outcome {
                rate,
                send_rate: sent,
                echo_rate: echoed,
                loss_pct: (sent - echoed) / sent * 100.0,
                p50_us: Some(10.0),
                p99_us: Some(50.0),
            })
        }
    }

    /// Highest rate the model calls clean (loss <= 0.1%).
    fn threshold(capacity: f64) -> f64 {
        capacity / (1.0 - 0.001)
    }

    #[test]
    fn finds_capacity_within_resolution_and_budget() {
        let p = params(10_000, 400_000, 0.05, 8);
        // Capacities spread geometrically over (and a bit beyond) the range.
        for i in 0..=400 {
            let c = 10_000.0 * (40.0f64).powf(i as f64 / 400.0);
            let r = search(&p, model(c, f64::INFINITY)).unwrap();
            assert!(r.probes.len() <= 8, "C={c}: {} probes", r.probes.len());
            let best = r.best.as_ref().expect("min_rate is clean here");
            let t = threshold(c).min(400_000.0);
            assert!(best.rate as f64 <= t, "C={c}: {} is lossy", best.rate);
            assert!(
                best.rate as f64 * 1.05 >= t,
                "C={c}: best {} not within 5% of {t} (stop {:?}, probes {:?})",
                best.rate,
                r.stop,
                r.probes.iter().map(|o| o.rate).collect::<Vec<_>>()
            );
            assert!(matches!(r.stop, Stop::Resolved | Stop::CappedAtMax));
            if let Some(res) = r.resolution {
                assert!(res <= 0.05 + 1e-9, "C={c}: resolution {res}");
            }
        }
    }

    #[test]
    fn capacity_above_range_is_capped_at_max() {
        let p = params(10_000, 400_000, 0.05, 8);
        let r = search(&p, model(1e9, f64::INFINITY)).unwrap();
        assert_eq!(r.stop, Stop::CappedAtMax);
        assert_eq!(r.best.unwrap().rate, 400_000);
        // The middle, then the top.
        assert_eq!(r.probes.len(), 2);
    }

    #[test]
    fn capacity_below_range_has_no_clean_rate() {
        let p = params(10_000, 400_000, 0.05, 8);
        let r = search(&p, model(5_000.0, f64::INFINITY)).unwrap();
        assert_eq!(r.stop, Stop::NoCleanRate);
        assert!(r.best.is_none());
        // The middle, then the bottom.
        assert_eq!(r.probes.len(), 2);
        // The bottom of the range was really measured.
        assert!(r.probes.iter().any(|o| o.rate == 10_000));
    }

    #[test]
    fn integration_test_settings_fit_their_budget() {
        // The settings tests/sweep.rs uses.
        let p = params(5_000, 40_000, 0.25, 5);
        for c in [4_000.0, 5_500.0, 9_000.0, 17_000.0, 33_000.0, 39_000.0, 1e6] {
            let r = search(&p, model(c, f64::INFINITY)).unwrap();
            assert!(r.probes.len() <= 5, "C={c}: {} probes", r.probes.len());
            if c >= 5_000.0 {
                let best = r.best.unwrap().rate as f64;
                let t = threshold(c).min(40_000.0);
                assert!(best <= t && best * 1.25 >= t, "C={c}: best {best}");
            }
        }
    }

    #[test]
    fn small_budget_stops_early_and_says_so() {
        let p = params(10_000, 400_000, 0.05, 3);
        let r = search(&p, model(123_000.0, f64::INFINITY)).unwrap();
        assert_eq!(r.probes.len(), 3);
        assert_eq!(r.stop, Stop::Budget);
        let best = r.best.unwrap().rate as f64;
        assert!(best <= threshold(123_000.0));
        let p1 = params(10_000, 400_000, 0.05, 1);
        let r = search(&p1, model(123_000.0, f64::INFINITY)).unwrap();
        // One probe: the range's geometric middle.
        assert_eq!(r.probes.len(), 1);
        assert_eq!(r.best.unwrap().rate, 63_246);
    }

    #[test]
    fn never_exceeds_any_budget() {
        for budget in 1..=10 {
            let p = params(10_000, 400_000, 0.05, budget);
            for c in [1_000.0, 10_005.0, 42_000.0, 250_000.0, 399_000.0, 1e7] {
                let r = search(&p, model(c, f64::INFINITY)).unwrap();
                assert!(r.probes.len() <= budget, "budget {budget}, C={c}");
                if let Some(b) = &r.best {
                    assert!(b.rate as f64 <= threshold(c));
                }
            }
        }
    }

    #[test]
    fn generator_shortfall_is_detected_and_ends_the_search() {
        let p = params(10_000, 400_000, 0.05, 8);
        // The server could take 300k, the generator only sends 90k.
        let r = search(&p, model(300_000.0, 90_000.0)).unwrap();
        assert_eq!(r.stop, Stop::GeneratorLimited);
        let best = r.best.as_ref().unwrap();
        assert!(best.is_short(0.95));
        assert_eq!(best.effective_rate(0.95), 90_000.0);
        assert!(r.probes.iter().any(|o| o.is_short(0.95)));
        assert!(r.probes.len() <= 8);
    }

    #[test]
    fn noisy_loss_never_exceeds_budget_and_best_is_a_clean_probe() {
        // Deterministic pseudo-random loss spikes below capacity.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let p = params(10_000, 400_000, 0.05, 8);
        for _ in 0..200 {
            let mut m = model(150_000.0, f64::INFINITY);
            let r = search(&p, |rate| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let mut o = m(rate)?;
                if state % 5 == 0 {
                    o.loss_pct += 1.0;
                }
                Ok::<_, ()>(o)
            })
            .unwrap();
            assert!(r.probes.len() <= 8);
            if let Some(b) = &r.best {
                assert!(b.is_clean(0.1));
            }
        }
    }

    #[test]
    fn a_probe_that_sent_nothing_is_not_clean() {
        let o = Outcome {
            rate: 50_000,
            send_rate: 0.0,
            echo_rate: 0.0,
            loss_pct: 0.0,
            p50_us: None,
            p99_us: None,
        };
        assert!(!o.is_clean(0.1));
        assert!(Outcome {
            send_rate: 49_990.0,
            ..o
        }
        .is_clean(0.1));
    }

    #[test]
    fn probe_errors_are_passed_through() {
        let p = params(10_000, 400_000, 0.05, 8);
        let mut calls = 0;
        let r = search(&p, |_| {
            calls += 1;
            Err::<Outcome, _>("loadgen failed")
        });
        assert_eq!(r.unwrap_err(), "loadgen failed");
        assert_eq!(calls, 1);
    }

    #[test]
    fn degenerate_range_probes_once() {
        let p = params(20_000, 20_000, 0.05, 8);
        let r = search(&p, model(1e9, f64::INFINITY)).unwrap();
        assert_eq!(r.probes.len(), 1);
        assert_eq!(r.best.unwrap().rate, 20_000);
    }
}
