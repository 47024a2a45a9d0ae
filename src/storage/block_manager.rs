//! Spark's `BlockManager` for one executor: puts and gets cached partitions across the memory
//! store and the disk store, drops evicted blocks to disk when their level uses disk, and
//! recomputes what is gone (docs/spark-model.md §6.4).
//!
//! - `put_partition` is `doPutIterator`: a memory level unrolls into the memory store; if that
//!   fails, a level with disk writes the partition (what was unrolled, then the rest) to disk,
//!   and a memory-only level leaves it uncached (the task consumes the values).
//! - `get_or_compute` is `getOrElseUpdate`: memory, else disk (re-caching into memory when the
//!   level uses memory, as `maybeCacheDiskValuesInMemory` does), else recompute from the
//!   partition's generator and put again.
//! - Eviction (through the memory store) calls [`DropHandler::drop_from_memory`]: a block whose
//!   level uses disk and is not yet there is written to disk; a memory-only block is gone.
//!
//! Replication (`_2`, `_3` levels) needs other executors; a single executor stores one copy,
//! as Spark does when no peer is available.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use serde::Serialize;

use crate::data::{PartitionData, RecordSource};
use crate::memory::TaskAttemptId;
use crate::spill::{RECORD_PREFIX_BYTES, RecordDigest, SpillError, SpillReader, SpillWriter};

use super::disk::{DiskBlockManager, DiskSink, DiskStore};
use super::memory_store::{DropHandler, MemoryEntry, MemoryStore, PutOutcome};
use super::{BlockId, StorageLevel};

/// Failures of block storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A block file could not be written or read back intact.
    #[error(transparent)]
    Spill(#[from] SpillError),
    /// A block read back does not hold the records that were generated for it.
    #[error("block {block} read from {from} does not match its data: {detail}")]
    Mismatch {
        block: BlockId,
        from: &'static str,
        detail: String,
    },
    /// The process received a signal while the block was being computed, written or read:
    /// nothing of it was kept.
    #[error(transparent)]
    Interrupted(#[from] crate::interrupt::Interrupted),
}

/// Where a read found its block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    Memory,
    Disk,
    Recomputed,
}

/// What a put did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutReport {
    pub in_memory: bool,
    pub on_disk: bool,
    /// The digest of every record the put consumed.
    pub digest: RecordDigest,
}

/// Per-RDD storage, under the REST API's names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RddStorage {
    /// The level's description ("Memory Deserialized 1x Replicated").
    pub storage_level: String,
    pub num_cached_partitions: u64,
    pub memory_used: u64,
    pub disk_used: u64,
    /// spillway's own: bytes of the block files, framing and checksums included.
    pub disk_file_bytes: u64,
    pub partitions_in_memory: u64,
    pub partitions_on_disk: u64,
}

/// Counters of caching activity.
#[derive(Debug, Default)]
struct Counters {
    blocks_evicted: AtomicU64,
    bytes_evicted: AtomicU64,
    blocks_dropped_to_disk: AtomicU64,
    bytes_dropped_to_disk: AtomicU64,
    drop_failures: AtomicU64,
    eviction_ns: AtomicU64,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    recomputes: AtomicU64,
    unroll_failures: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StorageCounters {
    pub blocks_evicted: u64,
    pub bytes_evicted: u64,
    pub blocks_dropped_to_disk: u64,
    pub bytes_dropped_to_disk: u64,
    pub drop_failures: u64,
    pub eviction_ns: u64,
    pub memory_hits: u64,
    pub disk_hits: u64,
    pub recomputes: u64,
    pub unroll_failures: u64,
    /// Of `unroll_failures`, those while another task held unroll memory in the same mode.
    pub contended_unroll_failures: u64,
}

#[derive(Debug, Clone)]
struct Status {
    level: StorageLevel,
}

/// One executor's block manager.
pub struct BlockManager {
    memory: Arc<MemoryStore>,
    disk: DiskStore,
    status: Mutex<HashMap<BlockId, Status>>,
    counters: Counters,
}

impl BlockManager {
    /// A block manager over a memory store and local directories; it becomes the store's drop
    /// handler.
    pub fn new(memory: Arc<MemoryStore>, dirs: Arc<DiskBlockManager>) -> Arc<BlockManager> {
        let bm = Arc::new(BlockManager {
            memory: Arc::clone(&memory),
            disk: DiskStore::new(dirs),
            status: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        });
        let handler: Weak<dyn DropHandler> = Arc::downgrade(&bm) as Weak<dyn DropHandler>;
        memory.set_drop_handler(handler);
        bm
    }

    /// The memory store.
    pub fn memory_store(&self) -> &Arc<MemoryStore> {
        &self.memory
    }

    /// The disk store.
    pub fn disk_store(&self) -> &DiskStore {
        &self.disk
    }

    fn set_status(&self, block: &BlockId, level: StorageLevel) {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(block.clone(), Status { level });
    }

    /// `doPutIterator`: store a partition's records at `level` for `task`.
    pub fn put_partition(
        &self,
        block: &BlockId,
        level: StorageLevel,
        task: TaskAttemptId,
        data: &PartitionData,
    ) -> Result<PutReport, StorageError> {
        let mut source = DigestingSource::new(data.iter());
        let in_memory = self.memory.contains(block);
        let on_disk = self.disk.contains(block);
        if in_memory || on_disk {
            // Spark's doPut: "Block <id> already exists on this machine; not re-adding it".
            // The task still computes its values (here: they are generated and digested).
            crate::log::info(
                "BlockManager",
                &format!("Block {block} already exists on this machine; not re-adding it"),
            );
            while source.next_record().is_some() {}
            return Ok(PutReport {
                in_memory,
                on_disk,
                digest: source.digest,
            });
        }
        let record_bytes = data.record_bytes();
        self.put_source(block, level, task, record_bytes, &mut source)
    }

    fn put_source(
        &self,
        block: &BlockId,
        level: StorageLevel,
        task: TaskAttemptId,
        record_bytes: u64,
        source: &mut DigestingSource<impl RecordSource>,
    ) -> Result<PutReport, StorageError> {
        self.set_status(block, level);
        let mut report = PutReport {
            in_memory: false,
            on_disk: false,
            digest: RecordDigest::default(),
        };
        if level.use_memory {
            match self
                .memory
                .put_records(block, level, task, record_bytes, source)
            {
                PutOutcome::Stored { .. } => {
                    report.in_memory = true;
                }
                PutOutcome::Failed(partial) => {
                    self.counters
                        .unroll_failures
                        .fetch_add(1, Ordering::Relaxed);
                    if level.use_disk {
                        crate::log::warn(
                            "BlockManager",
                            &format!("Persisting block {block} to disk instead."),
                        );
                        // Spark's PartiallyUnrolledIterator / finishWritingToStream: the unroll
                        // memory goes back once the unrolled prefix is written, before the
                        // rest of the partition is computed.
                        let mut partial = Some(partial);
                        let mut prefix = |w: &mut SpillWriter<DiskSink>| {
                            partial
                                .take()
                                .map_or(Ok(()), |p| p.try_for_each_record(|r| w.write_record(r)))
                        };
                        self.disk.put(block, &mut prefix, Some(source))?;
                        report.on_disk = true;
                    } else {
                        // The task consumes the values, the unrolled ones first (their unroll
                        // memory is released then), then the rest; the block is not cached.
                        drop(partial);
                        while source.next_record().is_some() {}
                    }
                }
            }
        } else if level.use_disk {
            self.disk.put(block, &mut |_| Ok(()), Some(source))?;
            report.on_disk = true;
        } else {
            while source.next_record().is_some() {}
        }
        report.digest = source.digest;
        if let Err(e) = source.check_interrupted() {
            self.remove(block);
            return Err(e);
        }
        if !report.in_memory && !report.on_disk {
            self.status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(block);
        }
        Ok(report)
    }

    /// `getOrElseUpdate`: read the block from memory or disk, else recompute and put it again.
    /// `visit` sees every record; the returned digest covers them.
    pub fn get_or_compute(
        &self,
        block: &BlockId,
        level: StorageLevel,
        task: TaskAttemptId,
        data: &PartitionData,
        visit: &mut dyn FnMut(&[u8]),
    ) -> Result<(ReadFrom, RecordDigest), StorageError> {
        if let Some(entry) = self.memory.get(block) {
            let mut digest = RecordDigest::default();
            entry.for_each_record(|r| {
                digest.add(r);
                visit(r);
            });
            self.counters.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok((ReadFrom::Memory, digest));
        }
        if let Some(reader) = self.disk.get(block) {
            let reader = reader?;
            self.counters.disk_hits.fetch_add(1, Ordering::Relaxed);
            let mut source = DigestingSource::new(ReaderSource {
                reader,
                error: None,
                visit,
            });
            if level.use_memory {
                // maybeCacheDiskValuesInMemory: unroll the disk values back into memory.
                let record_bytes = data.record_bytes();
                match self
                    .memory
                    .put_records(block, level, task, record_bytes, &mut source)
                {
                    PutOutcome::Stored { .. } => {}
                    PutOutcome::Failed(partial) => {
                        // As above: release the unroll memory before reading the rest.
                        drop(partial);
                        while source.next_record().is_some() {}
                    }
                }
            } else {
                while source.next_record().is_some() {}
            }
            if let Some(e) = source.inner.error.take() {
                return Err(e.into());
            }
            source.check_interrupted()?;
            return Ok((ReadFrom::Disk, source.digest));
        }
        self.counters.recomputes.fetch_add(1, Ordering::Relaxed);
        let mut source = DigestingSource::new(VisitingSource {
            inner: data.iter(),
            visit,
        });
        let record_bytes = data.record_bytes();
        let report = self.put_source(block, level, task, record_bytes, &mut source)?;
        Ok((ReadFrom::Recomputed, report.digest))
    }

    /// Removes a block from memory and disk.
    pub fn remove(&self, block: &BlockId) -> bool {
        let in_memory = self.memory.remove(block);
        let on_disk = self.disk.remove(block);
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(block);
        in_memory || on_disk
    }

    fn rdd_blocks(&self, rdd_id: u32) -> Vec<BlockId> {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|b| b.rdd_id() == Some(rdd_id))
            .cloned()
            .collect()
    }

    /// Removes every block of an RDD (`unpersist`).
    pub fn remove_rdd(&self, rdd_id: u32) -> usize {
        let blocks = self.rdd_blocks(rdd_id);
        blocks.iter().filter(|b| self.remove(b)).count()
    }

    /// Storage of one RDD as the REST API reports it: a partition counts as cached wherever
    /// it is stored.
    pub fn rdd_storage(&self, rdd_id: u32) -> RddStorage {
        let blocks = self.rdd_blocks(rdd_id);
        let mut s = RddStorage::default();
        for b in blocks {
            if let Some(st) = self
                .status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&b)
            {
                s.storage_level = st.level.description();
            }
            let mem = self.memory.size(&b);
            let disk = self.disk.block(&b);
            if let Some(m) = mem {
                s.memory_used += m;
                s.partitions_in_memory += 1;
            }
            if let Some(d) = &disk {
                s.disk_used += data_bytes(&d.info);
                s.disk_file_bytes += d.info.file_bytes;
                s.partitions_on_disk += 1;
            }
            if mem.is_some() || disk.is_some() {
                s.num_cached_partitions += 1;
            }
        }
        s
    }

    /// The caching counters so far.
    pub fn counters(&self) -> StorageCounters {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StorageCounters {
            blocks_evicted: get(&c.blocks_evicted),
            bytes_evicted: get(&c.bytes_evicted),
            blocks_dropped_to_disk: get(&c.blocks_dropped_to_disk),
            bytes_dropped_to_disk: get(&c.bytes_dropped_to_disk),
            drop_failures: get(&c.drop_failures),
            eviction_ns: get(&c.eviction_ns),
            memory_hits: get(&c.memory_hits),
            disk_hits: get(&c.disk_hits),
            recomputes: get(&c.recomputes),
            unroll_failures: get(&c.unroll_failures),
            contended_unroll_failures: self.memory.contended_unroll_failures(),
        }
    }
}

/// The block's serialized bytes: payload without spillway's per-record length prefixes.
fn data_bytes(info: &crate::spill::SpillFileInfo) -> u64 {
    if info.fixed_record_bytes == 0 {
        info.payload_bytes - info.records * RECORD_PREFIX_BYTES as u64
    } else {
        info.payload_bytes
    }
}

impl DropHandler for BlockManager {
    /// `dropFromMemory`: write to disk if the level uses disk and the block is not there yet.
    fn drop_from_memory(&self, entry: &MemoryEntry) {
        let start = Instant::now();
        let c = &self.counters;
        c.blocks_evicted.fetch_add(1, Ordering::Relaxed);
        c.bytes_evicted.fetch_add(entry.size, Ordering::Relaxed);
        if entry.level.use_disk && !self.disk.contains(&entry.block) {
            let mut prefix = |w: &mut SpillWriter<DiskSink>| {
                // Digested when the block was cached: no second hash per record.
                w.use_known_digest(entry.digest);
                entry.try_for_each_record(|r| w.write_record(r))
            };
            match self.disk.put(&entry.block, &mut prefix, None) {
                Ok(_) => {
                    c.blocks_dropped_to_disk.fetch_add(1, Ordering::Relaxed);
                    c.bytes_dropped_to_disk
                        .fetch_add(entry.size, Ordering::Relaxed);
                }
                Err(e) => {
                    // The block leaves memory either way; without a disk copy it will be
                    // recomputed when read.
                    c.drop_failures.fetch_add(1, Ordering::Relaxed);
                    crate::log::warn(
                        "BlockManager",
                        &format!("could not drop {} to disk: {e}", entry.block),
                    );
                }
            }
        }
        if !entry.level.use_disk {
            self.status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&entry.block);
        }
        c.eviction_ns
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Digests every record that passes through, and keeps the first read error.
///
/// It is also where a put notices a signal ([`crate::interrupt`]): every
/// [`crate::interrupt::CHECK_EVERY`] records it looks, and once interrupted it ends the stream
/// as failed, so the memory store caches nothing and no block file is finished.
struct DigestingSource<S> {
    inner: S,
    digest: RecordDigest,
    interrupted: Option<crate::interrupt::Interrupted>,
}

impl<S> DigestingSource<S> {
    fn new(inner: S) -> Self {
        DigestingSource {
            inner,
            digest: RecordDigest::default(),
            interrupted: None,
        }
    }

    /// `Err` if the stream was cut short by a signal.
    fn check_interrupted(&self) -> Result<(), StorageError> {
        match self.interrupted {
            Some(i) => Err(i.into()),
            None => Ok(()),
        }
    }
}

impl<S: RecordSource> RecordSource for DigestingSource<S> {
    fn next_record(&mut self) -> Option<&[u8]> {
        if self.interrupted.is_some() {
            return None;
        }
        if self
            .digest
            .records
            .is_multiple_of(crate::interrupt::CHECK_EVERY)
            && let Err(i) = crate::interrupt::check()
        {
            self.interrupted = Some(i);
            return None;
        }
        let r = self.inner.next_record()?;
        self.digest.add(r);
        Some(r)
    }

    fn failed(&self) -> bool {
        self.interrupted.is_some() || self.inner.failed()
    }
}

/// Records read from a block file, verified frame by frame; an error ends the stream and is
/// kept for the caller.
struct ReaderSource<'a> {
    reader: SpillReader,
    error: Option<SpillError>,
    visit: &'a mut dyn FnMut(&[u8]),
}

impl RecordSource for ReaderSource<'_> {
    fn next_record(&mut self) -> Option<&[u8]> {
        if self.error.is_some() {
            return None;
        }
        match self.reader.next_record() {
            Ok(Some(r)) => {
                (self.visit)(r);
                Some(r)
            }
            Ok(None) => None,
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }

    fn failed(&self) -> bool {
        self.error.is_some()
    }
}

/// A generator whose records are also shown to a visitor (a recompute during a scan).
struct VisitingSource<'a, S> {
    inner: S,
    visit: &'a mut dyn FnMut(&[u8]),
}

impl<S: RecordSource> RecordSource for VisitingSource<'_, S> {
    fn next_record(&mut self) -> Option<&[u8]> {
        let r = self.inner.next_record()?;
        (self.visit)(r);
        Some(r)
    }

    fn failed(&self) -> bool {
        self.inner.failed()
    }
}
