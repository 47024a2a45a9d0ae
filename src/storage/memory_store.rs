//! Spark's `MemoryStore` (docs/spark-model.md §6.2–§6.5): cached blocks held in real storage
//! memory, unrolled with Spark's thresholds, evicted least-recently-used first.
//!
//! # Memory
//!
//! A block's bytes are real: chunks carved from the unified range (ON_HEAP: deserialized and
//! on-heap serialized entries) or the off-heap arena (OFF_HEAP entries), written record by
//! record while unrolling. The storage pool accounts the entry's size; unroll memory accounts
//! the reservation while unrolling (which may run ahead of the bytes written, by up to the
//! growth factor, exactly as Spark's reservation runs ahead of its size estimate).
//!
//! # Unrolling (§6.5)
//!
//! Reserve `spark.storage.unrollMemoryThreshold` (1 MiB) for the task; after each element
//! whose index is a multiple of `spark.storage.unrollMemoryCheckPeriod` (16: elements 1, 17,
//! 33, …), if the size reached the threshold, ask for `trunc(size × 1.5 − threshold)` more;
//! the threshold grows by the request even when it is refused, and a refusal stops unrolling.
//! On completion any shortfall is reserved, then — atomically under the memory manager's lock —
//! the block's unroll memory is released and exactly its size acquired as storage. A failure
//! returns a [`PartialUnroll`] that holds its unroll memory until it is dropped.
//!
//! # Eviction (§6.3)
//!
//! [`BlockEvictor`] for the memory manager: scan from least to most recently used, take blocks
//! of the same mode, not of the RDD being stored, not being read, until the selection covers the
//! space; all or nothing. Each dropped block goes through the [`DropHandler`] (the block
//! manager), which writes it to disk when its level uses disk. Eviction runs under the memory
//! manager's lock, as in Spark; the store's own lock is never held while calling the manager.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use crate::data::RecordSource;
use crate::memory::{BlockEvictor, MemoryMode, TaskAttemptId, UnifiedMemoryManager};
use crate::region::{MemoryBlock, PageAllocator};
use crate::spill::RecordDigest;

use super::values::{Encoder, ReadError, ValueFormat, decode};
use super::{BlockId, StorageLevel};

/// Spark's unroll settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnrollConf {
    /// `spark.storage.unrollMemoryThreshold` (1 MiB).
    pub initial_threshold: u64,
    /// `spark.storage.unrollMemoryCheckPeriod` (16).
    pub check_period: u64,
    /// `spark.storage.unrollMemoryGrowthFactor` (1.5).
    pub growth_factor: f64,
}

impl Default for UnrollConf {
    fn default() -> Self {
        UnrollConf {
            initial_threshold: 1 << 20,
            check_period: 16,
            growth_factor: 1.5,
        }
    }
}

/// Receives the blocks eviction drops (Spark's `BlockEvictionHandler.dropFromMemory`). Called
/// with the memory manager's lock held: it must not call the manager.
pub trait DropHandler: Send + Sync {
    /// `entry` has left memory; persist it to disk if its level says so.
    fn drop_from_memory(&self, entry: &MemoryEntry);
}

/// One cached block in memory: its values' bytes in real chunks (docs/spark-model.md §21.7):
/// raw records, JVM object images, or a serializer stream, per its [`ValueFormat`].
pub struct MemoryEntry {
    pub block: BlockId,
    pub level: StorageLevel,
    pub mode: MemoryMode,
    /// Bytes of the entry (what storage memory accounts).
    pub size: u64,
    /// Bytes of a record; the last may be shorter.
    pub record_bytes: u64,
    pub digest: RecordDigest,
    /// How the chunks hold the values.
    pub format: ValueFormat,
    chunks: Vec<MemoryBlock>,
    /// Bytes written in the chunks (every chunk is full but the last).
    len: u64,
    readers: AtomicU32,
}

impl MemoryEntry {
    /// Calls `f` on every record, in order. The bytes were written by this process; if they
    /// do not decode, that is a bug and it panics (a read for a task uses
    /// [`try_for_each_record`](Self::try_for_each_record)).
    pub fn for_each_record(&self, mut f: impl FnMut(&[u8])) {
        if let Err(ReadError::Decode(e)) = self.try_for_each_record(|r| -> Result<(), ()> {
            f(r);
            Ok(())
        }) {
            panic!("{} does not decode: {e}", self.block);
        }
    }

    /// Calls `f` on every record, in order, until it fails or the bytes do not decode.
    pub fn try_for_each_record<E>(
        &self,
        f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), ReadError<E>> {
        let pieces = pieces(&self.chunks, self.len, &[]);
        decode(
            &self.format,
            self.digest.records,
            self.record_bytes,
            &pieces,
            &[],
            f,
        )
    }

    /// The bytes the entry holds, chunk by chunk (a serialized block's stream), for a reader
    /// that decodes them itself.
    pub fn stored_bytes(&self) -> Vec<&[u8]> {
        pieces(&self.chunks, self.len, &[])
    }

    /// Number of records.
    pub fn records(&self) -> u64 {
        self.digest.records
    }

    /// Bytes the entry holds in memory: its size, or more where Spark's estimate of a
    /// deserialized block is below its objects' bytes (§21.3's sampling).
    pub fn held_bytes(&self) -> u64 {
        self.chunks.iter().map(MemoryBlock::len).sum()
    }
}

/// The written parts of `chunks` (`len` bytes in all), then `tail`.
fn pieces<'a>(chunks: &'a [MemoryBlock], len: u64, tail: &'a [u8]) -> Vec<&'a [u8]> {
    let mut left = len;
    let mut out = Vec::with_capacity(chunks.len() + 1);
    for c in chunks {
        let n = left.min(c.len());
        if n > 0 {
            out.push(&c.as_slice()[..n as usize]);
        }
        left -= n;
    }
    if !tail.is_empty() {
        out.push(tail);
    }
    out
}

/// A pinned entry being read: eviction skips it until the guard drops (Spark's read lock).
pub struct ReadGuard {
    entry: Arc<MemoryEntry>,
}

impl std::ops::Deref for ReadGuard {
    type Target = MemoryEntry;
    fn deref(&self) -> &MemoryEntry {
        &self.entry
    }
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        self.entry.readers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The part of a block unrolled before memory ran out. Its unroll memory stays reserved for
/// the task until this is dropped (Spark: until the partial iterator is consumed).
pub struct PartialUnroll {
    store: Arc<MemoryStore>,
    task: TaskAttemptId,
    mode: MemoryMode,
    unroll_bytes: u64,
    chunks: Vec<MemoryBlock>,
    /// Bytes written in the chunks.
    len: u64,
    /// Capacity of the chunks.
    cap: u64,
    /// The encoded bytes of the last record when no chunk could be placed for them (the record
    /// was taken from the source and must not be lost).
    tail: Vec<u8>,
    encoder: Encoder,
    /// Bytes unrolled so far.
    pub bytes: u64,
    /// Records unrolled so far.
    pub records: u64,
    record_bytes: u64,
}

impl PartialUnroll {
    /// The stored block made of this unroll's chunks (taken from it), `size` bytes accounted.
    fn take_entry(
        &mut self,
        block: &BlockId,
        level: StorageLevel,
        size: u64,
        digest: RecordDigest,
        format: ValueFormat,
    ) -> MemoryEntry {
        MemoryEntry {
            block: block.clone(),
            level,
            mode: self.mode,
            size,
            record_bytes: self.record_bytes,
            digest,
            format,
            chunks: std::mem::take(&mut self.chunks),
            len: self.len,
            readers: AtomicU32::new(0),
        }
    }

    /// Calls `f` on each record unrolled so far.
    pub fn for_each_record(&self, mut f: impl FnMut(&[u8])) {
        if let Err(ReadError::Decode(e)) = self.try_for_each_record(|r| -> Result<(), ()> {
            f(r);
            Ok(())
        }) {
            panic!("a partially unrolled block does not decode: {e}");
        }
    }

    /// Calls `f` on each record unrolled so far, until it fails.
    pub fn try_for_each_record<E>(
        &self,
        f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), ReadError<E>> {
        let pieces = pieces(&self.chunks, self.len, &self.tail);
        decode(
            self.encoder.format(),
            self.records,
            self.record_bytes,
            &pieces,
            self.encoder.pending(),
            f,
        )
    }

    /// The unroll memory this partial block holds.
    pub fn unroll_bytes(&self) -> u64 {
        self.unroll_bytes
    }
}

impl Drop for PartialUnroll {
    fn drop(&mut self) {
        self.chunks.clear();
        self.store
            .release_unroll_memory_for_task(self.task, self.mode, self.unroll_bytes);
    }
}

/// What a put did.
pub enum PutOutcome {
    /// The block is in memory with this size.
    Stored { size: u64 },
    /// Unrolling ran out of memory (or the range could not place a chunk). Boxed: the
    /// partial block carries its encoder.
    Failed(Box<PartialUnroll>),
}

#[derive(Default)]
struct Inner {
    entries: HashMap<BlockId, (u64, Arc<MemoryEntry>)>,
    /// Access order: sequence number → block, least recently used first.
    lru: BTreeMap<u64, BlockId>,
    next_seq: u64,
    unroll: HashMap<(TaskAttemptId, MemoryMode), u64>,
    bytes: [u64; 2],
}

impl Inner {
    fn touch(&mut self, block: &BlockId) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some((old, _)) = self.entries.get_mut(block) {
            self.lru.remove(old);
            *old = seq;
            self.lru.insert(seq, block.clone());
        }
    }
}

/// Spark's `MemoryStore`.
pub struct MemoryStore {
    manager: Arc<UnifiedMemoryManager>,
    on_heap: Arc<PageAllocator>,
    off_heap: Option<Arc<PageAllocator>>,
    unroll_conf: UnrollConf,
    inner: Mutex<Inner>,
    handler: OnceLock<Weak<dyn DropHandler>>,
    this: Weak<MemoryStore>,
    /// Blocks that failed to unroll while another task held unroll memory in the same mode:
    /// had that task run later (or earlier), this one might have fitted.
    contended_unroll_failures: std::sync::atomic::AtomicU64,
}

impl MemoryStore {
    /// A memory store over the unified range's allocator and, if mapped, the off-heap arena's.
    /// It registers itself as the manager's evictor.
    pub fn new(
        manager: Arc<UnifiedMemoryManager>,
        on_heap: Arc<PageAllocator>,
        off_heap: Option<Arc<PageAllocator>>,
        unroll_conf: UnrollConf,
    ) -> Arc<MemoryStore> {
        let store = Arc::new_cyclic(|this| MemoryStore {
            manager: Arc::clone(&manager),
            on_heap,
            off_heap,
            unroll_conf,
            inner: Mutex::new(Inner::default()),
            handler: OnceLock::new(),
            this: this.clone(),
            contended_unroll_failures: Default::default(),
        });
        manager.set_evictor(Arc::new(EvictorRef(Arc::downgrade(&store))));
        store
    }

    /// Sets who persists evicted blocks (the block manager). Set once.
    pub fn set_drop_handler(&self, handler: Weak<dyn DropHandler>) {
        let _ = self.handler.set(handler);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn allocator(&self, mode: MemoryMode) -> Option<&Arc<PageAllocator>> {
        match mode {
            MemoryMode::OnHeap => Some(&self.on_heap),
            MemoryMode::OffHeap => self.off_heap.as_ref(),
        }
    }

    /// Unrolls raw records (their size is their length) into memory for `task`; see
    /// [`put_values`](Self::put_values).
    pub fn put_records(
        &self,
        block: &BlockId,
        level: StorageLevel,
        task: TaskAttemptId,
        record_bytes: u64,
        source: &mut dyn RecordSource,
    ) -> PutOutcome {
        self.put_values(block, level, task, ValueFormat::Raw, record_bytes, source)
    }

    /// Spark's `putIteratorAsValues` / `putIteratorAsBytes`: unroll `source` into memory for
    /// `task` in `format`. Deserialized levels are on-heap; serialized ones use the level's
    /// mode. The unroll checks see the format's running size (docs/spark-model.md §21.7: the
    /// vector's estimate for objects, the stream's bytes for a serializer).
    pub fn put_values(
        &self,
        block: &BlockId,
        level: StorageLevel,
        task: TaskAttemptId,
        format: ValueFormat,
        record_bytes: u64,
        source: &mut dyn RecordSource,
    ) -> PutOutcome {
        let mode = if level.deserialized {
            MemoryMode::OnHeap
        } else {
            level.memory_mode()
        };
        let store = self
            .this
            .upgrade()
            .expect("the store is alive while in use");
        let mut partial = PartialUnroll {
            store,
            task,
            mode,
            unroll_bytes: 0,
            chunks: Vec::new(),
            len: 0,
            cap: 0,
            tail: Vec::new(),
            encoder: Encoder::new(format),
            bytes: 0,
            records: 0,
            record_bytes,
        };
        let conf = self.unroll_conf;
        let mut keep_unrolling =
            self.reserve_unroll_memory_for_task(block, conf.initial_threshold, mode, task);
        if keep_unrolling {
            partial.unroll_bytes += conf.initial_threshold;
        } else {
            warn(&format!(
                "Failed to reserve initial memory threshold of {} for computing block {block} in memory.",
                conf.initial_threshold
            ));
        }
        let mut threshold = conf.initial_threshold;
        let mut digest = RecordDigest::default();
        let chunk_bytes = format.chunk_bytes(record_bytes);
        let raw = format == ValueFormat::Raw;
        // `putSingle`: the records are one element, checked once after it (§22.4).
        let single = format.single_element();
        let mut scratch = Vec::new();
        let mut elements: u64 = 0;
        while keep_unrolling {
            let Some(record) = source.next_record() else {
                break;
            };
            assert!(
                record.len() as u64 <= record_bytes,
                "a record of {} bytes in a block of {record_bytes}-byte records",
                record.len()
            );
            digest.add(record);
            partial.records += 1;
            // Store the value in real memory.
            let bytes = if raw {
                record
            } else {
                scratch.clear();
                partial.encoder.push(record, &mut scratch);
                &scratch[..]
            };
            if let Err(e) = self.append(&mut partial, bytes, chunk_bytes) {
                warn(&format!("cannot place a chunk of {block} in memory: {e}"));
                partial.tail = bytes.to_vec();
                partial.bytes += bytes.len() as u64;
                keep_unrolling = false;
                break;
            }
            if !single && elements.is_multiple_of(conf.check_period) {
                let current = if raw {
                    partial.bytes
                } else {
                    partial.encoder.unroll_estimate()
                };
                keep_unrolling =
                    self.unroll_check(block, mode, task, current, &mut threshold, &mut partial);
            }
            elements += 1;
        }
        if single && keep_unrolling && partial.records > 0 && !source.failed() {
            // The one element is stored: the check after element 1.
            let current = partial.encoder.unroll_estimate();
            keep_unrolling =
                self.unroll_check(block, mode, task, current, &mut threshold, &mut partial);
        }
        if source.failed() {
            // The records so far are only a prefix of the block (Spark: the iterator threw
            // and nothing was stored).
            warn(&format!(
                "reading the values of {block} failed; not caching it"
            ));
            keep_unrolling = false;
        }
        if keep_unrolling {
            let size = if raw {
                partial.bytes
            } else {
                // The end of the stream, or the objects' array (§21.6: its estimate is the size).
                scratch.clear();
                let size = partial.encoder.finish(&mut scratch);
                if let Err(e) = self.append(&mut partial, &scratch, chunk_bytes) {
                    warn(&format!("cannot place the end of {block} in memory: {e}"));
                    keep_unrolling = false;
                }
                size
            };
            if keep_unrolling && size > partial.unroll_bytes {
                let request = size - partial.unroll_bytes;
                keep_unrolling = self.reserve_unroll_memory_for_task(block, request, mode, task);
                if keep_unrolling {
                    partial.unroll_bytes += request;
                }
            }
            if keep_unrolling {
                self.trim_last_chunk(&mut partial);
                // Release this block's unroll memory and take exactly its size as storage, in
                // one step under the manager's lock.
                let transferred = self.manager.transfer_unroll_to_storage(
                    block,
                    partial.unroll_bytes,
                    size,
                    mode,
                );
                assert!(
                    transferred,
                    "transferring unroll memory to storage memory failed"
                );
                {
                    let mut inner = self.lock();
                    let slot = inner.unroll.entry((task, mode)).or_default();
                    *slot = slot.saturating_sub(partial.unroll_bytes);
                }
                partial.unroll_bytes = 0;
                let entry = partial.take_entry(block, level, size, digest, format);
                self.insert(entry);
                return PutOutcome::Stored { size };
            }
        }
        warn(&format!(
            "Not enough space to cache {block} in memory! (computed {} bytes so far)",
            partial.bytes
        ));
        let others_unrolling = self
            .lock()
            .unroll
            .iter()
            .any(|(&(t, m), &b)| t != task && m == mode && b > 0);
        if others_unrolling {
            self.contended_unroll_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        PutOutcome::Failed(Box::new(partial))
    }

    /// The periodic check of §6.5b: when the size reached the threshold, ask for
    /// `trunc(size × growth − threshold)` more; the threshold grows by the request even when it
    /// is refused. `false` when refused.
    fn unroll_check(
        &self,
        block: &BlockId,
        mode: MemoryMode,
        task: TaskAttemptId,
        current: u64,
        threshold: &mut u64,
        partial: &mut PartialUnroll,
    ) -> bool {
        if current < *threshold {
            return true;
        }
        let request = (current as f64 * self.unroll_conf.growth_factor - *threshold as f64) as u64;
        let granted = self.reserve_unroll_memory_for_task(block, request, mode, task);
        if granted {
            partial.unroll_bytes += request;
        }
        *threshold += request;
        granted
    }

    /// Spark's `putBytes` as `maybeCacheDiskBytesInMemory` and a broadcast's pieces use it
    /// (docs/spark-model.md §22.4): acquire exactly `size`
    /// bytes of storage memory for `block` (evicting other RDDs' blocks if need be), and only
    /// then fill them with the serialized bytes of `source`'s records. `false` (nothing kept,
    /// `source` untouched) when the memory is refused; `source`'s records must encode to
    /// exactly `size` bytes, else nothing is kept either.
    #[allow(clippy::too_many_arguments)]
    pub fn put_bytes(
        &self,
        block: &BlockId,
        level: StorageLevel,
        format: ValueFormat,
        size: u64,
        record_bytes: u64,
        source: &mut dyn RecordSource,
    ) -> bool {
        assert!(
            !level.deserialized
                && !matches!(
                    format,
                    ValueFormat::Objects { .. } | ValueFormat::OneObject { .. }
                ),
            "putBytes stores serialized blocks"
        );
        let mode = level.memory_mode();
        if !self.manager.acquire_storage_memory(block, size, mode) {
            return false;
        }
        if self.allocator(mode).is_none() {
            self.manager.release_storage_memory(size, mode);
            return false;
        }
        let store = self
            .this
            .upgrade()
            .expect("the store is alive while in use");
        // Unroll memory of none: the partial only carries the chunks.
        let mut partial = PartialUnroll {
            store,
            task: TaskAttemptId::MAX,
            mode,
            unroll_bytes: 0,
            chunks: Vec::new(),
            len: 0,
            cap: 0,
            tail: Vec::new(),
            encoder: Encoder::new(format),
            bytes: 0,
            records: 0,
            record_bytes,
        };
        let mut digest = RecordDigest::default();
        let mut scratch = Vec::new();
        let chunk_bytes = format.chunk_bytes(record_bytes);
        let mut placed = true;
        while let Some(r) = source.next_record() {
            digest.add(r);
            scratch.clear();
            partial.encoder.push(r, &mut scratch);
            if placed && self.append(&mut partial, &scratch, chunk_bytes).is_err() {
                placed = false;
            }
        }
        scratch.clear();
        let stream = partial.encoder.finish(&mut scratch);
        if placed && self.append(&mut partial, &scratch, chunk_bytes).is_err() {
            placed = false;
        }
        if !placed || source.failed() || stream != size || partial.len != size {
            if placed && !source.failed() {
                warn(&format!(
                    "{block}: its records serialize to {stream} bytes, not the {size} on disk; not caching it"
                ));
            }
            drop(partial);
            self.manager.release_storage_memory(size, mode);
            return false;
        }
        self.trim_last_chunk(&mut partial);
        let entry = partial.take_entry(block, level, size, digest, format);
        self.insert(entry);
        true
    }

    /// Inserts a stored entry as most recently used; a block already here is replaced (one
    /// copy).
    fn insert(&self, entry: MemoryEntry) {
        let block = entry.block.clone();
        let mut inner = self.lock();
        inner.bytes[mode_index(entry.mode)] += entry.size;
        let seq = inner.next_seq;
        inner.next_seq += 1;
        if let Some((old_seq, old)) = inner.entries.insert(block.clone(), (seq, Arc::new(entry))) {
            inner.lru.remove(&old_seq);
            inner.bytes[mode_index(old.mode)] -= old.size;
            inner.lru.insert(seq, block);
            drop(inner);
            self.manager.release_storage_memory(old.size, old.mode);
        } else {
            inner.lru.insert(seq, block);
        }
    }

    /// Appends `bytes` to the partial block, placing a chunk when they do not fit (a value may
    /// span two chunks). On failure nothing was written.
    fn append(
        &self,
        partial: &mut PartialUnroll,
        bytes: &[u8],
        chunk_bytes: u64,
    ) -> Result<(), String> {
        let n = bytes.len() as u64;
        let free = partial.cap - partial.len;
        if n > free {
            let alloc = self
                .allocator(partial.mode)
                .ok_or_else(|| format!("no {:?} memory is mapped", partial.mode))?;
            let c = alloc
                .allocate(chunk_bytes.max(n - free))
                .map_err(|e| e.to_string())?;
            partial.cap += c.len();
            partial.chunks.push(c);
        }
        let mut rest = bytes;
        // Only the last two chunks can have room: fill the older one first.
        let k = partial.chunks.len();
        let mut start = partial.cap;
        for i in (k.saturating_sub(2)..k).rev() {
            start -= partial.chunks[i].len();
        }
        for i in k.saturating_sub(2)..k {
            let c = &mut partial.chunks[i];
            let c_len = c.len();
            if partial.len < start + c_len && !rest.is_empty() {
                let at = (partial.len - start) as usize;
                let m = rest.len().min(c_len as usize - at);
                c.as_mut_slice()[at..at + m].copy_from_slice(&rest[..m]);
                rest = &rest[m..];
                partial.len += m as u64;
            }
            start += c_len;
        }
        debug_assert!(rest.is_empty());
        partial.bytes += n;
        Ok(())
    }

    /// Replaces the last chunk by one of the bytes written in it, so that the block holds
    /// what it accounts (Spark's `ChunkedByteBufferOutputStream.toChunkedByteBuffer`); kept as
    /// it is when the smaller chunk cannot be placed.
    fn trim_last_chunk(&self, partial: &mut PartialUnroll) {
        let Some(last) = partial.chunks.last() else {
            return;
        };
        let used = last.len() - (partial.cap - partial.len);
        if used == last.len() {
            return;
        }
        if used == 0 {
            let c = partial.chunks.pop().expect("checked");
            partial.cap -= c.len();
            return;
        }
        let Some(alloc) = self.allocator(partial.mode) else {
            return;
        };
        if let Ok(mut small) = alloc.allocate(used) {
            let old = partial.chunks.pop().expect("checked");
            small.as_mut_slice()[..used as usize].copy_from_slice(&old.as_slice()[..used as usize]);
            partial.cap = partial.cap - old.len() + small.len();
            partial.chunks.push(small);
        }
    }

    /// Spark's `reserveUnrollMemoryForThisTask`.
    fn reserve_unroll_memory_for_task(
        &self,
        block: &BlockId,
        bytes: u64,
        mode: MemoryMode,
        task: TaskAttemptId,
    ) -> bool {
        let ok = self.manager.acquire_unroll_memory(block, bytes, mode);
        if ok {
            *self.lock().unroll.entry((task, mode)).or_default() += bytes;
        }
        ok
    }

    /// Spark's `releaseUnrollMemoryForThisTask(mode, bytes)`: at most what the task holds.
    pub fn release_unroll_memory_for_task(
        &self,
        task: TaskAttemptId,
        mode: MemoryMode,
        bytes: u64,
    ) {
        let release = {
            let mut inner = self.lock();
            let held = inner.unroll.entry((task, mode)).or_default();
            let r = bytes.min(*held);
            *held -= r;
            if *held == 0 {
                inner.unroll.remove(&(task, mode));
            }
            r
        };
        if release > 0 {
            self.manager.release_unroll_memory(release, mode);
        }
    }

    /// Task end: release all of the task's unroll memory in both modes (§6.5e).
    pub fn release_all_unroll_memory_for_task(&self, task: TaskAttemptId) {
        for mode in [MemoryMode::OnHeap, MemoryMode::OffHeap] {
            self.release_unroll_memory_for_task(task, mode, u64::MAX);
        }
    }

    /// Blocks so far that failed to unroll while another task held unroll memory in the same
    /// mode: their outcome depended on how the tasks' reservations interleaved.
    pub fn contended_unroll_failures(&self) -> u64 {
        self.contended_unroll_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Unroll memory held by all tasks in `mode` (`currentUnrollMemory`).
    pub fn current_unroll_memory(&self, mode: MemoryMode) -> u64 {
        self.lock()
            .unroll
            .iter()
            .filter(|((_, m), _)| *m == mode)
            .map(|(_, v)| *v)
            .sum()
    }

    /// Reads a block: pins it against eviction and moves it to most recently used.
    pub fn get(&self, block: &BlockId) -> Option<ReadGuard> {
        let mut inner = self.lock();
        let entry = Arc::clone(&inner.entries.get(block)?.1);
        entry.readers.fetch_add(1, Ordering::AcqRel);
        inner.touch(block);
        Some(ReadGuard { entry })
    }

    /// Whether the block is in memory.
    pub fn contains(&self, block: &BlockId) -> bool {
        self.lock().entries.contains_key(block)
    }

    /// The block's size in memory.
    pub fn size(&self, block: &BlockId) -> Option<u64> {
        self.lock().entries.get(block).map(|(_, e)| e.size)
    }

    /// Removes a block and releases its storage memory.
    pub fn remove(&self, block: &BlockId) -> bool {
        let removed = {
            let mut inner = self.lock();
            match inner.entries.remove(block) {
                Some((seq, e)) => {
                    inner.lru.remove(&seq);
                    inner.bytes[mode_index(e.mode)] -= e.size;
                    Some(e)
                }
                None => None,
            }
        };
        match removed {
            Some(e) => {
                self.manager.release_storage_memory(e.size, e.mode);
                true
            }
            None => false,
        }
    }

    /// Bytes of blocks in memory in `mode`.
    pub fn memory_used(&self, mode: MemoryMode) -> u64 {
        self.lock().bytes[mode_index(mode)]
    }

    /// Blocks in memory, least recently used first.
    pub fn blocks_lru(&self) -> Vec<BlockId> {
        self.lock().lru.values().cloned().collect()
    }

    fn evict(&self, block: Option<&BlockId>, space: u64, mode: MemoryMode) -> u64 {
        let rdd_to_add = block.and_then(|b| b.rdd_id());
        let selected: Vec<Arc<MemoryEntry>> = {
            let mut inner = self.lock();
            let mut freed = 0;
            let mut picked = Vec::new();
            for (seq, id) in inner.lru.iter() {
                if freed >= space {
                    break;
                }
                let e = &inner.entries[id].1;
                let other_rdd = rdd_to_add.is_none() || rdd_to_add != id.rdd_id();
                if e.mode == mode && other_rdd && e.readers.load(Ordering::Acquire) == 0 {
                    freed += e.size;
                    picked.push((*seq, id.clone()));
                }
            }
            if freed < space {
                if let Some(b) = block {
                    info(&format!("Will not store {b}"));
                }
                return 0;
            }
            picked
                .into_iter()
                .map(|(seq, id)| {
                    inner.lru.remove(&seq);
                    let (_, e) = inner.entries.remove(&id).expect("selected entries exist");
                    inner.bytes[mode_index(e.mode)] -= e.size;
                    e
                })
                .collect()
        };
        let handler = self.handler.get().and_then(Weak::upgrade);
        let mut dropped = 0;
        for entry in selected {
            if let Some(h) = &handler {
                h.drop_from_memory(&entry);
            }
            dropped += entry.size;
        }
        dropped
    }
}

/// The manager holds the store weakly, so that dropping the executor frees both.
struct EvictorRef(Weak<MemoryStore>);

impl BlockEvictor for EvictorRef {
    fn evict_blocks_to_free_space(
        &self,
        block: Option<&BlockId>,
        space: u64,
        mode: MemoryMode,
    ) -> u64 {
        match self.0.upgrade() {
            Some(store) => store.evict(block, space, mode),
            None => 0,
        }
    }
}

fn mode_index(mode: MemoryMode) -> usize {
    match mode {
        MemoryMode::OnHeap => 0,
        MemoryMode::OffHeap => 1,
    }
}

fn warn(message: &str) {
    crate::log::warn("MemoryStore", message);
}

fn info(message: &str) {
    crate::log::info("MemoryStore", message);
}
