//! Real memory: every mmap, madvise and raw pointer of spillway lives in this module.
#![allow(unsafe_code)]
//!
//! spillway's point is that every byte its pools account is a real page in the right place
//! (ARCHITECTURE.md, "Invariants"). This module owns that memory and nothing else
//! in the crate touches a raw pointer:
//!
//! | type | holds | Spark counterpart |
//! |---|---|---|
//! | [`Mapping`] | one anonymous private `MAP_NORESERVE` mapping (the heap, the off-heap arena) | the JVM heap reservation, Tungsten's off-heap address space |
//! | [`Range`] | a cheap handle to `[offset, offset + len)` of a mapping (reserved, user, unified) | the regions of `UnifiedMemoryManager.getMaxMemory` |
//! | [`PageAllocator`] | exact-packing allocator over a range, with a bounded per-size pool | `HeapMemoryAllocator` (pools freed `long[]`s ≥ 1 MiB), `UnsafeMemoryAllocator` |
//! | [`MemoryBlock`] | an owned, disjoint piece of a range; frees itself on drop | `MemoryBlock` |
//! | [`UserArena`] | a per-task bump arena over the user range | "user memory": UDF objects outside the unified manager |
//! | [`process_rss_bytes`] | the process's resident set from `/proc` | executor metric `ProcessTreeJVMRSSMemory` |
//!
//! # Why the safe API is sound
//!
//! * A [`Mapping`] is address space only; no `&`/`&mut` to its bytes exists outside a
//!   [`MemoryBlock`] (or a [`UserArena`] slice cut from one).
//! * A [`PageAllocator`] *claims* its range on the mapping; a second allocator over an
//!   overlapping range is refused, and [`Range::touch`]/[`Range::release`] refuse a range that
//!   overlaps a claim. So the only writers of claimed bytes are the blocks, and the allocator hands
//!   out disjoint blocks (its free extents and live blocks never overlap, checked by
//!   `debug_assert!`s). A block gives `&mut [u8]` only through `&mut self`.
//! * The allocator returns pages to the kernel (`MADV_DONTNEED`) only for pages lying wholly in a
//!   free extent, under its lock, so no live block ever sees its contents vanish.
//! * Every byte of an anonymous mapping is initialised (the kernel zero-fills), and only `u8`s
//!   are ever written, so reading any byte as `u8` is defined.
//!
//! # Why not bumpalo for user memory
//!
//! bumpalo's chunks come from the global allocator (malloc), i.e. from outside the mapped heap.
//! Spark's user memory is part of the JVM heap (`(heap − 300 MiB) × (1 − spark.memory.fraction)`),
//! so a UDF's objects must live in — and be limited by — the user range of the heap mapping.
//! [`UserArena`] is a small bump arena whose chunks are [`MemoryBlock`]s from the user range's
//! [`PageAllocator`]; exhausting the range is a typed [`UserMemoryError::OutOfUserMemory`]
//! (Spark: `java.lang.OutOfMemoryError: Java heap space`), not an abort of the process.

mod alloc;
mod arena;
mod mapping;
mod resident;

pub use alloc::{
    AllocError, DEFAULT_POOL_LIMIT_BYTES, GRANULE_BYTES, MemoryBlock, POOL_MIN_BLOCK_BYTES,
    PageAllocator, ReleasePolicy,
};
pub use arena::{DEFAULT_CHUNK_BYTES, UserArena, UserMemoryError};
pub use mapping::{Mapping, Range, RegionError};
pub use resident::{os_page_size, process_rss_bytes, process_rss_bytes_fast};
