//! The main thread's side of a run: adds up the threads' one-second ticks,
//! and for each complete interval shows a progress line (elapsed, sent/s,
//! echoed/s, loss so far, p99 so far) and appends the interval to the
//! `.hlog`. Interval k is complete once every thread has reported it or
//! finished.

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use crossbeam_channel::Receiver;
use hdrhistogram::Histogram;

use crate::counters::Counters;
use crate::hlog::HlogWriter;
use crate::latency::{fmt_us, new_histogram};
use crate::progress::Progress;
use crate::tick::Tick;

const NS_PER_SEC: u64 = 1_000_000_000;

/// The threads' ticks of one interval, added up.
struct Interval {
    counters: Counters,
    latency: Histogram<u64>,
    end_ns: u64,
}

/// Collects ticks until every thread has finished.
pub struct Collector<'a> {
    reported: Vec<u64>,
    done: Vec<bool>,
    pending: BTreeMap<u64, Interval>,
    measure_start_ns: u64,
    cumulative: Counters,
    latency: Histogram<u64>,
    progress: &'a Progress,
    hlog: Option<&'a mut HlogWriter>,
    hlog_error: Option<io::Error>,
}

impl<'a> Collector<'a> {
    /// A collector for `threads` threads whose measurement starts at `measure_start_ns`.
    pub fn new(
        threads: usize,
        measure_start_ns: u64,
        progress: &'a Progress,
        hlog: Option<&'a mut HlogWriter>,
    ) -> Collector<'a> {
        Collector {
            reported: vec![0; threads],
            done: vec![false; threads],
            pending: BTreeMap::new(),
            measure_start_ns,
            cumulative: Counters::default(),
            latency: new_histogram(),
            progress,
            hlog,
            hlog_error: None,
        }
    }

    /// Takes ticks until all senders are gone; returns the first error
    /// writing the `.hlog`, if any (the run itself goes on regardless).
    pub fn run(mut self, ticks: &Receiver<Tick>) -> Option<io::Error> {
        while let Ok(t) = ticks.recv() {
            self.accept(t);
        }
        // Threads that died without a last tick: show what there is.
        self.done.iter_mut().for_each(|d| *d = true);
        self.emit_ready();
        self.hlog_error
    }

    fn accept(&mut self, t: Tick) {
        if t.thread >= self.reported.len() {
            return;
        }
        self.reported[t.thread] = t.index;
        self.done[t.thread] |= t.last;
        let e = self.pending.entry(t.index).or_insert_with(|| Interval {
            counters: Counters::default(),
            latency: new_histogram(),
            end_ns: 0,
        });
        e.counters += t.counters;
        // Same bounds on both sides: cannot fail.
        let _ = e.latency.add(&t.latency);
        e.end_ns = e.end_ns.max(t.end_ns);
        self.emit_ready();
    }

    fn complete(&self, k: u64) -> bool {
        self.reported
            .iter()
            .zip(&self.done)
            .all(|(&r, &d)| r >= k || d)
    }

    fn emit_ready(&mut self) {
        while let Some((&k, _)) = self.pending.first_key_value() {
            if !self.complete(k) {
                break;
            }
            let iv = self.pending.remove(&k).expect("present");
            self.emit(k, iv);
        }
    }

    fn emit(&mut self, k: u64, iv: Interval) {
        let start_ns = self.measure_start_ns + (k - 1) * NS_PER_SEC;
        let len_ns = iv.end_ns.saturating_sub(start_ns).min(NS_PER_SEC);
        self.cumulative += iv.counters;
        let _ = self.latency.add(&iv.latency);
        if let Some(w) = self.hlog.as_deref_mut() {
            if self.hlog_error.is_none() {
                let r = w.write(
                    &iv.latency,
                    Duration::from_nanos(start_ns - self.measure_start_ns),
                    Duration::from_nanos(len_ns),
                );
                if let Err(e) = r {
                    self.hlog_error = Some(e);
                }
            }
        }
        // A last sliver of an interval says nothing useful per second.
        if len_ns < NS_PER_SEC / 10 {
            return;
        }
        let secs = len_ns as f64 / 1e9;
        let elapsed = (start_ns + len_ns - self.measure_start_ns) as f64 / 1e9;
        let c = &self.cumulative;
        let p99 = (!self.latency.is_empty())
            .then(|| self.latency.value_at_quantile(0.99) as f64 / 1000.0);
        self.progress.show(&format!(
            "{elapsed:6.1}s  sent {:>9.0}/s  echoed {:>9.0}/s  lost {} ({:.3}%)  p99 {} us",
            iv.counters.sent as f64 / secs,
            iv.counters.received as f64 / secs,
            c.lost(),
            c.loss_pct(),
            fmt_us(p99),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::record;

    fn tick(thread: usize, index: u64, sent: u64, last: bool) -> Tick {
        let mut latency = new_histogram();
        record(&mut latency, 1000 * sent);
        Tick {
            thread,
            index,
            end_ns: 1_000 + index * NS_PER_SEC,
            counters: Counters {
                sent,
                received: sent,
                ..Counters::default()
            },
            latency,
            last,
        }
    }

    #[test]
    fn intervals_wait_for_every_live_thread() {
        let p = Progress::new(true);
        let mut c = Collector::new(2, 1_000, &p, None);
        c.accept(tick(0, 1, 5, false));
        assert_eq!(c.cumulative.sent, 0, "thread 1 has not reported interval 1");
        c.accept(tick(1, 1, 7, false));
        assert_eq!(c.cumulative.sent, 12);
        // Thread 0 finishes in interval 2; thread 1 goes on to interval 3.
        c.accept(tick(0, 2, 1, true));
        assert_eq!(c.cumulative.sent, 12);
        c.accept(tick(1, 2, 1, false));
        assert_eq!(c.cumulative.sent, 14);
        c.accept(tick(1, 3, 1, true));
        assert_eq!(c.cumulative.sent, 15);
        assert!(c.pending.is_empty());
        assert_eq!(c.latency.len(), 5);
    }
}
