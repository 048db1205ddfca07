//! The framed broadcast (`--protocol framed`, type 0x03): a broadcast from
//! an `--admin` source is relayed, as a broadcast message frame (type
//! 0x83, its own sequence number and CRC, the admin's payload), to every
//! client seen within `--client-ttl` whose last datagram was answered,
//! except the admin itself. The admin's frame is answered in place as an
//! echo request (by the `FramedReply` stage after this one): its ack is an
//! echo reply (0x81) with its sequence and payload, exactly as long.
//!
//! A broadcast from anyone else passes through untouched, and
//! `FramedReply` refuses it with an error reply of its own length ("not
//! implemented"), so amplification stays 1 outside `--admin`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use ipnet::IpNet;

use super::{ClientDirectory, FanOut};
use crate::guard::allow::AllowList;
use crate::guard::canonical;
use crate::packet::PacketBuffer;
use crate::process::{Stage, Verdict};
use crate::wire::framed::{Packet, Type, HEADER_LEN, VERSION};

/// One worker's broadcast stage (place it right before `FramedReply`).
pub struct Broadcast {
    admins: AllowList,
    directory: Option<Arc<ClientDirectory>>,
    /// Broadcast message sequence numbers, shared by the workers.
    seq: Arc<AtomicU32>,
    out: FanOut,
    scratch: Vec<(SocketAddr, u64, bool)>,
}

impl Broadcast {
    /// Relays broadcasts from `admin` to the clients in `directory` (none
    /// without client tracking), frames of up to `packet_size` bytes,
    /// numbering them from the shared `seq`.
    pub fn new(
        admin: Vec<IpNet>,
        directory: Option<Arc<ClientDirectory>>,
        seq: Arc<AtomicU32>,
        packet_size: usize,
    ) -> Broadcast {
        let cap = directory.as_ref().map_or(0, |d| d.capacity());
        Broadcast {
            admins: AllowList::new(admin),
            directory,
            seq,
            out: FanOut::new(packet_size, cap),
            scratch: Vec::with_capacity(cap),
        }
    }

    /// Bytes of the candidate and target lists for `clients` entries.
    pub fn bytes_for(clients: u64) -> u64 {
        let per =
            std::mem::size_of::<(SocketAddr, u64, bool)>() + std::mem::size_of::<SocketAddr>();
        clients * per as u64
    }

    /// Whether `buf` is an intact, well-formed broadcast request.
    fn is_broadcast(buf: &[u8]) -> bool {
        Packet::new_checked(buf).is_ok_and(|p| {
            p.frame_type() == Some(Type::Broadcast)
                && p.flags() == 0
                && p.status() == 0
                && p.reserved() == 0
        })
    }
}

/// Writes a broadcast message frame around the payload already in
/// `buf[HEADER_LEN..]`.
fn message_header(buf: &mut [u8], seq: u32) {
    let len = (buf.len() - HEADER_LEN) as u16; // from a frame's own length
    let mut p = Packet::new_unchecked(buf);
    p.set_version(VERSION);
    p.set_type(Type::BroadcastMessage as u8);
    p.set_flags(0);
    p.set_status(0);
    p.set_seq(seq);
    p.set_len(len);
    p.set_reserved(0);
    p.fill_crc();
}

impl Stage for Broadcast {
    fn process(&mut self, pkt: &mut PacketBuffer<'_>) -> Verdict {
        let peer = pkt.meta.peer;
        // FramedReply answers what is left alone (refuses a broadcast). A
        // broadcast while the last one's fan-out is still pending (two in
        // one GRO train) is refused too: the admin may send it again.
        if self.out.is_pending()
            || !Broadcast::is_broadcast(pkt.payload())
            || !self.admins.allows(canonical(&peer))
        {
            return Verdict::Echo;
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let (now, from, req) = (pkt.meta.rx_ns, pkt.meta.dest, pkt.payload());
        let (directory, scratch) = (&self.directory, &mut self.scratch);
        self.out.request(
            req.len(),
            from,
            |b| {
                b[HEADER_LEN..].copy_from_slice(&req[HEADER_LEN..]);
                message_header(b, seq);
            },
            |targets| match directory {
                Some(d) => d.answered_clients(now, peer, scratch, targets),
                None => targets.clear(),
            },
        );
        // The ack: FramedReply answers an echo request with its echo reply.
        let mut p = Packet::new_unchecked(pkt.payload_mut());
        p.set_type(Type::EchoRequest as u8);
        p.fill_crc();
        Verdict::Echo
    }

    fn fan_out(&mut self) -> Option<&mut FanOut> {
        Some(&mut self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::ClientTable;
    use crate::packet::PacketPool;
    use crate::process::Pipeline;
    use crate::wire::framed::{encode, FramedReply};

    fn peer(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], port))
    }

    /// A fan-out: the datagram and its targets.
    type Sent = (Vec<u8>, Vec<SocketAddr>);

    /// Runs `frame` from `from` through Broadcast + FramedReply; returns
    /// the reply and the fan-out if one was asked for.
    fn run(p: &mut Pipeline, frame: &[u8], from: SocketAddr) -> (Vec<u8>, Option<Sent>) {
        let mut pool = PacketPool::new(1, 256);
        let s = pool.alloc().unwrap();
        let b = pool.buffer(&s);
        b.data[..frame.len()].copy_from_slice(frame);
        (b.meta.len, b.meta.peer, b.meta.rx_ns) = (frame.len(), from, 1_000);
        assert_eq!(p.process(&mut pool.buffer(&s)), Verdict::Echo);
        let reply = pool.buffer(&s).payload().to_vec();
        let fan = p.fan_out().map(|f| {
            let r = (f.datagram().to_vec(), f.targets().to_vec());
            f.clear();
            r
        });
        pool.free(s);
        (reply, fan)
    }

    #[test]
    fn admins_fan_out_to_answered_clients_and_others_are_refused() {
        let dir = ClientDirectory::new(1, 16, 1_000_000);
        let mut t = ClientTable::new(16, 1_000_000);
        for (c, answered) in [
            (peer(1, 5000), true),
            (peer(2, 5000), false),
            (peer(9, 7), true),
        ] {
            let i = t.record(c, 1, 900);
            t.answered(i, answered);
        }
        dir.publish(0, &t, 900, true);
        let admin: IpNet = "10.0.0.9/32".parse().unwrap();
        let seq = Arc::new(AtomicU32::new(77));
        let mut p = Pipeline::echo()
            .with(Broadcast::new(vec![admin], Some(dir), seq, 256))
            .with(FramedReply);
        let req = encode(Type::Broadcast, 5, b"hello all");
        let (ack, fan) = run(&mut p, &req, peer(9, 7));
        assert_eq!(ack, encode(Type::EchoReply, 5, b"hello all"));
        let (msg, targets) = fan.expect("a fan-out");
        assert_eq!(msg, encode(Type::BroadcastMessage, 77, b"hello all"));
        assert_eq!(
            targets,
            vec![peer(1, 5000)],
            "not the refused one, not the admin"
        );
        assert!(p.fan_out().is_none(), "cleared");

        // Outside --admin: an error reply of its own length, no fan-out.
        let (reply, fan) = run(&mut p, &req, peer(1, 5000));
        assert_eq!(reply.len(), req.len());
        let r = Packet::new_checked(&reply[..]).unwrap();
        assert_eq!(r.frame_type(), Some(Type::Error));
        assert!(fan.is_none());
        // Other frames pass untouched.
        let echo = encode(Type::EchoRequest, 1, b"x");
        let (reply, fan) = run(&mut p, &echo, peer(9, 7));
        assert_eq!((reply, fan), (encode(Type::EchoReply, 1, b"x"), None));
    }
}
