//! Fuzzes the `--protocol framed` pipeline with client tracking and the
//! broadcast stage, the sender inside `--admin`, one answered client known:
//! nothing panics, the reply is never longer than the datagram, and a
//! fan-out is asked for only for an intact broadcast frame: one intact
//! broadcast message (0x83) exactly as long, carrying its payload, to the
//! known client only (never back to the sender).
#![no_main]

use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use udp_packet_pool::clients::{Broadcast, ClientDirectory, ClientTable, ClientTrack};
use udp_packet_pool::packet::PacketPool;
use udp_packet_pool::process::{Pipeline, Verdict};
use udp_packet_pool::wire::framed::{FramedReply, Packet, Type};

fuzz_target!(|data: &[u8]| {
    let (admin, client): (SocketAddr, SocketAddr) =
        (([10, 0, 0, 1], 4000).into(), ([10, 0, 0, 2], 5000).into());
    let dir = ClientDirectory::new(1, 8, u64::MAX);
    let mut known = ClientTable::new(8, u64::MAX);
    let i = known.record(client, 1, 1);
    known.answered(i, true);
    dir.publish(0, &known, 1, true);
    let nets = vec!["10.0.0.1/32".parse().unwrap()];
    let b = Broadcast::new(nets, Some(dir.clone()), Arc::new(AtomicU32::new(0)), 2048);
    let mut p = Pipeline::echo()
        .with(ClientTrack::new(dir, 0))
        .with(b)
        .with(FramedReply);
    let mut pool = PacketPool::new(1, 2048);
    let slot = pool.alloc().expect("a buffer");
    let n = data.len().min(2048);
    {
        let b = pool.buffer(&slot);
        b.data[..n].copy_from_slice(&data[..n]);
        (b.meta.len, b.meta.peer, b.meta.rx_ns) = (n, admin, 2);
    }
    let v = p.process(&mut pool.buffer(&slot));
    if v == Verdict::Echo {
        assert_eq!(pool.buffer(&slot).payload().len(), n, "amplification 1");
    }
    let request = Packet::new_checked(&data[..n]).ok();
    if let Some(f) = p.fan_out() {
        let req = request.expect("a fan-out only for an intact frame");
        assert_eq!(req.frame_type(), Some(Type::Broadcast));
        let msg = Packet::new_checked(f.datagram()).expect("an intact message");
        assert_eq!(msg.frame_type(), Some(Type::BroadcastMessage));
        assert_eq!((f.datagram().len(), msg.payload()), (n, req.payload()));
        assert_eq!(f.targets(), &[client][..]);
        f.clear();
    }
    pool.free(slot);
});
