//! [`PageAllocator`]: exact-packing allocator over a [`Range`], handing out [`MemoryBlock`]s.
//!
//! # Layout of the free space
//!
//! * Sizes are rounded up to [`GRANULE_BYTES`] (64 bytes, one cache line): a block's *footprint*
//!   is `round_up(size, 64)`, so at most 63 bytes per block are lost and the live blocks can fill
//!   the range to its last 64 bytes. (Spark's `HeapMemoryAllocator` rounds to 8 bytes, the
//!   `long[]` word, and adds a 16-byte array header; 64 bytes keeps blocks cache-line aligned
//!   relative to the range start and so avoids false sharing between tasks.) If the range length
//!   is not a multiple of 64, its last, shorter extent can still serve a request that fits in it.
//! * Free extents live in a `BTreeMap` by offset (coalescing with both neighbours on free) and a
//!   `BTreeSet` of `(len, offset)` for best fit (the smallest extent that fits, lowest offset
//!   among equals; the block is carved from the extent's start).
//!
//! # Pool
//!
//! Like Spark's `HeapMemoryAllocator` (which keeps freed `long[]`s of ≥ 1 MiB per size for
//! reuse), freed blocks whose footprint is at least [`POOL_MIN_BLOCK_BYTES`] (1 MiB) go to a
//! per-footprint LIFO pool while the pool holds at most its limit
//! ([`DEFAULT_POOL_LIMIT_BYTES`] = 32 MiB by default, configurable, 0 disables). An allocation
//! of a pooled footprint takes the most recently freed block: no syscall and no change to the
//! free extents (`free_bytes()` does not move). A block that does not fit under the limit goes
//! back to the free extents. An allocation that fits nowhere first drains the whole pool into the
//! free extents and retries before refusing, so the pool never causes a refusal;
//! [`PageAllocator::trim`] drains it on demand.
//!
//! # Returning memory
//!
//! Under [`ReleasePolicy::ReturnToKernel`] (the default) a block going back to the free extents
//! gives the kernel (`MADV_DONTNEED`) every OS page that now lies wholly inside its coalesced free
//! extent and overlaps the block, so RSS falls. Pooled blocks stay resident until reused or
//! trimmed. Under [`ReleasePolicy::Keep`] nothing is ever returned: a JVM keeps its heap.
//! `madvise` runs under the allocator's lock: otherwise another thread could be handed, and
//! write, those pages before they are zapped.
//!
//! # Zero-sized requests
//!
//! `allocate(0)` returns a zero-length block (Spark's allocator returns an empty `long[0]`); it
//! takes nothing from the range and freeing it does nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::mapping::{Range, RegionError};
use super::resident::os_page_size;

/// Allocation granularity: every footprint is a multiple of this (except a range's short tail).
pub const GRANULE_BYTES: u64 = 64;
/// Default bound on the bytes held by the pool of recently freed blocks.
pub const DEFAULT_POOL_LIMIT_BYTES: u64 = 32 << 20;
/// Smallest footprint that is pooled: Spark's `HeapMemoryAllocator.POOLING_THRESHOLD_BYTES`.
pub const POOL_MIN_BLOCK_BYTES: u64 = 1 << 20;

/// What happens to the pages of freed memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReleasePolicy {
    /// Whole free pages go back to the kernel (`MADV_DONTNEED`): RSS follows the model.
    #[default]
    ReturnToKernel,
    /// Never `madvise`: like a JVM, which keeps the heap it has touched.
    Keep,
}

/// A refused allocation: the range has no free extent large enough.
///
/// The allocator's callers (Spark's pools) already guarantee that accounted bytes fit the range,
/// so with `free_bytes >= requested` this is fragmentation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot allocate {requested} bytes in range '{range}' of {range_len} bytes: {free_bytes} bytes free, largest free extent {largest_free_extent} bytes"
)]
pub struct AllocError {
    /// Name of the range.
    pub range: &'static str,
    /// Requested bytes.
    pub requested: u64,
    /// Free bytes in total (the pool was drained before refusing).
    pub free_bytes: u64,
    /// Longest free extent.
    pub largest_free_extent: u64,
    /// Length of the range.
    pub range_len: u64,
}

/// Thread-safe allocator over a [`Range`]; cheap to clone (clones share the same state).
#[derive(Clone)]
pub struct PageAllocator {
    shared: Arc<Shared>,
}

struct Shared {
    range: Range,
    policy: ReleasePolicy,
    pool_limit_bytes: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Free extents: offset (within the range) → length.
    by_offset: BTreeMap<u64, u64>,
    /// The same extents as `(length, offset)`, for best fit.
    by_size: BTreeSet<(u64, u64)>,
    /// Footprint → offsets of pooled blocks, most recently freed last.
    pool: HashMap<u64, Vec<u64>>,
    allocated_bytes: u64,
    pooled_bytes: u64,
    free_bytes: u64,
}

impl PageAllocator {
    /// An allocator over `range` with the default pool (32 MiB).
    ///
    /// Claims the range on its mapping: [`RegionError::Claimed`] if another allocator already
    /// owns any of its bytes. The claim ends when the allocator and all its blocks are dropped.
    pub fn new(range: Range, policy: ReleasePolicy) -> Result<PageAllocator, RegionError> {
        PageAllocator::with_pool_limit(range, policy, DEFAULT_POOL_LIMIT_BYTES)
    }

    /// An allocator whose pool holds at most `pool_limit_bytes` (0 disables pooling).
    pub fn with_pool_limit(
        range: Range,
        policy: ReleasePolicy,
        pool_limit_bytes: u64,
    ) -> Result<PageAllocator, RegionError> {
        let start = range.offset();
        range
            .mapping()
            .claim(range.name(), start, start + range.len())?;
        let mut state = State::default();
        if !range.is_empty() {
            state.insert_extent(0, range.len());
            state.free_bytes = range.len();
        }
        let state = Mutex::new(state);
        Ok(PageAllocator {
            shared: Arc::new(Shared {
                range,
                policy,
                pool_limit_bytes,
                state,
            }),
        })
    }

    /// Allocates a block of exactly `size` bytes (footprint rounded up to [`GRANULE_BYTES`]).
    ///
    /// Contents are unspecified (zero or what an earlier block wrote); the caller writes them.
    pub fn allocate(&self, size: u64) -> Result<MemoryBlock, AllocError> {
        let shared = &self.shared;
        if size == 0 {
            return Ok(MemoryBlock::new(Arc::clone(shared), 0, 0, 0));
        }
        let mut st = shared.lock();
        let found = match size.checked_next_multiple_of(GRANULE_BYTES) {
            None => None,
            Some(fp) => st.take_pooled(fp).map(|off| (off, fp)).or_else(|| {
                let len = shared.range.len();
                st.take_extent(fp, size, len).or_else(|| {
                    if st.pooled_bytes == 0 {
                        return None;
                    }
                    shared.drain_pool(&mut st);
                    st.take_extent(fp, size, len)
                })
            }),
        };
        shared.check_sums(&st);
        match found {
            Some((offset, footprint)) => {
                drop(st);
                Ok(MemoryBlock::new(
                    Arc::clone(shared),
                    offset,
                    size,
                    footprint,
                ))
            }
            None => Err(AllocError {
                range: shared.range.name(),
                requested: size,
                free_bytes: st.free_bytes,
                largest_free_extent: st.largest_free_extent(),
                range_len: shared.range.len(),
            }),
        }
    }

    /// Empties the pool into the free extents (returning its pages to the kernel under
    /// [`ReleasePolicy::ReturnToKernel`]).
    pub fn trim(&self) {
        let mut st = self.shared.lock();
        self.shared.drain_pool(&mut st);
        self.shared.check_sums(&st);
    }

    /// Bytes in live blocks (footprints: sizes rounded up to [`GRANULE_BYTES`]).
    pub fn allocated_bytes(&self) -> u64 {
        self.shared.lock().allocated_bytes
    }

    /// Bytes held by the pool of recently freed blocks.
    pub fn pooled_bytes(&self) -> u64 {
        self.shared.lock().pooled_bytes
    }

    /// Bytes in free extents. `allocated + pooled + free == len()` at all times.
    pub fn free_bytes(&self) -> u64 {
        self.shared.lock().free_bytes
    }

    /// Length of the longest free extent (pooled blocks not counted).
    pub fn largest_free_extent(&self) -> u64 {
        self.shared.lock().largest_free_extent()
    }

    /// Length of the range.
    pub fn len(&self) -> u64 {
        self.shared.range.len()
    }

    /// True if the range is empty.
    pub fn is_empty(&self) -> bool {
        self.shared.range.is_empty()
    }

    /// The range this allocator carves.
    pub fn range(&self) -> &Range {
        &self.shared.range
    }

    /// The release policy.
    pub fn policy(&self) -> ReleasePolicy {
        self.shared.policy
    }

    /// The pool bound in bytes.
    pub fn pool_limit_bytes(&self) -> u64 {
        self.shared.pool_limit_bytes
    }

    /// Resident bytes of the whole range (see [`Range::resident_bytes`]).
    pub fn resident_bytes(&self) -> u64 {
        self.shared.range.resident_bytes()
    }

    /// Free extents as `(offset, len)`, in offset order (tests and diagnostics).
    #[cfg(test)]
    fn extents(&self) -> Vec<(u64, u64)> {
        self.shared
            .lock()
            .by_offset
            .iter()
            .map(|(&o, &l)| (o, l))
            .collect()
    }

    /// Full O(n) check: the two extent indexes agree, extents are disjoint and non-adjacent
    /// (coalesced), pooled blocks lie outside them, and the counters add up.
    #[cfg(test)]
    fn check_invariants(&self) {
        let st = self.shared.lock();
        assert_eq!(st.by_offset.len(), st.by_size.len());
        let mut prev_end = None;
        let mut free = 0;
        for (&off, &len) in &st.by_offset {
            assert!(len > 0 && st.by_size.contains(&(len, off)));
            if let Some(end) = prev_end {
                assert!(
                    end < off,
                    "extent at {off} touches or overlaps one ending at {end}"
                );
            }
            prev_end = Some(off + len);
            free += len;
        }
        assert!(prev_end.unwrap_or(0) <= self.len());
        assert_eq!(free, st.free_bytes);
        let mut pooled = 0;
        for (&fp, offs) in &st.pool {
            for &off in offs {
                pooled += fp;
                let before = st.by_offset.range(..=off).next_back();
                assert!(
                    before.is_none_or(|(&o, &l)| o + l <= off),
                    "pooled {off} in an extent"
                );
                let after = st.by_offset.range(off..).next();
                assert!(
                    after.is_none_or(|(&o, _)| off + fp <= o),
                    "pooled {off} in an extent"
                );
            }
        }
        assert_eq!(pooled, st.pooled_bytes);
        assert_eq!(
            st.allocated_bytes + st.pooled_bytes + st.free_bytes,
            self.len()
        );
    }
}

impl fmt::Debug for PageAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("PageAllocator")
            .field("range", &self.shared.range)
            .field("policy", &self.shared.policy)
            .field("allocated_bytes", &st.allocated_bytes)
            .field("pooled_bytes", &st.pooled_bytes)
            .field("free_bytes", &st.free_bytes)
            .field("extents", &st.by_offset.len())
            .finish()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock (a failed debug_assert) must not turn every later drop
        // of a block into a second panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_sums(&self, st: &State) {
        debug_assert_eq!(
            st.allocated_bytes + st.pooled_bytes + st.free_bytes,
            self.range.len(),
            "range '{}': allocated {} + pooled {} + free {} != len {}",
            self.range.name(),
            st.allocated_bytes,
            st.pooled_bytes,
            st.free_bytes,
            self.range.len()
        );
    }

    /// Called by a dropped block.
    fn free(&self, offset: u64, footprint: u64) {
        let mut st = self.lock();
        debug_assert!(
            st.allocated_bytes >= footprint,
            "freeing {footprint} bytes at {offset} with only {} allocated",
            st.allocated_bytes
        );
        st.allocated_bytes -= footprint;
        let poolable = footprint >= POOL_MIN_BLOCK_BYTES && footprint.is_multiple_of(GRANULE_BYTES);
        if poolable && st.pooled_bytes + footprint <= self.pool_limit_bytes {
            st.pool.entry(footprint).or_default().push(offset);
            st.pooled_bytes += footprint;
        } else {
            self.return_extent(&mut st, offset, footprint);
        }
        self.check_sums(&st);
    }

    fn drain_pool(&self, st: &mut State) {
        let pool = std::mem::take(&mut st.pool);
        for (footprint, offsets) in pool {
            for offset in offsets {
                st.pooled_bytes -= footprint;
                self.return_extent(st, offset, footprint);
            }
        }
        debug_assert_eq!(
            st.pooled_bytes, 0,
            "pool drained but {} bytes pooled",
            st.pooled_bytes
        );
    }

    /// Puts `[offset, offset + footprint)` back into the free extents, coalescing, and under
    /// ReturnToKernel gives back the whole pages of the merged extent that overlap it.
    fn return_extent(&self, st: &mut State, offset: u64, footprint: u64) {
        let (start, end) = st.free_extent(offset, footprint);
        st.free_bytes += footprint;
        if self.policy == ReleasePolicy::ReturnToKernel {
            // Mapping offsets; only pages that overlap the freed block can have become wholly
            // free now (the rest of the extent was given back when it was freed).
            let base = self.range.offset();
            let page = os_page_size();
            let lo = (base + start).max((base + offset) / page * page);
            let hi = (base + end).min((base + offset + footprint).next_multiple_of(page));
            // No block covers [start, end) (a free extent) and the lock is held, so no
            // reference can observe those pages reverting to zero.
            self.range.mapping().dontneed_whole_pages(lo, hi);
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let start = self.range.offset();
        self.range
            .mapping()
            .unclaim(start, start + self.range.len());
    }
}

impl State {
    fn insert_extent(&mut self, offset: u64, len: u64) {
        self.by_offset.insert(offset, len);
        self.by_size.insert((len, offset));
    }

    fn remove_extent(&mut self, offset: u64, len: u64) {
        self.by_offset.remove(&offset);
        self.by_size.remove(&(len, offset));
    }

    fn largest_free_extent(&self) -> u64 {
        self.by_size.last().map_or(0, |&(len, _)| len)
    }

    fn take_pooled(&mut self, footprint: u64) -> Option<u64> {
        let offset = self.pool.get_mut(&footprint)?.pop()?;
        self.pooled_bytes -= footprint;
        self.allocated_bytes += footprint;
        Some(offset)
    }

    /// Best fit for `footprint`; failing that, the range's tail extent if it is shorter than a
    /// granule multiple but still holds `size`. Returns `(offset, footprint taken)`.
    fn take_extent(&mut self, footprint: u64, size: u64, range_len: u64) -> Option<(u64, u64)> {
        let (offset, len, taken) =
            if let Some(&(len, offset)) = self.by_size.range((footprint, 0)..).next() {
                (offset, len, footprint)
            } else {
                let (&offset, &len) = self.by_offset.last_key_value()?;
                if offset + len != range_len || len < size {
                    return None;
                }
                (offset, len, len)
            };
        self.remove_extent(offset, len);
        if len > taken {
            self.insert_extent(offset + taken, len - taken);
        }
        self.free_bytes -= taken;
        self.allocated_bytes += taken;
        Some((offset, taken))
    }

    /// Inserts a freed piece, merging with free neighbours; returns the merged extent.
    fn free_extent(&mut self, offset: u64, len: u64) -> (u64, u64) {
        let (mut start, mut end) = (offset, offset + len);
        if let Some((&p_off, &p_len)) = self.by_offset.range(..offset).next_back() {
            debug_assert!(
                p_off + p_len <= offset,
                "freed [{offset}, {end}) overlaps free extent [{p_off}, {})",
                p_off + p_len
            );
            if p_off + p_len == offset {
                self.remove_extent(p_off, p_len);
                start = p_off;
            }
        }
        if let Some((&n_off, &n_len)) = self.by_offset.range(offset..).next() {
            debug_assert!(
                end <= n_off,
                "freed [{offset}, {end}) overlaps free extent [{n_off}, {})",
                n_off + n_len
            );
            if n_off == end {
                self.remove_extent(n_off, n_len);
                end = n_off + n_len;
            }
        }
        self.insert_extent(start, end - start);
        (start, end)
    }
}

/// An owned, disjoint piece of a [`PageAllocator`]'s range; freed back to it on drop.
///
/// Holds an `Arc` to the allocator's state (and so to the mapping): the memory stays mapped while
/// the block lives, even if the allocator handle is dropped first.
pub struct MemoryBlock {
    shared: Arc<Shared>,
    ptr: *mut u8,
    offset: u64,
    len: u64,
    footprint: u64,
}

// SAFETY: a MemoryBlock is the unique owner of bytes [offset, offset + footprint) of its range
// (the allocator never hands out overlapping pieces while it lives), like a Box<[u8]>; the
// pointer stays valid on any thread because the block keeps the mapping alive. Freeing goes
// through the allocator's Mutex.
unsafe impl Send for MemoryBlock {}
// SAFETY: `&MemoryBlock` only gives `&[u8]` (shared reads); writes need `&mut MemoryBlock`.
unsafe impl Sync for MemoryBlock {}

impl MemoryBlock {
    fn new(shared: Arc<Shared>, offset: u64, len: u64, footprint: u64) -> MemoryBlock {
        let ptr = shared
            .range
            .mapping()
            .ptr_at(shared.range.offset() + offset);
        MemoryBlock {
            shared,
            ptr,
            offset,
            len,
            footprint,
        }
    }

    /// Length in bytes (as requested).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for a zero-length block.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Offset within the allocator's range.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes this block takes from the range (`len` rounded up to [`GRANULE_BYTES`]).
    pub fn footprint_bytes(&self) -> u64 {
        self.footprint
    }

    /// Address of the first byte, for diagnostics.
    pub fn base_addr(&self) -> usize {
        self.ptr as usize
    }

    /// Raw pointer to the first byte, for [`UserArena`](super::UserArena), which carves
    /// disjoint slices out of a block it owns.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// The bytes, read-only.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: [ptr, ptr + len) lies inside the live mapping (the block holds it through
        // `shared`) and is owned by this block alone: the allocator never hands out overlapping
        // blocks, pooled or free pieces are not blocks, and Range::touch/release refuse claimed
        // bytes. Writes need `&mut self`, so no `&mut` alias exists while this `&` lives. All
        // bytes are initialised (zero-filled by the kernel or written as u8). For len 0 the
        // pointer is non-null, which is all an empty slice needs.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len as usize) }
    }

    /// The bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` makes this the only reference to these bytes
        // for its lifetime, and no other block's bytes overlap them.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len as usize) }
    }

    /// Writes `byte` to every byte of the block (real data, so the pages become resident).
    pub fn fill(&mut self, byte: u8) {
        self.as_mut_slice().fill(byte);
    }

    /// Makes every OS page of the block resident by writing one zero byte into each (the block's
    /// first byte and each page boundary inside it), as a JVM's zeroing of a new `long[]` does.
    /// Only the block's own bytes are written.
    pub fn touch(&mut self) {
        let page = super::resident::os_page_size() as usize;
        let base = self.base_addr();
        let bytes = self.as_mut_slice();
        if bytes.is_empty() {
            return;
        }
        bytes[0] = 0;
        let first_boundary = (page - base % page) % page;
        let mut i = if first_boundary == 0 {
            page
        } else {
            first_boundary
        };
        while i < bytes.len() {
            bytes[i] = 0;
            i += page;
        }
    }
}

impl Drop for MemoryBlock {
    fn drop(&mut self) {
        if self.footprint > 0 {
            self.shared.free(self.offset, self.footprint);
        }
    }
}

impl fmt::Debug for MemoryBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBlock")
            .field("range", &self.shared.range.name())
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("footprint", &self.footprint)
            .finish()
    }
}

#[cfg(test)]
mod tests;
