//! The provided-buffer ring: pool buffers posted to the kernel.
//!
//! A ring of `io_uring_buf` entries (address, length, buffer id) in
//! page-aligned memory of our own (`mmap`), registered with the io_uring
//! instance under one buffer group. We write entries at our private tail
//! and publish the tail with a release store; the kernel takes entries at
//! its head as datagrams arrive and names the buffer it used by its id in
//! each completion. The entry count is a power of two at least the pool's
//! capacity, so posting every buffer of the pool can never overrun it.
//!
//! Layout (`struct io_uring_buf`, 16 bytes): `addr: u64`, `len: u32`,
//! `bid: u16`, `resv: u16`; the ring's shared tail is the `resv` field of
//! entry 0, so entry 0 is written field by field, never as a whole.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

/// Bytes of one ring entry.
const ENTRY: usize = 16;
/// Most entries the kernel accepts in one buffer ring.
pub const MAX_ENTRIES: usize = 32768;

/// One buffer ring in memory we own.
pub struct BufRing {
    base: NonNull<u8>,
    bytes: usize,
    mask: u16,
    entries: u16,
    tail: u16,
}

// SAFETY: the ring memory is owned by this value alone; the kernel is the
// only other party, synchronised through the tail's release store.
unsafe impl Send for BufRing {}

impl BufRing {
    /// A zeroed ring of `entries` (a power of two, 1..=32768).
    pub fn new(entries: usize) -> io::Result<BufRing> {
        if !entries.is_power_of_two() || entries > MAX_ENTRIES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "buffer ring of {entries} entries: must be a power of two up to {MAX_ENTRIES}"
                ),
            ));
        }
        let bytes = entries * ENTRY;
        // SAFETY: an anonymous private mapping of `bytes` bytes at an address
        // the kernel picks (page-aligned, zero-filled); no memory of ours.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(BufRing {
            base: NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?,
            bytes,
            mask: (entries - 1) as u16,
            entries: entries as u16,
            tail: 0,
        })
    }

    /// Entries in the ring (what `IORING_REGISTER_PBUF_RING` is told).
    /// 32768 fits in a `u16`; the kernel reads 0 as no entries, so the
    /// registration takes this value as given.
    pub fn entries(&self) -> u16 {
        self.entries
    }

    /// Bytes of the ring's memory.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The ring's address, for the registration.
    pub fn addr(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    /// Writes one entry at the private tail: buffer `bid` of `len` bytes
    /// at `addr`. Seen by the kernel only after [`publish`](Self::publish).
    /// The caller never has more buffers posted than the ring has entries.
    pub fn push(&mut self, addr: u64, len: u32, bid: u16) {
        let at = usize::from(self.tail & self.mask) * ENTRY;
        // SAFETY: `at + 16 <= bytes` (the index is masked); the three fields
        // are written at their offsets in `io_uring_buf` with unaligned-safe
        // writes, leaving `resv` (entry 0's shared tail) alone; the kernel
        // does not read this entry before the tail covers it.
        unsafe {
            let e = self.base.as_ptr().add(at);
            std::ptr::write_unaligned(e.cast::<u64>(), addr);
            std::ptr::write_unaligned(e.add(8).cast::<u32>(), len);
            std::ptr::write_unaligned(e.add(12).cast::<u16>(), bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every entry pushed so far visible to the kernel.
    pub fn publish(&mut self) {
        // SAFETY: byte 14 of entry 0 is the ring's tail, a u16 the kernel
        // reads with an acquire load; the mapping is page-aligned, so the
        // address is 2-aligned, and it lives as long as `self`.
        let tail = unsafe { AtomicU16::from_ptr(self.base.as_ptr().add(14).cast()) };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: `base`/`bytes` are exactly the mapping made in `new`,
        // unmapped once; the kernel pinned its own reference to the pages
        // when the ring was registered, so this is safe even before the
        // io_uring instance is gone (the owner drops that first anyway).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_written_at_the_tail_and_the_tail_published_in_entry_0() {
        let mut r = BufRing::new(4).unwrap();
        assert_eq!(r.addr() % 4096, 0, "page-aligned");
        for bid in 0..6u16 {
            r.push(0x1000 + u64::from(bid), 100 + u32::from(bid), bid);
        }
        r.publish();
        // SAFETY: reading our own mapping of 64 bytes in a test.
        let bytes = unsafe { std::slice::from_raw_parts(r.base.as_ptr(), 64) };
        let u16_at = |o: usize| u16::from_ne_bytes([bytes[o], bytes[o + 1]]);
        // Six pushes into four entries: 4 and 5 overwrote 0 and 1.
        assert_eq!(u16_at(12), 4, "entry 0 holds bid 4");
        assert_eq!(u16_at(16 + 12), 5);
        assert_eq!(u16_at(32 + 12), 2);
        assert_eq!(u16_at(14), 6, "the tail lives in entry 0's resv");
        assert!(BufRing::new(3).is_err());
        assert!(BufRing::new(65536).is_err());
    }
}
