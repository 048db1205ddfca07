//! Packet buffers: the pool a worker receives into.
//!
//! A [`PacketPool`] is a [`FreeList`] over `capacity` buffers of
//! `packet_size` bytes. All payload bytes live in one contiguous slab and all
//! metadata in one contiguous array, both allocated at start; the hot path
//! only moves indices. [`PacketMeta`] is the seed's `PacketBuffer` minus the
//! bytes: length, sender (IPv4 or IPv6), receive timestamp.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use crate::io::slab::Slab;
use crate::pool::{FreeList, PoolStats, Slot};

/// Default buffer size in bytes (the seed's `PACKET_SIZE`).
pub const DEFAULT_PACKET_SIZE: usize = 2048;

/// Where a receive timestamp came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clock {
    /// The kernel stamped the datagram on arrival (`SO_TIMESTAMPNS`,
    /// `CLOCK_REALTIME`): socket queueing time is included.
    Kernel,
    /// Read from `CLOCK_REALTIME` when the receive call returned.
    #[default]
    User,
}

/// Everything known about a received datagram besides its bytes.
#[derive(Debug, Clone, Copy)]
pub struct PacketMeta {
    /// Bytes received (the datagram's full length when it was truncated).
    pub len: usize,
    /// The datagram was larger than the buffer (`MSG_TRUNC`).
    pub truncated: bool,
    /// Who sent it; the echo goes back here.
    pub peer: SocketAddr,
    /// Receive time, nanoseconds since the Unix epoch.
    pub rx_ns: u64,
    /// Which clock `rx_ns` came from.
    pub rx_clock: Clock,
    /// The destination the datagram was sent to, as the kernel reports it
    /// (`IP_PKTINFO`/`IPV6_PKTINFO`), when it does.
    pub dest: Option<Destination>,
    /// With UDP GRO: the buffer holds a train of datagrams of this size
    /// each (the last may be shorter), `len` bytes in all; 0: one datagram.
    pub segment: u16,
    /// The IPv4 TTL / IPv6 hop limit it arrived with (`IP_RECVTTL` /
    /// `IPV6_RECVHOPLIMIT`), when the worker asked for it
    /// (`Stage::wants_ttl`) and the kernel said.
    pub ttl: Option<u8>,
    /// Not a received datagram: an extra send a stage asked for (a
    /// broadcast's fan-out), counted apart from echoes.
    pub fan_out: bool,
}

impl PacketMeta {
    /// How many datagrams the buffer holds: 1, or the segments of a train.
    #[inline]
    pub fn datagrams(&self) -> u64 {
        match self.segment as usize {
            0 => 1,
            seg => self.len.div_ceil(seg).max(1) as u64,
        }
    }
}

/// Where a datagram was addressed (from `IP_PKTINFO` / `IPV6_PKTINFO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination {
    /// The destination address in the IP header (may be a broadcast or
    /// multicast address).
    pub addr: IpAddr,
    /// The local address a reply must come from: equal to `addr` for a
    /// datagram sent to one of this host's unicast addresses.
    pub local: IpAddr,
    /// The interface it arrived on.
    pub ifindex: u32,
}

impl Default for PacketMeta {
    fn default() -> Self {
        PacketMeta {
            len: 0,
            truncated: false,
            peer: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
            rx_ns: 0,
            rx_clock: Clock::User,
            dest: None,
            segment: 0,
            ttl: None,
            fan_out: false,
        }
    }
}

/// A mutable view of one allocated buffer.
#[derive(Debug)]
pub struct PacketBuffer<'a> {
    /// The whole buffer (`packet_size` bytes).
    pub data: &'a mut [u8],
    /// Its metadata.
    pub meta: &'a mut PacketMeta,
}

impl PacketBuffer<'_> {
    /// The received bytes (empty for a truncated datagram, which must never
    /// be echoed).
    pub fn payload(&self) -> &[u8] {
        if self.meta.truncated {
            &[]
        } else {
            &self.data[..self.meta.len.min(self.data.len())]
        }
    }

    /// The received bytes, mutably (for reply modes that rewrite in place).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        if self.meta.truncated {
            &mut []
        } else {
            let n = self.meta.len.min(self.data.len());
            &mut self.data[..n]
        }
    }
}

/// A worker's pool of packet buffers.
#[derive(Debug)]
pub struct PacketPool {
    list: FreeList,
    packet_size: usize,
    /// Bytes before each buffer's payload (see [`PacketPool::with_headroom`]).
    headroom: usize,
    slab: Slab,
    meta: Box<[PacketMeta]>,
}

impl PacketPool {
    /// `capacity` buffers of `packet_size` bytes each, allocated now.
    pub fn new(capacity: usize, packet_size: usize) -> PacketPool {
        PacketPool::with_headroom(capacity, packet_size, 0)
    }

    /// Like [`new`](Self::new), with `headroom` bytes before each buffer's
    /// `packet_size` payload bytes: room the kernel fills ahead of the
    /// payload (io_uring's multishot `recvmsg` header, address and control
    /// messages, `io::uring`). Payload views and pointers start after it.
    pub fn with_headroom(capacity: usize, packet_size: usize, headroom: usize) -> PacketPool {
        let bytes = packet_size
            .checked_add(headroom)
            .and_then(|stride| capacity.checked_mul(stride))
            .expect("pool size times packet size overflows");
        let mut list = FreeList::new(capacity);
        list.add_bytes(bytes + capacity * std::mem::size_of::<PacketMeta>());
        PacketPool {
            list,
            packet_size,
            headroom,
            slab: Slab::new(bytes),
            meta: vec![PacketMeta::default(); capacity].into_boxed_slice(),
        }
    }

    /// Bytes per buffer.
    pub fn packet_size(&self) -> usize {
        self.packet_size
    }

    /// Takes a buffer; `None` when all are in use.
    #[inline]
    pub fn alloc(&mut self) -> Option<Slot> {
        self.list.alloc()
    }

    /// Returns a buffer.
    #[inline]
    pub fn free(&mut self, slot: Slot) {
        self.list.free(slot)
    }

    /// Pool statistics.
    pub fn stats(&self) -> PoolStats {
        self.list.stats()
    }

    /// Free buffers left.
    pub fn available(&self) -> usize {
        self.list.available()
    }

    /// Bytes before each payload (0 unless built [`with_headroom`](Self::with_headroom)).
    pub fn headroom(&self) -> usize {
        self.headroom
    }

    /// Start of `slot`'s headroom in the slab.
    fn offset(&self, slot: &Slot) -> usize {
        assert!(self.list.owns(slot), "slot from another pool");
        slot.index() * (self.headroom + self.packet_size)
    }

    /// The headroom bytes of `slot` (what the kernel wrote before the payload).
    #[inline]
    pub fn headroom_bytes(&mut self, slot: &Slot) -> &[u8] {
        let start = self.offset(slot);
        self.slab.slice_mut(start, self.headroom)
    }

    /// The buffer and metadata behind `slot`.
    #[inline]
    pub fn buffer(&mut self, slot: &Slot) -> PacketBuffer<'_> {
        let start = self.offset(slot) + self.headroom;
        PacketBuffer {
            data: self.slab.slice_mut(start, self.packet_size),
            meta: &mut self.meta[slot.index()],
        }
    }

    /// Metadata behind `slot`.
    #[inline]
    pub fn meta(&self, slot: &Slot) -> &PacketMeta {
        assert!(self.list.owns(slot), "slot from another pool");
        &self.meta[slot.index()]
    }

    /// Metadata behind `slot`, mutably.
    #[inline]
    pub fn meta_mut(&mut self, slot: &Slot) -> &mut PacketMeta {
        assert!(self.list.owns(slot), "slot from another pool");
        &mut self.meta[slot.index()]
    }

    /// Start of `slot`'s bytes, derived from the slab's one base pointer,
    /// for the receive and send calls in `io`, which hold `&mut PacketPool`
    /// while the kernel uses the pointer.
    #[inline]
    pub(crate) fn data_ptr(&mut self, slot: &Slot) -> *mut u8 {
        let start = self.offset(slot) + self.headroom;
        self.slab.ptr(start)
    }

    /// Start of `slot`'s whole buffer (headroom, then payload:
    /// `headroom() + packet_size()` bytes), derived like
    /// [`data_ptr`](Self::data_ptr), for a kernel that fills both
    /// (io_uring's provided buffers).
    #[inline]
    pub(crate) fn frame_ptr(&mut self, slot: &Slot) -> *mut u8 {
        let start = self.offset(slot);
        self.slab.ptr(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_disjoint_slices_of_one_slab() {
        let mut p = PacketPool::new(4, 64);
        let a = p.alloc().unwrap();
        let b = p.alloc().unwrap();
        p.buffer(&a).data.fill(0xaa);
        p.buffer(&b).data.fill(0xbb);
        assert!(p.buffer(&a).data.iter().all(|&x| x == 0xaa));
        assert_eq!(p.buffer(&b).data.len(), 64);
        let pa = p.data_ptr(&a) as usize;
        let pb = p.data_ptr(&b) as usize;
        assert_eq!(pa.abs_diff(pb), 64);
        p.free(a);
        p.free(b);
        assert_eq!(p.stats().in_use, 0);
    }

    #[test]
    fn truncated_payload_is_empty() {
        let mut p = PacketPool::new(1, 8);
        let s = p.alloc().unwrap();
        {
            let buf = p.buffer(&s);
            buf.meta.len = 100;
            buf.meta.truncated = true;
            assert!(buf.payload().is_empty());
            buf.meta.truncated = false;
            buf.meta.len = 100; // claims more than the buffer holds
            assert_eq!(buf.payload().len(), 8);
        }
        p.free(s);
    }
}
