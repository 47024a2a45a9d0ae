//! [`Mapping`] (one anonymous private mapping, unmapped on drop) and [`Range`] (a slice of one).

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use super::resident::os_page_size;

/// Errors of the region boundary: mapping memory and carving it into ranges.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    /// The kernel refused the mapping (e.g. `ENOMEM` under `vm.overcommit_memory=2`).
    #[error("cannot map {len_bytes} bytes of anonymous memory for '{name}': {source}")]
    MapFailed {
        /// Name of the mapping (`heap`, `off-heap`).
        name: &'static str,
        /// Requested length.
        len_bytes: u64,
        /// The OS error.
        source: std::io::Error,
    },
    /// A sub-range does not lie inside its parent range.
    #[error(
        "sub-range at offset {offset} of {len_bytes} bytes is outside range '{name}' of {range_len_bytes} bytes"
    )]
    OutOfBounds {
        /// Name of the parent range.
        name: &'static str,
        /// Requested offset within the parent.
        offset: u64,
        /// Requested length.
        len_bytes: u64,
        /// Length of the parent.
        range_len_bytes: u64,
    },
    /// The bytes are owned by a [`PageAllocator`](super::PageAllocator): they may be in live
    /// blocks, so nothing else may write, release or hand them out.
    #[error(
        "range '{name}' (mapping offset {offset}, {len_bytes} bytes) overlaps mapping offset {claimed_offset} ({claimed_len_bytes} bytes) owned by a page allocator"
    )]
    Claimed {
        /// Name of the range that was refused.
        name: &'static str,
        /// Its offset within the mapping.
        offset: u64,
        /// Its length.
        len_bytes: u64,
        /// Offset within the mapping of the claimed range it overlaps.
        claimed_offset: u64,
        /// Length of that claimed range.
        claimed_len_bytes: u64,
    },
}

/// One anonymous private mapping (`MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE`), unmapped on
/// drop and shared through `Arc`.
///
/// The heap (`spark.executor.memory` bytes) is one mapping, the off-heap arena
/// (`spark.memory.offHeap.size`) another. `MAP_NORESERVE` means the mapping costs address space
/// only: pages become real (resident) when first written, exactly like an untouched JVM heap.
///
/// The mapping itself is a `memmap2::MmapRaw` (memmap2 makes the `mmap`/`munmap` calls and checks
/// their results); spillway adds the claim list and the residency queries. `MmapRaw` hands out
/// raw pointers from `&self`, which is what a shared heap needs: its bytes are reached only
/// through [`MemoryBlock`](super::MemoryBlock)s (exclusive `&mut self` access to disjoint pieces)
/// or through [`Range::touch`]/[`Range::release`], which hold the claim lock and refuse claimed
/// bytes; every other `&self` method is a system call that does not read the bytes from Rust
/// (`mincore`, `madvise` on free or unclaimed pages). So sharing a `Mapping` across threads is
/// sound, and `Send`/`Sync` follow from its fields.
///
/// Transparent huge pages are refused for the mapping (`MADV_NOHUGEPAGE`, best effort): the
/// model's residency is counted in OS pages, a touched reserved range and a written page must
/// cost exactly their bytes, and `MADV_DONTNEED` of a free 4 KiB page must give it back. Under
/// `transparent_hugepage=always` the kernel would otherwise back the heap with 2 MiB pages and
/// RSS would no longer follow the pools.
pub struct Mapping {
    /// `None` for the empty mapping (`mmap` refuses a zero length).
    map: Option<memmap2::MmapRaw>,
    len: u64,
    name: &'static str,
    /// `[start, end)` mapping offsets owned by page allocators; see the module doc.
    claims: Mutex<Vec<(u64, u64)>>,
}

impl Mapping {
    /// Maps `len` bytes of anonymous private memory, reserving no swap.
    ///
    /// `len == 0` gives an empty mapping (no syscall) whose ranges hand out nothing. A refusal by
    /// the kernel is [`RegionError::MapFailed`] with the length and the OS error.
    pub fn anonymous(len: u64, name: &'static str) -> Result<Arc<Mapping>, RegionError> {
        let claims = Mutex::new(Vec::new());
        if len == 0 {
            return Ok(Arc::new(Mapping {
                map: None,
                len,
                name,
                claims,
            }));
        }
        let map_failed = |source| RegionError::MapFailed {
            name,
            len_bytes: len,
            source,
        };
        let len_usize = usize::try_from(len)
            .map_err(|_| map_failed(std::io::Error::from_raw_os_error(libc::ENOMEM)))?;
        let map = memmap2::MmapOptions::new()
            .len(len_usize)
            .no_reserve_swap()
            .map_anon()
            .map_err(map_failed)?;
        // Best effort: a kernel built without transparent huge pages has none to refuse and
        // answers EINVAL, which changes nothing for us.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::NoHugePage);
        Ok(Arc::new(Mapping {
            map: Some(memmap2::MmapRaw::from(map)),
            len,
            name,
            claims,
        }))
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for the empty mapping.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Name given at creation (`heap`, `off-heap`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Address of the first byte, for diagnostics.
    pub fn base_addr(&self) -> usize {
        self.base_ptr() as usize
    }

    /// The first byte's address (dangling, never dereferenced, for the empty mapping).
    fn base_ptr(&self) -> *mut u8 {
        self.map
            .as_ref()
            .map_or(std::ptr::NonNull::dangling().as_ptr(), |m| m.as_mut_ptr())
    }

    /// The whole mapping as a [`Range`] named like the mapping.
    pub fn whole(self: &Arc<Self>) -> Range {
        Range {
            mapping: Arc::clone(self),
            offset: 0,
            len: self.len,
            name: self.name,
        }
    }

    /// Pointer to mapping offset `offset` (`offset <= len`). Dereferencing it is the caller's
    /// business (and needs a claim or a block).
    pub(crate) fn ptr_at(&self, offset: u64) -> *mut u8 {
        debug_assert!(
            offset <= self.len,
            "offset {offset} beyond mapping of {} bytes",
            self.len
        );
        // `wrapping_add` keeps this a safe function; in bounds it is the same as `add`.
        self.base_ptr().wrapping_add(offset as usize)
    }

    /// Records `[start, end)` as owned by a page allocator, refusing an overlap with an existing
    /// claim (two allocators over the same bytes would hand out aliasing blocks).
    pub(crate) fn claim(
        &self,
        name: &'static str,
        start: u64,
        end: u64,
    ) -> Result<(), RegionError> {
        let mut claims = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(err) = overlap_error(&claims, name, start, end) {
            return Err(err);
        }
        claims.push((start, end));
        Ok(())
    }

    /// Drops the claim `[start, end)` made by [`Mapping::claim`].
    pub(crate) fn unclaim(&self, start: u64, end: u64) {
        let mut claims = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = claims.iter().position(|&c| c == (start, end)) {
            claims.swap_remove(i);
        }
    }

    /// `MADV_DONTNEED` on the whole OS pages inside mapping offsets `[start, end)`.
    ///
    /// Callers guarantee no live reference covers those pages (they are free or unclaimed).
    pub(crate) fn dontneed_whole_pages(&self, start: u64, end: u64) {
        let page = os_page_size();
        let lo = start.next_multiple_of(page);
        let hi = end.min(self.len.next_multiple_of(page)) / page * page;
        if lo >= hi {
            return;
        }
        let Some(map) = &self.map else {
            return;
        };
        // SAFETY: [lo, hi) is page-aligned and inside this live mapping (hi is at most the
        // page-rounded mapping length, which the kernel mapped). The caller guarantees that no
        // Rust reference covers these pages, so their contents reverting to zero is not observed
        // by anyone holding a reference.
        let rc = unsafe {
            map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                lo as usize,
                (hi - lo) as usize,
            )
        };
        debug_assert!(rc.is_ok(), "madvise(DONTNEED) [{lo}, {hi}): {rc:?}");
    }

    /// Bytes of mapping offsets `[start, end)` that are resident, via `mincore`: each resident
    /// OS page contributes the bytes it shares with `[start, end)`.
    pub(crate) fn resident_between(&self, start: u64, end: u64) -> u64 {
        if start >= end {
            return 0;
        }
        let page = os_page_size();
        // Query at most this many pages per call to bound the status vector (4 GiB of 4 KiB pages).
        const WINDOW_PAGES: u64 = 1 << 20;
        let first = start / page * page;
        let last = end.next_multiple_of(page);
        let mut vec = vec![0u8; ((last - first) / page).min(WINDOW_PAGES) as usize];
        let mut resident = 0;
        let mut at = first;
        while at < last {
            let pages = ((last - at) / page).min(WINDOW_PAGES);
            // SAFETY: [at, at + pages * page) is page-aligned and inside this live mapping (the
            // kernel maps the page-rounded length); `vec` has room for one status byte per page.
            // mincore does not access the pages' contents.
            let rc = unsafe {
                libc::mincore(
                    self.ptr_at(at).cast(),
                    (pages * page) as usize,
                    vec.as_mut_ptr(),
                )
            };
            assert_eq!(
                rc,
                0,
                "mincore over [{at}, +{}) of mapping '{}' failed: {}",
                pages * page,
                self.name,
                std::io::Error::last_os_error()
            );
            for (i, status) in vec[..pages as usize].iter().enumerate() {
                if status & 1 == 1 {
                    let p = at + i as u64 * page;
                    resident += (p + page).min(end) - p.max(start);
                }
            }
            at += pages * page;
        }
        resident
    }
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping")
            .field("name", &self.name)
            .field("len", &self.len)
            .field("base_addr", &format_args!("{:#x}", self.base_addr()))
            .finish()
    }
}

fn overlap_error(
    claims: &[(u64, u64)],
    name: &'static str,
    start: u64,
    end: u64,
) -> Option<RegionError> {
    claims
        .iter()
        .find(|&&(s, e)| s < end && start < e)
        .map(|&(s, e)| RegionError::Claimed {
            name,
            offset: start,
            len_bytes: end - start,
            claimed_offset: s,
            claimed_len_bytes: e - s,
        })
}

/// A cheap handle to `[offset, offset + len)` of a [`Mapping`] (holds the `Arc<Mapping>`).
///
/// Ranges are how the layout carves the heap into reserved / user / unified memory. A range is
/// only a description: handing out its bytes is the job of a [`PageAllocator`](super::PageAllocator).
#[derive(Clone)]
pub struct Range {
    mapping: Arc<Mapping>,
    offset: u64,
    len: u64,
    name: &'static str,
}

impl Range {
    /// Offset of the first byte within the mapping.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty range.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Name of the range (the mapping's name unless renamed with [`Range::with_name`]).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The same bytes under another name (`reserved`, `user`, `unified`).
    pub fn with_name(mut self, name: &'static str) -> Range {
        self.name = name;
        self
    }

    /// The mapping this range belongs to.
    pub fn mapping(&self) -> &Arc<Mapping> {
        &self.mapping
    }

    /// Address of the first byte, for diagnostics.
    pub fn base_addr(&self) -> usize {
        self.mapping.base_addr() + self.offset as usize
    }

    /// `[offset, offset + len)` of this range, keeping its name.
    ///
    /// # Panics
    /// If the sub-range is not inside this range (a layout bug); see
    /// [`Range::checked_sub_range`] for the fallible form.
    pub fn sub_range(&self, offset: u64, len: u64) -> Range {
        self.checked_sub_range(offset, len)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `[offset, offset + len)` of this range, or [`RegionError::OutOfBounds`].
    pub fn checked_sub_range(&self, offset: u64, len: u64) -> Result<Range, RegionError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(Range {
                mapping: Arc::clone(&self.mapping),
                offset: self.offset + offset,
                len,
                name: self.name,
            }),
            _ => Err(RegionError::OutOfBounds {
                name: self.name,
                offset,
                len_bytes: len,
                range_len_bytes: self.len,
            }),
        }
    }

    fn end(&self) -> u64 {
        self.offset + self.len
    }

    /// Writes a non-zero byte (`0xA5`) to every OS page of the range (at the page start, or at
    /// the range start for a partial first page), so the whole range becomes resident as a
    /// JVM's pre-touched heap (`-XX:+AlwaysPreTouch`) would. Spark's 300 MiB reserved memory is
    /// touched this way at start-up. A non-zero byte keeps the kernel from treating the page as
    /// a zero page it may reclaim.
    ///
    /// Refused with [`RegionError::Claimed`] if the range overlaps a page allocator's range,
    /// whose bytes may be in live blocks.
    pub fn touch(&self) -> Result<(), RegionError> {
        let claims = self
            .mapping
            .claims
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(err) = overlap_error(&claims, self.name, self.offset, self.end()) {
            return Err(err);
        }
        let page = os_page_size();
        let mut at = self.offset;
        while at < self.end() {
            // SAFETY: `at` is inside this range, hence inside the live mapping. The range
            // overlaps no claim and the claim lock is held, so no MemoryBlock (the only holder
            // of references into the mapping) covers this byte, and no allocator can claim it
            // until we are done. A volatile write keeps the store from being elided.
            unsafe { self.mapping.ptr_at(at).write_volatile(0xA5) };
            at = (at / page + 1) * page;
        }
        drop(claims);
        Ok(())
    }

    /// Bytes of this range that are resident, via `mincore` over the page-aligned cover of the
    /// range. Pages are counted by their overlap with the range: a resident partial edge page
    /// contributes only the bytes of it that lie inside the range, so the result is at most
    /// `len()` and adjacent ranges' residencies add up to their union's.
    pub fn resident_bytes(&self) -> u64 {
        self.mapping.resident_between(self.offset, self.end())
    }

    /// Gives the whole OS pages inside the range back to the kernel (`MADV_DONTNEED`); partial
    /// edge pages are left alone (their other part belongs to a neighbour). The bytes read as
    /// zero afterwards.
    ///
    /// Refused with [`RegionError::Claimed`] if the range overlaps a page allocator's range: an
    /// allocator releases its own free pages (see [`ReleasePolicy`](super::ReleasePolicy)).
    pub fn release(&self) -> Result<(), RegionError> {
        let claims = self
            .mapping
            .claims
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(err) = overlap_error(&claims, self.name, self.offset, self.end()) {
            return Err(err);
        }
        self.mapping.dontneed_whole_pages(self.offset, self.end());
        drop(claims);
        Ok(())
    }
}

impl fmt::Debug for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Range")
            .field("name", &self.name)
            .field("mapping", &self.mapping.name)
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn touch_makes_resident_and_release_gives_back() {
        let map = Mapping::anonymous(64 * MIB, "test-touch").unwrap();
        let range = map.whole();
        let page = os_page_size();
        assert!(
            range.resident_bytes() <= 2 * page,
            "fresh mapping resident {}",
            range.resident_bytes()
        );
        range.touch().unwrap();
        let resident = range.resident_bytes();
        assert!(
            resident + 2 * page >= 64 * MIB && resident <= 64 * MIB,
            "after touch: resident {resident} bytes of {} bytes",
            64 * MIB
        );
        range.release().unwrap();
        assert!(
            range.resident_bytes() <= 2 * page,
            "after release: {}",
            range.resident_bytes()
        );
    }

    #[test]
    fn partial_pages_count_by_overlap() {
        let page = os_page_size();
        let map = Mapping::anonymous(4 * page, "test-edges").unwrap();
        // Straddles pages 0..=2: 100 bytes of page 0, all of page 1, 50 bytes of page 2.
        let range = map.whole().sub_range(page - 100, page + 150);
        range.touch().unwrap();
        assert_eq!(range.resident_bytes(), page + 150);
        assert_eq!(map.whole().resident_bytes(), 3 * page);
        // Release leaves the partial edge pages (they belong to neighbours too).
        range.release().unwrap();
        assert_eq!(map.whole().resident_bytes(), 2 * page);
        assert_eq!(range.resident_bytes(), 150);
    }

    #[test]
    fn sub_range_bounds_are_checked() {
        let map = Mapping::anonymous(MIB, "test-bounds").unwrap();
        let whole = map.whole().with_name("user");
        let sub = whole.sub_range(1000, 2000);
        assert_eq!((sub.offset(), sub.len(), sub.name()), (1000, 2000, "user"));
        let nested = sub.sub_range(2000, 0);
        assert_eq!(nested.offset(), 3000);
        let err = sub.checked_sub_range(1500, 501).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sub-range at offset 1500 of 501 bytes is outside range 'user' of 2000 bytes"
        );
        assert!(sub.checked_sub_range(u64::MAX, 2).is_err());
        let panicked = std::panic::catch_unwind(|| whole.sub_range(MIB, 1));
        assert!(panicked.is_err());
    }

    #[test]
    fn empty_mapping_hands_out_nothing() {
        let map = Mapping::anonymous(0, "empty").unwrap();
        let range = map.whole();
        assert!(range.is_empty() && map.is_empty());
        range.touch().unwrap();
        range.release().unwrap();
        assert_eq!(range.resident_bytes(), 0);
        assert!(range.checked_sub_range(0, 1).is_err());
    }

    #[test]
    fn refused_mapping_is_a_typed_error() {
        // More address space than x86-64/aarch64 user space has: mmap must refuse.
        let err = Mapping::anonymous(1 << 62, "huge").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(
                "cannot map 4611686018427387904 bytes of anonymous memory for 'huge': "
            ),
            "{text}"
        );
        assert!(matches!(err, RegionError::MapFailed { len_bytes, .. } if len_bytes == 1 << 62));
    }
}
