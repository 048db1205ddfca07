//! Latency samples from workers to the metrics thread, in batches.
//!
//! A worker records into a [`SampleSink`]: a `Vec` with fixed capacity that,
//! when full (or on a timer), is handed to the metrics thread with
//! `try_send`. The metrics thread empties it and sends it back on the
//! worker's own return channel, so in steady state no sample buffer is ever
//! allocated. When the channel is full, or no empty buffer has come back
//! yet, the batch is dropped and counted: a worker never blocks on metrics.

use std::mem;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

/// Samples per batch.
pub const BATCH_SAMPLES: usize = 1024;
/// Buffers in circulation per worker.
pub const BUFFERS_PER_WORKER: usize = 4;

/// One worker's batch of latency samples, in nanoseconds.
#[derive(Debug)]
pub struct SampleBatch {
    /// Which worker sent it (to return the buffer to).
    pub worker: usize,
    /// The samples.
    pub samples: Vec<u64>,
}

/// The worker's end.
#[derive(Debug)]
pub struct SampleSink {
    worker: usize,
    tx: Sender<SampleBatch>,
    spare: Receiver<Vec<u64>>,
    reserve: Option<Vec<u64>>,
    cur: Vec<u64>,
    /// Samples dropped because no buffer or channel slot was free.
    pub dropped: u64,
}

impl SampleSink {
    /// Records one sample, flushing first if the batch is full.
    #[inline]
    pub fn record(&mut self, ns: u64) {
        if self.cur.len() == self.cur.capacity() {
            self.flush();
        }
        if self.cur.len() < self.cur.capacity() {
            self.cur.push(ns);
        } else {
            self.dropped += 1;
        }
    }

    /// Hands the current batch to the metrics thread if it holds anything.
    pub fn flush(&mut self) {
        if self.cur.is_empty() {
            return;
        }
        let next = self.reserve.take().or_else(|| self.spare.try_recv().ok());
        let Some(next) = next else {
            self.dropped += self.cur.len() as u64;
            self.cur.clear();
            return;
        };
        let full = mem::replace(&mut self.cur, next);
        let batch = SampleBatch {
            worker: self.worker,
            samples: full,
        };
        if let Err(TrySendError::Full(b) | TrySendError::Disconnected(b)) = self.tx.try_send(batch)
        {
            let mut v = b.samples;
            self.dropped += v.len() as u64;
            v.clear();
            self.reserve = Some(v);
        }
    }
}

/// The metrics thread's end: batches in, empty buffers back out.
#[derive(Debug)]
pub struct SampleSource {
    /// Incoming batches.
    pub rx: Receiver<SampleBatch>,
    returns: Vec<Sender<Vec<u64>>>,
}

impl SampleSource {
    /// Gives an emptied buffer back to the worker that sent it.
    pub fn give_back(&self, worker: usize, mut v: Vec<u64>) {
        v.clear();
        if let Some(tx) = self.returns.get(worker) {
            let _ = tx.try_send(v);
        }
    }
}

/// Builds the channels for `workers` workers: one sink each and the source.
pub fn channels(workers: usize) -> (Vec<SampleSink>, SampleSource) {
    let (tx, rx) = bounded(workers.max(1) * BUFFERS_PER_WORKER);
    let mut sinks = Vec::with_capacity(workers);
    let mut returns = Vec::with_capacity(workers);
    for worker in 0..workers {
        let (rtx, rrx) = bounded(BUFFERS_PER_WORKER);
        for _ in 0..BUFFERS_PER_WORKER - 1 {
            rtx.send(Vec::with_capacity(BATCH_SAMPLES))
                .expect("fresh channel");
        }
        returns.push(rtx);
        sinks.push(SampleSink {
            worker,
            tx: tx.clone(),
            spare: rrx,
            reserve: None,
            cur: Vec::with_capacity(BATCH_SAMPLES),
            dropped: 0,
        });
    }
    (sinks, SampleSource { rx, returns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_flow_and_buffers_recycle() {
        let (mut sinks, source) = channels(1);
        let sink = &mut sinks[0];
        for round in 0..20 {
            for i in 0..BATCH_SAMPLES as u64 {
                sink.record(i + round);
            }
            sink.flush();
            let b = source.rx.try_recv().expect("a batch");
            assert_eq!(b.samples.len(), BATCH_SAMPLES);
            assert_eq!(b.samples[0], round);
            source.give_back(b.worker, b.samples);
        }
        assert_eq!(sink.dropped, 0);
    }

    #[test]
    fn full_channel_drops_and_counts_never_blocks() {
        let (mut sinks, source) = channels(1);
        let sink = &mut sinks[0];
        // Nobody drains: after the spare buffers run out, batches are dropped.
        for i in 0..(BATCH_SAMPLES * 10) as u64 {
            sink.record(i);
        }
        sink.flush();
        let delivered: usize = source.rx.try_iter().map(|b| b.samples.len()).sum();
        assert_eq!(delivered as u64 + sink.dropped, (BATCH_SAMPLES * 10) as u64);
        assert!(sink.dropped > 0);
    }
}
