//! Packet-buffer allocation: the freelist pools against a fresh heap box.
//!
//! Groups, each with one variant per allocator:
//! - `alloc_free`: one allocation and its free (`pool`, `box`, `packet_pool`,
//!   and for reference `box_uninit`: the heap round trip alone);
//! - `million_pairs`: 1,000,000 alloc/free pairs per iteration (`pool`, `box`);
//! - `burst_32`: allocate 32 then free all 32, like one recvmmsg batch
//!   (`pool`, `box`, `packet_pool`).
//!
//! `Buf` mirrors the seed's `PacketBuffer` (2 KiB of bytes, length, peer,
//! timestamp). `box` builds one with `Box::new`, so it pays for the heap
//! allocation *and* for initialising 2 KiB; the pools hand out an existing
//! buffer and only write the metadata a receive would write.
//!
//! Run: `cargo bench --bench pool` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use udp_packet_pool::packet::PacketPool;
use udp_packet_pool::pool::{Pool, Slot};

/// A packet buffer the size of the seed's `PacketBuffer`.
struct Buf {
    data: [u8; 2048],
    len: usize,
    peer: SocketAddr,
    ts: u64,
}

const PEER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9));

impl Buf {
    fn new(len: usize, ts: u64) -> Buf {
        Buf {
            data: [0; 2048],
            len,
            peer: PEER,
            ts,
        }
    }
}

/// Buffers per pool (the server's default `--pool-size`).
const POOL: usize = 1000;
/// Bytes per packet buffer (the server's default `--packet-size`).
const PACKET: usize = 2048;

/// The pool variant's work: take a buffer, set what a receive sets, free it.
#[inline(always)]
fn pool_pair(pool: &mut Pool<Buf>, i: u64) {
    let s = pool.alloc().expect("pool has room");
    let b = pool.get_mut(&s);
    b.len = 64;
    b.ts = i;
    black_box(b.data.as_ptr());
    pool.free(black_box(s));
}

/// The box variant's work: build a buffer on the heap, drop it.
#[inline(always)]
fn box_pair(i: u64) {
    let b = Box::new(Buf::new(64, i));
    black_box(&b);
    drop(b);
}

/// The packet-pool variant's work.
#[inline(always)]
fn packet_pool_pair(pool: &mut PacketPool, i: u64) {
    let s = pool.alloc().expect("pool has room");
    let m = pool.meta_mut(&s);
    m.len = 64;
    m.rx_ns = i;
    pool.free(black_box(s));
}

fn alloc_free(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc_free");
    g.throughput(Throughput::Elements(1));
    let mut pool = Pool::new(POOL, || Buf::new(0, 0));
    let mut i = 0u64;
    g.bench_function("pool", |b| {
        b.iter(|| {
            i += 1;
            pool_pair(&mut pool, i)
        })
    });
    g.bench_function("box", |b| {
        b.iter(|| {
            i += 1;
            box_pair(i)
        })
    });
    let mut pp = PacketPool::new(POOL, PACKET);
    g.bench_function("packet_pool", |b| {
        b.iter(|| {
            i += 1;
            packet_pool_pair(&mut pp, i)
        })
    });
    // For reference: the heap round trip alone, without initialising 2 KiB.
    g.bench_function("box_uninit", |b| {
        b.iter(|| {
            let b: Box<MaybeUninit<Buf>> = Box::new(MaybeUninit::uninit());
            black_box(&b);
        })
    });
    g.finish();
    assert_eq!(pool.stats().in_use, 0);
    assert_eq!(pp.stats().in_use, 0);
    // Keep the fields "used" for the compiler; they model the real buffer.
    let s = pool.alloc().unwrap();
    black_box((pool.get(&s).len, pool.get(&s).peer));
    pool.free(s);
}

const MILLION: u64 = 1_000_000;

fn million_pairs(c: &mut Criterion) {
    let mut g = c.benchmark_group("million_pairs");
    g.throughput(Throughput::Elements(MILLION));
    g.sample_size(10);
    let mut pool = Pool::new(POOL, || Buf::new(0, 0));
    g.bench_function("pool", |b| {
        b.iter(|| {
            for i in 0..MILLION {
                pool_pair(&mut pool, i);
            }
        })
    });
    g.bench_function("box", |b| {
        b.iter(|| {
            for i in 0..MILLION {
                box_pair(i);
            }
        })
    });
    g.finish();
}

const BURST: usize = 32;

fn burst_32(c: &mut Criterion) {
    let mut g = c.benchmark_group("burst_32");
    g.throughput(Throughput::Elements(BURST as u64));
    let mut pool = Pool::new(POOL, || Buf::new(0, 0));
    let mut slots: Vec<Slot> = Vec::with_capacity(BURST);
    g.bench_function("pool", |b| {
        b.iter(|| {
            for i in 0..BURST {
                let s = pool.alloc().expect("pool has room");
                pool.get_mut(&s).len = i;
                slots.push(s);
            }
            black_box(&slots);
            for s in slots.drain(..) {
                pool.free(s);
            }
        })
    });
    let mut boxes: Vec<Box<Buf>> = Vec::with_capacity(BURST);
    g.bench_function("box", |b| {
        b.iter(|| {
            for i in 0..BURST {
                boxes.push(Box::new(Buf::new(i, 0)));
            }
            black_box(&boxes);
            boxes.clear();
        })
    });
    let mut pp = PacketPool::new(POOL, PACKET);
    g.bench_function("packet_pool", |b| {
        b.iter(|| {
            for i in 0..BURST {
                let s = pp.alloc().expect("pool has room");
                pp.meta_mut(&s).len = i;
                slots.push(s);
            }
            black_box(&slots);
            for s in slots.drain(..) {
                pp.free(s);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, alloc_free, million_pairs, burst_32);
criterion_main!(benches);
