//! The bytes of a packet pool: one allocation the kernel reads and writes.
//!
//! Every pointer handed to a system call and every slice handed to safe
//! code is derived from the one base pointer taken when the slab is
//! created, so no per-slot reborrow of the whole slab ever invalidates a
//! pointer the kernel still holds.

use std::ptr::NonNull;

/// `len` zeroed bytes owned through one base pointer.
#[derive(Debug)]
pub struct Slab {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: a Slab owns its allocation exclusively, like a Box<[u8]>; access
// goes through `&mut self` (slices) or raw pointers used under `&mut` of the
// owning pool.
unsafe impl Send for Slab {}

impl Slab {
    /// Allocates `len` zeroed bytes.
    pub fn new(len: usize) -> Slab {
        let boxed: Box<[u8]> = vec![0u8; len].into_boxed_slice();
        let raw = Box::into_raw(boxed) as *mut u8;
        Slab {
            base: NonNull::new(raw).unwrap_or(NonNull::dangling()),
            len,
        }
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the slab holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, start: usize, len: usize) {
        assert!(
            start.checked_add(len).is_some_and(|end| end <= self.len),
            "slab range {start}+{len} out of {}",
            self.len
        );
    }

    /// `len` bytes at `start`, mutably.
    #[inline]
    pub fn slice_mut(&mut self, start: usize, len: usize) -> &mut [u8] {
        self.check(start, len);
        // SAFETY: the range is inside the allocation (checked), derived from
        // the base pointer, and `&mut self` makes this the only live access.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(start), len) }
    }

    /// A raw pointer to byte `start`, for a system call made while the
    /// caller holds `&mut` of the slab's owner.
    #[inline]
    pub fn ptr(&self, start: usize) -> *mut u8 {
        assert!(start <= self.len, "slab offset {start} out of {}", self.len);
        self.base.as_ptr().wrapping_add(start)
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        let slice = std::ptr::slice_from_raw_parts_mut(self.base.as_ptr(), self.len);
        // SAFETY: `base`/`len` came from `Box::into_raw` of a `Box<[u8]>` of
        // exactly this length, and are freed once, here. (A zero-length box
        // was allocated too; from_raw of it is also valid.)
        drop(unsafe { Box::from_raw(slice) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_and_pointers_share_one_base() {
        let mut s = Slab::new(128);
        s.slice_mut(64, 64).fill(7);
        assert_eq!(s.ptr(64) as usize - s.ptr(0) as usize, 64);
        assert!(s.slice_mut(0, 64).iter().all(|&b| b == 0));
        assert!(s.slice_mut(64, 64).iter().all(|&b| b == 7));
    }

    #[test]
    #[should_panic(expected = "out of")]
    fn out_of_range_panics() {
        Slab::new(8).slice_mut(4, 8);
    }
}
