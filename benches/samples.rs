//! Handing latency samples from a worker to a consumer thread, per sample.
//!
//! Group `sample_handoff`, one variant per design (time shown = one sample):
//! - `batched`: the server's design, `udp_packet_pool::samples::channels(1)`:
//!   `SampleSink::record` per sample, a `try_send` of a 1024-sample batch
//!   when full, the consumer sums the batch and `give_back`s the buffer;
//! - `per_packet`: a crossbeam `bounded` channel of `u64` with the same
//!   in-flight capacity (4 x 1024 samples), `try_send` per sample, the
//!   consumer `recv`s and sums each one.
//!
//! Neither producer ever blocks: samples that find no room are dropped and
//! counted; the counts are printed after each variant so a fast-looking
//! variant that only dropped can be told apart.
//!
//! Run: `cargo bench --bench samples` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::thread;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crossbeam_channel::{bounded, TrySendError};
use udp_packet_pool::samples::{channels, BATCH_SAMPLES, BUFFERS_PER_WORKER};

fn sample_handoff(c: &mut Criterion) {
    let mut g = c.benchmark_group("sample_handoff");
    g.throughput(Throughput::Elements(1));

    // batched
    let (mut sinks, source) = channels(1);
    let mut sink = sinks.pop().expect("one sink");
    drop(sinks);
    let consumer = thread::spawn(move || {
        let (mut n, mut sum) = (0u64, 0u64);
        while let Ok(batch) = source.rx.recv() {
            n += batch.samples.len() as u64;
            sum = sum.wrapping_add(batch.samples.iter().sum::<u64>());
            source.give_back(batch.worker, batch.samples);
        }
        black_box(sum);
        n
    });
    let mut recorded = 0u64;
    g.bench_function("batched", |b| {
        b.iter(|| {
            recorded += 1;
            sink.record(black_box(recorded & 0xffff));
        })
    });
    sink.flush();
    let dropped = sink.dropped;
    drop(sink);
    let delivered = consumer.join().expect("consumer thread");
    eprintln!(
        "batched: {recorded} samples recorded, {delivered} delivered, {dropped} dropped ({:.2}%)",
        dropped as f64 * 100.0 / recorded.max(1) as f64
    );

    // per_packet
    let (tx, rx) = bounded::<u64>(BATCH_SAMPLES * BUFFERS_PER_WORKER);
    let consumer = thread::spawn(move || {
        let (mut n, mut sum) = (0u64, 0u64);
        while let Ok(v) = rx.recv() {
            n += 1;
            sum = sum.wrapping_add(v);
        }
        black_box(sum);
        n
    });
    let (mut sent, mut dropped) = (0u64, 0u64);
    g.bench_function("per_packet", |b| {
        b.iter(|| {
            sent += 1;
            match tx.try_send(black_box(sent & 0xffff)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => dropped += 1,
                Err(TrySendError::Disconnected(_)) => panic!("consumer thread died"),
            }
        })
    });
    drop(tx);
    let delivered = consumer.join().expect("consumer thread");
    eprintln!(
        "per_packet: {sent} samples sent, {delivered} delivered, {dropped} dropped ({:.2}%)",
        dropped as f64 * 100.0 / sent.max(1) as f64
    );
    g.finish();
}

criterion_group!(benches, sample_handoff);
criterion_main!(benches);
