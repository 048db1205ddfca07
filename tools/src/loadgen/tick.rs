//! What a sending thread reports once a second: the counts and corrected
//! latencies of one interval of the measurement. The collector adds up the
//! threads' ticks of each interval for the progress line and the `.hlog`.

use hdrhistogram::Histogram;

use crate::counters::Counters;

/// One thread's share of one interval.
#[derive(Debug)]
pub struct Tick {
    /// Reporting thread.
    pub thread: usize,
    /// Interval number, from 1: interval k covers seconds [k-1, k) after
    /// the warm-up. A thread reports 1, 2, ... without gaps.
    pub index: u64,
    /// When the thread closed the interval (CLOCK_MONOTONIC ns); earlier
    /// than the interval's end only for a thread's last tick.
    pub end_ns: u64,
    /// Counts during the interval.
    pub counters: Counters,
    /// Corrected latencies (ns) recorded during the interval.
    pub latency: Histogram<u64>,
    /// The thread is done: no more ticks from it.
    pub last: bool,
}
