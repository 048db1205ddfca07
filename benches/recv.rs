//! The receive path's cost per call when one datagram arrives per call,
//! with a ring of 32 and of 1024 entries.
//!
//! Group `recv_one_per_call`, time shown = one datagram (send on loopback +
//! `recvmmsg` + take + free):
//! - `ring_N`: the server's design, `RecvBatch` with N entries posted; a
//!   call re-points only the entries it consumed (here: one);
//! - `repost_all_N`: what the server did before: every round gives all N
//!   buffers back and posts N again, re-pointing every entry.
//!
//! `ring_1024` should cost about what `ring_32` does; `repost_all_1024`
//! grows with N.
//!
//! Run: `cargo bench --bench recv` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use udp_packet_pool::io::{RecvBatch, RecvWait};
use udp_packet_pool::packet::PacketPool;

fn recv_one_per_call(c: &mut Criterion) {
    let mut g = c.benchmark_group("recv_one_per_call");
    g.throughput(Throughput::Elements(1));
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(server.local_addr().unwrap()).unwrap();
    let fd = server.as_raw_fd();
    for cap in [32usize, 1024] {
        for repost_all in [false, true] {
            let mut pool = PacketPool::new(cap + 64, 2048);
            let mut rx = RecvBatch::new(cap);
            rx.refill(&mut pool);
            let mut out = Vec::with_capacity(cap);
            let name = if repost_all {
                format!("repost_all_{cap}")
            } else {
                format!("ring_{cap}")
            };
            g.bench_function(name, |b| {
                b.iter(|| {
                    client.send(b"0123456789abcdef").unwrap();
                    if repost_all {
                        rx.release(&mut pool);
                        rx.refill(&mut pool);
                    }
                    let n = rx.recv(fd, &mut pool, RecvWait::WaitForOne).unwrap();
                    rx.take_received(n, &mut pool, &mut out);
                    for s in out.drain(..) {
                        black_box(pool.meta(&s).len);
                        pool.free(s);
                    }
                    rx.refill(&mut pool);
                })
            });
            rx.release(&mut pool);
        }
    }
    g.finish();
}

criterion_group!(benches, recv_one_per_call);
criterion_main!(benches);
