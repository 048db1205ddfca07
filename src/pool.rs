//! Fixed-capacity freelist pools.
//!
//! [`FreeList`] hands out slot indices from an index stack: `alloc` and
//! `free` are O(1), never allocate, lock or touch an atomic. [`Pool<T>`]
//! pairs a free list with all `capacity` objects, allocated once in one
//! contiguous boxed slice.
//!
//! Safety by type: a [`Slot`] is neither `Clone` nor `Copy`, and `free`
//! consumes it, so a slot cannot be freed twice. Each pool has a unique id
//! stamped into its slots, so a slot from another pool is refused instead of
//! corrupting this one. There is no `unsafe` here: a slot that outlives its
//! pool is just a dead index.

use std::sync::atomic::{AtomicU32, Ordering};

static NEXT_POOL_ID: AtomicU32 = AtomicU32::new(1);

/// A handle to one allocated object of a pool. Return it with `free`.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a slot that is not freed leaks a pool buffer until shutdown"]
pub struct Slot {
    index: u32,
    pool: u32,
}

impl Slot {
    /// Position of the object in the pool's storage (0..capacity).
    pub fn index(&self) -> usize {
        self.index as usize
    }
}

/// Pool statistics, as the seed's metrics list asks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    /// Objects the pool holds.
    pub capacity: usize,
    /// Objects handed out and not yet freed.
    pub in_use: usize,
    /// Most objects handed out at the same time.
    pub high_water: usize,
    /// Calls to `alloc` that found the pool empty.
    pub exhaustion_events: u64,
    /// Successful calls to `alloc`.
    pub total_allocations: u64,
    /// Bytes the pool holds for its whole life: objects plus the free list
    /// (allocated once at start; compare with a heap allocator's per-chunk
    /// headers and fragmentation).
    pub bytes: usize,
}

/// The index stack behind every pool.
#[derive(Debug)]
pub struct FreeList {
    id: u32,
    free: Box<[u32]>,
    top: usize,
    stats: PoolStats,
}

impl FreeList {
    /// A free list of `capacity` slots, all free. Capacity must fit in `u32`.
    pub fn new(capacity: usize) -> FreeList {
        assert!(capacity <= u32::MAX as usize, "pool capacity too large");
        // Pop order 0, 1, 2...: the stack holds indices in reverse.
        let free: Box<[u32]> = (0..capacity as u32).rev().collect();
        FreeList {
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            free,
            top: capacity,
            stats: PoolStats {
                capacity,
                bytes: capacity * std::mem::size_of::<u32>(),
                ..PoolStats::default()
            },
        }
    }

    /// Takes a free slot, or `None` (and counts an exhaustion event) when
    /// every slot is in use.
    #[inline]
    pub fn alloc(&mut self) -> Option<Slot> {
        if self.top == 0 {
            self.stats.exhaustion_events += 1;
            return None;
        }
        self.top -= 1;
        let index = self.free[self.top];
        let s = &mut self.stats;
        s.in_use += 1;
        s.total_allocations += 1;
        if s.in_use > s.high_water {
            s.high_water = s.in_use;
        }
        Some(Slot {
            index,
            pool: self.id,
        })
    }

    /// Returns a slot. Panics if the slot belongs to another pool: that is a
    /// programming error, never a consequence of network input.
    #[inline]
    pub fn free(&mut self, slot: Slot) {
        self.check(&slot);
        self.free[self.top] = slot.index;
        self.top += 1;
        self.stats.in_use -= 1;
    }

    /// True when `slot` was handed out by this free list.
    #[inline]
    pub fn owns(&self, slot: &Slot) -> bool {
        slot.pool == self.id
    }

    #[inline]
    fn check(&self, slot: &Slot) {
        assert!(
            self.owns(slot),
            "slot freed into a pool it does not belong to"
        );
    }

    /// Current statistics.
    pub fn stats(&self) -> PoolStats {
        self.stats
    }

    /// Counts `n` more bytes of storage that belong to this pool.
    pub(crate) fn add_bytes(&mut self, n: usize) {
        self.stats.bytes += n;
    }

    /// Free slots left.
    pub fn available(&self) -> usize {
        self.top
    }
}

/// A fixed-capacity pool of `T`, all allocated at construction.
#[derive(Debug)]
pub struct Pool<T> {
    list: FreeList,
    items: Box<[T]>,
}

impl<T> Pool<T> {
    /// Builds `capacity` objects with `init`, in one allocation.
    pub fn new(capacity: usize, mut init: impl FnMut() -> T) -> Pool<T> {
        let items: Box<[T]> = (0..capacity).map(|_| init()).collect();
        let mut list = FreeList::new(capacity);
        list.add_bytes(std::mem::size_of_val(&*items));
        Pool { list, items }
    }

    /// See [`FreeList::alloc`].
    #[inline]
    pub fn alloc(&mut self) -> Option<Slot> {
        self.list.alloc()
    }

    /// See [`FreeList::free`].
    #[inline]
    pub fn free(&mut self, slot: Slot) {
        self.list.free(slot)
    }

    /// The object behind an allocated slot.
    #[inline]
    pub fn get(&self, slot: &Slot) -> &T {
        self.list.check(slot);
        &self.items[slot.index()]
    }

    /// The object behind an allocated slot, mutably.
    #[inline]
    pub fn get_mut(&mut self, slot: &Slot) -> &mut T {
        self.list.check(slot);
        &mut self.items[slot.index()]
    }

    /// Current statistics.
    pub fn stats(&self) -> PoolStats {
        self.list.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_until_exhausted_then_none() {
        let mut p = Pool::new(3, || 0u64);
        let a = p.alloc().unwrap();
        let b = p.alloc().unwrap();
        let c = p.alloc().unwrap();
        assert!(p.alloc().is_none());
        assert!(p.alloc().is_none());
        let s = p.stats();
        assert_eq!((s.in_use, s.high_water, s.exhaustion_events), (3, 3, 2));
        assert_eq!(s.total_allocations, 3);
        for x in [a, b, c] {
            p.free(x);
        }
        assert_eq!(p.stats().in_use, 0);
    }

    #[test]
    fn free_in_any_order_and_reuse() {
        let mut p = Pool::new(4, || 0u32);
        let slots: Vec<Slot> = (0..4).map(|_| p.alloc().unwrap()).collect();
        for (i, s) in slots.iter().enumerate() {
            *p.get_mut(s) = i as u32 * 10;
        }
        let mut slots = slots;
        // Free 2, 0, 3, 1.
        let order = [2usize, 0, 1, 0];
        let mut freed = Vec::new();
        for i in order {
            let s = slots.remove(i);
            freed.push(s.index());
            p.free(s);
        }
        assert_eq!(p.stats().in_use, 0);
        // Reuse: the most recently freed slot comes back first (LIFO, cache-warm).
        let again = p.alloc().unwrap();
        assert_eq!(again.index(), *freed.last().unwrap());
        assert_eq!(*p.get(&again), again.index() as u32 * 10);
        p.free(again);
        // All four can be taken again, each index exactly once.
        let mut idx: Vec<usize> = (0..4).map(|_| p.alloc().unwrap().index()).collect();
        idx.sort();
        assert_eq!(idx, vec![0, 1, 2, 3]);
        assert_eq!(p.stats().high_water, 4);
    }

    #[test]
    fn drop_pool_with_slots_out_is_safe() {
        let mut p = Pool::new(2, || vec![1u8; 16]);
        let s = p.alloc().unwrap();
        drop(p);
        // The slot is now a dead index; nothing to free it into.
        assert_eq!(s.index(), 0);
    }

    #[test]
    #[should_panic(expected = "does not belong")]
    fn foreign_slot_is_refused() {
        let mut a = Pool::new(1, || 0u8);
        let mut b = Pool::new(1, || 0u8);
        let s = a.alloc().unwrap();
        b.free(s);
    }

    #[test]
    fn zero_capacity_pool_is_always_exhausted() {
        let mut p = Pool::new(0, || 0u8);
        assert!(p.alloc().is_none());
        assert_eq!(p.stats().exhaustion_events, 1);
    }

    #[test]
    fn storage_is_one_contiguous_allocation() {
        let mut p = Pool::new(8, || 0u64);
        let s0 = p.alloc().unwrap();
        let s1 = p.alloc().unwrap();
        let a = p.get(&s0) as *const u64 as usize;
        let b = p.get(&s1) as *const u64 as usize;
        assert_eq!(b - a, std::mem::size_of::<u64>());
        assert_eq!(
            p.stats().bytes,
            8 * 8 + 8 * 4,
            "objects plus the index stack"
        );
        p.free(s0);
        p.free(s1);
    }
}
