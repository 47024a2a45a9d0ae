//! [`UserArena`]: a per-task bump arena over the shared user-memory range.
//!
//! Spark's *user memory* (`(heap − 300 MiB) × (1 − spark.memory.fraction)`) holds UDF objects
//! and user data structures outside the unified memory manager: nothing accounts it, it simply
//! runs out, and the JVM then throws `java.lang.OutOfMemoryError: Java heap space`. All tasks of
//! the executor share it. Here each task gets a `UserArena` whose chunks are [`MemoryBlock`]s
//! from the user range's [`PageAllocator`]; dropping the arena (task end) returns every chunk.
//! Why not bumpalo: see the [module doc](super).

use std::cell::RefCell;

use super::alloc::{MemoryBlock, PageAllocator};

/// Default chunk size: a chunk is `max(chunk_bytes, request)` bytes.
pub const DEFAULT_CHUNK_BYTES: u64 = 1 << 20;

/// The user range cannot supply memory: Spark's `java.lang.OutOfMemoryError: Java heap space`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UserMemoryError {
    /// No chunk of the needed size is free in the user range.
    #[error(
        "java.lang.OutOfMemoryError: Java heap space (user memory: requested {requested} bytes, task holds {task_used} bytes, {range_free} of {range_len} bytes free in the user range)"
    )]
    OutOfUserMemory {
        /// Bytes the task asked for.
        requested: u64,
        /// Bytes the task's arena holds in chunks.
        task_used: u64,
        /// Free bytes in the user range (all tasks).
        range_free: u64,
        /// Length of the user range.
        range_len: u64,
    },
}

/// A per-task bump arena; `Send`, not `Sync` (one task uses it at a time).
pub struct UserArena {
    allocator: PageAllocator,
    chunk_bytes: u64,
    inner: RefCell<Inner>,
}

struct Inner {
    /// Chunks in allocation order; bumping happens in the last one.
    chunks: Vec<MemoryBlock>,
    /// Bytes used of the last chunk.
    used_in_last: u64,
    /// Bytes handed out by `alloc_bytes`.
    allocated_bytes: u64,
    /// Bytes held in chunks.
    chunk_total_bytes: u64,
}

impl UserArena {
    /// An arena taking [`DEFAULT_CHUNK_BYTES`] chunks from `allocator` (the user range's).
    pub fn new(allocator: &PageAllocator) -> UserArena {
        UserArena::with_chunk_bytes(allocator, DEFAULT_CHUNK_BYTES)
    }

    /// An arena taking chunks of `max(chunk_bytes, request)` bytes (`chunk_bytes` at least 1).
    pub fn with_chunk_bytes(allocator: &PageAllocator, chunk_bytes: u64) -> UserArena {
        UserArena {
            allocator: allocator.clone(),
            chunk_bytes: chunk_bytes.max(1),
            inner: RefCell::new(Inner {
                chunks: Vec::new(),
                used_in_last: 0,
                allocated_bytes: 0,
                chunk_total_bytes: 0,
            }),
        }
    }

    /// `n` bytes of the user range, for the caller to write (contents unspecified: zero or left
    /// over from an earlier task). Slices never overlap and live as long as the arena borrow.
    ///
    /// When the current chunk is too small a new chunk of `max(chunk_bytes, n)` is taken (the
    /// rest of the old one is wasted, as in any bump arena); if the range cannot give that, a
    /// chunk of exactly `n` is tried before refusing with
    /// [`UserMemoryError::OutOfUserMemory`].
    #[allow(clippy::mut_from_ref)] // disjoint slices of chunks the arena owns, as in bumpalo
    pub fn alloc_bytes(&self, n: usize) -> Result<&mut [u8], UserMemoryError> {
        if n == 0 {
            return Ok(&mut []);
        }
        let want = n as u64;
        let mut inner = self.inner.borrow_mut();
        let fits = inner
            .chunks
            .last()
            .is_some_and(|c| c.len() - inner.used_in_last >= want);
        if !fits {
            let chunk = self
                .allocator
                .allocate(self.chunk_bytes.max(want))
                .or_else(|_| self.allocator.allocate(want))
                .map_err(|e| UserMemoryError::OutOfUserMemory {
                    requested: want,
                    task_used: inner.chunk_total_bytes,
                    range_free: e.free_bytes,
                    range_len: e.range_len,
                })?;
            inner.chunk_total_bytes += chunk.footprint_bytes();
            inner.chunks.push(chunk);
            inner.used_in_last = 0;
        }
        let start = inner.used_in_last;
        let ptr = inner
            .chunks
            .last()
            .map(MemoryBlock::as_ptr)
            .expect("a chunk was just ensured");
        inner.used_in_last += want;
        inner.allocated_bytes += want;
        // SAFETY: [start, start + n) lies inside the last chunk (checked or fresh above), a
        // MemoryBlock this arena owns exclusively and never reads or writes itself. The bump
        // offset only grows, so slices handed out never overlap one another. Moving the block
        // within `chunks` does not move its bytes (they are in the mapping), and chunks are
        // freed only when the arena drops, which needs every borrow of `self` (hence of these
        // slices) to have ended.
        Ok(unsafe { std::slice::from_raw_parts_mut(ptr.wrapping_add(start as usize), n) })
    }

    /// Bytes handed out by [`UserArena::alloc_bytes`].
    pub fn allocated_bytes(&self) -> u64 {
        self.inner.borrow().allocated_bytes
    }

    /// Bytes the arena holds in chunks of the user range (≥ `allocated_bytes`).
    pub fn chunk_bytes_held(&self) -> u64 {
        self.inner.borrow().chunk_total_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::{Mapping, ReleasePolicy};

    const MIB: u64 = 1 << 20;

    fn user_allocator(len: u64) -> PageAllocator {
        let map = Mapping::anonymous(len, "heap").unwrap();
        let user = map.whole().with_name("user");
        PageAllocator::with_pool_limit(user, ReleasePolicy::ReturnToKernel, 0).unwrap()
    }

    #[test]
    fn slices_are_disjoint_and_writable() {
        let alloc = user_allocator(4 * MIB);
        let arena = UserArena::with_chunk_bytes(&alloc, 4096);
        let mut slices = Vec::new();
        for i in 0..100u8 {
            let s = arena.alloc_bytes(100 + i as usize).unwrap();
            s.fill(i);
            slices.push(s);
        }
        for (i, s) in slices.iter().enumerate() {
            assert!(s.iter().all(|&b| b == i as u8), "slice {i} was overwritten");
        }
        let expected: u64 = (0..100).map(|i| 100 + i).sum();
        assert_eq!(arena.allocated_bytes(), expected);
        assert!(arena.chunk_bytes_held() >= expected);
        assert_eq!(alloc.allocated_bytes(), arena.chunk_bytes_held());
        assert!(arena.alloc_bytes(0).unwrap().is_empty());
    }

    #[test]
    fn out_of_user_memory_has_the_numbers_and_drop_returns_chunks() {
        let alloc = user_allocator(4 * MIB);
        let other_task = UserArena::new(&alloc);
        other_task.alloc_bytes(MIB as usize).unwrap();
        let arena = UserArena::new(&alloc);
        // Two 1 MiB chunks fit next to the other task's; a third does not.
        arena.alloc_bytes(MIB as usize).unwrap();
        arena.alloc_bytes(MIB as usize).unwrap();
        let err = arena.alloc_bytes(2 * MIB as usize).unwrap_err();
        assert_eq!(
            err,
            UserMemoryError::OutOfUserMemory {
                requested: 2 * MIB,
                task_used: 2 * MIB,
                range_free: MIB,
                range_len: 4 * MIB
            }
        );
        assert_eq!(
            err.to_string(),
            "java.lang.OutOfMemoryError: Java heap space (user memory: requested 2097152 bytes, \
             task holds 2097152 bytes, 1048576 of 4194304 bytes free in the user range)"
        );
        // A request that fits the remaining megabyte still succeeds.
        arena.alloc_bytes(1000).unwrap();
        drop(arena);
        assert_eq!(alloc.allocated_bytes(), MIB);
        drop(other_task);
        assert_eq!((alloc.allocated_bytes(), alloc.free_bytes()), (0, 4 * MIB));
        assert_eq!(alloc.largest_free_extent(), 4 * MIB);
    }

    #[test]
    fn arena_is_send() {
        fn is_send<T: Send>() {}
        is_send::<UserArena>();
    }
}
